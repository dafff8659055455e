package am

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sync/atomic"
	"time"
)

// Gate is the aggregate's one authorization decision. Every entry point asks
// it before it acts on a caller's behalf: the AM API (Aggregate), the /data
// download (am/provision), and the console, logs and SSH sessions. So the
// same checks apply everywhere, in one order:
//
//  1. the credentials grant Access.Privileges on Access.Slice
//     (Authorizer, i.e. package credentials), or, for an IdentityOnly
//     request, the entry point has named the caller;
//  2. the operator's allow and deny lists (OpsPolicy.Allow, Deny);
//  3. maintenance, for requests that start new work (Access.NewWork);
//  4. a slice shut down by Shutdown is refused to everyone but an operator
//     (unless Access.ShutDownOK).
//
// Each step notes what it learnt in the request's audit record (AuditFrom):
// the AM API edge makes that record for every call; another entry point gets
// one from Gate.Audit and finishes it with the outcome, so every request,
// granted or refused, leaves an audit_log row.
type Gate struct {
	auth    Authorizer
	policy  atomic.Pointer[gatePolicy]
	slices  SliceFinder
	auditor Auditor
	now     func() time.Time
}

// gatePolicy is the part of the gate the operator may change while the
// aggregate runs (SetPolicy): replaced whole, so that one request sees one
// version of it.
type gatePolicy struct {
	ops       *OpsPolicy
	operators map[string]bool
}

// GateConfig wires a Gate. Only Authorizer is required: without one every
// request is refused ("no trust configuration").
type GateConfig struct {
	Authorizer Authorizer
	// Ops is the operator's policy (allow/deny, limits, maintenance); nil
	// allows everything.
	Ops *OpsPolicy
	// Operators are user URNs that may still act on a shut-down slice.
	Operators []string
	// Slices finds a slice's shut-down flag (the Store); nil skips step 4.
	Slices SliceFinder
	// Auditor receives the records started by Gate.Audit; nil keeps none.
	Auditor Auditor
	// Now is the clock credentials are checked against; nil means time.Now.
	Now func() time.Time
}

// SliceFinder reads one slice (nil when the aggregate has never seen it).
type SliceFinder interface {
	Slice(ctx context.Context, urn string) (*Slice, error)
}

// NewGate returns the gate of cfg.
func NewGate(cfg GateConfig) *Gate {
	g := &Gate{auth: cfg.Authorizer, slices: cfg.Slices, auditor: cfg.Auditor, now: cfg.Now}
	g.SetPolicy(cfg.Ops, cfg.Operators)
	if g.now == nil {
		g.now = time.Now
	}
	return g
}

// SetPolicy puts a new operator policy and operator list in force (a
// configuration reloaded on SIGHUP), for the requests that reach the gate
// from now on. Requests already past Check keep the decision they got.
func (g *Gate) SetPolicy(ops *OpsPolicy, operators []string) {
	p := &gatePolicy{ops: ops, operators: make(map[string]bool, len(operators))}
	for _, o := range operators {
		p.operators[o] = true
	}
	g.policy.Store(p)
}

// Access is one request at an entry point, as the gate sees it.
type Access struct {
	// Method names the request in messages and in the audit trail: the AM
	// API method ("Allocate"), or the entry point's own verb ("GetData",
	// "Console", "Logs", "SSH").
	Method      string
	Caller      *Caller      // the verified TLS (or SSH) identity
	Credentials []Credential // as the caller passed them
	SpeakingFor string       // geni_speaking_for, if any
	// Slice is the slice URN the request acts on; "" when it acts on none
	// (ListResources).
	Slice string
	// Privileges are the gcf operation names required, all of them, e.g.
	// "createsliver", "getsliceresources".
	Privileges []string
	// NewWork marks a request that starts something new (Allocate): it is
	// refused while the aggregate is in maintenance. Reading what exists
	// (Describe, Status, /data, logs) stays open in maintenance.
	NewWork bool
	// ShutDownOK skips the gate's shut-down check: for Shutdown itself
	// (which answers true again), and for Allocate and Delete, whose store
	// transactions refuse a shut-down slice themselves, race-free and
	// without a round trip of their own (AllocateTx.Operator,
	// DeleteTx.Operator).
	ShutDownOK bool
	// IdentityOnly marks a request that carries no credentials because the
	// entry point has established who Caller is itself (a console viewer by
	// the certificate the TLS layer verified; an SSH user by key): step 1
	// then only requires Caller, whose URN is the user, and which slices that
	// user may see stays the entry point's rule. The operator's allow/deny
	// lists, maintenance, the shut-down rule and the audit row apply as to
	// any request.
	IdentityOnly bool
}

