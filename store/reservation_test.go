package store_test

import (
	"context"
	"encoding/xml"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/rspec"
	"github.com/geniam/geniam/store/storetest"
)

const bob = "urn:publicid:IDN+ch.test+user+bob"

func reserve(start, end time.Time) am.Options {
	o := geni3
	o.StartTime, o.EndTime = &start, &end
	return o
}

// Sixteen clients of two aggregate processes (separate pools) book windows
// of two exclusive nodes. On x1 the windows are disjoint and every client
// asks for each: exactly one wins each window. On x2 they overlap one
// another: the winners never overlap. The database is checked for
// overlapping bookings at the end; every loser gets a clean refusal.
func TestReservationRace(t *testing.T) {
	e := newEnv(t)
	e.addNode("x1", 2, "exclusive")
	e.addNode("x2", 1, "exclusive")
	var aggs []*am.Aggregate
	for i := 0; i < 2; i++ {
		aggs = append(aggs, e.aggregate(storetest.OpenURL(t, e.url), am.AggregateConfig{}))
	}
	base := e.clock.Now().Add(time.Hour)
	type window struct {
		node       string
		start, end time.Time
	}
	var windows []window
	for k := 0; k < 4; k++ { // x1: disjoint hours
		s := base.Add(time.Duration(k) * time.Hour)
		windows = append(windows, window{"x1", s, s.Add(time.Hour)})
	}
	for k := 0; k < 6; k++ { // x2: 90 minutes every 40 minutes, each overlapping its neighbours
		s := base.Add(time.Duration(k) * 40 * time.Minute)
		windows = append(windows, window{"x2", s, s.Add(90 * time.Minute)})
	}
	var mu sync.Mutex
	wins := map[int]int{}
	codes := map[am.Code]int{}
	race(16, aggs, 19, func(i int, agg *am.Aggregate, rng *rand.Rand) {
		for n, w := range rng.Perm(len(windows)) {
			win := windows[w]
			c := clientCall(i, reserve(win.start, win.end))
			_, err := agg.Allocate(e.ctx, c, sliceURN(fmt.Sprintf("book%d", i)), request(exclusive(fmt.Sprint("r", n), win.node)))
			mu.Lock()
			codes[am.CodeOf(err)]++
			if err == nil {
				wins[w]++
			}
			mu.Unlock()
			if err == nil {
				continue
			}
			if c := am.CodeOf(err); c != am.Unavailable && c != am.Busy {
				t.Errorf("client %d, window %d: unexpected %v", i, w, err)
			}
			if word := databaseText(am.MessageOf(err)); word != "" {
				t.Errorf("database text (%s) in %q", word, am.MessageOf(err))
			}
		}
	})
	t.Logf("outcomes: %v; wins per window: %v", codes, wins)
	for w := 0; w < 4; w++ {
		if wins[w] != 1 {
			t.Errorf("x1 window %d won %d times, want exactly once", w, wins[w])
		}
	}
	if x2 := wins[4] + wins[5] + wins[6] + wins[7] + wins[8] + wins[9]; x2 < 2 {
		t.Errorf("x2: only %d of its overlapping windows were won (any maximal set has at least 2)", x2)
	}
	if n := e.count(`SELECT count(*) FROM slivers a JOIN slivers b ON a.node_name = b.node_name AND a.urn < b.urn
		WHERE tstzrange(a.starts_at, a.expires_at) && tstzrange(b.starts_at, b.expires_at)`); n != 0 {
		t.Errorf("%d pairs of overlapping bookings in the database", n)
	}
	if n := e.count(`SELECT count(*) FROM slivers WHERE starts_at IS NOT NULL`); n != wins[0]+wins[1]+wins[2]+wins[3]+
		wins[4]+wins[5]+wins[6]+wins[7]+wins[8]+wins[9] {
		t.Errorf("%d bookings in the database, %v won", n, wins)
	}
	// Every booking holds every slot of its node for its window.
	if n := e.count(`SELECT count(*) FROM node_slots t JOIN slivers v ON v.urn = t.sliver_urn
		WHERE t.during <> tstzrange(v.starts_at, v.expires_at)`); n != 0 {
		t.Errorf("%d slot rows not on their sliver's window", n)
	}
}

