package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/amtest"
	"github.com/geniam/geniam/am/geniapi"
	"github.com/geniam/geniam/am/xmlrpc"
	gcreds "github.com/geniam/geniam/credentials"
	"github.com/geniam/geniam/credentials/devpki"
	"github.com/geniam/geniam/credentials/devpki/pkitest"
)

const (
	testAuthority = "example"
	aliceURN      = "urn:publicid:IDN+example+user+alice"
	amURN         = "urn:publicid:IDN+am.example+authority+am"
)

// fakeAM answers every call with success. Provisioned slivers are
// geni_notready until the second Status call after Provision, then
// geni_ready (or never, with neverReady). It checks what the bench sends.
type fakeAM struct {
	mu          sync.Mutex
	statusCalls map[string]int // slice → Status calls since its Provision
	allocated   map[string]int // slice → slivers in the last Allocate
	calls       map[string]int // method → calls
	problems    []string       // what the bench sent wrong
	neverReady  bool
	allocateErr error
}

func newFakeAM() *fakeAM {
	return &fakeAM{statusCalls: map[string]int{}, allocated: map[string]int{}, calls: map[string]int{}}
}

// check records a call and checks its credentials: one geni_sfa v3
// credential whose target is the slice (or the user, when slice is "").
func (f *fakeAM) check(method string, c am.Call, slice string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[method]++
	if c.Caller == nil || c.Caller.URN != aliceURN {
		f.problems = append(f.problems, method+": caller is not alice")
	}
	if method == "GetVersion" {
		return
	}
	want := aliceURN
	if slice != "" {
		want = slice
	}
	if len(c.Credentials) != 1 || c.Credentials[0].Type != "geni_sfa" || c.Credentials[0].Version != "3" ||
		!strings.Contains(c.Credentials[0].Value, "<target_urn>"+want+"</target_urn>") {
		f.problems = append(f.problems, fmt.Sprintf("%s: credentials %+v, want one geni_sfa 3 for %s", method, c.Credentials, want))
	}
}

func (f *fakeAM) sliceOf(urns []string) string {
	if len(urns) != 1 || !strings.Contains(urns[0], "+slice+") {
		f.mu.Lock()
		f.problems = append(f.problems, fmt.Sprintf("urns %q: want one slice URN", urns))
		f.mu.Unlock()
		return ""
	}
	return urns[0]
}

func slivers(slice string, n int, op am.OperationalState, alloc am.AllocationState) []am.SliverStatus {
	name := slice[strings.LastIndex(slice, "+")+1:]
	out := make([]am.SliverStatus, n)
	for i := range out {
		out[i] = am.SliverStatus{URN: fmt.Sprintf("urn:publicid:IDN+am.example+sliver+%s-%d", name, i), Allocation: alloc,
			Operational: op, Expires: time.Now().Add(time.Hour)}
	}
	return out
}

func (f *fakeAM) GetVersion(ctx context.Context, c am.Call) (*am.Version, error) {
	f.check("GetVersion", c, "")
	return am.StandardVersion(amURN, "https://127.0.0.1/"), nil
}

func (f *fakeAM) ListResources(ctx context.Context, c am.Call) (string, error) {
	f.check("ListResources", c, "")
	if c.Options.RSpecVersion == nil || c.Options.RSpecVersion.Type != "GENI" || c.Options.RSpecVersion.Version != "3" {
		f.mu.Lock()
		f.problems = append(f.problems, "ListResources without geni_rspec_version GENI 3")
		f.mu.Unlock()
	}
	return `<rspec type="advertisement" xmlns="http://www.geni.net/resources/rspec/3"><node component_id="n1"/></rspec>`, nil
}

func (f *fakeAM) Describe(ctx context.Context, c am.Call, urns []string) (*am.DescribeResult, error) {
	slice := f.sliceOf(urns)
	f.check("Describe", c, slice)
	f.mu.Lock()
	defer f.mu.Unlock()
	return &am.DescribeResult{RSpec: "<rspec/>", SliceURN: slice, Slivers: slivers(slice, f.allocated[slice], am.PendingAllocation, am.Allocated)}, nil
}

func (f *fakeAM) Allocate(ctx context.Context, c am.Call, slice, rspec string) (*am.AllocateResult, error) {
	f.check("Allocate", c, slice)
	if f.allocateErr != nil {
		return nil, f.allocateErr
	}
	n := strings.Count(rspec, "<node ")
	f.mu.Lock()
	f.allocated[slice] = n
	f.mu.Unlock()
	return &am.AllocateResult{RSpec: "<rspec/>", Slivers: slivers(slice, n, am.PendingAllocation, am.Allocated)}, nil
}

