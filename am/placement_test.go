package am

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

func testNode(name string, capacity, used int, types ...string) Node {
	if len(types) == 0 {
		types = []string{SliverTypeContainer}
	}
	return Node{Name: name, ComponentID: "urn:publicid:IDN+t+node+" + name, SliverTypes: types,
		Capacity: capacity, Used: used, Available: true}
}

func unbound(id string) SliverRequest {
	return SliverRequest{ClientID: id, SliverType: SliverTypeContainer}
}

func bound(id, node string) SliverRequest {
	return SliverRequest{ClientID: id, SliverType: SliverTypeContainer, ComponentID: "urn:publicid:IDN+t+node+" + node}
}

func whole(id, node string) SliverRequest {
	r := SliverRequest{ClientID: id, SliverType: SliverTypeExclusive, Exclusive: true}
	if node != "" {
		r.ComponentID = "urn:publicid:IDN+t+node+" + node
	}
	return r
}

func TestPlace(t *testing.T) {
	down := testNode("down", 4, 0)
	down.Available, down.Reason = false, "maintenance"
	held := testNode("held", 2, 2, SliverTypeContainer, SliverTypeExclusive)
	held.Exclusive = true
	cases := []struct {
		name   string
		policy PlacementPolicy
		nodes  []Node
		reqs   []SliverRequest
		want   string // node names joined by space, or "ERR <CODE> <substring>"
	}{
		{"spread picks the emptiest", Spread, []Node{testNode("a", 4, 3), testNode("b", 4, 1)}, []SliverRequest{unbound("x")}, "b"},
		{"spread alternates", Spread, []Node{testNode("a", 4, 0), testNode("b", 4, 0)}, []SliverRequest{unbound("x"), unbound("y")}, "a b"},
		{"pack fills the fullest", Pack, []Node{testNode("a", 4, 3), testNode("b", 4, 1)}, []SliverRequest{unbound("x"), unbound("y")}, "a b"},
		{"bound goes where told", Spread, []Node{testNode("a", 4, 0), testNode("b", 4, 3)}, []SliverRequest{bound("x", "b")}, "b"},
		{"bound first, then unbound around it", Pack, []Node{testNode("a", 2, 0), testNode("b", 1, 0)}, []SliverRequest{unbound("x"), bound("y", "b")}, "a b"},
		{"bound full", Spread, []Node{testNode("a", 2, 2)}, []SliverRequest{bound("x", "a")}, "ERR TOOBIG is full: 2 of 2"},
		{"bound unavailable", Spread, []Node{down}, []SliverRequest{bound("x", "down")}, "ERR UNAVAILABLE maintenance"},
		{"bound unknown", Spread, []Node{testNode("a", 2, 0)}, []SliverRequest{bound("x", "zz")}, "ERR BADARGS no such node"},
		{"bound held exclusively", Spread, []Node{held}, []SliverRequest{bound("x", "held")}, "ERR TOOBIG held exclusively"},
		{"two bound overfill", Spread, []Node{testNode("a", 2, 1)}, []SliverRequest{bound("x", "a"), bound("y", "a")}, "ERR TOOBIG 2 of 2"},
		{"exclusive needs empty node", Spread, []Node{testNode("a", 2, 1, SliverTypeExclusive, SliverTypeContainer), testNode("b", 8, 0, SliverTypeExclusive)},
			[]SliverRequest{whole("x", "")}, "b"},
		{"exclusive takes the smallest empty node", Spread, []Node{testNode("big", 8, 0, SliverTypeExclusive), testNode("small", 1, 0, SliverTypeExclusive)},
			[]SliverRequest{whole("x", "")}, "small"},
		{"exclusive then no container room", Spread, []Node{testNode("a", 2, 0, SliverTypeExclusive, SliverTypeContainer)},
			[]SliverRequest{whole("x", ""), unbound("y")}, "ERR TOOBIG a: held exclusively"},
		{"exclusive on used bound node", Spread, []Node{testNode("a", 2, 1, SliverTypeExclusive, SliverTypeContainer)},
			[]SliverRequest{whole("x", "a")}, "ERR TOOBIG 1 of its 2 slots"},
		{"type not offered", Spread, []Node{testNode("a", 2, 0)}, []SliverRequest{whole("x", "a")}, "ERR BADARGS does not offer exclusive"},
		{"no nodes", Spread, nil, []SliverRequest{unbound("x")}, "ERR TOOBIG no nodes"},
		{"all unavailable", Spread, []Node{down}, []SliverRequest{unbound("x")}, "ERR UNAVAILABLE down: unavailable (maintenance)"},
		{"unbound overflow names every node", Spread, []Node{testNode("a", 1, 0), down}, []SliverRequest{unbound("x"), unbound("y")},
			"ERR TOOBIG a: 1 of 1 slots in use; down: unavailable"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Place(tc.policy, tc.nodes, tc.reqs)
			if strings.HasPrefix(tc.want, "ERR ") {
				f := strings.SplitN(tc.want, " ", 3)
				if err == nil || CodeOf(err).String() != f[1] || !strings.Contains(MessageOf(err), f[2]) {
					t.Fatalf("got %v, %v; want %s", got, err, tc.want)
				}
				return
			}
			if err != nil || strings.Join(got, " ") != tc.want {
				t.Fatalf("got %v, %v; want %s", got, err, tc.want)
			}
		})
	}
}

