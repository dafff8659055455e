package console

import (
	"crypto/tls"
	"crypto/x509"
)

// TLSConfig is the AM listener's TLS configuration (certificate, trusted
// roots, legacy chain walk) with the client certificate made optional: a
// browser without one gets the login page. A certificate that is presented
// is verified exactly as the AM listener does.
func TLSConfig(api *tls.Config) *tls.Config {
	c := api.Clone()
	c.ClientAuth = tls.RequestClientCert
	verify := api.VerifyPeerCertificate
	c.VerifyPeerCertificate = func(raw [][]byte, chains [][]*x509.Certificate) error {
		if len(raw) == 0 || verify == nil {
			return nil
		}
		return verify(raw, chains)
	}
	c.NextProtos = []string{"http/1.1"}
	return c
}
