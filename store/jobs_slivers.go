package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/jackc/pgx/v5"
)

// What the provisioner reads and writes of slivers, nodes, archives and
// warnings (migration 0002).

// SliverByURN returns a live sliver, or nil when it is gone.
func (s *Store) SliverByURN(ctx context.Context, urn string) (*am.Sliver, error) {
	v, err := scanSliver(s.pool.QueryRow(ctx, "SELECT "+sliverColumns+" FROM slivers v JOIN nodes n ON n.name = v.node_name WHERE v.urn = $1", urn))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, cleanError("read sliver", err)
	}
	return &v, nil
}

// NodeSlivers returns the live provisioned slivers of a node.
func (s *Store) NodeSlivers(ctx context.Context, node string) ([]am.Sliver, error) {
	out, err := collectSlivers(s.pool.Query(ctx, "SELECT "+sliverColumns+` FROM slivers v JOIN nodes n ON n.name = v.node_name
		WHERE v.node_name = $1 AND v.allocation_state = 'geni_provisioned' AND (v.starts_at IS NULL OR v.starts_at <= now())
		ORDER BY v.urn`, node)) // a reservation before its start has nothing on the node yet
	if err != nil {
		return nil, cleanError("read slivers", err)
	}
	return out, nil
}

// AgentNode is a node as the provisioner sees it.
type AgentNode struct {
	Name     string
	AgentURL string
}

// AgentNodes lists the nodes (not retired) that have an agent URL.
func (s *Store) AgentNodes(ctx context.Context) ([]AgentNode, error) {
	rows, err := s.pool.Query(ctx, "SELECT name, agent_url FROM nodes WHERE NOT retired AND agent_url <> '' ORDER BY name")
	if err != nil {
		return nil, cleanError("read nodes", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (AgentNode, error) {
		var n AgentNode
		return n, r.Scan(&n.Name, &n.AgentURL)
	})
	return out, cleanError("read nodes", err)
}

// AgentURL returns the agent URL of a node ("" when the node is unknown).
func (s *Store) AgentURL(ctx context.Context, node string) (string, error) {
	var u string
	err := s.pool.QueryRow(ctx, "SELECT agent_url FROM nodes WHERE name = $1", node).Scan(&u)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	return u, cleanError("read node", err)
}

// SliverUpdate is what an agent report changes on a sliver. Nil pointers
// leave a column alone.
type SliverUpdate struct {
	Operational am.OperationalState
	Error       *string
	ResourceMsg *string
	ExitCode    **int // set to a nil *int to clear it
	ImageID     *string
	DataURL     *string
	LogURL      *string
	Login       *Login  // where to log in (the node agent's SSH server)
	StdoutTail  *string // last lines of the start command's output
	StderrTail  *string
	// OnlyIf, when set, makes the update apply only while the sliver is in
	// one of these states (a poll must not undo a change made since it read).
	OnlyIf []am.OperationalState
}

// Login is a sliver's SSH login service.
type Login struct {
	Host string
	Port int
	User string
}

// setIfGiven adds the column col = *v to an UPDATE when the report gives v.
func setIfGiven[T any](add func(col string, v any), col string, v *T) {
	if v != nil {
		add(col, *v)
	}
}

// UpdateSliver applies an agent report to a live provisioned sliver. It
// returns false when the sliver is gone or not in an OnlyIf state. event is
// recorded in sliver_history (e.g. "agent:provision").
func (s *Store) UpdateSliver(ctx context.Context, urn, event string, u SliverUpdate) (bool, error) {
	sets := []string{}
	args := []any{urn}
	add := func(col string, v any) {
		args = append(args, v)
		sets = append(sets, col+" = $"+itoa(len(args)))
	}
	if u.Operational != "" {
		add("operational_state", string(u.Operational))
	}
	setIfGiven(add, "error", u.Error)
	setIfGiven(add, "resource_status", u.ResourceMsg)
	setIfGiven(add, "exit_code", u.ExitCode)
	setIfGiven(add, "image_id", u.ImageID)
	setIfGiven(add, "data_url", u.DataURL)
	setIfGiven(add, "log_url", u.LogURL)
	if u.Login != nil {
		add("login_host", u.Login.Host)
		add("login_port", u.Login.Port)
		add("login_user", u.Login.User)
	}
	setIfGiven(add, "stdout_tail", u.StdoutTail)
	setIfGiven(add, "stderr_tail", u.StderrTail)
	if len(sets) == 0 {
		return true, nil
	}
	q := "UPDATE slivers SET " + strings.Join(sets, ", ") + " WHERE urn = $1 AND allocation_state = 'geni_provisioned'"
	if len(u.OnlyIf) > 0 {
		states := make([]string, len(u.OnlyIf))
		for i, st := range u.OnlyIf {
			states[i] = string(st)
		}
		args = append(args, states)
		q += " AND operational_state = ANY($" + itoa(len(args)) + ")"
	}
	var n int64
	err := s.inTx(ctx, event, event, "provisioner", func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, q, args...)
		n = tag.RowsAffected()
		return err
	})
	return n > 0, err
}

