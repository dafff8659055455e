package store_test

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/store/storetest"
	"github.com/jackc/pgx/v5"
)

// addNodes adds n container nodes bigNNNN with capacity slots each, in one
// statement (as make bench's inventory is made).
func (e *env) addNodes(n, capacity int) {
	e.t.Helper()
	e.sql(`INSERT INTO nodes (name, component_urn, capacity)
		SELECT 'big' || lpad(i::text, 4, '0'), $1 || lpad(i::text, 4, '0'), $2 FROM generate_series(1, $3) AS i`,
		nodeURN("big"), capacity, n)
}

// Eight clients allocate on 200 nodes at once until 80% of the slots are
// taken: every allocation succeeds (no TOOBIG or BUSY while capacity
// remains), spread keeps the nodes within one sliver of each other, and no
// node is overbooked.
func TestConcurrentAllocationsOnALargeInventory(t *testing.T) {
	e := newEnv(t)
	const nodes, capacity, clients, each = 200, 2, 8, 40 // 320 of 400 slots
	e.addNodes(nodes, capacity)
	var wg sync.WaitGroup
	errs := make(chan error, clients*each)
	start := time.Now()
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			call := e.call(fmt.Sprintf("urn:publicid:IDN+ch.test+user+u%d", c), am.Options{})
			slice := sliceURN(fmt.Sprint("big", c))
			for i := 0; i < each; i++ {
				if _, err := e.agg.Allocate(e.ctx, call, slice, request(container(fmt.Sprint("n", i), ""))); err != nil {
					errs <- fmt.Errorf("client %d allocation %d: %v", c, i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d allocations by %d clients on %d nodes in %v", clients*each, clients, nodes, time.Since(start))
	if n := e.count("SELECT count(*) FROM node_slots"); n != clients*each {
		t.Errorf("%d slots held, want %d", n, clients*each)
	}
	if v, err := doubleBookings(e.ctx, e); err != nil || v != "" {
		t.Errorf("double booking: %q %v", v, err)
	}
	if n := e.count("SELECT max(slots_used) - min(slots_used) FROM node_usage"); n > 1 {
		t.Errorf("spread left nodes %d slivers apart", n)
	}
}

// An allocation locks only the node it places on: while one is paused just
// before inserting its sliver, every other node can still be locked.
func TestAllocateLocksOnlyItsNodes(t *testing.T) {
	e := newEnv(t)
	e.addNodes(50, 4)
	// A trigger makes the allocation wait, inside its transaction and after
	// it locked its nodes, for an advisory lock the test holds.
	e.sql(`CREATE FUNCTION test_pause() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN PERFORM pg_advisory_xact_lock_shared(4242); RETURN NEW; END $$`)
	e.sql("CREATE TRIGGER test_pause BEFORE INSERT ON slivers FOR EACH ROW EXECUTE FUNCTION test_pause()")
	release := e.hold("SELECT pg_advisory_xact_lock(4242)")
	done := make(chan error, 1)
	go func() {
		_, err := e.agg.Allocate(e.ctx, e.call(alice, am.Options{}), sliceURN("paused"), request(container("a", "")))
		done <- err
	}()
	ctx, cancel := context.WithTimeout(e.ctx, 20*time.Second)
	defer cancel()
	for e.count("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted") == 0 {
		select {
		case err := <-done:
			t.Fatalf("the allocation did not pause: %v", err)
		case <-ctx.Done():
			t.Fatal("the allocation never reached its insert")
		case <-time.After(10 * time.Millisecond):
		}
	}
	var lockable int
	err := func() error {
		tx, err := e.pool.Begin(e.ctx)
		if err != nil {
			return err
		}
		defer tx.Rollback(e.ctx)
		return tx.QueryRow(e.ctx, "SELECT count(*) FROM (SELECT name FROM nodes FOR UPDATE SKIP LOCKED) x").Scan(&lockable)
	}()
	if err != nil {
		t.Fatal(err)
	}
	if lockable != 49 {
		t.Errorf("%d of 50 nodes free to lock while one unbound allocation runs, want 49", lockable)
	}
	if err := release(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Allocate: %v", err)
	}
}

// A request that only fits on nodes another allocation holds waits for them
// on its next attempt instead of failing: here the only node with room is
// locked for a moment, and the allocation succeeds once it is free.
func TestAllocateWaitsForBusyNodesItNeeds(t *testing.T) {
	e := newEnv(t)
	e.addNode("full", 1)
	e.addNode("free", 1)
	e.allocate(sliceURN("first"), container("a", "full"))
	release := e.hold("SELECT 1 FROM nodes WHERE name = 'free' FOR UPDATE")
	released := make(chan struct{})
	time.AfterFunc(300*time.Millisecond, func() { _ = release(); close(released) })
	defer func() { <-released }()
	res, err := e.agg.Allocate(e.ctx, e.call(alice, am.Options{}), sliceURN("second"), request(container("b", "")))
	if err != nil {
		t.Fatalf("Allocate: %v", err)
	}
	if n := e.count("SELECT count(*) FROM slivers WHERE urn = $1 AND node_name = 'free'", res.Slivers[0].URN); n != 1 {
		t.Errorf("sliver not on node free")
	}
	// With no room anywhere the answer is TOOBIG naming the nodes.
	_, err = e.agg.Allocate(e.ctx, e.call(alice, am.Options{}), sliceURN("third"), request(container("c", "")))
	wantCode(t, err, am.TooBig, "full: 1 of 1", "free: 1 of 1")
}

// ListResources serves a cached advertisement: this process's changes show
// at once, another process's within the cache TTL, an operator's node edit
// at the next call.
func TestAdvertisementAcrossProcesses(t *testing.T) {
	e := newEnv(t)
	e.addNode("node1", 3)
	agg2 := e.aggregate(storetest.OpenURL(t, e.url), am.AggregateConfig{})
	ad := func(want string) {
		t.Helper()
		got, err := e.agg.ListResources(e.ctx, e.call(alice, geni3))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(got, want) {
			t.Errorf("advertisement %s does not contain %s", got, want)
		}
	}
	ad(`free="3"`)
	if _, err := agg2.Allocate(e.ctx, e.call(alice, am.Options{}), sliceURN("p2"), request(container("a", ""))); err != nil {
		t.Fatal(err)
	}
	ad(`free="3"`) // the other process's allocation: not yet
	e.clock.Add(am.DefaultAdCacheTTL)
	ad(`free="2"`) // ... but within the TTL
	e.allocate(sliceURN("p1"), container("b", ""))
	ad(`free="1"`) // our own: at once
	if _, err := e.agg.Delete(e.ctx, e.call(alice, am.Options{}), []string{sliceURN("p1")}); err != nil {
		t.Fatal(err)
	}
	ad(`free="2"`)
	e.sql("UPDATE nodes SET capacity = 5 WHERE name = 'node1'") // psql: the version moves
	ad(`free="4"`)
	// The reaper of this process expires the other's allocation: at once.
	e.clock.Add(time.Hour)
	r := e.agg.NewReaper(time.Second)
	r.Log = slog.New(slog.DiscardHandler)
	if _, err := r.Sweep(e.ctx); err != nil {
		t.Fatal(err)
	}
	ad(`free="5"`)
}

// The recent node list is kept in Go's byte order of names, whatever the
// database collation says: mixed-case and punctuated names are found again
// when Allocate writes back what it learned.
func TestRecentNodeListOrder(t *testing.T) {
	e := newEnv(t)
	for _, n := range []string{"node_0", "Node3", "node-2", "node1", "a.b"} {
		e.addNode(n, 1)
	}
	for i := 0; i < 5; i++ {
		e.allocate(sliceURN(fmt.Sprint("o", i)), container("a", ""))
	}
	_, err := e.agg.Allocate(e.ctx, e.call(alice, am.Options{}), sliceURN("o9"), request(container("a", "")))
	wantCode(t, err, am.TooBig, "node_0: 1 of 1", "Node3: 1 of 1", "a.b: 1 of 1")
	inv, err := e.store.Inventory(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, n := range inv.Nodes {
		names = append(names, n.Name)
	}
	if got := strings.Join(names, " "); got != "Node3 a.b node-2 node1 node_0" {
		t.Errorf("inventory order %s", got)
	}
}

// Two aggregates (separate pools, as two processes would have) and 16
// clients fight over 6 slots for a few seconds while reapers expire short
// allocations. No instant may show a double booking, and every failure must
// be a clean geni_code.
func TestRaceNoDoubleBooking(t *testing.T) {
	if testing.Short() {
		t.Skip("race test takes a few seconds")
	}
	e := newEnv(t)
	e.addNode("c1", 3, "container", "exclusive")
	e.addNode("c2", 2, "container", "exclusive")
	e.addNode("x1", 1, "exclusive")

	var aggs []*am.Aggregate
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var bg sync.WaitGroup
	for i := 0; i < 2; i++ {
		agg := wallClockAggregate(storetest.OpenURL(t, e.url), am.AggregateConfig{AllocationHold: 300 * time.Millisecond,
			Placement: []am.PlacementPolicy{am.Spread, am.Pack}[i]})
		aggs = append(aggs, agg)
		r := agg.NewReaper(50 * time.Millisecond)
		r.Log = slog.New(slog.DiscardHandler)
		bg.Add(1)
		go func() { defer bg.Done(); r.Run(ctx) }()
	}

	var violations atomic.Int64
	var checks atomic.Int64
	bg.Add(1)
	go func() { // the invariant checker
		defer bg.Done()
		for ctx.Err() == nil {
			v, err := doubleBookings(ctx, e)
			if err != nil {
				if ctx.Err() == nil {
					t.Errorf("checker: %v", err)
				}
				return
			}
			if v != "" {
				t.Errorf("double booking: %s", v)
				violations.Add(1)
			}
			checks.Add(1)
		}
	}()

	// Fresh client_ids each time: a client may still hold its last slivers.
	requests := []func(n int) string{
		func(n int) string { return request(container(fmt.Sprint("a", n), "")) },
		func(n int) string { return request(container(fmt.Sprint("a", n), "c1")) },
		func(n int) string {
			return request(container(fmt.Sprint("a", n), ""), container(fmt.Sprint("b", n), ""))
		},
		func(n int) string { return request(exclusive(fmt.Sprint("a", n), "")) },
		func(n int) string { return request(exclusive(fmt.Sprint("a", n), "c2")) },
		func(n int) string {
			return request(container(fmt.Sprint("a", n), "c2"), exclusive(fmt.Sprint("b", n), ""))
		},
	}
	var mu sync.Mutex
	codes := map[am.Code]int{}
	deadline := time.Now().Add(3 * time.Second)
	race(16, aggs, 1, func(i int, agg *am.Aggregate, rng *rand.Rand) {
		slice := sliceURN(fmt.Sprintf("race%d", i))
		c := clientCall(i, geni3)
		record := func(err error) {
			mu.Lock()
			codes[am.CodeOf(err)]++
			mu.Unlock()
			if err == nil {
				return
			}
			switch am.CodeOf(err) {
			case am.TooBig, am.Busy, am.SearchFailed, am.Expired:
			default:
				t.Errorf("client %d: unexpected %v", i, err)
			}
			if w := databaseText(am.MessageOf(err)); w != "" {
				t.Errorf("client %d: database text (%s) in message %q", i, w, am.MessageOf(err))
			}
		}
		for n := 0; time.Now().Before(deadline); n++ {
			res, err := agg.Allocate(ctx, c, slice, requests[rng.IntN(len(requests))](n))
			record(err)
			if err != nil {
				continue
			}
			switch rng.IntN(3) {
			case 0: // give it back at once
				_, err = agg.Delete(ctx, c, []string{slice})
			case 1: // provision, then delete the slivers by URN
				urns := []string{}
				for _, s := range res.Slivers {
					urns = append(urns, s.URN)
				}
				if _, err = agg.Provision(ctx, c, urns); err == nil {
					_, err = agg.Delete(ctx, c, urns)
				}
			default: // leave it to the reaper
			}
			record(err)
		}
	})
	t.Logf("clients done %v after the deadline", time.Since(deadline))
	cancel()
	bg.Wait()
	if v, err := doubleBookings(context.Background(), e); err != nil || v != "" {
		t.Errorf("final check: %q %v", v, err)
	}
	t.Logf("outcomes by geni_code: %v; %d invariant checks, %d violations", codes, checks.Load(), violations.Load())
	if codes[am.Success] == 0 || codes[am.TooBig] == 0 {
		t.Errorf("the race did not race: %v", codes)
	}
}

// race runs n clients at once, client i on aggs[i%len(aggs)] (aggregate
// processes of their own) with a random source of its own seeded by i and
// seed, and returns when all are done.
func race(n int, aggs []*am.Aggregate, seed uint64, client func(i int, agg *am.Aggregate, rng *rand.Rand)) {
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client(i, aggs[i%len(aggs)], rand.New(rand.NewPCG(uint64(i), seed)))
		}()
	}
	wg.Wait()
}

// clientCall is a call of race's client i: a user of its own.
func clientCall(i int, opts am.Options) am.Call {
	return am.Call{Caller: &am.Caller{URN: fmt.Sprintf("urn:publicid:IDN+ch.test+user+u%d", i)}, Options: opts}
}

// databaseText returns the word of PostgreSQL's or pgx's that msg shows, or
// "": a refusal tells the caller what happened, never the database's text.
func databaseText(msg string) string {
	for _, w := range []string{"SQLSTATE", "pgx", "postgres", "ERROR:", "violates"} {
		if strings.Contains(msg, w) {
			return w
		}
	}
	return ""
}

// doubleBookings checks, in one snapshot, that no node holds more than its
// capacity, no exclusive sliver shares its node, and every sliver holds the
// slots it should. It returns "" when all is well.
func doubleBookings(ctx context.Context, e *env) (string, error) {
	var out string
	err := pgx.BeginTxFunc(ctx, e.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		queries := []string{
			`SELECT 'node ' || n.name || ' holds ' || count(*) || ' > ' || n.capacity FROM node_slots s JOIN nodes n ON n.name = s.node_name
				GROUP BY n.name, n.capacity HAVING count(*) > n.capacity`,
			`SELECT 'node ' || node_name || ' has an exclusive sliver and others' FROM slivers GROUP BY node_name
				HAVING bool_or(sliver_type = 'exclusive') AND count(*) > 1`,
			`SELECT 'sliver ' || v.urn || ' holds ' || count(s.slot_no) || ' slots' FROM slivers v JOIN nodes n ON n.name = v.node_name
				LEFT JOIN node_slots s ON s.sliver_urn = v.urn GROUP BY v.urn, v.sliver_type, n.capacity
				HAVING count(s.slot_no) <> CASE WHEN v.sliver_type = 'exclusive' THEN n.capacity ELSE 1 END`,
		}
		for _, q := range queries {
			rows, err := tx.Query(ctx, q)
			if err != nil {
				return err
			}
			found, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				return err
			}
			if len(found) > 0 {
				out += strings.Join(found, "; ")
			}
		}
		return nil
	})
	return out, err
}
