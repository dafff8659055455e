package store_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/amtest"
	"github.com/geniam/geniam/store"
	"github.com/geniam/geniam/store/storetest"
	"github.com/jackc/pgx/v5/pgxpool"
)

const (
	authority = "geniam.test"
	amURN     = "urn:publicid:IDN+geniam.test+authority+am"
	alice     = "urn:publicid:IDN+ch.test+user+alice"
	operator  = "urn:publicid:IDN+ch.test+user+ops"
)

var nodeURN, sliceURN = amtest.NodeURN, amtest.SliceURN

// allowAll grants everything to the caller, with a credential valid one day,
// and records what it was asked.
type allowAll struct {
	mu    sync.Mutex
	now   func() time.Time
	asked []am.AuthRequest
}

func (a *allowAll) Authorize(req am.AuthRequest) (*am.Authorization, error) {
	a.mu.Lock()
	a.asked = append(a.asked, req)
	a.mu.Unlock()
	return &am.Authorization{User: req.Caller.URN, Expires: a.now().Add(24 * time.Hour)}, nil
}

func (a *allowAll) last() am.AuthRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.asked[len(a.asked)-1]
}

// The fakes and request builders are am/amtest's, shared with its
// in-memory lifecycle tests.
type fakeRSpecs = amtest.RSpecs

var (
	request   = amtest.Request
	container = amtest.Container
	exclusive = amtest.Exclusive
)

type clock = amtest.Clock

type env struct {
	t     *testing.T
	ctx   context.Context
	url   string
	pool  *pgxpool.Pool
	store *store.Store
	agg   *am.Aggregate
	auth  *allowAll
	clock *clock
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	st, url := storetest.Open(t)
	e := &env{t: t, ctx: ctx, url: url, pool: st.Pool(), store: st,
		clock: amtest.NewClock(time.Now().UTC().Truncate(time.Second))}
	e.auth = &allowAll{now: e.clock.Now}
	e.agg = e.aggregate(st, am.AggregateConfig{URL: "https://127.0.0.1:8001/", Operators: []string{operator}})
	return e
}

// aggregate is an aggregate on st (the env's store or a second process's)
// with the env's authorizer and clock; cfg.URN is amURN when unset.
func (e *env) aggregate(st am.Store, cfg am.AggregateConfig) *am.Aggregate {
	if cfg.URN == "" {
		cfg.URN = amURN
	}
	return am.NewAggregate(cfg, st, e.auth, fakeRSpecs{}, e.clock.Now)
}

// wallClockAggregate allows every call and runs on the real clock: for the
// benchmarks and races, which take real time.
func wallClockAggregate(st am.Store, cfg am.AggregateConfig) *am.Aggregate {
	if cfg.URN == "" {
		cfg.URN = amURN
	}
	return am.NewAggregate(cfg, st, &allowAll{now: time.Now}, fakeRSpecs{}, time.Now)
}

// sql runs statements as an operator would in psql.
func (e *env) sql(q string, args ...any) {
	e.t.Helper()
	if _, err := e.pool.Exec(e.ctx, q, args...); err != nil {
		e.t.Fatalf("%s: %v", q, err)
	}
}

