package am

import (
	"fmt"
	"sort"
	"strings"
)

// PlacementPolicy chooses among the nodes that can take an unbound sliver.
type PlacementPolicy string

const (
	// Spread puts each unbound container sliver on the node with the most
	// free slots, so load (and the harm of one node failing) is spread.
	Spread PlacementPolicy = "spread"
	// Pack puts each unbound container sliver on the fullest node that
	// still has room, keeping whole nodes free for exclusive requests.
	Pack PlacementPolicy = "pack"
)

// ParsePlacementPolicy accepts "spread" (also "") and "pack".
func ParsePlacementPolicy(s string) (PlacementPolicy, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", string(Spread):
		return Spread, nil
	case string(Pack):
		return Pack, nil
	}
	return "", fmt.Errorf("unknown placement policy %q (want spread or pack)", s)
}

// IsExclusive reports whether a request asks for a whole node.
func (r SliverRequest) IsExclusive() bool {
	return r.Exclusive || r.SliverType == SliverTypeExclusive
}

// Place assigns every request to a node, returning the node names in request
// order. nodes are the candidates with their current usage (Used,
// Exclusive); the function is pure: the store calls it inside the Allocate
// transaction on locked node rows.
//
// Bound requests (ComponentID set) go to their node or fail; exclusive
// requests need an empty node that offers the exclusive sliver type (the
// smallest such node is chosen, to keep big ones for containers); container
// requests go where the policy says. A request that cannot fit fails the
// whole placement with TooBig (no room) or Unavailable (node unavailable),
// or BadArgs (unknown node, sliver type not offered), naming node and reason.
// Among equally good nodes the first by name wins.
func Place(policy PlacementPolicy, nodes []Node, reqs []SliverRequest) ([]string, error) {
	return place(policy, nodes, reqs, nil)
}

// PlaceShuffled is Place, except that among equally good nodes it picks one
// at random (intN(n) returns a number in [0, n), e.g. math/rand/v2.IntN).
// Concurrent allocations read the same inventory; choosing among equals at
// random keeps them off each other's nodes, so they rarely wait for or retry
// on one another (on a 1,000-node inventory, spread would otherwise send
// every allocation to the first empty node).
func PlaceShuffled(policy PlacementPolicy, nodes []Node, reqs []SliverRequest, intN func(n int) int) ([]string, error) {
	return place(policy, nodes, reqs, intN)
}

