package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/jackc/pgx/v5"
)

// What `geni-am admin` reads and changes. Every change runs through inTx with
// the event admin:<verb> and the operator as actor, so sliver_history says
// who did it.

// NodeRow is one node as the operator sees it.
type NodeRow struct {
	Name         string    `json:"name"`
	State        string    `json:"state"` // ok, drained, unavailable, retired
	Used         int       `json:"used"`
	Capacity     int       `json:"capacity"`
	SliverTypes  []string  `json:"sliver_types"`
	HardwareType string    `json:"hardware_type"`
	AgentURL     string    `json:"agent_url"`
	ComponentURN string    `json:"component_urn"`
	Reason       string    `json:"reason"`
	UpdatedAt    time.Time `json:"updated_at"`
}

// Nodes lists every node, retired ones included.
func (s *Store) Nodes(ctx context.Context) ([]NodeRow, error) {
	return s.nodes(ctx, "true")
}

// Node returns one node, or SEARCHFAILED.
func (s *Store) Node(ctx context.Context, name string) (*NodeRow, error) {
	rows, err := s.nodes(ctx, "n.name = $1", name)
	if err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return nil, am.Errorf(am.SearchFailed, "no node %q", name)
	}
	return &rows[0], nil
}

func (s *Store) nodes(ctx context.Context, where string, args ...any) ([]NodeRow, error) {
	rows, err := s.pool.Query(ctx, `SELECT n.name,
			CASE WHEN n.retired THEN 'retired' WHEN n.drained THEN 'drained' WHEN NOT n.available THEN 'unavailable' ELSE 'ok' END,
			(SELECT count(*) FROM node_slots s WHERE s.node_name = n.name AND (lower_inf(s.during) OR lower(s.during) <= now()))::int,
			n.capacity, n.sliver_types,
			n.hardware_type, n.agent_url, n.component_urn, n.unavailable_reason, n.updated_at
		FROM nodes n WHERE `+where+` ORDER BY n.name`, args...)
	if err != nil {
		return nil, cleanError("list nodes", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (NodeRow, error) {
		var n NodeRow
		err := r.Scan(&n.Name, &n.State, &n.Used, &n.Capacity, &n.SliverTypes, &n.HardwareType, &n.AgentURL,
			&n.ComponentURN, &n.Reason, &n.UpdatedAt)
		n.UpdatedAt = n.UpdatedAt.UTC()
		return n, err
	})
	return out, cleanError("list nodes", err)
}

// CalendarRow is one booking of a node (the node_calendar view): a
// reservation, or an exclusive sliver that holds the node from its
// allocation.
type CalendarRow struct {
	Start       time.Time `json:"start"`
	End         time.Time `json:"end"`
	Kind        string    `json:"kind"` // reservation or exclusive
	Slice       string    `json:"slice"`
	User        string    `json:"user"`
	Allocation  string    `json:"allocation"`
	Operational string    `json:"operational"`
	Sliver      string    `json:"sliver"`
}

// Calendar lists the bookings of a node that have not been reaped, by start
// (SEARCHFAILED for an unknown node).
func (s *Store) Calendar(ctx context.Context, node string) ([]CalendarRow, error) {
	if _, err := s.Node(ctx, node); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT starts_at, ends_at, CASE WHEN reservation THEN 'reservation' ELSE 'exclusive' END,
			slice_urn, created_by, allocation_state, operational_state, sliver_urn
		FROM node_calendar WHERE node_name = $1 ORDER BY starts_at, sliver_urn`, node)
	if err != nil {
		return nil, cleanError("node calendar", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (CalendarRow, error) {
		var c CalendarRow
		err := r.Scan(&c.Start, &c.End, &c.Kind, &c.Slice, &c.User, &c.Allocation, &c.Operational, &c.Sliver)
		c.Start, c.End = c.Start.UTC(), c.End.UTC()
		return c, err
	})
	return out, cleanError("node calendar", err)
}

// NewNode is what `admin nodes add` inserts.
type NewNode struct {
	Name         string
	ComponentURN string
	AgentURL     string
	HardwareType string // default docker-host
	SliverTypes  []string
	Capacity     int
}

// AddNode inserts a node; the next ListResources advertises it.
func (s *Store) AddNode(ctx context.Context, n NewNode) error {
	if n.HardwareType == "" {
		n.HardwareType = "docker-host"
	}
	if len(n.SliverTypes) == 0 {
		n.SliverTypes = []string{am.SliverTypeContainer}
	}
	if n.Capacity <= 0 {
		n.Capacity = 1
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO nodes (name, component_urn, agent_url, hardware_type, sliver_types, capacity)
		VALUES ($1, $2, $3, $4, $5, $6)`, n.Name, n.ComponentURN, n.AgentURL, n.HardwareType, n.SliverTypes, n.Capacity)
	if isUniqueViolation(err) {
		return am.Errorf(am.AlreadyExists, "node %s (or its component URN) already exists", n.Name)
	}
	if err != nil {
		return am.Wrap(am.BadArgs, err, "cannot add node %s: %v", n.Name, err)
	}
	return nil
}