// hold runs q in a transaction of its own, as another session would, and
// keeps the transaction open, with the locks q took, until release (or the
// end of the test) rolls it back.
func (e *env) hold(q string) (release func() error) {
	e.t.Helper()
	tx, err := e.pool.Begin(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	release = func() error { return tx.Rollback(context.Background()) }
	e.t.Cleanup(func() { _ = release() })
	if _, err := tx.Exec(e.ctx, q); err != nil {
		e.t.Fatalf("%s: %v", q, err)
	}
	return release
}

func (e *env) addNode(name string, capacity int, types ...string) {
	e.t.Helper()
	if len(types) == 0 {
		types = []string{"container"}
	}
	e.sql("INSERT INTO nodes (name, component_urn, agent_url, sliver_types, capacity) VALUES ($1, $2, $3, $4, $5)",
		name, nodeURN(name), "https://127.0.0.1:1887", types, capacity)
}

func (e *env) call(user string, opts am.Options) am.Call {
	return am.Call{Caller: &am.Caller{URN: user}, Options: opts}
}

var geni3 = am.Options{RSpecVersion: &am.RSpecVersion{Type: "GENI", Version: "3"}}

func wantCode(t *testing.T, err error, code am.Code, contains ...string) {
	t.Helper()
	if am.CodeOf(err) != code {
		t.Fatalf("got %v (code %v), want %v", err, am.CodeOf(err), code)
	}
	msg := am.MessageOf(err)
	for _, c := range contains {
		if !strings.Contains(msg, c) {
			t.Errorf("message %q does not mention %q", msg, c)
		}
	}
}

func (e *env) allocate(slice string, reqs ...am.SliverRequest) *am.AllocateResult {
	e.t.Helper()
	res, err := e.agg.Allocate(e.ctx, e.call(alice, am.Options{}), slice, request(reqs...))
	if err != nil {
		e.t.Fatalf("Allocate: %v", err)
	}
	return res
}

// provision provisions urns as alice with geni_rspec_version set; any error
// fails the test.
func (e *env) provision(urns ...string) *am.AllocateResult {
	e.t.Helper()
	res, err := e.agg.Provision(e.ctx, e.call(alice, geni3), urns)
	if err != nil {
		e.t.Fatalf("Provision: %v", err)
	}
	return res
}

// provisionedContainer allocates one container sliver on node in the slice
// called name and provisions it; it returns the sliver's URN.
func (e *env) provisionedContainer(name, node string) string {
	e.t.Helper()
	urn := e.allocate(sliceURN(name), container("a", node)).Slivers[0].URN
	e.provision(urn)
	return urn
}

func (e *env) count(q string, args ...any) int {
	e.t.Helper()
	var n int
	if err := e.pool.QueryRow(e.ctx, q, args...).Scan(&n); err != nil {
		e.t.Fatalf("%s: %v", q, err)
	}
	return n
}

func TestLifecycle(t *testing.T) {
	e := newEnv(t)
	e.addNode("node1", 4)
	e.addNode("node2", 4)
	slice := sliceURN("life")
	now := e.clock.Now()

	res := e.allocate(slice, container("a", ""), container("b", "node2"))
	if len(res.Slivers) != 2 || !strings.Contains(res.RSpec, `client_id="a"`) || !strings.Contains(res.RSpec, nodeURN("node2")) {
		t.Fatalf("Allocate result %+v", res)
	}
	for _, s := range res.Slivers {
		if s.Allocation != am.Allocated || !s.Expires.Equal(now.Add(10*time.Minute)) {
			t.Errorf("allocated sliver %+v", s)
		}
		if !strings.HasPrefix(s.URN, "urn:publicid:IDN+geniam.test+sliver+") {
			t.Errorf("sliver URN %s", s.URN)
		}
	}
	if r := e.auth.last(); r.Target != slice || strings.Join(r.Privileges, ",") != "createsliver" {
		t.Errorf("Allocate asked %+v", r)
	}
	// Spread: the unbound sliver went to the emptier node1.
	if n := e.count("SELECT count(*) FROM slivers_by_node WHERE node_name = 'node1'"); n != 1 {
		t.Errorf("node1 holds %d slivers", n)
	}

	d, err := e.agg.Describe(e.ctx, e.call(alice, geni3), []string{slice})
	if err != nil || len(d.Slivers) != 2 || d.SliceURN != slice {
		t.Fatalf("Describe %+v %v", d, err)
	}
	if d.Slivers[0].Operational != am.PendingAllocation {
		t.Errorf("allocated sliver operational %s", d.Slivers[0].Operational)
	}

	opts := geni3
	opts.UsersSet = true
	opts.Users = []am.User{{URN: alice, Keys: []string{"ssh-ed25519 AAAA alice"}}}
	p, err := e.agg.Provision(e.ctx, e.call(alice, opts), []string{slice})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range p.Slivers {
		// Provisioned lifetime (7 days) capped by the credential (1 day).
		if s.Allocation != am.Provisioned || s.Operational != am.NotReady || !s.Expires.Equal(now.Add(24*time.Hour)) {
			t.Errorf("provisioned sliver %+v", s)
		}
	}
	if n := e.count("SELECT count(*) FROM slivers WHERE users @> '[{\"urn\":\"" + alice + "\"}]'"); n != 2 {
		t.Errorf("geni_users recorded on %d slivers", n)
	}

	first := res.Slivers[0].URN
	st, err := e.agg.PerformOperationalAction(e.ctx, e.call(alice, am.Options{}), []string{first}, am.ActionStart)
	if err != nil || st[0].Operational != am.Ready {
		t.Fatalf("geni_start: %+v %v", st, err)
	}
	st, err = e.agg.PerformOperationalAction(e.ctx, e.call(alice, am.Options{}), []string{first}, am.ActionStop)
	if err != nil || st[0].Operational != am.NotReady {
		t.Fatalf("geni_stop: %+v %v", st, err)
	}
	_, err = e.agg.PerformOperationalAction(e.ctx, e.call(alice, am.Options{}), []string{first}, am.ActionRestart)
	wantCode(t, err, am.Unsupported, "geni_notready")

	renewTo := now.Add(12 * time.Hour)
	rn, err := e.agg.Renew(e.ctx, e.call(alice, am.Options{}), []string{slice}, renewTo)
	if err != nil || len(rn) != 2 || !rn[0].Expires.Equal(renewTo) {
		t.Fatalf("Renew %+v %v", rn, err)
	}

	del, err := e.agg.Delete(e.ctx, e.call(alice, am.Options{}), []string{first})
	if err != nil || len(del) != 1 || del[0].Allocation != am.Unallocated {
		t.Fatalf("Delete %+v %v", del, err)
	}
	sr, err := e.agg.Status(e.ctx, e.call(alice, am.Options{}), []string{slice})
	if err != nil || len(sr.Slivers) != 1 || sr.Slivers[0].URN != res.Slivers[1].URN || !sr.Slivers[0].ErrorSet {
		t.Fatalf("Status after Delete %+v %v", sr, err)
	}
	_, err = e.agg.Status(e.ctx, e.call(alice, am.Options{}), []string{first})
	wantCode(t, err, am.SearchFailed, first)

	// History: allocate, provision, start, stop, renew, delete for the first.
	rows, err := e.pool.Query(e.ctx, "SELECT event || '/' || allocation_state FROM sliver_history WHERE sliver_urn = $1 ORDER BY id", first)
	if err != nil {
		t.Fatal(err)
	}
	var events []string
	for rows.Next() {
		var s string
		_ = rows.Scan(&s)
		events = append(events, s)
	}
	want := "Allocate/geni_allocated Provision/geni_provisioned geni_start/geni_provisioned geni_stop/geni_provisioned Renew/geni_provisioned Delete/geni_unallocated"
	if got := strings.Join(events, " "); got != want {
		t.Errorf("history\n got %s\nwant %s", got, want)
	}
	if n := e.count("SELECT count(DISTINCT actor) FROM sliver_history WHERE actor = $1", alice); n != 1 {
		t.Errorf("history actor not recorded")
	}
}

func TestPrivilegesPerMethod(t *testing.T) {
	e := newEnv(t)
	e.addNode("node1", 4)
	slice := sliceURN("priv")
	res := e.allocate(slice, container("a", ""))
	u := []string{res.Slivers[0].URN}
	c := e.call(alice, geni3)
	cases := []struct {
		name string
		call func() error
		priv string
	}{
		{"Describe", func() error { _, err := e.agg.Describe(e.ctx, c, u); return err }, "getsliceresources"},
		{"Status", func() error { _, err := e.agg.Status(e.ctx, c, u); return err }, "getsliceresources"},
		{"Renew", func() error { _, err := e.agg.Renew(e.ctx, c, u, e.clock.Now().Add(time.Hour)); return err }, "renewsliver"},
		{"Provision", func() error { _, err := e.agg.Provision(e.ctx, c, u); return err }, "createsliver"},
		{"POA", func() error {
			_, err := e.agg.PerformOperationalAction(e.ctx, c, u, am.ActionStart)
			return err
		}, "createsliver"},
		{"Delete", func() error { _, err := e.agg.Delete(e.ctx, c, u); return err }, "deleteslice"},
		{"Shutdown", func() error { return e.agg.Shutdown(e.ctx, c, slice) }, "shutdown"},
	}
	for _, tc := range cases {
		if err := tc.call(); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		r := e.auth.last()
		if r.Target != slice || strings.Join(r.Privileges, ",") != tc.priv || r.Caller.URN != alice {
			t.Errorf("%s asked %+v", tc.name, r)
		}
	}
	if _, err := e.agg.ListResources(e.ctx, e.call(alice, geni3)); err != nil {
		t.Fatal(err)
	}
	if r := e.auth.last(); r.Target != "" || len(r.Privileges) != 0 || r.Method != "ListResources" {
		t.Errorf("ListResources asked %+v", r)
	}
}

func TestAllocateRefusals(t *testing.T) {
	e := newEnv(t)
	e.addNode("node1", 2, "container", "exclusive")
	e.addNode("ex1", 1, "exclusive")
	e.addNode("down", 4)
	e.sql("UPDATE nodes SET available = false, unavailable_reason = 'disk replacement' WHERE name = 'down'")
	e.addNode("drainme", 4)
	e.sql("UPDATE nodes SET drained = true WHERE name = 'drainme'")
	slice := sliceURN("refuse")
	e.allocate(slice, container("a", "node1"))
	c := e.call(alice, am.Options{})
	past := e.clock.Now().Add(-time.Minute)

	cases := []struct {
		name  string
		slice string
		rspec string
		opts  am.Options
		code  am.Code
		says  []string
	}{
		{"not a slice URN", nodeURN("node1"), request(container("x", "")), am.Options{}, am.BadArgs, []string{`has type "node", want slice`}},
		{"malformed request", slice, "<rspec", am.Options{}, am.BadArgs, nil},
		{"empty request", slice, "[]", am.Options{}, am.BadArgs, []string{"no nodes"}},
		{"duplicate client_id", slice, request(container("x", ""), container("x", "")), am.Options{}, am.BadArgs, []string{`"x"`}},
		{"client_id already in slice", slice, request(container("a", "")), am.Options{}, am.AlreadyExists, []string{`"a"`, slice}},
		{"bound node full", slice, request(container("y", "node1"), container("z", "node1")), am.Options{}, am.TooBig, []string{"node1", "full"}},
		{"bound node unavailable", slice, request(container("y", "down")), am.Options{}, am.Unavailable, []string{"down", "disk replacement"}},
		{"bound node drained", slice, request(container("y", "drainme")), am.Options{}, am.Unavailable, []string{"drainme", "drained"}},
		{"unknown node", slice, request(container("y", "nosuch")), am.Options{}, am.BadArgs, []string{"nosuch"}},
		{"type not offered", slice, request(container("y", "ex1")), am.Options{}, am.BadArgs, []string{"ex1", "container"}},
		{"exclusive on used node", slice, request(exclusive("y", "node1")), am.Options{}, am.TooBig, []string{"node1", "in use"}},
		{"unbound does not fit", slice, request(container("y", ""), container("z", ""), container("w", "")), am.Options{}, am.TooBig,
			[]string{"node1: 2 of 2", "down: unavailable (disk replacement)", "ex1: no container"}},
		{"end time in past", slice, request(container("y", "")), am.Options{EndTime: &past}, am.BadArgs, []string{"geni_end_time"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c.Options = tc.opts
			_, err := e.agg.Allocate(e.ctx, c, tc.slice, tc.rspec)
			wantCode(t, err, tc.code, tc.says...)
		})
	}
	// Nothing of the refused requests was kept.
	if n := e.count("SELECT count(*) FROM slivers"); n != 1 {
		t.Errorf("%d slivers after refusals, want 1", n)
	}
	// Exclusive takes every slot of its node.
	e.allocate(sliceURN("ex"), exclusive("whole", ""))
	if n := e.count("SELECT count(*) FROM node_slots WHERE node_name = 'ex1'"); n != 1 {
		t.Errorf("exclusive slots %d", n)
	}
}

func TestAllocateEndTimeAndGeniMany(t *testing.T) {
	e := newEnv(t)
	e.addNode("node1", 4)
	slice := sliceURN("end")
	now := e.clock.Now()
	end := now.Add(5 * time.Minute)
	res, err := e.agg.Allocate(e.ctx, e.call(alice, am.Options{EndTime: &end}), slice, request(container("a", "")))
	if err != nil || !res.Slivers[0].Expires.Equal(end) {
		t.Fatalf("Allocate with geni_end_time: %+v %v", res, err)
	}
	// geni_many: a second Allocate adds to the slice; its manifest has only the new sliver.
	res2 := e.allocate(slice, container("b", ""))
	if len(res2.Slivers) != 1 || strings.Contains(res2.RSpec, `client_id="a"`) {
		t.Fatalf("second Allocate %+v", res2)
	}
	// Provision honours the geni_end_time asked at Allocate for a (5 min),
	// the provisioned default capped by the credential for b.
	p := e.provision(slice)
	got := map[string]time.Time{}
	for _, s := range p.Slivers {
		got[s.URN] = s.Expires
	}
	if !got[res.Slivers[0].URN].Equal(end) || !got[res2.Slivers[0].URN].Equal(now.Add(24*time.Hour)) {
		t.Errorf("provision expiries %v", got)
	}
}

func TestDescribeStatusURNs(t *testing.T) {
	e := newEnv(t)
	e.addNode("node1", 4)
	// A slice with no slivers here: success, empty manifest, no slivers.
	d, err := e.agg.Describe(e.ctx, e.call(alice, geni3), []string{sliceURN("empty")})
	if err != nil || len(d.Slivers) != 0 || d.Slivers == nil || !strings.Contains(d.RSpec, `type="manifest"`) {
		t.Fatalf("Describe empty slice %+v %v", d, err)
	}
	s, err := e.agg.Status(e.ctx, e.call(alice, geni3), []string{sliceURN("empty")})
	if err != nil || len(s.Slivers) != 0 {
		t.Fatalf("Status empty slice %+v %v", s, err)
	}
	res := e.allocate(sliceURN("one"), container("a", ""))
	other := e.allocate(sliceURN("two"), container("a", ""))
	cases := []struct {
		name string
		urns []string
		opts am.Options
		code am.Code
	}{
		{"unknown sliver", []string{"urn:publicid:IDN+geniam.test+sliver+INVALID"}, geni3, am.SearchFailed},
		{"node URN", []string{nodeURN("node1")}, geni3, am.BadArgs},
		{"not a URN", []string{"hello"}, geni3, am.BadArgs},
		{"no URNs", nil, geni3, am.BadArgs},
		{"two slices", []string{sliceURN("one"), sliceURN("two")}, geni3, am.BadArgs},
		{"slivers of two slices", []string{res.Slivers[0].URN, other.Slivers[0].URN}, geni3, am.BadArgs},
		{"no rspec version", []string{sliceURN("one")}, am.Options{}, am.BadArgs},
		{"bad rspec version", []string{sliceURN("one")}, am.Options{RSpecVersion: &am.RSpecVersion{Type: "ProtoGENI", Version: "2"}}, am.BadVersion},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.agg.Describe(e.ctx, e.call(alice, tc.opts), tc.urns)
			wantCode(t, err, tc.code)
		})
	}
	d, err = e.agg.Describe(e.ctx, e.call(alice, geni3), []string{res.Slivers[0].URN})
	if err != nil || len(d.Slivers) != 1 || d.SliceURN != sliceURN("one") {
		t.Fatalf("Describe by sliver %+v %v", d, err)
	}
}

