package am

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"strings"
	"time"
)

// AggregateConfig is the policy of an Aggregate. Zero durations take the
// defaults named on each field.
type AggregateConfig struct {
	URN       string // the AM's URN, urn:publicid:IDN+<authority>+authority+am
	URL       string // absolute URL of the v3 endpoint
	Authority string // authority of the sliver URNs we mint; default: the one in URN

	AllocationHold      time.Duration // expiry of a new allocation; default 10 min
	AllocationMax       time.Duration // Renew cap of an allocated sliver; default 2 h
	ProvisionedLifetime time.Duration // expiry given at Provision; default 7 days
	MaxLease            time.Duration // Renew cap of a provisioned sliver; default 30 days
	Placement           PlacementPolicy
	// MaxLinks is how many links one request may hold; 0 refuses links.
	MaxLinks int

	// Reservations (Allocate with geni_start_time, see reservation.go).
	MaxBooking       time.Duration // longest window; default DefaultMaxBooking
	MaxBookAhead     time.Duration // latest start from now; default DefaultMaxBookAhead
	MaxBookedPerNode time.Duration // per user and per project: reservations of one node not ended; 0: no limit

	// AdCacheTTL is how long ListResources may serve an advertisement that
	// misses other processes' sliver changes (see adCache); 0 means
	// DefaultAdCacheTTL, negative: build one on every call.
	AdCacheTTL time.Duration

	// Operators are user URNs that may still act on a shut-down slice.
	Operators []string
	// Provisioner, when set, is told of committed changes (see Provisioner).
	Provisioner Provisioner
	// Ops, when set, is the operator's policy: allow/deny lists, sliver
	// limits, maintenance (see OpsPolicy). The Gate applies it.
	Ops *OpsPolicy
	// Auditor receives the audit records of requests the Gate sees at entry
	// points other than the AM API edge (Gate.Audit); the edge has its own.
	Auditor Auditor
}

// Provisioner drives the nodes. The Aggregate calls it after each change has
// committed, with the slivers as they now are; it must not block for long
// (queue the work) and reports progress by changing the slivers through the
// Store. Errors are its own to record (Sliver.Error, geni_failed).
type Provisioner interface {
	Provisioned(ctx context.Context, slivers []Sliver)
	Acted(ctx context.Context, action string, slivers []Sliver)
	// Deleted: by Delete or by the reaper, the slivers as they were (a
	// provisioned one has its teardown job queued by the same transaction).
	Deleted(ctx context.Context, slivers []Sliver)
	ShutDown(ctx context.Context, sliceURN string)
}

// Aggregate implements API on a Store: the AM API v3 semantics (states,
// expiry policy, best effort, Shutdown) live here; the Store keeps them
// consistent under concurrency.
type Aggregate struct {
	cfg    AggregateConfig
	store  Store
	gate   *Gate
	rspecs RSpecs
	now    func() time.Time

	ads adCache
}

var _ API = (*Aggregate)(nil)

// Privileges checked per method (gcf operation names, spec §11).
const (
	privCreate   = "createsliver"
	privRenew    = "renewsliver"
	privDescribe = "getsliceresources"
	privDelete   = "deleteslice"
	privShutdown = "shutdown"
)

// NewAggregate wires an Aggregate. clock nil means time.Now.
func NewAggregate(cfg AggregateConfig, store Store, auth Authorizer, rspecs RSpecs, clock func() time.Time) *Aggregate {
	cfg = cfg.withDefaults()
	if cfg.Authority == "" {
		if u, err := ParseURN(cfg.URN); err == nil {
			cfg.Authority = u.Authority
		}
	}
	if clock == nil {
		clock = time.Now
	}
	gate := NewGate(GateConfig{Authorizer: auth, Ops: cfg.Ops, Operators: cfg.Operators, Slices: store,
		Auditor: cfg.Auditor, Now: clock})
	a := &Aggregate{cfg: cfg, store: store, gate: gate, rspecs: rspecs, now: clock}
	a.ads.ttl = cfg.AdCacheTTL
	return a
}

// Gate returns the authorization gate of the aggregate, for the entry points
// beside the AM API (/data, console, logs, SSH): the same credentials
// checks, operator policy, shut-down rule and audit trail.
func (a *Aggregate) Gate() *Gate { return a.gate }

// Config returns the effective configuration (defaults filled in).
func (a *Aggregate) Config() AggregateConfig { return a.cfg }

// ---- GetVersion, ListResources ----

