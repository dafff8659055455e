package store

import (
	"context"
	"io/fs"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/geniam/geniam/migrations"
	"github.com/geniam/geniam/store/pgtest"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestMigrateIsIdempotent(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.Pool(t, pgtest.NewDatabase(t))
	for i := 0; i < 2; i++ {
		if err := Migrate(ctx, pool); err != nil {
			t.Fatalf("migrate #%d: %v", i+1, err)
		}
	}
	names, err := AppliedMigrations(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	if len(names) == 0 || names[0] != "0001_init.sql" {
		t.Fatalf("applied = %v", names)
	}
	for _, table := range []string{"nodes", "slices", "slivers", "node_slots", "sliver_history", "inventory_version"} {
		var comment *string
		if err := pool.QueryRow(ctx, "SELECT obj_description($1::regclass, 'pg_class')", table).Scan(&comment); err != nil {
			t.Fatal(err)
		}
		if comment == nil || *comment == "" {
			t.Errorf("table %s has no COMMENT", table)
		}
	}
}

func TestMigrateConcurrently(t *testing.T) {
	url := pgtest.NewDatabase(t)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		pool := pgtest.Pool(t, url)
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = Migrate(context.Background(), pool)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("migrator %d: %v", i, err)
		}
	}
}

func TestFailingMigrationIsRolledBack(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.Pool(t, pgtest.NewDatabase(t))
	files := fstest.MapFS{
		"0001_ok.sql":     {Data: []byte("CREATE TABLE a (x int);")},
		"0002_broken.sql": {Data: []byte("CREATE TABLE b (x int); INSERT INTO a VALUES (1); SELECT no_such_function();")},
		"0003_later.sql":  {Data: []byte("CREATE TABLE c (x int);")},
	}
	err := migrateFS(ctx, pool, files)
	if err == nil || !strings.Contains(err.Error(), "0002_broken.sql") {
		t.Fatalf("err = %v, want the broken migration named", err)
	}
	var b, c *string
	var rowsInA int
	if err := pool.QueryRow(ctx, "SELECT to_regclass('b')::text, to_regclass('c')::text, (SELECT count(*) FROM a)").Scan(&b, &c, &rowsInA); err != nil {
		t.Fatal(err)
	}
	if b != nil || c != nil || rowsInA != 0 {
		t.Errorf("after failed migration: b=%v c=%v rows in a=%d; want nothing of 0002 and no 0003", b, c, rowsInA)
	}
	names, _ := AppliedMigrations(ctx, pool)
	if strings.Join(names, ",") != "0001_ok.sql" {
		t.Errorf("recorded %v", names)
	}
	// Fixed file: the run resumes where it stopped.
	files["0002_broken.sql"] = &fstest.MapFile{Data: []byte("CREATE TABLE b (x int);")}
	if err := migrateFS(ctx, pool, files); err != nil {
		t.Fatal(err)
	}
	names, _ = AppliedMigrations(ctx, pool)
	if len(names) != 3 {
		t.Errorf("recorded %v", names)
	}
}

// schemaSummary is every definition a migration makes that code relies on:
// the functions (but the extensions'), triggers, indexes and constraints.
func schemaSummary(t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	var out strings.Builder
	for _, q := range []string{
		`SELECT p.oid::regprocedure::text || E'\n' || pg_get_functiondef(p.oid) FROM pg_proc p
			WHERE p.pronamespace = 'public'::regnamespace
			  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
			ORDER BY 1`,
		`SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1`,
		`SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1`,
		`SELECT conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(oid) FROM pg_constraint
			WHERE connamespace = 'public'::regnamespace ORDER BY 1`,
	} {
		rows, err := pool.Query(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		defs, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		out.WriteString(strings.Join(defs, "\n") + "\n")
	}
	return out.String()
}

// A database migrated by a binary of before migrations/functions (the
// numbered files up to 0012) and then by this one ends with the same
// definitions as one migrated fresh: a function is defined by its file in
// migrations/functions, not by the history of numbered files.
func TestFunctionsSameFreshAndUpgraded(t *testing.T) {
	ctx := context.Background()
	fresh := pgtest.Pool(t, pgtest.NewDatabase(t))
	if err := Migrate(ctx, fresh); err != nil {
		t.Fatal(err)
	}
	upgraded := pgtest.Pool(t, pgtest.NewDatabase(t))
	old := fstest.MapFS{}
	names, err := fs.Glob(migrations.FS, "*.sql")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		if name < "0013" {
			body, _ := fs.ReadFile(migrations.FS, name)
			old[name] = &fstest.MapFile{Data: body}
		}
	}
	if err := migrateFS(ctx, upgraded, old); err != nil {
		t.Fatal(err)
	}
	if err := Migrate(ctx, upgraded); err != nil {
		t.Fatal(err)
	}
	a, b := schemaSummary(t, fresh), schemaSummary(t, upgraded)
	if a != b {
		al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
		for i := 0; i < len(al) && i < len(bl); i++ {
			if al[i] != bl[i] {
				t.Fatalf("fresh and upgraded databases differ at line %d:\nfresh:    %s\nupgraded: %s", i+1, al[i], bl[i])
			}
		}
		t.Fatalf("fresh and upgraded databases differ in length: %d and %d lines", len(al), len(bl))
	}
	if !strings.Contains(a, "geniam_allocate(") || !strings.Contains(a, "node_slots_check") {
		t.Fatalf("no functions in the summary:\n%s", a)
	}
}

// A binary older than the database (schema_migrations names a file it does
// not have) leaves the functions as the newer binary defined them.
func TestOlderBinaryLeavesFunctions(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.Pool(t, pgtest.NewDatabase(t))
	if err := Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO schema_migrations (name) VALUES ('9999_from_the_future.sql');
`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `CREATE OR REPLACE FUNCTION geniam_sliver_window(p_starts timestamptz, p_expires timestamptz)
		RETURNS tstzrange LANGUAGE sql STABLE AS 'SELECT tstzrange(p_starts, p_expires)'`); err != nil {
		t.Fatal(err)
	}
	if err := Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	var def string
	if err := pool.QueryRow(ctx, "SELECT pg_get_functiondef('geniam_sliver_window'::regproc)").Scan(&def); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(def, "microsecond") {
		t.Errorf("an older binary redefined the newer database's function:\n%s", def)
	}
}
