package credentials

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/beevik/etree"

	_ "crypto/sha1" // digest and signature algorithms GENI uses
	_ "crypto/sha256"
	_ "crypto/sha512"
)

// XML-DSig as GENI uses it (credentials.md §4.3): one Reference per Signature,
// to a same-document #id, enveloped-signature and C14N transforms only,
// RSA PKCS#1 v1.5 signatures, and the signer's certificate (plus its chain)
// in KeyInfo/X509Data.

const (
	nsDSig        = "http://www.w3.org/2000/09/xmldsig#"
	nsExcC14N     = "http://www.w3.org/2001/10/xml-exc-c14n#"
	algC14N       = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"
	algExcC14N    = nsExcC14N
	algEnveloped  = nsDSig + "enveloped-signature"
	algSHA1       = nsDSig + "sha1"
	algSHA256     = "http://www.w3.org/2001/04/xmlenc#sha256"
	algSHA512     = "http://www.w3.org/2001/04/xmlenc#sha512"
	algRSASHA1    = nsDSig + "rsa-sha1"
	algRSASHA256  = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
	algRSASHA512  = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512"
	maxSignatures = 64
)

var digestAlgorithms = map[string]crypto.Hash{
	algSHA1:   crypto.SHA1,
	algSHA256: crypto.SHA256,
	algSHA512: crypto.SHA512,
}

var signatureAlgorithms = map[string]crypto.Hash{
	algRSASHA1:   crypto.SHA1,
	algRSASHA256: crypto.SHA256,
	algRSASHA512: crypto.SHA512,
}

// signature is a Signature whose value and digest verified. Nothing is
// trusted yet: the signer's chain is checked by the caller.
type signature struct {
	refID  string              // the id its Reference points to
	signer *x509.Certificate   // the embedded certificate whose key verified SignedInfo
	others []*x509.Certificate // the other embedded certificates (the signer's chain)
}

// dsigChildren returns the child elements of el named local in the XML-DSig
// namespace.
func dsigChildren(el *etree.Element, local string) []*etree.Element {
	var out []*etree.Element
	for _, c := range el.ChildElements() {
		if c.Tag == local && c.NamespaceURI() == nsDSig {
			out = append(out, c)
		}
	}
	return out
}

// dsigAlgorithm is the hash named by the Algorithm attribute of el's child
// local (SignatureMethod, DigestMethod); one missing from known is refused.
func dsigAlgorithm(el *etree.Element, local string, known map[string]crypto.Hash, what string) (crypto.Hash, error) {
	m, err := dsigChild(el, local)
	if err != nil {
		return 0, err
	}
	alg := m.SelectAttrValue("Algorithm", "")
	h, ok := known[alg]
	if !ok {
		return 0, fmt.Errorf("unsupported %s %q", what, alg)
	}
	return h, nil
}

func dsigChild(el *etree.Element, local string) (*etree.Element, error) {
	cs := dsigChildren(el, local)
	if len(cs) != 1 {
		return nil, fmt.Errorf("signature has %d %s elements, want 1", len(cs), local)
	}
	return cs[0], nil
}

// isSignature reports whether el is an XML-DSig Signature element.
func isSignature(el *etree.Element) bool {
	return el.Tag == "Signature" && el.NamespaceURI() == nsDSig
}

// referenceID returns the id a Signature's single Reference points to, without
// verifying anything ("" when it has no usable reference).
func referenceID(sig *etree.Element) string {
	si := dsigChildren(sig, "SignedInfo")
	if len(si) != 1 {
		return ""
	}
	refs := dsigChildren(si[0], "Reference")
	if len(refs) != 1 {
		return ""
	}
	uri := refs[0].SelectAttrValue("URI", "")
	if !strings.HasPrefix(uri, "#") {
		return ""
	}
	return uri[1:]
}

