package node

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/geniam/geniam/am/agent"
)

// SSH session events (agent.SessionEvent) are audit records: the aggregate
// writes an audit_log row for each one it reads from the change feed. Until
// an aggregate has written them, the agent keeps them on disk as well as in
// memory (<state>/sessions.jsonl, one JSON line per event, fsynced before
// the event is published), so neither an agent restart nor an aggregate
// outage loses one. An aggregate that polls with after=N has written every
// event up to N (when the write fails it asks from the same number again),
// so a poll acknowledges them and they are dropped. Several aggregate
// processes may poll one agent: one acknowledgement is enough, since they
// share the database and write each row once.

// maxSessions bounds the events kept unacknowledged, on disk and in memory:
// weeks of logins on a busy node. Beyond it the oldest tenth goes, with an
// error in the agent's log (the agent's log line of each session remains).
const maxSessions = 100_000

// sessionJournal is the file of the unacknowledged events.
type sessionJournal struct {
	path string
	f    *os.File // opened for appending
}

// openSessionJournal opens (or creates) the journal at path and returns the
// events it holds, oldest first. A line that does not parse (the last one,
// after a crash in the middle of a write) is skipped and reported.
func openSessionJournal(path string) (*sessionJournal, []agent.SessionEvent, []error) {
	var evs []agent.SessionEvent
	var errs []error
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, nil, []error{err}
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for line := 1; sc.Scan(); line++ {
		var ev agent.SessionEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil || ev.Seq == 0 {
			errs = append(errs, fmt.Errorf("%s line %d is not a session event; skipped", path, line))
			continue
		}
		evs = append(evs, ev)
	}
	j := &sessionJournal{path: path}
	switch {
	case sc.Err() != nil:
		// The rest was not read: keep the file as it is (a rewrite
		// would drop it) and append after it.
		errs = append(errs, fmt.Errorf("%s: %w", path, sc.Err()))
		err = j.open()
	case len(errs) > 0:
		// Write back what was read, so the bad lines are reported once.
		err = j.rewrite(evs)
	default:
		err = j.open()
	}
	if err != nil {
		return nil, evs, append(errs, err)
	}
	return j, evs, errs
}

func (j *sessionJournal) open() error {
	f, err := os.OpenFile(j.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	j.f = f
	return nil
}

// append writes ev and waits until it is on disk.
func (j *sessionJournal) append(ev agent.SessionEvent) error {
	b, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	if _, err := j.f.Write(append(b, '\n')); err != nil {
		return err
	}
	return j.f.Sync()
}

// rewrite replaces the journal with evs (atomically: a crash leaves the old
// file or the new one) and reopens it for appending.
func (j *sessionJournal) rewrite(evs []agent.SessionEvent) error {
	var b []byte
	for _, ev := range evs {
		line, err := json.Marshal(ev)
		if err != nil {
			return err
		}
		b = append(append(b, line...), '\n')
	}
	if j.f != nil {
		j.f.Close()
		j.f = nil
	}
	if err := writeFileAtomic(j.path, b, 0o600); err != nil {
		// The old file stays, acknowledged events too (the aggregate
		// writes each event's row once, so a resent one is harmless):
		// keep appending to it.
		return errors.Join(err, j.open())
	}
	return j.open()
}

// openJournal keeps c's session events in the journal at path from now on,
// after taking those a previous run left there. Without a journal (it cannot
// be opened) the events are kept in memory only, as the log says.
func (c *changes) openJournal(path string, log *slog.Logger) {
	j, evs, errs := openSessionJournal(filepath.Clean(path))
	for _, err := range errs {
		log.Error("agent: SSH session journal", "err", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.log = log
	c.journal = j
	c.sessions = append(evs, c.sessions...)
	// A clock set back since the last run must not number new events
	// below the old ones: an acknowledgement counts by number.
	if n := len(c.sessions); n > 0 && c.sessions[n-1].Seq >= c.seq {
		c.seq = c.sessions[n-1].Seq + 1
	}
}

// closeJournal closes the journal file; events noted afterwards are kept in
// memory only.
func (c *changes) closeJournal() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.journal != nil && c.journal.f != nil {
		c.journal.f.Close()
	}
	c.journal = nil
}

// keepSessionLocked records ev (numbered) as unacknowledged: on disk first,
// then in memory, dropping the oldest tenth beyond maxSessions.
func (c *changes) keepSessionLocked(ev agent.SessionEvent) {
	if len(c.sessions) >= maxSessions {
		drop := maxSessions / 10
		c.logError("agent: too many SSH session events unacknowledged (no aggregate reads the change feed); dropping the oldest",
			"dropped", drop, "first", c.sessions[0].At, "last", c.sessions[drop-1].At)
		c.sessions = append(c.sessions[:0], c.sessions[drop:]...)
		c.rewriteLocked()
	}
	if c.journal != nil {
		if err := c.journal.append(ev); err != nil {
			c.logError("agent: SSH session journal: cannot write an event; it is kept in memory only", "err", err, "session", ev.Session)
		}
	}
	c.sessions = append(c.sessions, ev)
}

// ackSessionsLocked drops the events up to after, which an aggregate has
// written. A number this run has not reached yet is no acknowledgement.
func (c *changes) ackSessionsLocked(after uint64) {
	if after > c.seq {
		return
	}
	i := 0
	for i < len(c.sessions) && c.sessions[i].Seq <= after {
		i++
	}
	if i == 0 {
		return
	}
	c.sessions = append(c.sessions[:0], c.sessions[i:]...)
	c.rewriteLocked()
}

func (c *changes) rewriteLocked() {
	if c.journal == nil {
		return
	}
	if err := c.journal.rewrite(c.sessions); err != nil {
		c.logError("agent: SSH session journal: cannot rewrite it", "err", err)
	}
}

func (c *changes) logError(msg string, args ...any) {
	if c.log != nil {
		c.log.Error(msg, args...)
	}
}