// GetVersion needs no credentials.
func (a *Aggregate) GetVersion(ctx context.Context, c Call) (*Version, error) {
	v := StandardVersion(a.cfg.URN, a.cfg.URL)
	v.Extra = map[string]any{"geni_allocate": AllocateMode, "geni_single_allocation": SingleAllocation}
	return v, nil
}

// ListResources renders the inventory. The advertisement is cached: see
// adCache for when a cached one is served and how stale it may be.
func (a *Aggregate) ListResources(ctx context.Context, c Call) (string, error) {
	const op = "ListResources"
	if _, err := a.authorize(ctx, c, Access{Method: op}); err != nil {
		return "", opErr(op, err)
	}
	if err := CheckRSpecVersion(c.Options); err != nil {
		return "", opErr(op, err)
	}
	ad, err := a.advertisement(ctx, c.Options.Available)
	if err != nil {
		return "", opErr(op, err)
	}
	return ad, nil
}

// ---- authorization and URN resolution ----

// authorize asks the Gate about an AM API call: the call's caller,
// credentials and speaks-for with the method's target and privileges.
func (a *Aggregate) authorize(ctx context.Context, c Call, acc Access) (*Grant, error) {
	acc.Caller, acc.Credentials, acc.SpeakingFor = c.Caller, c.Credentials, c.Options.SpeakingFor
	return a.gate.Check(ctx, acc)
}

// scope is what a call on urns acts on, once authorized.
type scope struct {
	slice    string
	slivers  []string // nil: the whole slice
	authz    *Authorization
	operator bool
}

// begin resolves urns (one slice URN, or sliver URNs of one slice), checks
// the credentials against that slice and refuses a shut-down slice.
func (a *Aggregate) begin(ctx context.Context, c Call, method string, urns []string, privileges ...string) (*scope, error) {
	return a.beginAccess(ctx, c, Access{Method: method, Privileges: privileges}, urns)
}

// beginAccess is begin with the gate's Access spelt out (its Slice is
// filled in here), for a call that needs more than the method and
// privileges (ShutDownOK).
func (a *Aggregate) beginAccess(ctx context.Context, c Call, acc Access, urns []string) (*scope, error) {
	if len(urns) == 0 {
		return nil, Errorf(BadArgs, "no URNs given: pass one slice URN or the URNs of slivers of one slice")
	}
	if len(urns) > 10000 {
		return nil, Errorf(BadArgs, "too many URNs (%d)", len(urns))
	}
	var sc scope
	var sliverURNs []string
	seen := map[string]bool{}
	for _, raw := range urns {
		parsed, err := ParseURN(raw)
		if err != nil {
			return nil, Errorf(BadArgs, "%v", err)
		}
		u, typ := parsed.String(), parsed.Type
		switch typ {
		case "slice":
			if len(urns) != 1 {
				return nil, Errorf(BadArgs, "pass either one slice URN or sliver URNs, not %d URNs including slice %s", len(urns), u)
			}
			sc.slice = u
		case "sliver":
			if !seen[u] {
				seen[u] = true
				sliverURNs = append(sliverURNs, u)
			}
		default:
			return nil, Errorf(BadArgs, "%s is a %s URN; pass a slice or sliver URN", u, typ)
		}
	}
	if sc.slice == "" {
		slices, err := a.store.SliverSlices(ctx, sliverURNs)
		if err != nil {
			return nil, err
		}
		for _, u := range sliverURNs {
			s, ok := slices[u]
			if !ok {
				return nil, &Err{Code: SearchFailed, URN: u, Msg: "no sliver " + u + " at this aggregate (unknown, deleted or expired)"}
			}
			if sc.slice == "" {
				sc.slice = s
			} else if s != sc.slice {
				// Name the slivers the caller gave, never the slices: one of
				// them may be another user's.
				return nil, Errorf(BadArgs, "the slivers given belong to more than one slice (%s is not in the slice of %s)", u, sliverURNs[0])
			}
		}
		sc.slivers = sliverURNs
		AuditFrom(ctx).NoteSlivers(sliverURNs...)
	}
	acc.Slice = sc.slice
	grant, err := a.authorize(ctx, c, acc)
	if err != nil {
		if sc.slivers != nil {
			// The caller named slivers, not the slice: the slice may be
			// another user's, and a refusal must not tell its name.
			return nil, HideURN(err, sc.slice, "the slice of the slivers given")
		}
		return nil, err
	}
	sc.authz, sc.operator = grant.Authorization, grant.Operator
	return &sc, nil
}

