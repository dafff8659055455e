package store_test

import (
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/store"
)

func benchRecord(i int) *am.AuditRecord {
	rec := &am.AuditRecord{At: time.Now(), LogID: "0123456789ab", Method: "Status", Caller: alice, Code: am.Success,
		Duration: time.Millisecond, Options: am.AuditOptions(map[string]any{"geni_best_effort": true})}
	rec.NoteAuthorization(&am.Authorization{User: alice, Digest: strings.Repeat("ab", 32), Issuer: "urn:publicid:IDN+ch.test+authority+sa"})
	rec.NoteSlice(sliceURN("bench"))
	rec.NoteSlivers("urn:publicid:IDN+geniam.test+sliver+0000000000000001")
	return rec
}

// BenchmarkAuditWriter: records queued by calls and written by the
// AuditWriter in batches, until the queue is drained. ns/op is per record.
func BenchmarkAuditWriter(b *testing.B) {
	st, _ := openStore(b)
	w := store.NewAuditWriter(st.Pool(), slog.New(slog.NewTextHandler(io.Discard, nil)), b.N+1)
	b.ResetTimer()
	w.Start()
	for i := 0; i < b.N; i++ {
		w.Audit(benchRecord(i))
	}
	w.Close(time.Minute)
	b.StopTimer()
	if s := w.Stats(); s.Written != uint64(b.N) {
		b.Fatalf("stats %+v for %d records", s, b.N)
	}
}

// BenchmarkAuditEnqueue is what a call pays for its audit record: the
// non-blocking hand-off to the queue.
func BenchmarkAuditEnqueue(b *testing.B) {
	w := store.NewAuditWriter(nil, slog.New(slog.NewTextHandler(io.Discard, nil)), b.N+1)
	rec := benchRecord(0)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		w.Audit(rec)
	}
}
