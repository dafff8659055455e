package store

import (
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/geniam/geniam/am"
)

// DefaultViewMaxAge is how old the node list an unbound Allocate plans on
// may be when Store.ViewMaxAge is zero.
const DefaultViewMaxAge = time.Second

// nodeView is the process's recent copy of every node that is not retired,
// with usage, on which unbound allocations plan. Reading 1,000 nodes costs
// more than the rest of an Allocate; a copy up to ViewMaxAge old is as good a
// guide, because Allocate's statement locks and checks every node it places
// on before it trusts what the copy said about it, and Allocate refuses a
// request (TOOBIG) only on a list read during the call. What Allocate learns
// is written back, and so is what its own allocations take while the list is
// short enough to copy cheaply (patchLimit).
//
// Past ViewMaxAge the copy is read again in the background, once (not by
// every Allocate of that moment: on 10,000 nodes that read set Allocate's
// p99), and Allocates plan on the older copy meanwhile, up to staleFactor
// times ViewMaxAge; past that they wait for a fresh read.
//
// The slice is never changed in place: readers share it, writers replace it.
type nodeView struct {
	mu         sync.Mutex
	nodes      []am.Node
	read       time.Time
	refreshing bool // a background read is under way
}

// staleFactor: how many times ViewMaxAge old a copy Allocate plans on while
// it is read again in the background.
const staleFactor = 5

// recent returns the list when it was read less than maxAge ago, or, with
// stale true, less than staleFactor times maxAge ago; else nil. The caller
// must not modify it.
func (v *nodeView) recent(maxAge time.Duration, now time.Time) (nodes []am.Node, stale bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.nodes == nil || maxAge <= 0 || now.Before(v.read) {
		return nil, false
	}
	switch age := now.Sub(v.read); {
	case age < maxAge:
		return v.nodes, false
	case age < staleFactor*maxAge:
		return v.nodes, true
	}
	return nil, false
}

// startRefresh reports whether the caller is to read the list again in the
// background (no other read is under way); it must call refreshed after.
func (v *nodeView) startRefresh() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.refreshing {
		return false
	}
	v.refreshing = true
	return true
}

func (v *nodeView) refreshed() {
	v.mu.Lock()
	v.refreshing = false
	v.mu.Unlock()
}

// set replaces the list with one read from the database at read.
func (v *nodeView) set(nodes []am.Node, read time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if read.Before(v.read) {
		return // a newer list is already here
	}
	v.nodes, v.read = nodes, read
}

// patch writes newer states of some nodes into the list (without making it
// count as freshly read).
func (v *nodeView) patch(newer []am.Node) {
	if len(newer) == 0 {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.nodes != nil && !knows(v.nodes, newer) {
		v.nodes = overlay(v.nodes, newer)
	}
}

// knows reports whether nodes already shows every node of newer as Plan
// would see it (the usual case: then nothing needs copying).
func knows(nodes, newer []am.Node) bool {
	for _, n := range newer {
		i, found := slices.BinarySearchFunc(nodes, n.Name, byName)
		if !found || !samePlacementState(nodes[i], n) {
			return false
		}
	}
	return true
}

func byName(x am.Node, name string) int { return strings.Compare(x.Name, name) }

// overlay returns a copy of nodes (in name order) with the nodes of newer in
// place of those of the same name; newer nodes not in the list are added.
func overlay(nodes, newer []am.Node) []am.Node {
	out := slices.Clone(nodes)
	for _, n := range newer {
		i, found := slices.BinarySearchFunc(out, n.Name, byName)
		if found {
			out[i] = n
		} else {
			out = slices.Insert(out, i, n)
		}
	}
	return out
}
