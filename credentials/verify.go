package credentials

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/geniam/geniam/am"
)

// Options tune a Verifier.
type Options struct {
	// Now is the clock used when an AuthRequest carries no time (default time.Now).
	Now func() time.Time
	// CacheSize bounds how many verified credentials are remembered
	// (default 4096; negative disables the cache).
	CacheSize int
}

// Verifier is the aggregate's trust decision (am.Authorizer): it verifies
// GENI credentials natively (XML-DSig with our own C14N, crypto/x509 chains)
// and remembers the credentials it verified, so that a client that sends the
// same slice credential with every call pays for the signatures once.
type Verifier struct {
	opts Options

	mu    sync.Mutex
	roots *TrustRoots
	// current is roots for readers outside the lock: the TLS edge reads it
	// at every handshake, which must not wait for the cache's mutex.
	current    atomic.Pointer[TrustRoots]
	gen        uint64 // bumped by SetRoots: older cache entries are void
	cache      map[cacheKey]*verified
	cacheBytes int // sum of the cached credentials' lengths
	// chains remembers certificates that chain to the roots (by sha256 of
	// the DER), so that a new credential about a known user and slice costs
	// one RSA verification instead of three.
	chains map[[32]byte]*trustedChain

	cacheHits, cacheMisses atomic.Uint64 // of verifiedCredential, for CacheStats
}

type trustedChain struct {
	gen         uint64
	from, until time.Time
	chain       []*x509.Certificate
}

var _ am.Authorizer = (*Verifier)(nil)

// NewVerifier returns a Verifier that trusts roots.
func NewVerifier(roots *TrustRoots, opts Options) *Verifier {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.CacheSize == 0 {
		opts.CacheSize = 4096
	}
	v := &Verifier{opts: opts, roots: roots, gen: 1, cache: map[cacheKey]*verified{}, chains: map[[32]byte]*trustedChain{}}
	v.current.Store(roots)
	return v
}

// SetRoots replaces the trusted roots and forgets every cached verification.
func (v *Verifier) SetRoots(roots *TrustRoots) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.roots = roots
	v.current.Store(roots)
	v.gen++
	clear(v.cache)
	v.cacheBytes = 0
	clear(v.chains)
}

// ReloadRoots reads dir by the one rule (LoadTrustRoots) and, when that
// succeeds, makes it the set of roots for the credential checks and for
// the TLS edge, which reads them from here, in one step. On error the
// current set stays in force; the error says why. problems are the files or
// blocks that were skipped.
func (v *Verifier) ReloadRoots(dir string, legacy bool) (problems []error, err error) {
	roots, problems, err := LoadTrustRoots(dir)
	if err != nil {
		return problems, err
	}
	roots.Legacy = legacy
	v.SetRoots(roots)
	return problems, nil
}

// Roots returns the current trusted roots.
func (v *Verifier) Roots() *TrustRoots { return v.current.Load() }

// A refusal's stage says how far its credential got; the message of the
// credential that got furthest is the one the caller sees.
const (
	stageUnusable = iota + 1
	stageParse
	stageSignature
	stageTrust
	stageDelegation
	stageExpired
	stageOwner
	stageTargetType
	stageTarget
	stagePrivilege
)

type failure struct {
	stage int
	msg   string
}

func fail(stage int, format string, args ...any) *failure {
	return &failure{stage: stage, msg: fmt.Sprintf(format, args...)}
}

// cacheKey is the credential itself (with the caller's fingerprint): the
// map compares whole strings, so a hit is the very credential that was
// verified, and a lookup costs a fast map hash rather than a SHA-256 of the
// document.
type cacheKey struct {
	caller [32]byte
	cred   string
}

// maxCacheBytes bounds the credential text the cache holds (CacheSize bounds
// the entries): bytes outside the signed element can pad a credential.
const maxCacheBytes = 64 << 20

