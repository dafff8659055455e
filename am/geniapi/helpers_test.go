package geniapi

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/amtest"
	"github.com/geniam/geniam/am/xmlrpc"
	"github.com/geniam/geniam/credentials"
	"github.com/geniam/geniam/credentials/devpki"
	"github.com/geniam/geniam/credentials/devpki/openssltest"
	"github.com/geniam/geniam/credentials/devpki/pkitest"
)

const (
	aliceURN = "urn:publicid:IDN+example+user+alice"
	sliceURN = "urn:publicid:IDN+example+slice+s1"
	sliver1  = "urn:publicid:IDN+am.example+sliver+one"
	sliver2  = "urn:publicid:IDN+am.example+sliver+two"
	amURN    = "urn:publicid:IDN+am.example+authority+am"
	adRSpec  = `<rspec type="advertisement" xmlns="http://www.geni.net/resources/rspec/3"><node component_id="n1"/></rspec>`
	manifest = `<rspec type="manifest" xmlns="http://www.geni.net/resources/rspec/3"/>`
)

var expires = time.Date(2026, 11, 22, 10, 30, 0, 0, time.UTC)

// fakeAM stands in for the aggregate: it records what the edge passed and
// answers with canned values, or with err, or panics.
type fakeAM struct {
	mu     sync.Mutex
	method string
	call   am.Call
	urns   []string
	slice  string
	rspec  string
	action string
	exp    time.Time
	err    error
	panic  bool
}

// record notes the call (and, with args, what args stores of its
// arguments) and answers as the test set the fake up: f.err, or a panic.
func (f *fakeAM) record(method string, c am.Call, args func()) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.method, f.call = method, c
	if args != nil {
		args()
	}
	if f.panic {
		panic("fake aggregate exploded")
	}
	return f.err
}

func (f *fakeAM) last() fakeAM {
	f.mu.Lock()
	defer f.mu.Unlock()
	return fakeAM{method: f.method, call: f.call, urns: f.urns, slice: f.slice, rspec: f.rspec, action: f.action, exp: f.exp}
}

func statuses(urns []string) []am.SliverStatus {
	var out []am.SliverStatus
	for _, u := range []string{sliver1, sliver2} {
		out = append(out, am.SliverStatus{URN: u, Allocation: am.Provisioned, Operational: am.Ready, Expires: expires, ClientID: "n1"})
	}
	return out
}

func (f *fakeAM) GetVersion(ctx context.Context, c am.Call) (*am.Version, error) {
	if err := f.record("GetVersion", c, nil); err != nil {
		return nil, err
	}
	v := am.StandardVersion(amURN, "https://127.0.0.1:5001/")
	v.Extra = map[string]any{"geniam_extra": "x", "geni_api": "must not override"}
	return v, nil
}

func (f *fakeAM) ListResources(ctx context.Context, c am.Call) (string, error) {
	if err := f.record("ListResources", c, nil); err != nil {
		return "", err
	}
	return adRSpec, nil
}

func (f *fakeAM) Describe(ctx context.Context, c am.Call, urns []string) (*am.DescribeResult, error) {
	if err := f.record("Describe", c, func() { f.urns = urns }); err != nil {
		return nil, err
	}
	return &am.DescribeResult{RSpec: manifest, SliceURN: sliceURN, Slivers: statuses(urns)}, nil
}

func (f *fakeAM) Allocate(ctx context.Context, c am.Call, slice, rspec string) (*am.AllocateResult, error) {
	if err := f.record("Allocate", c, func() { f.slice, f.rspec = slice, rspec }); err != nil {
		return nil, err
	}
	return &am.AllocateResult{RSpec: manifest, Slivers: []am.SliverStatus{{URN: sliver1, Allocation: am.Allocated, Expires: expires}}}, nil
}

func (f *fakeAM) Renew(ctx context.Context, c am.Call, urns []string, exp time.Time) ([]am.SliverStatus, error) {
	if err := f.record("Renew", c, func() { f.urns, f.exp = urns, exp }); err != nil {
		return nil, err
	}
	return statuses(urns), nil
}

func (f *fakeAM) Provision(ctx context.Context, c am.Call, urns []string) (*am.AllocateResult, error) {
	if err := f.record("Provision", c, func() { f.urns = urns }); err != nil {
		return nil, err
	}
	return &am.AllocateResult{RSpec: manifest, Slivers: statuses(urns)}, nil
}

func (f *fakeAM) Status(ctx context.Context, c am.Call, urns []string) (*am.StatusResult, error) {
	if err := f.record("Status", c, func() { f.urns = urns }); err != nil {
		return nil, err
	}
	st := statuses(urns)
	st[1].Error, st[1].Operational = "boom", am.Failed
	return &am.StatusResult{SliceURN: sliceURN, Slivers: st}, nil
}

