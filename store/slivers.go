package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
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

// jsonArray is the JSON array of xs, each converted to its column form (an
// empty list is [], never null). The column types hold only strings, so
// json.Marshal cannot fail.
func jsonArray[T, J any](xs []T, column func(T) J) []byte {
	out := make([]J, 0, len(xs))
	for _, x := range xs {
		out = append(out, column(x))
	}
	b, _ := json.Marshal(out)
	return b
}

func executeJSON(xs []am.Execute) []byte {
	return jsonArray(xs, func(x am.Execute) jsonExecute { return jsonExecute(x) })
}

// jsonRun is slivers.run: <geniam:run> as granted (NULL when absent).
type jsonRun struct {
	Restart    string   `json:"restart"`
	MaxRetries int      `json:"max_retries,omitempty"`
	TimeLimit  int64    `json:"time_limit,omitempty"`
	Env        []string `json:"env,omitempty"`
	Args       []string `json:"args,omitempty"`
}

// runJSON is slivers.run of r: NULL (nil) when the request had none.
func runJSON(r *am.Run) json.RawMessage {
	if r == nil {
		return nil
	}
	b, _ := json.Marshal(jsonRun(*r)) // strings and integers only: cannot fail
	return b
}

func installJSON(xs []am.Install) []byte {
	return jsonArray(xs, func(x am.Install) jsonInstall { return jsonInstall(x) })
}

func usersJSON(xs []am.User) []byte {
	return jsonArray(xs, func(x am.User) jsonUser {
		keys := x.Keys
		if keys == nil {
			keys = []string{}
		}
		return jsonUser{URN: x.URN, Keys: keys}
	})
}

const sliverColumns = `v.urn, v.slice_urn, v.client_id, v.node_name, n.component_urn, v.sliver_type,
	v.image_url, v.image_sha256, v.image_id, v.execute, v.install, v.users, v.node_xml,
	v.allocation_state, v.operational_state, v.expires_at, v.error, v.resource_status,
	v.created_by, v.created_at, v.exit_code, v.log_url, v.data_url, v.requested_end_at, v.interfaces, v.starts_at,
	v.login_host, v.login_port, v.login_user, v.stdout_tail, v.stderr_tail, v.run`

func scanSliver(row pgx.Row) (am.Sliver, error) { return scanSliverNext(row, false) }

// nextBookingColumn is the start of the next booking of any slot a sliver
// holds, after its window (NULL: none): how far Renew and Provision may move
// the sliver's end.
const nextBookingColumn = `(SELECT min(lower(o.during)) FROM node_slots m
	JOIN node_slots o ON o.node_name = m.node_name AND o.slot_no = m.slot_no AND o.sliver_urn <> m.sliver_urn
	WHERE m.sliver_urn = v.urn AND NOT lower_inf(o.during) AND (lower_inf(m.during) OR lower(o.during) > lower(m.during)))`