func itoa(i int) string {
	if i < 10 {
		return string(rune('0' + i))
	}
	return itoa(i/10) + string(rune('0'+i%10))
}

// ---- agent health ----

// unreachablePrefix starts the unavailable_reason the provisioner writes, so
// it only ever lifts its own reason, never an operator's.
const unreachablePrefix = "agent unreachable since "

// UnheardStatusPrefix starts the geni_resource_status of a sliver that was
// geni_ready when its agent stopped answering (it is geni_notready until
// the agent is heard again).
const UnheardStatusPrefix = "unknown: node agent unreachable since "

// unreachableSliverPrefix starts the geni_error of slivers on such a node.
const unreachableSliverPrefix = "node agent unreachable since "

// MarkAgentUnreachable records a failed health poll: the node becomes
// unavailable (unless the operator already made it so) and its provisioned
// slivers say why in geni_error. It returns true when the node was reachable
// before.
func (s *Store) MarkAgentUnreachable(ctx context.Context, node string, since time.Time, why string) (bool, error) {
	var changed bool
	stamp := since.UTC().Format(time.RFC3339)
	err := s.inTx(ctx, "agent health", "agent-unreachable", "provisioner", func(tx pgx.Tx) error {
		var wasReachable bool
		err := tx.QueryRow(ctx, `SELECT coalesce((SELECT reachable FROM agent_health WHERE node_name = $1), true)`, node).Scan(&wasReachable)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO agent_health (node_name, reachable, since, last_error, checked_at) VALUES ($1, false, $2, $3, now())
			ON CONFLICT (node_name) DO UPDATE SET reachable = false, last_error = EXCLUDED.last_error, checked_at = now(),
				since = CASE WHEN agent_health.reachable THEN EXCLUDED.since ELSE agent_health.since END`, node, since, why); err != nil {
			return err
		}
		changed = wasReachable
		if _, err := tx.Exec(ctx, `UPDATE nodes SET available = false, unavailable_reason = $2
			WHERE name = $1 AND (available OR unavailable_reason LIKE 'agent unreachable since %') AND unavailable_reason <> $2`,
			node, unreachablePrefix+stamp); err != nil {
			return err
		}
		if _, err = tx.Exec(ctx, `UPDATE slivers SET error = $2 WHERE node_name = $1 AND allocation_state = 'geni_provisioned'
			AND (error = '' OR error LIKE 'node agent unreachable since %') AND error <> $2`, node, unreachableSliverPrefix+stamp+": "+clip(why, 200)); err != nil {
			return err
		}
		// Nobody has seen these containers run since: they are not
		// reported geni_ready. geni_notready is the v3 state every client
		// knows for "not usable now"; the resource status says why and what
		// was last seen. The first good poll puts back what the agent says.
		_, err = tx.Exec(ctx, `UPDATE slivers SET operational_state = 'geni_notready',
			resource_status = $2 || ' (last seen: ' || left(resource_status, 200) || ')'
			WHERE node_name = $1 AND allocation_state = 'geni_provisioned' AND operational_state = 'geni_ready'`, node, UnheardStatusPrefix+stamp)
		return err
	})
	return changed, err
}

// MarkAgentReachable records a good health poll: the node's own
// unreachable reason is lifted (an operator's stays) and so are its slivers'
// errors. unknown lists agent slivers the aggregate does not know. It
// returns true when the node was unreachable before.
func (s *Store) MarkAgentReachable(ctx context.Context, node string, unknown []string) (bool, error) {
	var wasDown bool
	if unknown == nil {
		unknown = []string{}
	}
	err := s.inTx(ctx, "agent health", "agent-reachable", "provisioner", func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `SELECT coalesce((SELECT NOT reachable FROM agent_health WHERE node_name = $1), false)`, node).Scan(&wasDown)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO agent_health (node_name, reachable, since, last_ok_at, unknown_containers, checked_at)
			VALUES ($1, true, now(), now(), $2, now())
			ON CONFLICT (node_name) DO UPDATE SET reachable = true, last_ok_at = now(), last_error = '', checked_at = now(),
				unknown_containers = EXCLUDED.unknown_containers,
				since = CASE WHEN agent_health.reachable THEN agent_health.since ELSE now() END`, node, unknown); err != nil {
			return err
		}
		return liftNodeMark(ctx, tx, node, "agent unreachable since %", "node agent unreachable since %")
	})
	return wasDown, err
}

