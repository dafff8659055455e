package main

import (
	"context"
	"crypto/x509"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/agent"
	"github.com/geniam/geniam/am/agent/node"
	"github.com/geniam/geniam/credentials/devpki"
	"github.com/geniam/geniam/credentials/devpki/pkitest"
)

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) string {
		p := filepath.Join(dir, "c.json")
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cfg, err := loadConfig(write(`{"cert":"c","key":"k","client_ca":"ca","allowed_clients":["urn:publicid:IDN+x+authority+am"],"fetch_timeout":"5m","v1_plain_listen":"127.0.0.1:1888"}`))
	if err != nil || time.Duration(cfg.FetchTimeout) != 5*time.Minute || cfg.Listen != ":1887" || cfg.DefaultNetwork != "none" {
		t.Fatalf("%+v %v", cfg, err)
	}
	// The safe defaults reach the agent; negative values mean "none".
	ac := cfg.agentConfig(nil)
	if ac.MemoryBytes != node.DefaultMemoryBytes || ac.NanoCPUs != node.DefaultNanoCPUs || ac.PidsLimit != node.DefaultPidsLimit ||
		ac.DataQuotaBytes != 10<<30 || ac.MaxArchiveBytes != 10<<30 || ac.MaxImageUnpackedBytes != 80<<30 || len(ac.Capabilities) == 0 {
		t.Fatalf("defaults not passed on: %+v", ac)
	}
	cfg.MemoryBytes, cfg.CPUs, cfg.DataQuotaBytes = -1, -1, -1
	if ac := cfg.agentConfig(nil); ac.MemoryBytes != -1 || ac.NanoCPUs != -1 || ac.DataQuotaBytes != 0 {
		t.Fatalf("negative limits: %+v", ac)
	}
	for _, bad := range []string{
		`{"cert":"c","key":"k","client_ca":"ca","allow_any_client":true,"listne":":1"}`,             // misspelt key
		`{"cert":"c","key":"k","client_ca":"ca","allow_any_client":true,"v1_plain_listen":":1888"}`, // no bind address
		`{"cert":"c","key":"k","client_ca":"ca","allow_any_client":true,"fetch_timeout":30}`,        // not a duration string
		`{"client_ca":""}`,
		`{"cert":"c","key":"k","client_ca":"ca"}`, // no allowed_clients
		`{"cert":"c","key":"k","client_ca":"ca","allowed_clients":["a"],"allow_any_client":true}`,
	} {
		if _, err := loadConfig(write(bad)); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
}

// TestRun starts the whole program on loopback and talks to it with the
// aggregate's client, then over the plain v1 listener.
func TestRun(t *testing.T) {
	ca := pkitest.New(t, devpki.Options{URN: "urn:publicid:IDN+geniam.test+authority+ca"})
	serverOnly := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	sc, sk := ca.Files(ca.Server(devpki.Options{URN: "urn:publicid:IDN+geniam.test+node+n1", ExtKeyUsage: serverOnly}), "agent")
	cc, ck := ca.Files(ca.Issue(devpki.Options{URN: "urn:publicid:IDN+geniam.test+authority+am", ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}), "am")
	// Another node's agent certificate, and a client of the same CA that
	// is not the aggregate.
	oc, ok := ca.Files(ca.Server(devpki.Options{URN: "urn:publicid:IDN+geniam.test+node+n2", ExtKeyUsage: serverOnly}), "agent2")
	mc, mk := ca.Files(ca.Issue(devpki.Options{URN: "urn:publicid:IDN+geniam.test+user+mallory"}), "mallory")
	caFile := ca.CertFile

	cfg := defaultConfig()
	cfg.Listen, cfg.V1PlainListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Cert, cfg.Key, cfg.ClientCA = sc, sk, caFile
	cfg.StateDir = filepath.Join(t.TempDir(), "state")
	cfg.Instance = "cmd-test"
	cfg.AllowedClients = []string{"urn:publicid:IDN+geniam.test+authority+am"}
	cfg.DataQuotaBytes = -1 // no sliver runs here; the test must not need root
	if err := cfg.check(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan []string, 1)
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, slog.New(slog.DiscardHandler), ready) }()
	var addrs []string
	select {
	case addrs = <-ready:
	case err := <-done:
		t.Fatal(err)
	}
	pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
	defer pcancel()
	// ping pings the agent as the holder of the certificate in certFile.
	ping := func(certFile, keyFile string) error {
		ctls, err := agent.ClientTLSConfig(certFile, keyFile, caFile)
		if err != nil {
			t.Fatal(err)
		}
		c := agent.NewClient("https://"+addrs[0], ctls)
		defer c.CloseIdleConnections()
		return c.Ping(pctx)
	}
	if err := ping(cc, ck); err != nil {
		t.Fatal(err)
	}

	// Another agent's certificate is refused in the handshake (its role is
	// serverAuth only); a client of the same CA not in allowed_clients gets 403.
	if err := ping(oc, ok); err == nil {
		t.Fatal("another agent's certificate was let in")
	} else {
		t.Logf("another agent's certificate: %v", err)
	}
	if err := ping(mc, mk); am.CodeOf(err) != am.Forbidden {
		t.Fatalf("a client not in allowed_clients: %v", err)
	}

	resp, err := http.Get("http://" + addrs[1] + "/v1/ping/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "OK") {
		t.Fatalf("v1 ping: %d %s", resp.StatusCode, b)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
