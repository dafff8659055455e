package credentials

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

// Signer is a key that signs credentials, with its certificate and the chain
// above it (issuer first), which are embedded in each signature.
type Signer struct {
	Cert  *x509.Certificate
	Key   *rsa.PrivateKey
	Chain []*x509.Certificate
	// Hash selects rsa-sha256 (the default, crypto.SHA256) or the rsa-sha1
	// that gcf uses (crypto.SHA1).
	Hash crypto.Hash
}

func (s *Signer) hash() crypto.Hash {
	if s.Hash == crypto.SHA1 {
		return crypto.SHA1
	}
	return crypto.SHA256
}

// certs returns the signer's certificate followed by its chain.
func (s *Signer) certs() []*x509.Certificate {
	return append([]*x509.Certificate{s.Cert}, s.Chain...)
}

// parseGID parses the text of an owner_gid or target_gid: one or more PEM
// certificates (leaf first), or a single certificate in bare base64 without
// BEGIN/END lines, as ProtoGENI writes it.
func parseGID(text string) ([]*x509.Certificate, error) {
	text = strings.TrimSpace(text)
	if text == "" {
		return nil, nil
	}
	if !strings.Contains(text, "-----BEGIN") {
		der, err := decodeBase64(text)
		if err != nil {
			return nil, errors.New("certificate is neither PEM nor base64")
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("certificate does not parse: %v", err)
		}
		return []*x509.Certificate{c}, nil
	}
	var out []*x509.Certificate
	rest := []byte(text)
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate does not parse: %v", err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no certificate in PEM text")
	}
	return out, nil
}

// gidText renders certificates as owner_gid/target_gid text (PEM, leaf first).
func gidText(certs []*x509.Certificate) string {
	var sb strings.Builder
	for _, c := range certs {
		sb.Write(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
	}
	return sb.String()
}

// URNOf returns the urn:publicid:IDN+ URN in a certificate's subjectAltName,
// or "".
func URNOf(c *x509.Certificate) string {
	if c == nil {
		return ""
	}
	for _, u := range c.URIs {
		// u.String() gives the URN back exactly, '+' included (go-deps.md §6).
		if s := u.String(); len(s) > 17 && strings.EqualFold(s[:17], "urn:publicid:IDN+") {
			return s
		}
	}
	return ""
}

// certName names a certificate in messages: its URN, else its subject.
func certName(c *x509.Certificate) string {
	if u := URNOf(c); u != "" {
		return u
	}
	return c.Subject.String()
}

// KeyID is the ABAC key identifier of a certificate: its subjectKeyIdentifier
// in lowercase hex (as gcf reads it), or, when absent, the SHA-1 of the
// public key (what openssl puts in that extension).
func KeyID(c *x509.Certificate) string {
	if len(c.SubjectKeyId) > 0 {
		return hex.EncodeToString(c.SubjectKeyId)
	}
	if pub, ok := c.PublicKey.(*rsa.PublicKey); ok {
		sum := sha1.Sum(x509.MarshalPKCS1PublicKey(pub))
		return hex.EncodeToString(sum[:])
	}
	return ""
}

// URN is a parsed urn:publicid:IDN+<authority>+<type>+<name>.
type URN struct {
	Authority, Type, Name string
}

// ParseURN splits a GENI URN. The name may contain '+'.
func ParseURN(s string) (URN, error) {
	if len(s) < 17 || !strings.EqualFold(s[:17], "urn:publicid:IDN+") {
		return URN{}, fmt.Errorf("%q is not a urn:publicid:IDN+ URN", s)
	}
	parts := strings.SplitN(s[17:], "+", 3)
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return URN{}, fmt.Errorf("URN %q lacks an authority, type or name", s)
	}
	if strings.ContainsAny(s, " \t\r\n?/#|") {
		return URN{}, fmt.Errorf("URN %q contains a forbidden character", s)
	}
	return URN{Authority: parts[0], Type: parts[1], Name: parts[2]}, nil
}

// authorityCovers reports whether authority a is an authority over the
// namespace of authority sub: a's ':'-separated components are a prefix of
// sub's, compared case-insensitively (credentials.md §1.2).
func authorityCovers(a, sub string) bool {
	ac := strings.Split(strings.ToLower(a), ":")
	sc := strings.Split(strings.ToLower(sub), ":")
	if len(ac) > len(sc) {
		return false
	}
	for i := range ac {
		if ac[i] != sc[i] {
			return false
		}
	}
	return true
}

// authorityOver reports whether the certificate issuer is a GENI authority
// (URN type authority) over the subject certificate's namespace.
func authorityOver(issuer, subject *x509.Certificate) error {
	iu, err := ParseURN(URNOf(issuer))
	if err != nil {
		return fmt.Errorf("issuer %s has no GENI URN", certName(issuer))
	}
	if !strings.EqualFold(iu.Type, "authority") {
		return fmt.Errorf("issuer %s is not an authority", certName(issuer))
	}
	su, err := ParseURN(URNOf(subject))
	if err != nil {
		return fmt.Errorf("certificate %s has no GENI URN", certName(subject))
	}
	if !authorityCovers(iu.Authority, su.Authority) {
		return fmt.Errorf("%s is not an authority over %s", certName(issuer), certName(subject))
	}
	return nil
}