// verifySignature checks the digest of the referenced element and the
// signature value over SignedInfo.
func (d *document) verifySignature(sig *etree.Element) (*signature, error) {
	si, err := dsigChild(sig, "SignedInfo")
	if err != nil {
		return nil, err
	}
	cm, err := dsigChild(si, "CanonicalizationMethod")
	if err != nil {
		return nil, err
	}
	siMode, err := c14nModeOf(cm)
	if err != nil {
		return nil, err
	}
	sigHash, err := dsigAlgorithm(si, "SignatureMethod", signatureAlgorithms, "signature method")
	if err != nil {
		return nil, err
	}
	ref, err := dsigChild(si, "Reference")
	if err != nil {
		return nil, err
	}
	uri := ref.SelectAttrValue("URI", "")
	if !strings.HasPrefix(uri, "#") || len(uri) < 2 {
		return nil, fmt.Errorf("unsupported reference URI %q: only same-document #id references are accepted", uri)
	}
	target, ok := d.ids[uri[1:]]
	if !ok {
		return nil, fmt.Errorf("reference %q names no element", uri)
	}

	// Transforms: enveloped-signature and at most one C14N, which must come last.
	refMode := c14nMode{}
	var skip *etree.Element
	if ts := dsigChildren(ref, "Transforms"); len(ts) > 1 {
		return nil, errors.New("reference has more than one Transforms element")
	} else if len(ts) == 1 {
		list := dsigChildren(ts[0], "Transform")
		if len(ts[0].ChildElements()) != len(list) {
			return nil, errors.New("unexpected element inside Transforms")
		}
		for i, t := range list {
			switch alg := t.SelectAttrValue("Algorithm", ""); alg {
			case algEnveloped:
				skip = sig
			case algC14N, algExcC14N:
				if i != len(list)-1 {
					return nil, errors.New("canonicalization must be the last transform")
				}
				if refMode, err = c14nModeOf(t); err != nil {
					return nil, err
				}
			default:
				return nil, fmt.Errorf("unsupported transform %q", alg)
			}
		}
	}
	digestHash, err := dsigAlgorithm(ref, "DigestMethod", digestAlgorithms, "digest method")
	if err != nil {
		return nil, err
	}
	dv, err := dsigChild(ref, "DigestValue")
	if err != nil {
		return nil, err
	}
	wantDigest, err := decodeBase64(dv.Text())
	if err != nil {
		return nil, errors.New("DigestValue is not base64")
	}

	var buf bytes.Buffer
	if err := canonicalize(&buf, target, skip, refMode); err != nil {
		return nil, err
	}
	h := digestHash.New()
	h.Write(buf.Bytes())
	if !bytes.Equal(h.Sum(nil), wantDigest) {
		return nil, fmt.Errorf("digest of %s does not match: its content was altered after signing", uri[1:])
	}

	sv, err := dsigChild(sig, "SignatureValue")
	if err != nil {
		return nil, err
	}
	sigValue, err := decodeBase64(sv.Text())
	if err != nil {
		return nil, errors.New("SignatureValue is not base64")
	}
	certs, err := embeddedCerts(sig)
	if err != nil {
		return nil, err
	}
	buf.Reset()
	if err := canonicalize(&buf, si, nil, siMode); err != nil {
		return nil, err
	}
	h = sigHash.New()
	h.Write(buf.Bytes())
	hashed := h.Sum(nil)
	for i, c := range certs {
		pub, ok := c.PublicKey.(*rsa.PublicKey)
		if !ok {
			continue
		}
		if rsa.VerifyPKCS1v15(pub, sigHash, hashed, sigValue) == nil {
			others := make([]*x509.Certificate, 0, len(certs)-1)
			others = append(others, certs[:i]...)
			others = append(others, certs[i+1:]...)
			return &signature{refID: uri[1:], signer: c, others: others}, nil
		}
	}
	return nil, fmt.Errorf("signature over %s does not verify with any embedded certificate", uri[1:])
}

// c14nModeOf reads a CanonicalizationMethod or Transform element.
func c14nModeOf(el *etree.Element) (c14nMode, error) {
	switch alg := el.SelectAttrValue("Algorithm", ""); alg {
	case algC14N:
		return c14nMode{}, nil
	case algExcC14N:
		var prefixes []string
		for _, c := range el.ChildElements() {
			if c.Tag == "InclusiveNamespaces" && c.NamespaceURI() == nsExcC14N {
				prefixes = append(prefixes, strings.Fields(c.SelectAttrValue("PrefixList", ""))...)
			}
		}
		return exclusiveMode(prefixes), nil
	default:
		return c14nMode{}, fmt.Errorf("unsupported canonicalization %q", alg)
	}
}