// targets lists the sliver URNs of a scope (the slice's live slivers when the
// call named the slice), keeping only those keep accepts.
func (a *Aggregate) targets(ctx context.Context, sc *scope, keep func(Sliver) bool) ([]Sliver, error) {
	slivers, err := a.store.Slivers(ctx, sc.slice, sc.slivers)
	if err != nil {
		return nil, err
	}
	if sc.slivers != nil && len(slivers) < len(sc.slivers) {
		found := map[string]bool{}
		for _, s := range slivers {
			found[s.URN] = true
		}
		for _, u := range sc.slivers {
			if !found[u] {
				return nil, &Err{Code: SearchFailed, URN: u, Msg: "no sliver " + u + " at this aggregate (deleted or expired)"}
			}
		}
	}
	AuditFrom(ctx).noteSliversOf(slivers)
	if keep == nil {
		return slivers, nil
	}
	out := slivers[:0]
	for _, s := range slivers {
		if keep(s) {
			out = append(out, s)
		}
	}
	return out, nil
}

func urnsOf(slivers []Sliver) []string {
	out := make([]string, len(slivers))
	for i, s := range slivers {
		out[i] = s.URN
	}
	return out
}

// ---- Describe, Status ----

// Describe returns the manifest of the named slivers or of the whole slice. A
// slice with nothing here gets an empty manifest and no slivers.
func (a *Aggregate) Describe(ctx context.Context, c Call, urns []string) (*DescribeResult, error) {
	const op = "Describe"
	sc, err := a.begin(ctx, c, op, urns, privDescribe)
	if err != nil {
		return nil, opErr(op, err)
	}
	if err := CheckRSpecVersion(c.Options); err != nil {
		return nil, opErr(op, err)
	}
	slivers, err := a.targets(ctx, sc, nil)
	if err != nil {
		return nil, opErr(op, err)
	}
	manifest, err := a.rspecs.Manifest(sc.slice, slivers, a.now())
	if err != nil {
		return nil, opErr(op, err)
	}
	res := &DescribeResult{RSpec: manifest, SliceURN: sc.slice, Slivers: make([]SliverStatus, 0, len(slivers))}
	for _, s := range slivers {
		res.Slivers = append(res.Slivers, StatusOf(s))
	}
	ended, err := a.endedSlivers(ctx, c, sc)
	if err != nil {
		return nil, opErr(op, err)
	}
	for _, s := range ended {
		res.Slivers = append(res.Slivers, StatusOf(s))
	}
	return res, nil
}

// Status reports the dynamic state of slivers, always with geni_error.
func (a *Aggregate) Status(ctx context.Context, c Call, urns []string) (*StatusResult, error) {
	const op = "Status"
	sc, err := a.begin(ctx, c, op, urns, privDescribe)
	if err != nil {
		return nil, opErr(op, err)
	}
	slivers, err := a.targets(ctx, sc, nil)
	if err != nil {
		return nil, opErr(op, err)
	}
	ended, err := a.endedSlivers(ctx, c, sc)
	if err != nil {
		return nil, opErr(op, err)
	}
	res := &StatusResult{SliceURN: sc.slice, Slivers: make([]SliverStatus, 0, len(slivers)+len(ended))}
	for _, s := range append(slivers, ended...) {
		st := StatusOf(s)
		st.ErrorSet = true
		res.Slivers = append(res.Slivers, st)
	}
	return res, nil
}

// ---- Allocate ----

