package store

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// AuditWriter writes audit records to audit_log from a bounded queue, so a
// slow database never holds up a call. Nothing is lost silently: a record
// that does not fit in the queue, or that cannot be written, is counted
// (AuditStats) and logged in full at warning level, so the log still has it.
type AuditWriter struct {
	pool  *pgxpool.Pool
	log   *slog.Logger
	queue chan *am.AuditRecord

	written, dropped, failed atomic.Uint64
	spooled, replayed        atomic.Uint64
	spool                    *auditSpool // nil: no spool (failures go to the log only)
	spoolBytes               atomic.Int64
	spooling                 bool // since the last replay that emptied the spool (run's goroutine only)

	stopOnce sync.Once
	stop     chan struct{}
	done     chan struct{}
}

// AuditStats are the AuditWriter's counters.
type AuditStats struct {
	Written uint64 // rows inserted
	Dropped uint64 // records refused because the queue was full
	Failed  uint64 // records whose insert failed and that the spool could not take (each is in the log)
	Queued  int    // records waiting now

	Spooled    uint64 // records written to the on-disk spool while the database was away
	Replayed   uint64 // spooled records inserted once it was back
	SpoolBytes int64  // size of the spool now
}

// Spool makes the writer keep the records it cannot insert in dir (at most
// maxBytes; beyond, they are logged and counted as failed, as without a
// spool) and insert them when the database is back, including what a
// previous process left there. Call before Start.
func (w *AuditWriter) Spool(dir string, maxBytes int64) error {
	sp, err := openAuditSpool(dir, maxBytes)
	if err != nil {
		return fmt.Errorf("audit spool %s: %w", dir, err)
	}
	w.spool = sp
	w.spoolBytes.Store(sp.size)
	return nil
}

// DefaultAuditQueue is the queue length when NewAuditWriter gets 0.
const DefaultAuditQueue = 10000

// auditBatch is how many rows one insert round trip carries at most.
const auditBatch = 200

// auditLinger is how long the writer waits after a record for more to join
// its batch: under load one transaction then carries tens of rows instead of
// one or two, which costs the database much less per row (issue 21); the
// calls themselves never wait for the audit.
const auditLinger = 20 * time.Millisecond

// NewAuditWriter returns a writer with a queue of queueLen records; call
// Run (or Start) to write, and Close to flush on shutdown.
func NewAuditWriter(pool *pgxpool.Pool, log *slog.Logger, queueLen int) *AuditWriter {
	if queueLen <= 0 {
		queueLen = DefaultAuditQueue
	}
	if log == nil {
		log = slog.Default()
	}
	return &AuditWriter{pool: pool, log: log, queue: make(chan *am.AuditRecord, queueLen),
		stop: make(chan struct{}), done: make(chan struct{})}
}

var _ am.Auditor = (*AuditWriter)(nil)

// Audit queues rec; it never blocks.
func (w *AuditWriter) Audit(rec *am.AuditRecord) {
	select {
	case w.queue <- rec:
	default:
		w.dropped.Add(1)
		w.log.Warn("audit queue full: record not written to the database", auditAttrs(rec)...)
	}
}

// Stats returns the counters.
func (w *AuditWriter) Stats() AuditStats {
	return AuditStats{Written: w.written.Load(), Dropped: w.dropped.Load(), Failed: w.failed.Load(), Queued: len(w.queue),
		Spooled: w.spooled.Load(), Replayed: w.replayed.Load(), SpoolBytes: w.spoolBytes.Load()}
}

// Start runs the writer in a goroutine.
func (w *AuditWriter) Start() { go w.run() }

// Close stops taking new work once the queue is drained (waiting at most
// timeout for the database) and returns when the writer has stopped.
func (w *AuditWriter) Close(timeout time.Duration) {
	w.stopOnce.Do(func() { close(w.stop) })
	select {
	case <-w.done:
	case <-time.After(timeout):
		w.log.Warn("audit writer: gave up flushing", "queued", len(w.queue))
	}
}

func (w *AuditWriter) run() {
	defer close(w.done)
	batch := make([]*am.AuditRecord, 0, auditBatch)
	replayTick := time.NewTicker(auditReplayInterval)
	defer replayTick.Stop()
	w.replay() // what a previous process left
	for {
		select {
		case <-replayTick.C:
			w.replay()
		case rec := <-w.queue:
			batch = append(batch[:0], rec)
			linger := time.NewTimer(auditLinger)
		more:
			for len(batch) < auditBatch {
				select {
				case rec := <-w.queue:
					batch = append(batch, rec)
				case <-linger.C:
					break more
				case <-w.stop:
					break more
				}
			}
			linger.Stop()
			w.flush(batch)
		case <-w.stop:
			for {
				batch = batch[:0]
				for len(batch) < auditBatch && len(w.queue) > 0 {
					batch = append(batch, <-w.queue)
				}
				if len(batch) == 0 {
					w.replay()
					if w.spool != nil {
						w.spool.closeCurrent()
					}
					return
				}
				w.flush(batch)
			}
		}
	}
}

// auditReplayInterval is how often a writer with a non-empty spool tries
// the database again.
const auditReplayInterval = 2 * time.Second

