package store

import (
	"context"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/geniam/geniam/store/pgtest"
	"github.com/jackc/pgx/v5/pgxpool"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func newPool(t testing.TB, url string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

func TestMigrateIsIdempotent(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t, pgtest.NewDatabase(t))
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
		pool := newPool(t, url)
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
	pool := newPool(t, pgtest.NewDatabase(t))
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
