// Package migrations holds the aggregate's PostgreSQL schema as plain SQL
// files, applied by store.Migrate.
//
// The numbered files (*.sql here) change tables, indexes, triggers and data.
// They are applied in name order, each in its own transaction, and recorded
// in schema_migrations; never edit a file that has been released, add a new
// one (the latest number + 1).
//
// functions/*.sql hold the functions that get redefined (geniam_allocate,
// the slot trigger's): each is defined in one file, with CREATE
// OR REPLACE, and every Migrate applies them all, in name order, after the
// numbered files (in the transaction of the last one it applied, so no
// moment sees a new table with old functions). To change such a function,
// edit its file: a fresh database and an upgraded one end with the same
// definitions (store's TestFunctionsSameFreshAndUpgraded). What CREATE OR
// REPLACE cannot do (a new argument or result column, a dropped function)
// needs a numbered file that drops the old definition first; a new trigger
// needs its function to exist when the numbered file runs, so a function a
// numbered file attaches a trigger to is created there and may then move
// here. A function of a released numbered file (geniam_delete, say) moves
// here the next time it changes. A process whose binary is older than the database (schema_migrations
// names a file it does not have) leaves the functions as they are.
package migrations

import "embed"

// FS holds the *.sql files of this directory and of functions/.
//
//go:embed *.sql functions/*.sql
var FS embed.FS

// FunctionsDir is the directory of FS whose files are applied on every
// migration.
const FunctionsDir = "functions"
