// Package store keeps the aggregate's state in PostgreSQL (pgx/v5): it
// implements am.Store. The schema is in package migrations; docs/psql.md says
// how an operator reads and edits it.
//
// Concurrency: reads are plain MVCC selects and never wait on writers.
// Allocate plans on an unlocked (possibly cached) node list, then locks only
// the node rows it places on and checks them again under the lock (Allocate
// in slivers.go says how it avoids deadlocks), plus the slice row; other
// changes lock the slice row shared and the sliver rows. Slots are rows of node_slots whose
// primary key forbids two holders, so even a bug in this package cannot
// double-book a node. Deadlocks and serialization failures are retried a few
// times; what escapes is Busy, and any other database error becomes
// ServerError with the cause kept for the log only.
package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Store is the PostgreSQL implementation of am.Store.
type Store struct {
	pool *pgxpool.Pool
	// Attempts is how many times a transaction is tried when PostgreSQL
	// reports a deadlock or serialization failure.
	Attempts int
	// ViewMaxAge is how old the node list an unbound Allocate plans on may
	// be (see nodeView); 0 means DefaultViewMaxAge, negative: read it in
	// every Allocate.
	ViewMaxAge time.Duration

	view nodeView
}

var _ am.Store = (*Store)(nil)

// New returns a Store on pool. The schema must be migrated (Migrate).
func New(pool *pgxpool.Pool) *Store { return &Store{pool: pool, Attempts: 6} }

// Open connects to the database at url, migrates it and returns the store.
func Open(ctx context.Context, url string) (*Store, error) {
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return nil, err
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	if err := Migrate(ctx, pool); err != nil {
		pool.Close()
		return nil, err
	}
	return New(pool), nil
}

// Pool is the connection pool, for tests that set up rows by hand. Code
// outside package store does not use it: every SQL statement of the
// aggregate is a method here.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Close closes the pool.
func (s *Store) Close() { s.pool.Close() }

// PostgreSQL error codes this package reacts to.
const (
	codeSerialization     = "40001"
	codeDeadlock          = "40P01"
	codeUniqueViolated    = "23505"
	codeExclusionViolated = "23P01"
	codeLockNotAvail      = "55P03"
)

func pgCode(err error) (string, string) {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code, pe.ConstraintName
	}
	return "", ""
}

func isUniqueViolation(err error) bool {
	c, _ := pgCode(err)
	return c == codeUniqueViolated
}

// retryable: the transaction lost a race and may succeed if run again. A
// violation of node_slots_no_overlap means two transactions took the same slot
// for overlapping windows:
// the loser is rolled back and placed again.
func retryable(err error) bool {
	c, constraint := pgCode(err)
	switch c {
	case codeSerialization, codeDeadlock, codeLockNotAvail:
		return true
	case codeExclusionViolated:
		return constraint == "node_slots_no_overlap"
	}
	return false
}

// inTx runs fn in a transaction tagged with event and actor (read by the
// history trigger), retrying lost races, and turns what escapes into an
// *am.Err without database text in its message.
func (s *Store) inTx(ctx context.Context, op, event, actor string, fn func(tx pgx.Tx) error) error {
	err := s.retry(ctx, func() error {
		return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			if event != "" || actor != "" {
				if _, err := tx.Exec(ctx, "SELECT set_config('geniam.event', $1, true), set_config('geniam.actor', $2, true)", event, actor); err != nil {
					return err
				}
			}
			return fn(tx)
		})
	})
	if errors.Is(err, errGaveUp) {
		return am.Wrap(am.Busy, ctx.Err(), "%s: gave up waiting for the database", op)
	}
	return cleanError(op, err)
}

// errGaveUp: the context ended while retry waited to run fn again.
var errGaveUp = errors.New("gave up waiting for the database")

// retry runs fn (one transaction) up to Attempts times while it loses races
// (retryable), and returns its last error as it is, or errGaveUp.
func (s *Store) retry(ctx context.Context, fn func() error) error {
	attempts := max(s.Attempts, 1)
	var err error
	for attempt := 1; attempt <= attempts; attempt++ {
		if err = fn(); err == nil || !retryable(err) || attempt == attempts {
			break
		}
		// Back off a little, with jitter, so the racers do not meet again.
		d := time.Duration(attempt*attempt)*5*time.Millisecond + time.Duration(rand.Int64N(int64(10*time.Millisecond)))
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", errGaveUp, ctx.Err())
		case <-time.After(d):
		}
	}
	return err
}

