package credentials

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/geniam/geniam/credentials/devpki"
)

// A user certificate signed with SHA-1 (as old GENI authorities issue them)
// is refused by Go's verifier; with Legacy on, TrustRoots admits it through
// VerifyLegacy, as the TLS edge does, so the two layers agree.
func TestTrustRootsLegacySHA1(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed: cannot make a SHA-1-signed certificate (Go refuses to)")
	}
	dir := t.TempDir()
	ca, err := devpki.NewCA(devpki.Options{URN: "urn:publicid:IDN+legacy.test+authority+sa", KeyBits: 1024})
	if err != nil {
		t.Fatal(err)
	}
	caCert, caKey, err := ca.WriteFiles(dir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	ext := filepath.Join(dir, "ext.cnf")
	os.WriteFile(ext, []byte("subjectAltName=URI:urn:publicid:IDN+legacy.test+user+old\nbasicConstraints=CA:FALSE\n"), 0o644)
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("openssl", args...).CombinedOutput(); err != nil {
			t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	key, csr, crt := filepath.Join(dir, "old-key.pem"), filepath.Join(dir, "old.csr"), filepath.Join(dir, "old-cert.pem")
	run("req", "-new", "-newkey", "rsa:1024", "-nodes", "-keyout", key, "-subj", "/CN=old", "-out", csr)
	run("x509", "-req", "-sha1", "-in", csr, "-CA", caCert, "-CAkey", caKey, "-set_serial", "7", "-days", "30", "-extfile", ext, "-out", crt)
	b, _ := os.ReadFile(crt)
	certs, err := devpki.ParseCerts(b)
	if err != nil {
		t.Fatal(err)
	}
	old := certs[0]
	roots := NewTrustRoots(ca.Cert)
	if _, err := roots.Verify(old, nil, time.Now()); err == nil {
		t.Fatal("a SHA-1-signed certificate was accepted without the legacy setting")
	}
	roots.Legacy = true
	path, err := roots.Verify(old, nil, time.Now())
	if err != nil {
		t.Fatalf("legacy path refused the SHA-1 certificate: %v", err)
	}
	if len(path) != 2 || !path[1].Equal(ca.Cert) {
		t.Fatalf("legacy path %v", path)
	}
	// The legacy path still checks the signature: another CA's root does not do.
	other, _ := devpki.NewCA(devpki.Options{URN: "urn:publicid:IDN+legacy.test+authority+sa", KeyBits: 1024})
	stranger := NewTrustRoots(other.Cert)
	stranger.Legacy = true
	if _, err := stranger.Verify(old, nil, time.Now()); err == nil {
		t.Fatal("legacy path accepted a certificate its root did not sign")
	}
}