// SetNodeState drains, undrains or retires a node. state is drained, ok or
// retired; reason is kept as unavailable_reason for drained.
func (s *Store) SetNodeState(ctx context.Context, name, state, reason string) error {
	var q string
	args := []any{name}
	switch state {
	case "drained":
		q = "UPDATE nodes SET drained = true, unavailable_reason = CASE WHEN $2 = '' THEN unavailable_reason ELSE $2 END WHERE name = $1"
		args = append(args, reason)
	case "ok":
		q = "UPDATE nodes SET drained = false, retired = false WHERE name = $1"
	case "retired":
		q = "UPDATE nodes SET retired = true, drained = true WHERE name = $1"
	default:
		return am.Errorf(am.BadArgs, "unknown node state %q", state)
	}
	tag, err := s.pool.Exec(ctx, q, args...)
	if err != nil {
		return cleanError("node state", err)
	}
	if tag.RowsAffected() == 0 {
		return am.Errorf(am.SearchFailed, "no node %q", name)
	}
	return nil
}

// SliceRow is one slice as the operator sees it.
type SliceRow struct {
	URN               string     `json:"urn"`
	Slivers           int        `json:"slivers"`
	ShutDown          bool       `json:"shut_down"`
	ShutDownBy        string     `json:"shut_down_by"`
	CredentialExpires *time.Time `json:"credential_expires"`
	CreatedAt         time.Time  `json:"created_at"`
}

