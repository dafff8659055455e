package credentials

import (
	"crypto/x509"
	"errors"

	"github.com/geniam/geniam/am"
)

// CallerOf builds the am.Caller of a TLS client from the chain it presented
// (tls.ConnectionState.PeerCertificates, leaf first). The chain is not
// verified here: Authorize verifies it against the trusted roots.
func CallerOf(chain []*x509.Certificate) (*am.Caller, error) {
	if len(chain) == 0 {
		return nil, errors.New("no client certificate")
	}
	leaf := chain[0]
	urn := URNOf(leaf)
	if urn == "" {
		return nil, errors.New("the client certificate has no urn:publicid:IDN+ URN in its subjectAltName")
	}
	c := &am.Caller{URN: urn, Cert: leaf, Chain: chain}
	if len(leaf.EmailAddresses) > 0 {
		c.Email = leaf.EmailAddresses[0]
	}
	return c, nil
}