func (f *fakeAM) Renew(ctx context.Context, c am.Call, urns []string, exp time.Time) ([]am.SliverStatus, error) {
	return nil, am.Errorf(am.Unsupported, "not in the bench")
}

func (f *fakeAM) Provision(ctx context.Context, c am.Call, urns []string) (*am.AllocateResult, error) {
	slice := f.sliceOf(urns)
	f.check("Provision", c, slice)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.statusCalls[slice] = 0
	return &am.AllocateResult{RSpec: "<rspec/>", Slivers: slivers(slice, f.allocated[slice], am.NotReady, am.Provisioned)}, nil
}

func (f *fakeAM) Status(ctx context.Context, c am.Call, urns []string) (*am.StatusResult, error) {
	slice := f.sliceOf(urns)
	f.check("Status", c, slice)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.statusCalls[slice]++
	op := am.NotReady
	if f.statusCalls[slice] >= 2 && !f.neverReady {
		op = am.Ready
	}
	return &am.StatusResult{SliceURN: slice, Slivers: slivers(slice, f.allocated[slice], op, am.Provisioned)}, nil
}

func (f *fakeAM) PerformOperationalAction(ctx context.Context, c am.Call, urns []string, action string) ([]am.SliverStatus, error) {
	slice := f.sliceOf(urns)
	f.check("PerformOperationalAction", c, slice)
	return slivers(slice, 1, am.NotReady, am.Provisioned), nil
}

func (f *fakeAM) Delete(ctx context.Context, c am.Call, urns []string) ([]am.SliverStatus, error) {
	slice := f.sliceOf(urns)
	f.check("Delete", c, slice)
	return slivers(slice, 1, "", am.Unallocated), nil
}

func (f *fakeAM) Shutdown(ctx context.Context, c am.Call, slice string) error {
	return am.Errorf(am.Unsupported, "not in the bench")
}

// testEnv is a CA, alice's certificate and key in files, and the server certificate.
type testEnv struct {
	*pkitest.Authority
	certFile, keyFile string
	server            tls.Certificate
}

func newTestEnv(t *testing.T) *testEnv {
	t.Helper()
	ca := pkitest.New(t, devpki.Options{URN: "urn:publicid:IDN+example+authority+ca", CommonName: "example CA"})
	e := &testEnv{Authority: ca, server: pkitest.TLS(t, ca.Server(devpki.Options{URN: amURN}))}
	e.certFile, e.keyFile = ca.Files(ca.Issue(devpki.Options{URN: aliceURN, Email: "alice@example.org"}), "alice")
	return e
}

// serve starts h over mutual TLS on 127.0.0.1 with geniapi's server set-up.
func (e *testEnv) serve(t *testing.T, h http.Handler) string {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	roots, _, err := gcreds.LoadTrustRoots(e.Roots())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := geniapi.NewServer(ln.Addr().String(), h, geniapi.ServerTLSConfig(e.server, roots, false, log))
	srv.ErrorLog = slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	amtest.ServeTLS(t, srv, ln)
	return "https://" + ln.Addr().String() + "/"
}

func fakeCredential(target string) string {
	return `<?xml version="1.0"?><signed-credential><credential xml:id="ref0"><type>privilege</type>` +
		`<owner_urn>` + aliceURN + `</owner_urn><target_urn>` + target + `</target_urn></credential><signatures/></signed-credential>`
}

// fakeCH is a gcf-like clearinghouse: CreateUserCredential(cert) and
// CreateSlice(urn) return credential XML strings.
type fakeCH struct {
	mu     sync.Mutex
	slices []string
	users  int
	bad    []string
}

