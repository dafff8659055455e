// Package pemcerts reads X.509 certificates from PEM text: the one loop
// over pem.Decode that the trust roots, the credential gids and the dev PKI
// share. Unlike x509.CertPool.AppendCertsFromPEM it reports a block that does
// not parse instead of dropping it without a word.
package pemcerts

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
)

// Parse returns the certificates of every CERTIFICATE block of b, in order,
// and an error for each such block that does not parse (numbered from 1).
// Blocks of other types (keys, CRLs) are passed over.
func Parse(b []byte) (certs []*x509.Certificate, bad []error) {
	for n := 1; ; {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return certs, bad
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			bad = append(bad, fmt.Errorf("certificate %d: %w", n, err))
		} else {
			certs = append(certs, c)
		}
		n++
	}
}

// ParseAll is Parse for callers that want all or nothing: the first bad
// block is the error, and so is text without a certificate.
func ParseAll(b []byte) ([]*x509.Certificate, error) {
	certs, bad := Parse(b)
	if len(bad) > 0 {
		return nil, bad[0]
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("no certificate found")
	}
	return certs, nil
}
