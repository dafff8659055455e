package pgcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
)

// PgBench measures the database's own ceiling for small write transactions:
// `pgbench -i` on the database at url (it makes pgbench's tables there), then
// `pgbench -N -c clients -j threads -T seconds`. It returns the tps pgbench
// reports and its output. bin "" is the pgbench beside initdb (BinDir).
// make bench and the store's benchmarks compare Allocate with it.
func PgBench(ctx context.Context, bin, url string, clients, threads, seconds int) (tps float64, out string, err error) {
	if bin == "" {
		dir, err := BinDir()
		if err != nil {
			return 0, "", err
		}
		bin = filepath.Join(dir, "pgbench")
	}
	if out, err := runPgBench(ctx, bin, "-i", "-q", url); err != nil {
		return 0, out, fmt.Errorf("pgbench -i: %w\n%s", err, out)
	}
	out, err = runPgBench(ctx, bin, "-N", "-c", strconv.Itoa(clients), "-j", strconv.Itoa(threads),
		"-T", strconv.Itoa(seconds), url)
	if err != nil {
		return 0, out, fmt.Errorf("pgbench -N: %w\n%s", err, out)
	}
	tps, err = parseTPS(out)
	return tps, out, err
}

func runPgBench(ctx context.Context, bin string, args ...string) (string, error) {
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

var tpsPattern = regexp.MustCompile(`(?m)^tps = ([0-9]+(?:\.[0-9]+)?)`)

// parseTPS reads pgbench's "tps = 1234.5 (without initial connection time)".
func parseTPS(out string) (float64, error) {
	m := tpsPattern.FindStringSubmatch(out)
	if m == nil {
		return 0, errors.New("pgbench: no tps line in its output")
	}
	return strconv.ParseFloat(m[1], 64)
}