// verified is what the cache remembers of a credential whose signatures,
// certificate chains and delegation rules checked out: only what the
// per-request checks need, not the document.
type verified struct {
	gen        uint64
	validFrom  time.Time // the checks hold from validFrom
	validUntil time.Time // until the first certificate expires
	digest     string    // hex sha256 of the credential as received

	typ        string
	ownerURN   string
	targetURN  string
	expires    time.Time // of the credential itself (parents expire no earlier)
	privileges []Privilege
	issuer     *x509.Certificate // signer of the outermost credential

	abac *ABACStatement // geni_abac only
}

// Authorize implements am.Authorizer (credentials.md §5 and §8).
func (v *Verifier) Authorize(req am.AuthRequest) (*am.Authorization, error) {
	now := req.Now
	if now.IsZero() {
		now = v.opts.Now()
	}
	refuse := func(format string, args ...any) error {
		// Messages quote what the caller sent (ids, types, parse errors):
		// bound them.
		return &am.Err{Code: am.Forbidden, Op: req.Method, URN: req.Target, Msg: clip(fmt.Sprintf(format, args...), maxMessage)}
	}
	if req.Caller == nil || req.Caller.Cert == nil {
		return nil, refuse("no client certificate")
	}
	callerURN := req.Caller.URN
	if callerURN == "" {
		callerURN = URNOf(req.Caller.Cert)
	}
	v.mu.Lock()
	roots, gen := v.roots, v.gen
	v.mu.Unlock()
	callerFP := sha256.Sum256(req.Caller.Cert.Raw)
	// The TLS layer should have checked the client certificate already; a
	// credential is no secret, so the owner check is only as good as this.
	if _, err := v.trustChain(roots, gen, req.Caller.Cert, req.Caller.Chain, now); err != nil {
		return nil, refuse("client certificate not trusted: %v", err)
	}

	var sfa, abac []string
	var skipped []string
	for _, c := range req.Credentials {
		typ, ver := strings.ToLower(strings.TrimSpace(c.Type)), strings.TrimSpace(c.Version)
		switch {
		case typ == "geni_sfa" && (ver == "2" || ver == "3"):
			sfa = append(sfa, c.Value)
		case typ == "geni_abac" && ver == "1":
			abac = append(abac, c.Value)
		default:
			if len(skipped) < 3 {
				skipped = append(skipped, fmt.Sprintf("%s version %s", clip(c.Type, 40), clip(c.Version, 10)))
			}
		}
	}
	if len(sfa) == 0 {
		switch {
		case len(req.Credentials) == 0:
			return nil, refuse("no credentials passed; %s needs a valid credential", nameOr(req.Method, "this call"))
		case len(skipped) > 0:
			return nil, refuse("no usable credential: %s not supported (accepted: geni_sfa 2 and 3, geni_abac 1)", strings.Join(skipped, ", "))
		default:
			return nil, refuse("no geni_sfa credential passed (a geni_abac credential only says who speaks for whom)")
		}
	}

	// Speaks-for: a tool acts for a user who signed a geni_abac statement.
	user, tool := callerURN, ""
	var sfExpires time.Time
	var sfFailure *failure
	if req.SpeakingFor != "" {
		sfFailure = fail(stageOwner, "no geni_abac speaks-for credential passed")
		for _, value := range abac {
			vf, f := v.verifiedCredential(value, TypeABAC, roots, gen, callerFP, req.Caller, now)
			if f == nil {
				f = checkSpeaksFor(vf, req, now)
			}
			if f == nil {
				user, tool, sfExpires, sfFailure = req.SpeakingFor, callerURN, vf.expires, nil
				break
			}
			sfFailure = f
		}
	}

	var best *failure
	for _, value := range sfa {
		vf, f := v.verifiedCredential(value, TypePrivilege, roots, gen, callerFP, req.Caller, now)
		if f == nil {
			f = checkRequest(vf, req, user, tool != "", now)
		}
		if f != nil {
			if best == nil || f.stage > best.stage {
				best = f
			}
			continue
		}
		expires := vf.expires
		if !sfExpires.IsZero() && sfExpires.Before(expires) {
			expires = sfExpires
		}
		names := make([]string, len(vf.privileges))
		for i, p := range vf.privileges {
			names[i] = p.Name
		}
		return &am.Authorization{
			User:       user,
			Tool:       tool,
			Expires:    expires,
			Digest:     vf.digest,
			Issuer:     URNOf(vf.issuer),
			Privileges: names,
		}, nil
	}
	msg := best.msg
	if sfFailure != nil && best.stage == stageOwner {
		msg += "; speaks-for not accepted: " + sfFailure.msg
	}
	return nil, refuse("%s", msg)
}

