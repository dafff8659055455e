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

// LoadTLSFiles reads one side's certificate chain and key, and the CA file
// the other side's certificates must chain to; its errors name the files
// as certName and caName say.
func LoadTLSFiles(certFile, keyFile, caFile, certName, caName string) (tls.Certificate, *x509.CertPool, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("%s: %w", certName, err)
	}
	roots, err := LoadCertPool(caFile)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("%s: %w", caName, err)
	}
	return cert, roots, nil
}

// ClientTLSConfig is the aggregate's side: its certificate and key (the
// chain in certFile is sent), and the CA that issued the agents'
// certificates.
func ClientTLSConfig(certFile, keyFile, agentCAFile string) (*tls.Config, error) {
	cert, roots, err := LoadTLSFiles(certFile, keyFile, agentCAFile, "aggregate certificate", "agent CA")
	if err != nil {
		return nil, err
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}, RootCAs: roots}, nil
}
