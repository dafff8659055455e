package credentials

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/geniam/geniam/credentials/pemcerts"
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

// LoadTrustRoots reads the trusted-roots directory. It is the one loading
// rule of geniam: the TLS edge and the credential checks use the set it
// returns (through the Verifier), so a caller one layer admits is never
// refused as untrusted by the other. The rule:
//
//   - the whole tree under dir, following symbolic links to files (a
//     c_rehash directory is links named <hash>.0 to the certificate files);
//     names starting with "." are passed over;
//   - files named *.pem, *.crt, *.cert, *.cer, *.der, or <8 hex digits>.<n>
//     (c_rehash); other files (README, keys, CRLs named *.r0) are passed over;
//   - a file's CERTIFICATE PEM blocks; a file with no PEM block at all is
//     read as one DER certificate (.cer and .der files often are);
//   - a certificate found twice (a c_rehash link and its file) counts once.
//
// A file or block that cannot be read is reported in problems and skipped;
// it is an error when the directory cannot be read or yields no certificate.
func LoadTrustRoots(dir string) (roots *TrustRoots, problems []error, err error) {
	var files []string
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path == dir {
				return err
			}
			problems = append(problems, err)
			return nil
		}
		if path != dir && strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() || !rootFileName(d.Name()) {
			return nil
		}
		files = append(files, path)
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("trusted roots %s: %w", dir, err)
	}
	sort.Strings(files)
	var certs []*x509.Certificate
	seen := map[string]bool{}
	for _, path := range files {
		found, bad := readRootFile(path)
		problems = append(problems, bad...)
		for _, c := range found {
			if !seen[string(c.Raw)] {
				seen[string(c.Raw)] = true
				certs = append(certs, c)
			}
		}
	}
	if len(certs) == 0 {
		return nil, problems, fmt.Errorf("trusted roots %s: no certificate found", dir)
	}
	return NewTrustRoots(certs...), problems, nil
}

// maxRootFile bounds one file of the roots directory.
const maxRootFile = 16 << 20

// rootFileName reports whether a file of the roots directory is read.
func rootFileName(name string) bool {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".pem", ".crt", ".cert", ".cer", ".der":
		return true
	}
	// c_rehash: 8 hex digits, a dot, a decimal number (certificates; CRLs
	// are .r<n>).
	hash, n, ok := strings.Cut(name, ".")
	if !ok || len(hash) != 8 || n == "" {
		return false
	}
	for _, r := range hash {
		if !strings.ContainsRune("0123456789abcdefABCDEF", r) {
			return false
		}
	}
	for _, r := range n {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// readRootFile reads the certificates of one file (following a link).
func readRootFile(path string) ([]*x509.Certificate, []error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, []error{err}
	}
	if !info.Mode().IsRegular() {
		return nil, []error{fmt.Errorf("%s: not a regular file", path)}
	}
	if info.Size() > maxRootFile {
		return nil, []error{fmt.Errorf("%s: larger than %d bytes", path, maxRootFile)}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, []error{err}
	}
	if !bytes.Contains(b, []byte("-----BEGIN")) {
		c, err := x509.ParseCertificate(b)
		if err != nil {
			return nil, []error{fmt.Errorf("%s: neither PEM nor a DER certificate: %v", path, err)}
		}
		return []*x509.Certificate{c}, nil
	}
	certs, bad := pemcerts.Parse(b)
	for i, e := range bad {
		bad[i] = fmt.Errorf("%s: %w", path, e)
	}
	return certs, bad
}

// Roots returns t itself, so that a fixed set serves where a RootSource (the
// Verifier's current set) is asked for.
func (t *TrustRoots) Roots() *TrustRoots { return t }

// RootSource gives the current set of trusted roots. The Verifier is one:
// the TLS edge reads the roots from it, so TLS and the credential checks
// always use the same set, replaced as a whole by Verifier.SetRoots.
type RootSource interface {
	Roots() *TrustRoots
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
