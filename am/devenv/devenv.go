// Package devenv prepares the embedded default that `make run` serves: a
// private PostgreSQL cluster, a dev PKI (a CA acting as the local
// clearinghouse root, the aggregate's certificate, one experimenter, and a
// separate CA for the node-agent fleet) and an omni configuration, all under
// one directory (./var). Everything it makes is kept and reused on the next
// run; delete the directory to start afresh.
package devenv

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/geniam/geniam/am/geniapi"
	"github.com/geniam/geniam/credentials"
	"github.com/geniam/geniam/credentials/devch"
	"github.com/geniam/geniam/credentials/devpki"
	"github.com/geniam/geniam/store"
	"github.com/geniam/geniam/store/pgcluster"
	"golang.org/x/crypto/ssh"
)

// Authority is the dev federation's authority; every dev URN lives in it.
const Authority = "geniam.localhost"

// URNs of the dev identities.
var (
	AMURN    = "urn:publicid:IDN+" + Authority + "+authority+am"
	UserURN  = "urn:publicid:IDN+" + Authority + "+user+alice"
	AgentURN = "urn:publicid:IDN+" + Authority + "+authority+agents"
)

// PKI is where the dev certificates live. The dev clearinghouse (package
// devch, kept in Dir/ch) is the federation root: it signs the experimenters'
// certificates and their slice credentials, so it is the aggregate's only
// trusted root. The node-agent fleet has a CA of its own, so that an
// experimenter's certificate never opens an agent.
type PKI struct {
	Dir          string
	CH           *devch.Clearinghouse
	AM           *devpki.Identity // the aggregate's server certificate
	User         *devpki.Identity // alice, the dev experimenter
	AgentCA      *devpki.Identity // signs the agents' and the aggregate's agent-client certificates
	AgentClient  *devpki.Identity // the aggregate's client certificate for agents
	TrustedRoots string           // directory holding the clearinghouse's root certificate(s)
	UserSSHPub   string           // path of alice's SSH public key
	UserSSHKey   string           // ... and of its private half (ssh -i)
}

// File returns dir/name-cert.pem and dir/name-key.pem.
func (p *PKI) File(name string) (cert, key string) {
	return filepath.Join(p.Dir, name+"-cert.pem"), filepath.Join(p.Dir, name+"-key.pem")
}

