package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
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
	"testing"
	"time"

	"github.com/geniam/geniam/am/amtest"
	"github.com/geniam/geniam/am/config"
	"github.com/geniam/geniam/am/devenv"
	"github.com/geniam/geniam/am/xmlrpc"
	"github.com/geniam/geniam/store"
	"github.com/geniam/geniam/store/pgtest"
	"github.com/jackc/pgx/v5/pgxpool"
)

// freeAddr returns a loopback address nobody listens on (for the ops listener).
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

// served is an aggregate served as `geni-am serve` does, on a fresh database.
type served struct {
	t      *testing.T
	dbURL  string
	amURL  string
	opsURL string
	// consoleURL is the web console's https://host:port, when console.listen is set.
	consoleURL string
	pki        *devenv.PKI
	client     *http.Client
	chain      []*x509.Certificate
	logBuf     *amtest.LogBuffer
	pool       *pgxpool.Pool
}

func serveForTest(t *testing.T) *served {
	t.Helper()
	pki, err := devenv.EnsurePKI(filepath.Join(t.TempDir(), "pki"))
	if err != nil {
		t.Fatal(err)
	}
	return serveOn(t, pki, pgtest.NewDatabase(t), true)
}

// serveOn serves an aggregate on the database at dbURL (several may share
// one: let only one of them seed the demo inventory).
func serveOn(t *testing.T, pki *devenv.PKI, dbURL string, seed bool) *served {
	t.Helper()
	hooks := &serveHooks{}
	if seed {
		hooks.afterMigrate = func(ctx context.Context, st *store.Store) error {
			return st.SeedDemoInventory(ctx, devenv.Authority, 3)
		}
	}
	return serveWith(t, pki, dbURL, hooks, nil)
}

// serveWith serves an aggregate on the database at dbURL with hooks (their
// ready is set here); tune (if any) changes the configuration.
func serveWith(t *testing.T, pki *devenv.PKI, dbURL string, hooks *serveHooks, tune func(*config.Config)) *served {
	t.Helper()
	cfg, err := config.Load("", nil)
	if err != nil {
		t.Fatal(err)
	}
	s := &served{t: t, dbURL: dbURL, pki: pki, logBuf: &amtest.LogBuffer{}}
	cfg.DB.URL = s.dbURL
	cfg.VarDir = t.TempDir() // the audit spool, never the source tree
	cfg.Listen = "127.0.0.1:0"
	cfg.AMURN = devenv.AMURN
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
		ready := make(chan net.Addr, 1)
		hooks.ready = func(a net.Addr) { ready <- a }
		ctx, cancel := context.WithCancel(context.Background())
		stopped := make(chan error, 1)
		go func() { stopped <- serve(ctx, cfg, nil, log, hooks) }()
		select {
		case a := <-ready:
			s.amURL = "https://" + a.String() + "/"
			t.Cleanup(func() {
				cancel()
				if err := <-stopped; err != nil {
					t.Errorf("serve: %v", err)
				}
			})
		case err := <-stopped:
			cancel()
			if attempt < 3 && strings.Contains(fmt.Sprint(err), "address already in use") {
				continue
			}
			t.Fatalf("serve: %v", err)
		case <-time.After(60 * time.Second):
			cancel()
			t.Fatal("aggregate did not start")
		}
		break
	}
	certFile, keyFile := pki.File("alice")
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	for _, c := range pki.CH.Roots().Certs() {
		roots.AddCert(c)
	}
	s.client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		Certificates: []tls.Certificate{cert}, RootCAs: roots, ServerName: "127.0.0.1"}}}
	s.chain = append([]*x509.Certificate{pki.User.Cert}, pki.User.Chain...)
	s.pool, err = pgxpool.New(context.Background(), s.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.pool.Close)
	return s
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

func creds(cred []byte) []any {
	return []any{map[string]any{"geni_type": "geni_sfa", "geni_version": "3", "geni_value": string(cred)}}
}

var geni3Opts = map[string]any{"geni_rspec_version": map[string]any{"type": "GENI", "version": "3"}}

// expectedCall is one call of the walkthrough and what the audit must say.
type expectedCall struct {
	name   string
	method string
	code   int64
	user   bool // the audit row names alice as the authorized user
	slice  string
}

