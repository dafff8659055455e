package rspec

import (
	"strings"

	"github.com/geniam/geniam/am"
)

// AvailableNow reports whether n can take a new sliver of a type it offers:
// the advertisement's <available now="..."> and what geni_available filters on.
func AvailableNow(n am.Node) bool { return availableNow(&n) }

// CanHost reports whether node n can take sliver request s now, by the
// rules the advertisement states: the node is available and not held
// exclusively; a bound request names this node; an exclusive request (sliver
// type "exclusive" or exclusive="true") needs a node that offers the
// exclusive type and runs nothing; a container needs a node offering
// containers with a free slot. A placer that puts several slivers of one
// request on a node must count them into n.Used (or set n.Exclusive) as it goes.
func CanHost(n am.Node, s am.SliverRequest) bool {
	if !n.Available || n.Exclusive {
		return false
	}
	if s.ComponentID != "" && !sameNode(n, s.ComponentID) {
		return false
	}
	if s.Exclusive || s.SliverType == am.SliverTypeExclusive {
		return offers(&n, am.SliverTypeExclusive) && n.Used == 0
	}
	return offers(&n, am.SliverTypeContainer) && n.Free() > 0
}

// sameNode reports whether componentID names n (by its URN, or by its name
// when the inventory left the URN to be derived).
func sameNode(n am.Node, componentID string) bool {
	if n.ComponentID != "" {
		return strings.EqualFold(n.ComponentID, componentID)
	}
	u, err := am.ParseURN(componentID)
	return err == nil && u.Type == "node" && u.Name == n.Name
}