// Allocate places the request's nodes and holds them for AllocationHold
// (shorter if geni_end_time or the credential says so). Further Allocates on
// the same slice add slivers (geni_many); a client_id already used in the
// slice is ALREADYEXISTS.
func (a *Aggregate) Allocate(ctx context.Context, c Call, sliceURN string, rspec string) (*AllocateResult, error) {
	const op = "Allocate"
	slice, err := URNOfType(sliceURN, "slice")
	if err != nil {
		return nil, opErr(op, Errorf(BadArgs, "slice_urn: %v", err))
	}
	sliceURN = slice.String()
	grant, err := a.authorize(ctx, c, Access{Method: op, Slice: sliceURN, Privileges: []string{privCreate}, NewWork: true,
		ShutDownOK: true}) // the store's Allocate refuses a shut-down slice in its own transaction
	if err != nil {
		return nil, opErr(op, err)
	}
	req, err := a.rspecs.ParseRequest(rspec)
	if err != nil {
		if CodeOf(err) == ServerError && MessageOf(err) == "" {
			err = Wrap(BadArgs, err, "the request RSpec cannot be parsed")
		}
		return nil, opErr(op, err)
	}
	if req == nil || len(req.Slivers) == 0 {
		return nil, opErr(op, Errorf(BadArgs, "the request RSpec has no nodes for this aggregate"))
	}
	now := a.now()
	if err := a.gate.Limits(ctx, grant, sliceURN, len(req.Slivers)); err != nil {
		return nil, opErr(op, err)
	}
	var endWanted time.Time
	if c.Options.EndTime != nil {
		if !c.Options.EndTime.After(now) {
			return nil, opErr(op, Errorf(BadArgs, "geni_end_time %s is not in the future", rfc3339(*c.Options.EndTime)))
		}
		endWanted = c.Options.EndTime.UTC()
	}
	expires := a.cfg.allocationExpiry(now, grant.Expires, endWanted)
	if !expires.After(now) {
		return nil, opErr(op, Errorf(Expired, "the slice credential expired at %s", rfc3339(grant.Expires)))
	}
	// A geni_start_time not in the future is now, as in gcf.
	var starts time.Time
	if st := c.Options.StartTime; st != nil && st.After(now) {
		if starts, expires, err = a.cfg.reservationWindow(now, *st, endWanted, grant.Expires); err != nil {
			return nil, opErr(op, err)
		}
		endWanted = expires
	}

	reqs := make([]SliverRequest, len(req.Slivers))
	clientIDs := map[string]bool{}
	var bound []string
	allBound := true
	for i, r := range req.Slivers {
		if r.SliverType == "" {
			r.SliverType = SliverTypeContainer
			if r.Exclusive {
				r.SliverType = SliverTypeExclusive
			}
		}
		if r.Exclusive {
			r.SliverType = SliverTypeExclusive
		}
		if r.SliverType != SliverTypeContainer && r.SliverType != SliverTypeExclusive {
			return nil, opErr(op, Errorf(Unsupported, "node %q asks for sliver type %q; this aggregate offers %s and %s",
				r.ClientID, r.SliverType, SliverTypeContainer, SliverTypeExclusive))
		}
		if r.ClientID == "" {
			return nil, opErr(op, Errorf(BadArgs, "a request node has no client_id"))
		}
		if !starts.IsZero() && r.SliverType != SliverTypeExclusive {
			return nil, opErr(op, Errorf(Unsupported, "node %q: geni_start_time books whole nodes; ask for sliver type %s (or exclusive=\"true\")",
				r.ClientID, SliverTypeExclusive))
		}
		if clientIDs[r.ClientID] {
			return nil, opErr(op, Errorf(BadArgs, "client_id %q appears twice in the request", r.ClientID))
		}
		clientIDs[r.ClientID] = true
		if r.ComponentID != "" {
			bound = append(bound, r.ComponentID)
		} else {
			allBound = false
		}
		reqs[i] = r
	}

	windowStart := now
	if !starts.IsZero() {
		windowStart = starts
	}
	project := ProjectOf(sliceURN)
	ifaces, err := checkLinks(reqs, req.Links, a.cfg.MaxLinks)
	if err != nil {
		return nil, opErr(op, err)
	}

	plan := func(nodes []Node) ([]Sliver, error) {
		nodes = forWindow(nodes, windowStart, expires, !starts.IsZero(), grant.User, project, a.cfg.MaxBookedPerNode)
		placed, err := PlaceShuffled(a.cfg.Placement, nodes, reqs, mrand.IntN)
		if err != nil {
			return nil, err
		}
		out := make([]Sliver, len(reqs))
		for i, r := range reqs {
			out[i] = Sliver{URN: a.newSliverURN(), SliceURN: sliceURN, ClientID: r.ClientID, NodeName: placed[i],
				SliverType: r.SliverType, Exclusive: r.SliverType == SliverTypeExclusive, Image: r.Image,
				Execute: r.Execute, Install: r.Install, Run: r.Run, NodeXML: r.NodeXML, Allocation: Allocated,
				Operational: PendingAllocation, Expires: expires, EndWanted: endWanted, CreatedBy: grant.User, CreatedAt: now,
				Starts: starts}
			for _, f := range ifaces[i] {
				f.MAC = LinkMAC(out[i].URN, f.ClientID)
				out[i].Interfaces = append(out[i].Interfaces, f)
			}
		}
		if err := checkLinkSupport(req.Links, out, nodes); err != nil {
			return nil, err
		}
		return out, nil
	}
	slivers, err := a.store.Allocate(ctx, AllocateTx{SliceURN: sliceURN, SliceExpires: grant.Expires, Actor: grant.User,
		Operator: grant.Operator, Now: now, Bound: bound, AllBound: allBound, Plan: plan,
		Starts: starts, BookLimit: a.cfg.MaxBookedPerNode})
	if err != nil {
		return nil, opErr(op, err)
	}
	a.ads.changed()
	AuditFrom(ctx).noteSliversOf(slivers)
	return a.allocateResult(op, sliceURN, slivers, nil, now)
}

