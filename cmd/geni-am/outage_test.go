package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/geniam/geniam/store/pgtest"
)

// TestDatabaseOutageUnderLoad: clients keep calling a served aggregate
// while PostgreSQL is away (the proxy in front of it cut: connections
// closed, new ones refused). No call answers SERVERERROR: those that need
// the database answer BUSY "the database is unreachable; retry"; and every
// call has its audit row once the database is back (the spool). The
// outage lasts GENIAM_OUTAGE (default 2s; the figures in
// docs/provisioning.md are for 30s) and is repeated GENIAM_FAULT_REPEAT
// times.
func TestDatabaseOutageUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping: fault test")
	}
	outage := 2 * time.Second
	if v := os.Getenv("GENIAM_OUTAGE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 || d > 10*time.Minute {
			t.Fatalf("GENIAM_OUTAGE=%q: want a duration up to 10m", v)
		}
		outage = d
	}
	rounds, _ := strconv.Atoi(os.Getenv("GENIAM_FAULT_REPEAT"))
	rounds = max(1, min(rounds, 100))
	dbURL := pgtest.NewDatabase(t)
	proxy, proxied := pgtest.NewProxy(t, dbURL)
	s := serveOn(t, newDevPKI(t), proxied, true)
	direct := pgtest.Pool(t, dbURL)
	slice, sliceCred := s.newSlice("outage", 24*time.Hour)
	rspec := exampleRequest(t, "request-one-container.xml")
	if r := s.call("Allocate", slice.URN, creds(sliceCred), rspec, map[string]any{}); opsGeniCode(r) != 0 {
		t.Fatalf("Allocate: %v", r["output"])
	}

	var mu sync.Mutex
	codes := map[int64]int{}
	calls := 0
	for round := 0; round < rounds; round++ {
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for c := 0; c < 6; c++ {
			wg.Add(1)
			go func(c int) {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					var r map[string]any
					switch (c + i) % 3 {
					case 0:
						r = s.call("Status", []any{slice.URN}, creds(sliceCred), map[string]any{})
					case 1:
						r = s.call("Describe", []any{slice.URN}, creds(sliceCred), geni3Opts)
					default:
						r = s.call("Renew", []any{slice.URN}, creds(sliceCred), time.Now().Add(2*time.Hour).UTC().Format(time.RFC3339), map[string]any{})
					}
					code := opsGeniCode(r)
					mu.Lock()
					codes[code]++
					calls++
					mu.Unlock()
					if code == 5 {
						t.Errorf("SERVERERROR during the outage: %v", r["output"])
					}
					time.Sleep(20 * time.Millisecond)
				}
			}(c)
		}
		time.Sleep(500 * time.Millisecond)
		proxy.Cut()
		time.Sleep(outage)
		proxy.Restore()
		time.Sleep(time.Second)
		close(stop)
		wg.Wait()
	}
	// Every call has its audit row (Allocate included), once the spool is
	// replayed.
	var rows int
	for end := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if err := direct.QueryRow(context.Background(), "SELECT count(*) FROM audit_log").Scan(&rows); err != nil {
			t.Fatal(err)
		}
		if rows >= calls+1 || time.Now().After(end) {
			break
		}
	}
	if rows != calls+1 {
		t.Errorf("%d audit rows for %d calls", rows, calls+1)
	}
	var busy int
	if err := direct.QueryRow(context.Background(), "SELECT count(*) FROM audit_log WHERE code_name = 'BUSY' AND output LIKE '%the database is unreachable; retry%'").Scan(&busy); err != nil {
		t.Fatal(err)
	}
	if codes[14] == 0 || busy != codes[14] {
		t.Errorf("%d BUSY answers, %d audit rows saying the database is unreachable", codes[14], busy)
	}
	t.Logf("%d rounds of a %s outage under load: %d calls, answers by geni_code %v (5 = SERVERERROR), %d audit rows (%d lost)",
		rounds, outage, calls, fmt.Sprint(codes), rows, calls+1-rows)
}
