package node

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	"github.com/geniam/geniam/am/agent"
)

// IdentityOf names the holder of a client certificate: its GENI URN
// (urn:publicid:IDN+...) if it has one, else its subject CN.
func IdentityOf(c *x509.Certificate) string {
	for _, u := range c.URIs {
		// URL.String keeps the URN as written ("+" stays "+").
		if s := u.String(); strings.HasPrefix(s, "urn:publicid:IDN+") {
			return s
		}
	}
	if c.Subject.CommonName != "" {
		return "CN=" + c.Subject.CommonName
	}
	return "serial:" + c.SerialNumber.String()
}

// ServerTLSConfig is the agent's listener configuration: its own certificate
// and key, and mutual TLS where only clients whose certificate chains to a
// CA in clientCAFile (the aggregate's CA) complete the handshake. Others are
// refused during the handshake, before any HTTP is read.
//
// The client chain is checked by our own x509.Verify with ExtKeyUsageAny
// (not Go's default ClientAuth check) because GENI certificates often carry
// no or unusual extended key usages.
func ServerTLSConfig(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	cert, roots, err := agent.LoadTLSFiles(certFile, keyFile, clientCAFile, "agent certificate", "client CA")
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAnyClientCert,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			return verifyClientChain(raw, roots)
		},
	}, nil
}

func verifyClientChain(raw [][]byte, roots *x509.CertPool) error {
	if len(raw) == 0 {
		return errors.New("no client certificate")
	}
	certs := make([]*x509.Certificate, 0, len(raw))
	for _, r := range raw {
		c, err := x509.ParseCertificate(r)
		if err != nil {
			return fmt.Errorf("client certificate: %w", err)
		}
		certs = append(certs, c)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil {
		return fmt.Errorf("client certificate not issued by the aggregate CA: %w", err)
	}
	return clientRole(certs[0])
}

// clientRole refuses a certificate whose extended key usages exclude
// client authentication: an agent's own certificate (serverAuth only) must
// not open another agent even though the same CA issued both. A
// certificate with no extended key usage Go knows (old GENI ones carry
// none, or only private ones) may act as a client; which identities may is
// then allowed_clients' business.
func clientRole(c *x509.Certificate) error {
	if len(c.ExtKeyUsage) == 0 {
		return nil
	}
	for _, u := range c.ExtKeyUsage {
		if u == x509.ExtKeyUsageClientAuth || u == x509.ExtKeyUsageAny {
			return nil
		}
	}
	return fmt.Errorf("certificate of %s is not for client authentication (its extended key usage excludes clientAuth)", IdentityOf(c))
}