// Slices lists slices, those with live slivers or shut down first.
func (s *Store) Slices(ctx context.Context, urn string) ([]SliceRow, error) {
	rows, err := s.pool.Query(ctx, `SELECT * FROM (
		SELECT sl.urn, (SELECT count(*) FROM slivers v WHERE v.slice_urn = sl.urn)::int AS n,
			sl.shut_down, sl.shut_down_by, sl.credential_expires_at, sl.created_at
		FROM slices sl WHERE $1 = '' OR sl.urn = $1) x
		ORDER BY (n > 0 OR shut_down) DESC, created_at DESC, urn`, urn)
	if err != nil {
		return nil, cleanError("list slices", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (SliceRow, error) {
		var x SliceRow
		err := r.Scan(&x.URN, &x.Slivers, &x.ShutDown, &x.ShutDownBy, &x.CredentialExpires, &x.CreatedAt)
		x.CreatedAt, x.CredentialExpires = x.CreatedAt.UTC(), utcOrNil(x.CredentialExpires)
		return x, err
	})
	return out, cleanError("list slices", err)
}

// SliverFilter narrows AdminSlivers; empty fields match everything.
type SliverFilter struct {
	Node  string
	Slice string
	User  string
	URN   string
	// Slices, when not nil, keeps only slivers of these slices (the
	// console's experimenter view: an empty list matches nothing).
	Slices []string
	Limit  int // at most this many, oldest first; 0: all
}

// AdminSlivers lists live slivers matching f, oldest first.
func (s *Store) AdminSlivers(ctx context.Context, f SliverFilter) ([]am.Sliver, error) {
	out, err := collectSlivers(s.pool.Query(ctx, "SELECT "+sliverColumns+` FROM slivers v JOIN nodes n ON n.name = v.node_name
		WHERE ($1 = '' OR v.node_name = $1) AND ($2 = '' OR v.slice_urn = $2) AND ($3 = '' OR v.created_by = $3)
		  AND ($4 = '' OR v.urn = $4) AND ($5::text[] IS NULL OR v.slice_urn = ANY($5))
		ORDER BY v.created_at, v.urn LIMIT $6`, f.Node, f.Slice, f.User, f.URN, f.Slices, limitOrAll(f.Limit)))
	return out, cleanError("list slivers", err)
}

// utcOrNil is a nullable timestamp as every row type shows times: in UTC.
func utcOrNil(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// limitOrAll is a LIMIT argument: NULL (no limit) for 0.
func limitOrAll(n int) any {
	if n <= 0 {
		return nil
	}
	return n
}

// HistoryRow is one row of sliver_history.
type HistoryRow struct {
	At         time.Time  `json:"at"`
	Event      string     `json:"event"`
	Actor      string     `json:"actor"`
	Allocation string     `json:"allocation"`
	State      string     `json:"operational"`
	Expires    *time.Time `json:"expires"`
	Node       string     `json:"node"`
	Error      string     `json:"error"`
}

// SliverHistory returns the story of one sliver, live or gone.
func (s *Store) SliverHistory(ctx context.Context, urn string) ([]HistoryRow, error) {
	rows, err := s.pool.Query(ctx, `SELECT at, event, actor, allocation_state, operational_state, expires_at, node_name, error
		FROM sliver_history WHERE sliver_urn = $1 ORDER BY id`, urn)
	if err != nil {
		return nil, cleanError("sliver history", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (HistoryRow, error) {
		var h HistoryRow
		err := r.Scan(&h.At, &h.Event, &h.Actor, &h.Allocation, &h.State, &h.Expires, &h.Node, &h.Error)
		h.At, h.Expires = h.At.UTC(), utcOrNil(h.Expires)
		return h, err
	})
	return out, cleanError("sliver history", err)
}

// SetSliverExpiry moves a live sliver's expiry (extend, or expire with now:
// the reaper then deletes it and tells the provisioner, as for any expiry).
func (s *Store) SetSliverExpiry(ctx context.Context, urn string, expires time.Time, event, actor string) error {
	return s.inTx(ctx, event, event, actor, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, "UPDATE slivers SET expires_at = $2 WHERE urn = $1", urn, expires)
		if code, constraint := pgCode(err); code == codeExclusionViolated && constraint == "node_slots_no_overlap" {
			return am.Wrap(am.Unavailable, err, "sliver %s cannot run until %s: its node is booked before then (admin nodes calendar)",
				urn, expires.UTC().Format(time.RFC3339))
		}
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return am.Errorf(am.SearchFailed, "no live sliver %s", urn)
		}
		return nil
	})
}

// AuditRow is one row of audit_log.
type AuditRow struct {
	At         time.Time       `json:"at"`
	LogID      string          `json:"log_id"`
	Method     string          `json:"method"`
	Code       string          `json:"code"`
	User       string          `json:"user"`
	Caller     string          `json:"caller"`
	SpeaksFor  bool            `json:"speaks_for"`
	Slice      string          `json:"slice"`
	Slivers    []string        `json:"slivers"`
	DurationMS float64         `json:"ms"`
	Output     string          `json:"output"`
	Issuer     string          `json:"credential_issuer"`
	Digest     string          `json:"credential_digest"`
	Options    json.RawMessage `json:"options"`
}

// AuditFilter narrows Audit; empty fields match everything.
type AuditFilter struct {
	Slice  string
	User   string // matches the user or the caller URN
	LogID  string
	Node   string // calls that named a sliver which was ever on this node
	Sliver string // calls that named this sliver
	Since  time.Time
	Limit  int // default 100
}

