package credentials

import (
	"testing"
	"time"

	"github.com/geniam/geniam/credentials/devpki"
	"github.com/geniam/geniam/credentials/devpki/openssltest"
)

// A user certificate signed with SHA-1 (as old GENI authorities issue them)
// is refused by Go's verifier; with Legacy on, TrustRoots admits it through
// VerifyLegacy, as the TLS edge does, so the two layers agree.
func TestTrustRootsLegacySHA1(t *testing.T) {
	openssltest.Need(t)
	ca, err := devpki.NewCA(devpki.Options{URN: "urn:publicid:IDN+legacy.test+authority+sa", KeyBits: 1024})
	if err != nil {
		t.Fatal(err)
	}
	crt, _ := openssltest.NewSigner(t, ca, t.TempDir()).Sign(t, openssltest.Leaf{Name: "old", Digest: "sha1", Serial: "7",
		SAN: "URI:urn:publicid:IDN+legacy.test+user+old"})
	certs, err := devpki.ParseCerts(crt)
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
