package geniapi

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/geniam/geniam/credentials"
)

// ServerTLSConfig is the TLS configuration of the AM endpoint: it presents
// cert and requires a client certificate that chains to the current set of
// roots (read at each handshake, so a reload of the Verifier's roots applies
// to TLS and to the credential checks at once). Go's verifier
// refuses SHA-1 and MD5 signatures, which older GENI authorities still use;
// with legacy set, such a chain is checked by hand (credentials.VerifyLegacy) and admitted
// with a warning in the log.
func ServerTLSConfig(cert tls.Certificate, roots credentials.RootSource, legacy bool, log *slog.Logger) *tls.Config {
	if log == nil {
		log = slog.Default()
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		// RequireAnyClientCert, not RequireAndVerifyClientCert: the check is
		// ours (ExtKeyUsageAny, a reloadable root set, the legacy path).
		ClientAuth: tls.RequireAnyClientCert,
		NextProtos: []string{"http/1.1"},
		VerifyPeerCertificate: func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
			return verifyClient(rawCerts, roots, legacy, log, time.Now())
		},
	}
}

func verifyClient(rawCerts [][]byte, roots credentials.RootSource, legacy bool, log *slog.Logger, now time.Time) error {
	if len(rawCerts) == 0 {
		return errors.New("no client certificate")
	}
	chain := make([]*x509.Certificate, 0, len(rawCerts))
	for i, raw := range rawCerts {
		c, err := x509.ParseCertificate(raw)
		if err != nil {
			return fmt.Errorf("client certificate %d: %w", i, err)
		}
		chain = append(chain, c)
	}
	set := roots.Roots()
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{
		Roots:         set.Pool(),
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err == nil {
		return nil
	}
	if !legacy || !credentials.HasLegacySignature(chain) {
		return err
	}
	path, lerr := credentials.VerifyLegacy(chain, set.Certs(), now)
	if lerr != nil {
		return fmt.Errorf("%w; legacy check: %v", err, lerr)
	}
	log.Warn("legacy path admitted a client certificate Go refuses (SHA-1 or MD5 signature)",
		"subject", chain[0].Subject.String(), "urn", credentials.URNOf(chain[0]), "chain", describeChain(path), "go_error", err.Error())
	return nil
}

func describeChain(path []*x509.Certificate) string {
	parts := make([]string, len(path))
	for i, c := range path {
		parts[i] = c.Subject.String() + " [" + c.SignatureAlgorithm.String() + "]"
	}
	return strings.Join(parts, " <- ")
}

// NewServer returns the HTTPS server of the AM endpoint, HTTP/1.1 with
// keep-alive, with timeouts that bound slow or idle clients. Start it with
// ListenAndServeTLS("", "") (the certificate is in tlsConfig) or
// ServeTLS(listener, "", "").
func NewServer(addr string, handler http.Handler, tlsConfig *tls.Config) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           handler,
		TLSConfig:         tlsConfig,
		ReadHeaderTimeout: 10 * time.Second, // also bounds the TLS handshake
		ReadTimeout:       60 * time.Second,
		WriteTimeout:      5 * time.Minute, // Allocate and Provision may take a while
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		// No HTTP/2: GENI clients speak HTTP/1.1, and an empty map turns it off.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
		ErrorLog:     slog.NewLogLogger(slog.Default().Handler(), slog.LevelWarn),
	}
}
