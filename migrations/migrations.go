// Package migrations holds the aggregate's PostgreSQL schema as plain SQL
// files, applied in name order by store.Migrate. Each file runs in its own
// transaction and is recorded in schema_migrations; never edit a file that has
// been released, add a new one.
package migrations

import "embed"

// FS holds the *.sql files of this directory.
//
//go:embed *.sql
var FS embed.FS
