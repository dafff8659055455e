package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/jackc/pgx/v5"
)

// JSON shapes of the jsonb columns: lower-case keys an operator can read.
type jsonExecute struct {
	Shell   string `json:"shell"`
	Command string `json:"command"`
}

type jsonInstall struct {
	URL  string `json:"url"`
	Path string `json:"path"`
}

type jsonUser struct {
	URN  string   `json:"urn"`
	Keys []string `json:"keys"`
}

func executeJSON(xs []am.Execute) []byte {
	out := make([]jsonExecute, 0, len(xs))
	for _, x := range xs {
		out = append(out, jsonExecute(x))
	}
	b, _ := json.Marshal(out)
	return b
}

func installJSON(xs []am.Install) []byte {
	out := make([]jsonInstall, 0, len(xs))
	for _, x := range xs {
		out = append(out, jsonInstall(x))
	}
	b, _ := json.Marshal(out)
	return b
}

func usersJSON(xs []am.User) []byte {
	out := make([]jsonUser, 0, len(xs))
	for _, x := range xs {
		keys := x.Keys
		if keys == nil {
			keys = []string{}
		}
		out = append(out, jsonUser{URN: x.URN, Keys: keys})
	}
	b, _ := json.Marshal(out)
	return b
}

const sliverColumns = `v.urn, v.slice_urn, v.client_id, v.node_name, n.component_urn, v.sliver_type,
	v.image_url, v.image_sha256, v.image_id, v.execute, v.install, v.users, v.node_xml,
	v.allocation_state, v.operational_state, v.expires_at, v.error, v.resource_status,
	v.created_by, v.created_at, v.exit_code, v.log_url, v.data_url, v.requested_end_at, v.interfaces`

func scanSliver(row pgx.Row) (am.Sliver, error) {
	var s am.Sliver
	var execute, install, users, interfaces []byte
	var alloc, op string
	var endWanted *time.Time
	err := row.Scan(&s.URN, &s.SliceURN, &s.ClientID, &s.NodeName, &s.ComponentID, &s.SliverType,
		&s.Image.URL, &s.Image.SHA256, &s.ImageID, &execute, &install, &users, &s.NodeXML,
		&alloc, &op, &s.Expires, &s.Error, &s.ResourceMsg, &s.CreatedBy, &s.CreatedAt, &s.ExitCode, &s.LogURL, &s.DataURL, &endWanted, &interfaces)
	if err != nil {
		return s, err
	}
	s.Interfaces = parseInterfaces(interfaces)
	s.Allocation, s.Operational = am.AllocationState(alloc), am.OperationalState(op)
	s.Exclusive = s.SliverType == am.SliverTypeExclusive
	var xs []jsonExecute
	var is []jsonInstall
	var us []jsonUser
	// An operator may have edited these by hand: a malformed value reads as
	// empty rather than making the sliver unreadable.
	_ = json.Unmarshal(execute, &xs)
	_ = json.Unmarshal(install, &is)
	_ = json.Unmarshal(users, &us)
	for _, x := range xs {
		s.Execute = append(s.Execute, am.Execute(x))
	}
	for _, x := range is {
		s.Install = append(s.Install, am.Install(x))
	}
	for _, x := range us {
		s.Users = append(s.Users, am.User{URN: x.URN, Keys: x.Keys})
	}
	s.Expires = s.Expires.UTC()
	if endWanted != nil {
		s.EndWanted = endWanted.UTC()
	}
	s.CreatedAt = s.CreatedAt.UTC()
	return s, nil
}

func collectSlivers(rows pgx.Rows, err error) ([]am.Sliver, error) {
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (am.Sliver, error) { return scanSliver(r) })
}

// SliverSlices maps known sliver URNs to their slices.
func (s *Store) SliverSlices(ctx context.Context, urns []string) (map[string]string, error) {
	rows, err := s.pool.Query(ctx, "SELECT urn, slice_urn FROM slivers WHERE urn = ANY($1)", urns)
	if err != nil {
		return nil, cleanError("look up slivers", err)
	}
	defer rows.Close()
	out := make(map[string]string, len(urns))
	for rows.Next() {
		var u, sl string
		if err := rows.Scan(&u, &sl); err != nil {
			return nil, cleanError("look up slivers", err)
		}
		out[u] = sl
	}
	if err := rows.Err(); err != nil {
		return nil, cleanError("look up slivers", err)
	}
	return out, nil
}