// The advertisement's geniam:booked calendar is the database's, and
// geni_available still means free now.
func TestReservationCalendar(t *testing.T) {
	e := newEnv(t)
	e.addNode("x1", 1, "exclusive")
	start := e.clock.Now().Add(2 * time.Hour)
	for i, off := range []time.Duration{0, 3 * time.Hour} {
		_, err := e.agg.Allocate(e.ctx, e.call(alice, reserve(start.Add(off), start.Add(off+time.Hour))),
			sliceURN(fmt.Sprint("cal", i)), request(exclusive("a", "x1")))
		if err != nil {
			t.Fatal(err)
		}
	}
	inv, err := e.store.Inventory(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := rspec.New(rspec.Config{AMURN: amURN})
	if err != nil {
		t.Fatal(err)
	}
	ad, err := rs.Advertisement(inv.Nodes, false, e.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Nodes []struct {
			Available struct {
				Now bool `xml:"now,attr"`
			} `xml:"available"`
			Booked []struct {
				Start string `xml:"start,attr"`
				End   string `xml:"end,attr"`
			} `xml:"http://geniam.github.io/rspec/ext/geniam/1 booked"`
		} `xml:"node"`
	}
	if err := xml.Unmarshal([]byte(ad), &doc); err != nil || len(doc.Nodes) != 1 {
		t.Fatalf("advertisement %s: %v", ad, err)
	}
	var got []string
	for _, b := range doc.Nodes[0].Booked {
		got = append(got, b.Start+"/"+b.End)
	}
	rows, err := e.pool.Query(e.ctx, `SELECT to_char(starts_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') || '/' ||
		to_char(ends_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') FROM node_calendar WHERE node_name = 'x1' AND reservation`)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		want = append(want, s)
	}
	if len(want) != 2 || !slices.Equal(got, want) {
		t.Errorf("advertised calendar %v, database %v", got, want)
	}
	if !doc.Nodes[0].Available.Now {
		t.Errorf("a node booked only in the future is not available now")
	}
}