var sliceNamePattern = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9-]{0,18}$`)

func (ch *fakeCH) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	call, err := xmlrpc.DecodeCall(r.Body, xmlrpc.Limits{})
	if err != nil {
		_ = xmlrpc.EncodeFault(w, 1, err.Error())
		return
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	arg := ""
	if len(call.Params) == 1 {
		arg, _ = call.Params[0].(string)
	}
	switch call.Method {
	case "CreateUserCredential":
		if !strings.HasPrefix(arg, "-----BEGIN CERTIFICATE-----") || strings.Count(arg, "BEGIN CERTIFICATE") != 1 {
			ch.bad = append(ch.bad, "CreateUserCredential: not one PEM certificate")
		}
		ch.users++
		_ = xmlrpc.EncodeResponse(w, fakeCredential(aliceURN))
	case "CreateSlice":
		name := arg[strings.LastIndex(arg, "+")+1:]
		if !strings.HasPrefix(arg, "urn:publicid:IDN+"+testAuthority+"+slice+") || !sliceNamePattern.MatchString(name) {
			ch.bad = append(ch.bad, "CreateSlice: bad URN "+arg)
		}
		ch.slices = append(ch.slices, arg)
		_ = xmlrpc.EncodeResponse(w, fakeCredential(arg))
	default:
		_ = xmlrpc.EncodeFault(w, 2, "no such method "+call.Method)
	}
}

func (e *testEnv) config(url string) config {
	return config{
		URL: url, TLS: tlsOptions{CertFile: e.certFile, KeyFile: e.keyFile, CAFile: e.CertFile},
		Scenarios: allScenarios, Clients: []int{1, 8, 32}, Duration: 400 * time.Millisecond, Count: 40,
		Timeout: 10 * time.Second, ProvisionSlivers: 3, DescribeSlivers: 5, ProvisionCycles: 2, ReadyTimeout: 5 * time.Second,
		PollInterval: 5 * time.Millisecond, Start: true,
	}
}

func rowsByName(rep *report) map[string]result {
	m := map[string]result{}
	for _, r := range rep.Results {
		m[fmt.Sprintf("%s/%d", r.Scenario, r.Clients)] = r
	}
	return m
}

// TestEndToEndWithClearinghouse runs every scenario against am/geniapi over
// TLS with a fake aggregate, credentials from a fake gcf clearinghouse.
func TestEndToEndWithClearinghouse(t *testing.T) {
	e := newTestEnv(t)
	fake := newFakeAM()
	amURL := e.serve(t, geniapi.NewHandler(fake, geniapi.HandlerOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}))
	ch := &fakeCH{}
	cfg := e.config(amURL)
	cfg.CH = e.serve(t, ch)
	cfg.JSONFile = filepath.Join(e.Dir, "out.json")
	cfg.SVGFile = filepath.Join(e.Dir, "out.svg")
	var stdout, stderr bytes.Buffer
	rep, err := runBench(context.Background(), cfg, &stdout, &stderr)
	if err != nil {
		t.Fatalf("runBench: %v\n%s", err, stderr.String())
	}
	t.Logf("\n%s", stdout.String())
	if len(fake.problems) > 0 || len(ch.bad) > 0 {
		t.Fatalf("the bench sent wrong calls:\n%s\n%s", strings.Join(fake.problems, "\n"), strings.Join(ch.bad, "\n"))
	}
	if ch.users != 1 || len(ch.slices) != 32 {
		t.Errorf("clearinghouse saw %d user credential and %d slice requests, want 1 and 32", ch.users, len(ch.slices))
	}
	rows := rowsByName(rep)
	want := []string{"getversion/1", "getversion-newconn/1", "listresources/1", "listresources-compressed/1",
		"getversion+getversion/1", "getversion+getversion/8", "getversion+getversion/32",
		"allocate/1", "delete/1", "allocate+delete/1", "allocate/8", "delete/8", "allocate+delete/8",
		"allocate/32", "delete/32", "allocate+delete/32", "provision/1", "provision-status/1", "provision-to-ready/1",
		"describe/1", "status/1"}
	if len(rep.Results) != len(want) {
		t.Errorf("%d rows, want %d", len(rep.Results), len(want))
	}
	for _, name := range want {
		r, ok := rows[name]
		switch {
		case !ok:
			t.Errorf("no row %s", name)
		case r.Skipped != "":
			t.Errorf("%s skipped: %s", name, r.Skipped)
		case r.Errors != 0 || len(r.ErrorsBy) != 0:
			t.Errorf("%s: %d errors %v", name, r.Errors, r.ErrorsBy)
		case r.Calls == 0 || r.CallsPerSec <= 0 || r.P50ms <= 0 || r.P50ms > r.P95ms || r.P95ms > r.P99ms:
			t.Errorf("%s: implausible figures %+v", name, r)
		case r.Calls > cfg.Count:
			t.Errorf("%s: %d calls, over --count %d", name, r.Calls, cfg.Count)
		}
	}
	if hs := rows["getversion-newconn/1"].Handshakes; hs != int64(rows["getversion-newconn/1"].Calls) {
		t.Errorf("getversion-newconn: %d handshakes for %d calls, want one each", hs, rows["getversion-newconn/1"].Calls)
	}
	if hs := rows["getversion/1"].Handshakes; hs != 1 {
		t.Errorf("getversion with keep-alive: %d handshakes, want 1", hs)
	}
	if r := rows["provision-to-ready/1"]; r.Calls != 2 {
		t.Errorf("provision-to-ready: %d cycles, want 2 (--provision-cycles)", r.Calls)
	}
	// Each cycle: Provision, geni_start, then ready on the second Status;
	// then describe-status's Status calls.
	wantStatus := 4 + rows["status/1"].Calls
	if fake.calls["Provision"] != 2 || fake.calls["PerformOperationalAction"] != 2 || fake.calls["Status"] != wantStatus {
		t.Errorf("provision calls %v, want 2 Provision, 2 PerformOperationalAction, %d Status", fake.calls, wantStatus)
	}
	if fake.calls["Describe"] != rows["describe/1"].Calls {
		t.Errorf("%d Describe calls, describe row counts %d", fake.calls["Describe"], rows["describe/1"].Calls)
	}
	for _, hdr := range []string{"scenario", "clients", "calls", "calls/s", "p50 ms", "p95 ms", "p99 ms", "errors"} {
		if !strings.Contains(strings.SplitN(stdout.String(), "\n", 2)[0], hdr) {
			t.Errorf("table header lacks %q", hdr)
		}
	}
	var back report
	b, err := os.ReadFile(cfg.JSONFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &back); err != nil || len(back.Results) != len(rep.Results) {
		t.Errorf("JSON: %v, %d results", err, len(back.Results))
	}
	svg, err := os.ReadFile(cfg.SVGFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := amtest.WellFormedXML(string(svg)); err != nil {
		t.Errorf("SVG: %v", err)
	}
}

// TestEndToEndErrors: errors are counted by geni_code, answers that are not
// GENI return structs apart, and a provision that never gets ready is
// skipped with a reason. Credentials come from files.
func TestEndToEndErrors(t *testing.T) {
	e := newTestEnv(t)
	fake := newFakeAM()
	fake.neverReady = true
	amURL := e.serve(t, geniapi.NewHandler(fake, geniapi.HandlerOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}))
	cfg := e.config(amURL)
	cfg.Scenarios = []string{scGetVersion, scListResources, scProvision}
	cfg.Count, cfg.ReadyTimeout = 10, 150*time.Millisecond
	sliceURN := "urn:publicid:IDN+example+slice+filed"
	cfg.UserCred = filepath.Join(e.Dir, "user.xml")
	cfg.SliceCreds = []string{filepath.Join(e.Dir, "slice.json")}
	if err := os.WriteFile(cfg.UserCred, []byte(fakeCredential(aliceURN)), 0o644); err != nil {
		t.Fatal(err)
	}
	wrapped, _ := json.Marshal(map[string]string{"geni_type": "geni_sfa", "geni_version": "3", "geni_value": fakeCredential(sliceURN)})
	if err := os.WriteFile(cfg.SliceCreds[0], wrapped, 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	rep, err := runBench(context.Background(), cfg, &stdout, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", stdout.String())
	rows := rowsByName(rep)
	if r := rows["provision/1"]; !strings.Contains(r.Skipped, "never left geni_notready") {
		t.Errorf("provision not skipped as never ready: %+v", r)
	}
	if !strings.Contains(stdout.String(), "skipped provision") {
		t.Errorf("the skip is not reported:\n%s", stdout.String())
	}

	// An aggregate that refuses Allocate, and an endpoint that is not one.
	fake.allocateErr = am.Errorf(am.Forbidden, "no")
	cfg.Scenarios, cfg.Clients = []string{scAllocateDelete}, []int{2}
	rep, err = runBench(context.Background(), cfg, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	rows = rowsByName(rep) // capped to the one slice credential there is
	if r := rows["allocate/1"]; r.Errors != r.Calls || r.ErrorsBy["Allocate FORBIDDEN(3)"] != r.Calls || r.Calls == 0 {
		t.Errorf("allocate errors: %+v", r)
	}
	if r := rows["allocate/1"]; !strings.Contains(r.Note, "only 1 slice credential") {
		t.Errorf("clients not capped to the slice credentials: %+v", r)
	}

	notAM := e.serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "fault") {
			_ = xmlrpc.EncodeFault(w, -32601, "unknown method")
			return
		}
		http.Error(w, "nope", http.StatusInternalServerError)
	}))
	for path, key := range map[string]string{"": "GetVersion non-GENI http 500", "fault": "GetVersion non-GENI fault -32601"} {
		cfg := e.config(notAM + path)
		cfg.Scenarios, cfg.Count = []string{scGetVersion}, 3
		rep, err := runBench(context.Background(), cfg, io.Discard, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if r := rep.Results[0]; r.ErrorsBy[key] != 3 || r.Errors != 3 {
			t.Errorf("%q: errors %v, want 3× %s", path, r.ErrorsBy, key)
		}
	}
}
