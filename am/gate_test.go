package am_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/amtest"
)

// TestGate: the order of the checks and what each refusal says, and the
// audit record an entry point other than the AM API gets from Gate.Audit.
func TestGate(t *testing.T) {
	ctx := context.Background()
	slice, other := amtest.SliceURN("g"), amtest.SliceURN("down")
	st := amtest.NewStore()
	if err := st.Shutdown(ctx, other, "op", time.Now()); err != nil {
		t.Fatal(err)
	}
	asked := 0
	auth := &amtest.Authorizer{AuthorizeFunc: func(req am.AuthRequest) (*am.Authorization, error) {
		asked++
		if len(req.Credentials) == 0 {
			return nil, am.Errorf(am.Forbidden, "no credentials passed")
		}
		return &am.Authorization{User: req.Caller.URN}, nil
	}}
	ops := &am.OpsPolicy{}
	var audited []*am.AuditRecord
	gate := am.NewGate(am.GateConfig{Authorizer: auth, Ops: ops, Operators: []string{"urn:publicid:IDN+ch.test+user+op"},
		Slices: st, Auditor: auditFunc(func(r *am.AuditRecord) { audited = append(audited, r) })})
	alice := &am.Caller{URN: amtest.Alice}
	cred := []am.Credential{{Type: "geni_sfa", Version: "3", Value: "<signed-credential/>"}}
	check := func(acc am.Access) error {
		_, err := gate.Check(ctx, acc)
		return err
	}

	if err := check(am.Access{Method: "GetData", Caller: alice, Credentials: cred, Slice: slice}); err != nil {
		t.Fatalf("open gate: %v", err)
	}
	if err := check(am.Access{Method: "GetData", Caller: alice, Slice: slice}); am.CodeOf(err) != am.Forbidden {
		t.Errorf("no credentials: %v", err)
	}
	ops.Deny = []string{"ch.test"}
	if err := check(am.Access{Method: "GetData", Caller: alice, Credentials: cred, Slice: slice}); am.CodeOf(err) != am.Forbidden || !strings.Contains(err.Error(), "deny") {
		t.Errorf("denied authority: %v", err)
	}
	// An entry point that names its caller itself: no credentials asked,
	// the operator's lists apply all the same.
	before := asked
	if err := check(am.Access{Method: "Console", Caller: alice, IdentityOnly: true}); am.CodeOf(err) != am.Forbidden {
		t.Errorf("denied console viewer: %v", err)
	}
	ops.Deny = nil
	if err := check(am.Access{Method: "Console", Caller: alice, IdentityOnly: true}); err != nil || asked != before {
		t.Errorf("console viewer: %v (authorizer asked %d times)", err, asked-before)
	}
	if err := check(am.Access{Method: "Console", IdentityOnly: true}); am.CodeOf(err) != am.Forbidden {
		t.Errorf("identity-only without a caller: %v", err)
	}

	ops.Maintenance = "disks"
	if err := check(am.Access{Method: "Allocate", Caller: alice, Credentials: cred, Slice: slice, NewWork: true}); am.CodeOf(err) != am.Unavailable {
		t.Errorf("new work in maintenance: %v", err)
	}
	if err := check(am.Access{Method: "Describe", Caller: alice, Credentials: cred, Slice: slice}); err != nil {
		t.Errorf("reading in maintenance: %v", err)
	}
	ops.Maintenance = ""

	if err := check(am.Access{Method: "SSH", Caller: alice, IdentityOnly: true, Slice: other}); am.CodeOf(err) != am.Forbidden || !strings.Contains(err.Error(), "shut down") {
		t.Errorf("shut-down slice: %v", err)
	}
	if err := check(am.Access{Method: "Shutdown", Caller: alice, Credentials: cred, Slice: other, ShutDownOK: true}); err != nil {
		t.Errorf("Shutdown of a shut-down slice: %v", err)
	}
	op := &am.Caller{URN: "urn:publicid:IDN+ch.test+user+op"}
	if g, err := gate.Check(ctx, am.Access{Method: "SSH", Caller: op, IdentityOnly: true, Slice: other}); err != nil || !g.Operator {
		t.Errorf("an operator on a shut-down slice: %+v %v", g, err)
	}

	// Gate.Audit: one record per request, with a log id, the outcome and
	// what the checks noted.
	actx, finish := gate.Audit(ctx, "GetData", "", "127.0.0.1:1", alice)
	_, err := gate.Check(actx, am.Access{Method: "GetData", Caller: alice, Slice: slice})
	finish(err)
	if len(audited) != 1 {
		t.Fatalf("%d audit records", len(audited))
	}
	r := audited[0]
	if r.Method != "GetData" || len(r.LogID) != 12 || r.Code != am.Forbidden || r.Caller != amtest.Alice ||
		r.View().SliceURN != slice || !strings.Contains(r.Output, "no credentials") {
		t.Errorf("audit record %+v %+v", r, r.View())
	}
}

type auditFunc func(*am.AuditRecord)

func (f auditFunc) Audit(r *am.AuditRecord) { f(r) }
