package agent

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
)

// LoadCertPool reads every certificate of a PEM file. Unlike
// CertPool.AppendCertsFromPEM it fails on a block that does not parse,
// instead of silently dropping it.
func LoadCertPool(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	n := 0
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: certificate %d: %w", file, n+1, err)
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("%s: no certificate found", file)
	}
	return pool, nil
}

// ClientTLSConfig is the aggregate's side: its certificate and key (the
// chain in certFile is sent), and the CA that issued the agents'
// certificates.
func ClientTLSConfig(certFile, keyFile, agentCAFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("aggregate certificate: %w", err)
	}
	roots, err := LoadCertPool(agentCAFile)
	if err != nil {
		return nil, fmt.Errorf("agent CA: %w", err)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}, RootCAs: roots}, nil
}
