package main

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/geniam/geniam/store/pgtest"
)

// TestTwoAggregatesOneDatabase is docs/scaling.md in a test: two aggregate
// processes (here two serve loops) on one PostgreSQL migrate at once, share
// the nodes without double booking under concurrent Allocates, both write
// the audit trail, and both obey the maintenance switch.
func TestTwoAggregatesOneDatabase(t *testing.T) {
	pki := newDevPKI(t)
	dbURL := pgtest.NewDatabase(t)
	var aggs [2]*served
	var wg sync.WaitGroup
	for i := range aggs {
		wg.Add(1)
		go func() { defer wg.Done(); aggs[i] = serveOn(t, pki, dbURL, i == 0) }()
	}
	wg.Wait()
	if aggs[0] == nil || aggs[1] == nil {
		t.Fatal("an aggregate did not start")
	}
	rspec := exampleRequest(t, "request-one-container.xml")
	const attempts = 16 // the demo inventory has 10 container slots
	sliceCreds := make([][]byte, attempts)
	slices := make([]string, attempts)
	for i := range sliceCreds {
		sl, cred := aggs[0].newSlice(fmt.Sprintf("scale%d", i), time.Hour)
		slices[i], sliceCreds[i] = sl.URN, cred
	}
	codes := make([]int64, attempts)
	for i := 0; i < attempts; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := aggs[i%2].call("Allocate", slices[i], creds(sliceCreds[i]), rspec, map[string]any{})
			codes[i] = opsGeniCode(r)
		}()
	}
	wg.Wait()
	ok, busy := 0, 0
	for _, c := range codes {
		switch c {
		case 0:
			ok++
		case 14:
			busy++
		}
	}
	var held int
	ctx := context.Background()
	if err := aggs[0].pool.QueryRow(ctx, "SELECT count(*) FROM node_slots").Scan(&held); err != nil {
		t.Fatal(err)
	}
	if ok > 10 || held != ok || ok+busy < 10 {
		t.Fatalf("%d allocations succeeded (%d BUSY), %d slots held; codes %v", ok, busy, held, codes)
	}
	t.Logf("%d Allocates over two aggregates: %d succeeded, %d BUSY, codes %v", attempts, ok, busy, codes)
	// Maintenance set once is seen by both processes.
	aggs[0].admin("maintenance", "on", "two processes")
	time.Sleep(1100 * time.Millisecond)
	for i, a := range aggs {
		sl, cred := a.newSlice(fmt.Sprintf("maint%d", i), time.Hour)
		if c := opsGeniCode(a.call("Allocate", sl.URN, creds(cred), rspec, map[string]any{})); c != 11 {
			t.Errorf("aggregate %d: Allocate in maintenance got %d, want UNAVAILABLE", i, c)
		}
	}
	// Both wrote the audit trail: one row per call.
	deadline := time.Now().Add(10 * time.Second)
	var n int
	for time.Now().Before(deadline) {
		if err := aggs[0].pool.QueryRow(ctx, "SELECT count(*) FROM audit_log WHERE method = 'Allocate'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == attempts+2 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n != attempts+2 {
		t.Fatalf("%d audit rows for %d Allocates", n, attempts+2)
	}
}
