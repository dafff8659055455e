package amtest

import (
	"context"
	"testing"
	"time"

	"github.com/geniam/geniam/am"
)

// NewStoreFunc returns an empty store holding nodes, for one subtest.
type NewStoreFunc func(t *testing.T, nodes []am.Node) am.Store

// Alice is the experimenter of the lifecycle tests.
const Alice = "urn:publicid:IDN+ch.test+user+alice"

// Lifecycle runs the aggregate's lifecycle rules against the stores
// newStore makes: the in-memory Store here (TestLifecycleInMemory) and
// PostgreSQL (store's TestLifecycle), so a rule the two disagree on fails in
// one of them.
func Lifecycle(t *testing.T, newStore NewStoreFunc) {
	nodes := []am.Node{
		{Name: "n1", ComponentID: NodeURN("n1"), SliverTypes: []string{am.SliverTypeContainer, am.SliverTypeExclusive}, Capacity: 2, Available: true},
		{Name: "n2", ComponentID: NodeURN("n2"), SliverTypes: []string{am.SliverTypeContainer}, Capacity: 2, Available: true},
	}
	geni3 := am.Options{RSpecVersion: &am.RSpecVersion{Type: "GENI", Version: "3"}}
	call := am.Call{Caller: &am.Caller{URN: Alice}, Options: geni3}
	type env struct {
		ctx   context.Context
		agg   *am.Aggregate
		clock *Clock
		ops   *am.OpsPolicy
	}
	setup := func(t *testing.T) *env {
		clock := NewClock(time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC))
		ops := &am.OpsPolicy{}
		agg := am.NewAggregate(am.AggregateConfig{URN: am.URN{Authority: Authority, Type: "authority", Name: "am"}.String(),
			URL: "https://127.0.0.1:8001/", Ops: ops}, newStore(t, nodes), &Authorizer{}, RSpecs{}, clock.Now)
		return &env{ctx: context.Background(), agg: agg, clock: clock, ops: ops}
	}
	wantCode := func(t *testing.T, what string, err error, code am.Code) {
		t.Helper()
		if am.CodeOf(err) != code {
			t.Fatalf("%s: %v (code %v), want %v", what, err, am.CodeOf(err), code)
		}
	}

	t.Run("allocate provision renew delete", func(t *testing.T) {
		e := setup(t)
		slice := SliceURN("life")
		res, err := e.agg.Allocate(e.ctx, call, slice, Request(Container("a", ""), Container("b", "n2")))
		if err != nil || len(res.Slivers) != 2 {
			t.Fatalf("Allocate: %+v %v", res, err)
		}
		for _, s := range res.Slivers {
			if s.Allocation != am.Allocated {
				t.Errorf("after Allocate %s is %s", s.URN, s.Allocation)
			}
		}
		prov, err := e.agg.Provision(e.ctx, call, []string{slice})
		if err != nil || len(prov.Slivers) != 2 || prov.Slivers[0].Allocation != am.Provisioned {
			t.Fatalf("Provision: %+v %v", prov, err)
		}
		want := e.clock.Now().Add(12 * time.Hour)
		renewed, err := e.agg.Renew(e.ctx, call, []string{slice}, want)
		if err != nil || len(renewed) != 2 || !renewed[0].Expires.Equal(want) {
			t.Fatalf("Renew: %+v %v", renewed, err)
		}
		st, err := e.agg.Status(e.ctx, call, []string{res.Slivers[0].URN})
		if err != nil || len(st.Slivers) != 1 || st.SliceURN != slice {
			t.Fatalf("Status of one sliver: %+v %v", st, err)
		}
		del, err := e.agg.Delete(e.ctx, call, []string{slice})
		if err != nil || len(del) != 2 || del[0].Allocation != am.Unallocated {
			t.Fatalf("Delete: %+v %v", del, err)
		}
		_, err = e.agg.Status(e.ctx, call, []string{res.Slivers[0].URN})
		wantCode(t, "Status of a deleted sliver", err, am.SearchFailed)
	})

	t.Run("capacity and exclusive", func(t *testing.T) {
		e := setup(t)
		slice := SliceURN("full")
		if _, err := e.agg.Allocate(e.ctx, call, slice, Request(Container("a", "n1"), Container("b", "n1"))); err != nil {
			t.Fatal(err)
		}
		_, err := e.agg.Allocate(e.ctx, call, slice, Request(Container("c", "n1")))
		wantCode(t, "a third container on a node of two slots", err, am.TooBig)
		_, err = e.agg.Allocate(e.ctx, call, slice, Request(Exclusive("x", "n1")))
		wantCode(t, "an exclusive sliver on a used node", err, am.TooBig)
		_, err = e.agg.Allocate(e.ctx, call, slice, Request(Exclusive("y", "n2")))
		wantCode(t, "an exclusive sliver on a container-only node", err, am.BadArgs)
		_, err = e.agg.Allocate(e.ctx, call, slice, Request(Container("a", "n2")))
		wantCode(t, "a client_id used twice in a slice", err, am.AlreadyExists)
	})

	t.Run("shutdown refuses later calls", func(t *testing.T) {
		e := setup(t)
		slice := SliceURN("stop")
		if _, err := e.agg.Allocate(e.ctx, call, slice, Request(Container("a", ""))); err != nil {
			t.Fatal(err)
		}
		if err := e.agg.Shutdown(e.ctx, call, slice); err != nil {
			t.Fatal(err)
		}
		_, err := e.agg.Describe(e.ctx, call, []string{slice})
		wantCode(t, "Describe of a shut-down slice", err, am.Forbidden)
		_, err = e.agg.Allocate(e.ctx, call, slice, Request(Container("b", "")))
		wantCode(t, "Allocate on a shut-down slice", err, am.Forbidden)
		if err := e.agg.Shutdown(e.ctx, call, slice); err != nil {
			t.Errorf("Shutdown again: %v", err)
		}
	})

	t.Run("maintenance refuses new work only", func(t *testing.T) {
		e := setup(t)
		slice := SliceURN("maint")
		if _, err := e.agg.Allocate(e.ctx, call, slice, Request(Container("a", ""))); err != nil {
			t.Fatal(err)
		}
		e.ops.Maintenance = "new disks"
		_, err := e.agg.Allocate(e.ctx, call, slice, Request(Container("b", "")))
		wantCode(t, "Allocate in maintenance", err, am.Unavailable)
		if _, err := e.agg.Describe(e.ctx, call, []string{slice}); err != nil {
			t.Errorf("Describe in maintenance: %v", err)
		}
	})

	t.Run("expiry", func(t *testing.T) {
		e := setup(t)
		slice := SliceURN("old")
		res, err := e.agg.Allocate(e.ctx, call, slice, Request(Container("a", "")))
		if err != nil {
			t.Fatal(err)
		}
		e.clock.Add(time.Minute)
		if n, err := e.agg.NewReaper(time.Second).Sweep(e.ctx); err != nil || n != 0 {
			t.Fatalf("sweep before expiry: %d %v", n, err)
		}
		e.clock.Add(am.DefaultAllocationHold)
		if n, err := e.agg.NewReaper(time.Second).Sweep(e.ctx); err != nil || n != 1 {
			t.Fatalf("sweep after expiry: %d %v", n, err)
		}
		_, err = e.agg.Status(e.ctx, call, []string{res.Slivers[0].URN})
		wantCode(t, "Status of an expired sliver", err, am.SearchFailed)
	})
}
