package credentials

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// TrustRoots are the certificates the aggregate trusts as roots, for both TLS
// client certificates and credential signers (credentials.md §2).
type TrustRoots struct {
	pool  *x509.CertPool
	certs []*x509.Certificate
	// NamespaceChecks, when true (the default of NewTrustRoots and
	// LoadTrustRoots), requires every issuer in a chain, trusted root
	// included, to be a GENI authority over its subject's namespace, as gcf's
	// GID.verify_chain does (credentials.md §3.1).
	NamespaceChecks bool
	// Legacy, when true, admits chains signed with SHA-1 or MD5 that Go's
	// verifier refuses, through VerifyLegacy (see legacy.go). The aggregate
	// sets it from tls.legacy_sha1, as the TLS edge does.
	Legacy bool
}

// NewTrustRoots trusts the given certificates.
func NewTrustRoots(certs ...*x509.Certificate) *TrustRoots {
	t := &TrustRoots{pool: x509.NewCertPool(), NamespaceChecks: true}
	for _, c := range certs {
		t.pool.AddCert(c)
		t.certs = append(t.certs, c)
	}
	return t
}

// LoadTrustRoots reads every certificate of the *.pem, *.crt and *.cert files
// in dir. Blocks that do not parse are reported in problems (CertPool would
// skip them silently); it is an error when no certificate loads at all.
func LoadTrustRoots(dir string) (roots *TrustRoots, problems []error, err error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, err
	}
	var certs []*x509.Certificate
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		switch strings.ToLower(filepath.Ext(e.Name())) {
		case ".pem", ".crt", ".cert":
			if e.Type().IsRegular() || e.Type()&os.ModeSymlink != 0 {
				names = append(names, e.Name())
			}
		}
	}
	sort.Strings(names)
	for _, name := range names {
		path := filepath.Join(dir, name)
		b, err := os.ReadFile(path)
		if err != nil {
			problems = append(problems, err)
			continue
		}
		for n := 1; ; n++ {
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
				problems = append(problems, fmt.Errorf("%s: certificate %d: %v", path, n, err))
				continue
			}
			certs = append(certs, c)
		}
	}
	if len(certs) == 0 {
		return nil, problems, fmt.Errorf("no trusted certificate found in %s", dir)
	}
	return NewTrustRoots(certs...), problems, nil
}

// Certs returns the trusted certificates.
func (t *TrustRoots) Certs() []*x509.Certificate { return t.certs }

// Pool returns the roots as a CertPool (for tls.Config.ClientCAs).
func (t *TrustRoots) Pool() *x509.CertPool { return t.pool }

// Verify checks that leaf chains to a trusted root at time now, with extra
// as candidate intermediates, and (with NamespaceChecks) that every issuer is
// a GENI authority over its subject. It returns the chain, leaf first.
func (t *TrustRoots) Verify(leaf *x509.Certificate, extra []*x509.Certificate, now time.Time) ([]*x509.Certificate, error) {
	if err := checkTime(leaf, now); err != nil {
		return nil, err
	}
	var inter *x509.CertPool
	if len(extra) > 0 {
		inter = x509.NewCertPool()
		for _, c := range extra {
			if !c.Equal(leaf) {
				inter.AddCert(c)
			}
		}
	}
	chains, err := leaf.Verify(x509.VerifyOptions{
		Roots:         t.pool,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil && t.Legacy {
		chain := append([]*x509.Certificate{leaf}, extra...)
		if HasLegacySignature(chain) {
			if path, lerr := VerifyLegacy(chain, t.certs, now); lerr == nil {
				chains, err = [][]*x509.Certificate{path}, nil
			}
		}
	}
	if err != nil {
		for _, c := range extra {
			if e := checkTime(c, now); e != nil {
				return nil, e
			}
		}
		var unknown x509.UnknownAuthorityError
		if errors.As(err, &unknown) {
			return nil, fmt.Errorf("certificate %s does not chain to a trusted root", certName(leaf))
		}
		return nil, fmt.Errorf("certificate %s is not trusted: %v", certName(leaf), err)
	}
	var firstErr error
	for _, chain := range chains {
		if t.NamespaceChecks {
			if err := namespaceChain(chain); err != nil {
				if firstErr == nil {
					firstErr = err
				}
				continue
			}
		}
		return chain, nil
	}
	return nil, firstErr
}

// validity returns when every certificate of chain is valid.
func validity(chain []*x509.Certificate) (from, until time.Time) {
	for i, c := range chain {
		if i == 0 || c.NotBefore.After(from) {
			from = c.NotBefore
		}
		if i == 0 || c.NotAfter.Before(until) {
			until = c.NotAfter
		}
	}
	return from, until
}

// namespaceChain applies gcf's namespace rule to a verified chain (leaf
// first): every issuer must be an authority over the certificate it signed.
func namespaceChain(chain []*x509.Certificate) error {
	for i := 1; i < len(chain); i++ {
		if err := authorityOver(chain[i], chain[i-1]); err != nil {
			return err
		}
	}
	return nil
}

func checkTime(c *x509.Certificate, now time.Time) error {
	if now.After(c.NotAfter) {
		return fmt.Errorf("certificate %s expired at %s", certName(c), c.NotAfter.UTC().Format(time.RFC3339))
	}
	if now.Before(c.NotBefore) {
		return fmt.Errorf("certificate %s is not valid before %s", certName(c), c.NotBefore.UTC().Format(time.RFC3339))
	}
	return nil
}