// embeddedCerts parses every KeyInfo/X509Data/X509Certificate of sig.
func embeddedCerts(sig *etree.Element) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for _, ki := range dsigChildren(sig, "KeyInfo") {
		for _, xd := range dsigChildren(ki, "X509Data") {
			for _, xc := range dsigChildren(xd, "X509Certificate") {
				der, err := decodeBase64(xc.Text())
				if err != nil {
					return nil, errors.New("X509Certificate is not base64")
				}
				c, err := x509.ParseCertificate(der)
				if err != nil {
					return nil, fmt.Errorf("embedded certificate does not parse: %v", err)
				}
				certs = append(certs, c)
			}
		}
	}
	if len(certs) == 0 {
		return nil, errors.New("signature carries no X509Certificate")
	}
	return certs, nil
}

// decodeBase64 decodes base64 text that may be broken into lines.
func decodeBase64(s string) ([]byte, error) {
	s = strings.Map(func(r rune) rune {
		switch r {
		case ' ', '\t', '\n', '\r':
			return -1
		}
		return r
	}, s)
	return base64.StdEncoding.DecodeString(s)
}

// wrapBase64 encodes b as base64 in 64-column lines, as xmlsec1 writes it.
func wrapBase64(b []byte) string {
	s := base64.StdEncoding.EncodeToString(b)
	var sb strings.Builder
	for len(s) > 64 {
		sb.WriteString(s[:64])
		sb.WriteByte('\n')
		s = s[64:]
	}
	sb.WriteString(s)
	return sb.String()
}

// appendSignature adds to parent a Signature over the element with xml:id id
// (which must be in doc), made with signer, and fills its digest and value.
// It canonicalizes both the credential and SignedInfo in place, so the
// signature covers exactly what a verifier will compute from the serialized
// document.
func appendSignature(parent *etree.Element, target *etree.Element, id string, s *Signer) error {
	hash := s.hash()
	sigAlg, digAlg := algRSASHA256, algSHA256
	if hash == crypto.SHA1 {
		sigAlg, digAlg = algRSASHA1, algSHA1
	}
	sig := parent.CreateElement("Signature")
	sig.CreateAttr("xmlns", nsDSig)
	sig.CreateAttr("xml:id", "Sig_"+id)
	si := sig.CreateElement("SignedInfo")
	si.CreateElement("CanonicalizationMethod").CreateAttr("Algorithm", algC14N)
	si.CreateElement("SignatureMethod").CreateAttr("Algorithm", sigAlg)
	ref := si.CreateElement("Reference")
	ref.CreateAttr("URI", "#"+id)
	ref.CreateElement("Transforms").CreateElement("Transform").CreateAttr("Algorithm", algEnveloped)
	ref.CreateElement("DigestMethod").CreateAttr("Algorithm", digAlg)
	dv := ref.CreateElement("DigestValue")
	sv := sig.CreateElement("SignatureValue")
	xd := sig.CreateElement("KeyInfo").CreateElement("X509Data")
	for _, c := range append([]*x509.Certificate{s.Cert}, s.Chain...) {
		xd.CreateElement("X509Certificate").SetText(wrapBase64(c.Raw))
	}

	var buf bytes.Buffer
	if err := canonicalize(&buf, target, sig, c14nMode{}); err != nil {
		return err
	}
	h := hash.New()
	h.Write(buf.Bytes())
	dv.SetText(base64.StdEncoding.EncodeToString(h.Sum(nil)))

	buf.Reset()
	if err := canonicalize(&buf, si, nil, c14nMode{}); err != nil {
		return err
	}
	h = hash.New()
	h.Write(buf.Bytes())
	value, err := rsa.SignPKCS1v15(rand.Reader, s.Key, hash, h.Sum(nil))
	if err != nil {
		return err
	}
	sv.SetText(wrapBase64(value))
	return nil
}