const maxMessage = 500

// clip cuts s to at most n bytes, on a rune boundary.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

func nameOr(s, dflt string) string {
	if s == "" {
		return dflt
	}
	return s
}

// checkRequest applies the checks that depend on the call: expiry, owner,
// target and privileges.
func checkRequest(vf *verified, req am.AuthRequest, user string, speaksFor bool, now time.Time) *failure {
	if now.After(vf.expires) {
		return fail(stageExpired, "credential expired at %s", vf.expires.UTC().Format(time.RFC3339))
	}
	if vf.ownerURN != user {
		if speaksFor {
			return fail(stageOwner, "owner is %s, not the spoken-for user %s", vf.ownerURN, user)
		}
		return fail(stageOwner, "owner is %s, not the caller %s", vf.ownerURN, user)
	}
	if req.Target != "" && vf.targetURN != req.Target {
		have, want := targetTypeOf(vf.targetURN), targetTypeOf(req.Target)
		if !strings.EqualFold(have, want) {
			return fail(stageTargetType, "target is %s, not %s (a %s credential cannot act on a %s)",
				vf.targetURN, req.Target, nameOr(have, "non-GENI"), nameOr(want, "non-GENI target"))
		}
		return fail(stageTarget, "target is %s, not %s", vf.targetURN, req.Target)
	}
	for _, op := range req.Privileges {
		if !grants(vf.privileges, op) {
			return fail(stagePrivilege, "lacks privilege %s", op)
		}
	}
	return nil
}

// checkSpeaksFor checks that a verified geni_abac credential says
// "user.speaks_for_<user keyid> <- caller" for the user named in the
// geni_speaking_for option (gcf speaksfor_util.verify_speaks_for).
func checkSpeaksFor(vf *verified, req am.AuthRequest, now time.Time) *failure {
	if now.After(vf.expires) {
		return fail(stageExpired, "speaks-for credential expired at %s", vf.expires.UTC().Format(time.RFC3339))
	}
	signerURN := URNOf(vf.issuer)
	if signerURN != req.SpeakingFor {
		return fail(stageOwner, "speaks-for credential is signed by %s, not by %s", signerURN, req.SpeakingFor)
	}
	st := vf.abac
	userKey := KeyID(vf.issuer)
	if len(st.Tails) != 1 || st.Tails[0].Role != "" || st.Tails[0].LinkingRole != "" {
		return fail(stageOwner, "speaks-for statement must have exactly one tail principal without a role")
	}
	if st.Head.KeyID != userKey || st.Head.Role != "speaks_for_"+userKey {
		return fail(stageOwner, "ABAC statement is not %s.speaks_for_%s", userKey, userKey)
	}
	if st.Tails[0].KeyID != KeyID(req.Caller.Cert) {
		return fail(stageOwner, "speaks-for credential names tool key %s, not the caller's %s", st.Tails[0].KeyID, KeyID(req.Caller.Cert))
	}
	return nil
}

