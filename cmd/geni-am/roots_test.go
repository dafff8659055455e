package main

import (
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/geniam/geniam/am/amtest"
	"github.com/geniam/geniam/am/metrics"
	"github.com/geniam/geniam/credentials"
	"github.com/geniam/geniam/credentials/devpki"
	"github.com/geniam/geniam/credentials/devpki/pkitest"
)

// TestReloadRootsIsLoud: a SIGHUP reload that fails says so in the log (an
// error), in the metrics and in its return value, and keeps the old set; one
// that succeeds counts as ok and swaps the set TLS and credentials share.
func TestReloadRootsIsLoud(t *testing.T) {
	ca := pkitest.New(t, devpki.Options{URN: "urn:publicid:IDN+reload+authority+ca", KeyBits: 1024})
	dir := pkitest.RootsDir(t, t.TempDir(), ca.Cert) // ca.pem
	roots, _, err := credentials.LoadTrustRoots(dir)
	if err != nil {
		t.Fatal(err)
	}
	v := credentials.NewVerifier(roots, credentials.Options{})
	var logs amtest.LogBuffer
	reg := metrics.NewRegistry()
	o := &opsSide{Registry: reg, log: slog.New(slog.NewTextHandler(&logs, nil)),
		rootsReloads: reg.NewCounter("geniam_trusted_roots_reloads_total", "reloads", "result")}
	scrape := func() string {
		rec := httptest.NewRecorder()
		reg.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		return rec.Body.String()
	}

	if err := os.Remove(filepath.Join(dir, "ca.pem")); err != nil {
		t.Fatal(err)
	}
	if err := o.reloadRoots(v, dir, false); err == nil {
		t.Fatal("reloading an empty directory succeeded")
	}
	if v.Roots() != roots {
		t.Error("a failed reload replaced the roots")
	}
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "NOT reloaded") {
		t.Errorf("a failed reload is not an error in the log:\n%s", logs.String())
	}
	if m := scrape(); !strings.Contains(m, `geniam_trusted_roots_reloads_total{result="failed"} 1`) {
		t.Errorf("a failed reload is not counted:\n%s", m)
	}

	if err := os.WriteFile(filepath.Join(dir, "ca.cer"), ca.Cert.Raw, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := o.reloadRoots(v, dir, false); err != nil {
		t.Fatal(err)
	}
	if v.Roots() == roots || len(v.Roots().Certs()) != 1 {
		t.Error("a good reload did not swap the roots")
	}
	if m := scrape(); !strings.Contains(m, `geniam_trusted_roots_reloads_total{result="ok"} 1`) {
		t.Errorf("a good reload is not counted:\n%s", m)
	}
}