func TestRenewPolicy(t *testing.T) {
	e := newEnv(t)
	e.addNode("node1", 4)
	slice := sliceURN("renew")
	res := e.allocate(slice, container("a", ""))
	now := e.clock.Now()
	c := e.call(alice, am.Options{})
	urn := []string{res.Slivers[0].URN}

	// Allocated: the hold cap is 2 h.
	_, err := e.agg.Renew(e.ctx, c, urn, now.Add(3*time.Hour))
	wantCode(t, err, am.OutOfRange, "maximum hold")
	st, err := e.agg.Renew(e.ctx, c, urn, now.Add(time.Hour))
	if err != nil || !st[0].Expires.Equal(now.Add(time.Hour)) || st[0].Allocation != am.Allocated {
		t.Fatalf("renew allocated: %+v %v", st, err)
	}
	e.provision(urn...)
	_, err = e.agg.Renew(e.ctx, c, urn, now.Add(-time.Minute))
	wantCode(t, err, am.OutOfRange, "not in the future")
	// Beyond the credential (1 day).
	_, err = e.agg.Renew(e.ctx, c, urn, now.Add(48*time.Hour))
	wantCode(t, err, am.OutOfRange, "slice credential")
	alap := e.call(alice, am.Options{ExtendALAP: true})
	st, err = e.agg.Renew(e.ctx, alap, urn, now.Add(48*time.Hour))
	if err != nil || !st[0].Expires.Equal(now.Add(24*time.Hour)) {
		t.Fatalf("extend_alap: %+v %v", st, err)
	}
}