func TestParsePlacementPolicy(t *testing.T) {
	for in, want := range map[string]PlacementPolicy{"": Spread, "spread": Spread, "PACK": Pack} {
		if got, err := ParsePlacementPolicy(in); err != nil || got != want {
			t.Errorf("%q: %v %v", in, got, err)
		}
	}
	if _, err := ParsePlacementPolicy("random"); err == nil {
		t.Error("random accepted")
	}
}

// PlaceShuffled chooses among equally good nodes at random, each about as
// often, and never a worse node; Place keeps the first by name.
func TestPlaceShuffledSpreadsTies(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	nodes := []Node{testNode("a", 4, 0), testNode("b", 4, 0), testNode("c", 4, 1), testNode("d", 4, 0)}
	counts := map[string]int{}
	for i := 0; i < 3000; i++ {
		got, err := PlaceShuffled(Spread, nodes, []SliverRequest{unbound("x")}, rng.IntN)
		if err != nil {
			t.Fatal(err)
		}
		counts[got[0]]++
	}
	if counts["c"] != 0 {
		t.Errorf("spread chose the fuller node c %d times", counts["c"])
	}
	for _, n := range []string{"a", "b", "d"} {
		if counts[n] < 800 || counts[n] > 1200 {
			t.Errorf("empty node %s chosen %d of 3000 times, want about 1000: %v", n, counts[n], counts)
		}
	}
	// Pack and exclusive placement keep their rules.
	for i := 0; i < 100; i++ {
		if got, _ := PlaceShuffled(Pack, nodes, []SliverRequest{unbound("x")}, rng.IntN); got[0] != "c" {
			t.Fatalf("pack chose %s, want the fullest node c", got[0])
		}
		got, _ := PlaceShuffled(Spread, []Node{testNode("big", 8, 0, SliverTypeExclusive), testNode("s1", 1, 0, SliverTypeExclusive),
			testNode("s2", 1, 0, SliverTypeExclusive)}, []SliverRequest{whole("x", "")}, rng.IntN)
		if got[0] == "big" {
			t.Fatalf("exclusive chose the big node")
		}
	}
	if got, _ := Place(Spread, nodes, []SliverRequest{unbound("x")}); got[0] != "a" {
		t.Errorf("Place chose %s among equals, want the first by name", got[0])
	}
}

// BenchmarkPlace1000: one unbound container on 1,000 nodes, as every
// Allocate on make bench's inventory plans it.
func BenchmarkPlace1000(b *testing.B) {
	nodes := make([]Node, 1000)
	for i := range nodes {
		nodes[i] = testNode(fmt.Sprintf("n%04d", i), 8, i%3)
	}
	reqs := []SliverRequest{unbound("x")}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := PlaceShuffled(Spread, nodes, reqs, rand.IntN); err != nil {
			b.Fatal(err)
		}
	}
}

// TestNodeCanTake: the one "can take a sliver" rule, which placement and the
// advertisement's available flag share.
func TestNodeCanTake(t *testing.T) {
	both := []string{SliverTypeContainer, SliverTypeExclusive}
	shared := Node{Name: "n1", SliverTypes: both, Capacity: 2, Available: true}
	with := func(n Node, f func(*Node)) Node { f(&n); return n }
	for _, tc := range []struct {
		name      string
		n         Node
		exclusive bool
		want      bool
	}{
		{"container on empty node", shared, false, true},
		{"container on half-used node", with(shared, func(n *Node) { n.Used = 1 }), false, true},
		{"container on full node", with(shared, func(n *Node) { n.Used = 2 }), false, false},
		{"container on unavailable node", with(shared, func(n *Node) { n.Available = false }), false, false},
		{"container on exclusively held node", with(shared, func(n *Node) { n.Exclusive = true }), false, false},
		{"container on exclusive-only node", with(shared, func(n *Node) { n.SliverTypes = both[1:] }), false, false},
		{"exclusive on empty node", shared, true, true},
		{"exclusive on used node", with(shared, func(n *Node) { n.Used = 1 }), true, false},
		{"exclusive on container-only node", with(shared, func(n *Node) { n.SliverTypes = both[:1] }), true, false},
		{"exclusive on unavailable node", with(shared, func(n *Node) { n.Available = false }), true, false},
	} {
		if got := tc.n.CanTake(tc.exclusive); got != tc.want {
			t.Errorf("%s: CanTake(%v) = %v, want %v", tc.name, tc.exclusive, got, tc.want)
		}
	}
}
