package am

import (
	"context"
	"time"
)

// Store is the aggregate's persistent state: inventory, slices, slivers and
// their history (implemented by package store on PostgreSQL). Every method
// that changes state runs in one transaction and retries serialization
// failures itself; what it returns is an *Err with a caller-safe message
// (Busy when it gave up retrying, ServerError for anything internal), never a
// raw database error.
type Store interface {
	// Inventory returns the nodes that are not retired, with their current
	// usage, and the inventory version, read from one snapshot.
	Inventory(ctx context.Context) (*Inventory, error)

	// InventoryVersion returns the inventory version alone (a cheap read:
	// ListResources asks it on every call to validate its cache).
	InventoryVersion(ctx context.Context) (int64, error)

	// Slice returns what the aggregate knows of a slice, or nil when it has
	// never seen it.
	Slice(ctx context.Context, urn string) (*Slice, error)

	// SliverSlices maps each known live sliver URN among urns to its slice URN;
	// unknown URNs are left out.
	SliverSlices(ctx context.Context, urns []string) (map[string]string, error)

	// Slivers returns the live slivers of a slice in creation order; with
	// urns, only those (unknown ones are left out).
	Slivers(ctx context.Context, sliceURN string, urns []string) ([]Sliver, error)

	// Allocate places and inserts new slivers in one transaction: it records
	// the slice, refuses a shut-down slice (unless AllocateTx.Operator), calls
	// Plan on the candidate nodes with their usage, locks the nodes the plan
	// uses (and only those), makes sure the plan still holds on them, takes
	// the slots of the planned slivers and records history.
	Allocate(ctx context.Context, tx AllocateTx) ([]Sliver, error)

	// Change applies a state change to named slivers of one slice, each locked
	// while ChangeTx.Apply decides its new state. See ChangeTx.
	Change(ctx context.Context, tx ChangeTx) ([]ChangeResult, error)

	// Delete deletes slivers of one slice in one transaction and frees their
	// slots: the named ones, or with DeleteTx.URNs nil every live sliver of
	// the slice. A shut-down slice is refused (unless DeleteTx.Operator), and
	// so is a named sliver that is not a live sliver of the slice
	// (SEARCHFAILED, nothing deleted). It returns the deleted slivers as they
	// were, in the order of URNs or, for the whole slice, in creation order.
	Delete(ctx context.Context, tx DeleteTx) ([]Sliver, error)

	// Shutdown marks the slice shut down (recording it when unknown) and stops
	// its provisioned slivers without deleting them. Idempotent.
	Shutdown(ctx context.Context, sliceURN, actor string, now time.Time) error

	// RestoreSlice is the operator's undo of Shutdown.
	RestoreSlice(ctx context.Context, sliceURN, actor string) error

	// Expire deletes up to limit slivers whose expiry is at or before now,
	// skipping rows another process holds, and returns them. Slivers of
	// shut-down slices are kept for forensics.
	Expire(ctx context.Context, now time.Time, limit int) ([]Sliver, error)
}

// Inventory is the node list with usage and the version of the node table.
type Inventory struct {
	Version int64 // bumped by every change to the nodes table
	Nodes   []Node
}

// AllocateTx is one Allocate as the store runs it.
type AllocateTx struct {
	SliceURN     string
	SliceExpires time.Time // expiry of the slice credential, recorded on the slice
	Actor        string    // user URN, recorded in the history
	Operator     bool      // may allocate on a shut-down slice
	Now          time.Time
	// Bound lists the component URNs the request names; those nodes are
	// locked first, waiting for them. When every request node is bound
	// (AllBound), Plan sees only them; otherwise it sees every node that is
	// not retired, read without locks, and the store then locks the nodes
	// the plan chose. A node a concurrent allocation holds is shown to Plan
	// as unavailable ("busy"), so its refusals can name it.
	Bound    []string
	AllBound bool
	// Starts is the start of a reservation (zero: now). Every planned sliver
	// then holds its node for [Starts, its Expires), and BookLimit (0: none)
	// caps what the reservations of Actor, or of the slices of the
	// project of SliceURN (ProjectOf), may hold of one node's time that has
	// not ended (REFUSED beyond it).
	Starts    time.Time
	BookLimit time.Duration
	// Plan turns the nodes (with usage) into the new slivers, each with
	// NodeName set, or returns why the request does not fit (an *Err). It
	// must not have side effects: the store calls it again when what it saw
	// changed under a lock, and when it retries.
	Plan func(nodes []Node) ([]Sliver, error)
}

// ChangeTx is one state change of slivers (Provision, Renew, POA; Delete has
// its own, DeleteTx, which needs no Apply).
type ChangeTx struct {
	Event      string // recorded in sliver_history, e.g. "Provision" or "geni_start"
	Actor      string
	Operator   bool // may change a shut-down slice
	SliceURN   string
	URNs       []string // the slivers, all of SliceURN
	BestEffort bool
	// Apply decides the new state of one locked sliver: it edits s and
	// returns nil, or returns why it cannot (an *Err naming the sliver).
	// Setting s.Allocation to Unallocated deletes the sliver and frees its
	// slots. Without BestEffort the first error rolls back the whole change
	// and is returned; with BestEffort a failing sliver keeps its state and
	// its error is reported in its ChangeResult.
	Apply func(s *Sliver) error
}

// DeleteTx is one Delete as the store runs it.
type DeleteTx struct {
	Actor    string // user URN, recorded in the history
	Operator bool   // may delete in a shut-down slice
	SliceURN string
	URNs     []string // slivers of SliceURN; nil: all of its live slivers
}

// Each runs Apply on the slivers in order for a Store, with the best-effort
// rule: lookup finds a live sliver of the slice, and write records the new
// state of each sliver whose change succeeded. Without BestEffort the first
// failure (a missing sliver, or Apply's refusal) is the error and the Store
// must keep nothing written; with it, a failure is reported in its result and
// the others go on.
func (tx ChangeTx) Each(lookup func(urn string) (Sliver, bool), write func(cur, next Sliver)) ([]ChangeResult, error) {
	var out []ChangeResult
	for _, urn := range tx.URNs {
		cur, found := lookup(urn)
		r := ChangeResult{Sliver: cur}
		if !found {
			r.Sliver = Sliver{URN: urn, SliceURN: tx.SliceURN, Allocation: Unallocated}
			r.Err = Errorf(SearchFailed, "no sliver %s in slice %s here (deleted or expired?)", urn, tx.SliceURN)
		} else if err := tx.Apply(&r.Sliver); err != nil {
			r.Sliver, r.Err = cur, err
		} else {
			write(cur, r.Sliver)
		}
		if r.Err != nil && !tx.BestEffort {
			return nil, r.Err
		}
		out = append(out, r)
	}
	return out, nil
}

// ChangeResult is the outcome of a change for one sliver: its state after
// the change (or unchanged, with Err, when it failed under best effort).
type ChangeResult struct {
	Sliver Sliver
	Err    error
}
