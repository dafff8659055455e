package store

import (
	"context"
	"os"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// Fast takeover (migration 0005): a process working the queue holds a
// session-level advisory lock on a connection of its own for as long as it
// lives. PostgreSQL releases it when that session ends, which for a killed
// process is the moment the kernel closes its socket; ClaimJob then treats
// the jobs leased by a process without its lock as free, without waiting for
// their leases to run out. The lease and its fencing token are unchanged:
// a process that lost its connection but still runs is fenced out of every
// job update by attempts, as before.

// processLockSpace is the first key of the two-key advisory locks of
// aggregate processes ('geni'), apart from the single-key migration lock.
const processLockSpace = 1734700649

// processAlive is true while the process row p holds its advisory lock in
// this database (lock keys are per database: test databases share a server).
func processAlive(p string) string {
	return `EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
	      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
	      AND l.classid = ` + strconv.Itoa(processLockSpace) + `::oid AND l.objid = ` + p + `.lock_key::oid)`
}

// deadOwnerClause is true for a running job j whose lease owner is a
// registered process of this database that no longer holds its lock.
// The subquery is not correlated, so PostgreSQL reads pg_locks once per
// claim, not once per running job.
var deadOwnerClause = `regexp_replace(j.lease_owner, ':[0-9]+$', '') IN (SELECT p.owner FROM aggregate_processes p
	WHERE NOT ` + processAlive("p") + `)`

// ProcessLock is a process's life in the database: while it is held,
// other processes leave its jobs to it until their leases run out.
type ProcessLock struct {
	st    *Store
	owner string
	key   int32
	conn  *pgx.Conn
}

// LockProcess registers owner (the prefix of its workers' lease owners,
// followed by ':') and takes its advisory lock on a connection of its own.
// Keep it with Hold; Close releases it.
func (s *Store) LockProcess(ctx context.Context, owner string) (*ProcessLock, error) {
	host, _ := os.Hostname()
	l := &ProcessLock{st: s, owner: owner}
	err := s.pool.QueryRow(ctx, `INSERT INTO aggregate_processes (owner, host, pid) VALUES ($1, $2, $3)
		ON CONFLICT (owner) DO UPDATE SET seen_at = now() RETURNING lock_key`, owner, host, os.Getpid()).Scan(&l.key)
	if err != nil {
		return nil, cleanError("register process", err)
	}
	if err := l.relock(ctx); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *ProcessLock) relock(ctx context.Context) error {
	conn, err := pgx.ConnectConfig(ctx, l.st.pool.Config().ConnConfig.Copy())
	if err != nil {
		return cleanError("process lock", err)
	}
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1, $2)", int32(processLockSpace), l.key); err != nil {
		_ = conn.Close(context.Background())
		return cleanError("process lock", err)
	}
	l.conn = conn
	return nil
}

// Hold keeps the lock until ctx ends: it checks the connection every
// interval and, when it died (PostgreSQL restarted), takes the lock again
// on a new one as soon as it can. onLost is told when the lock was lost
// (the process's jobs may have been taken over meanwhile; the fencing makes
// that safe). Hold closes the connection when it returns, releasing the lock.
func (l *ProcessLock) Hold(ctx context.Context, interval time.Duration, onLost func(error)) {
	defer l.Close()
	t := time.NewTicker(interval)
	defer t.Stop()
	for n := 1; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if l.conn != nil {
			cctx, cancel := context.WithTimeout(ctx, interval)
			var err error
			if n%30 == 0 {
				_, err = l.conn.Exec(cctx, "UPDATE aggregate_processes SET seen_at = now() WHERE owner = $1", l.owner)
			} else {
				err = l.conn.Ping(cctx)
			}
			cancel()
			if err == nil || ctx.Err() != nil {
				continue
			}
			l.Close()
			if onLost != nil {
				onLost(err)
			}
		}
		_ = l.relock(ctx) // tried again next interval
	}
}

// Close releases the lock (closing its connection).
func (l *ProcessLock) Close() {
	if l.conn != nil {
		_ = l.conn.Close(context.Background())
		l.conn = nil
	}
}

// PruneProcesses removes processes that hold no lock and were last seen
// longer ago than age.
func (s *Store) PruneProcesses(ctx context.Context, age time.Duration) (int, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM aggregate_processes j
		WHERE seen_at < clock_timestamp() - $1 * interval '1 millisecond'
		  AND NOT `+processAlive("j"), age.Milliseconds())
	if err != nil {
		return 0, cleanError("prune processes", err)
	}
	return int(tag.RowsAffected()), nil
}
