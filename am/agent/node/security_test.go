package node_test

import (
	"crypto/tls"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/agent"
	"github.com/geniam/geniam/am/agent/docker"
	"github.com/geniam/geniam/am/agent/node"
	"github.com/geniam/geniam/am/amtest"
)

// These tests need no engine: they stop at TLS or at request checking.

func TestMutualTLS(t *testing.T) {
	var logs amtest.LogBuffer
	cfg := testConfig(t)
	cfg.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
	a := startAgent(t, cfg)
	p := a.pki
	ctx := ctxT(t, 30*time.Second)

	// The aggregate's certificate gets in, and the log names it.
	must(t, a.client.Ping(ctx))
	if !strings.Contains(logs.String(), `"caller":"`+p.clientURN+`"`) {
		t.Fatalf("request log does not name the caller %s:\n%s", p.clientURN, logs.String())
	}

	roots, err := agent.LoadCertPool(p.caFile)
	must(t, err)
	try := func(conf *tls.Config) error {
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: conf}, Timeout: 10 * time.Second}
		defer c.CloseIdleConnections()
		resp, err := c.Get(a.srv.URL + "/v2/ping")
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	// No client certificate: refused during the handshake.
	if err := try(&tls.Config{RootCAs: roots}); err == nil {
		t.Fatalf("a client without a certificate got in")
	}
	// A certificate from another CA: refused too.
	stranger, err := tls.LoadX509KeyPair(p.strangerCert, p.strangerKey)
	must(t, err)
	if err := try(&tls.Config{RootCAs: roots, Certificates: []tls.Certificate{stranger}}); err == nil {
		t.Fatalf("a client with a certificate from another CA got in")
	}
	// The client side checks the agent too: an agent whose certificate is
	// not from the expected CA is not trusted.
	if err := agent.NewClient(a.srv.URL, p.clientTLS(t, p.otherCA)).Ping(ctx); am.CodeOf(err) != am.Unavailable {
		t.Fatalf("client trusted an agent outside its CA: %v", err)
	}

	// An allow list narrows who may call, even with a good certificate.
	h := node.NewHandler(a.svc, node.HandlerOptions{AllowedClients: []string{"urn:publicid:IDN+geniam.test+authority+other"}, Logger: cfg.Logger})
	srv := p.serve(t, h)
	defer srv.Close()
	if err := agent.NewClient(srv.URL, p.clientTLS(t, p.caFile)).Ping(ctx); am.CodeOf(err) != am.Forbidden {
		t.Fatalf("client outside the allow list: %v, want FORBIDDEN", err)
	}
}

