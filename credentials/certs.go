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

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/credentials/pemcerts"
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
	certs, bad := pemcerts.Parse([]byte(text))
	if len(bad) > 0 {
		return nil, fmt.Errorf("certificate does not parse: %v", bad[0])
	}
	if len(certs) == 0 {
		return nil, errors.New("no certificate in PEM text")
	}
	return certs, nil
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

// authorityOver reports whether the certificate issuer is a GENI authority
// (URN type authority) over the subject certificate's namespace.
func authorityOver(issuer, subject *x509.Certificate) error {
	iu, err := am.ParseURN(URNOf(issuer))
	if err != nil {
		return fmt.Errorf("issuer %s has no GENI URN", certName(issuer))
	}
	if !strings.EqualFold(iu.Type, "authority") {
		return fmt.Errorf("issuer %s is not an authority", certName(issuer))
	}
	su, err := am.ParseURN(URNOf(subject))
	if err != nil {
		return fmt.Errorf("certificate %s has no GENI URN", certName(subject))
	}
	if !am.AuthorityCovers(iu.Authority, su.Authority) {
		return fmt.Errorf("%s is not an authority over %s", certName(issuer), certName(subject))
	}
	return nil
}