func TestBestEffort(t *testing.T) {
	e := newEnv(t)
	e.addNode("node1", 4)
	slice := sliceURN("be")
	res := e.allocate(slice, container("a", ""), container("b", ""))
	a, b := res.Slivers[0].URN, res.Slivers[1].URN
	e.provision(a)
	// Without best effort: a is already provisioned, so nothing changes.
	_, err := e.agg.Provision(e.ctx, e.call(alice, geni3), []string{a, b})
	wantCode(t, err, am.Unsupported, a)
	if n := e.count("SELECT count(*) FROM slivers WHERE allocation_state = 'geni_allocated'"); n != 1 {
		t.Fatalf("all-or-nothing Provision changed state: %d allocated", n)
	}
	opts := geni3
	opts.BestEffort = true
	p, err := e.agg.Provision(e.ctx, e.call(alice, opts), []string{a, b})
	if err != nil || len(p.Slivers) != 2 {
		t.Fatalf("best-effort Provision %+v %v", p, err)
	}
	for _, s := range p.Slivers {
		switch s.URN {
		case a:
			if !strings.HasPrefix(s.Error, "UNSUPPORTED") {
				t.Errorf("a: %+v", s)
			}
		case b:
			if s.Error != "" || s.Allocation != am.Provisioned {
				t.Errorf("b: %+v", s)
			}
		}
	}
	if strings.Contains(p.RSpec, a) || !strings.Contains(p.RSpec, b) {
		t.Errorf("manifest should cover only b: %s", p.RSpec)
	}
	// POA best effort: start a, then start both with one allocated sliver c.
	c := e.allocate(slice, container("c", "")).Slivers[0].URN
	_, err = e.agg.PerformOperationalAction(e.ctx, e.call(alice, am.Options{}), []string{a, c}, am.ActionStart)
	wantCode(t, err, am.Unsupported, "geni_allocated")
	st, err := e.agg.PerformOperationalAction(e.ctx, e.call(alice, am.Options{BestEffort: true}), []string{a, c}, am.ActionStart)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st {
		if (s.URN == a) != (s.Error == "") {
			t.Errorf("POA best effort %+v", s)
		}
	}
	// Renew best effort: one beyond... all get the same time, so use Delete.
	del, err := e.agg.Delete(e.ctx, e.call(alice, am.Options{BestEffort: true}), []string{a, c})
	if err != nil || len(del) != 2 {
		t.Fatalf("Delete best effort %+v %v", del, err)
	}
	// Renew best effort with one expired sliver.
	e.sql("UPDATE slivers SET expires_at = now() - interval '1 minute' WHERE urn = $1", b)
	d := e.allocate(slice, container("d", "")).Slivers[0].URN
	_, err = e.agg.Renew(e.ctx, e.call(alice, am.Options{}), []string{b, d}, e.clock.Now().Add(time.Hour))
	wantCode(t, err, am.Expired, b)
	rn, err := e.agg.Renew(e.ctx, e.call(alice, am.Options{BestEffort: true}), []string{b, d}, e.clock.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range rn {
		if (s.URN == b) != strings.HasPrefix(s.Error, "EXPIRED") {
			t.Errorf("Renew best effort %+v", s)
		}
	}
}

func TestOperationalActions(t *testing.T) {
	e := newEnv(t)
	e.addNode("node1", 4)
	slice := sliceURN("poa")
	res := e.allocate(slice, container("a", ""))
	urn := []string{res.Slivers[0].URN}
	c := e.call(alice, am.Options{})
	for _, action := range []string{"", "random_action"} {
		_, err := e.agg.PerformOperationalAction(e.ctx, c, []string{slice}, action)
		wantCode(t, err, am.BadArgs, "geni_start", "geniam_fetch_data")
	}
	_, err := e.agg.PerformOperationalAction(e.ctx, c, urn, am.ActionStart)
	wantCode(t, err, am.Unsupported, "geni_allocated")
	e.provision(urn...)
	_, err = e.agg.PerformOperationalAction(e.ctx, c, urn, am.ActionUpdateUsers)
	wantCode(t, err, am.BadArgs, "geni_users")
	users := am.Options{UsersSet: true, Users: []am.User{{URN: "urn:publicid:IDN+ch.test+user+bob", Keys: []string{"k"}}}}
	_, err = e.agg.PerformOperationalAction(e.ctx, e.call(alice, users), urn, am.ActionUpdateUsers)
	wantCode(t, err, am.Refused, "geni_ready")
	if _, err := e.agg.PerformOperationalAction(e.ctx, c, []string{slice}, am.ActionStart); err != nil {
		t.Fatal(err)
	}
	st, err := e.agg.PerformOperationalAction(e.ctx, e.call(alice, users), urn, am.ActionUpdateUsers)
	if err != nil || st[0].Operational != am.Ready {
		t.Fatalf("update_users %+v %v", st, err)
	}
	if n := e.count("SELECT jsonb_array_length(users) FROM slivers WHERE urn = $1", urn[0]); n != 1 {
		t.Errorf("users after update: %d", n)
	}
	st, err = e.agg.PerformOperationalAction(e.ctx, c, urn, am.ActionFetchData)
	if err != nil || st[0].ResourceMsg == "" {
		t.Fatalf("fetch_data %+v %v", st, err)
	}
	st, err = e.agg.PerformOperationalAction(e.ctx, c, urn, am.ActionRestart)
	if err != nil || st[0].Operational != am.Ready {
		t.Fatalf("restart %+v %v", st, err)
	}
}

func TestShutdown(t *testing.T) {
	e := newEnv(t)
	e.addNode("node1", 4)
	slice := sliceURN("shut")
	res := e.allocate(slice, container("a", ""), container("b", ""))
	a := res.Slivers[0].URN
	e.provision(a)
	if _, err := e.agg.PerformOperationalAction(e.ctx, e.call(alice, am.Options{}), []string{a}, am.ActionStart); err != nil {
		t.Fatal(err)
	}
	c := e.call(alice, geni3)
	for i := 0; i < 2; i++ { // idempotent
		if err := e.agg.Shutdown(e.ctx, c, slice); err != nil {
			t.Fatalf("Shutdown #%d: %v", i+1, err)
		}
	}
	// Kept, stopped.
	if n := e.count("SELECT count(*) FROM slivers WHERE slice_urn = $1", slice); n != 2 {
		t.Fatalf("Shutdown deleted slivers: %d left", n)
	}
	if n := e.count("SELECT count(*) FROM slivers WHERE urn = $1 AND operational_state = 'geni_notready'", a); n != 1 {
		t.Errorf("provisioned sliver not stopped")
	}
	calls := map[string]func(am.Call) error{
		"Allocate": func(c am.Call) error {
			_, err := e.agg.Allocate(e.ctx, c, slice, request(container("x", "")))
			return err
		},
		"Describe":  func(c am.Call) error { _, err := e.agg.Describe(e.ctx, c, []string{slice}); return err },
		"Status":    func(c am.Call) error { _, err := e.agg.Status(e.ctx, c, []string{a}); return err },
		"Provision": func(c am.Call) error { _, err := e.agg.Provision(e.ctx, c, []string{slice}); return err },
		"Renew": func(c am.Call) error {
			_, err := e.agg.Renew(e.ctx, c, []string{slice}, e.clock.Now().Add(time.Hour))
			return err
		},
		"POA": func(c am.Call) error {
			_, err := e.agg.PerformOperationalAction(e.ctx, c, []string{slice}, am.ActionStart)
			return err
		},
		"Delete": func(c am.Call) error { _, err := e.agg.Delete(e.ctx, c, []string{slice}); return err },
	}
	for name, call := range calls {
		err := call(c)
		if am.CodeOf(err) != am.Forbidden || !strings.Contains(am.MessageOf(err), "shut down") {
			t.Errorf("%s on a shut-down slice: %v", name, err)
		}
	}
	// The reaper keeps them for forensics.
	e.clock.Add(48 * time.Hour)
	if n, err := e.agg.NewReaper(time.Second).Sweep(e.ctx); err != nil || n != 0 {
		t.Errorf("reaper on shut-down slice: %d %v", n, err)
	}
	// An operator may still look, and restore.
	if _, err := e.agg.Status(e.ctx, e.call(operator, geni3), []string{slice}); err != nil {
		t.Errorf("operator Status: %v", err)
	}
	if err := e.store.RestoreSlice(e.ctx, slice, operator); err != nil {
		t.Fatal(err)
	}
	if _, err := e.agg.Status(e.ctx, c, []string{slice}); err != nil {
		t.Errorf("Status after restore: %v", err)
	}
	// Shutdown of a slice never seen: true, and it stays blocked.
	fresh := sliceURN("never")
	if err := e.agg.Shutdown(e.ctx, c, fresh); err != nil {
		t.Fatal(err)
	}
	_, err := e.agg.Allocate(e.ctx, c, fresh, request(container("x", "")))
	wantCode(t, err, am.Forbidden, "shut down")
	err = e.agg.Shutdown(e.ctx, c, nodeURN("node1"))
	wantCode(t, err, am.BadArgs)
}

func TestDeleteFreesSlotAtOnce(t *testing.T) {
	e := newEnv(t)
	e.addNode("solo", 1)
	s1, s2 := sliceURN("one"), sliceURN("two")
	e.allocate(s1, container("a", ""))
	_, err := e.agg.Allocate(e.ctx, e.call(alice, am.Options{}), s2, request(container("b", "")))
	wantCode(t, err, am.TooBig, "solo")
	if _, err := e.agg.Delete(e.ctx, e.call(alice, am.Options{}), []string{s1}); err != nil {
		t.Fatal(err)
	}
	e.allocate(s2, container("b", ""))
	// The slice with nothing left: Delete, Status, Renew, POA give empty lists.
	if st, err := e.agg.Delete(e.ctx, e.call(alice, am.Options{}), []string{s1}); err != nil || len(st) != 0 {
		t.Errorf("Delete on empty slice: %+v %v", st, err)
	}
}

// recorder is a Provisioner that notes what it was told.
type recorder struct {
	mu     sync.Mutex
	events []string
}

func (r *recorder) note(what string, slivers []am.Sliver) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, fmt.Sprintf("%s:%d", what, len(slivers)))
}
func (r *recorder) Provisioned(_ context.Context, s []am.Sliver) { r.note("provisioned", s) }
func (r *recorder) Acted(_ context.Context, action string, s []am.Sliver) {
	r.note(action, s)
}
func (r *recorder) Deleted(_ context.Context, s []am.Sliver) { r.note("deleted", s) }
func (r *recorder) ShutDown(_ context.Context, slice string) { r.note("shutdown", nil) }