// liftNodeMark makes node available again if the provisioner made it
// unavailable with a reason LIKE reason (an operator's reason stays), and
// clears its slivers' errors LIKE sliverError.
func liftNodeMark(ctx context.Context, tx pgx.Tx, node, reason, sliverError string) error {
	if _, err := tx.Exec(ctx, `UPDATE nodes SET available = true, unavailable_reason = ''
		WHERE name = $1 AND NOT available AND unavailable_reason LIKE $2`, node, reason); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, `UPDATE slivers SET error = '' WHERE node_name = $1 AND error LIKE $2`, node, sliverError)
	return err
}

// diskPressurePrefix starts the unavailable_reason and the slivers'
// geni_error the provisioner writes for a node short of disk space.
const diskPressurePrefix = "disk pressure on the node: "

// RecordDisk records the space of a node agent's state filesystem. Under
// pressure the node becomes unavailable (unless the operator or an
// unreachable agent already made it so) with a reason saying how much is
// free, which the advertisement shows, and its provisioned slivers without
// another error say it in geni_error; without, the provisioner's own
// pressure reason and errors are lifted. It returns true when the pressure
// began or ended with this call.
func (s *Store) RecordDisk(ctx context.Context, node string, free, total int64, pressure bool) (bool, error) {
	var was bool
	reason := fmt.Sprintf("%s%s free of %s", diskPressurePrefix, bytesText(free), bytesText(total))
	err := s.inTx(ctx, "agent health", "disk-pressure", "provisioner", func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `UPDATE agent_health h SET disk_free_bytes = $2, disk_total_bytes = $3, disk_pressure = $4
			FROM (SELECT disk_pressure FROM agent_health WHERE node_name = $1 FOR UPDATE) old
			WHERE h.node_name = $1 RETURNING old.disk_pressure`, node, free, total, pressure).Scan(&was)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil // no health row yet: the next poll records it
		}
		if err != nil {
			return err
		}
		if pressure {
			if _, err := tx.Exec(ctx, `UPDATE nodes SET available = false, unavailable_reason = $2
				WHERE name = $1 AND (available OR unavailable_reason LIKE 'disk pressure on the node: %') AND unavailable_reason <> $2`, node, reason); err != nil {
				return err
			}
			_, err = tx.Exec(ctx, `UPDATE slivers SET error = $2 WHERE node_name = $1 AND allocation_state = 'geni_provisioned'
				AND (error = '' OR error LIKE 'node disk pressure: %') AND error <> $2`, node, "node disk pressure: "+strings.TrimPrefix(reason, diskPressurePrefix))
			return err
		}
		return liftNodeMark(ctx, tx, node, "disk pressure on the node: %", "node disk pressure: %")
	})
	return was != pressure, err
}