// verifiedCredential returns the cached verification of value or verifies it.
func (v *Verifier) verifiedCredential(value string, typ string, roots *TrustRoots, gen uint64,
	callerFP [32]byte, caller *am.Caller, now time.Time) (*verified, *failure) {
	key := cacheKey{cred: value, caller: callerFP}
	if v.opts.CacheSize > 0 {
		v.mu.Lock()
		e := v.cache[key]
		v.mu.Unlock()
		if e != nil && e.gen == gen && !now.Before(e.validFrom) && !now.After(e.validUntil) && e.typ == typ {
			v.cacheHits.Add(1)
			return e, nil
		}
	}
	v.cacheMisses.Add(1)
	trust := func(c *x509.Certificate, extra []*x509.Certificate) (*trustedChain, error) {
		return v.trustChain(roots, gen, c, extra, now)
	}
	vf, f := verifyCredential([]byte(value), typ, trust, now)
	if f != nil {
		return nil, f
	}
	vf.gen = gen
	digest := sha256.Sum256([]byte(value))
	vf.digest = hex.EncodeToString(digest[:])
	if v.opts.CacheSize > 0 && len(value) <= maxCacheBytes/16 {
		v.mu.Lock()
		if v.gen == gen {
			for len(v.cache) > 0 && (len(v.cache) >= v.opts.CacheSize || v.cacheBytes+len(value) > maxCacheBytes) {
				// Drop about a quarter, arbitrarily (map order): cheap and
				// good enough for a cache whose entries are all alike.
				n := len(v.cache)/4 + 1
				for k := range v.cache {
					if n <= 0 {
						break
					}
					delete(v.cache, k)
					v.cacheBytes -= len(k.cred)
					n--
				}
			}
			// A copy, so the cache does not pin the request it came in.
			key.cred = strings.Clone(value)
			if _, had := v.cache[key]; !had {
				v.cacheBytes += len(value)
			}
			v.cache[key] = vf
		}
		v.mu.Unlock()
	}
	return vf, nil
}

// trustFunc verifies that a certificate chains to the trusted roots.
type trustFunc func(c *x509.Certificate, extra []*x509.Certificate) (*trustedChain, error)

// trustChain verifies a certificate chain, or answers from the cache.
func (v *Verifier) trustChain(roots *TrustRoots, gen uint64, c *x509.Certificate, extra []*x509.Certificate, now time.Time) (*trustedChain, error) {
	key := sha256.Sum256(c.Raw)
	if v.opts.CacheSize > 0 {
		v.mu.Lock()
		e := v.chains[key]
		v.mu.Unlock()
		if e != nil && e.gen == gen && !now.Before(e.from) && !now.After(e.until) {
			return e, nil
		}
	}
	chain, err := roots.Verify(c, extra, now)
	if err != nil {
		return nil, err
	}
	tc := &trustedChain{gen: gen, chain: chain}
	tc.from, tc.until = validity(chain)
	if v.opts.CacheSize > 0 {
		v.mu.Lock()
		if v.gen == gen {
			if len(v.chains) >= v.opts.CacheSize {
				clear(v.chains)
			}
			v.chains[key] = tc
		}
		v.mu.Unlock()
	}
	return tc, nil
}

