package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/store"
	"github.com/geniam/geniam/store/storetest"
)

// TestConsoleReads covers what the web console reads: an experimenter's
// slices, slivers narrowed to them, audit rows by node and by sliver, usage
// over time from sliver_history, and the change mark.
func TestConsoleReads(t *testing.T) {
	e := newEnv(t)
	e.addNode("n1", 4)
	e.addNode("n2", 4)
	const bob = "urn:publicid:IDN+ch.test+user+bob"
	sa, sb := sliceURN("ofalice"), sliceURN("ofbob")
	before, err := e.store.ChangeMark(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	ra, err := e.agg.Allocate(e.ctx, e.call(alice, am.Options{}), sa, request(container("a", "n1")))
	if err != nil {
		t.Fatal(err)
	}
	rb, err := e.agg.Allocate(e.ctx, e.call(bob, am.Options{}), sb, request(container("b", "n2")))
	if err != nil {
		t.Fatal(err)
	}
	after, err := e.store.ChangeMark(e.ctx)
	if err != nil || after == before {
		t.Fatalf("change mark did not move: %q -> %q (%v)", before, after, err)
	}

	mine, err := e.store.SlicesOfUser(e.ctx, alice)
	if err != nil || len(mine) != 1 || mine[0] != sa {
		t.Fatalf("alice's slices %v %v", mine, err)
	}
	none, err := e.store.SlicesOfUser(e.ctx, "urn:publicid:IDN+ch.test+user+nobody")
	if err != nil || none == nil || len(none) != 0 {
		t.Fatalf("nobody's slices %#v %v", none, err)
	}
	for _, c := range []struct {
		slices []string
		limit  int
		want   int
	}{{nil, 0, 2}, {mine, 0, 1}, {none, 0, 0}, {nil, 1, 1}} {
		got, err := e.store.AdminSlivers(e.ctx, store.SliverFilter{Slices: c.slices, Limit: c.limit})
		if err != nil || len(got) != c.want {
			t.Errorf("slivers of %v: %d, want %d (%v)", c.slices, len(got), c.want, err)
		}
	}

	r1 := &am.AuditRecord{At: time.Now(), LogID: "l1", Method: "Allocate", Caller: alice}
	r1.NoteSlice(sa)
	r1.NoteSlivers(ra.Slivers[0].URN)
	r2 := &am.AuditRecord{At: time.Now(), LogID: "l2", Method: "Allocate", Caller: bob}
	r2.NoteSlice(sb)
	r2.NoteSlivers(rb.Slivers[0].URN)
	if err := store.WriteAudit(e.ctx, e.pool, r1, r2); err != nil {
		t.Fatal(err)
	}
	byNode, err := e.store.Audit(e.ctx, store.AuditFilter{Node: "n2"})
	if err != nil || len(byNode) != 1 || byNode[0].LogID != "l2" {
		t.Errorf("audit by node n2: %+v %v", byNode, err)
	}
	bySliver, err := e.store.Audit(e.ctx, store.AuditFilter{Sliver: ra.Slivers[0].URN})
	if err != nil || len(bySliver) != 1 || bySliver[0].LogID != "l1" {
		t.Errorf("audit by sliver: %+v %v", bySliver, err)
	}

	if _, err := e.agg.Delete(e.ctx, e.call(bob, am.Options{}), []string{sb}); err != nil {
		t.Fatal(err)
	}
	pts, err := e.store.Usage(e.ctx, time.Now().Add(-time.Minute), time.Second)
	if err != nil || len(pts) < 60 {
		t.Fatalf("usage: %d points, %v", len(pts), err)
	}
	if first, last := pts[0], pts[len(pts)-1]; first.Slivers != 0 || last.Slivers != 1 || last.Nodes != 1 {
		t.Errorf("usage from %+v to %+v, want 0 then 1 sliver on 1 node", first, last)
	}
	if _, err := e.store.Usage(e.ctx, time.Now().Add(-24*time.Hour), time.Second); err == nil {
		t.Error("86,400 usage points were not refused")
	}
}

// BenchmarkConsoleUsage: the console's usage chart (24 h in 15-minute steps)
// and its change mark over a sliver_history of 100,000 slivers' lives
// (200,000 rows) spread over a week.
func BenchmarkConsoleUsage(b *testing.B) {
	ctx := context.Background()
	st, _ := storetest.Open(b)
	if _, err := st.Pool().Exec(ctx, `INSERT INTO sliver_history (at, sliver_urn, slice_urn, node_name, event, actor, allocation_state, operational_state)
		SELECT * FROM (
			SELECT now() - (i * interval '6 seconds') + (d * interval '2 hours') AS at, 'urn:s' || i, 'urn:slice' || (i % 1000), 'node' || (i % 100),
				CASE WHEN d = 0 THEN 'Allocate' ELSE 'Delete' END, 'urn:u', CASE WHEN d = 0 THEN 'geni_allocated' ELSE 'geni_unallocated' END, ''
			FROM generate_series(1, 100000) AS i, generate_series(0, 1) AS d) x
		WHERE at < now() ORDER BY at`); err != nil {
		b.Fatal(err)
	}
	if _, err := st.Pool().Exec(ctx, "ANALYZE sliver_history"); err != nil {
		b.Fatal(err)
	}
	b.Run("usage-24h", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := st.Usage(ctx, time.Now().Add(-24*time.Hour), 15*time.Minute); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("change-mark", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := st.ChangeMark(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
}