func TestHostileRequests(t *testing.T) {
	cfg := testConfig(t)
	cfg.FileImageDirs = []string{t.TempDir()}
	imgDir := cfg.FileImageDirs[0]
	a := startAgent(t, cfg)
	hc := a.httpClient(t, 20*time.Second)
	long := strings.Repeat("a", 129)
	cases := []struct {
		method, path, body string
		status             int
	}{
		{"GET", "/v2/slivers/../../etc/passwd", "", 400},
		{"GET", "/v2/slivers/..%2F..%2Fetc", "", 400},
		{"PUT", "/v2/slivers/a;reboot/image", `{}`, 400},
		{"PUT", "/v2/slivers/a%20b/container", `{}`, 400},
		{"DELETE", "/v2/slivers/-rf", "", 400},
		{"DELETE", "/v2/slivers/" + long, "", 400},
		{"GET", "/v2/slivers/a%2Fb/data", "", 400},
		{"GET", "/v2/slivers/.", "", 400},
		{"GET", "/v1/killContainer/a;rm%20-rf%20%2F", "", 400},
		{"GET", "/v1/killContainer/a%20b", "", 400},
		{"GET", "/v1/fetchContainer/..", "", 400},
		{"GET", "/v1/emitDataVolume/../../../etc", "", 400},
		{"GET", "/v1/startContainer/$(reboot)", "", 400},
		{"GET", "/v1/startContainer/%60id%60", "", 400},
		{"GET", "/v1/deleteDataVolume/x/../../y", "", 400},
		{"GET", "/../v2/slivers", "", 400},
		{"DELETE", "/v2/slivers/ok/../../x", "", 400},
		{"GET", "/v2//slivers", "", 400},
		// State never changes on a v2 GET; wrong methods are refused.
		{"GET", "/v2/slivers/ok/container", "", 405},
		{"POST", "/v2/slivers/ok/image", `{}`, 405},
		// Bodies.
		{"PUT", "/v2/slivers/ok/image", `{"url":"http://127.0.0.1:1/x.tar","sha256":"xyz"}`, 400},
		{"PUT", "/v2/slivers/ok/image", `{"url":"ftp://127.0.0.1/x.tar","sha256":"` + strings.Repeat("a", 64) + `"}`, 400},
		{"PUT", "/v2/slivers/ok/image", `{"url":"http://127.0.0.1:1/x.tar","sha256":"` + strings.Repeat("a", 64) + `","extra":1}`, 400},
		{"PUT", "/v2/slivers/ok/image", `not json`, 400},
		{"PUT", "/v2/slivers/ok/image", `{"url":"/etc/shadow","sha256":"` + strings.Repeat("a", 64) + `"}`, 403},
		{"PUT", "/v2/slivers/ok/image", `{"url":"file://` + imgDir + `/../../etc/shadow","sha256":"` + strings.Repeat("a", 64) + `"}`, 403},
		{"PUT", "/v2/slivers/ok/image", `{"url":"` + strings.Repeat("x", 3<<20) + `"}`, 413},
		{"PUT", "/v2/slivers/ok/container", `{"command":["/prog"],"shell":"x"}`, 400},
		{"PUT", "/v2/slivers/ok/container", `{"restart":"sometimes"}`, 400},
		{"PUT", "/v2/slivers/ok/container", `{"network":"host"}`, 403},
		{"PUT", "/v2/slivers/ok/users", `{"users":[{"urn":"u","keys":["ssh-rsa AAA\ncommand=\"evil\" ssh-rsa BBB"]}]}`, 400},
		{"PUT", "/v2/slivers/ok/container", `{}`, 404}, // nothing fetched for "ok"
		{"GET", "/v2/slivers/ok", "", 404},
		{"GET", "/v2/slivers/ok/logs/stdout", "", 404},
		{"GET", "/v2/slivers/ok/logs/..%2Fx", "", 400},
		{"GET", "/v2/slivers/ok/logs/journal", "", 400},
		{"GET", "/v2/nothing", "", 404},
		{"GET", "/v1/fetchVM/x", "", 501},
	}
	for _, c := range cases {
		var body *strings.Reader
		if c.body != "" {
			body = strings.NewReader(c.body)
		} else {
			body = strings.NewReader("")
		}
		req, err := http.NewRequest(c.method, a.srv.URL+c.path, body)
		must(t, err)
		resp, err := hc.Do(req)
		if err != nil {
			t.Errorf("%s %s: %v", c.method, am.Clip(c.path, 60), err)
			continue
		}
		var eb agent.ErrorBody
		decErr := json.NewDecoder(resp.Body).Decode(&eb)
		resp.Body.Close()
		if resp.StatusCode != c.status {
			t.Errorf("%s %s: status %d, want %d (%+v)", c.method, am.Clip(c.path, 60), resp.StatusCode, c.status, eb)
			continue
		}
		if decErr != nil || eb.Error == "" || eb.Code == "" {
			t.Errorf("%s %s: error body not JSON: %v %+v", c.method, am.Clip(c.path, 60), decErr, eb)
		}
	}
	// Nothing was created outside the state directory, nor inside it.
	entries, err := os.ReadDir(filepath.Join(cfg.StateDir, "slivers"))
	must(t, err)
	if len(entries) != 0 {
		t.Fatalf("hostile requests left state: %v", entries)
	}
	// The client refuses bad ids before sending anything.
	if _, err := a.client.Status(ctxT(t, time.Second), "../x"); am.CodeOf(err) != am.BadArgs {
		t.Fatalf("client with a bad id: %v", err)
	}
}

// TestNoEngine: with no engine behind it, the agent still starts and
// answers, and says the engine is unavailable instead of failing opaquely.
func TestNoEngine(t *testing.T) {
	cfg := testConfig(t)
	svc, err := node.New(cfg, docker.NewRuntime(filepath.Join(t.TempDir(), "no.sock")))
	must(t, err)
	defer svc.Close()
	err = svc.Kill(ctxT(t, 5*time.Second), "x")
	if am.CodeOf(err) != am.Unavailable {
		t.Fatalf("kill without an engine: %v, want UNAVAILABLE", err)
	}
}
