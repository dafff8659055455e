package credentials

import (
	"crypto"
	"crypto/md5"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"time"
)

// Old GENI authorities signed certificates with SHA-1 (and MD5), which Go's
// x509 verifier refuses outright. With the legacy setting on (tls.legacy_sha1,
// the default), both the TLS edge and TrustRoots.Verify walk such a chain by
// hand here, so a user the TLS layer admits is not then refused by the
// credential checks of the same call.

func isLegacyAlgorithm(a x509.SignatureAlgorithm) bool {
	switch a {
	case x509.SHA1WithRSA, x509.ECDSAWithSHA1, x509.DSAWithSHA1, x509.MD5WithRSA, x509.MD2WithRSA:
		return true
	}
	return false
}

// HasLegacySignature reports whether any certificate of chain is signed with
// SHA-1 or MD5, which Go's verifier refuses.
func HasLegacySignature(chain []*x509.Certificate) bool {
	for _, c := range chain {
		if isLegacyAlgorithm(c.SignatureAlgorithm) {
			return true
		}
	}
	return false
}

// VerifyLegacy walks from the leaf up to a trusted root, checking each
// signature with the issuer's key (SHA-1 and MD5 allowed), validity periods,
// and that every issuer is a CA allowed to sign certificates. It returns the
// path, leaf first, root last.
func VerifyLegacy(chain []*x509.Certificate, roots []*x509.Certificate, now time.Time) ([]*x509.Certificate, error) {
	const maxPath = 10
	cur := chain[0]
	path := []*x509.Certificate{cur}
	for len(path) <= maxPath {
		if now.Before(cur.NotBefore) || now.After(cur.NotAfter) {
			return nil, fmt.Errorf("%q is not valid at %s (valid %s to %s)", cur.Subject.String(),
				now.UTC().Format(time.RFC3339), cur.NotBefore.UTC().Format(time.RFC3339), cur.NotAfter.UTC().Format(time.RFC3339))
		}
		for _, root := range roots {
			if root.Equal(cur) {
				return path, nil // a root is trusted as it is; its own signature is not checked
			}
		}
		parent, err := findLegacyIssuer(cur, roots, chain[1:])
		if err != nil {
			return nil, err
		}
		path = append(path, parent)
		cur = parent
	}
	return nil, errors.New("chain longer than 10 certificates")
}

func findLegacyIssuer(c *x509.Certificate, roots, intermediates []*x509.Certificate) (*x509.Certificate, error) {
	var lastErr error = fmt.Errorf("no trusted issuer %q found for %q", c.Issuer.String(), c.Subject.String())
	for _, group := range [][]*x509.Certificate{roots, intermediates} {
		for _, p := range group {
			if string(p.RawSubject) != string(c.RawIssuer) || p.Equal(c) {
				continue
			}
			if !p.BasicConstraintsValid || !p.IsCA {
				lastErr = fmt.Errorf("issuer %q is not a CA", p.Subject.String())
				continue
			}
			if p.KeyUsage != 0 && p.KeyUsage&x509.KeyUsageCertSign == 0 {
				lastErr = fmt.Errorf("issuer %q may not sign certificates (keyUsage)", p.Subject.String())
				continue
			}
			if err := checkLegacySignature(p, c); err != nil {
				lastErr = fmt.Errorf("signature of %q by %q: %w", c.Subject.String(), p.Subject.String(), err)
				continue
			}
			return p, nil
		}
	}
	return nil, lastErr
}

// checkSignature is parent.CheckSignature, plus MD5 with RSA, which
// CheckSignature refuses outright.
func checkLegacySignature(parent, c *x509.Certificate) error {
	if c.SignatureAlgorithm == x509.MD5WithRSA {
		pub, ok := parent.PublicKey.(*rsa.PublicKey)
		if !ok {
			return errors.New("MD5WithRSA signature from a non-RSA key")
		}
		sum := md5.Sum(c.RawTBSCertificate)
		return rsa.VerifyPKCS1v15(pub, crypto.MD5, sum[:], c.Signature)
	}
	return parent.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature)
}
