package store_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/store"
	"github.com/geniam/geniam/store/storetest"
)

// The schema itself refuses double booking, whatever the code above it does.
func TestSchemaForbidsDoubleBooking(t *testing.T) {
	e := newEnv(t)
	e.addNode("node1", 2)
	e.addNode("node2", 2)
	e.addNode("ex", 2, "exclusive")
	e.allocate(sliceURN("a"), container("a", "node1"), exclusive("x", "ex"))
	const manual = "urn:publicid:IDN+geniam.test+sliver+manual"
	// An operator books slot 1 of node1 by hand, in one transaction.
	e.sql(`BEGIN;
		INSERT INTO slivers (urn, slice_urn, node_name, sliver_type, client_id, allocation_state, operational_state, expires_at, created_by)
		VALUES ('` + manual + `', '` + sliceURN("a") + `', 'node1', 'container', 'm', 'geni_allocated', 'geni_pending_allocation', now() + interval '1 hour', 'psql');
		INSERT INTO node_slots VALUES ('node1', 1, '` + manual + `');
		COMMIT`)
	cases := []struct {
		name, sql, says string
	}{
		{"slot already held", "INSERT INTO node_slots VALUES ('node1', 0, '" + manual + "')", "node_slots_no_overlap"},
		{"slot beyond capacity", "INSERT INTO node_slots VALUES ('node1', 2, '" + manual + "')", "does not exist on node node1"},
		{"slot on another node than the sliver's", "INSERT INTO node_slots VALUES ('node2', 0, '" + manual + "')", "violates foreign key"},
		{"capacity below a used slot", "UPDATE nodes SET capacity = 1 WHERE name = 'node1'", "drain it"},
		{"capacity above an exclusive sliver's slots", "UPDATE nodes SET capacity = 3 WHERE name = 'ex'", "exclusive sliver"},
		{"a slot freed under a live sliver", "DELETE FROM node_slots WHERE sliver_urn = '" + manual + "'", "holds 0 slots"},
		{"a sliver without slots", `INSERT INTO slivers (urn, slice_urn, node_name, sliver_type, client_id, allocation_state, operational_state, expires_at, created_by)
			VALUES ('urn:publicid:IDN+geniam.test+sliver+noslot', '` + sliceURN("a") + `', 'node2', 'container', 'n', 'geni_allocated', 'geni_pending_allocation', now(), 'psql')`, "holds 0 slots"},
		{"an exclusive sliver with one slot", `BEGIN;
			INSERT INTO slivers (urn, slice_urn, node_name, sliver_type, client_id, allocation_state, operational_state, expires_at, created_by)
			VALUES ('urn:publicid:IDN+geniam.test+sliver+half', '` + sliceURN("a") + `', 'node2', 'exclusive', 'h', 'geni_allocated', 'geni_pending_allocation', now(), 'psql');
			INSERT INTO node_slots VALUES ('node2', 0, 'urn:publicid:IDN+geniam.test+sliver+half');
			COMMIT`, "must hold 2"},
	}
	for _, tc := range cases {
		_, err := e.pool.Exec(e.ctx, tc.sql)
		if err == nil || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.says)
		}
	}
	// Deleting the sliver frees its slots; the history records the psql edit.
	e.sql("DELETE FROM slivers WHERE urn = '" + manual + "'")
	if n := e.count("SELECT count(*) FROM node_slots WHERE node_name = 'node1'"); n != 1 {
		t.Errorf("slots after delete: %d", n)
	}
	if n := e.count("SELECT count(*) FROM sliver_history WHERE event LIKE 'sql:%' AND actor LIKE 'psql:%' AND sliver_urn = $1", manual); n != 2 {
		t.Errorf("manual insert and delete not in history")
	}
}

