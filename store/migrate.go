package store

import (
	"context"
	"fmt"
	"io/fs"
	"slices"
	"sort"

	"github.com/geniam/geniam/migrations"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// migrationLockKey is the pg_advisory_xact_lock key that serialises
// concurrent Migrate calls (any fixed number; "geniam" in ASCII).
const migrationLockKey int64 = 0x67656e69616d

// Migrate applies the embedded migrations not yet recorded in
// schema_migrations, in name order, each in its own transaction, and then the
// function definitions of migrations/functions (see package migrations), in
// the transaction of the last migration applied or in one of their own. A
// failing migration leaves the database as it was before that file and stops
// the run. Two processes may migrate at once: an advisory lock makes the
// second wait and then find nothing to do but the (same) functions.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	return migrateFS(ctx, pool, migrations.FS)
}

func migrateFS(ctx context.Context, pool *pgxpool.Pool, files fs.FS) error {
	names, err := fs.Glob(files, "*.sql")
	if err != nil {
		return err
	}
	sort.Strings(names)
	functions, err := fs.Glob(files, migrations.FunctionsDir+"/*.sql")
	if err != nil {
		return err
	}
	sort.Strings(functions)
	// Under the lock: CREATE TABLE IF NOT EXISTS is not safe against a
	// concurrent twin (both may try to create the table's row type).
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", migrationLockKey); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			name       text PRIMARY KEY,
			applied_at timestamptz NOT NULL DEFAULT now())`)
		return err
	})
	if err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	applied, err := AppliedMigrations(ctx, pool)
	if err != nil {
		return fmt.Errorf("read schema_migrations: %w", err)
	}
	// Which files are pending decides only which transaction also applies
	// the functions; each transaction checks its own file under the lock.
	var pending []string
	for _, name := range names {
		if !slices.Contains(applied, name) {
			pending = append(pending, name)
		}
	}
	then := func(tx pgx.Tx) error { return applyFunctions(ctx, tx, files, names, functions) }
	if len(pending) == 0 {
		return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", migrationLockKey); err != nil {
				return fmt.Errorf("migration lock: %w", err)
			}
			return then(tx)
		})
	}
	for i, name := range pending {
		body, err := fs.ReadFile(files, name)
		if err != nil {
			return err
		}
		var last func(pgx.Tx) error
		if i == len(pending)-1 {
			last = then
		}
		if err := applyMigration(ctx, pool, name, string(body), last); err != nil {
			return err
		}
	}
	return nil
}

// applyMigration applies one numbered file unless it is recorded already,
// then runs then (if not nil) in the same transaction.
func applyMigration(ctx context.Context, pool *pgxpool.Pool, name, body string, then func(pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", migrationLockKey); err != nil {
			return fmt.Errorf("migration lock: %w", err)
		}
		var done bool
		if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE name = $1)", name).Scan(&done); err != nil {
			return fmt.Errorf("read schema_migrations: %w", err)
		}
		if !done {
			// Simple protocol: a migration file holds many statements.
			if _, err := tx.Exec(ctx, body, pgx.QueryExecModeSimpleProtocol); err != nil {
				return fmt.Errorf("migration %s: %w", name, err)
			}
			if _, err := tx.Exec(ctx, "INSERT INTO schema_migrations (name) VALUES ($1)", name); err != nil {
				return fmt.Errorf("record migration %s: %w", name, err)
			}
		}
		if then == nil {
			return nil
		}
		return then(tx)
	})
}

// applyFunctions runs the function files (CREATE OR REPLACE) in tx, which
// holds the migration lock, unless the database has a migration this binary
// does not know: a newer binary's functions are left in place.
func applyFunctions(ctx context.Context, tx pgx.Tx, files fs.FS, known, functions []string) error {
	var newer *string
	err := tx.QueryRow(ctx, "SELECT min(name) FROM schema_migrations WHERE name <> ALL($1)", known).Scan(&newer)
	if err != nil {
		return fmt.Errorf("read schema_migrations: %w", err)
	}
	if newer != nil {
		return nil
	}
	for _, name := range functions {
		body, err := fs.ReadFile(files, name)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, string(body), pgx.QueryExecModeSimpleProtocol); err != nil {
			return fmt.Errorf("migration %s: %w", name, err)
		}
	}
	return nil
}

// AppliedMigrations lists the names recorded in schema_migrations.
func AppliedMigrations(ctx context.Context, pool *pgxpool.Pool) ([]string, error) {
	rows, err := pool.Query(ctx, "SELECT name FROM schema_migrations ORDER BY name")
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}