// Immediate allocations respect future bookings: an allocation whose hold
// overlaps a booking is refused naming it; one before it is granted, and
// neither Provision nor Renew takes it into the booking.
func TestReservationAndImmediateAllocations(t *testing.T) {
	e := newEnv(t)
	e.addNode("x1", 1, "exclusive")
	now := e.clock.Now()
	soon := now.Add(5 * time.Minute) // inside the 10-minute hold of an immediate allocation
	if _, err := e.agg.Allocate(e.ctx, e.call(alice, reserve(soon, soon.Add(time.Hour))), sliceURN("soon"), request(exclusive("a", "x1"))); err != nil {
		t.Fatal(err)
	}
	_, err := e.agg.Allocate(e.ctx, e.call(alice, geni3), sliceURN("now"), request(exclusive("a", "x1")))
	wantCode(t, err, am.Unavailable, "x1", "booked from "+soon.Format(time.RFC3339))

	// A second node, booked two hours ahead.
	e.addNode("x2", 1, "exclusive")
	later := now.Add(2 * time.Hour)
	if _, err := e.agg.Allocate(e.ctx, e.call(alice, reserve(later, later.Add(time.Hour))), sliceURN("later"), request(exclusive("a", "x2"))); err != nil {
		t.Fatal(err)
	}
	res, err := e.agg.Allocate(e.ctx, e.call(alice, geni3), sliceURN("now"), request(exclusive("b", "x2")))
	if err != nil {
		t.Fatalf("an allocation before the booking: %v", err)
	}
	urn := res.Slivers[0].URN
	prov := e.provision(urn)
	if got := prov.Slivers[0].Expires; !got.Equal(later) {
		t.Errorf("provisioned until %v, want the start of the booking %v", got, later)
	}
	_, err = e.agg.Renew(e.ctx, e.call(alice, geni3), []string{urn}, later.Add(time.Minute))
	wantCode(t, err, am.OutOfRange, "next booking")
	// The booking itself, provisioned early: no operational action before its start.
	booking, err := e.store.Slivers(e.ctx, sliceURN("later"), nil)
	if err != nil || len(booking) != 1 {
		t.Fatal(booking, err)
	}
	e.provision(booking[0].URN)
	_, err = e.agg.PerformOperationalAction(e.ctx, e.call(alice, geni3), []string{booking[0].URN}, am.ActionStart)
	wantCode(t, err, am.Unavailable, "starts at "+later.Format(time.RFC3339))
	// A booking overlapping the provisioned sliver is refused too.
	_, err = e.agg.Allocate(e.ctx, e.call(bob, reserve(later.Add(-time.Hour), later)), sliceURN("bob"), request(exclusive("a", "x2")))
	wantCode(t, err, am.Unavailable, "in use until")
	// And the database refuses a hand-made overlap.
	if _, err := e.pool.Exec(e.ctx, "UPDATE slivers SET expires_at = $2 WHERE urn = $1", urn, later.Add(time.Minute)); err == nil ||
		!strings.Contains(err.Error(), "node_slots_no_overlap") {
		t.Errorf("extending into a booking by hand: %v", err)
	}
}

// Policy: window length, how far ahead, booking limit per node, exclusive only.
func TestReservationPolicy(t *testing.T) {
	e := newEnv(t)
	e.addNode("x1", 1, "exclusive")
	e.addNode("c1", 2, "container")
	agg := e.aggregate(e.store, am.AggregateConfig{MaxBooking: 2 * time.Hour, MaxBookAhead: 48 * time.Hour,
		MaxBookedPerNode: 3 * time.Hour})
	now := e.clock.Now()
	at := func(h float64) time.Time { return now.Add(time.Duration(h * float64(time.Hour))) }
	book := func(user, slice string, from, to float64, req am.SliverRequest) error {
		_, err := agg.Allocate(e.ctx, e.call(user, reserve(at(from), at(to))), sliceURN(slice), request(req))
		return err
	}
	wantCode(t, book(alice, "long", 1, 4, exclusive("a", "x1")), am.OutOfRange, "longest reservation here is 2h0m0s")
	wantCode(t, book(alice, "far", 49, 50, exclusive("a", "x1")), am.OutOfRange, "too far ahead")
	wantCode(t, book(alice, "cont", 1, 2, container("a", "c1")), am.Unsupported, "books whole nodes")
	wantCode(t, book(alice, "back", 2, 1, exclusive("a", "x1")), am.BadArgs, "not after geni_start_time")
	for i, from := range []float64{1, 4} {
		if err := book(alice, fmt.Sprint("ok", i), from, from+1.5, exclusive("a", "x1")); err != nil {
			t.Fatal(err)
		}
	}
	// 3 h booked: a third hour is over the limit, for alice and for her project.
	wantCode(t, book(alice, "more", 7, 8, exclusive("a", "x1")), am.Unavailable, "over the limit of 3h0m0s per node")
	wantCode(t, book(bob, "more", 7, 8, exclusive("a", "x1")), am.Unavailable, "over the limit")
	// A user of another project may book.
	other := am.Call{Caller: &am.Caller{URN: "urn:publicid:IDN+ch.test+user+carol"}, Options: reserve(at(7), at(8))}
	if _, err := agg.Allocate(e.ctx, other, "urn:publicid:IDN+ch.test:other+slice+carol", request(exclusive("a", "x1"))); err != nil {
		t.Fatalf("another project: %v", err)
	}
	// Renew of a reservation: within the longest window from its start, and never into the next booking.
	slivers, err := e.store.Slivers(e.ctx, sliceURN("ok0"), nil)
	if err != nil || len(slivers) != 1 {
		t.Fatal(slivers, err)
	}
	if slivers[0].Starts.IsZero() || !slivers[0].Starts.Equal(at(1)) || !slivers[0].Expires.Equal(at(2.5)) {
		t.Errorf("stored window %v to %v, want %v to %v", slivers[0].Starts, slivers[0].Expires, at(1), at(2.5))
	}
	_, err = agg.Renew(e.ctx, e.call(alice, geni3), []string{slivers[0].URN}, at(3.5))
	wantCode(t, err, am.OutOfRange, "longest reservation")
	st, err := agg.Renew(e.ctx, e.call(alice, geni3), []string{slivers[0].URN}, at(3))
	if err != nil || !st[0].Expires.Equal(at(3)) || !st[0].Starts.Equal(at(1)) {
		t.Errorf("Renew within the window: %v %v", st, err)
	}
}

