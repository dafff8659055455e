package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/geniam/geniam/am"
)

// EndedSlivers returns the slice's deleted or expired slivers that are
// still kept (table ended_slivers, written by a trigger at every DELETE
// FROM slivers), newest end first, as geni_unallocated slivers whose
// geni_error says why and when they ended.
func (s *Store) EndedSlivers(ctx context.Context, sliceURN string) ([]am.Sliver, error) {
	rows, err := s.pool.Query(ctx, `SELECT sliver_urn, slice_urn, node_name, client_id, sliver_type, image_url, image_sha256,
		was_provisioned, operational_state, ended_at, why, actor, expires_at, error, exit_code, data_url, log_url, stdout_tail, stderr_tail
		FROM ended_slivers WHERE slice_urn = $1 ORDER BY ended_at DESC, sliver_urn LIMIT 1000`, sliceURN)
	if err != nil {
		return nil, cleanError("read ended slivers", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (am.Sliver, error) {
		var v am.Sliver
		var provisioned bool
		var op, why, actor, lastErr string
		var ended time.Time
		err := r.Scan(&v.URN, &v.SliceURN, &v.NodeName, &v.ClientID, &v.SliverType, &v.Image.URL, &v.Image.SHA256,
			&provisioned, &op, &ended, &why, &actor, &v.Expires, &lastErr, &v.ExitCode, &v.DataURL, &v.LogURL, &v.StdoutTail, &v.StderrTail)
		if err != nil {
			return v, err
		}
		v.Allocation, v.Expires = am.Unallocated, v.Expires.UTC()
		v.Error = endedWhy(why, actor, ended, provisioned)
		if lastErr != "" {
			v.Error += "; its last error: " + lastErr
		}
		v.ResourceMsg = "ended in state " + op
		if v.ExitCode != nil {
			v.ResourceMsg += fmt.Sprintf(", exit code %d", *v.ExitCode)
		}
		if !provisioned {
			v.DataURL, v.LogURL = "", ""
		}
		return v, nil
	})
	if err != nil {
		return nil, cleanError("read ended slivers", err)
	}
	return out, nil
}

// endedWhy says in words why a sliver ended.
func endedWhy(why, actor string, at time.Time, provisioned bool) string {
	when := at.UTC().Format(time.RFC3339)
	switch {
	case why == "expire":
		return "expired at " + when
	case why == "Delete":
		return "deleted at " + when + " by " + actor
	case !provisioned && why == "Allocate":
		return "allocation ended at " + when
	default:
		return "ended at " + when + " (" + why + " by " + actor + ")"
	}
}

// PruneEnded forgets ended slivers older than age (the archive retention).
func (s *Store) PruneEnded(ctx context.Context, age time.Duration) (int, error) {
	tag, err := s.pool.Exec(ctx, "DELETE FROM ended_slivers WHERE ended_at < clock_timestamp() - $1 * interval '1 millisecond'", age.Milliseconds())
	if err != nil {
		return 0, cleanError("prune ended slivers", err)
	}
	return int(tag.RowsAffected()), nil
}