// Slivers returns the live slivers of a slice (or the named ones).
func (s *Store) Slivers(ctx context.Context, sliceURN string, urns []string) ([]am.Sliver, error) {
	q := "SELECT " + sliverColumns + " FROM slivers v JOIN nodes n ON n.name = v.node_name WHERE v.slice_urn = $1"
	args := []any{sliceURN}
	if urns != nil {
		q += " AND v.urn = ANY($2)"
		args = append(args, urns)
	}
	out, err := collectSlivers(s.pool.Query(ctx, q+" ORDER BY v.created_at, v.urn", args...))
	if err != nil {
		return nil, cleanError("read slivers", err)
	}
	return out, nil
}

// Allocate: see am.Store.
//
// Placement is optimistic. The candidate nodes and their usage are read from
// a snapshot, without locks; Plan chooses nodes; then only the chosen nodes
// are locked, without waiting (SKIP LOCKED), and their usage read again under
// the lock. A chosen node that another allocation holds is marked busy and a
// node whose usage moved is brought up to date, and Plan runs again on what
// is now known; the plan stands once every node it uses is locked and was
// planned on its locked state. So an allocation locks the nodes it places on
// (plus, rarely, a node a re-plan gave up) and allocations on different nodes
// neither wait for nor see each other.
//
// The nodes a request names (bound) are locked first, waiting, in name
// order. That is the only statement that waits for node locks, and it runs
// before the transaction holds any other, so allocations cannot deadlock on
// nodes. When a request fits only with nodes that were busy, the transaction
// is rolled back and run again, this time waiting for those nodes in that
// first statement; after Attempts runs the caller gets BUSY. Whatever this
// logic gets wrong, node_slots' primary key and the capacity triggers still
// refuse a double booking (a clash on node_slots is retried by inTx).
func (s *Store) Allocate(ctx context.Context, a am.AllocateTx) ([]am.Sliver, error) {
	attempts := s.Attempts
	if attempts < 1 {
		attempts = 1
	}
	var waitFor []string
	for attempt := 1; ; attempt++ {
		out, err := s.allocate(ctx, a, waitFor)
		var busy *busyNodes
		if !errors.As(err, &busy) || attempt >= attempts {
			return out, err
		}
		waitFor = busy.names
	}
}

// busyNodes is the cause of the BUSY error of an allocation that needs nodes
// other allocations hold: the next attempt waits for them.
type busyNodes struct{ names []string }

func (b *busyNodes) Error() string { return "busy nodes: " + strings.Join(b.names, ", ") }

func errBusyNodes(busy map[string]bool) error {
	names := keys(busy)
	shown := names
	if len(shown) > 10 {
		shown = shown[:10]
	}
	msg := fmt.Sprintf("the request needs nodes that concurrent allocations hold (%s); try again", strings.Join(shown, ", "))
	return am.Wrap(am.Busy, &busyNodes{names: names}, "%s", msg)
}

// maxPlanRounds bounds how often one transaction re-plans after finding its
// chosen nodes busy or changed, before it starts over waiting for them.
const maxPlanRounds = 4

