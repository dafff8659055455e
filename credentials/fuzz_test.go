package credentials

import (
	"crypto/x509"
	"testing"
)

// FuzzParseCredential feeds mutated credentials to the parser, the
// canonicalizer and the whole verification: none may panic, hang or allocate
// without bound. (Minimizing an interesting 8 KB input takes the fuzzer a
// while, during which the exec counter stands still.)
func FuzzParseCredential(f *testing.F) {
	for _, name := range []string{"slice-cred.xml", "user-cred.xml"} {
		f.Add([]byte(readTestdata(f, name)))
	}
	for _, c := range c14nCases {
		f.Add([]byte(c.doc))
	}
	f.Add([]byte(`<signed-credential><credential xml:id="a"><type>privilege</type></credential></signed-credential>`))
	f.Add([]byte(`<!DOCTYPE a [<!ENTITY b "c">]><a>&b;</a>`))
	f.Add([]byte("<a xmlns:p='u'><p:b p:c='1\n2' xml:id='x'><![CDATA[<]]><?pi x?></p:b></a>"))
	roots := NewTrustRoots()
	if certs, err := parseGID(readTestdata(f, "ca-ch-cert.pem")); err == nil {
		roots = NewTrustRoots(certs...)
	}
	trust := func(v *Verifier) trustFunc {
		return func(c *x509.Certificate, extra []*x509.Certificate) (*trustedChain, error) {
			return v.trustChain(roots, 1, c, extra, sampleNow)
		}
	}
	v := NewVerifier(roots, Options{CacheSize: -1})
	f.Fuzz(func(t *testing.T, data []byte) {
		if d, err := parseDocument(data); err == nil {
			_, _ = Canonicalize(d.doc.Root())
			_, _ = CanonicalizeExclusive(d.doc.Root(), []string{"#default", "p"})
		}
		sc, err := ParseCredential(data)
		if err != nil {
			return
		}
		for _, c := range sc.Chain() {
			_, _ = Canonicalize(c.elem)
		}
		_, _ = verifyCredential(data, TypePrivilege, trust(v), sampleNow)
	})
}
