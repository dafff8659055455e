package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/geniam/geniam/am/agent"
	"github.com/geniam/geniam/credentials/devpki"
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
	cfg, err := loadConfig(write(`{"cert":"c","key":"k","client_ca":"ca","fetch_timeout":"5m","v1_plain_listen":"127.0.0.1:1888"}`))
	if err != nil || time.Duration(cfg.FetchTimeout) != 5*time.Minute || cfg.Listen != ":1887" || cfg.DefaultNetwork != "none" {
		t.Fatalf("%+v %v", cfg, err)
	}
	for _, bad := range []string{
		`{"cert":"c","key":"k","client_ca":"ca","listne":":1"}`,             // misspelt key
		`{"cert":"c","key":"k","client_ca":"ca","v1_plain_listen":":1888"}`, // no bind address
		`{"cert":"c","key":"k","client_ca":"ca","fetch_timeout":30}`,        // not a duration string
		`{"client_ca":""}`,
	} {
		if _, err := loadConfig(write(bad)); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
}

// TestRun starts the whole program on loopback and talks to it with the
// aggregate's client, then over the plain v1 listener.
func TestRun(t *testing.T) {
	dir := t.TempDir()
	ca, err := devpki.NewCA(devpki.Options{URN: "urn:publicid:IDN+geniam.test+authority+ca"})
	if err != nil {
		t.Fatal(err)
	}
	srv, _ := ca.Issue(devpki.Options{URN: "urn:publicid:IDN+geniam.test+node+n1", IPs: []net.IP{net.ParseIP("127.0.0.1")}})
	cli, _ := ca.Issue(devpki.Options{URN: "urn:publicid:IDN+geniam.test+authority+am"})
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, ca.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	sc, sk, _ := srv.WriteFiles(dir, "agent")
	cc, ck, _ := cli.WriteFiles(dir, "am")

	cfg := defaultConfig()
	cfg.Listen, cfg.V1PlainListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Cert, cfg.Key, cfg.ClientCA = sc, sk, caFile
	cfg.StateDir = filepath.Join(dir, "state")
	cfg.Instance = "cmd-test"
	if err := cfg.check(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan []string, 1)
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), ready) }()
	var addrs []string
	select {
	case addrs = <-ready:
	case err := <-done:
		t.Fatal(err)
	}
	ctls, err := agent.ClientTLSConfig(cc, ck, caFile)
	if err != nil {
		t.Fatal(err)
	}
	c := agent.NewClient("https://"+addrs[0], ctls)
	pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
	defer pcancel()
	if err := c.Ping(pctx); err != nil {
		t.Fatal(err)
	}
	c.CloseIdleConnections()
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