// verifyCredential does the request-independent checks of credentials.md §5:
// signatures of the credential and every parent, signer and gid chains to
// the roots, delegation rules, and the issuer's authority over the target.
func verifyCredential(raw []byte, typ string, trustChain trustFunc, now time.Time) (*verified, *failure) {
	sc, err := ParseCredential(raw)
	if err != nil {
		return nil, fail(stageParse, "malformed credential: %v", err)
	}
	top := sc.Credential
	if top.Type != typ {
		if typ == TypePrivilege {
			return nil, fail(stageParse, "a credential of type %s was passed as geni_sfa", top.Type)
		}
		return nil, fail(stageParse, "a credential of type %s was passed as geni_abac", top.Type)
	}
	vf := &verified{validFrom: now, validUntil: top.Expires, typ: top.Type, ownerURN: top.OwnerURN,
		targetURN: top.TargetURN, expires: top.Expires, privileges: top.Privileges, abac: top.ABAC}

	// Every certificate embedded anywhere may serve as an intermediate.
	var pool []*x509.Certificate
	chain := sc.Chain()
	signers := make([]*signature, len(chain))
	for i, c := range chain {
		el := sc.signatures[c.ID]
		if el == nil {
			return nil, fail(stageSignature, "credential %s is not signed", c.ID)
		}
		s, err := sc.doc.verifySignature(el)
		if err != nil {
			return nil, fail(stageSignature, "bad signature on credential %s: %v", c.ID, err)
		}
		if s.refID != c.ID {
			return nil, fail(stageSignature, "signature for %s references %s", c.ID, s.refID)
		}
		signers[i] = s
		pool = append(pool, s.signer)
		pool = append(pool, s.others...)
		pool = append(pool, c.Owner...)
		pool = append(pool, c.Target...)
	}

	var targetChain []*x509.Certificate // the root credential's target, as verified
	trust := func(c *x509.Certificate) ([]*x509.Certificate, error) {
		tc, err := trustChain(c, pool)
		if err != nil {
			return nil, err
		}
		if tc.until.Before(vf.validUntil) {
			vf.validUntil = tc.until
		}
		return tc.chain, nil
	}
	for i, c := range chain {
		if _, err := trust(signers[i].signer); err != nil {
			return nil, fail(stageTrust, "credential %s signed by untrusted %s: %v", c.ID, certName(signers[i].signer), err)
		}
		if len(c.Owner) > 0 {
			if _, err := trust(c.Owner[0]); err != nil {
				return nil, fail(stageTrust, "credential %s owner: %v", c.ID, err)
			}
		}
		if len(c.Target) > 0 {
			tc, err := trust(c.Target[0])
			if err != nil {
				return nil, fail(stageTrust, "credential %s target: %v", c.ID, err)
			}
			if i == len(chain)-1 {
				targetChain = tc
			}
		}
	}

	// Delegation (gcf Credential.verify_parent).
	for i := 0; i+1 < len(chain); i++ {
		child, parent := chain[i], chain[i+1]
		if !child.Target[0].Equal(parent.Target[0]) {
			return nil, fail(stageDelegation, "delegated credential %s has target %s, its parent %s has %s",
				child.ID, child.TargetURN, parent.ID, parent.TargetURN)
		}
		if child.Expires.After(parent.Expires) {
			return nil, fail(stageDelegation, "delegated credential %s expires at %s, after its parent (%s)", child.ID,
				child.Expires.Format(time.RFC3339), parent.Expires.Format(time.RFC3339))
		}
		for _, cp := range child.Privileges {
			ok, held := false, false
			for _, pp := range parent.Privileges {
				if delegatableFrom(cp, pp) {
					ok = true
					break
				}
				if delegatableFrom(cp, Privilege{Name: pp.Name, CanDelegate: true}) {
					held = true
				}
			}
			if !ok {
				if held {
					return nil, fail(stageDelegation, "privilege %s is not delegatable in parent credential %s", cp.Name, parent.ID)
				}
				return nil, fail(stageDelegation, "delegated credential %s grants %s, which its parent %s does not (child broader than parent)",
					child.ID, cp.Name, parent.ID)
			}
		}
		if !signers[i].signer.Equal(parent.Owner[0]) {
			return nil, fail(stageDelegation, "delegated credential %s is signed by %s, not by %s, the owner of its parent",
				child.ID, certName(signers[i].signer), parent.OwnerURN)
		}
	}

	// The root credential's signer must be an authority over the target
	// (gcf Credential.verify_issuer): either it signed the target certificate
	// or its URN is an authority over the target's namespace.
	root, rootSigner := chain[len(chain)-1], signers[len(chain)-1].signer
	if root.Type == TypePrivilege {
		// The target's verified chain says who signed it: no need to check
		// its signature again.
		target := root.Target[0]
		if len(targetChain) < 2 || !targetChain[1].Equal(rootSigner) {
			if err := authorityOver(rootSigner, target); err != nil {
				return nil, fail(stageDelegation, "credential %s: signer %s is not an authority over target %s (%v)",
					root.ID, certName(rootSigner), root.TargetURN, err)
			}
		}
	}
	vf.issuer = signers[0].signer
	return vf, nil
}