// cleanError keeps *am.Err as it is and hides everything else behind a
// caller-safe message.
func cleanError(op string, err error) error {
	if err == nil {
		return nil
	}
	var ae *am.Err
	if errors.As(err, &ae) {
		return ae
	}
	if retryable(err) {
		return am.Wrap(am.Busy, err, "%s: the aggregate is busy with concurrent changes; try again", op)
	}
	if Unreachable(err) {
		return am.Wrap(am.Busy, err, "%s: %s", op, UnreachableMsg)
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return am.Wrap(am.Busy, err, "%s: the request ran out of time; try again", op)
	}
	return am.Wrap(am.ServerError, err, "%s: internal database error", op)
}

// UnreachableMsg is what a caller reads while PostgreSQL cannot be reached:
// the call changed nothing, so a retry is safe.
const UnreachableMsg = "the database is unreachable; retry"

// Unreachable reports whether err says PostgreSQL could not be reached or
// went away under the call (connection refused or reset, the server shutting
// down or starting up), as opposed to an error in what was asked. A
// transaction cut off this way was never committed (PostgreSQL commits only
// what it acknowledged), so the caller may simply try again.
func Unreachable(err error) bool {
	if err == nil {
		return false
	}
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return true
	}
	if c, _ := pgCode(err); strings.HasPrefix(c, "08") || c == "57P01" || c == "57P02" || c == "57P03" {
		return true // connection exception, admin/crash shutdown, cannot connect now
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return false // the call's own time ran out (context errors are net.Errors too)
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	for _, e := range []error{io.EOF, io.ErrUnexpectedEOF, net.ErrClosed, syscall.ECONNREFUSED, syscall.ECONNRESET, syscall.EPIPE} {
		if errors.Is(err, e) {
			return true
		}
	}
	// pgx says "conn closed" for a connection that died earlier in the
	// same call, without a typed cause.
	return strings.Contains(err.Error(), "conn closed") || strings.Contains(err.Error(), "failed to connect")
}

// ---- inventory ----

// nodeColumns are the columns of a node and its usage: slots held and
// whether an exclusive sliver holds it. queryNodes reads usage per row (for
// a few nodes), queryAllNodes from two aggregates joined in (for all of them:
// about ten times faster on 1,000 nodes than a subquery per row).
const nodeColumns = `n.name, n.component_urn, n.agent_url, n.hardware_type, n.sliver_types, n.capacity,
	n.available AND NOT n.drained,
	CASE WHEN n.drained THEN 'drained by the operator' ELSE n.unavailable_reason END,
	n.country, n.latitude, n.longitude, n.link_support`

const usagePerRow = `(SELECT count(*) FROM node_slots s WHERE s.node_name = n.name AND (lower_inf(s.during) OR lower(s.during) <= now())),
	EXISTS (SELECT 1 FROM slivers v WHERE v.node_name = n.name AND v.sliver_type = 'exclusive' AND (v.starts_at IS NULL OR v.starts_at <= now())),
	(SELECT max(upper(s.during)) FROM node_slots s WHERE s.node_name = n.name AND (lower_inf(s.during) OR lower(s.during) <= now())),
	b.starts, b.ends, b.urns, b.slices, b.users
	FROM nodes n LEFT JOIN LATERAL (` + bookingsOf + ` AND v.node_name = n.name GROUP BY v.node_name) b ON true`

const usageJoined = `coalesce(u.used, 0), x.node_name IS NOT NULL, u.busy_until, b.starts, b.ends, b.urns, b.slices, b.users
	FROM nodes n
	LEFT JOIN (SELECT node_name, count(*) AS used, max(upper(during)) AS busy_until FROM node_slots
		WHERE lower_inf(during) OR lower(during) <= now() GROUP BY node_name) u ON u.node_name = n.name
	LEFT JOIN (SELECT DISTINCT node_name FROM slivers WHERE sliver_type = 'exclusive' AND (starts_at IS NULL OR starts_at <= now())) x
		ON x.node_name = n.name
	LEFT JOIN (` + bookingsOf + ` GROUP BY v.node_name) b ON b.node_name = n.name`

// bookingsOf reads the reservations that have not ended (slivers_reservations
// index), as arrays in order of start; the caller adds a GROUP BY node.
const bookingsOf = `SELECT v.node_name, array_agg(v.starts_at ORDER BY v.starts_at, v.urn) AS starts,
		array_agg(v.expires_at ORDER BY v.starts_at, v.urn) AS ends, array_agg(v.urn ORDER BY v.starts_at, v.urn) AS urns,
		array_agg(v.slice_urn ORDER BY v.starts_at, v.urn) AS slices, array_agg(v.created_by ORDER BY v.starts_at, v.urn) AS users
	FROM slivers v WHERE v.starts_at IS NOT NULL AND v.expires_at > now()`

