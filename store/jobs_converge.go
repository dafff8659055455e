package store

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
)

// What the reconciliation reads and writes (migration 0005): the teardown of
// deleted slivers whose containers an agent still runs, and containers the
// database never knew.

// SettingAggregateInstance is the settings key of this aggregate's instance
// name (migration 0005): the label that keeps its containers apart from
// another aggregate's on a shared agent or engine.
const SettingAggregateInstance = "aggregate_instance"

// AgentContainer is one sliver an agent lists, as the reconciliation needs it.
type AgentContainer struct {
	AgentID   string
	SliverURN string // from the container's label; "" when it had none
	SliceURN  string
	State     string
	// JobURN is the sliver URN a teardown job of this container carries
	// (its agent id must be AgentID): SliverURN when that maps to AgentID.
	JobURN string
	// Ours: it carries this aggregate's instance. A stray without one (an
	// older aggregate's, or started through the v1 API) is only reported,
	// never removed: another aggregate on the agent may own it.
	Ours bool
}

// Convergence is what one reconciliation of a node decided.
type Convergence struct {
	Teardowns []string // sliver URNs whose teardown was enqueued again
	Strays    []string // agent ids of containers the database never knew
	Removals  []string // strays past their grace whose removal was enqueued
}

// Converge brings a node's agent back to what the database says, for the
// containers the agent lists that are not live slivers and have no
// unfinished job (the caller leaves those out). A sliver the database
// deleted or let expire, however long ago and whatever became of its
// earlier teardown (failed after its attempts, or done while the agent
// restored an old state), gets a new teardown job: archive /data, then
// remove. A container the database never knew is recorded in
// stray_containers; when grace > 0 and it has been seen for longer, its
// removal (archive, then remove) is enqueued. Everything runs in one
// transaction that checks again that no live sliver has the URN, so a
// container of a live sliver is never torn down.
func (s *Store) Converge(ctx context.Context, node string, found []AgentContainer, grace time.Duration) (Convergence, error) {
	var out Convergence
	if len(found) == 0 { // the common case, every poll of every node: one statement
		_, err := s.pool.Exec(ctx, "DELETE FROM stray_containers WHERE node_name = $1", node)
		return out, cleanError("reconcile", err)
	}
	err := s.inTx(ctx, "reconcile", "reconcile", "provisioner", func(tx pgx.Tx) error {
		out = Convergence{}
		seen := make([]string, 0, len(found))
		for _, c := range found {
			seen = append(seen, c.AgentID)
			// A record the agent made at fetch time has no URN yet: the
			// job URN (ours, from the agent id) names the sliver then.
			urn := c.SliverURN
			if urn == "" {
				urn = c.JobURN
			}
			if urn != "" {
				queued, err := requeueTeardown(ctx, tx, node, urn)
				if err != nil {
					return err
				}
				if queued {
					out.Teardowns = append(out.Teardowns, urn)
					continue
				}
				var live bool
				if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM slivers WHERE urn = $1)", urn).Scan(&live); err != nil {
					return err
				}
				if live {
					continue // on another node in our books, or just provisioned: not a stranger
				}
			}
			out.Strays = append(out.Strays, c.AgentID)
			removal, err := noteStray(ctx, tx, node, c, grace)
			if err != nil {
				return err
			}
			if removal {
				out.Removals = append(out.Removals, c.AgentID)
			}
		}
		_, err := tx.Exec(ctx, "DELETE FROM stray_containers WHERE node_name = $1 AND NOT (agent_id = ANY($2))", node, seen)
		return err
	})
	return out, err
}

