package rspec

import (
	"testing"

	"github.com/geniam/geniam/am"
)

func TestCanHost(t *testing.T) {
	both := []string{am.SliverTypeContainer, am.SliverTypeExclusive}
	shared := am.Node{Name: "n1", SliverTypes: both, Capacity: 2, Available: true}
	container := am.SliverRequest{SliverType: am.SliverTypeContainer}
	exclusive := am.SliverRequest{SliverType: am.SliverTypeExclusive, Exclusive: true}
	with := func(n am.Node, f func(*am.Node)) am.Node { f(&n); return n }
	for _, tc := range []struct {
		name string
		n    am.Node
		s    am.SliverRequest
		want bool
	}{
		{"container on empty node", shared, container, true},
		{"container on full node", with(shared, func(n *am.Node) { n.Used = 2 }), container, false},
		{"container on unavailable node", with(shared, func(n *am.Node) { n.Available = false }), container, false},
		{"container on exclusively held node", with(shared, func(n *am.Node) { n.Exclusive = true }), container, false},
		{"container on exclusive-only node", with(shared, func(n *am.Node) { n.SliverTypes = both[1:] }), container, false},
		{"exclusive on empty node", shared, exclusive, true},
		{"exclusive on used node", with(shared, func(n *am.Node) { n.Used = 1 }), exclusive, false},
		{"exclusive on container-only node", with(shared, func(n *am.Node) { n.SliverTypes = both[:1] }), exclusive, false},
		{"container with exclusive=true", shared, am.SliverRequest{SliverType: am.SliverTypeContainer, Exclusive: true}, true},
		{"bound by derived URN", shared, am.SliverRequest{SliverType: am.SliverTypeContainer, ComponentID: "urn:publicid:IDN+x+node+n1"}, true},
		{"bound elsewhere", shared, am.SliverRequest{SliverType: am.SliverTypeContainer, ComponentID: "urn:publicid:IDN+x+node+n2"}, false},
		{"bound by URN", with(shared, func(n *am.Node) { n.ComponentID = "urn:publicid:IDN+x+node+n1" }),
			am.SliverRequest{SliverType: am.SliverTypeContainer, ComponentID: "URN:publicid:IDN+x+node+n1"}, true},
	} {
		if got := CanHost(tc.n, tc.s); got != tc.want {
			t.Errorf("%s: CanHost = %v, want %v", tc.name, got, tc.want)
		}
	}
	if !AvailableNow(shared) || AvailableNow(with(shared, func(n *am.Node) { n.Used = 2; n.SliverTypes = both[:1] })) {
		t.Error("AvailableNow")
	}
}
