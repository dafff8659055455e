// Package pkitest is the tests' PKI: a certificate authority whose
// certificate and issued identities land in the files servers and clients
// are configured with (a trusted-roots directory, a CA file, certificate
// and key files), and TLS certificates and pools for in-process servers and
// clients. Every test of the TLS edge, the node agent, the provisioner and
// the commands makes its PKI through it; a failure fails the test.
package pkitest

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/geniam/geniam/credentials/devpki"
)

// Authority is a test's certificate authority.
type Authority struct {
	*devpki.Identity
	tb       testing.TB
	Dir      string // where the files go: a temporary directory of the test
	CertFile string // the CA's certificate alone (an agents' CA, a client_ca)
}

// New makes a self-signed CA (o.URN is required).
func New(tb testing.TB, o devpki.Options) *Authority {
	tb.Helper()
	return NewIn(tb, tb.TempDir(), o)
}

// NewIn is New with the files in dir: a PKI the tests of a package share
// outlives the test that makes it.
func NewIn(tb testing.TB, dir string, o devpki.Options) *Authority {
	tb.Helper()
	ca, err := devpki.NewCA(o)
	if err != nil {
		tb.Fatal(err)
	}
	return in(tb, ca, dir)
}

// Of is an existing CA (the dev clearinghouse's, say) as a test's authority.
func Of(tb testing.TB, ca *devpki.Identity) *Authority {
	tb.Helper()
	return in(tb, ca, tb.TempDir())
}

func in(tb testing.TB, ca *devpki.Identity, dir string) *Authority {
	tb.Helper()
	a := &Authority{Identity: ca, tb: tb, Dir: dir}
	a.CertFile = filepath.Join(dir, "ca.pem")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(a.CertFile, ca.CertPEM(), 0o644); err != nil {
		tb.Fatal(err)
	}
	return a
}

// Issue signs a certificate.
func (a *Authority) Issue(o devpki.Options) *devpki.Identity {
	a.tb.Helper()
	id, err := a.Identity.Issue(o)
	if err != nil {
		a.tb.Fatal(err)
	}
	return id
}

// Server signs a server certificate for urn on 127.0.0.1 and localhost
// (a server elsewhere on the loopback sets o.IPs itself).
func (a *Authority) Server(o devpki.Options) *devpki.Identity {
	a.tb.Helper()
	if o.IPs == nil {
		o.IPs, o.DNSNames = []net.IP{net.IPv4(127, 0, 0, 1)}, []string{"localhost"}
	}
	return a.Issue(o)
}

// Files writes id's chain and key as name-cert.pem and name-key.pem in the
// authority's directory and returns their paths.
func (a *Authority) Files(id *devpki.Identity, name string) (certFile, keyFile string) {
	a.tb.Helper()
	certFile, keyFile, err := id.WriteFiles(a.Dir, name)
	if err != nil {
		a.tb.Fatal(err)
	}
	return certFile, keyFile
}

// Roots writes a trusted-roots directory (tls.trusted_roots) holding the
// authority's certificate alone and returns its path.
func (a *Authority) Roots() string {
	a.tb.Helper()
	return RootsDir(a.tb, filepath.Join(a.Dir, "roots"), a.Cert)
}

// RootsDir writes the trusted roots certs into dir (made if need be) as
// one PEM file, as an operator configures tls.trusted_roots, and returns dir.
func RootsDir(tb testing.TB, dir string, certs ...*x509.Certificate) string {
	tb.Helper()
	var b []byte
	for _, c := range certs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), b, 0o644); err != nil {
		tb.Fatal(err)
	}
	return dir
}

// Pool trusts the authority alone: a client's RootCAs.
func (a *Authority) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(a.Cert)
	return p
}

// TLS is id as a tls.Certificate: its chain and key.
func TLS(tb testing.TB, id *devpki.Identity) tls.Certificate {
	tb.Helper()
	c, err := tls.X509KeyPair(id.ChainPEM(), id.KeyPEM())
	if err != nil {
		tb.Fatal(err)
	}
	return c
}