// flush writes one batch, retrying once; what still fails goes to the spool
// if there is one and room in it, else to the log.
func (w *AuditWriter) flush(batch []*am.AuditRecord) {
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = WriteAudit(ctx, w.pool, batch...)
		cancel()
		if err == nil {
			w.written.Add(uint64(len(batch)))
			return
		}
		if w.spool != nil && w.spool.size > 0 {
			break // the database was away a moment ago: do not hold the queue up
		}
		time.Sleep(100 * time.Millisecond)
	}
	if w.spool != nil {
		n, serr := w.spool.add(rowsOf(batch))
		w.spooled.Add(uint64(n))
		w.spoolBytes.Store(w.spool.size)
		if n > 0 && !w.spooling {
			w.spooling = true
			w.log.Warn("audit: the database cannot take audit rows; spooling them to disk until it is back", "dir", w.spool.dir, "err", err)
		}
		if serr != nil {
			w.log.Warn("audit: spool", "dir", w.spool.dir, "err", serr)
		}
		if n == len(batch) {
			return
		}
		batch = batch[n:]
	}
	w.failed.Add(uint64(len(batch)))
	for _, rec := range batch {
		w.log.Warn("audit record not written to the database", append(auditAttrs(rec), "err", err)...)
	}
}

// replay inserts the spooled records if the database takes them.
func (w *AuditWriter) replay() {
	if w.spool == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := w.spool.replay(ctx, w.pool)
	w.replayed.Add(uint64(n))
	w.spoolBytes.Store(w.spool.size)
	if n > 0 {
		w.log.Info("audit: spooled records written to the database", "records", n, "left_bytes", w.spool.size)
	}
	if err == nil && w.spool.size == 0 {
		w.spooling = false
	}
	if err != nil && !Unreachable(err) {
		w.log.Warn("audit: replaying the spool", "err", err)
	}
}

// auditAttrs is a record as log attributes (the log keeps what the table lost).
func auditAttrs(rec *am.AuditRecord) []any {
	v := rec.View()
	opts, _ := json.Marshal(rec.Options)
	return []any{"log_id", rec.LogID, "method", rec.Method, "at", rec.At, "remote", rec.RemoteAddr, "caller", rec.Caller,
		"user", v.User, "speaks_for", v.SpeaksFor, "slice", v.SliceURN, "slivers", v.SliverURNs,
		"credential_digest", v.CredentialDigest, "credential_issuer", v.CredentialIssuer, "options", string(opts),
		"code", am.AuditCodeName(rec.Code), "output", rec.Output, "ms", rec.Duration.Milliseconds(), "deployed", v.Deployed}
}

const insertAudit = `INSERT INTO audit_log (at, log_id, method, remote_addr, caller_urn, user_urn, speaks_for, slice_urn,
	sliver_urns, credential_digest, credential_issuer, options, geni_code, code_name, output, duration_ms, deployed)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)`

// WriteAudit inserts records synchronously, in one round trip.
func WriteAudit(ctx context.Context, pool *pgxpool.Pool, recs ...*am.AuditRecord) error {
	return writeRows(ctx, pool, insertAudit, rowsOf(recs))
}

func rowsOf(recs []*am.AuditRecord) []auditRow {
	rows := make([]auditRow, len(recs))
	for i, rec := range recs {
		rows[i] = rowOf(rec)
	}
	return rows
}

// insertSessionAudit is insertAudit for SSH session events: every aggregate
// process reads each event from the agent's change feed, and the first row
// wins (migration 0012's audit_log_ssh_once).
const insertSessionAudit = insertAudit + ` ON CONFLICT (log_id, at) WHERE method = 'SSH' DO NOTHING`

// AuditSessions writes the audit rows of SSH session events (method SSH,
// log id the session's), synchronously and in one round trip, each once
// however often it is written.
func (s *Store) AuditSessions(ctx context.Context, recs ...*am.AuditRecord) error {
	return writeRows(ctx, s.pool, insertSessionAudit, rowsOf(recs))
}

// ---- settings and counters the policy reads ----

// SettingMaintenance is the settings key of the runtime maintenance switch.
const SettingMaintenance = "maintenance"

// SettingReload is the settings key of the last reload request (admin
// reload): every aggregate process on the database that sees its value
// change reloads as on SIGHUP.
const SettingReload = "reload"

// Setting returns the value of key, "" when unset.
func (s *Store) Setting(ctx context.Context, key string) (string, error) {
	var v string
	err := s.pool.QueryRow(ctx, "SELECT value FROM settings WHERE key = $1", key).Scan(&v)
	if err == pgx.ErrNoRows {
		return "", nil
	}
	return v, err
}

// SetSetting sets key (an empty value removes it), recording who did it.
func (s *Store) SetSetting(ctx context.Context, key, value, actor string) error {
	if value == "" {
		_, err := s.pool.Exec(ctx, "DELETE FROM settings WHERE key = $1", key)
		return err
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO settings (key, value, updated_by, updated_at) VALUES ($1, $2, $3, now())
		ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_by = EXCLUDED.updated_by, updated_at = now()`,
		key, value, actor)
	return err
}

// Maintenance reads the runtime maintenance message (am.OpsPolicy.MaintenanceFrom).
func (s *Store) Maintenance(ctx context.Context) (string, error) {
	return s.Setting(ctx, SettingMaintenance)
}

var _ am.SliverCounter = (*Store)(nil)

// LiveSlivers counts the live slivers user allocated and those of project's
// slices (project "" counts nothing).
func (s *Store) LiveSlivers(ctx context.Context, user, project string) (byUser, byProject int, err error) {
	prefix := ""
	if project != "" {
		prefix = "urn:publicid:IDN+" + project + "+slice+"
	}
	err = s.pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE created_by = $1),
		count(*) FILTER (WHERE $2 <> '' AND starts_with(slice_urn, $2)) FROM slivers`, user, prefix).Scan(&byUser, &byProject)
	if err != nil {
		return 0, 0, cleanError("count slivers", err)
	}
	return byUser, byProject, nil
}