func TestInventoryFollowsPsqlEdits(t *testing.T) {
	e := newEnv(t)
	e.addNode("node1", 2)
	inv, err := e.store.Inventory(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	ad, err := e.agg.ListResources(e.ctx, e.call(alice, geni3))
	if err != nil || !strings.Contains(ad, nodeURN("node1")) {
		t.Fatalf("ad %q %v", ad, err)
	}
	// An operator adds a node by hand: the next ListResources shows it.
	e.sql(`INSERT INTO nodes (name, component_urn, sliver_types, capacity, country, latitude, longitude)
		VALUES ('node9', $1, ARRAY['container','exclusive'], 8, 'DE', 52.5, 13.4)`, nodeURN("node9"))
	inv2, err := e.store.Inventory(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if inv2.Version <= inv.Version || len(inv2.Nodes) != 2 {
		t.Fatalf("inventory after insert: version %d -> %d, %d nodes", inv.Version, inv2.Version, len(inv2.Nodes))
	}
	n9 := inv2.Nodes[1]
	if n9.Name != "node9" || n9.Capacity != 8 || !n9.Available || n9.Location == nil || n9.Location.Country != "DE" || len(n9.SliverTypes) != 2 {
		t.Errorf("node9 read back as %+v", n9)
	}
	ad, _ = e.agg.ListResources(e.ctx, e.call(alice, geni3))
	if !strings.Contains(ad, nodeURN("node9")) {
		t.Errorf("node9 not advertised: %s", ad)
	}
	// Usage changes the ad (cache keyed on usage) without a version bump.
	e.allocate(sliceURN("u"), container("a", "node1"), container("b", "node1"))
	avail := geni3
	avail.Available = true
	ad, _ = e.agg.ListResources(e.ctx, e.call(alice, avail))
	if strings.Contains(ad, nodeURN("node1")) {
		t.Errorf("full node1 still in the available-only ad: %s", ad)
	}
	// Drain and retire.
	e.sql("UPDATE nodes SET drained = true WHERE name = 'node9'")
	inv3, _ := e.store.Inventory(e.ctx)
	if inv3.Nodes[1].Available || !strings.Contains(inv3.Nodes[1].Reason, "drained") {
		t.Errorf("drained node9 %+v", inv3.Nodes[1])
	}
	e.sql("UPDATE nodes SET retired = true WHERE name = 'node9'")
	inv4, _ := e.store.Inventory(e.ctx)
	if len(inv4.Nodes) != 1 || inv4.Version <= inv3.Version {
		t.Errorf("retired node still listed: %+v", inv4)
	}
	if inv4.Nodes[0].Used != 2 {
		t.Errorf("node1 usage %d", inv4.Nodes[0].Used)
	}
}

func TestViews(t *testing.T) {
	e := newEnv(t)
	e.addNode("node1", 3)
	e.addNode("node2", 1, "exclusive")
	e.allocate(sliceURN("v"), container("a", "node1"), exclusive("b", "node2"))
	if n := e.count("SELECT count(*) FROM slivers_by_node WHERE node_name = 'node1'"); n != 1 {
		t.Errorf("slivers_by_node node1: %d", n)
	}
	// Allocation holds end minutes from now, which may be past midnight:
	// the view is about the day, so the test sets a time before it ends.
	e.sql("UPDATE slivers SET expires_at = LEAST(expires_at, date_trunc('day', now()) + interval '1 day' - interval '1 second')")
	if n := e.count("SELECT count(*) FROM expiring_today"); n != 2 {
		t.Errorf("expiring_today: %d", n)
	}
	if n := e.count("SELECT slots_free FROM node_usage WHERE node_name = 'node1'"); n != 2 {
		t.Errorf("node_usage free: %d", n)
	}
	if n := e.count("SELECT count(*) FROM node_usage WHERE node_name = 'node2' AND held_exclusively AND slots_free = 0"); n != 1 {
		t.Errorf("node_usage exclusive")
	}
}

func TestReaper(t *testing.T) {
	e := newEnv(t)
	e.addNode("node1", 4)
	slice := sliceURN("reap")
	res := e.allocate(slice, container("a", ""), container("b", ""))
	e.provision(res.Slivers[1].URN)
	r := e.agg.NewReaper(time.Second)
	if n, err := r.Sweep(e.ctx); err != nil || n != 0 {
		t.Fatalf("early sweep: %d %v", n, err)
	}
	// The allocation hold (10 min) passes: a goes, provisioned b stays.
	e.clock.Add(11 * time.Minute)
	if n, err := r.Sweep(e.ctx); err != nil || n != 1 {
		t.Fatalf("sweep after hold: %d %v", n, err)
	}
	st, err := e.agg.Status(e.ctx, e.call(alice, geni3), []string{slice})
	if err != nil || len(st.Slivers) != 1 || st.Slivers[0].URN != res.Slivers[1].URN {
		t.Fatalf("Status after reaping %+v %v", st, err)
	}
	if n := e.count("SELECT count(*) FROM sliver_history WHERE event = 'expire' AND actor = 'reaper' AND sliver_urn = $1", res.Slivers[0].URN); n != 1 {
		t.Errorf("expiry history rows: %d", n)
	}
	if n := e.count("SELECT count(*) FROM node_slots"); n != 1 {
		t.Errorf("slots after reaping: %d", n)
	}
}

// Two reapers (two processes' pools) on one database expire each sliver once.
func TestReapersShareTheWork(t *testing.T) {
	e := newEnv(t)
	e.addNode("node1", 100)
	for i := 0; i < 6; i++ {
		var reqs []am.SliverRequest
		for j := 0; j < 10; j++ {
			reqs = append(reqs, container(string(rune('a'+i))+string(rune('a'+j)), ""))
		}
		e.allocate(sliceURN("r"+string(rune('a'+i))), reqs...)
	}
	other := storetest.OpenURL(t, e.url)
	e.clock.Add(time.Hour)
	counts := make([]int, 4)
	var wg sync.WaitGroup
	for i := range counts {
		st := am.Store(e.store)
		if i%2 == 1 {
			st = other
		}
		r := &am.Reaper{Store: st, Batch: 7, Clock: e.clock.Now}
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := r.Sweep(context.Background())
			if err != nil {
				t.Error(err)
			}
			counts[i] = n
		}()
	}
	wg.Wait()
	total := 0
	for _, n := range counts {
		total += n
	}
	if total != 60 {
		t.Errorf("reapers expired %v = %d slivers, want 60", counts, total)
	}
	if n := e.count("SELECT count(*) FROM (SELECT sliver_urn FROM sliver_history WHERE event = 'expire' GROUP BY sliver_urn HAVING count(*) = 1) x"); n != 60 {
		t.Errorf("%d slivers expired exactly once, want 60", n)
	}
}

// An unbound Allocate skips a node another transaction holds and places on
// the others, without waiting.
func TestAllocateSkipsBusyNodes(t *testing.T) {
	e := newEnv(t)
	e.addNode("node1", 4)
	e.addNode("node2", 4)
	e.hold("SELECT 1 FROM nodes WHERE name = 'node1' FOR UPDATE")
	ctx, cancel := context.WithTimeout(e.ctx, 3*time.Second)
	defer cancel()
	res, err := e.agg.Allocate(ctx, e.call(alice, am.Options{}), sliceURN("skip"), request(container("a", "")))
	if err != nil {
		t.Fatalf("Allocate waited for the busy node: %v", err)
	}
	if n := e.count("SELECT count(*) FROM slivers WHERE urn = $1 AND node_name = 'node2'", res.Slivers[0].URN); n != 1 {
		t.Errorf("sliver not on the free node2")
	}
}

// UpdateSliver writes exactly the columns a report gives, clears the exit
// code on a nil *int, and leaves a sliver in a state outside OnlyIf alone.
func TestUpdateSliverColumns(t *testing.T) {
	e := newEnv(t)
	e.addNode("node1", 4)
	urn := e.provisionedContainer("upd", "node1")
	str := func(s string) *string { return &s }
	code := 3
	exit := &code
	ok, err := e.store.UpdateSliver(e.ctx, urn, "agent:test", store.SliverUpdate{Operational: am.Ready,
		Error: str("e"), ResourceMsg: str("r"), ExitCode: &exit, ImageID: str("sha256:1"), DataURL: str("d"), LogURL: str("l"),
		Login: &store.Login{Host: "h", Port: 2222, User: "u"}, StdoutTail: str("out"), StderrTail: str("err")})
	if !ok || err != nil {
		t.Fatalf("UpdateSliver: %v %v", ok, err)
	}
	got, err := e.store.SliverByURN(e.ctx, urn)
	if err != nil {
		t.Fatal(err)
	}
	if got.Operational != am.Ready || got.Error != "e" || got.ResourceMsg != "r" || got.ExitCode == nil || *got.ExitCode != 3 ||
		got.ImageID != "sha256:1" || got.DataURL != "d" || got.LogURL != "l" || got.LoginHost != "h" || got.LoginPort != 2222 ||
		got.LoginUser != "u" || got.StdoutTail != "out" || got.StderrTail != "err" {
		t.Fatalf("after the report: %+v", got)
	}
	var cleared *int
	if ok, err := e.store.UpdateSliver(e.ctx, urn, "agent:test", store.SliverUpdate{ExitCode: &cleared, Error: str("")}); !ok || err != nil {
		t.Fatalf("clearing: %v %v", ok, err)
	}
	if ok, err := e.store.UpdateSliver(e.ctx, urn, "agent:test", store.SliverUpdate{Operational: am.Failed,
		OnlyIf: []am.OperationalState{am.NotReady}}); ok || err != nil {
		t.Fatalf("OnlyIf another state: %v %v, want false", ok, err)
	}
	got, err = e.store.SliverByURN(e.ctx, urn)
	if err != nil {
		t.Fatal(err)
	}
	if got.ExitCode != nil || got.Error != "" || got.Operational != am.Ready || got.LogURL != "l" {
		t.Fatalf("after clearing: %+v", got)
	}
}

// An unreachable agent and disk pressure each make the node unavailable and
// mark its provisioned slivers; the next good report lifts only its own mark.
func TestAgentHealthMarksLift(t *testing.T) {
	e := newEnv(t)
	e.addNode("node1", 4)
	urn := e.provisionedContainer("health", "node1")
	state := func() (available bool, sliverError string) {
		t.Helper()
		if err := e.pool.QueryRow(e.ctx, `SELECT n.available, v.error FROM nodes n JOIN slivers v ON v.node_name = n.name
			WHERE v.urn = $1`, urn).Scan(&available, &sliverError); err != nil {
			t.Fatal(err)
		}
		return available, sliverError
	}
	if _, err := e.store.MarkAgentUnreachable(e.ctx, "node1", time.Now(), "connection refused"); err != nil {
		t.Fatal(err)
	}
	if av, msg := state(); av || !strings.HasPrefix(msg, "node agent unreachable since ") {
		t.Fatalf("unreachable: available %v error %q", av, msg)
	}
	if _, err := e.store.MarkAgentReachable(e.ctx, "node1", nil); err != nil {
		t.Fatal(err)
	}
	if av, msg := state(); !av || msg != "" {
		t.Fatalf("reachable again: available %v error %q", av, msg)
	}
	if _, err := e.store.RecordDisk(e.ctx, "node1", 1<<20, 1<<30, true); err != nil {
		t.Fatal(err)
	}
	if av, msg := state(); av || !strings.HasPrefix(msg, "node disk pressure: ") {
		t.Fatalf("pressure: available %v error %q", av, msg)
	}
	// A good poll does not lift the pressure; the end of the pressure does.
	if _, err := e.store.MarkAgentReachable(e.ctx, "node1", nil); err != nil {
		t.Fatal(err)
	}
	if av, _ := state(); av {
		t.Fatalf("a good poll lifted the disk pressure")
	}
	if _, err := e.store.RecordDisk(e.ctx, "node1", 1<<29, 1<<30, false); err != nil {
		t.Fatal(err)
	}
	if av, msg := state(); !av || msg != "" {
		t.Fatalf("pressure over: available %v error %q", av, msg)
	}
}