// scanSliverNext reads sliverColumns and, withNextBooking, nextBookingColumn.
func scanSliverNext(row pgx.Row, withNextBooking bool) (am.Sliver, error) {
	var s am.Sliver
	var execute, install, users, interfaces, run []byte
	var alloc, op string
	var endWanted, starts *time.Time
	dest := []any{&s.URN, &s.SliceURN, &s.ClientID, &s.NodeName, &s.ComponentID, &s.SliverType,
		&s.Image.URL, &s.Image.SHA256, &s.ImageID, &execute, &install, &users, &s.NodeXML,
		&alloc, &op, &s.Expires, &s.Error, &s.ResourceMsg, &s.CreatedBy, &s.CreatedAt, &s.ExitCode, &s.LogURL, &s.DataURL, &endWanted, &interfaces,
		&starts}
	// geniam_delete returns the columns up to starts_at; every query with
	// sliverColumns has those of migration 0007 after them too.
	base := len(dest)
	if withNextBooking {
		base++
	}
	if fd, ok := row.(interface {
		FieldDescriptions() []pgconn.FieldDescription
	}); !ok || len(fd.FieldDescriptions()) > base {
		dest = append(dest, &s.LoginHost, &s.LoginPort, &s.LoginUser, &s.StdoutTail, &s.StderrTail, &run)
	}
	var next *time.Time
	if withNextBooking {
		dest = append(dest, &next)
	}
	err := row.Scan(dest...)
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
	if len(run) > 0 {
		var r jsonRun
		if json.Unmarshal(run, &r) == nil {
			s.Run = &am.Run{Restart: r.Restart, MaxRetries: r.MaxRetries, TimeLimit: r.TimeLimit, Env: r.Env, Args: r.Args}
		}
	}
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
	if starts != nil {
		s.Starts = starts.UTC()
	}
	if next != nil {
		s.NextBooking = next.UTC()
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
// Placement is optimistic and the write is one statement. Plan runs here, in
// Go, on the process's recent node list (see nodeView) or on a list read now;
// then geniam_allocate (migrations/functions/geniam_allocate.sql) makes the
// whole write in one round trip: it records the slice, locks the nodes the
// plan places on without waiting (SKIP LOCKED), checks under those locks that
// the plan still holds on each of them (room, availability, no exclusive
// holder), and inserts the slivers and their slots. When the plan no longer
// holds it writes nothing and says which nodes another allocation holds
// (busy) and which filled up or changed: the busy ones are shown to Plan as
// unavailable, the changed ones are read again, and Plan runs again. So an
// allocation locks only the nodes it places on, and allocations on different
// nodes neither wait for nor see each other.
//
// A request is refused (TOOBIG, UNAVAILABLE, ...) only by a Plan on a list
// read during this call. When it fits only with nodes that were busy, the
// next call waits for those nodes; that wait, together with the wait for the
// nodes the request names (bound), is the first lock the statement takes on
// nodes and runs in name order, so allocations cannot deadlock on nodes.
// After Attempts such waits the caller gets BUSY. Whatever this logic gets
// wrong, node_slots' primary key and the capacity triggers still refuse a
// double booking (a clash on node_slots is retried).
func (s *Store) Allocate(ctx context.Context, a am.AllocateTx) ([]am.Sliver, error) {
	attempts := max(s.Attempts, 1)
	nodes, stale := s.view.recent(s.viewMaxAge(), time.Now())
	if stale && s.view.startRefresh() {
		go func() {
			defer s.view.refreshed()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			_, _ = s.readView(ctx) // on failure the next Allocate tries again
		}()
	}
	readHere := nodes == nil // nodes will have been read during this call
	if readHere {
		var err error
		if nodes, err = s.readView(ctx); err != nil {
			return nil, cleanError("Allocate", err)
		}
	}
	busy := map[string]bool{}
	var waitFor []string
	waits := 0
	for round := 1; ; round++ {
		planned, err := a.Plan(candidates(nodes, a.Bound, a.AllBound, busy))
		if err != nil {
			if !readHere {
				// The copy may be out of date: refuse only on a fresh list.
				if nodes, err = s.readView(ctx); err != nil {
					return nil, cleanError("Allocate", err)
				}
				readHere = true
				continue
			}
			if c := am.CodeOf(err); len(busy) > 0 && (c == am.TooBig || c == am.Unavailable) {
				// It might fit once the busy nodes are free: wait for them.
				if waits++; waits >= attempts {
					return nil, errBusyNodes(busy)
				}
				waitFor = union(waitFor, slices.Sorted(maps.Keys(busy)))
				busy = map[string]bool{}
				continue
			}
			return nil, err
		}
		out, after, conflict, err := s.place(ctx, a, nodes, planned, waitFor)
		if err != nil {
			return nil, cleanError("Allocate", err)
		}
		if conflict == nil {
			if len(nodes) <= patchLimit {
				s.view.patch(after)
			}
			return out, nil
		}
		for _, n := range conflict.Busy {
			busy[n] = true
		}
		if round >= attempts*maxPlanRounds {
			for _, n := range conflict.Changed {
				busy[n] = true
			}
			return nil, errBusyNodes(busy)
		}
		if len(conflict.Changed) > 0 {
			fresh, err := queryNodes(ctx, s.pool, "n.name = ANY($1)", conflict.Changed)
			if err != nil {
				return nil, cleanError("Allocate", err)
			}
			s.view.patch(fresh)
			nodes = overlay(nodes, fresh)
		}
	}
}

// busyNodes is the cause of the BUSY error of an allocation that needs nodes
// other allocations hold.
type busyNodes struct{ names []string }

func (b *busyNodes) Error() string { return "busy nodes: " + strings.Join(b.names, ", ") }

func errBusyNodes(busy map[string]bool) error {
	names := slices.Sorted(maps.Keys(busy))
	shown := names
	if len(shown) > 10 {
		shown = shown[:10]
	}
	msg := fmt.Sprintf("the request needs nodes that concurrent allocations hold (%s); try again", strings.Join(shown, ", "))
	return am.Wrap(am.Busy, &busyNodes{names: names}, "%s", msg)
}

// patchLimit: on a node list longer than this, an Allocate does not write
// what it took into the recent copy. The copy is shared, so a patch copies it
// whole: on 1,000 nodes 250 KB per Allocate (57 µs and the garbage, 5 % of
// the aggregate's CPU in an Allocate+Delete run), on 10,000 nodes 1.5 MB.
// What it took shows at the next read (cache.nodes); meanwhile placement on
// a long list rarely picks the same node twice (ties are shuffled), a node
// that filled up is caught by geniam_allocate's check, and that patch
// (rare) is still written. On a short list, where the next Allocate would
// likely pick the same node, patching is cheap.
const patchLimit = 256

// maxPlanRounds bounds how often one Allocate plans again, per attempt,
// after finding its chosen nodes busy or changed.
const maxPlanRounds = 4

// readView reads every node that is not retired and keeps the list as the
// process's recent copy.
func (s *Store) readView(ctx context.Context) ([]am.Node, error) {
	at := time.Now()
	nodes, err := queryAllNodes(ctx, s.pool)
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

// candidates is what Plan sees: only the bound nodes when every request node
// is bound, and the busy nodes as unavailable. nodes itself (possibly the
// shared recent copy) is not changed.
func candidates(nodes []am.Node, bound []string, allBound bool, busy map[string]bool) []am.Node {
	if !allBound && len(busy) == 0 {
		return nodes
	}
	out := make([]am.Node, 0, len(nodes))
	for _, n := range nodes {
		if allBound && !slices.Contains(bound, n.ComponentID) {
			continue
		}
		if busy[n.Name] {
			n.Available = false
			n.Reason = busyReason
		}
		out = append(out, n)
	}
	return out
}

const busyReason = "busy with another allocation; try again"

// samePlacementState reports whether Plan would treat a and b alike.
func samePlacementState(a, b am.Node) bool {
	return a.ComponentID == b.ComponentID && a.Capacity == b.Capacity && a.Used == b.Used &&
		a.Exclusive == b.Exclusive && a.Available == b.Available && slices.Equal(a.SliverTypes, b.SliverTypes) &&
		(a.Links == nil) == (b.Links == nil) && (a.Links == nil || *a.Links == *b.Links) &&
		a.BusyUntil.Equal(b.BusyUntil) && slices.EqualFunc(a.Bookings, b.Bookings, func(x, y am.Booking) bool {
		return x.SliverURN == y.SliverURN && x.Start.Equal(y.Start) && x.End.Equal(y.End)
	})
}

// nonNil: a nil slice is NULL to PostgreSQL, and x = ANY(NULL) is NULL.
func nonNil(xs []string) []string {
	if xs == nil {
		return []string{}
	}
	return xs
}

func union(a, b []string) []string {
	out := slices.Clone(a)
	for _, x := range b {
		if !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	sort.Strings(out)
	return out
}

// placeConflict is geniam_allocate's answer when the plan no longer holds
// (SQLSTATE GN001): nothing was written.
type placeConflict struct {
	Busy    []string `json:"busy"`    // nodes another transaction holds (or retired)
	Changed []string `json:"changed"` // locked, but without room for the plan now
}

// SQLSTATEs raised by geniam_allocate.
const (
	codePlanOutdated = "GN001"
	codeShutDown     = "GN002"
	codeClientIDUsed = "GN003"
	codeNoSuchSliver = "GN004"
	codeLinkTagTaken = "GN005"
	codeLinkUsed     = "GN006"
	codeBookingLimit = "GN007"
)

// plannedSliver is one element of geniam_allocate's p_slivers.
type plannedSliver struct {
	URN              string          `json:"urn"`
	Node             string          `json:"node"`
	Type             string          `json:"type"`
	ClientID         string          `json:"client_id"`
	ImageURL         string          `json:"image_url"`
	ImageSHA256      string          `json:"image_sha256"`
	Execute          json.RawMessage `json:"execute_list"`
	Install          json.RawMessage `json:"install_list"`
	Users            json.RawMessage `json:"users"`
	NodeXML          string          `json:"node_xml"`
	OperationalState string          `json:"operational_state"`
	ExpiresAt        time.Time       `json:"expires_at"`
	RequestedEndAt   *time.Time      `json:"requested_end_at"`
	Interfaces       json.RawMessage `json:"interfaces"`
	Run              json.RawMessage `json:"run,omitempty"`
}

// plannedJSON is geniam_allocate's p_slivers.
func plannedJSON(planned []am.Sliver) ([]byte, error) {
	args := make([]plannedSliver, 0, len(planned))
	for _, p := range planned {
		typ := p.SliverType
		if p.Exclusive {
			typ = am.SliverTypeExclusive
		}
		var end *time.Time
		if !p.EndWanted.IsZero() {
			t := p.EndWanted.Truncate(time.Microsecond)
			end = &t
		}
		args = append(args, plannedSliver{URN: p.URN, Node: p.NodeName, Type: typ, ClientID: p.ClientID,
			ImageURL: p.Image.URL, ImageSHA256: p.Image.SHA256, Execute: executeJSON(p.Execute),
			Install: installJSON(p.Install), Users: usersJSON(p.Users), NodeXML: p.NodeXML,
			OperationalState: string(p.Operational), ExpiresAt: p.Expires.Truncate(time.Microsecond), RequestedEndAt: end,
			Interfaces: interfacesJSON(p.Interfaces), Run: runJSON(p.Run)})
	}
	return json.Marshal(args)
}

// place runs geniam_allocate for planned (placed on nodes), retrying lost
// races. It returns the new slivers and the placed-on nodes as they are now,
// or the conflict that made the function write nothing.
func (s *Store) place(ctx context.Context, a am.AllocateTx, nodes []am.Node, planned []am.Sliver, waitFor []string) ([]am.Sliver, []am.Node, *placeConflict, error) {
	onNode := make(map[string]am.Node, len(planned))
	for _, p := range planned {
		if _, ok := onNode[p.NodeName]; !ok {
			i, found := slices.BinarySearchFunc(nodes, p.NodeName, byName)
			if !found {
				return nil, nil, nil, fmt.Errorf("placement chose node %q that was not offered", p.NodeName)
			}
			onNode[p.NodeName] = nodes[i]
		}
	}
	var credExp *time.Time
	if !a.SliceExpires.IsZero() {
		credExp = &a.SliceExpires
	}
	var starts *time.Time
	if !a.Starts.IsZero() {
		t := a.Starts.Truncate(time.Microsecond)
		starts = &t
	}
	var bookLimit *time.Duration
	if a.BookLimit > 0 {
		bookLimit = &a.BookLimit
	}
	links := am.LinkTags(planned)
	var err error
	var after []am.Node
	var conflict *placeConflict
	for attempt := 0; ; attempt++ {
		// Link tags (VNIs) are drawn at random from 16 million before the
		// call; one another link holds makes the function write nothing
		// (GN005) and new ones are drawn.
		tags := make(map[string]int, len(links))
		for _, l := range links {
			tags[l] = minLinkTag + rand.IntN(am.MaxLinkTag-minLinkTag+1)
		}
		am.SetLinkTags(planned, tags)
		doc, jerr := plannedJSON(planned)
		if jerr != nil {
			return nil, nil, nil, jerr
		}
		tagDoc, jerr := json.Marshal(tags)
		if jerr != nil {
			return nil, nil, nil, jerr
		}
		call := func() error {
			after, conflict = nil, nil
			rows, err := s.pool.Query(ctx, "SELECT node_name, used, held_exclusively FROM geniam_allocate($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
				a.Actor, a.SliceURN, credExp, a.Operator, nonNil(a.Bound), nonNil(waitFor), doc, a.Now, tagDoc,
				starts, bookLimit, am.ProjectOf(a.SliceURN))
			if err != nil {
				return err
			}
			for rows.Next() {
				var name string
				var used int
				var excl bool
				if err := rows.Scan(&name, &used, &excl); err != nil {
					rows.Close()
					return err
				}
				if n, ok := onNode[name]; ok {
					n.Used, n.Exclusive = used, excl
					if starts != nil {
						// The new bookings, for the next plans on this copy.
						n.Bookings = slices.Clone(n.Bookings)
						for _, p := range planned {
							if p.NodeName == name {
								n.Bookings = append(n.Bookings, am.Booking{Start: *starts, End: p.Expires.Truncate(time.Microsecond),
									SliverURN: p.URN, SliceURN: a.SliceURN, User: a.Actor})
							}
						}
						sort.Slice(n.Bookings, func(i, j int) bool { return n.Bookings[i].Start.Before(n.Bookings[j].Start) })
					}
					after = append(after, n)
				}
			}
			rows.Close()
			err = rows.Err()
			var pe *pgconn.PgError
			if !errors.As(err, &pe) {
				return err
			}
			switch pe.Code {
			case codePlanOutdated:
				conflict = &placeConflict{}
				if err := json.Unmarshal([]byte(pe.Detail), conflict); err != nil {
					return fmt.Errorf("geniam_allocate: unreadable conflict %q: %w", pe.Detail, err)
				}
				return nil
			case codeShutDown:
				return am.SliceShutDown(a.SliceURN)
			case codeClientIDUsed:
				return am.Errorf(am.AlreadyExists, "slice %s already has a sliver with client_id %q here", a.SliceURN, pe.Detail)
			case codeLinkUsed:
				return am.Errorf(am.AlreadyExists, "slice %s already has a link %q", a.SliceURN, pe.Detail)
			case codeBookingLimit:
				var over struct {
					Node   string  `json:"node"`
					Booked float64 `json:"booked"`
				}
				_ = json.Unmarshal([]byte(pe.Detail), &over)
				return am.Errorf(am.Refused, "node %s: you (or your project) have booked %s of it already; with this window that is more than the limit of %s per node",
					over.Node, time.Duration(over.Booked*float64(time.Second)).Round(time.Second), a.BookLimit)
			}
			if pe.Code == codeUniqueViolated && pe.ConstraintName == "slivers_slice_urn_client_id_key" {
				return am.Errorf(am.AlreadyExists, "slice %s already has a sliver with a client_id of this request", a.SliceURN)
			}
			return err
		}
		err = s.retry(ctx, call)
		if c, _ := pgCode(err); c == codeLinkTagTaken {
			if attempt < 50 {
				continue
			}
			return nil, nil, nil, am.Errorf(am.Unavailable, "no free link tag found for the links of this request; try again")
		}
		break
	}
	if err != nil || conflict != nil {
		return nil, nil, conflict, err
	}
	out := make([]am.Sliver, 0, len(planned))
	for _, p := range planned {
		p.SliceURN = a.SliceURN
		p.ComponentID = onNode[p.NodeName].ComponentID
		p.Allocation = am.Allocated
		p.CreatedBy = a.Actor
		p.CreatedAt = a.Now
		p.Starts = a.Starts
		p.Exclusive = p.SliverType == am.SliverTypeExclusive
		out = append(out, p)
	}
	return out, after, nil, nil
}

// Change: see am.Store.
//
// Two round trips: one batch opens the transaction, tags it for the history
// trigger, locks the slice row shared and reads the slivers under lock; Apply
// decides in Go; a second batch writes every change (one DELETE for all the
// deleted slivers) and commits.
func (s *Store) Change(ctx context.Context, c am.ChangeTx) ([]am.ChangeResult, error) {
	var out []am.ChangeResult
	err := s.retry(ctx, func() error {
		var err error
		out, err = s.change(ctx, c)
		return err
	})
	if err != nil {
		return nil, cleanError(c.Event, err)
	}
	return out, nil
}

func (s *Store) change(ctx context.Context, c am.ChangeTx) (out []am.ChangeResult, err error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Release()
	defer func() {
		if err != nil && conn.Conn().PgConn().TxStatus() != 'I' {
			// A connection left in a transaction is closed by Release.
			_, _ = conn.Exec(context.WithoutCancel(ctx), "ROLLBACK")
		}
	}()
	read := &pgx.Batch{}
	read.Queue("BEGIN")
	read.Queue("SELECT set_config('geniam.event', $1, true), set_config('geniam.actor', $2, true)", c.Event, c.Actor)
	read.Queue("SELECT shut_down FROM slices WHERE urn = $1 FOR SHARE", c.SliceURN)
	read.Queue("SELECT "+sliverColumns+", "+nextBookingColumn+
		" FROM slivers v JOIN nodes n ON n.name = v.node_name WHERE v.slice_urn = $1 AND v.urn = ANY($2) ORDER BY v.urn FOR UPDATE OF v",
		c.SliceURN, c.URNs)
	br := conn.SendBatch(ctx, read)
	var shutDown bool
	var found []am.Sliver
	err = func() error {
		defer br.Close()
		if _, err := br.Exec(); err != nil {
			return err
		}
		if _, err := br.Exec(); err != nil {
			return err
		}
		err := br.QueryRow().Scan(&shutDown)
		if errors.Is(err, pgx.ErrNoRows) {
			return am.Errorf(am.SearchFailed, "unknown slice %s", c.SliceURN)
		}
		if err != nil {
			return err
		}
		rows, err := br.Query()
		if err != nil {
			return err
		}
		found, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (am.Sliver, error) { return scanSliverNext(r, true) })
		return err
	}()
	if err != nil {
		return nil, err
	}
	if shutDown && !c.Operator {
		return nil, am.SliceShutDown(c.SliceURN)
	}
	byURN := make(map[string]am.Sliver, len(found))
	for _, f := range found {
		byURN[f.URN] = f
	}
	write := &pgx.Batch{}
	var deleted []string
	out, err = c.Each(func(urn string) (am.Sliver, bool) {
		cur, ok := byURN[urn]
		return cur, ok
	}, func(cur, next am.Sliver) {
		if next.Allocation == am.Unallocated {
			deleted = append(deleted, cur.URN)
		} else {
			queueSliverUpdate(write, cur, next)
		}
	})
	if err != nil {
		return nil, err
	}
	if len(deleted) > 0 {
		write.Queue("DELETE FROM slivers WHERE urn = ANY($1)", deleted)
	}
	write.Queue("COMMIT")
	if err := conn.SendBatch(ctx, write).Close(); err != nil {
		if code, constraint := pgCode(err); code == codeExclusionViolated && constraint == "node_slots_no_overlap" {
			// A booking was made on the node after Apply read the slivers.
			return nil, am.Wrap(am.Unavailable, err, "%s: the node of a sliver was booked meanwhile from the end asked for; try again", c.Event)
		}
		return nil, err
	}
	return out, nil
}

func queueSliverUpdate(b *pgx.Batch, cur, next am.Sliver) {
	b.Queue(`UPDATE slivers SET allocation_state = $2, operational_state = $3, expires_at = $4, error = $5,
			resource_status = $6, users = $7
		WHERE urn = $1`,
		cur.URN, string(next.Allocation), string(next.Operational), next.Expires, next.Error, next.ResourceMsg, usersJSON(next.Users))
}

// Delete: see am.Store. One statement, geniam_delete
// (migrations/0010_reservations.sql; at its next change it moves to
// migrations/functions).
func (s *Store) Delete(ctx context.Context, d am.DeleteTx) ([]am.Sliver, error) {
	var out []am.Sliver
	err := s.retry(ctx, func() error {
		var err error
		out, err = collectSlivers(s.pool.Query(ctx, "SELECT * FROM geniam_delete($1, $2, $3, $4)",
			d.Actor, d.SliceURN, d.URNs, d.Operator))
		var pe *pgconn.PgError
		if errors.As(err, &pe) {
			switch pe.Code {
			case codeShutDown:
				return am.SliceShutDown(d.SliceURN)
			case codeNoSuchSliver:
				return &am.Err{Code: am.SearchFailed, URN: pe.Detail, Msg: "no sliver " + pe.Detail + " at this aggregate (deleted or expired)"}
			}
		}
		return err
	})
	if err != nil {
		return nil, cleanError("Delete", err)
	}
	if d.URNs == nil {
		sort.Slice(out, func(i, j int) bool {
			if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
				return out[i].CreatedAt.Before(out[j].CreatedAt)
			}
			return out[i].URN < out[j].URN
		})
	} else {
		at := make(map[string]int, len(d.URNs))
		for i, u := range d.URNs {
			at[u] = i
		}
		sort.Slice(out, func(i, j int) bool { return at[out[i].URN] < at[out[j].URN] })
	}
	return out, nil
}

// NextExpiry returns when the next sliver Expire would delete expires (zero:
// none): the first row of the expiry index outside shut-down slices.
func (s *Store) NextExpiry(ctx context.Context) (time.Time, error) {
	var t time.Time
	err := s.pool.QueryRow(ctx, `SELECT v.expires_at FROM slivers v
		WHERE NOT EXISTS (SELECT 1 FROM slices sl WHERE sl.urn = v.slice_urn AND sl.shut_down)
		ORDER BY v.expires_at LIMIT 1`).Scan(&t)
	if errors.Is(err, pgx.ErrNoRows) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, cleanError("next expiry", err)
	}
	return t.UTC(), nil
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