func (f *fakeAM) PerformOperationalAction(ctx context.Context, c am.Call, urns []string, action string) ([]am.SliverStatus, error) {
	if err := f.record("PerformOperationalAction", c, func() { f.urns, f.action = urns, action }); err != nil {
		return nil, err
	}
	return statuses(urns), nil
}

func (f *fakeAM) Delete(ctx context.Context, c am.Call, urns []string) ([]am.SliverStatus, error) {
	if err := f.record("Delete", c, func() { f.urns = urns }); err != nil {
		return nil, err
	}
	return []am.SliverStatus{{URN: sliver1, Allocation: am.Unallocated, Expires: expires}}, nil
}

func (f *fakeAM) Shutdown(ctx context.Context, c am.Call, slice string) error {
	return f.record("Shutdown", c, func() { f.slice = slice })
}

// logBuffer collects log output for assertions.
type logBuffer = amtest.LogBuffer

func newLogger() (*slog.Logger, *logBuffer) {
	buf := &logBuffer{}
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// testPKI is a clearinghouse CA (trusted, in rootsDir), the AM's server
// certificate, and client certificates it issues.
type testPKI struct {
	*pkitest.Authority
	rootsDir string
	signer   *openssltest.Signer // the CA for openssl, which signs what Go will not
	server   tls.Certificate
}

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	ca := pkitest.New(t, devpki.Options{URN: "urn:publicid:IDN+example+authority+ca", CommonName: "example CA"})
	return &testPKI{Authority: ca, rootsDir: ca.Roots(), signer: openssltest.NewSigner(t, ca.Identity, ca.Dir),
		server: pkitest.TLS(t, ca.Server(devpki.Options{URN: amURN}))}
}

// clientCert issues a client certificate.
func (p *testPKI) clientCert(t testing.TB, o devpki.Options) tls.Certificate {
	t.Helper()
	return pkitest.TLS(t, p.Issue(o))
}

// loadRoots reads a roots directory into a Verifier, the RootSource the
// TLS edge reads in production.
func loadRoots(t testing.TB, dir string) *credentials.Verifier {
	t.Helper()
	roots, _, err := credentials.LoadTrustRoots(dir)
	if err != nil {
		t.Fatal(err)
	}
	return credentials.NewVerifier(roots, credentials.Options{})
}

// startServer serves h over mutual TLS on 127.0.0.1 and returns its URL.
func startServer(t testing.TB, h http.Handler, p *testPKI, legacy bool, log *slog.Logger) (string, *credentials.Verifier) {
	t.Helper()
	roots := loadRoots(t, p.rootsDir)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(ln.Addr().String(), h, ServerTLSConfig(p.server, roots, legacy, log))
	srv.ErrorLog = slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	amtest.ServeTLS(t, srv, ln)
	return "https://" + ln.Addr().String() + "/", roots
}

func clientTransport(p *testPKI, cert *tls.Certificate) *http.Transport {
	cfg := &tls.Config{RootCAs: p.Pool()}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: false}
}

// rawCall posts a call with our codec and decodes the response exactly (kolo
// loses empty strings, so precise checks use this).
func rawCall(c *http.Client, url, method string, params ...any) (any, error) {
	var body bytes.Buffer
	if err := xmlrpc.EncodeCall(&body, method, params...); err != nil {
		return nil, err
	}
	resp, err := c.Post(url, "text/xml", &body)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, errors.New(resp.Status)
	}
	return xmlrpc.DecodeResponse(resp.Body, xmlrpc.Limits{})
}

// serveDirect runs the handler without a network, as if the caller had
// presented cert over TLS.
func serveDirect(h http.Handler, cert *x509.Certificate, body []byte) (any, error) {
	req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
	if cert != nil {
		req.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert}}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return xmlrpc.DecodeResponse(rec.Body, xmlrpc.Limits{})
}

func callDirect(t testing.TB, h http.Handler, cert *x509.Certificate, method string, params ...any) map[string]any {
	t.Helper()
	var body bytes.Buffer
	if err := xmlrpc.EncodeCall(&body, method, params...); err != nil {
		t.Fatal(err)
	}
	v, err := serveDirect(h, cert, body.Bytes())
	if err != nil {
		t.Fatalf("%s: %v", method, err)
	}
	m, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("%s: response is %T, not a struct", method, v)
	}
	return m
}

func codeOf(t testing.TB, resp map[string]any) int64 {
	t.Helper()
	code, ok := resp["code"].(map[string]any)
	if !ok {
		t.Fatalf("no code struct in %#v", resp)
	}
	n, ok := code["geni_code"].(int64)
	if !ok {
		t.Fatalf("geni_code is not an int in %#v", resp)
	}
	return n
}
