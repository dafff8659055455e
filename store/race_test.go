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
	"github.com/geniam/geniam/store"
	"github.com/jackc/pgx/v5"
)

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
		st, err := store.Open(ctx, e.url)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		agg := am.NewAggregate(am.AggregateConfig{URN: amURN, AllocationHold: 300 * time.Millisecond,
			Placement: []am.PlacementPolicy{am.Spread, am.Pack}[i]}, st, &allowAll{now: time.Now}, fakeRSpecs{}, time.Now)
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
	var clients sync.WaitGroup
	for i := 0; i < 16; i++ {
		clients.Add(1)
		go func() {
			defer clients.Done()
			agg := aggs[i%2]
			rng := rand.New(rand.NewPCG(uint64(i), 1))
			slice := sliceURN(fmt.Sprintf("race%d", i))
			c := am.Call{Caller: &am.Caller{URN: fmt.Sprintf("urn:publicid:IDN+ch.test+user+u%d", i)}, Options: geni3}
			record := func(err error) {
				mu.Lock()
				codes[am.CodeOf(err)]++
				mu.Unlock()
				if err == nil {
					return
				}
				msg := am.MessageOf(err)
				switch am.CodeOf(err) {
				case am.TooBig, am.Busy, am.SearchFailed, am.Expired:
				default:
					t.Errorf("client %d: unexpected %v", i, err)
				}
				for _, leak := range []string{"SQLSTATE", "pgx", "postgres", "ERROR:", "violates"} {
					if strings.Contains(msg, leak) {
						t.Errorf("client %d: database text in message %q", i, msg)
					}
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
		}()
	}
	clients.Wait()
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