// Audit returns audit rows matching f, oldest first (the newest Limit).
func (s *Store) Audit(ctx context.Context, f AuditFilter) ([]AuditRow, error) {
	if f.Limit <= 0 {
		f.Limit = 100
	}
	rows, err := s.pool.Query(ctx, `SELECT * FROM (
		SELECT at, log_id, method, code_name, user_urn, caller_urn, speaks_for, slice_urn, sliver_urns, duration_ms,
			output, credential_issuer, credential_digest, options::text, id
		FROM audit_log
		WHERE ($1 = '' OR slice_urn = $1) AND ($2 = '' OR user_urn = $2 OR caller_urn = $2)
		  AND ($3 = '' OR log_id = $3) AND at >= $4
		  AND ($6 = '' OR sliver_urns && ARRAY(SELECT DISTINCT sliver_urn FROM sliver_history WHERE node_name = $6))
		  AND ($7 = '' OR $7 = ANY(sliver_urns))
		ORDER BY at DESC, id DESC LIMIT $5) x ORDER BY at, id`, f.Slice, f.User, f.LogID, f.Since, f.Limit, f.Node, f.Sliver)
	if err != nil {
		return nil, cleanError("audit", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (AuditRow, error) {
		var a AuditRow
		var id int64
		err := r.Scan(&a.At, &a.LogID, &a.Method, &a.Code, &a.User, &a.Caller, &a.SpeaksFor, &a.Slice, &a.Slivers,
			&a.DurationMS, &a.Output, &a.Issuer, &a.Digest, &a.Options, &id)
		a.At = a.At.UTC()
		return a, err
	})
	return out, cleanError("audit", err)
}

// HasTable reports whether a table exists (jobs comes with a later migration).
func (s *Store) HasTable(ctx context.Context, name string) (bool, error) {
	var reg *string
	err := s.pool.QueryRow(ctx, "SELECT to_regclass($1)::text", name).Scan(&reg)
	return reg != nil, err
}

// JobFilter narrows Jobs; empty fields match everything (a filter on a
// column the table lacks is ignored).
type JobFilter struct {
	Node  string
	Slice string
	State string
	Limit int // default 100
}

// jobColumns are shown when the table has them, in this order.
var jobColumns = []string{"id", "kind", "state", "node_name", "sliver_urn", "attempts", "created_at", "finished_at", "last_error"}

// Jobs returns rows of the provisioner's jobs table, newest first, as column
// names and text values. The table belongs to another migration and may be
// absent (IsNoJobs) or have other columns than those shown.
func (s *Store) Jobs(ctx context.Context, f JobFilter) ([]string, [][]string, error) {
	ok, err := s.HasTable(ctx, "jobs")
	if err != nil {
		return nil, nil, cleanError("jobs", err)
	}
	if !ok {
		return nil, nil, errNoJobs
	}
	if f.Limit <= 0 {
		f.Limit = 100
	}
	rows, err := s.pool.Query(ctx, `SELECT column_name FROM information_schema.columns
		WHERE table_name = 'jobs' AND table_schema = current_schema() ORDER BY ordinal_position`)
	if err != nil {
		return nil, nil, cleanError("jobs", err)
	}
	have, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, nil, cleanError("jobs", err)
	}
	has := map[string]bool{}
	for _, c := range have {
		has[c] = true
	}
	var cols []string
	for _, c := range jobColumns {
		if has[c] {
			cols = append(cols, c)
		}
	}
	if len(cols) == 0 {
		cols = have
	}
	var where []string
	var args []any
	for col, v := range map[string]string{"node_name": f.Node, "slice_urn": f.Slice, "state": f.State} {
		if v != "" && has[col] {
			args = append(args, v)
			where = append(where, fmt.Sprintf("%s = $%d", pgx.Identifier{col}.Sanitize(), len(args)))
		}
	}
	q := "SELECT "
	for i, c := range cols {
		if i > 0 {
			q += ", "
		}
		q += pgx.Identifier{c}.Sanitize()
	}
	q += " FROM jobs"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	args = append(args, f.Limit)
	q += fmt.Sprintf(" ORDER BY 1 DESC LIMIT $%d", len(args))
	data, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, nil, cleanError("jobs", err)
	}
	defer data.Close()
	var out [][]string
	for data.Next() {
		vals, err := data.Values()
		if err != nil {
			return nil, nil, cleanError("jobs", err)
		}
		row := make([]string, len(vals))
		for i, v := range vals {
			row[i] = textOf(v)
		}
		out = append(out, row)
	}
	return cols, out, cleanError("jobs", data.Err())
}

var errNoJobs = errors.New("this database has no jobs table (the provisioner's migration is not applied)")

// IsNoJobs reports the error Jobs returns when the table does not exist.
func IsNoJobs(err error) bool { return errors.Is(err, errNoJobs) }

func textOf(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case time.Time:
		return x.UTC().Format(time.RFC3339)
	case []byte:
		return string(x)
	case string:
		return x
	}
	return fmt.Sprint(v)
}
