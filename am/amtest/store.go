// Package amtest has in-memory stand-ins for the interfaces package am
// defines, so that the lifecycle rules of am.Aggregate can be tested without
// PostgreSQL as well as with it (store's tests run the same operations on the
// real database). Store keeps the state in maps behind one mutex; Authorizer
// is a function-field fake. Nothing here is for production.
package amtest

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/geniam/geniam/am"
)

// Store is an in-memory am.Store. Every method runs under one lock, which
// stands in for the database's transactions; a failed Change leaves
// everything as it was, as a rolled-back transaction does.
type Store struct {
	mu      sync.Mutex
	version int64
	nodes   []am.Node // the inventory without usage; usage is counted from slivers
	slices  map[string]*am.Slice
	slivers map[string]am.Sliver
	order   map[string]int // creation order of slivers
	next    int
}

var _ am.Store = (*Store)(nil)

// NewStore returns a store holding nodes (their Used and Exclusive are
// ignored: usage comes from the slivers).
func NewStore(nodes ...am.Node) *Store {
	s := &Store{slices: map[string]*am.Slice{}, slivers: map[string]am.Sliver{}, order: map[string]int{}, version: 1}
	for _, n := range nodes {
		n.Used, n.Exclusive = 0, false
		s.nodes = append(s.nodes, n)
	}
	return s
}

// Inventory returns the nodes with their usage.
func (s *Store) Inventory(ctx context.Context) (*am.Inventory, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return &am.Inventory{Version: s.version, Nodes: s.withUsage()}, nil
}

func (s *Store) withUsage() []am.Node {
	out := make([]am.Node, len(s.nodes))
	copy(out, s.nodes)
	idx := map[string]int{}
	for i, n := range out {
		idx[n.Name] = i
	}
	for _, v := range s.slivers {
		i, ok := idx[v.NodeName]
		if !ok {
			continue
		}
		if v.Exclusive {
			out[i].Exclusive, out[i].Used = true, out[i].Capacity
		} else {
			out[i].Used++
		}
	}
	return out
}

// InventoryVersion changes whenever a sliver is added or removed.
func (s *Store) InventoryVersion(ctx context.Context) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.version, nil
}

// Slice returns a copy of the slice, or nil.
func (s *Store) Slice(ctx context.Context, urn string) (*am.Slice, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sl, ok := s.slices[urn]; ok {
		c := *sl
		return &c, nil
	}
	return nil, nil
}

// SliverSlices maps the known slivers among urns to their slices.
func (s *Store) SliverSlices(ctx context.Context, urns []string) (map[string]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]string{}
	for _, u := range urns {
		if v, ok := s.slivers[u]; ok {
			out[u] = v.SliceURN
		}
	}
	return out, nil
}

// Slivers returns the live slivers of a slice in creation order.
func (s *Store) Slivers(ctx context.Context, sliceURN string, urns []string) ([]am.Sliver, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	want := map[string]bool{}
	for _, u := range urns {
		want[u] = true
	}
	var out []am.Sliver
	for _, v := range s.slivers {
		if v.SliceURN == sliceURN && (urns == nil || want[v.URN]) {
			out = append(out, v)
		}
	}
	sort.Slice(out, func(i, j int) bool { return s.order[out[i].URN] < s.order[out[j].URN] })
	return out, nil
}

// Allocate records the slice, refuses a shut-down one, plans on the
// inventory and inserts the planned slivers.
func (s *Store) Allocate(ctx context.Context, tx am.AllocateTx) ([]am.Sliver, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sl := s.slices[tx.SliceURN]
	if sl == nil {
		sl = &am.Slice{URN: tx.SliceURN}
	}
	if sl.ShutDown && !tx.Operator {
		return nil, am.SliceShutDown(tx.SliceURN)
	}
	nodes := s.withUsage()
	if tx.AllBound {
		bound := map[string]bool{}
		for _, b := range tx.Bound {
			bound[b] = true
		}
		var only []am.Node
		for _, n := range nodes {
			if bound[n.ComponentID] {
				only = append(only, n)
			}
		}
		nodes = only
	}
	planned, err := tx.Plan(nodes)
	if err != nil {
		return nil, err
	}
	used := map[string]bool{}
	for _, v := range s.slivers {
		if v.SliceURN == tx.SliceURN {
			used[v.ClientID] = true
		}
	}
	for _, v := range planned {
		if _, dup := s.slivers[v.URN]; dup {
			return nil, am.Errorf(am.AlreadyExists, "sliver %s exists", v.URN)
		}
		if used[v.ClientID] {
			return nil, am.Errorf(am.AlreadyExists, "client_id %q is already used in slice %s", v.ClientID, tx.SliceURN)
		}
		used[v.ClientID] = true
	}
	if tx.SliceExpires.After(sl.Expires) {
		sl.Expires = tx.SliceExpires
	}
	s.slices[tx.SliceURN] = sl
	for _, v := range planned {
		s.slivers[v.URN] = v
		s.next++
		s.order[v.URN] = s.next
	}
	s.version++
	return planned, nil
}