// The booking limit is also the database's: two processes cannot each
// grant half of it.
func TestReservationLimitInSQL(t *testing.T) {
	e := newEnv(t)
	e.addNode("x1", 1, "exclusive")
	now := e.clock.Now()
	tx := am.AllocateTx{SliceURN: sliceURN("s"), Actor: alice, Now: now, Bound: []string{nodeURN("x1")}, AllBound: true,
		Starts: now.Add(time.Hour), BookLimit: 90 * time.Minute}
	plan := func(urn string, end time.Time) func([]am.Node) ([]am.Sliver, error) {
		return func([]am.Node) ([]am.Sliver, error) {
			return []am.Sliver{{URN: urn, ClientID: urn, NodeName: "x1", SliverType: am.SliverTypeExclusive, Exclusive: true,
				Operational: am.PendingAllocation, Expires: end}}, nil
		}
	}
	tx.Plan = plan("urn:publicid:IDN+geniam.test+sliver+l1", now.Add(2*time.Hour))
	if _, err := e.store.Allocate(e.ctx, tx); err != nil {
		t.Fatal(err)
	}
	tx.Starts = now.Add(3 * time.Hour)
	tx.Plan = plan("urn:publicid:IDN+geniam.test+sliver+l2", now.Add(4*time.Hour))
	_, err := e.store.Allocate(context.Background(), tx)
	wantCode(t, err, am.Refused, "node x1", "booked 1h0m0s")
}

// The reaper's next wake-up: the earliest expiry outside shut-down slices.
func TestNextExpiry(t *testing.T) {
	e := newEnv(t)
	e.addNode("x1", 1, "exclusive")
	if next, err := e.store.NextExpiry(e.ctx); err != nil || !next.IsZero() {
		t.Fatalf("no slivers: %v %v", next, err)
	}
	now := e.clock.Now()
	for i, off := range []time.Duration{3 * time.Hour, 5 * time.Hour} {
		start := now.Add(off)
		if _, err := e.agg.Allocate(e.ctx, e.call(alice, reserve(start, start.Add(time.Hour))), sliceURN(fmt.Sprint("n", i)),
			request(exclusive("a", "x1"))); err != nil {
			t.Fatal(err)
		}
	}
	if next, err := e.store.NextExpiry(e.ctx); err != nil || !next.Equal(now.Add(4*time.Hour)) {
		t.Errorf("next expiry %v %v, want %v", next, err, now.Add(4*time.Hour))
	}
	e.sql("UPDATE slices SET shut_down = true WHERE urn = $1", sliceURN("n0"))
	if next, err := e.store.NextExpiry(e.ctx); err != nil || !next.Equal(now.Add(6*time.Hour)) {
		t.Errorf("next expiry past a shut-down slice %v %v, want %v", next, err, now.Add(6*time.Hour))
	}
}