func (a *Aggregate) allocateResult(op, sliceURN string, manifestOf []Sliver, statuses []SliverStatus, now time.Time) (*AllocateResult, error) {
	manifest, err := a.rspecs.Manifest(sliceURN, manifestOf, now)
	if err != nil {
		return nil, opErr(op, err)
	}
	if statuses == nil {
		statuses = make([]SliverStatus, 0, len(manifestOf))
		for _, s := range manifestOf {
			statuses = append(statuses, StatusOf(s))
		}
	}
	return &AllocateResult{RSpec: manifest, Slivers: statuses}, nil
}

func (a *Aggregate) newSliverURN() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return URN{Authority: a.cfg.Authority, Type: "sliver", Name: hex.EncodeToString(b)}.String()
}

// ---- Provision ----

// Provision moves allocated slivers to geni_provisioned (operational
// geni_notready until a Provisioner moves them on), with the provisioned
// lifetime capped by the credential, geni_end_time and MaxLease.
func (a *Aggregate) Provision(ctx context.Context, c Call, urns []string) (*AllocateResult, error) {
	const op = "Provision"
	sc, err := a.begin(ctx, c, op, urns, privCreate)
	if err != nil {
		return nil, opErr(op, err)
	}
	if err := CheckRSpecVersion(c.Options); err != nil {
		return nil, opErr(op, err)
	}
	now := a.now()
	var endOpt time.Time
	if c.Options.EndTime != nil {
		if !c.Options.EndTime.After(now) {
			return nil, opErr(op, Errorf(BadArgs, "geni_end_time %s is not in the future", rfc3339(*c.Options.EndTime)))
		}
		endOpt = c.Options.EndTime.UTC()
	}
	var keep func(Sliver) bool
	if sc.slivers == nil {
		keep = func(s Sliver) bool { return s.Allocation == Allocated }
	}
	targets, err := a.targets(ctx, sc, keep)
	if err != nil {
		return nil, opErr(op, err)
	}
	if len(targets) == 0 {
		return nil, opErr(op, &Err{Code: SearchFailed, URN: sc.slice, Msg: "slice " + sc.slice + " has no allocated slivers here to provision"})
	}
	apply := func(s *Sliver) error {
		if s.Allocation != Allocated {
			return &Err{Code: Unsupported, URN: s.URN, Msg: fmt.Sprintf("sliver %s is %s, not geni_allocated", s.URN, s.Allocation)}
		}
		if !s.Expires.After(now) {
			return &Err{Code: Expired, URN: s.URN, Msg: fmt.Sprintf("the allocation of sliver %s expired at %s", s.URN, rfc3339(s.Expires))}
		}
		end := endOpt
		if end.IsZero() && s.EndWanted.After(now) {
			end = s.EndWanted
		}
		reserved := s.Starts.After(now)
		if s.Starts.IsZero() {
			// Never into the next booking of its node.
			s.Expires = earliest(a.cfg.provisionExpiry(now, sc.authz.Expires, end), s.NextBooking)
		} // a reservation keeps its window
		s.Allocation, s.Operational = Provisioned, NotReady
		if reserved {
			// The provision job waits for the start (migrations/0010).
			s.Error, s.ResourceMsg = "", "reserved: set up at "+rfc3339(s.Starts)
			if c.Options.UsersSet {
				s.Users = c.Options.Users
			}
			return nil
		}
		if a.cfg.Provisioner != nil {
			// The provisioner's job (enqueued with this change) fetches
			// and starts it; Status follows what the agent reports.
			s.Operational = Configuring
			if d, ok := a.cfg.Provisioner.(dataURLer); ok {
				s.DataURL = d.DataURL(s.URN) // for this answer's manifest; the job records it
			}
		}
		s.Error, s.ResourceMsg = "", ""
		if c.Options.UsersSet {
			s.Users = c.Options.Users
		}
		return nil
	}
	results, err := a.store.Change(ctx, ChangeTx{Event: op, Actor: sc.authz.User, Operator: sc.operator,
		SliceURN: sc.slice, URNs: urnsOf(targets), BestEffort: c.Options.BestEffort, Apply: apply})
	if err != nil {
		return nil, opErr(op, err)
	}
	done, statuses := split(results)
	AuditFrom(ctx).NoteDeployed(done)
	if p := a.cfg.Provisioner; p != nil && len(done) > 0 {
		p.Provisioned(ctx, done)
	}
	return a.allocateResult(op, sc.slice, done, statuses, now)
}

