package store

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Connect opens a pool of at most maxConns connections (0: pgx's default)
// to the database at url and returns the Store that owns it; Close closes
// it. The schema is not touched: call Migrate.
func Connect(ctx context.Context, url string, maxConns int) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("db.url: %w", err)
	}
	if maxConns > 0 {
		cfg.MaxConns = int32(maxConns)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	return New(pool), nil
}

// Migrate applies the migrations the database lacks (see Migrate).
func (s *Store) Migrate(ctx context.Context) error { return Migrate(ctx, s.pool) }

// AppliedMigrations lists the migrations applied, in order.
func (s *Store) AppliedMigrations(ctx context.Context) ([]string, error) {
	return AppliedMigrations(ctx, s.pool)
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error { return s.pool.Ping(ctx) }

// NewAuditWriter returns the audit writer on the store's pool (see
// NewAuditWriter).
func (s *Store) NewAuditWriter(log *slog.Logger, queueLen int) *AuditWriter {
	return NewAuditWriter(s.pool, log, queueLen)
}

// PoolStats are the connection pool's numbers, for the metrics.
type PoolStats struct {
	Open, Acquired, Idle, Max int
	AcquireWaits              int64         // acquires that had to wait for a connection
	AcquireWait               time.Duration // time spent waiting, in all
}

// PoolStats reads the pool's numbers now.
func (s *Store) PoolStats() PoolStats {
	st := s.pool.Stat()
	return PoolStats{Open: int(st.TotalConns()), Acquired: int(st.AcquiredConns()), Idle: int(st.IdleConns()),
		Max: int(st.MaxConns()), AcquireWaits: st.EmptyAcquireCount(), AcquireWait: st.AcquireDuration()}
}

// EnsureDatabase creates database name on the server of serverURL (a URL of
// a database that exists there, e.g. .../postgres) unless it exists. name
// must be a plain identifier.
func EnsureDatabase(ctx context.Context, serverURL, name string) error {
	for _, r := range name {
		if !(r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9') {
			return fmt.Errorf("database name %q: only a-z, 0-9 and _", name)
		}
	}
	conn, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return err
	}
	if exists {
		return nil
	}
	_, err = conn.Exec(ctx, "CREATE DATABASE "+name)
	return err
}
