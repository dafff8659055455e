package store_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/store"
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
	hold, err := e.pool.Begin(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Rollback(e.ctx)
	if _, err := hold.Exec(e.ctx, "SELECT pg_advisory_xact_lock(4242)"); err != nil {
		t.Fatal(err)
	}
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
	err = func() error {
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
	if err := hold.Rollback(e.ctx); err != nil {
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
	tx, err := e.pool.Begin(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(e.ctx, "SELECT 1 FROM nodes WHERE name = 'free' FOR UPDATE"); err != nil {
		tx.Rollback(e.ctx)
		t.Fatal(err)
	}
	released := make(chan struct{})
	time.AfterFunc(300*time.Millisecond, func() { tx.Rollback(context.Background()); close(released) })
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
	other, err := store.Open(e.ctx, e.url)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	agg2 := am.NewAggregate(am.AggregateConfig{URN: amURN}, other, e.auth, fakeRSpecs{}, e.clock.Now)
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
