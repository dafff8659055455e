package store

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/jackc/pgx/v5"
)

// Job is one unit of work for a node agent (table jobs, migration 0002).
// Triggers on slivers enqueue jobs in the transaction of the change that
// calls for them; workers claim them with ClaimJob.
type Job struct {
	ID        int64
	Kind      string // provision, start, stop, restart, update_users, fetch_data, delete
	SliverURN string
	SliceURN  string
	NodeName  string
	Args      JobArgs
	Attempts  int    // including the current one: the fencing token of the lease
	Owner     string // lease holder
	CreatedAt time.Time
}

// JobArgs is what a job carries besides its sliver.
type JobArgs struct {
	ClientID string `json:"client_id,omitempty"`
	Expired  bool   `json:"expired,omitempty"` // delete: by the reaper
	Event    string `json:"event,omitempty"`   // the change that enqueued it
}

// Job kinds: am.JobKinds, as the strings of the jobs.kind column.
const (
	JobProvision   = string(am.JobProvision)
	JobStart       = string(am.JobStart)
	JobStop        = string(am.JobStop)
	JobRestart     = string(am.JobRestart)
	JobUpdateUsers = string(am.JobUpdateUsers)
	JobFetchData   = string(am.JobFetchData)
	JobDelete      = string(am.JobDelete)
)

// ClaimJob leases the oldest due job to owner for lease, or returns nil when
// there is none. A job is due when it is queued and its next_run_at has come,
// or when it is running but its lease has run out or its holder's process
// lost its lock (it died: see LockProcess). A job
// waits while an older job of the same sliver is unfinished, so a sliver's
// jobs run in order.
func (s *Store) ClaimJob(ctx context.Context, owner string, lease time.Duration) (*Job, error) {
	var j Job
	var args []byte
	// One statement: atomic on its own, and the row lock it takes is the
	// lease's until the UPDATE commits.
	err := s.pool.QueryRow(ctx, `
			UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_owner = $1,
				lease_until = clock_timestamp() + $2 * interval '1 millisecond', started_at = coalesce(started_at, clock_timestamp())
			WHERE id = (
				SELECT j.id FROM jobs j
				WHERE ((j.state = 'queued' AND j.next_run_at <= clock_timestamp())
				    OR (j.state = 'running' AND (j.lease_until < clock_timestamp() OR `+deadOwnerClause+`)))
				  AND NOT EXISTS (SELECT 1 FROM jobs e WHERE e.sliver_urn = j.sliver_urn AND e.id < j.id AND e.state IN ('queued', 'running'))
				ORDER BY j.next_run_at, j.id
				LIMIT 1 FOR UPDATE SKIP LOCKED)
			RETURNING id, kind, sliver_urn, slice_urn, node_name, args, attempts, lease_owner, created_at`,
		owner, lease.Milliseconds()).Scan(&j.ID, &j.Kind, &j.SliverURN, &j.SliceURN, &j.NodeName, &args, &j.Attempts, &j.Owner, &j.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, cleanError("claim job", err)
	}
	_ = json.Unmarshal(args, &j.Args)
	return &j, nil
}

// errLeaseLost: the job is no longer ours (our lease ran out and another
// worker took it, or it was cancelled).
var errLeaseLost = am.Errorf(am.Busy, "the job's lease was lost")

// IsLeaseLost reports whether err says the worker no longer holds the job.
func IsLeaseLost(err error) bool { return errors.Is(err, errLeaseLost) }

// leaseCheck is the WHERE clause that fences a job update to its holder.
const leaseCheck = "id = $1 AND lease_owner = $2 AND attempts = $3 AND state = 'running'"

// RenewLease extends the holder's lease; errLeaseLost when it is not held.
func (s *Store) RenewLease(ctx context.Context, j *Job, lease time.Duration) error {
	tag, err := s.pool.Exec(ctx, "UPDATE jobs SET lease_until = clock_timestamp() + $4 * interval '1 millisecond' WHERE "+leaseCheck,
		j.ID, j.Owner, j.Attempts, lease.Milliseconds())
	if err != nil {
		return cleanError("renew lease", err)
	}
	if tag.RowsAffected() == 0 {
		return errLeaseLost
	}
	return nil
}

