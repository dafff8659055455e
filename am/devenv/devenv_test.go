package devenv

import (
	"context"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/geniam/geniam/credentials/devpki"
	"github.com/jackc/pgx/v5"
)

func TestEnsurePKIIsStable(t *testing.T) {
	dir := t.TempDir()
	p, err := EnsurePKI(dir)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(p.CH.CA.Cert)
	for name, id := range map[string]*devpki.Identity{"am": p.AM, "alice": p.User} {
		if _, err := id.Cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Errorf("%s does not chain to the dev CA: %v", name, err)
		}
	}
	again, err := EnsurePKI(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !again.CH.CA.Cert.Equal(p.CH.CA.Cert) || !again.User.Cert.Equal(p.User.Cert) {
		t.Fatal("a second run replaced existing certificates")
	}
	pub, _ := os.ReadFile(p.UserSSHPub)
	if !strings.HasPrefix(string(pub), "ssh-ed25519 AAAA") {
		t.Fatalf("ssh key %q", pub)
	}
	cfg := filepath.Join(dir, "omni_config")
	if err := WriteOmniConfig(cfg, p, "https://127.0.0.1:8001/", "https://127.0.0.1:8000/"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(cfg)
	if !strings.Contains(string(b), "geniam = "+AMURN+",https://127.0.0.1:8001/") {
		t.Fatalf("omni_config lacks the aggregate nickname:\n%s", b)
	}
}

func TestDatabaseRestartable(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	dir := t.TempDir()
	ctx := context.Background()
	c, url, err := Database(ctx, filepath.Join(dir, "pg"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	// A second call reuses the running cluster and the same port.
	c2, url2, err := Database(ctx, filepath.Join(dir, "pg"))
	if err != nil || url2 != url || c2.Port != c.Port {
		t.Fatalf("second Database: %v %q vs %q", err, url2, url)
	}
}