func (s *Store) allocate(ctx context.Context, a am.AllocateTx, waitFor []string) ([]am.Sliver, error) {
	var out []am.Sliver
	var placedOn []am.Node // the nodes placed on, as they will be after commit
	err := s.inTx(ctx, "Allocate", "Allocate", a.Actor, func(tx pgx.Tx) error {
		out, placedOn = nil, nil
		place := func(nodes []am.Node, planned []am.Sliver) error {
			var err error
			if out, err = insertSlivers(ctx, tx, a, nodes, planned); err == nil {
				placedOn = afterPlacement(nodes, planned)
			}
			return err
		}
		var shutDown bool
		var credExp *time.Time
		if !a.SliceExpires.IsZero() {
			credExp = &a.SliceExpires
		}
		// Upserting locks the slice row: allocations in one slice are serial,
		// and a concurrent Shutdown is either before us (seen here) or after.
		err := tx.QueryRow(ctx, `INSERT INTO slices (urn, credential_expires_at) VALUES ($1, $2)
			ON CONFLICT (urn) DO UPDATE SET credential_expires_at = coalesce(EXCLUDED.credential_expires_at, slices.credential_expires_at)
			RETURNING shut_down`, a.SliceURN, credExp).Scan(&shutDown)
		if err != nil {
			return err
		}
		if shutDown && !a.Operator {
			return am.Errorf(am.Forbidden, "slice %s has been shut down; only an operator can restore it", a.SliceURN)
		}
		// The only statement that waits for node locks, and the first to take
		// any: bound nodes and those an earlier attempt found busy.
		held := map[string]bool{}
		if len(a.Bound) > 0 || len(waitFor) > 0 {
			names, err := lockNodes(ctx, tx, "NOT retired AND (component_urn = ANY($1) OR name = ANY($2))", "", nonNil(a.Bound), nonNil(waitFor))
			if err != nil {
				return err
			}
			for _, n := range names {
				held[n] = true
			}
		}
		// What Plan sees: the locked nodes as they are now; the others as of
		// this statement's snapshot, or from the recent copy (see nodeView).
		var nodes []am.Node
		readHere := true // nodes were read in this transaction
		switch {
		case a.AllBound:
			nodes, err = queryNodes(ctx, tx, "n.name = ANY($1)", keys(held))
		default:
			if nodes = s.view.recent(s.viewMaxAge(), time.Now()); nodes != nil {
				readHere = false
				if len(held) > 0 {
					var locked []am.Node
					if locked, err = queryNodes(ctx, tx, "n.name = ANY($1)", keys(held)); err == nil {
						nodes = overlay(nodes, locked)
					}
				}
			} else {
				nodes, err = s.readView(ctx, tx)
			}
		}
		if err != nil {
			return err
		}
		busy := map[string]bool{}
		for round := 1; ; round++ {
			planned, err := a.Plan(nodes)
			if c := am.CodeOf(err); err != nil && (c == am.TooBig || c == am.Unavailable) {
				if !readHere {
					// The copy may be out of date: refuse only on a fresh
					// list (which also shows the locked nodes as they are).
					if nodes, err = s.readView(ctx, tx); err != nil {
						return err
					}
					readHere = true
					if len(busy) > 0 {
						nodes = slices.Clone(nodes) // the new recent copy is shared
						markBusy(nodes, busy)
					}
					continue
				}
				if len(busy) > 0 {
					// It might fit once the busy nodes are free.
					return errBusyNodes(busy)
				}
			}
			if err != nil {
				return err
			}
			var need []string
			for _, p := range planned {
				if !held[p.NodeName] && !slices.Contains(need, p.NodeName) {
					need = append(need, p.NodeName)
				}
			}
			if len(need) == 0 {
				return place(nodes, planned)
			}
			if round > maxPlanRounds {
				for _, n := range need {
					busy[n] = true
				}
				return errBusyNodes(busy)
			}
			got, err := lockNodes(ctx, tx, "NOT retired AND name = ANY($1)", "SKIP LOCKED", need)
			if err != nil {
				return err
			}
			fresh, err := queryNodes(ctx, tx, "n.name = ANY($1)", got)
			if err != nil {
				return err
			}
			for _, n := range got {
				held[n] = true
			}
			s.view.patch(fresh)
			var changed bool
			if nodes, changed = refreshView(nodes, need, fresh, busy); !changed {
				// Every node the plan uses is ours and as Plan saw it.
				return place(nodes, planned)
			}
		}
	})
	if err != nil {
		return nil, err
	}
	s.view.patch(placedOn)
	return out, nil
}

// readView reads every node that is not retired and keeps the list as the
// process's recent copy.
func (s *Store) readView(ctx context.Context, tx pgx.Tx) ([]am.Node, error) {
	at := time.Now()
	nodes, err := queryAllNodes(ctx, tx)
	if err != nil {
		return nil, err
	}
	s.view.set(nodes, at)
	return nodes, nil
}

func (s *Store) viewMaxAge() time.Duration {
	if s.ViewMaxAge == 0 {
		return DefaultViewMaxAge
	}
	return s.ViewMaxAge
}

// markBusy shows the busy nodes to Plan as unavailable.
func markBusy(nodes []am.Node, busy map[string]bool) {
	for i := range nodes {
		if busy[nodes[i].Name] {
			nodes[i].Available = false
			nodes[i].Reason = busyReason
		}
	}
}

const busyReason = "busy with another allocation; try again"

// refreshView puts what was read under lock (fresh) into the nodes Plan
// sees, for the nodes the plan needed: a node that could not be locked is
// marked busy (unavailable to Plan, and recorded in busy), a locked one takes
// its current state. changed says whether Plan would now see anything new;
// nodes itself is left as it is.
func refreshView(nodes []am.Node, need []string, fresh []am.Node, busy map[string]bool) ([]am.Node, bool) {
	now := make(map[string]am.Node, len(fresh))
	for _, n := range fresh {
		now[n.Name] = n
	}
	var newer []am.Node
	for _, name := range need {
		f, ok := now[name]
		if !ok {
			// Held by another allocation (or retired meanwhile).
			busy[name] = true
			continue
		}
		i := slices.IndexFunc(nodes, func(n am.Node) bool { return n.Name == name })
		if i < 0 || !samePlacementState(nodes[i], f) {
			newer = append(newer, f)
		}
	}
	if len(newer) == 0 && len(fresh) == len(need) {
		return nodes, false
	}
	// nodes may be the shared recent copy: change a copy.
	out := overlay(nodes, newer)
	markBusy(out, busy)
	return out, true
}