func place(policy PlacementPolicy, nodes []Node, reqs []SliverRequest, intN func(n int) int) ([]string, error) {
	type state struct {
		node      *Node // read only: nodes may be shared
		used      int   // slots taken, including this placement
		exclusive bool  // held whole, including this placement
	}
	// One allocation for all states: Place runs on every Allocate, over
	// every node of a big inventory.
	states := make([]state, len(nodes))
	all := make([]*state, len(nodes))
	for i := range nodes {
		states[i] = state{node: &nodes[i], used: nodes[i].Used, exclusive: nodes[i].Exclusive}
		all[i] = &states[i]
	}
	byName := func(i, j int) bool { return all[i].node.Name < all[j].node.Name }
	if !sort.SliceIsSorted(all, byName) {
		sort.Slice(all, byName)
	}
	var byURN map[string]*state // only when some request is bound
	for _, r := range reqs {
		if r.ComponentID != "" {
			byURN = make(map[string]*state, len(all))
			for _, st := range all {
				byURN[st.node.ComponentID] = st
			}
			break
		}
	}
	free := func(st *state) int {
		if st.exclusive {
			return 0
		}
		return st.node.Capacity - st.used
	}
	usable := func(st *state, exclusive bool) bool {
		return canTake(st.node, st.used, st.exclusive, exclusive)
	}
	take := func(st *state, exclusive bool) {
		if exclusive {
			st.exclusive = true
			st.used = st.node.Capacity
		} else {
			st.used++
		}
	}

	out := make([]string, len(reqs))
	// Bound requests first: they have no choice, the others do.
	order := make([]int, 0, len(reqs))
	for i, r := range reqs {
		if r.ComponentID != "" {
			order = append(order, i)
		}
	}
	for i, r := range reqs {
		if r.ComponentID == "" && r.IsExclusive() {
			order = append(order, i)
		}
	}
	for i, r := range reqs {
		if r.ComponentID == "" && !r.IsExclusive() {
			order = append(order, i)
		}
	}
	for _, i := range order {
		r := reqs[i]
		ex := r.IsExclusive()
		kind := sliverKind(ex)
		if r.ComponentID != "" {
			st, ok := byURN[r.ComponentID]
			if !ok {
				return nil, Errorf(BadArgs, "node %q (client_id %q): no such node at this aggregate", r.ComponentID, r.ClientID)
			}
			n := *st.node
			switch {
			case !offers(&n, ex):
				return nil, Errorf(BadArgs, "node %s (client_id %q) does not offer %s slivers (it offers %s)",
					n.Name, r.ClientID, kind, strings.Join(n.SliverTypes, ", "))
			case !n.Available:
				return nil, Errorf(Unavailable, "node %s (client_id %q) is unavailable: %s", n.Name, r.ClientID, reasonOr(n.Reason))
			case st.exclusive:
				return nil, Errorf(TooBig, "node %s (client_id %q) is held exclusively by another sliver", n.Name, r.ClientID)
			case ex && st.used > 0:
				return nil, Errorf(TooBig, "node %s (client_id %q) cannot be had exclusively: %d of its %d slots are in use",
					n.Name, r.ClientID, st.used, n.Capacity)
			case !ex && free(st) <= 0:
				return nil, Errorf(TooBig, "node %s (client_id %q) is full: %d of %d container slots in use",
					n.Name, r.ClientID, st.used, n.Capacity)
			}
			take(st, ex)
			out[i] = n.Name
			continue
		}
		var best *state
		ties := 0 // nodes as good as best seen so far, best included
		for _, st := range all {
			if !usable(st, ex) {
				continue
			}
			switch {
			case best == nil || better(policy, ex, st.node.Capacity, free(st), best.node.Capacity, free(best)):
				best, ties = st, 1
			case intN != nil && !better(policy, ex, best.node.Capacity, free(best), st.node.Capacity, free(st)):
				// As good as best: reservoir sampling keeps each of the
				// equals with the same chance.
				ties++
				if intN(ties) == 0 {
					best = st
				}
			}
		}
		if best == nil {
			// Say, node by node, why none fits.
			why := make([]string, 0, len(all))
			code := TooBig
			for _, st := range all {
				n := *st.node
				switch {
				case !offers(&n, ex):
					why = append(why, n.Name+": no "+kind+" slivers")
				case !n.Available:
					why = append(why, n.Name+": unavailable ("+reasonOr(n.Reason)+")")
				case st.exclusive:
					why = append(why, n.Name+": held exclusively")
				default:
					why = append(why, fmt.Sprintf("%s: %d of %d slots in use", n.Name, st.used, n.Capacity))
				}
			}
			if len(all) == 0 {
				why = append(why, "the aggregate has no nodes")
			}
			if allUnavailable(nodes) {
				code = Unavailable
			}
			return nil, Errorf(code, "no node can take %s sliver %q (the request needs %d slivers): %s",
				kind, r.ClientID, len(reqs), strings.Join(why, "; "))
		}
		take(best, ex)
		out[i] = best.node.Name
	}
	return out, nil
}

// better reports whether candidate a (capacity, free) beats b under policy.
// When neither beats the other they are equally good.
func better(policy PlacementPolicy, exclusive bool, capA, freeA, capB, freeB int) bool {
	if exclusive {
		return capA < capB
	}
	if policy == Pack {
		return freeA < freeB
	}
	return freeA > freeB
}

func allUnavailable(nodes []Node) bool {
	for _, n := range nodes {
		if n.Available {
			return false
		}
	}
	return len(nodes) > 0
}

// CanTake is the one "can this node take a sliver now" rule, for placement
// and for the advertisement's available flag: the node is available, offers
// the sliver type, is not held by an exclusive sliver, and has a free slot (a
// container) or nothing on it at all (an exclusive sliver).
func (n Node) CanTake(exclusive bool) bool { return canTake(&n, n.Used, n.Exclusive, exclusive) }

// Offers reports whether the node offers exclusive (or container) slivers.
func (n Node) Offers(exclusive bool) bool { return offers(&n, exclusive) }

// canTake is CanTake with the slots used and the exclusive hold as a
// placement in progress counts them.
func canTake(n *Node, used int, heldWhole, exclusive bool) bool {
	if !n.Available || heldWhole || !offers(n, exclusive) {
		return false
	}
	if exclusive {
		return used == 0
	}
	return n.Capacity-used > 0
}

func offers(n *Node, exclusive bool) bool {
	want := SliverTypeContainer
	if exclusive {
		want = SliverTypeExclusive
	}
	for _, t := range n.SliverTypes {
		if t == want {
			return true
		}
	}
	return false
}

func sliverKind(exclusive bool) string {
	if exclusive {
		return SliverTypeExclusive
	}
	return SliverTypeContainer
}

func reasonOr(s string) string {
	if s == "" {
		return "no reason given"
	}
	return s
}
