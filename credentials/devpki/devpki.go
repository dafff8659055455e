// Package devpki issues GENI-style X.509 certificates: a CA that plays the
// clearinghouse root, and leaf certificates whose subjectAltName carries the
// URN (urn:publicid:IDN+...), a urn:uuid and an email, as GENI requires
// (../shared/spec/credentials.md §3). `make run` uses it for its dev PKI and
// tests use it for TLS and credential material.
package devpki

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/geniam/geniam/credentials/pemcerts"
)

// Identity is a certificate with its private key and the chain above it
// (issuer first, root last; empty for a root).
type Identity struct {
	Cert  *x509.Certificate
	Key   *rsa.PrivateKey
	Chain []*x509.Certificate
}

// Options describe a certificate to issue.
type Options struct {
	URN        string    // urn:publicid:IDN+... (required)
	Email      string    // optional email SAN
	CommonName string    // defaults to the URN's last part
	IsCA       bool      // authority certificate (CA:TRUE)
	NotBefore  time.Time // default now-1h
	NotAfter   time.Time // default now+1 year
	DNSNames   []string
	IPs        []net.IP
	KeyBits    int // default 2048
	Key        *rsa.PrivateKey
	Serial     *big.Int // default random positive
	// ExtKeyUsage is the certificate's role. The default, serverAuth and
	// clientAuth, suits GENI identities (an aggregate serves and calls);
	// a node agent's certificate should be serverAuth only, so that a
	// compromised node cannot use it to call other agents.
	ExtKeyUsage []x509.ExtKeyUsage
}

// NewCA makes a self-signed authority certificate.
func NewCA(o Options) (*Identity, error) {
	o.IsCA = true
	return issue(o, nil)
}

// Issue signs a certificate with id as the issuer.
func (id *Identity) Issue(o Options) (*Identity, error) { return issue(o, id) }

func issue(o Options, parent *Identity) (*Identity, error) {
	if o.URN == "" {
		return nil, errors.New("devpki: a URN is required")
	}
	u, err := url.Parse(o.URN)
	if err != nil {
		return nil, fmt.Errorf("devpki: bad URN %q: %w", o.URN, err)
	}
	key := o.Key
	if key == nil {
		bits := o.KeyBits
		if bits == 0 {
			bits = 2048
		}
		if key, err = rsa.GenerateKey(rand.Reader, bits); err != nil {
			return nil, err
		}
	}
	now := time.Now()
	if o.NotBefore.IsZero() {
		o.NotBefore = now.Add(-time.Hour)
	}
	if o.NotAfter.IsZero() {
		o.NotAfter = now.AddDate(1, 0, 0)
	}
	serial := o.Serial
	if serial == nil {
		serial, _ = rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
		serial.Add(serial, big.NewInt(1))
	}
	if o.ExtKeyUsage == nil {
		o.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	cn := o.CommonName
	if cn == "" {
		cn = lastPart(o.URN)
	}
	uuidURI, _ := url.Parse("urn:uuid:" + newUUID())
	pub := key.Public()
	skid := sha1.Sum(x509.MarshalPKCS1PublicKey(&key.PublicKey))
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             o.NotBefore,
		NotAfter:              o.NotAfter,
		URIs:                  []*url.URL{u, uuidURI},
		DNSNames:              o.DNSNames,
		IPAddresses:           o.IPs,
		BasicConstraintsValid: true,
		IsCA:                  o.IsCA,
		SubjectKeyId:          skid[:],
		ExtKeyUsage:           o.ExtKeyUsage,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
	}
	if o.Email != "" {
		tmpl.EmailAddresses = []string{o.Email}
	}
	if o.IsCA {
		tmpl.KeyUsage |= x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	}
	signer, signerCert, chain := key, tmpl, []*x509.Certificate(nil)
	if parent != nil {
		signer, signerCert = parent.Key, parent.Cert
		chain = append([]*x509.Certificate{parent.Cert}, parent.Chain...)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signerCert, pub, signer)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &Identity{Cert: cert, Key: key, Chain: chain}, nil
}

func lastPart(urn string) string {
	for i := len(urn) - 1; i >= 0; i-- {
		if urn[i] == '+' {
			return urn[i+1:]
		}
	}
	return urn
}

func newUUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// CertPEM is the certificate alone, PEM encoded.
func (id *Identity) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: id.Cert.Raw})
}

// ChainPEM is the certificate followed by its issuers (what GENI tools send).
func (id *Identity) ChainPEM() []byte {
	out := id.CertPEM()
	for _, c := range id.Chain {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// KeyPEM is the private key in PKCS#1 PEM ("RSA PRIVATE KEY", as gcf writes it).
func (id *Identity) KeyPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(id.Key)})
}

// WriteFiles writes dir/name-cert.pem (the chain) and dir/name-key.pem (0600).
func (id *Identity) WriteFiles(dir, name string) (certFile, keyFile string, err error) {
	if err = os.MkdirAll(dir, 0o755); err != nil {
		return
	}
	certFile = filepath.Join(dir, name+"-cert.pem")
	keyFile = filepath.Join(dir, name+"-key.pem")
	if err = os.WriteFile(certFile, id.ChainPEM(), 0o644); err != nil {
		return
	}
	err = os.WriteFile(keyFile, id.KeyPEM(), 0o600)
	return
}

// Load reads an identity written by WriteFiles (or any PEM chain + RSA key).
func Load(certFile, keyFile string) (*Identity, error) {
	certs, err := readParsed(certFile, ParseCerts)
	if err != nil {
		return nil, err
	}
	key, err := readParsed(keyFile, ParseKey)
	if err != nil {
		return nil, err
	}
	return &Identity{Cert: certs[0], Key: key, Chain: certs[1:]}, nil
}

// readParsed reads file and parses it; a parse error names the file.
func readParsed[T any](file string, parse func([]byte) (T, error)) (T, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		var zero T
		return zero, err
	}
	v, err := parse(b)
	if err != nil {
		return v, fmt.Errorf("%s: %w", file, err)
	}
	return v, nil
}

// ParseCerts parses every CERTIFICATE block of a PEM file, in order; a
// block that does not parse, or no certificate at all, is an error.
func ParseCerts(b []byte) ([]*x509.Certificate, error) { return pemcerts.ParseAll(b) }

// ParseKey parses an RSA private key in PKCS#1 or PKCS#8 PEM.
func ParseKey(b []byte) (*rsa.PrivateKey, error) {
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, errors.New("no private key found")
		}
		switch blk.Type {
		case "RSA PRIVATE KEY":
			return x509.ParsePKCS1PrivateKey(blk.Bytes)
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
			if err != nil {
				return nil, err
			}
			rk, ok := k.(*rsa.PrivateKey)
			if !ok {
				return nil, errors.New("private key is not RSA")
			}
			return rk, nil
		}
	}
}
