package devenv

import (
	"context"
	"crypto/x509"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

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
	noTrustOnTCP(t, c.Port, c.SocketDir, c.PasswordFile)

	// A cluster of an older make run (trust on TCP, no password file) is
	// secured by the next Database.
	hba := filepath.Join(c.Dir, "pg_hba.conf")
	b, err := os.ReadFile(hba)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(hba, []byte(strings.ReplaceAll(string(b), "scram-sha-256", "trust")), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(c.PasswordFile); err != nil {
		t.Fatal(err)
	}
	if out, err := c.Psql("postgres", "-c", "SELECT pg_reload_conf()"); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	time.Sleep(200 * time.Millisecond)
	if conn, err := pgx.Connect(ctx, noPassword(c.Port)); err != nil {
		t.Fatalf("the old-style cluster was not trusting: %v", err)
	} else {
		conn.Close(ctx)
	}
	c3, url3, err := Database(ctx, filepath.Join(dir, "pg"))
	if err != nil || url3 == url {
		t.Fatalf("third Database: %v (url unchanged: %v)", err, url3 == url)
	}
	time.Sleep(200 * time.Millisecond)
	noTrustOnTCP(t, c3.Port, c3.SocketDir, c3.PasswordFile)
	conn, err = pgx.Connect(ctx, url3)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
}

func noPassword(port int) string {
	return "postgres://postgres@127.0.0.1:" + strconv.Itoa(port) + "/postgres?sslmode=disable"
}

// noTrustOnTCP: another local user reaching 127.0.0.1 without the password
// is refused, and cannot enter the socket directory or read the password.
func noTrustOnTCP(t *testing.T, port int, sockDir, pwFile string) {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), noPassword(port))
	if err == nil {
		conn.Close(context.Background())
		t.Fatal("the dev PostgreSQL let a caller in on TCP without a password")
	}
	if !strings.Contains(err.Error(), "password") {
		t.Fatalf("refused for another reason: %v", err)
	}
	for path, want := range map[string]os.FileMode{sockDir: 0o700, pwFile: 0o600} {
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != want {
			t.Fatalf("%s: mode %v, want %v (%v)", path, fi.Mode().Perm(), want, err)
		}
	}
}
