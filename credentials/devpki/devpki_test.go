package devpki

import (
	"crypto/x509"
	"testing"
)

func TestIssueChain(t *testing.T) {
	ca, err := NewCA(Options{URN: "urn:publicid:IDN+geniam.test+authority+ca", KeyBits: 1024})
	if err != nil {
		t.Fatal(err)
	}
	u, err := ca.Issue(Options{URN: "urn:publicid:IDN+geniam.test+user+alice", Email: "alice@example.org", KeyBits: 1024})
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	if _, err := u.Cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatal(err)
	}
	if got := u.Cert.URIs[0].String(); got != "urn:publicid:IDN+geniam.test+user+alice" {
		t.Fatalf("URN SAN = %q", got)
	}
	dir := t.TempDir()
	cf, kf, err := u.WriteFiles(dir, "alice")
	if err != nil {
		t.Fatal(err)
	}
	back, err := Load(cf, kf)
	if err != nil {
		t.Fatal(err)
	}
	if len(back.Chain) != 1 || !back.Cert.Equal(u.Cert) {
		t.Fatalf("round trip lost the chain or the leaf")
	}
}
