package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os/exec"
	"regexp"
	"strconv"
	"time"

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
	if out, err := runCommand(ctx, bin, "-i", "-q", scratch.String()); err != nil {
		return nil, fmt.Errorf("pgbench -i: %w\n%s", err, out)
	}
	out, err := runCommand(ctx, bin, "-N", "-c", strconv.Itoa(res.Clients), "-j", strconv.Itoa(res.Threads),
		"-T", strconv.Itoa(seconds), scratch.String())
	res.Output = out
	if err != nil {
		return nil, fmt.Errorf("pgbench: %w\n%s", err, out)
	}
	if res.TPS, err = parseTPS(out); err != nil {
		return nil, err
	}
	return res, nil
}

func runCommand(ctx context.Context, bin string, args ...string) (string, error) {
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

var tpsPattern = regexp.MustCompile(`(?m)^tps = ([0-9]+(?:\.[0-9]+)?)`)

// parseTPS reads "tps = 1234.5 (without initial connection time)".
func parseTPS(out string) (float64, error) {
	m := tpsPattern.FindStringSubmatch(out)
	if m == nil {
		return 0, errors.New("pgbench: no tps line in its output")
	}
	return strconv.ParseFloat(m[1], 64)
}