func TestProvisionerHook(t *testing.T) {
	e := newEnv(t)
	e.addNode("node1", 4)
	rec := &recorder{}
	agg := e.aggregate(e.store, am.AggregateConfig{Provisioner: rec})
	c := e.call(alice, geni3)
	slice := sliceURN("hook")
	res, err := agg.Allocate(e.ctx, c, slice, request(container("a", ""), container("b", ""), container("c", "")))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := agg.Provision(e.ctx, c, []string{res.Slivers[0].URN, res.Slivers[1].URN}); err != nil {
		t.Fatal(err)
	}
	if _, err := agg.PerformOperationalAction(e.ctx, c, []string{res.Slivers[0].URN}, am.ActionStart); err != nil {
		t.Fatal(err)
	}
	if _, err := agg.Delete(e.ctx, c, []string{res.Slivers[0].URN}); err != nil {
		t.Fatal(err)
	}
	e.clock.Add(time.Hour) // c's allocation expires
	if _, err := agg.NewReaper(time.Second).Sweep(e.ctx); err != nil {
		t.Fatal(err)
	}
	if err := agg.Shutdown(e.ctx, c, slice); err != nil {
		t.Fatal(err)
	}
	got := strings.Join(rec.events, " ")
	if want := "provisioned:2 geni_start:1 deleted:1 deleted:1 shutdown:0"; got != want {
		t.Errorf("provisioner heard %q, want %q", got, want)
	}
}