// requeueTeardown enqueues a teardown of sliverURN on node when the
// database says the sliver was deleted or expired (its history ends in
// geni_unallocated, or it had a delete job) and it is not live again.
func requeueTeardown(ctx context.Context, tx pgx.Tx, node, sliverURN string) (bool, error) {
	var sliceURN, event string
	err := tx.QueryRow(ctx, `SELECT slice_urn, event FROM sliver_history
		WHERE sliver_urn = $1 AND allocation_state = 'geni_unallocated' ORDER BY id DESC LIMIT 1`, sliverURN).Scan(&sliceURN, &event)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return false, err
	}
	var args JobArgs
	var raw []byte
	jerr := tx.QueryRow(ctx, `SELECT slice_urn, args FROM jobs WHERE sliver_urn = $1 AND kind = 'delete' ORDER BY id DESC LIMIT 1`,
		sliverURN).Scan(&sliceURN, &raw)
	if jerr != nil && !errors.Is(jerr, pgx.ErrNoRows) {
		return false, jerr
	}
	if errors.Is(err, pgx.ErrNoRows) && errors.Is(jerr, pgx.ErrNoRows) {
		return false, nil // never deleted in our books
	}
	_ = json.Unmarshal(raw, &args)
	if event == "expire" {
		args.Expired = true
	}
	args.Event = "reconcile"
	b, _ := json.Marshal(args)
	tag, err := tx.Exec(ctx, `INSERT INTO jobs (kind, sliver_urn, slice_urn, node_name, args, created_by)
		SELECT 'delete', $1, $2, $3, $4, 'reconciliation'
		WHERE NOT EXISTS (SELECT 1 FROM slivers WHERE urn = $1)
		  AND NOT EXISTS (SELECT 1 FROM jobs WHERE sliver_urn = $1 AND state IN ('queued', 'running'))`,
		sliverURN, sliceURN, node, string(b))
	return tag.RowsAffected() > 0, err
}

// noteStray records a stranger and, past its grace, enqueues its removal
// once. It returns true when it enqueued the removal.
func noteStray(ctx context.Context, tx pgx.Tx, node string, c AgentContainer, grace time.Duration) (bool, error) {
	var firstSeen time.Time
	var removal *int64
	err := tx.QueryRow(ctx, `INSERT INTO stray_containers (node_name, agent_id, sliver_urn, slice_urn, state)
		VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (node_name, agent_id) DO UPDATE SET last_seen = now(), state = EXCLUDED.state,
			sliver_urn = EXCLUDED.sliver_urn, slice_urn = EXCLUDED.slice_urn
		RETURNING first_seen, removal_job`, node, c.AgentID, c.SliverURN, c.SliceURN, c.State).Scan(&firstSeen, &removal)
	if err != nil || grace <= 0 || !c.Ours {
		return false, err
	}
	if removal != nil {
		var pending bool
		if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM jobs WHERE id = $1 AND state IN ('queued', 'running'))", *removal).Scan(&pending); err != nil {
			return false, err
		}
		if pending {
			return false, nil
		}
	}
	var due bool
	if err := tx.QueryRow(ctx, "SELECT $1 < now() - $2 * interval '1 millisecond'", firstSeen, grace.Milliseconds()).Scan(&due); err != nil || !due {
		return false, err
	}
	args, _ := json.Marshal(JobArgs{Event: "stray"})
	var id int64
	err = tx.QueryRow(ctx, `INSERT INTO jobs (kind, sliver_urn, slice_urn, node_name, args, created_by)
		VALUES ('delete', $1, $2, $3, $4, 'reconciliation') RETURNING id`, c.JobURN, c.SliceURN, node, string(args)).Scan(&id)
	if err != nil {
		return false, err
	}
	_, err = tx.Exec(ctx, "UPDATE stray_containers SET removal_job = $3 WHERE node_name = $1 AND agent_id = $2", node, c.AgentID, id)
	return err == nil, err
}

// RetryNodeJobsNow makes the node's jobs waiting out a backoff due now: its
// agent answers again, and whatever failed while it was gone should not
// wait minutes more. It returns how many jobs it moved.
func (s *Store) RetryNodeJobsNow(ctx context.Context, node string) (int, error) {
	tag, err := s.pool.Exec(ctx, `UPDATE jobs SET next_run_at = clock_timestamp()
		WHERE node_name = $1 AND state = 'queued' AND attempts > 0 AND next_run_at > clock_timestamp()`, node)
	if err != nil {
		return 0, cleanError("retry jobs", err)
	}
	return int(tag.RowsAffected()), nil
}