// TestEveryCallIsAudited drives a served aggregate over TLS through the
// experimenter walkthrough of docs/experimenter.md (allocate, provision,
// status, fetch data, delete) plus each failure class, then checks one audit
// row per call with the right caller, the log id in every error output, the
// deployments view, the metrics and the health endpoints.
func TestEveryCallIsAudited(t *testing.T) {
	s := serveForTest(t)
	alice := devenv.UserURN
	slice, sliceCred, err := s.pki.CH.CreateSlice(s.chain, "walk", time.Now().Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	userCred, err := s.pki.CH.UserCredential(s.chain)
	if err != nil {
		t.Fatal(err)
	}
	rspec, err := os.ReadFile("../../docs/examples/request-one-container.xml")
	if err != nil {
		t.Fatal(err)
	}
	var calls []expectedCall
	var replies []map[string]any
	do := func(e expectedCall, r map[string]any) map[string]any {
		t.Helper()
		if got := opsGeniCode(r); got != e.code {
			t.Fatalf("%s: geni_code %d, want %d: %v", e.name, got, e.code, r["output"])
		}
		calls, replies = append(calls, e), append(replies, r)
		return r
	}
	do(expectedCall{name: "getversion", method: "GetVersion"}, s.call("GetVersion", map[string]any{}))
	do(expectedCall{name: "listresources", method: "ListResources", user: true}, s.call("ListResources", creds(userCred), geni3Opts))
	do(expectedCall{name: "listresources without rspec version", method: "ListResources", code: 1}, s.call("ListResources", creds(userCred), map[string]any{}))
	do(expectedCall{name: "allocate without credentials", method: "Allocate", code: 3, slice: slice.URN}, s.call("Allocate", slice.URN, []any{}, string(rspec), map[string]any{}))
	alloc := do(expectedCall{name: "allocate", method: "Allocate", user: true, slice: slice.URN}, s.call("Allocate", slice.URN, creds(sliceCred), string(rspec), map[string]any{}))
	sliverURN := alloc["value"].(map[string]any)["geni_slivers"].([]any)[0].(map[string]any)["geni_sliver_urn"].(string)
	do(expectedCall{name: "describe", method: "Describe", user: true, slice: slice.URN}, s.call("Describe", []any{slice.URN}, creds(sliceCred), geni3Opts))
	do(expectedCall{name: "renew", method: "Renew", user: true, slice: slice.URN}, s.call("Renew", []any{slice.URN}, creds(sliceCred), time.Now().Add(time.Hour).UTC().Format(time.RFC3339), map[string]any{}))
	provOpts := map[string]any{"geni_rspec_version": geni3Opts["geni_rspec_version"],
		"geni_users": []any{map[string]any{"urn": alice, "keys": []any{"ssh-ed25519 AAAAsecretish alice"}}}}
	do(expectedCall{name: "provision", method: "Provision", user: true, slice: slice.URN}, s.call("Provision", []any{slice.URN}, creds(sliceCred), provOpts))
	do(expectedCall{name: "status", method: "Status", user: true, slice: slice.URN}, s.call("Status", []any{slice.URN}, creds(sliceCred), map[string]any{}))
	do(expectedCall{name: "fetch data", method: "PerformOperationalAction", user: true, slice: slice.URN},
		s.call("PerformOperationalAction", []any{sliverURN}, creds(sliceCred), "geniam_fetch_data", map[string]any{}))
	do(expectedCall{name: "unknown action", method: "PerformOperationalAction", code: 1, slice: slice.URN},
		s.call("PerformOperationalAction", []any{slice.URN}, creds(sliceCred), "geni_dance", map[string]any{}))
	do(expectedCall{name: "status of an unknown sliver", method: "Status", code: 12},
		s.call("Status", []any{"urn:publicid:IDN+geniam.localhost+sliver+00000000"}, creds(sliceCred), map[string]any{}))
	do(expectedCall{name: "delete", method: "Delete", user: true, slice: slice.URN}, s.call("Delete", []any{slice.URN}, creds(sliceCred), map[string]any{}))
	// Maintenance switched on by the operator: Allocate is UNAVAILABLE, Status works.
	if err := runAdmin(context.Background(), []string{"--db.url", s.dbURL, "maintenance", "on", "kernel upgrade"}, io.Discard); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // the aggregate re-reads the switch every second
	do(expectedCall{name: "allocate in maintenance", method: "Allocate", code: 11, user: true, slice: slice.URN},
		s.call("Allocate", slice.URN, creds(sliceCred), string(rspec), map[string]any{}))
	if err := runAdmin(context.Background(), []string{"--db.url", s.dbURL, "maintenance", "off"}, io.Discard); err != nil {
		t.Fatal(err)
	}
	do(expectedCall{name: "shutdown", method: "Shutdown", user: true, slice: slice.URN}, s.call("Shutdown", slice.URN, creds(sliceCred), map[string]any{}))
	do(expectedCall{name: "status of a shut-down slice", method: "Status", code: 3, user: true, slice: slice.URN},
		s.call("Status", []any{slice.URN}, creds(sliceCred), map[string]any{}))
	do(expectedCall{name: "unknown method", method: "Dance", code: -32601}, s.call("Dance", "x"))
	do(expectedCall{name: "unreadable", method: "(unreadable)", code: -32700}, s.post([]byte("<methodCall><methodName>Status")))

	// Every error output quotes a log id.
	logIDIn := regexp.MustCompile(`log id ([0-9a-f]{12})`)
	var errorLogIDs []string
	for i, r := range replies {
		if calls[i].code == 0 {
			errorLogIDs = append(errorLogIDs, "")
			continue
		}
		m := logIDIn.FindStringSubmatch(r["output"].(string))
		if m == nil {
			t.Fatalf("%s: output %q has no log id", calls[i].name, r["output"])
		}
		errorLogIDs = append(errorLogIDs, m[1])
	}

	// One audit row per call, in order (the writer is asynchronous).
	ctx := context.Background()
	deadline := time.Now().Add(15 * time.Second)
	var n int
	for time.Now().Before(deadline) {
		if err := s.pool.QueryRow(ctx, "SELECT count(*) FROM audit_log").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n >= len(calls) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	rows, err := s.pool.Query(ctx, `SELECT method, geni_code, caller_urn, user_urn, slice_urn, log_id, output, credential_digest, options::text
		FROM audit_log ORDER BY at, id`)
	if err != nil {
		t.Fatal(err)
	}
	type auditRow struct {
		method                          string
		code                            int64
		caller, user, slice, logID, out string
		digest, options                 string
	}
	var got []auditRow
	for rows.Next() {
		var a auditRow
		if err := rows.Scan(&a.method, &a.code, &a.caller, &a.user, &a.slice, &a.logID, &a.out, &a.digest, &a.options); err != nil {
			t.Fatal(err)
		}
		got = append(got, a)
	}
	if len(got) != len(calls) {
		t.Fatalf("%d audit rows for %d calls", len(got), len(calls))
	}
	for i, e := range calls {
		a := got[i]
		if a.method != e.method || a.code != e.code {
			t.Errorf("%s: audit says %s %d", e.name, a.method, a.code)
		}
		if e.method != "(unreadable)" && a.caller != alice {
			t.Errorf("%s: caller %q", e.name, a.caller)
		}
		if e.user && (a.user != alice || a.digest == "") {
			t.Errorf("%s: user %q digest %q", e.name, a.user, a.digest)
		}
		if e.slice != "" && a.slice != e.slice {
			t.Errorf("%s: slice %q", e.name, a.slice)
		}
		if e.code != 0 && a.logID != errorLogIDs[i] {
			t.Errorf("%s: reply quotes log id %s, audit has %s", e.name, errorLogIDs[i], a.logID)
		}
		if strings.Contains(a.options, "AAAAsecretish") {
			t.Errorf("%s: SSH key in the audit options: %s", e.name, a.options)
		}
	}
	// The call is in the log under the same id.
	if !strings.Contains(s.logBuf.String(), `"log_id":"`+errorLogIDs[3]+`"`) {
		t.Errorf("log id %s not in the log", errorLogIDs[3])
	}
	// Who deployed which image where: the documented query.
	var who, node, digest string
	err = s.pool.QueryRow(ctx, "SELECT user_urn, node_name, image_sha256 FROM deployments WHERE sliver_urn = $1", sliverURN).Scan(&who, &node, &digest)
	if err != nil || who != alice || node == "" || len(digest) != 64 {
		t.Fatalf("deployments: %q %q %q %v", who, node, digest, err)
	}

	// Metrics.
	metricsText := httpGet(t, s.opsURL+"/metrics", 200)
	for _, want := range []string{
		`geniam_calls_total{method="Allocate",code="SUCCESS"} 1`,
		`geniam_calls_total{method="Allocate",code="UNAVAILABLE"} 1`,
		`geniam_calls_total{method="Status",code="SEARCHFAILED"} 1`,
		`geniam_calls_total{method="other",code="FAULT-32601"} 1`,
		`geniam_call_duration_seconds_count{method="Provision"} 1`,
		`geniam_call_duration_seconds_bucket{method="GetVersion",le="+Inf"} 1`,
		"# TYPE geniam_db_connections_open gauge",
		"geniam_reaper_batches_total",
		"geniam_maintenance 0",
		"geniam_slots_free 10\n",
		"geniam_nodes_taking_slivers 3\n",
		"geniam_slivers_live 0\n",
	} {
		if !strings.Contains(metricsText, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if !regexp.MustCompile(`geniam_credential_cache_hits_total [1-9]`).MatchString(metricsText) {
		t.Errorf("no credential cache hits in metrics:\n%s", metricsText)
	}
	if !regexp.MustCompile(`geniam_audit_written_total [1-9]`).MatchString(metricsText) {
		t.Errorf("no audit writes in metrics")
	}
	var health map[string]any
	if err := json.Unmarshal([]byte(httpGet(t, s.opsURL+"/healthz", 200)), &health); err != nil || health["database"] != "ok" {
		t.Errorf("healthz %v %v", health, err)
	}
	httpGet(t, s.opsURL+"/readyz", 200)

	// The admin audit command shows the failures of the slice with their log ids.
	var out bytes.Buffer
	if err := runAdmin(ctx, []string{"--db.url", s.dbURL, "audit", "--slice", slice.URN}, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), errorLogIDs[3]) || !strings.Contains(out.String(), "FORBIDDEN") {
		t.Errorf("admin audit:\n%s", out.String())
	}
}

func httpGet(t *testing.T, url string, status int) string {
	t.Helper()
	return get(t, http.DefaultClient, url, status)
}
