package credentials

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/geniam/geniam/credentials/devpki"
)

// TestLoadTrustRoots holds the one loading rule (issue 15: TLS read the tree,
// the credential layer only top-level *.pem/*.crt/*.cert, so a c_rehash
// directory or a .cer file let a caller pass TLS and then be refused as
// untrusted).
func TestLoadTrustRoots(t *testing.T) {
	ca := func(name string) *devpki.Identity {
		id, err := devpki.NewCA(devpki.Options{URN: "urn:publicid:IDN+" + name + "+authority+ca"})
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	top, sub, der, hashed, hidden := ca("top"), ca("sub"), ca("der"), ca("hashed"), ca("hidden")
	dir := t.TempDir()
	write := func(rel string, b []byte) {
		path := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	junk := "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"
	write("bundle.pem", append([]byte(junk), top.CertPEM()...)) // a bad block beside a good one
	write("geni/fed/sub.crt", sub.CertPEM())                    // a subdirectory
	write("der.cer", der.Cert.Raw)                              // DER in a .cer file
	write("certs/hashed.pem", hashed.CertPEM())                 // c_rehash: the file ...
	write("README", []byte("federation roots, see the wiki"))   // not a certificate file
	write(".git/hidden.pem", hidden.CertPEM())                  // dot directories are passed over
	write("ca.key", top.KeyPEM())                               // keys are not read
	if err := os.Symlink(filepath.Join("certs", "hashed.pem"), filepath.Join(dir, "1a2b3c4d.0")); err != nil {
		t.Fatal(err) // ... and its hash link: counted once
	}
	roots, problems, err := LoadTrustRoots(dir)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, c := range roots.Certs() {
		got[URNOf(c)] = true
	}
	for _, want := range []*devpki.Identity{top, sub, der, hashed} {
		if !got[URNOf(want.Cert)] {
			t.Errorf("root %s not loaded", URNOf(want.Cert))
		}
	}
	if len(roots.Certs()) != 4 || got[URNOf(hidden.Cert)] {
		t.Errorf("loaded %d roots %v, want the 4 above once each", len(roots.Certs()), got)
	}
	if len(problems) != 1 || !strings.Contains(problems[0].Error(), "bundle.pem") {
		t.Errorf("problems %v, want the bad block of bundle.pem", problems)
	}
	// The set is the same whether the TLS edge or the credentials ask.
	if roots.Roots() != roots {
		t.Error("a fixed set is not its own RootSource")
	}

	empty := t.TempDir()
	if _, _, err := LoadTrustRoots(empty); err == nil {
		t.Error("an empty roots directory gave roots")
	}
	if _, _, err := LoadTrustRoots(filepath.Join(empty, "missing")); err == nil {
		t.Error("a missing roots directory gave roots")
	}
}

func TestVerifierReloadRoots(t *testing.T) {
	one, two := t.TempDir(), t.TempDir()
	for i, d := range []string{one, two} {
		id, err := devpki.NewCA(devpki.Options{URN: "urn:publicid:IDN+r" + string(rune('0'+i)) + "+authority+ca"})
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "ca.pem"), id.CertPEM(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	roots, _, err := LoadTrustRoots(one)
	if err != nil {
		t.Fatal(err)
	}
	v := NewVerifier(roots, Options{})
	if _, err := v.ReloadRoots(two, true); err != nil {
		t.Fatal(err)
	}
	if r := v.Roots(); r == roots || !r.Legacy || len(r.Certs()) != 1 {
		t.Errorf("after reload: %+v", r)
	}
	before := v.Roots()
	if _, err := v.ReloadRoots(t.TempDir(), false); err == nil {
		t.Error("reloading an empty directory succeeded")
	}
	if v.Roots() != before {
		t.Error("a failed reload replaced the roots")
	}
}