// Change applies tx to its slivers; without best effort the first error
// changes nothing.
func (s *Store) Change(ctx context.Context, tx am.ChangeTx) ([]am.ChangeResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sl := s.slices[tx.SliceURN]
	if sl == nil {
		return nil, am.Errorf(am.SearchFailed, "unknown slice %s", tx.SliceURN)
	}
	if sl.ShutDown && !tx.Operator {
		return nil, am.SliceShutDown(tx.SliceURN)
	}
	writes := map[string]am.Sliver{}
	out, err := tx.Each(func(urn string) (am.Sliver, bool) {
		cur, ok := s.slivers[urn]
		return cur, ok && cur.SliceURN == tx.SliceURN
	}, func(cur, next am.Sliver) {
		// What the database keeps of a change (store.writeSliver).
		kept := cur
		kept.Allocation, kept.Operational, kept.Expires = next.Allocation, next.Operational, next.Expires
		kept.Error, kept.ResourceMsg, kept.Users = next.Error, next.ResourceMsg, next.Users
		writes[cur.URN] = kept
	})
	if err != nil {
		return nil, err
	}
	for urn, v := range writes {
		if v.Allocation == am.Unallocated {
			delete(s.slivers, urn)
			s.version++
		} else {
			s.slivers[urn] = v
		}
	}
	return out, nil
}

// Delete deletes the named slivers of a slice (all of them with URNs nil);
// an unknown one deletes nothing.
func (s *Store) Delete(ctx context.Context, tx am.DeleteTx) ([]am.Sliver, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sl := s.slices[tx.SliceURN]; sl != nil && sl.ShutDown && !tx.Operator {
		return nil, am.SliceShutDown(tx.SliceURN)
	}
	var out []am.Sliver
	if tx.URNs == nil {
		for _, v := range s.slivers {
			if v.SliceURN == tx.SliceURN {
				out = append(out, v)
			}
		}
		sort.Slice(out, func(i, j int) bool { return s.order[out[i].URN] < s.order[out[j].URN] })
	}
	for _, urn := range tx.URNs {
		v, ok := s.slivers[urn]
		if !ok || v.SliceURN != tx.SliceURN {
			return nil, &am.Err{Code: am.SearchFailed, URN: urn, Msg: "no sliver " + urn + " at this aggregate (deleted or expired)"}
		}
		out = append(out, v)
	}
	for _, v := range out {
		delete(s.slivers, v.URN)
	}
	if len(out) > 0 {
		s.version++
	}
	return out, nil
}

// Shutdown marks the slice shut down and stops its provisioned slivers.
func (s *Store) Shutdown(ctx context.Context, sliceURN, actor string, now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	sl := s.slices[sliceURN]
	if sl == nil {
		sl = &am.Slice{URN: sliceURN}
		s.slices[sliceURN] = sl
	}
	sl.ShutDown = true
	for urn, v := range s.slivers {
		if v.SliceURN == sliceURN && v.Allocation == am.Provisioned && v.Operational != am.NotReady {
			v.Operational, v.ResourceMsg = am.NotReady, "stopped: the slice was shut down"
			s.slivers[urn] = v
		}
	}
	return nil
}

// RestoreSlice undoes Shutdown.
func (s *Store) RestoreSlice(ctx context.Context, sliceURN, actor string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	sl := s.slices[sliceURN]
	if sl == nil {
		return am.Errorf(am.SearchFailed, "unknown slice %s", sliceURN)
	}
	sl.ShutDown = false
	return nil
}

// Expire deletes up to limit due slivers of slices that are not shut down,
// earliest expiry first.
func (s *Store) Expire(ctx context.Context, now time.Time, limit int) ([]am.Sliver, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var due []am.Sliver
	for _, v := range s.slivers {
		if sl := s.slices[v.SliceURN]; !v.Expires.After(now) && (sl == nil || !sl.ShutDown) {
			due = append(due, v)
		}
	}
	sort.Slice(due, func(i, j int) bool { return due[i].Expires.Before(due[j].Expires) })
	if len(due) > limit {
		due = due[:limit]
	}
	for _, v := range due {
		delete(s.slivers, v.URN)
	}
	if len(due) > 0 {
		s.version++
	}
	return due, nil
}
