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
	mu    sync.Mutex
	n     int
	what  []string
	batch bool
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
// recent node list, Delete reads the slice and its slivers and changes them
// in two pipelined batches. Counted once the connection's statement cache is
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
	agg := am.NewAggregate(am.AggregateConfig{URN: amURN}, st, &allowAll{now: time.Now}, fakeRSpecs{}, time.Now)
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
		if del > 4 {
			t.Errorf("Delete of a slice of 2 slivers: %d round trips, want at most 4: %q", del, delWhat)
		}
		t.Logf("Allocate %d round trips %q; Delete %d %q", allocate, allocWhat, del, delWhat)
	}
}
