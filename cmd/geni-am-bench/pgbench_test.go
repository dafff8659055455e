package main

import (
	"context"
	"os"
	"testing"

	"github.com/geniam/geniam/store/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestPgBench runs the real pgbench for one second on a scratch database.
func TestPgBench(t *testing.T) {
	if _, err := os.Stat(defaultPgBench); err != nil {
		t.Skip("pgbench not installed")
	}
	dbURL := pgtest.NewDatabase(t)
	res, err := runPgBench(context.Background(), defaultPgBench, dbURL, 1)
	if err != nil {
		t.Fatal(err)
	}
	if res.TPS <= 0 || res.Clients != 8 || res.Threads != 2 {
		t.Errorf("pgbench result %+v", res)
	}
	t.Logf("pgbench -N -c 8 -j 2 -T 1: %.0f tps", res.TPS)
	if _, err := runPgBench(context.Background(), defaultPgBench, "mysql://x", 1); err == nil {
		t.Error("a non-postgres URL was accepted")
	}
}
