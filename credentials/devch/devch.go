// Package devch is a small development clearinghouse: a root CA that issues
// user certificates and a slice authority that creates slices and issues
// user and slice credentials, so that geniam can be tried (and tested) with
// omni or geni-lib without a GENI federation. It holds the logic only; an
// XML-RPC front end exposes it as a CH/SA API.
package devch

import (
	"crypto"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/credentials"
	"github.com/geniam/geniam/credentials/devpki"
)

// Defaults for lifetimes.
const (
	DefaultUserCredentialLifetime = 30 * 24 * time.Hour
	DefaultSliceLifetime          = 7 * 24 * time.Hour
	DefaultMaxSliceLifetime       = 60 * 24 * time.Hour
)

var (
	sliceNameRE = regexp.MustCompile(`^[a-zA-Z0-9][-a-zA-Z0-9]{0,18}$`)
	userNameRE  = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9_]{0,7}$`)
)

// Clearinghouse issues identities, slices and credentials under one authority.
type Clearinghouse struct {
	Authority string           // e.g. "geniam.test": URNs are urn:publicid:IDN+<Authority>+<type>+<name>
	CA        *devpki.Identity // root (urn ...+authority+ca): signs user certificates and the SA
	SA        *devpki.Identity // slice authority (urn ...+authority+sa): signs slices and credentials

	UserCredentialLifetime time.Duration
	SliceLifetime          time.Duration // when CreateSlice is given no expiry
	MaxSliceLifetime       time.Duration // the latest a slice may be renewed to, from now
	KeyBits                int           // for generated keys (default 2048)
	Now                    func() time.Time

	dir    string // where state is kept; "" keeps it in memory
	mu     sync.Mutex
	slices map[string]*Slice // by lower-cased URN
}

// Slice is a slice the clearinghouse created.
type Slice struct {
	URN     string
	Owner   string // URN of the user who created it
	Expires time.Time
	Cert    *x509.Certificate // issued by the SA; the credential's target
}

// New makes a clearinghouse with a fresh CA and SA, kept in memory.
func New(authority string) (*Clearinghouse, error) {
	ch := newCH(authority)
	var err error
	if ch.CA, err = devpki.NewCA(devpki.Options{URN: ch.urn("authority", "ca"), CommonName: authority + " dev CA"}); err != nil {
		return nil, err
	}
	if ch.SA, err = ch.CA.Issue(devpki.Options{URN: ch.urn("authority", "sa"), IsCA: true, CommonName: authority + " dev SA"}); err != nil {
		return nil, err
	}
	return ch, nil
}

// Open loads the clearinghouse kept in dir (ca-cert.pem, ca-key.pem,
// sa-cert.pem, sa-key.pem, slices.json), creating it on first use.
func Open(dir, authority string) (*Clearinghouse, error) {
	caCert := filepath.Join(dir, "ca-cert.pem")
	if _, err := os.Stat(caCert); errors.Is(err, os.ErrNotExist) {
		ch, err := New(authority)
		if err != nil {
			return nil, err
		}
		if _, _, err := ch.CA.WriteFiles(dir, "ca"); err != nil {
			return nil, err
		}
		if _, _, err := ch.SA.WriteFiles(dir, "sa"); err != nil {
			return nil, err
		}
		ch.dir = dir
		return ch, ch.save()
	}
	ch := newCH(authority)
	ch.dir = dir
	var err error
	if ch.CA, err = devpki.Load(caCert, filepath.Join(dir, "ca-key.pem")); err != nil {
		return nil, err
	}
	if ch.SA, err = devpki.Load(filepath.Join(dir, "sa-cert.pem"), filepath.Join(dir, "sa-key.pem")); err != nil {
		return nil, err
	}
	if u, err := am.ParseURN(credentials.URNOf(ch.CA.Cert)); err != nil || !strings.EqualFold(u.Authority, authority) {
		return nil, fmt.Errorf("devch: %s belongs to another authority than %s", dir, authority)
	}
	b, err := os.ReadFile(filepath.Join(dir, "slices.json"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if len(b) > 0 {
		var saved []savedSlice
		if err := json.Unmarshal(b, &saved); err != nil {
			return nil, fmt.Errorf("devch: slices.json: %w", err)
		}
		for _, s := range saved {
			certs, err := devpki.ParseCerts([]byte(s.CertPEM))
			if err != nil {
				return nil, fmt.Errorf("devch: slice %s: %w", s.URN, err)
			}
			ch.slices[strings.ToLower(s.URN)] = &Slice{URN: s.URN, Owner: s.Owner, Expires: s.Expires, Cert: certs[0]}
		}
	}
	return ch, nil
}

func newCH(authority string) *Clearinghouse {
	return &Clearinghouse{Authority: authority, UserCredentialLifetime: DefaultUserCredentialLifetime,
		SliceLifetime: DefaultSliceLifetime, MaxSliceLifetime: DefaultMaxSliceLifetime, Now: time.Now,
		slices: map[string]*Slice{}}
}

func (ch *Clearinghouse) urn(typ, name string) string {
	return am.URN{Authority: ch.Authority, Type: typ, Name: name}.String()
}

// Roots are the certificates an aggregate must trust to accept what this
// clearinghouse issues.
func (ch *Clearinghouse) Roots() *credentials.TrustRoots {
	return credentials.NewTrustRoots(ch.CA.Cert)
}

// IssueUser makes a user certificate and key (urn ...+user+<name>), signed by the CA.
func (ch *Clearinghouse) IssueUser(name, email string) (*devpki.Identity, error) {
	if !userNameRE.MatchString(name) {
		return nil, am.Errorf(am.BadArgs, "user name %q is not valid (a letter, then up to 7 letters, digits or _)", name)
	}
	return ch.CA.Issue(devpki.Options{URN: ch.urn("user", name), Email: email, KeyBits: ch.KeyBits})
}

// IssueTool makes a tool certificate (urn ...+tool+<name>), for speaks-for.
func (ch *Clearinghouse) IssueTool(name, email string) (*devpki.Identity, error) {
	return ch.CA.Issue(devpki.Options{URN: ch.urn("tool", name), Email: email, KeyBits: ch.KeyBits})
}

// signer is the SA as a credential signer (rsa-sha256).
func (ch *Clearinghouse) signer() *credentials.Signer {
	return &credentials.Signer{Cert: ch.SA.Cert, Key: ch.SA.Key, Chain: ch.SA.Chain, Hash: crypto.SHA256}
}

// member checks that user (the TLS caller's chain) is one of ours and returns
// its URN.
func (ch *Clearinghouse) member(user []*x509.Certificate) (string, error) {
	if len(user) == 0 {
		return "", am.Errorf(am.Forbidden, "no client certificate")
	}
	if _, err := ch.Roots().Verify(user[0], user[1:], ch.Now()); err != nil {
		return "", am.Wrap(am.Forbidden, err, "certificate not issued by this clearinghouse")
	}
	urn := credentials.URNOf(user[0])
	u, err := am.ParseURN(urn)
	if err != nil || !strings.EqualFold(u.Type, "user") {
		return "", am.Errorf(am.Forbidden, "%s is not a user", urn)
	}
	return urn, nil
}

// UserCredential issues the user's credential about themselves.
func (ch *Clearinghouse) UserCredential(user []*x509.Certificate) ([]byte, error) {
	if _, err := ch.member(user); err != nil {
		return nil, err
	}
	return credentials.IssueUserCredential(ch.signer(), user[:1], ch.Now().Add(ch.UserCredentialLifetime))
}

// CreateSlice creates slice name for the user and returns it with the user's
// slice credential. A zero expires means SliceLifetime from now.
func (ch *Clearinghouse) CreateSlice(user []*x509.Certificate, name string, expires time.Time) (*Slice, []byte, error) {
	owner, err := ch.member(user)
	if err != nil {
		return nil, nil, err
	}
	if !sliceNameRE.MatchString(name) {
		return nil, nil, am.Errorf(am.BadArgs, "slice name %q is not valid (up to 19 letters, digits and -, not starting with -)", name)
	}
	now := ch.Now()
	if expires.IsZero() {
		expires = now.Add(ch.SliceLifetime)
	}
	if err := ch.checkExpiry(expires, now); err != nil {
		return nil, nil, err
	}
	urn := ch.urn("slice", name)
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if old := ch.slices[strings.ToLower(urn)]; old != nil && old.Expires.After(now) {
		if old.Owner != owner {
			return nil, nil, am.Errorf(am.AlreadyExists, "slice %s already exists", old.URN)
		}
		// omni asks CreateSlice again for the credential of a slice it made.
		cred, err := credentials.IssueSliceCredential(ch.signer(), user[:1], []*x509.Certificate{old.Cert, ch.SA.Cert}, old.Expires)
		c := *old
		return &c, cred, err
	}
	cert, err := ch.SA.Issue(devpki.Options{URN: urn, CommonName: name, KeyBits: ch.KeyBits}) // valid a year
	if err != nil {
		return nil, nil, err
	}
	s := &Slice{URN: urn, Owner: owner, Expires: expires, Cert: cert.Cert}
	cred, err := credentials.IssueSliceCredential(ch.signer(), user[:1], []*x509.Certificate{cert.Cert, ch.SA.Cert}, expires)
	if err != nil {
		return nil, nil, err
	}
	ch.slices[strings.ToLower(urn)] = s
	if err := ch.save(); err != nil {
		return nil, nil, err
	}
	return s, cred, nil
}

// SliceName returns the name of a slice URN of this authority.
func (ch *Clearinghouse) SliceName(urn string) (string, error) {
	u, err := am.ParseURN(urn)
	if err != nil {
		return "", am.Errorf(am.BadArgs, "%v", err)
	}
	if !strings.EqualFold(u.Type, "slice") {
		return "", am.Errorf(am.BadArgs, "%s is not a slice URN", urn)
	}
	if !strings.EqualFold(u.Authority, ch.Authority) {
		return "", am.Errorf(am.BadArgs, "slice %s belongs to another authority than %s", urn, ch.Authority)
	}
	return u.Name, nil
}

// DeleteSlice forgets a slice of the user's (its credentials stay valid
// until they expire, as at any clearinghouse).
func (ch *Clearinghouse) DeleteSlice(user []*x509.Certificate, sliceURN string) error {
	owner, err := ch.member(user)
	if err != nil {
		return err
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	s, err := ch.ownedSliceLocked(owner, sliceURN)
	if err != nil {
		return err
	}
	delete(ch.slices, strings.ToLower(s.URN))
	return ch.save()
}

// SlicesOf lists the URNs of the unexpired slices owned by user URN owner.
func (ch *Clearinghouse) SlicesOf(owner string) []string {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	now := ch.Now()
	var out []string
	for _, s := range ch.slices {
		if s.Owner == owner && s.Expires.After(now) {
			out = append(out, s.URN)
		}
	}
	sort.Strings(out)
	return out
}

// Slice returns the slice with that URN (case-insensitively), or nil.
func (ch *Clearinghouse) Slice(urn string) *Slice {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if s := ch.slices[strings.ToLower(urn)]; s != nil {
		c := *s
		return &c
	}
	return nil
}

// SliceCredential issues a slice credential to the slice's owner.
func (ch *Clearinghouse) SliceCredential(user []*x509.Certificate, sliceURN string) ([]byte, error) {
	owner, err := ch.member(user)
	if err != nil {
		return nil, err
	}
	s, err := ch.ownedSlice(owner, sliceURN)
	if err != nil {
		return nil, err
	}
	return credentials.IssueSliceCredential(ch.signer(), user[:1], []*x509.Certificate{s.Cert, ch.SA.Cert}, s.Expires)
}

// RenewSlice moves the slice's expiry to expires and returns a new slice
// credential that lasts as long.
func (ch *Clearinghouse) RenewSlice(user []*x509.Certificate, sliceURN string, expires time.Time) ([]byte, error) {
	owner, err := ch.member(user)
	if err != nil {
		return nil, err
	}
	if err := ch.checkExpiry(expires, ch.Now()); err != nil {
		return nil, err
	}
	ch.mu.Lock()
	s, err := ch.ownedSliceLocked(owner, sliceURN)
	if err == nil && expires.After(s.Cert.NotAfter) {
		err = am.Errorf(am.OutOfRange, "slice %s cannot be renewed past %s", s.URN, s.Cert.NotAfter.UTC().Format(time.RFC3339))
	}
	if err == nil {
		s.Expires = expires
		err = ch.save()
	}
	var cert *x509.Certificate
	if s != nil {
		cert = s.Cert
	}
	ch.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return credentials.IssueSliceCredential(ch.signer(), user[:1], []*x509.Certificate{cert, ch.SA.Cert}, expires)
}

func (ch *Clearinghouse) checkExpiry(expires, now time.Time) error {
	if !expires.After(now) {
		return am.Errorf(am.BadArgs, "expiration %s is in the past", expires.UTC().Format(time.RFC3339))
	}
	if expires.After(now.Add(ch.MaxSliceLifetime)) {
		return am.Errorf(am.OutOfRange, "expiration %s is more than %s away", expires.UTC().Format(time.RFC3339), ch.MaxSliceLifetime)
	}
	return nil
}

func (ch *Clearinghouse) ownedSlice(owner, urn string) (*Slice, error) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	s, err := ch.ownedSliceLocked(owner, urn)
	if err != nil {
		return nil, err
	}
	c := *s
	return &c, nil
}

func (ch *Clearinghouse) ownedSliceLocked(owner, urn string) (*Slice, error) {
	s := ch.slices[strings.ToLower(urn)]
	if s == nil {
		return nil, am.Errorf(am.SearchFailed, "no slice %s", urn)
	}
	if !s.Expires.After(ch.Now()) {
		return nil, am.Errorf(am.Expired, "slice %s expired at %s", s.URN, s.Expires.UTC().Format(time.RFC3339))
	}
	if s.Owner != owner {
		return nil, am.Errorf(am.Forbidden, "slice %s belongs to %s", s.URN, s.Owner)
	}
	return s, nil
}

type savedSlice struct {
	URN     string    `json:"urn"`
	Owner   string    `json:"owner"`
	Expires time.Time `json:"expires"`
	CertPEM string    `json:"cert"`
}

// save writes the slices to dir/slices.json (callers hold mu, or own ch alone).
func (ch *Clearinghouse) save() error {
	if ch.dir == "" {
		return nil
	}
	saved := make([]savedSlice, 0, len(ch.slices))
	for _, s := range ch.slices {
		saved = append(saved, savedSlice{URN: s.URN, Owner: s.Owner, Expires: s.Expires,
			CertPEM: string((&devpki.Identity{Cert: s.Cert}).CertPEM())})
	}
	b, err := json.MarshalIndent(saved, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(ch.dir, "slices.json.tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(ch.dir, "slices.json"))
}