// EnsurePKI loads the dev PKI from dir, creating what is missing.
func EnsurePKI(dir string) (*PKI, error) {
	p := &PKI{Dir: dir, TrustedRoots: filepath.Join(dir, "trusted_roots")}
	var err error
	if p.CH, err = devch.Open(filepath.Join(dir, "ch"), Authority); err != nil {
		return nil, fmt.Errorf("dev clearinghouse: %w", err)
	}
	if p.AM, err = ensure(dir, "am", p.CH.CA, devpki.Options{URN: AMURN, CommonName: "localhost", DNSNames: []string{"localhost"}, IPs: []net.IP{net.ParseIP("127.0.0.1")}}); err != nil {
		return nil, err
	}
	if p.User, err = ensureWith(dir, "alice", func() (*devpki.Identity, error) { return p.CH.IssueUser("alice", "alice@"+Authority) }); err != nil {
		return nil, err
	}
	if p.AgentCA, err = ensure(dir, "agents-ca", nil, devpki.Options{URN: AgentURN, CommonName: "geniam dev agent CA", IsCA: true, NotAfter: time.Now().AddDate(10, 0, 0)}); err != nil {
		return nil, err
	}
	if p.AgentClient, err = ensureRole(dir, "am-agent-client", p.AgentCA, devpki.Options{URN: AMURN, CommonName: "geniam aggregate",
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(p.TrustedRoots, 0o755); err != nil {
		return nil, err
	}
	var roots []byte
	for _, c := range p.CH.Roots().Certs() {
		roots = append(roots, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	if err := os.WriteFile(filepath.Join(p.TrustedRoots, "geniam-dev-ch.pem"), roots, 0o644); err != nil {
		return nil, err
	}
	p.UserSSHPub = filepath.Join(dir, "alice-ssh.pub")
	p.UserSSHKey = filepath.Join(dir, "alice-ssh")
	_, perr := os.Stat(p.UserSSHPub)
	if _, kerr := os.Stat(p.UserSSHKey); perr != nil || kerr != nil {
		pub, key, err := newSSHKey("alice@" + Authority)
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(p.UserSSHKey, key, 0o600); err != nil {
			return nil, err
		}
		if err := os.WriteFile(p.UserSSHPub, []byte(pub+"\n"), 0o644); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// AgentIdentity returns (creating it if needed) the server certificate of the
// dev node agent at ip. It is for serverAuth only: an agent's certificate
// never opens another agent (their allowed_clients name the aggregate).
func (p *PKI) AgentIdentity(name string, ip net.IP) (*devpki.Identity, error) {
	return ensureRole(p.Dir, "agent-"+name, p.AgentCA, devpki.Options{
		URN: "urn:publicid:IDN+" + Authority + "+node+" + name, CommonName: name,
		DNSNames: []string{"localhost"}, IPs: []net.IP{ip}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
}

// ensureRole is ensure for a certificate with a fixed role: one kept from an
// older make run with other key usages is issued again.
func ensureRole(dir, name string, issuer *devpki.Identity, o devpki.Options) (*devpki.Identity, error) {
	cf, kf := filepath.Join(dir, name+"-cert.pem"), filepath.Join(dir, name+"-key.pem")
	if id, err := devpki.Load(cf, kf); err == nil && !slices.Equal(id.Cert.ExtKeyUsage, o.ExtKeyUsage) {
		_ = os.Remove(cf)
	}
	return ensure(dir, name, issuer, o)
}

func ensure(dir, name string, issuer *devpki.Identity, o devpki.Options) (*devpki.Identity, error) {
	return ensureWith(dir, name, func() (*devpki.Identity, error) {
		if issuer == nil {
			return devpki.NewCA(o)
		}
		return issuer.Issue(o)
	})
}

// ensureWith loads dir/name-{cert,key}.pem, or makes and writes them.
func ensureWith(dir, name string, make func() (*devpki.Identity, error)) (*devpki.Identity, error) {
	cf, kf := filepath.Join(dir, name+"-cert.pem"), filepath.Join(dir, name+"-key.pem")
	if id, err := devpki.Load(cf, kf); err == nil && time.Now().Before(id.Cert.NotAfter) {
		return id, nil
	}
	id, err := make()
	if err != nil {
		return nil, fmt.Errorf("dev PKI %s: %w", name, err)
	}
	if _, _, err := id.WriteFiles(dir, name); err != nil {
		return nil, err
	}
	return id, nil
}

// newSSHKey makes alice's ed25519 key: the public half in authorized_keys
// form (omni sends it in geni_users) and the private half in OpenSSH form,
// for `ssh -i var/dev/alice-ssh` to the manifest's <login>.
func newSSHKey(comment string) (pub string, private []byte, err error) {
	pk, sk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", nil, err
	}
	block, err := ssh.MarshalPrivateKey(sk, comment)
	if err != nil {
		return "", nil, err
	}
	spk, err := ssh.NewPublicKey(pk)
	if err != nil {
		return "", nil, err
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(spk))) + " " + comment, pem.EncodeToMemory(block), nil
}

// Database starts (creating it if needed) the private cluster under dir and
// returns the URL of its "geniam" database.
func Database(ctx context.Context, dir string) (*pgcluster.Cluster, string, error) {
	port := 0
	portFile := filepath.Join(dir, "port")
	if b, err := os.ReadFile(portFile); err == nil {
		port, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	c, err := pgcluster.New(dir, port)
	if err != nil {
		return nil, "", err
	}
	if !c.Initialized() {
		if err := c.Init(); err != nil {
			return nil, "", err
		}
	}
	if err := os.WriteFile(portFile, []byte(strconv.Itoa(c.Port)+"\n"), 0o644); err != nil {
		return nil, "", err
	}
	if !c.Running() {
		if err := c.Start(); err != nil {
			return nil, "", err
		}
	}
	// A cluster from an older make run trusted every local user on TCP.
	if err := c.Secure(); err != nil {
		return nil, "", fmt.Errorf("securing the dev PostgreSQL: %w", err)
	}
	if err := store.EnsureDatabase(ctx, c.URL("postgres"), "geniam"); err != nil {
		return nil, "", err
	}
	return c, c.URL("geniam"), nil
}

// WriteOmniConfig writes an omni_config that points omni at the aggregate at
// amURL and the dev clearinghouse at chURL, as the dev experimenter.
func WriteOmniConfig(path string, p *PKI, amURL, chURL string) error {
	cert, key := p.File("alice")
	abs := func(s string) string { a, _ := filepath.Abs(s); return a }
	body := fmt.Sprintf(`# omni configuration for the geniam dev aggregate (written by make run)
# Try: omni -c %[1]s -V3 -a geniam getversion
[omni]
default_cf = geniam
users = alice

[alice]
urn = %[2]s
keys = %[3]s

[geniam]
type = gcf
authority = %[4]s
ch = %[5]s
cert = %[6]s
key = %[7]s

[aggregate_nicknames]
geniam = %[8]s,%[9]s
`, abs(path), UserURN, abs(p.UserSSHPub), Authority, chURL, abs(cert), abs(key), AMURN, amURL)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(body), 0o644)
}

// ServeCH serves the dev clearinghouse (omni's gcf CH API) over TLS on addr
// until ctx ends, with the aggregate's certificate and the edge's TLS rules:
// callers must present a certificate the clearinghouse issued. Tools that
// ask it for aggregates learn the one at amURN, amURL.
func ServeCH(ctx context.Context, addr string, p *PKI, amURN, amURL string, log *slog.Logger) error {
	certFile, keyFile := p.File("am")
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return err
	}
	roots, _, err := credentials.LoadTrustRoots(p.TrustedRoots)
	if err != nil {
		return err
	}
	h := &devch.Handler{CH: p.CH, Aggregates: []devch.Aggregate{{URN: amURN, URL: amURL}}}
	srv := geniapi.NewServer(addr, h, geniapi.ServerTLSConfig(cert, roots, false, log))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("dev clearinghouse: %w", err)
	}
	go func() {
		if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("dev clearinghouse stopped", "err", err)
		}
	}()
	go func() { <-ctx.Done(); _ = srv.Close() }()
	return nil
}