// onlySlice authorizes its one slice and refuses every other target the way
// the credential checks do, naming the target.
type onlySlice struct{ slice string }

func (o onlySlice) Authorize(req am.AuthRequest) (*am.Authorization, error) {
	if req.Target != o.slice {
		return nil, &am.Err{Code: am.Forbidden, Op: req.Method, URN: req.Target, Msg: "target is " + o.slice + ", not " + req.Target}
	}
	return &am.Authorization{User: req.Caller.URN, Expires: time.Now().Add(time.Hour)}, nil
}

// TestRefusalsHideOtherSlices (issue 13, item 8): a caller who names
// another user's slivers is refused without learning the name of their
// slice.
func TestRefusalsHideOtherSlices(t *testing.T) {
	e := newEnv(t)
	e.addNode("node1", 4)
	secret := sliceURN("alices-secret-project")
	res := e.allocate(secret, container("a", ""))
	mine := e.allocate(sliceURN("mallorys"), container("m", ""))
	mallory := am.NewAggregate(am.AggregateConfig{URN: amURN, URL: "https://127.0.0.1:8001/"},
		e.store, onlySlice{sliceURN("mallorys")}, fakeRSpecs{}, e.clock.Now)
	_, err := mallory.Status(e.ctx, e.call("urn:publicid:IDN+geniam.test+user+mallory", geni3), []string{res.Slivers[0].URN})
	wantCode(t, err, am.Forbidden, "the slice of the slivers given")
	if strings.Contains(am.MessageOf(err), secret) {
		t.Fatalf("the refusal names the other user's slice: %q", am.MessageOf(err))
	}
	_, err = mallory.Status(e.ctx, e.call("urn:publicid:IDN+geniam.test+user+mallory", geni3), []string{mine.Slivers[0].URN, res.Slivers[0].URN})
	wantCode(t, err, am.BadArgs, "more than one slice")
	if strings.Contains(am.MessageOf(err), secret) {
		t.Fatalf("the refusal names the other user's slice: %q", am.MessageOf(err))
	}
}
