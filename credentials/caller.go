package credentials

import (
	"crypto/tls"
	"crypto/x509"

	"github.com/geniam/geniam/am"
)

// CallerOf builds the am.Caller of a client from the chain it presented
// (leaf first): the GENI URN in the leaf's subjectAltName, and its email.
// The chain is not verified here (the TLS handshake and Authorize verify it
// against the trusted roots). A missing certificate or URN is an *am.Err with
// code Forbidden. It is the one place every entry point (the AM API, /data,
// the console, SSH) names its caller.
func CallerOf(chain []*x509.Certificate) (*am.Caller, error) {
	if len(chain) == 0 {
		return nil, am.Errorf(am.Forbidden, "a client certificate is required")
	}
	leaf := chain[0]
	urn := URNOf(leaf)
	if urn == "" {
		return nil, am.Errorf(am.Forbidden, "the client certificate (%s) has no GENI URN (urn:publicid:IDN+...) in its subjectAltName", leaf.Subject.String())
	}
	if _, err := am.ParseURN(urn); err != nil {
		return nil, am.Errorf(am.Forbidden, "the client certificate's URN is malformed: %v", err)
	}
	c := &am.Caller{URN: urn, Cert: leaf, Chain: chain}
	if len(leaf.EmailAddresses) > 0 {
		c.Email = leaf.EmailAddresses[0]
	}
	return c, nil
}

// CallerFromTLS is CallerOf of a request's verified TLS state.
func CallerFromTLS(cs *tls.ConnectionState) (*am.Caller, error) {
	if cs == nil {
		return nil, am.Errorf(am.Forbidden, "a client certificate is required")
	}
	return CallerOf(cs.PeerCertificates)
}
