package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// What the web console (am/console) reads besides the admin queries.

// AgentHealthRow is the last health poll of one node's agent.
type AgentHealthRow struct {
	Reachable bool
	Since     time.Time  // reachable or not since
	LastOK    *time.Time // last successful poll
	LastError string
	Unknown   []string // containers the agent runs that the aggregate does not know
	CheckedAt time.Time
}

// AgentHealth returns the last health poll per node name (nodes never polled
// are absent).
func (s *Store) AgentHealth(ctx context.Context) (map[string]AgentHealthRow, error) {
	rows, err := s.pool.Query(ctx, `SELECT node_name, reachable, since, last_ok_at, last_error, unknown_containers, checked_at
		FROM agent_health`)
	if err != nil {
		return nil, cleanError("agent health", err)
	}
	out := map[string]AgentHealthRow{}
	var name string
	var h AgentHealthRow
	_, err = pgx.ForEachRow(rows, []any{&name, &h.Reachable, &h.Since, &h.LastOK, &h.LastError, &h.Unknown, &h.CheckedAt}, func() error {
		h.Since, h.CheckedAt, h.LastOK = h.Since.UTC(), h.CheckedAt.UTC(), utcOrNil(h.LastOK)
		out[name] = h
		h = AgentHealthRow{}
		return nil
	})
	return out, cleanError("agent health", err)
}

// SlicesOfUser returns the slices in which user has allocated slivers (live
// ones, and those sliver_history remembers): what the console shows an
// experimenter as theirs.
func (s *Store) SlicesOfUser(ctx context.Context, user string) ([]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT slice_urn FROM slivers WHERE created_by = $1
		UNION SELECT slice_urn FROM sliver_history WHERE actor = $1 AND event = 'Allocate'
		ORDER BY 1`, user)
	if err != nil {
		return nil, cleanError("slices of user", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if out == nil {
		out = []string{}
	}
	return out, cleanError("slices of user", err)
}

// UsagePoint is the aggregate's use at one instant.
type UsagePoint struct {
	At      time.Time
	Slivers int // live slivers (allocated or provisioned)
	Nodes   int // nodes holding at least one of them
}

// Usage samples live slivers and nodes in use every step from since to now,
// from sliver_history (a sliver lives from its first row to its
// geni_unallocated row). At most 500 points.
//
// It reads only the slivers that lived in the window: those live now and
// those with a history row since then. Rows are appended in time order, so
// the window's rows are found by walking the primary key back from the end
// (no index on at is needed); the counting is done here.
func (s *Store) Usage(ctx context.Context, since time.Time, step time.Duration) ([]UsagePoint, error) {
	now := time.Now()
	if step <= 0 || now.Sub(since)/step > 500 {
		return nil, fmt.Errorf("usage: %v steps of %v is too many points", now.Sub(since), step)
	}
	rows, err := s.pool.Query(ctx, `WITH cut AS (
			SELECT coalesce((SELECT id FROM sliver_history WHERE at < $1 ORDER BY id DESC LIMIT 1), 0) AS id),
		lived AS (SELECT sliver_urn FROM sliver_history WHERE id > (SELECT id FROM cut)
			UNION SELECT urn FROM slivers)
		SELECT min(h.node_name), min(h.at), max(h.at) FILTER (WHERE h.allocation_state = 'geni_unallocated')
		FROM lived l JOIN sliver_history h ON h.sliver_urn = l.sliver_urn
		GROUP BY l.sliver_urn`, since)
	if err != nil {
		return nil, cleanError("usage", err)
	}
	n := int(now.Sub(since)/step) + 1 // samples at since + k*step, k < n
	index := func(t time.Time) int {  // the first sample at or after t
		k := int((t.Sub(since) + step - 1) / step)
		return max(0, min(k, n))
	}
	slivers := make([]int, n+1) // +1 at birth, -1 at death, summed below
	nodes := map[string][]int{}
	var node string
	var born time.Time
	var died *time.Time
	_, err = pgx.ForEachRow(rows, []any{&node, &born, &died}, func() error {
		from, to := index(born), n
		if died != nil {
			to = index(*died)
		}
		if from >= to {
			return nil
		}
		slivers[from]++
		slivers[to]--
		d := nodes[node]
		if d == nil {
			d = make([]int, n+1)
			nodes[node] = d
		}
		d[from]++
		d[to]--
		return nil
	})
	if err != nil {
		return nil, cleanError("usage", err)
	}
	out := make([]UsagePoint, n)
	live := 0
	for k := range out {
		live += slivers[k]
		out[k] = UsagePoint{At: since.Add(time.Duration(k) * step).UTC(), Slivers: live}
	}
	for _, d := range nodes {
		held := 0
		for k := range out {
			if held += d[k]; held > 0 {
				out[k].Nodes++
			}
		}
	}
	return out, nil
}

// ChangeMark is a value that moves whenever something the console shows
// changes: a sliver (any state, expiry or error change is a sliver_history
// row), an audit row, the inventory, a job or a health poll. Cheap: a few
// index-only maxima.
func (s *Store) ChangeMark(ctx context.Context) (string, error) {
	var mark string
	err := s.pool.QueryRow(ctx, `SELECT concat_ws('/',
			(SELECT max(id) FROM sliver_history), (SELECT max(id) FROM audit_log),
			(SELECT version FROM inventory_version),
			(SELECT max(id) || ':' || count(*) FILTER (WHERE state IN ('queued', 'running')) FROM jobs),
			(SELECT max(checked_at) FROM agent_health WHERE NOT reachable),
			(SELECT count(*) FROM agent_health WHERE reachable))`).Scan(&mark)
	return mark, cleanError("change mark", err)
}
