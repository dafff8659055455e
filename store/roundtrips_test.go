package store_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/store"
	"github.com/geniam/geniam/store/pgtest"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// roundTrips counts the messages pgx waits for an answer to: a query, an
// Exec, a batch (one, however many statements it holds) or a prepare.
type roundTrips struct {
	mu   sync.Mutex
	n    int
	what []string
}

func (r *roundTrips) add(what string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n++
	r.what = append(r.what, what)
}

func (r *roundTrips) take() (int, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n, w := r.n, r.what
	r.n, r.what = 0, nil
	return n, w
}

func (r *roundTrips) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	r.add(clipSQL(d.SQL))
	return ctx
}
func (r *roundTrips) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
func (r *roundTrips) TraceBatchStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceBatchStartData) context.Context {
	r.add("batch of " + itoa(d.Batch.Len()))
	return ctx
}
func (r *roundTrips) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}
func (r *roundTrips) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData)     {}
func (r *roundTrips) TracePrepareStart(ctx context.Context, _ *pgx.Conn, d pgx.TracePrepareStartData) context.Context {
	r.add("prepare " + clipSQL(d.SQL))
	return ctx
}
func (r *roundTrips) TracePrepareEnd(context.Context, *pgx.Conn, pgx.TracePrepareEndData) {}

func clipSQL(s string) string {
	if len(s) > 60 {
		return s[:60]
	}
	return s
}

func itoa(n int) string {
	if n < 10 {
		return string(rune('0' + n))
	}
	return itoa(n/10) + string(rune('0'+n%10))
}

// Allocate and Delete are as few round trips to PostgreSQL as their
// semantics allow: Allocate's write is one statement (geniam_allocate) on the
// recent node list; Delete's is one statement too (geniam_delete, which
// also refuses a shut-down slice to all but operators). Counted once the connection's statement cache is
// warm, as it is in a running aggregate.
func TestRoundTripsOfAllocateAndDelete(t *testing.T) {
	ctx := context.Background()
	cfg, err := pgxpool.ParseConfig(pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 1 // one connection: its statement cache is warm after one round
	rt := &roundTrips{}
	cfg.ConnConfig.Tracer = rt
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if err := store.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	st := store.New(pool)
	st.ViewMaxAge = time.Hour
	if _, err := pool.Exec(ctx, `INSERT INTO nodes (name, component_urn, capacity)
		SELECT 'node' || i, $1 || i, 4 FROM generate_series(0, 99) AS i`, nodeURN("node")); err != nil {
		t.Fatal(err)
	}
	agg := wallClockAggregate(st, am.AggregateConfig{})
	call := am.Call{Caller: &am.Caller{URN: alice}}
	slice := sliceURN("trips")
	for round := 0; round < 3; round++ {
		rt.take()
		if _, err := agg.Allocate(ctx, call, slice, request(container("a", ""), container("b", ""))); err != nil {
			t.Fatal(err)
		}
		allocate, allocWhat := rt.take()
		if _, err := agg.Delete(ctx, call, []string{slice}); err != nil {
			t.Fatal(err)
		}
		del, delWhat := rt.take()
		if round < 2 {
			continue // warming up: the node list, prepared statements
		}
		if allocate != 1 {
			t.Errorf("Allocate of 2 slivers: %d round trips, want 1: %q", allocate, allocWhat)
		}
		if del != 1 {
			t.Errorf("Delete of a slice of 2 slivers: %d round trips, want 1: %q", del, delWhat)
		}
		t.Logf("Allocate %d round trips %q; Delete %d %q", allocate, allocWhat, del, delWhat)
	}
}

// geniam_delete deletes nothing when one named sliver is not a live sliver
// of the slice, refuses a shut-down slice to all but an operator, and returns
// the deleted slivers in the order asked.
func TestStoreDelete(t *testing.T) {
	e := newEnv(t)
	e.addNode("node1", 4)
	slice := sliceURN("del")
	res := e.allocate(slice, container("a", ""), container("b", ""), container("c", ""))
	a, b, c := res.Slivers[0].URN, res.Slivers[1].URN, res.Slivers[2].URN
	other := e.allocate(sliceURN("other"), container("x", "")).Slivers[0].URN

	_, err := e.store.Delete(e.ctx, am.DeleteTx{Actor: alice, SliceURN: slice, URNs: []string{a, other}})
	wantCode(t, err, am.SearchFailed, other)
	if n := e.count("SELECT count(*) FROM slivers"); n != 4 {
		t.Fatalf("%d slivers after a refused Delete, want 4", n)
	}
	got, err := e.store.Delete(e.ctx, am.DeleteTx{Actor: alice, SliceURN: slice, URNs: []string{c, a}})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].URN != c || got[1].URN != a || got[0].ComponentID != nodeURN("node1") {
		t.Errorf("Delete returned %+v, want c then a on node1", got)
	}
	if n := e.count("SELECT count(*) FROM sliver_history WHERE event = 'Delete' AND actor = $1 AND allocation_state = 'geni_unallocated'", alice); n != 2 {
		t.Errorf("%d Delete history rows by alice, want 2", n)
	}
	if n := e.count("SELECT count(*) FROM node_slots"); n != 2 {
		t.Errorf("%d slots held, want 2 (b and x)", n)
	}

	if err := e.store.Shutdown(e.ctx, slice, alice, time.Now()); err != nil {
		t.Fatal(err)
	}
	_, err = e.store.Delete(e.ctx, am.DeleteTx{Actor: alice, SliceURN: slice})
	wantCode(t, err, am.Forbidden, "shut down")
	got, err = e.store.Delete(e.ctx, am.DeleteTx{Actor: operator, Operator: true, SliceURN: slice})
	if err != nil || len(got) != 1 || got[0].URN != b {
		t.Errorf("operator's Delete of the shut-down slice: %v %+v, want b", err, got)
	}
	got, err = e.store.Delete(e.ctx, am.DeleteTx{Actor: alice, SliceURN: sliceURN("never-seen")})
	if err != nil || len(got) != 0 {
		t.Errorf("Delete of an unknown slice: %v %+v, want nothing", err, got)
	}
}