// FinishJob marks a held job done with a short result text.
func (s *Store) FinishJob(ctx context.Context, j *Job, result string) error {
	return s.endJob(ctx, j, "UPDATE jobs SET state = 'done', result = $4, last_error = '', finished_at = clock_timestamp(), lease_until = NULL WHERE "+leaseCheck, result)
}

// FailJob marks a held job failed for good with the error.
func (s *Store) FailJob(ctx context.Context, j *Job, msg string) error {
	return s.endJob(ctx, j, "UPDATE jobs SET state = 'failed', last_error = $4, finished_at = clock_timestamp(), lease_until = NULL WHERE "+leaseCheck, msg)
}

// RetryJob puts a held job back in the queue until after, recording the error.
func (s *Store) RetryJob(ctx context.Context, j *Job, msg string, after time.Duration) error {
	return s.endJob(ctx, j, `UPDATE jobs SET state = 'queued', last_error = $4, lease_until = NULL, lease_owner = '',
		next_run_at = clock_timestamp() + $5 * interval '1 millisecond' WHERE `+leaseCheck, msg, after.Milliseconds())
}

func (s *Store) endJob(ctx context.Context, j *Job, q string, args ...any) error {
	tag, err := s.pool.Exec(ctx, q, append([]any{j.ID, j.Owner, j.Attempts}, args...)...)
	if err != nil {
		return cleanError("end job", err)
	}
	if tag.RowsAffected() == 0 {
		return errLeaseLost
	}
	return nil
}

// JobCounts counts jobs by state (for metrics and tests).
func (s *Store) JobCounts(ctx context.Context) (map[string]int, error) {
	rows, err := s.pool.Query(ctx, "SELECT state, count(*) FROM jobs GROUP BY state")
	if err != nil {
		return nil, cleanError("count jobs", err)
	}
	out := map[string]int{}
	for rows.Next() {
		var st string
		var n int
		if err := rows.Scan(&st, &n); err != nil {
			rows.Close()
			return nil, cleanError("count jobs", err)
		}
		out[st] = n
	}
	rows.Close()
	return out, cleanError("count jobs", rows.Err())
}

// PendingJobSlivers returns the slivers of node that have an unfinished job.
func (s *Store) PendingJobSlivers(ctx context.Context, node string) (map[string]bool, error) {
	rows, err := s.pool.Query(ctx, "SELECT DISTINCT sliver_urn FROM jobs WHERE node_name = $1 AND state IN ('queued', 'running')", node)
	if err != nil {
		return nil, cleanError("pending jobs", err)
	}
	urns, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, cleanError("pending jobs", err)
	}
	out := make(map[string]bool, len(urns))
	for _, u := range urns {
		out[u] = true
	}
	return out, nil
}

// RequeueConfiguring enqueues a provision job for every provisioned sliver
// still geni_configuring with no unfinished job and no change for olderThan:
// a belt to the triggers' braces (a job ended by hand, or a bug). It returns
// how many it enqueued.
func (s *Store) RequeueConfiguring(ctx context.Context, olderThan time.Duration) (int, error) {
	var n int64
	err := s.inTx(ctx, "requeue", "", "", func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO jobs (kind, sliver_urn, slice_urn, node_name, args, created_by)
			SELECT 'provision', v.urn, v.slice_urn, v.node_name, '{"event":"requeue"}', 'provisioner'
			FROM slivers v
			WHERE v.allocation_state = 'geni_provisioned' AND v.operational_state = 'geni_configuring'
			  AND v.updated_at < clock_timestamp() - $1 * interval '1 millisecond'
			  AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.sliver_urn = v.urn AND j.state IN ('queued', 'running'))`, olderThan.Milliseconds())
		n = tag.RowsAffected()
		return err
	})
	return int(n), err
}

// PruneJobs deletes finished jobs older than age.
func (s *Store) PruneJobs(ctx context.Context, age time.Duration) (int, error) {
	tag, err := s.pool.Exec(ctx, "DELETE FROM jobs WHERE state IN ('done', 'failed', 'cancelled') AND finished_at < clock_timestamp() - $1 * interval '1 millisecond'", age.Milliseconds())
	if err != nil {
		return 0, cleanError("prune jobs", err)
	}
	return int(tag.RowsAffected()), nil
}