// GaveUpPrefix starts jobs.last_error of a job that ran out of attempts
// on transient failures (the agent unreachable), as opposed to a refusal.
const GaveUpPrefix = "gave up after "

// gaveUp is the predicate of the partial index jobs_gave_up (migration
// 0005), written the same way so the planner uses it.
const gaveUp = `state = 'failed' AND last_error LIKE 'gave up after %'`

// RetryGaveUp is for a node whose agent answers again: every sliver whose
// latest job ran out of attempts while the agent was away is queued again
// (the same kind of job), so it converges without the experimenter acting:
// a provision, start or restart that left it geni_failed (it shows
// geni_configuring again), a geni_stop (geni_stopping: the intent is not
// dropped when a poll finds the container still running) or a
// geni_update_users; only jobs that ended at least olderThan ago count
// (the agent answers polls but may still fail jobs: one more round of
// attempts per olderThan at most). It returns how many slivers it queued.
func (s *Store) RetryGaveUp(ctx context.Context, node string, olderThan time.Duration) (int, error) {
	var any bool
	err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM jobs WHERE node_name = $1 AND `+gaveUp+`
		AND kind IN ('provision', 'start', 'restart', 'stop', 'update_users'))`, node).Scan(&any)
	if err != nil || !any { // the common case, every poll of every node: one read
		return 0, cleanError("retry jobs", err)
	}
	var n int64
	err = s.inTx(ctx, "retry jobs", "reconcile", "provisioner", func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `INSERT INTO jobs (kind, sliver_urn, slice_urn, node_name, args, created_by)
			SELECT j.kind, j.sliver_urn, j.slice_urn, j.node_name, '{"event":"reconcile"}', 'reconciliation'
			FROM jobs j JOIN slivers v ON v.urn = j.sliver_urn
			WHERE j.node_name = $1 AND j.`+gaveUp+` AND v.allocation_state = 'geni_provisioned'
			  AND (j.kind IN ('stop', 'update_users') OR (j.kind IN ('provision', 'start', 'restart') AND v.operational_state = 'geni_failed'))
			  AND j.id = (SELECT max(k.id) FROM jobs k WHERE k.sliver_urn = j.sliver_urn)
			  AND j.finished_at <= clock_timestamp() - $2 * interval '1 millisecond'
			RETURNING sliver_urn, kind`, node, olderThan.Milliseconds())
		if err != nil {
			return err
		}
		type again struct{ urn, kind string }
		list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (again, error) {
			var a again
			return a, r.Scan(&a.urn, &a.kind)
		})
		if err != nil {
			return err
		}
		n = int64(len(list))
		for _, a := range list {
			// What Status shows until the job reports: the experimenter's
			// intent is carried out, not dropped.
			op, msg := "geni_configuring", "the node agent answers again: provisioning again"
			switch a.kind {
			case "stop":
				op, msg = "geni_stopping", "the node agent answers again: stopping again"
			case "update_users":
				op, msg = "", "the node agent answers again: updating the users again"
			}
			if _, err := tx.Exec(ctx, `UPDATE slivers SET operational_state = coalesce(nullif($2, ''), operational_state), error = '',
				resource_status = $3 WHERE urn = $1`, a.urn, op, msg); err != nil {
				return err
			}
		}
		return nil
	})
	return int(n), err
}

// StrayContainer is a row of stray_containers.
type StrayContainer struct {
	NodeName, AgentID, SliverURN, SliceURN, State string
	FirstSeen, LastSeen                           time.Time
}

// StrayContainers lists what the health polls found on the agents that the
// database never knew.
func (s *Store) StrayContainers(ctx context.Context) ([]StrayContainer, error) {
	rows, err := s.pool.Query(ctx, `SELECT node_name, agent_id, sliver_urn, slice_urn, state, first_seen, last_seen
		FROM stray_containers ORDER BY node_name, agent_id`)
	if err != nil {
		return nil, cleanError("read strays", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (StrayContainer, error) {
		var c StrayContainer
		return c, r.Scan(&c.NodeName, &c.AgentID, &c.SliverURN, &c.SliceURN, &c.State, &c.FirstSeen, &c.LastSeen)
	})
	return out, cleanError("read strays", err)
}
