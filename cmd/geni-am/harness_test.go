package main

// The aggregate as `geni-am serve` wires it, served in this test process on
// loopback ports, and what its tests share to reach it: the dev PKI, TLS
// clients, XML-RPC calls, slices of the dev clearinghouse.

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/geniam/geniam/am/amtest"
	"github.com/geniam/geniam/am/config"
	"github.com/geniam/geniam/am/devenv"
	"github.com/geniam/geniam/am/xmlrpc"
	"github.com/geniam/geniam/credentials/devch"
	"github.com/geniam/geniam/credentials/devpki"
	"github.com/geniam/geniam/credentials/devpki/pkitest"
	"github.com/geniam/geniam/store"
	"github.com/geniam/geniam/store/pgtest"
	"github.com/jackc/pgx/v5/pgxpool"
)

// freeAddr returns a loopback address nobody listens on now (the operations
// listener, the dev clearinghouse, a soak's aggregate).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// newDevPKI is make run's dev PKI (clearinghouse, the aggregate's
// certificate, alice, the agents' CA) in a directory of the test.
func newDevPKI(t *testing.T) *devenv.PKI {
	t.Helper()
	pki, err := devenv.EnsurePKI(filepath.Join(t.TempDir(), "pki"))
	if err != nil {
		t.Fatal(err)
	}
	return pki
}