// Grant is the gate's yes.
type Grant struct {
	*Authorization
	// Operator is set when the user is one of GateConfig.Operators.
	Operator bool
}

// NewLogID returns a short random id that ties a reply, its log lines and
// its audit row together (every entry point quotes it in its errors).
func NewLogID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Check decides acc. A refusal is an *Err: FORBIDDEN naming the failed check
// (credentials, allow/deny, shut-down slice) or UNAVAILABLE (maintenance).
func (g *Gate) Check(ctx context.Context, acc Access) (*Grant, error) {
	rec := AuditFrom(ctx)
	rec.NoteSlice(acc.Slice)
	if g == nil {
		return nil, Errorf(Forbidden, "no trust configuration")
	}
	var authz *Authorization
	switch {
	case acc.IdentityOnly:
		if acc.Caller == nil || acc.Caller.URN == "" {
			return nil, Errorf(Forbidden, "%s needs a client identity", acc.Method)
		}
		authz = &Authorization{User: acc.Caller.URN}
	case g.auth == nil:
		return nil, Errorf(Forbidden, "no trust configuration")
	default:
		var err error
		authz, err = g.auth.Authorize(AuthRequest{Method: acc.Method, Caller: acc.Caller, Credentials: acc.Credentials,
			Target: acc.Slice, Privileges: acc.Privileges, SpeakingFor: acc.SpeakingFor, Now: g.now()})
		if err != nil {
			return nil, err
		}
		if authz == nil {
			return nil, Errorf(Forbidden, "credentials do not authorize %s", acc.Method)
		}
	}
	rec.NoteAuthorization(authz)
	policy := g.policy.Load()
	if err := policy.ops.checkAccess(authz); err != nil {
		return nil, err
	}
	if acc.NewWork {
		if msg := policy.ops.maintenance(ctx, g.now()); msg != "" {
			return nil, Errorf(Unavailable, "the aggregate is in maintenance and accepts no new allocations: %s", msg)
		}
	}
	grant := &Grant{Authorization: authz, Operator: policy.operators[authz.User]}
	if acc.Slice != "" && !acc.ShutDownOK && !grant.Operator && g.slices != nil {
		sl, err := g.slices.Slice(ctx, acc.Slice)
		if err != nil {
			return nil, err
		}
		if sl != nil && sl.ShutDown {
			return nil, SliceShutDown(acc.Slice)
		}
	}
	return grant, nil
}

// Limits applies the operator's sliver limits to n new slivers for grant's
// user on slice (OpsPolicy.MaxSliversPerUser, MaxSliversPerProject).
func (g *Gate) Limits(ctx context.Context, grant *Grant, slice string, n int) error {
	if g == nil {
		return nil
	}
	return g.policy.Load().ops.checkLimits(ctx, grant.Authorization, slice, n)
}

// IsOperator reports whether user is one of the operators.
func (g *Gate) IsOperator(user string) bool { return g != nil && g.policy.Load().operators[user] }

// Audit starts the audit record of a request at an entry point that is not
// the AM API edge (which makes its own). Pass the returned context to Check;
// call finish once with the request's outcome (nil for success): it fills in
// the code, the caller-safe message and the duration and hands the record to
// the Auditor. An empty logID gets a fresh one (AuditFrom(ctx).LogID).
func (g *Gate) Audit(ctx context.Context, method, logID, remoteAddr string, caller *Caller) (_ context.Context, finish func(error)) {
	started := time.Now()
	if logID == "" {
		logID = NewLogID()
	}
	rec := &AuditRecord{At: started, LogID: logID, Method: method, RemoteAddr: remoteAddr}
	if caller != nil {
		rec.Caller = caller.URN
	}
	return WithAudit(ctx, rec), func(err error) {
		if g == nil || g.auditor == nil {
			return
		}
		rec.Code = CodeOf(err)
		if err != nil && rec.Code == Success {
			rec.Code = ServerError
		}
		rec.Output = MessageOf(err)
		rec.Duration = time.Since(started)
		g.auditor.Audit(rec)
	}
}
