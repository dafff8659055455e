package store

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The audit spool: while PostgreSQL cannot take audit rows, the writer
// appends them to files in a directory (JSON lines, fsynced per batch,
// bounded in total size) and replays them, oldest first, once the database
// answers again. A row is inserted only if no row with its log id, method
// and time exists, so a replay cut short and run again never doubles one.
// Files are locked (flock) while written or replayed, so several processes
// may share the directory and one replays what another left behind when it
// died.

// auditRow is one audit_log row as spooled.
type auditRow struct {
	At               time.Time       `json:"at"`
	LogID            string          `json:"log_id"`
	Method           string          `json:"method"`
	RemoteAddr       string          `json:"remote_addr"`
	Caller           string          `json:"caller"`
	User             string          `json:"user"`
	SpeaksFor        bool            `json:"speaks_for"`
	Slice            string          `json:"slice"`
	Slivers          []string        `json:"slivers"`
	CredentialDigest string          `json:"credential_digest"`
	CredentialIssuer string          `json:"credential_issuer"`
	Options          json.RawMessage `json:"options"`
	Code             int             `json:"code"`
	CodeName         string          `json:"code_name"`
	Output           string          `json:"output"`
	DurationMS       float64         `json:"duration_ms"`
	Deployed         json.RawMessage `json:"deployed"`
}

func rowOf(rec *am.AuditRecord) auditRow {
	v := rec.View()
	opts, err := json.Marshal(rec.Options)
	if err != nil || rec.Options == nil {
		opts = []byte("{}")
	}
	deployed, err := json.Marshal(v.Deployed)
	if err != nil || v.Deployed == nil {
		deployed = []byte("[]")
	}
	urns := v.SliverURNs
	if urns == nil {
		urns = []string{}
	}
	return auditRow{At: rec.At, LogID: rec.LogID, Method: rec.Method, RemoteAddr: rec.RemoteAddr, Caller: rec.Caller,
		User: v.User, SpeaksFor: v.SpeaksFor, Slice: v.SliceURN, Slivers: urns, CredentialDigest: v.CredentialDigest,
		CredentialIssuer: v.CredentialIssuer, Options: opts, Code: int(rec.Code), CodeName: am.AuditCodeName(rec.Code),
		Output: rec.Output, DurationMS: float64(rec.Duration.Microseconds()) / 1000, Deployed: deployed}
}

func (r auditRow) args() []any {
	return []any{r.At, r.LogID, r.Method, r.RemoteAddr, r.Caller, r.User, r.SpeaksFor, r.Slice, r.Slivers,
		r.CredentialDigest, r.CredentialIssuer, string(r.Options), r.Code, r.CodeName, r.Output, r.DurationMS, string(r.Deployed)}
}

// insertAuditOnce is insertAudit that skips a row already there (replays).
const insertAuditOnce = `INSERT INTO audit_log (at, log_id, method, remote_addr, caller_urn, user_urn, speaks_for, slice_urn,
	sliver_urns, credential_digest, credential_issuer, options, geni_code, code_name, output, duration_ms, deployed)
	SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17
	WHERE NOT EXISTS (SELECT 1 FROM audit_log WHERE log_id = $2 AND method = $3 AND at = $1)`

func writeRows(ctx context.Context, pool *pgxpool.Pool, q string, rows []auditRow) error {
	var b pgx.Batch
	for _, r := range rows {
		b.Queue(q, r.args()...)
	}
	return pool.SendBatch(ctx, &b).Close()
}

// auditSpool is the spool directory of one writer.
type auditSpool struct {
	dir   string
	max   int64 // bytes, all files together
	size  int64 // bytes now (this writer's view; other processes' files counted at open)
	cur   *os.File
	curN  int64
	label string // this process, in file names
}

const spoolSuffix = ".audit.jsonl"

// maxSpoolFile rotates the file being written, so a replay makes progress
// file by file.
const maxSpoolFile = 4 << 20

func openAuditSpool(dir string, max int64) (*auditSpool, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	sp := &auditSpool{dir: dir, max: max, label: fmt.Sprintf("%d", os.Getpid())}
	files, err := sp.files()
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		if fi, err := os.Stat(f); err == nil {
			sp.size += fi.Size()
		}
	}
	return sp, nil
}

func (sp *auditSpool) files() ([]string, error) {
	names, err := filepath.Glob(filepath.Join(sp.dir, "*"+spoolSuffix))
	sort.Strings(names) // names start with the time they were opened
	return names, err
}

// add appends rows; it returns how many fit under the bound.
func (sp *auditSpool) add(rows []auditRow) (int, error) {
	var buf []byte
	n := 0
	for _, r := range rows {
		line, err := json.Marshal(r)
		if err != nil {
			return n, err
		}
		if sp.size+int64(len(buf)+len(line)+1) > sp.max {
			break
		}
		buf = append(append(buf, line...), '\n')
		n++
	}
	if n == 0 {
		return 0, nil
	}
	if sp.cur == nil || sp.curN >= maxSpoolFile {
		sp.closeCurrent()
		name := filepath.Join(sp.dir, fmt.Sprintf("%020d-%s%s", time.Now().UnixNano(), sp.label, spoolSuffix))
		f, err := os.OpenFile(name, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return 0, err
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			return 0, err
		}
		sp.cur, sp.curN = f, 0
	}
	if _, err := sp.cur.Write(buf); err != nil {
		return 0, err
	}
	if err := sp.cur.Sync(); err != nil {
		return 0, err
	}
	sp.curN += int64(len(buf))
	sp.size += int64(len(buf))
	return n, nil
}

func (sp *auditSpool) closeCurrent() {
	if sp.cur != nil {
		_ = sp.cur.Close() // releases the lock
		sp.cur = nil
	}
}

// replay inserts every spooled file it can lock, oldest first, removing each
// once all its rows are in. It returns how many rows it inserted and stops
// at the first error (the database is still away).
func (sp *auditSpool) replay(ctx context.Context, pool *pgxpool.Pool) (int, error) {
	sp.closeCurrent()
	files, err := sp.files()
	if err != nil {
		return 0, err
	}
	total := 0
	for _, name := range files {
		n, err := replayFile(ctx, pool, name)
		total += n
		if errors.Is(err, syscall.EWOULDBLOCK) {
			continue // another process writes or replays it
		}
		if err != nil {
			return total, err
		}
	}
	sp.size = 0
	if files, err := sp.files(); err == nil {
		for _, f := range files {
			if fi, err := os.Stat(f); err == nil {
				sp.size += fi.Size()
			}
		}
	}
	return total, nil
}

func replayFile(ctx context.Context, pool *pgxpool.Pool, name string) (int, error) {
	f, err := os.Open(name)
	if err != nil {
		if os.IsNotExist(err) {
			return 0, nil // replayed by another process meanwhile
		}
		return 0, err
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return 0, err
	}
	if _, err := os.Stat(name); os.IsNotExist(err) {
		return 0, nil // removed between our open and our lock
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	var rows []auditRow
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var r auditRow
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			continue // a torn last line of a process killed mid-write
		}
		rows = append(rows, r)
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	for i := 0; i < len(rows); i += auditBatch {
		end := min(i+auditBatch, len(rows))
		if err := writeRows(ctx, pool, insertAuditOnce, rows[i:end]); err != nil {
			return i, err
		}
	}
	return len(rows), os.Remove(name)
}
