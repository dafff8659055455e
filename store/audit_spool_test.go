package store_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/store"
	"github.com/geniam/geniam/store/pgtest"
	"github.com/geniam/geniam/store/storetest"
)

// TestAuditSpoolSurvivesOutage: audit records written while PostgreSQL is
// away go to the on-disk spool and are all in audit_log, once each, after
// it is back; so are those a writer spooled and never replayed (its process
// ended during the outage), by the next writer on the directory.
func TestAuditSpoolSurvivesOutage(t *testing.T) {
	ctx := context.Background()
	st, url := storetest.Open(t)
	proxy, purl := pgtest.NewProxy(t, url)
	pool := pgtest.Pool(t, purl)
	dir := t.TempDir()
	quiet := slog.New(slog.DiscardHandler)
	rec := func(i int) *am.AuditRecord {
		return &am.AuditRecord{At: time.Now(), LogID: fmt.Sprintf("id%04d", i), Method: "Status", Caller: "urn:publicid:IDN+x+user+u", Code: am.Busy}
	}
	count := func() int {
		var n, rows int // one statement: the replay may insert between two
		if err := st.Pool().QueryRow(ctx, "SELECT count(DISTINCT log_id), count(*) FROM audit_log").Scan(&n, &rows); err != nil {
			t.Fatal(err)
		}
		if rows != n {
			t.Errorf("%d audit rows for %d log ids: doubles", rows, n)
		}
		return n
	}

	// First writer: half before the outage, the rest during it; it stops
	// (its process ends) before the database is back.
	w1 := store.NewAuditWriter(pool, quiet, 1000)
	if err := w1.Spool(dir, 1<<20); err != nil {
		t.Fatal(err)
	}
	w1.Start()
	for i := 0; i < 50; i++ {
		w1.Audit(rec(i))
	}
	// Cut once the writer has seen its rows committed: a cut between the
	// commit and the writer reading the answer would have it spool rows the
	// table already holds (which a replay then skips: insertAuditOnce).
	for end := time.Now().Add(10 * time.Second); w1.Stats().Written < 50 && time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
	}
	if n := count(); n != 50 {
		t.Fatalf("%d of the first 50 audit records in audit_log", n)
	}
	proxy.Cut()
	for i := 50; i < 300; i++ {
		w1.Audit(rec(i))
		if i%50 == 0 {
			time.Sleep(50 * time.Millisecond)
		}
	}
	w1.Close(5 * time.Second)
	s1 := w1.Stats()
	if s1.Spooled != 250 || s1.Failed != 0 || s1.Dropped != 0 || s1.SpoolBytes == 0 {
		t.Fatalf("first writer: %+v, want 250 spooled, nothing failed or dropped", s1)
	}

	// Second writer, database back: it replays the first one's spool and
	// spools its own records of a second outage until the end of it.
	proxy.Restore()
	w2 := store.NewAuditWriter(pool, quiet, 1000)
	if err := w2.Spool(dir, 1<<20); err != nil {
		t.Fatal(err)
	}
	w2.Start()
	for end := time.Now().Add(10 * time.Second); count() < 300 && time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
	}
	proxy.Cut()
	for i := 300; i < 400; i++ {
		w2.Audit(rec(i))
	}
	time.Sleep(500 * time.Millisecond)
	proxy.Restore()
	for end := time.Now().Add(15 * time.Second); count() < 400 && time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
	}
	w2.Close(5 * time.Second)
	if n := count(); n != 400 {
		t.Fatalf("%d of 400 audit records in audit_log after the outages", n)
	}
	s2 := w2.Stats()
	if s2.Replayed < 250 || s2.Failed != 0 || s2.SpoolBytes != 0 {
		t.Errorf("second writer: %+v, want the first one's 250 replayed and an empty spool", s2)
	}
	t.Logf("first writer %+v; second writer %+v", s1, s2)

	// A full spool: beyond its bound, records are logged and counted as failed.
	proxy.Cut()
	w3 := store.NewAuditWriter(pool, quiet, 1000)
	if err := w3.Spool(t.TempDir(), 2000); err != nil {
		t.Fatal(err)
	}
	w3.Start()
	for i := 400; i < 450; i++ {
		w3.Audit(rec(i))
	}
	w3.Close(5 * time.Second)
	if s := w3.Stats(); s.Spooled == 0 || s.Failed == 0 || s.Spooled+s.Failed != 50 || s.SpoolBytes > 2000 {
		t.Errorf("bounded spool: %+v", s)
	}
	proxy.Restore()
}