// split separates the slivers changed from the statuses of all, failures
// carrying geni_error.
func split(results []ChangeResult) ([]Sliver, []SliverStatus) {
	var done []Sliver
	statuses := make([]SliverStatus, 0, len(results))
	for _, r := range results {
		st := StatusOf(r.Sliver)
		if r.Err != nil {
			st.Error = geniError(r.Err)
			st.ErrorSet = true
		} else {
			// geni_error in these results says why the call failed for the
			// sliver; a sliver's own failure (a provisioning that went
			// wrong) is Status' and Describe's to report, or omni takes a
			// successful Renew of a failed sliver for a failed Renew.
			st.Error = ""
			done = append(done, r.Sliver)
		}
		statuses = append(statuses, st)
	}
	return done, statuses
}

// geniError is the geni_error text of a per-sliver failure: "CODE: message".
func geniError(err error) string {
	msg := MessageOf(err)
	if msg == "" {
		msg = "internal error"
	}
	return CodeOf(err).String() + ": " + msg
}

// ---- Renew ----

// Renew sets the expiry of slivers to expiration. The cap is the credential's
// expiry and AllocationMax (allocated) or MaxLease (provisioned) from now; a
// time past the cap is OUTOFRANGE unless geni_extend_alap, which grants the
// cap. A time in the past is always OUTOFRANGE.
func (a *Aggregate) Renew(ctx context.Context, c Call, urns []string, expiration time.Time) ([]SliverStatus, error) {
	const op = "Renew"
	sc, err := a.begin(ctx, c, op, urns, privRenew)
	if err != nil {
		return nil, opErr(op, err)
	}
	now := a.now()
	if !expiration.After(now) {
		return nil, opErr(op, Errorf(OutOfRange, "requested expiration %s is not in the future", rfc3339(expiration)))
	}
	targets, err := a.targets(ctx, sc, nil)
	if err != nil {
		return nil, opErr(op, err)
	}
	if len(targets) == 0 {
		return []SliverStatus{}, nil
	}
	apply := func(s *Sliver) error {
		if !s.Expires.After(now) {
			return &Err{Code: Expired, URN: s.URN, Msg: fmt.Sprintf("sliver %s expired at %s", s.URN, rfc3339(s.Expires))}
		}
		limit, what := a.cfg.renewLimit(s.Allocation, now, sc.authz.Expires)
		if !s.Starts.IsZero() {
			limit, what = earliest(s.Starts.Add(a.cfg.MaxBooking), sc.authz.Expires), "the longest reservation from its start, or the slice credential"
		}
		if !s.NextBooking.IsZero() && s.NextBooking.Before(limit) {
			limit, what = s.NextBooking, "the start of the next booking of its node"
		}
		want := expiration
		if want.After(limit) {
			if !c.Options.ExtendALAP {
				return &Err{Code: OutOfRange, URN: s.URN, Msg: fmt.Sprintf("sliver %s cannot be renewed to %s: the limit is %s (%s); ask for less or use geni_extend_alap",
					s.URN, rfc3339(expiration), rfc3339(limit), what)}
			}
			want = limit
		}
		s.Expires = want.UTC()
		return nil
	}
	results, err := a.store.Change(ctx, ChangeTx{Event: op, Actor: sc.authz.User, Operator: sc.operator,
		SliceURN: sc.slice, URNs: urnsOf(targets), BestEffort: c.Options.BestEffort, Apply: apply})
	if err != nil {
		return nil, opErr(op, err)
	}
	_, statuses := split(results)
	return statuses, nil
}

// ---- PerformOperationalAction ----

