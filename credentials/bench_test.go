package credentials

import (
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/geniam/geniam/am"
)

func benchRequest(b *testing.B, value string) am.AuthRequest {
	return am.AuthRequest{Method: "Allocate", Caller: sampleCaller(b), Target: sampleSlice,
		Privileges: PrivilegesFor("Allocate"), Now: sampleNow, Credentials: []am.Credential{sfa(value)}}
}

// BenchmarkVerifyCold verifies the real gcf slice credential (one rsa-sha1
// signature, 7.5 KB) from scratch each time, with a new Verifier (empty
// caches): parse, C14N, digest, RSA, chains of the caller, owner, target and
// signer.
func BenchmarkVerifyCold(b *testing.B) {
	roots := sampleVerifier(b).Roots()
	req := benchRequest(b, readTestdata(b, "slice-cred.xml"))
	b.ReportAllocs()
	for b.Loop() {
		v := NewVerifier(roots, Options{})
		if _, err := v.Authorize(req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyKnownCerts verifies a credential not seen before whose
// certificates (owner, slice, signer) the verifier has already chained to
// the roots: the usual case of a new credential from a known user.
func BenchmarkVerifyKnownCerts(b *testing.B) {
	v := sampleVerifier(b)
	benchWarmAuthorize(b, v, func() {
		v.mu.Lock()
		clear(v.cache)
		v.mu.Unlock()
	})
}

// BenchmarkVerifyCached is the same call answered from the cache.
func BenchmarkVerifyCached(b *testing.B) {
	benchWarmAuthorize(b, sampleVerifier(b), func() {})
}

// benchWarmAuthorize authorizes the sample slice credential once with v,
// then times the call again, running before ahead of each.
func benchWarmAuthorize(b *testing.B, v *Verifier, before func()) {
	req := benchRequest(b, readTestdata(b, "slice-cred.xml"))
	if _, err := v.Authorize(req); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		before()
		if _, err := v.Authorize(req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseCredential is the parsing share of a cold verification.
func BenchmarkParseCredential(b *testing.B) {
	raw := []byte(readTestdata(b, "slice-cred.xml"))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseCredential(raw); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkXmlsec1Verify runs what gcf runs per signature:
// xmlsec1 --verify --node-id Sig_ref0 --trusted-pem <root> <file>.
func BenchmarkXmlsec1Verify(b *testing.B) {
	bin := needXmlsec(b)
	file, _ := filepath.Abs(filepath.Join("testdata", "slice-cred.xml"))
	root, _ := filepath.Abs(filepath.Join("testdata", "ca-ch-cert.pem"))
	for b.Loop() {
		out, err := exec.Command(bin, "--verify", "--node-id", "Sig_ref0", "--trusted-pem", root, file).CombinedOutput()
		if err != nil {
			b.Fatalf("%v: %s", err, out)
		}
	}
}

// BenchmarkXMLParse compares our parser with etree over encoding/xml.
func BenchmarkXMLParse(b *testing.B) {
	raw := []byte(readTestdata(b, "slice-cred.xml"))
	b.Run("fast", func(b *testing.B) {
		for b.Loop() {
			if _, err := parseXML(raw); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("etree", func(b *testing.B) {
		for b.Loop() {
			if _, err := parseWithEtree(raw); err != nil {
				b.Fatal(err)
			}
		}
	})
}