// samePlacementState reports whether Plan would treat a and b alike.
func samePlacementState(a, b am.Node) bool {
	return a.ComponentID == b.ComponentID && a.Capacity == b.Capacity && a.Used == b.Used &&
		a.Exclusive == b.Exclusive && a.Available == b.Available && slices.Equal(a.SliverTypes, b.SliverTypes)
}

// nonNil: a nil slice is NULL to PostgreSQL, and x = ANY(NULL) is NULL.
func nonNil(xs []string) []string {
	if xs == nil {
		return []string{}
	}
	return xs
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// lockNodes locks the nodes matching where in name order, FOR UPDATE with
// mode ("" waits, "SKIP LOCKED" does not), and returns their names.
func lockNodes(ctx context.Context, tx pgx.Tx, where, mode string, args ...any) ([]string, error) {
	rows, err := tx.Query(ctx, "SELECT name FROM nodes WHERE "+where+" ORDER BY name FOR UPDATE "+mode, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

func insertSlivers(ctx context.Context, tx pgx.Tx, a am.AllocateTx, nodes []am.Node, planned []am.Sliver) ([]am.Sliver, error) {
	capacity := make(map[string]int, len(nodes))
	urnOf := make(map[string]string, len(nodes))
	for _, n := range nodes {
		capacity[n.Name] = n.Capacity
		urnOf[n.Name] = n.ComponentID
	}
	names := make([]string, 0, len(planned))
	for _, p := range planned {
		names = append(names, p.NodeName)
	}
	// Slots in use on the nodes we place on (their rows are locked, so no
	// other allocation changes these; a Delete may only free some).
	taken := map[string]map[int]bool{}
	rows, err := tx.Query(ctx, "SELECT node_name, slot_no FROM node_slots WHERE node_name = ANY($1)", names)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var n string
		var slot int
		if err := rows.Scan(&n, &slot); err != nil {
			rows.Close()
			return nil, err
		}
		if taken[n] == nil {
			taken[n] = map[int]bool{}
		}
		taken[n][slot] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if err := allocateLinkTags(ctx, tx, a.SliceURN, planned); err != nil {
		return nil, err
	}
	out := make([]am.Sliver, 0, len(planned))
	for _, p := range planned {
		c, ok := capacity[p.NodeName]
		if !ok {
			return nil, fmt.Errorf("placement chose node %q that was not offered", p.NodeName)
		}
		if taken[p.NodeName] == nil {
			taken[p.NodeName] = map[int]bool{}
		}
		var slots []int
		if p.Exclusive || p.SliverType == am.SliverTypeExclusive {
			for i := 0; i < c; i++ {
				slots = append(slots, i)
			}
		} else {
			for i := 0; i < c; i++ {
				if !taken[p.NodeName][i] {
					slots = append(slots, i)
					break
				}
			}
		}
		// Slots the placement believed free may be gone; node_slots' primary
		// key would refuse them anyway, this just gives a clean message.
		for _, sl := range slots {
			if taken[p.NodeName][sl] {
				return nil, am.Errorf(am.TooBig, "node %s has no free slot for %s", p.NodeName, p.ClientID)
			}
		}
		if len(slots) == 0 {
			return nil, am.Errorf(am.TooBig, "node %s is full (%d slots)", p.NodeName, c)
		}
		_, err := tx.Exec(ctx, `INSERT INTO slivers (urn, slice_urn, node_name, sliver_type, client_id, image_url, image_sha256,
				execute, install, users, node_xml, allocation_state, operational_state, expires_at, requested_end_at, created_by, created_at, interfaces)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)`,
			p.URN, a.SliceURN, p.NodeName, p.SliverType, p.ClientID, p.Image.URL, p.Image.SHA256,
			executeJSON(p.Execute), installJSON(p.Install), usersJSON(p.Users), p.NodeXML,
			string(am.Allocated), string(p.Operational), p.Expires, nullTime(p.EndWanted), a.Actor, a.Now, interfacesJSON(p.Interfaces))
		if err != nil {
			if c, constraint := pgCode(err); c == codeUniqueViolated && constraint == "slivers_slice_urn_client_id_key" {
				return nil, am.Errorf(am.AlreadyExists, "slice %s already has a sliver with client_id %q here", a.SliceURN, p.ClientID)
			}
			return nil, err
		}
		if _, err := tx.Exec(ctx, "INSERT INTO node_slots (node_name, slot_no, sliver_urn) SELECT $1, unnest($2::int[]), $3",
			p.NodeName, slots, p.URN); err != nil {
			return nil, err
		}
		for _, sl := range slots {
			taken[p.NodeName][sl] = true
		}
		p.SliceURN = a.SliceURN
		p.ComponentID = urnOf[p.NodeName]
		p.Allocation = am.Allocated
		p.CreatedBy = a.Actor
		p.CreatedAt = a.Now
		p.Exclusive = p.SliverType == am.SliverTypeExclusive
		out = append(out, p)
	}
	return out, nil
}

func nullTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// Change: see am.Store.
func (s *Store) Change(ctx context.Context, c am.ChangeTx) ([]am.ChangeResult, error) {
	var out []am.ChangeResult
	err := s.inTx(ctx, c.Event, c.Event, c.Actor, func(tx pgx.Tx) error {
		out = nil
		var shutDown bool
		err := tx.QueryRow(ctx, "SELECT shut_down FROM slices WHERE urn = $1 FOR SHARE", c.SliceURN).Scan(&shutDown)
		if errors.Is(err, pgx.ErrNoRows) {
			return am.Errorf(am.SearchFailed, "unknown slice %s", c.SliceURN)
		}
		if err != nil {
			return err
		}
		if shutDown && !c.Operator {
			return am.Errorf(am.Forbidden, "slice %s has been shut down by Shutdown; only an operator can restore it", c.SliceURN)
		}
		found, err := collectSlivers(tx.Query(ctx, "SELECT "+sliverColumns+
			" FROM slivers v JOIN nodes n ON n.name = v.node_name WHERE v.slice_urn = $1 AND v.urn = ANY($2) ORDER BY v.urn FOR UPDATE OF v",
			c.SliceURN, c.URNs))
		if err != nil {
			return err
		}
		byURN := make(map[string]am.Sliver, len(found))
		for _, f := range found {
			byURN[f.URN] = f
		}
		for _, urn := range c.URNs {
			cur, ok := byURN[urn]
			if !ok {
				e := am.Errorf(am.SearchFailed, "no sliver %s in slice %s here (deleted or expired?)", urn, c.SliceURN)
				if !c.BestEffort {
					return e
				}
				out = append(out, am.ChangeResult{Sliver: am.Sliver{URN: urn, SliceURN: c.SliceURN, Allocation: am.Unallocated}, Err: e})
				continue
			}
			next := cur
			if err := c.Apply(&next); err != nil {
				if !c.BestEffort {
					return err
				}
				out = append(out, am.ChangeResult{Sliver: cur, Err: err})
				continue
			}
			if err := writeSliver(ctx, tx, cur, next); err != nil {
				return err
			}
			out = append(out, am.ChangeResult{Sliver: next})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func writeSliver(ctx context.Context, tx pgx.Tx, cur, next am.Sliver) error {
	if next.Allocation == am.Unallocated {
		_, err := tx.Exec(ctx, "DELETE FROM slivers WHERE urn = $1", cur.URN)
		return err
	}
	_, err := tx.Exec(ctx, `UPDATE slivers SET allocation_state = $2, operational_state = $3, expires_at = $4, error = $5,
			resource_status = $6, users = $7
		WHERE urn = $1`,
		cur.URN, string(next.Allocation), string(next.Operational), next.Expires, next.Error, next.ResourceMsg, usersJSON(next.Users))
	return err
}

// Expire deletes due slivers, skipping rows other reapers or callers hold.
func (s *Store) Expire(ctx context.Context, now time.Time, limit int) ([]am.Sliver, error) {
	var out []am.Sliver
	err := s.inTx(ctx, "expire", "expire", "reaper", func(tx pgx.Tx) error {
		var err error
		out, err = collectSlivers(tx.Query(ctx, "SELECT "+sliverColumns+` FROM slivers v JOIN nodes n ON n.name = v.node_name
			WHERE v.urn IN (
				SELECT x.urn FROM slivers x JOIN slices sl ON sl.urn = x.slice_urn
				WHERE x.expires_at <= $1 AND NOT sl.shut_down
				ORDER BY x.expires_at LIMIT $2 FOR UPDATE OF x SKIP LOCKED)`, now, limit))
		if err != nil {
			return err
		}
		if len(out) == 0 {
			return nil
		}
		urns := make([]string, len(out))
		for i, v := range out {
			urns[i] = v.URN
		}
		_, err = tx.Exec(ctx, "DELETE FROM slivers WHERE urn = ANY($1)", urns)
		return err
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Expires.Before(out[j].Expires) })
	return out, nil
}