// PerformOperationalAction records operational transitions on provisioned
// slivers; a Provisioner carries them out on the nodes.
func (a *Aggregate) PerformOperationalAction(ctx context.Context, c Call, urns []string, action string) ([]SliverStatus, error) {
	const op = "PerformOperationalAction"
	sc, err := a.begin(ctx, c, op, urns, privCreate)
	if err != nil {
		return nil, opErr(op, err)
	}
	transition, err := actionTransition(action, c.Options)
	if err != nil {
		return nil, opErr(op, err)
	}
	if a.cfg.Provisioner != nil {
		transition = inTransit(action, transition)
	}
	targets, err := a.targets(ctx, sc, nil)
	if err != nil {
		return nil, opErr(op, err)
	}
	if len(targets) == 0 {
		return []SliverStatus{}, nil
	}
	now := a.now()
	apply := func(s *Sliver) error {
		if s.Allocation != Provisioned {
			return &Err{Code: Unsupported, URN: s.URN, Msg: fmt.Sprintf("sliver %s is %s: %s needs a provisioned sliver (Provision it first)", s.URN, s.Allocation, action)}
		}
		if !s.Expires.After(now) {
			return &Err{Code: Expired, URN: s.URN, Msg: fmt.Sprintf("sliver %s expired at %s", s.URN, rfc3339(s.Expires))}
		}
		if s.Starts.After(now) {
			// Nothing runs on the node before the booking starts.
			return &Err{Code: Unavailable, URN: s.URN, Msg: fmt.Sprintf("sliver %s is a booking that starts at %s: %s is possible from then on",
				s.URN, rfc3339(s.Starts), action)}
		}
		return transition(s)
	}
	results, err := a.store.Change(ctx, ChangeTx{Event: action, Actor: sc.authz.User, Operator: sc.operator,
		SliceURN: sc.slice, URNs: urnsOf(targets), BestEffort: c.Options.BestEffort, Apply: apply})
	if err != nil {
		return nil, opErr(op, err)
	}
	done, statuses := split(results)
	if p := a.cfg.Provisioner; p != nil && len(done) > 0 {
		p.Acted(ctx, action, done)
	}
	return statuses, nil
}

// actionTransition returns the state change of action on one provisioned
// sliver, or BADARGS naming the supported actions.
func actionTransition(action string, o Options) (func(s *Sliver) error, error) {
	wrongState := func(s *Sliver, need string) error {
		return &Err{Code: Unsupported, URN: s.URN, Msg: fmt.Sprintf("%s is not possible on sliver %s in state %s (%s)", action, s.URN, s.Operational, need)}
	}
	switch action {
	case ActionStart:
		return func(s *Sliver) error {
			switch s.Operational {
			case NotReady, Ready, Failed, Configuring: // configuring: it starts once provisioned
				s.Operational, s.Error = Ready, ""
				return nil
			}
			return wrongState(s, "it must be geni_notready, geni_ready, geni_configuring or geni_failed")
		}, nil
	case ActionStop:
		return func(s *Sliver) error {
			switch s.Operational {
			case NotReady, Ready, Failed, Configuring: // configuring: it stops once provisioned
				s.Operational = NotReady
				return nil
			}
			return wrongState(s, "it must be geni_ready, geni_notready, geni_configuring or geni_failed")
		}, nil
	case ActionRestart:
		return func(s *Sliver) error {
			switch s.Operational {
			case Ready, Failed:
				s.Operational, s.Error = Ready, ""
				return nil
			}
			return wrongState(s, "it must be running (geni_ready); use geni_start")
		}, nil
	case ActionUpdateUsers:
		if !o.UsersSet {
			return nil, Errorf(BadArgs, "geni_update_users needs the geni_users option")
		}
		return func(s *Sliver) error {
			if s.Operational != Ready {
				return &Err{Code: Refused, URN: s.URN, Msg: fmt.Sprintf("geni_update_users needs sliver %s to be geni_ready; it is %s", s.URN, s.Operational)}
			}
			s.Users = mergeUsers(s.Users, o.Users)
			return nil
		}, nil
	case ActionFetchData:
		return func(s *Sliver) error {
			s.ResourceMsg = "data fetch requested"
			return nil
		}, nil
	}
	return nil, Errorf(BadArgs, "unknown operational action %q: supported are %s", clip(action), strings.Join(SupportedActions, ", "))
}

// dataURLer is a Provisioner that serves slivers' /data (package provision).
type dataURLer interface{ DataURL(sliverURN string) string }

// OptionEnded (geniam_ended: true) makes Status and Describe of a whole
// slice also list its deleted and expired slivers, as geni_unallocated with
// why and when they ended, their exit code, output tail and archive URLs,
// for as long as their archive is kept. It is an option because the AM API
// acceptance tests want a slice to be empty after Delete.
const OptionEnded = "geniam_ended"

// endedLister is a Store that keeps ended slivers (package store does).
type endedLister interface {
	EndedSlivers(ctx context.Context, sliceURN string) ([]Sliver, error)
}

