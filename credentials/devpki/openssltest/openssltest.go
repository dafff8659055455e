// Package openssltest has the openssl CLI sign the certificates Go refuses
// to create but old GENI authorities issued: SHA-1 (and MD5) signatures and
// negative serial numbers. It is for tests only; the tests of the trust
// roots and of the TLS edge share it, so both meet the same legacy chains.
package openssltest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/geniam/geniam/am/amtest"
	"github.com/geniam/geniam/credentials/devpki"
)

// Need skips the test when the openssl CLI is not installed.
func Need(tb testing.TB) {
	tb.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		tb.Skip("openssl CLI not installed: cannot make a certificate Go refuses to sign")
	}
}

// Leaf describes a certificate for openssl to sign.
type Leaf struct {
	Name   string // file base name in the signer's directory and the subject's CN
	Digest string // "sha1", "md5", "sha256", ...
	Serial string // decimal; may be negative
	SAN    string // openssl subjectAltName value ("URI:urn:...,email:..."); "" for none
	CA     bool   // an authority (CA:TRUE), for a legacy intermediate
	Extra  string // further extension lines, each ending in "\n"
}

// Signer is an authority whose certificate and key are in files, where
// openssl can read them.
type Signer struct {
	Dir      string
	CertFile string
	KeyFile  string
}

// NewSigner writes ca's certificate and key to files in dir.
func NewSigner(tb testing.TB, ca *devpki.Identity, dir string) *Signer {
	tb.Helper()
	cert, key, err := ca.WriteFiles(dir, "ca")
	if err != nil {
		tb.Fatal(err)
	}
	return &Signer{Dir: dir, CertFile: cert, KeyFile: key}
}

// Sign has openssl issue l under s, with a fresh RSA key of 2048 bits, and
// returns the certificate and its key in PEM. The result can sign in turn
// (when l.CA is set) through Child.
func (s *Signer) Sign(tb testing.TB, l Leaf) (certPEM, keyPEM []byte) {
	tb.Helper()
	base := filepath.Join(s.Dir, l.Name)
	ext := "basicConstraints=CA:FALSE\n"
	if l.CA {
		ext = "basicConstraints=critical,CA:TRUE\n"
	}
	ext += l.Extra
	if l.SAN != "" {
		ext += "subjectAltName=" + l.SAN + "\n"
	}
	if err := os.WriteFile(base+".ext", []byte(ext), 0o644); err != nil {
		tb.Fatal(err)
	}
	run(tb, "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", base+".key", "-subj", "/CN="+l.Name, "-out", base+".csr")
	run(tb, "x509", "-req", "-in", base+".csr", "-CA", s.CertFile, "-CAkey", s.KeyFile, "-"+l.Digest, "-set_serial", l.Serial,
		"-days", "30", "-extfile", base+".ext", "-out", base+".pem")
	return amtest.ReadFile(tb, base+".pem"), amtest.ReadFile(tb, base+".key")
}

// Child is the signer of a certificate s signed with l.CA set.
func (s *Signer) Child(l Leaf) *Signer {
	base := filepath.Join(s.Dir, l.Name)
	return &Signer{Dir: s.Dir, CertFile: base + ".pem", KeyFile: base + ".key"}
}

func run(tb testing.TB, args ...string) {
	tb.Helper()
	if out, err := exec.Command("openssl", args...).CombinedOutput(); err != nil {
		tb.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}