func scanNode(row pgx.Row) (am.Node, error) {
	var n am.Node
	var country string
	var lat, lon *float64
	var used int64
	var busyUntil *time.Time
	var starts, ends []time.Time
	var urns, slices, users []string
	if err := row.Scan(&n.Name, &n.ComponentID, &n.AgentURL, &n.HardwareType, &n.SliverTypes, &n.Capacity,
		&n.Available, &n.Reason, &country, &lat, &lon, &n.Links, &used, &n.Exclusive, &busyUntil,
		&starts, &ends, &urns, &slices, &users); err != nil {
		return n, err
	}
	if busyUntil != nil {
		n.BusyUntil = busyUntil.UTC()
	}
	for i := range starts {
		n.Bookings = append(n.Bookings, am.Booking{Start: starts[i].UTC(), End: ends[i].UTC(),
			SliverURN: urns[i], SliceURN: slices[i], User: users[i]})
	}
	if n.Available {
		n.Reason = ""
	}
	n.Used = int(used)
	if country != "" || lat != nil || lon != nil {
		n.Location = &am.Location{Country: country}
		if lat != nil {
			n.Location.Latitude = *lat
		}
		if lon != nil {
			n.Location.Longitude = *lon
		}
	}
	return n, nil
}

type querier interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}

func collectNodes(rows pgx.Rows, err error) ([]am.Node, error) {
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (am.Node, error) { return scanNode(r) })
}

// queryNodes reads the nodes matching where, in name order.
func queryNodes(ctx context.Context, q querier, where string, args ...any) ([]am.Node, error) {
	return collectNodes(q.Query(ctx, "SELECT "+nodeColumns+", "+usagePerRow+" WHERE "+where+" ORDER BY n.name", args...))
}

// queryAllNodes reads every node that is not retired, in byte order of
// their names (COLLATE "C", whatever the database's collation: Go's order,
// which the recent node list is searched in).
func queryAllNodes(ctx context.Context, q querier) ([]am.Node, error) {
	return collectNodes(q.Query(ctx, "SELECT "+nodeColumns+", "+usageJoined+` WHERE NOT n.retired ORDER BY n.name COLLATE "C"`))
}

// InventoryVersion reads the inventory version alone: one row, no scan.
func (s *Store) InventoryVersion(ctx context.Context) (int64, error) {
	var v int64
	if err := s.pool.QueryRow(ctx, "SELECT version FROM inventory_version").Scan(&v); err != nil {
		return 0, cleanError("ListResources", err)
	}
	return v, nil
}

// Inventory reads the version and the nodes in one read-only snapshot.
func (s *Store) Inventory(ctx context.Context) (*am.Inventory, error) {
	var inv am.Inventory
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, "SELECT version FROM inventory_version").Scan(&inv.Version); err != nil {
			return err
		}
		var err error
		inv.Nodes, err = queryAllNodes(ctx, tx)
		return err
	})
	if err != nil {
		return nil, cleanError("ListResources", err)
	}
	return &inv, nil
}

// ---- slices ----

// Slice returns the slice row, or nil when unknown.
func (s *Store) Slice(ctx context.Context, urn string) (*am.Slice, error) {
	var sl am.Slice
	var exp *time.Time
	err := s.pool.QueryRow(ctx, "SELECT urn, shut_down, credential_expires_at FROM slices WHERE urn = $1", urn).Scan(&sl.URN, &sl.ShutDown, &exp)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, cleanError("read slice", err)
	}
	if exp != nil {
		sl.Expires = *exp
	}
	return &sl, nil
}

// Shutdown marks the slice shut down and stops its provisioned slivers.
func (s *Store) Shutdown(ctx context.Context, sliceURN, actor string, now time.Time) error {
	return s.inTx(ctx, "Shutdown", "Shutdown", actor, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO slices (urn, shut_down, shut_down_by, shut_down_at) VALUES ($1, true, $2, $3)
			ON CONFLICT (urn) DO UPDATE SET shut_down = true,
				shut_down_by = CASE WHEN slices.shut_down THEN slices.shut_down_by ELSE EXCLUDED.shut_down_by END,
				shut_down_at = CASE WHEN slices.shut_down THEN slices.shut_down_at ELSE EXCLUDED.shut_down_at END`,
			sliceURN, actor, now)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE slivers SET operational_state = $2, resource_status = 'stopped: the slice was shut down'
			WHERE slice_urn = $1 AND allocation_state = 'geni_provisioned' AND operational_state <> $2`, sliceURN, am.NotReady)
		return err
	})
}

// RestoreSlice lifts a Shutdown.
func (s *Store) RestoreSlice(ctx context.Context, sliceURN, actor string) error {
	return s.inTx(ctx, "RestoreSlice", "RestoreSlice", actor, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, "UPDATE slices SET shut_down = false, shut_down_by = '', shut_down_at = NULL WHERE urn = $1", sliceURN)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return am.Errorf(am.SearchFailed, "unknown slice %s", sliceURN)
		}
		return nil
	})
}