// examplePath is the absolute path of docs/examples/name: a request RSpec
// as the guides give it.
func examplePath(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "..", "docs", "examples", name))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// exampleRequest is the text of docs/examples/name.
func exampleRequest(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(examplePath(t, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// chainOf is id's certificate and the chain above it, as a clearinghouse
// wants the caller.
func chainOf(id *devpki.Identity) []*x509.Certificate {
	return append([]*x509.Certificate{id.Cert}, id.Chain...)
}

// devClientTLS is a TLS client of an aggregate (or console) serving the dev
// PKI's certificate: it trusts the dev clearinghouse and presents id's
// certificate (nil: none).
func devClientTLS(t *testing.T, pki *devenv.PKI, id *devpki.Identity) *tls.Config {
	t.Helper()
	cfg := &tls.Config{RootCAs: pki.CH.Roots().Pool(), ServerName: "127.0.0.1"}
	if id != nil {
		cfg.Certificates = []tls.Certificate{pkitest.TLS(t, id)}
	}
	return cfg
}

// serveConfig is the configuration of an aggregate served for a test: on the
// database at dbURL, the AM API on a free loopback port, the dev AM URN, and
// its audit spool in a directory of the test (never the source tree). The
// caller adds the TLS files.
func serveConfig(t *testing.T, dbURL string) *config.Config {
	t.Helper()
	cfg, err := config.Load("", nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.DB.URL = dbURL
	cfg.VarDir = t.TempDir()
	cfg.Listen = "127.0.0.1:0"
	cfg.AMURN = devenv.AMURN
	return cfg
}

// startServe runs serve(cfg) until the test ends and returns the address
// the AM API listens on once it does (it sets hooks.ready). An error serve
// returns before that is returned, so that the caller may try again (another
// port).
func startServe(t *testing.T, cfg *config.Config, log *slog.Logger, hooks *serveHooks) (net.Addr, error) {
	t.Helper()
	ready := make(chan net.Addr, 1)
	hooks.ready = func(a net.Addr) { ready <- a }
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() { stopped <- serve(ctx, cfg, log, hooks) }()
	select {
	case a := <-ready:
		t.Cleanup(func() {
			cancel()
			if err := <-stopped; err != nil {
				t.Errorf("serve: %v", err)
			}
		})
		return a, nil
	case err := <-stopped:
		cancel()
		if err == nil {
			err = errors.New("serve returned before it listened")
		}
		return nil, err
	case <-time.After(60 * time.Second):
		cancel()
		t.Fatal("aggregate did not start")
		return nil, nil
	}
}

// served is an aggregate served as `geni-am serve` does, on a fresh database.
type served struct {
	t      *testing.T
	dbURL  string
	amURL  string
	opsURL string
	// consoleURL is the web console's https://host:port, when console.listen is set.
	consoleURL string
	pki        *devenv.PKI
	client     *http.Client // presents alice's certificate
	chain      []*x509.Certificate
	logBuf     *amtest.LogBuffer
	pool       *pgxpool.Pool
}

func serveForTest(t *testing.T) *served {
	t.Helper()
	return serveOn(t, newDevPKI(t), pgtest.NewDatabase(t), true)
}

// serveOn serves an aggregate on the database at dbURL (several may share
// one: let only one of them seed the demo inventory).
func serveOn(t *testing.T, pki *devenv.PKI, dbURL string, seed bool) *served {
	t.Helper()
	hooks := &serveHooks{}
	if seed {
		hooks.afterMigrate = seedDemo
	}
	return serveWith(t, pki, dbURL, hooks, nil)
}

// seedDemo, an afterMigrate hook, makes make run's demo inventory: three
// nodes of the dev authority.
func seedDemo(ctx context.Context, st *store.Store) error {
	return st.SeedDemoInventory(ctx, devenv.Authority, 3)
}

// serveWith serves an aggregate on the database at dbURL with hooks (their
// ready is set here); tune (if any) changes the configuration.
func serveWith(t *testing.T, pki *devenv.PKI, dbURL string, hooks *serveHooks, tune func(*config.Config)) *served {
	t.Helper()
	cfg := serveConfig(t, dbURL)
	s := &served{t: t, dbURL: dbURL, pki: pki, logBuf: &amtest.LogBuffer{}}
	cfg.TLS.Cert, cfg.TLS.Key = pki.File("am")
	cfg.TLS.TrustedRoots = pki.TrustedRoots
	cfg.Log.Format = "json"
	log := slog.New(slog.NewJSONHandler(s.logBuf, nil))
	// The console's address, when console.listen is set.
	hooks.consoleReady = func(a net.Addr) { s.consoleURL = "https://" + a.String() }
	if tune != nil {
		tune(cfg)
	}
	// The operations port is picked free and then bound by serve: another
	// process may take it in between, so try again with another one.
	for attempt := 1; ; attempt++ {
		cfg.Operations.Listen = freeAddr(t)
		s.opsURL = "http://" + cfg.Operations.Listen
		a, err := startServe(t, cfg, log, hooks)
		if err == nil {
			s.amURL = "https://" + a.String() + "/"
			break
		}
		if attempt < 3 && strings.Contains(err.Error(), "address already in use") {
			continue
		}
		t.Fatalf("serve: %v", err)
	}
	s.client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: devClientTLS(t, pki, pki.User)}}
	s.chain = chainOf(pki.User)
	s.pool = pgtest.Pool(t, s.dbURL)
	return s
}

// newSlice creates a slice of alice's at the dev clearinghouse, expiring
// after ttl, and returns it with its slice credential.
func (s *served) newSlice(name string, ttl time.Duration) (*devch.Slice, []byte) {
	s.t.Helper()
	slice, cred, err := s.pki.CH.CreateSlice(s.chain, name, time.Now().Add(ttl))
	if err != nil {
		s.t.Fatal(err)
	}
	return slice, cred
}

// userCredential is alice's user credential from the dev clearinghouse.
func (s *served) userCredential() []byte {
	s.t.Helper()
	cred, err := s.pki.CH.UserCredential(s.chain)
	if err != nil {
		s.t.Fatal(err)
	}
	return cred
}

// admin runs `geni-am admin ARGS` on the served aggregate's database, as
// its operator would, and returns what it printed; an error fails the test.
func (s *served) admin(args ...string) string {
	s.t.Helper()
	var out bytes.Buffer
	if err := runAdmin(context.Background(), append([]string{"--db.url", s.dbURL}, args...), &out); err != nil {
		s.t.Fatalf("admin %s: %v", strings.Join(args, " "), err)
	}
	return out.String()
}

// call posts an XML-RPC call and returns the v3 struct (or a fault error).
func (s *served) call(method string, params ...any) map[string]any {
	s.t.Helper()
	var body bytes.Buffer
	if err := xmlrpc.EncodeCall(&body, method, params...); err != nil {
		s.t.Fatal(err)
	}
	return s.post(body.Bytes())
}

func (s *served) post(body []byte) map[string]any {
	s.t.Helper()
	resp, err := s.client.Post(s.amURL, "text/xml", bytes.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	v, err := xmlrpc.DecodeResponse(resp.Body, xmlrpc.Limits{})
	if f, ok := err.(*xmlrpc.Fault); ok {
		return map[string]any{"fault": int64(f.Code), "output": f.String}
	}
	if err != nil {
		s.t.Fatal(err)
	}
	return v.(map[string]any)
}

func opsGeniCode(r map[string]any) int64 {
	if f, ok := r["fault"].(int64); ok {
		return f
	}
	code, _ := r["code"].(map[string]any)
	n, _ := code["geni_code"].(int64)
	return n
}

// firstSliver is the URN of the first sliver in the v3 struct r of an
// Allocate or Provision.
func firstSliver(r map[string]any) string {
	return r["value"].(map[string]any)["geni_slivers"].([]any)[0].(map[string]any)["geni_sliver_urn"].(string)
}

func creds(cred []byte) []any {
	return []any{map[string]any{"geni_type": "geni_sfa", "geni_version": "3", "geni_value": string(cred)}}
}

var geni3Opts = map[string]any{"geni_rspec_version": map[string]any{"type": "GENI", "version": "3"}}

// get fetches u with c and checks the status.
func get(t *testing.T, c *http.Client, u string, status int) string {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != status {
		t.Fatalf("GET %s: %s, want %d:\n%s", u, resp.Status, status, body)
	}
	return string(body)
}

func httpGet(t *testing.T, url string, status int) string {
	t.Helper()
	return get(t, http.DefaultClient, url, status)
}