// bytesText is n in binary units, e.g. "1.5 GiB".
func bytesText(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// ---- archives ----

// Archive is one kept /data tar.
type Archive struct {
	SliverURN string
	SliceURN  string
	NodeName  string
	Path      string
	Bytes     int64
	Final     bool
	CreatedAt time.Time
	ExpiresAt time.Time
}

// PutArchive records (or replaces) the archive of a sliver. A final archive
// is never replaced by a non-final one.
func (s *Store) PutArchive(ctx context.Context, a Archive) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO sliver_archives (sliver_urn, slice_urn, node_name, path, bytes, final, created_at, expires_at)
		VALUES ($1, $2, $3, $4, $5, $6, now(), $7)
		ON CONFLICT (sliver_urn) DO UPDATE SET path = EXCLUDED.path, bytes = EXCLUDED.bytes, final = EXCLUDED.final,
			created_at = now(), expires_at = EXCLUDED.expires_at
		WHERE EXCLUDED.final OR NOT sliver_archives.final`,
		a.SliverURN, a.SliceURN, a.NodeName, a.Path, a.Bytes, a.Final, a.ExpiresAt)
	return cleanError("record archive", err)
}

// ArchiveOf returns the archive of a sliver, or nil.
func (s *Store) ArchiveOf(ctx context.Context, sliverURN string) (*Archive, error) {
	var a Archive
	err := s.pool.QueryRow(ctx, `SELECT sliver_urn, slice_urn, node_name, path, bytes, final, created_at, expires_at
		FROM sliver_archives WHERE sliver_urn = $1`, sliverURN).Scan(&a.SliverURN, &a.SliceURN, &a.NodeName, &a.Path, &a.Bytes, &a.Final, &a.CreatedAt, &a.ExpiresAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, cleanError("read archive", err)
	}
	return &a, nil
}

// ExpiredArchives removes and returns the archive records past their expiry
// (the caller deletes the files).
func (s *Store) ExpiredArchives(ctx context.Context, now time.Time) ([]Archive, error) {
	rows, err := s.pool.Query(ctx, `DELETE FROM sliver_archives WHERE expires_at <= $1
		RETURNING sliver_urn, slice_urn, node_name, path, bytes, final, created_at, expires_at`, now)
	if err != nil {
		return nil, cleanError("prune archives", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Archive, error) {
		var a Archive
		return a, r.Scan(&a.SliverURN, &a.SliceURN, &a.NodeName, &a.Path, &a.Bytes, &a.Final, &a.CreatedAt, &a.ExpiresAt)
	})
	return out, cleanError("prune archives", err)
}

// ---- expiry warnings ----

// ExpiryWarning is one warning due.
type ExpiryWarning struct {
	SliverURN string
	SliceURN  string
	NodeName  string
	CreatedBy string
	Lead      string // "24h" or "1h"
	ExpiresAt time.Time
}

// DueExpiryWarnings records and returns the warnings that have become due
// at now: a provisioned sliver expiring within the lead time that has not
// had this warning for this expiry. Each warning is returned once, to one
// caller, however many aggregate processes ask.
func (s *Store) DueExpiryWarnings(ctx context.Context, now time.Time) ([]ExpiryWarning, error) {
	var out []ExpiryWarning
	for _, lead := range []struct {
		name string
		d    time.Duration
	}{{"24h", 24 * time.Hour}, {"1h", time.Hour}} {
		rows, err := s.pool.Query(ctx, `INSERT INTO expiry_warnings (sliver_urn, lead, expires_at, slice_urn, node_name, created_by)
			SELECT v.urn, $1, v.expires_at, v.slice_urn, v.node_name, v.created_by FROM slivers v
			WHERE v.allocation_state = 'geni_provisioned' AND v.expires_at > $2 AND v.expires_at <= $2 + $3 * interval '1 millisecond'
			ON CONFLICT DO NOTHING
			RETURNING sliver_urn, slice_urn, node_name, created_by, lead, expires_at`, lead.name, now, lead.d.Milliseconds())
		if err != nil {
			return nil, cleanError("expiry warnings", err)
		}
		ws, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ExpiryWarning, error) {
			var w ExpiryWarning
			return w, r.Scan(&w.SliverURN, &w.SliceURN, &w.NodeName, &w.CreatedBy, &w.Lead, &w.ExpiresAt)
		})
		if err != nil {
			return nil, cleanError("expiry warnings", err)
		}
		out = append(out, ws...)
	}
	return out, nil
}
