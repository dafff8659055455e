package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/geniam/geniam/store/pgcluster"
	"github.com/jackc/pgx/v5"
)

// defaultPgBench is where Debian's PostgreSQL 15 installs pgbench.
const defaultPgBench = "/usr/lib/postgresql/15/bin/pgbench"

// pgbenchResult is the database's own ceiling: pgbench's simple-update
// transactions (-N) per second.
type pgbenchResult struct {
	Clients int     `json:"clients"`
	Threads int     `json:"threads"`
	Seconds int     `json:"seconds"`
	TPS     float64 `json:"tps"`
	Output  string  `json:"output"`
	// TPSBefore is a run of the same before the scenarios (0: none). The
	// machine's load may change while they run: the ceiling is then the mean.
	TPSBefore float64 `json:"tps_before,omitempty"`
}

// ceiling is the tps the scenarios are compared with.
func (p *pgbenchResult) ceiling() float64 {
	if p.TPSBefore > 0 {
		return (p.TPS + p.TPSBefore) / 2
	}
	return p.TPS
}

// runPgBench creates a scratch database next to the one dbURL names, runs
// `pgbench -i` and then `pgbench -N -c 8 -j 2 -T seconds` on it, and drops
// it again. The database in dbURL itself is never touched.
func runPgBench(ctx context.Context, bin, dbURL string, seconds int) (*pgbenchResult, error) {
	if seconds < 1 {
		return nil, errors.New("pgbench needs at least one second")
	}
	u, err := url.Parse(dbURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return nil, fmt.Errorf("--pgbench wants a postgres:// URL, got %q", dbURL)
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := "geniam_pgbench_" + hex.EncodeToString(b)
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, dbURL)
	if err != nil {
		return nil, fmt.Errorf("pgbench: connect: %w", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(cctx, "CREATE DATABASE "+name); err != nil {
		return nil, fmt.Errorf("pgbench: create the scratch database: %w", err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = conn.Exec(dctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	}()
	scratch := *u
	scratch.Path = "/" + name
	res := &pgbenchResult{Clients: 8, Threads: 2, Seconds: seconds}
	res.TPS, res.Output, err = pgcluster.PgBench(ctx, bin, scratch.String(), res.Clients, res.Threads, seconds)
	if err != nil {
		return nil, err
	}
	return res, nil
}