// endedSlivers are the slice's ended slivers when the call asks for them
// (geniam_ended) about the whole slice.
func (a *Aggregate) endedSlivers(ctx context.Context, c Call, sc *scope) ([]Sliver, error) {
	if want, _ := c.Options.Raw[OptionEnded].(bool); !want || sc.slivers != nil {
		return nil, nil
	}
	el, ok := a.store.(endedLister)
	if !ok {
		return nil, nil
	}
	return el.EndedSlivers(ctx, sc.slice)
}

// inTransit: with a Provisioner the node has not acted yet when the call
// returns, so start and restart report geni_configuring and stop
// geni_stopping until the agent's answer moves them on.
func inTransit(action string, transition func(s *Sliver) error) func(s *Sliver) error {
	return func(s *Sliver) error {
		if err := transition(s); err != nil {
			return err
		}
		switch action {
		case ActionStart, ActionRestart:
			s.Operational = Configuring
		case ActionStop:
			s.Operational = Stopping
		}
		return nil
	}
}

// mergeUsers adds new users and replaces the keys of named ones, leaving the
// others alone (geni_update_users, spec §7.2).
func mergeUsers(have, update []User) []User {
	out := append([]User(nil), have...)
	for _, u := range update {
		replaced := false
		for i := range out {
			if out[i].URN == u.URN {
				out[i].Keys = u.Keys
				replaced = true
			}
		}
		if !replaced {
			out = append(out, u)
		}
	}
	return out
}

// ---- Delete, Shutdown ----

// Delete removes slivers in any state; their slots are free when it returns.
// The store deletes them in one statement (no Apply: a live sliver can
// always be deleted), so geni_best_effort changes nothing here.
func (a *Aggregate) Delete(ctx context.Context, c Call, urns []string) ([]SliverStatus, error) {
	const op = "Delete"
	// The store's Delete refuses a shut-down slice to all but an operator
	// itself (DeleteTx.Operator), in its transaction: the gate's own check
	// would cost a round trip more and could race with Shutdown.
	sc, err := a.beginAccess(ctx, c, Access{Method: op, Privileges: []string{privDelete}, ShutDownOK: true}, urns)
	if err != nil {
		return nil, opErr(op, err)
	}
	done, err := a.store.Delete(ctx, DeleteTx{Actor: sc.authz.User, Operator: sc.operator, SliceURN: sc.slice, URNs: sc.slivers})
	if err != nil {
		return nil, opErr(op, err)
	}
	AuditFrom(ctx).noteSliversOf(done)
	statuses := make([]SliverStatus, 0, len(done))
	for _, s := range done {
		s.Allocation = Unallocated
		st := StatusOf(s)
		st.Error = ""
		st.Operational = ""
		statuses = append(statuses, st)
	}
	if len(done) > 0 {
		a.ads.changed()
		if p := a.cfg.Provisioner; p != nil {
			p.Deleted(ctx, done)
		}
	}
	return statuses, nil
}

// Shutdown stops the slice's slivers, keeps them, and refuses every further
// call on the slice (FORBIDDEN) until an operator restores it. A slice
// unknown here or already shut down also gets true.
func (a *Aggregate) Shutdown(ctx context.Context, c Call, sliceURN string) error {
	const op = "Shutdown"
	slice, err := URNOfType(sliceURN, "slice")
	if err != nil {
		return opErr(op, Errorf(BadArgs, "slice_urn: %v", err))
	}
	sliceURN = slice.String()
	grant, err := a.authorize(ctx, c, Access{Method: op, Slice: sliceURN, Privileges: []string{privShutdown}, ShutDownOK: true})
	if err != nil {
		return opErr(op, err)
	}
	if err := a.store.Shutdown(ctx, sliceURN, grant.User, a.now()); err != nil {
		return opErr(op, err)
	}
	if p := a.cfg.Provisioner; p != nil {
		p.ShutDown(ctx, sliceURN)
	}
	return nil
}

// ---- helpers ----

// clip shortens caller-supplied text quoted in a message.
func clip(s string) string {
	const max = 200
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}

func rfc3339(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// opErr stamps the method on an *Err (copying it: errors may be shared).
func opErr(op string, err error) error {
	var e *Err
	if errors.As(err, &e) {
		if e.Op == "" {
			cp := *e
			cp.Op = op
			return &cp
		}
		return e
	}
	return &Err{Code: ServerError, Op: op, Msg: "internal error", Err: err}
}
