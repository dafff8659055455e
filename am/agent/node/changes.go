package node

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/agent"
)

// State within a second: the agent numbers its changes (every record it
// writes, every event of its containers in the engine: start, die, oom,
// restart) and the aggregate long-polls GET /v2/changes?after=N&wait=25s,
// which answers as soon as the number differs from N. The aggregate then
// reads the list as its health poll does, so a container's exit shows in
// Status within a second, and the periodic poll stays as the safety net.

// changes is the agent's change counter, with the slivers of the last
// changes. It starts at the start time in nanoseconds, so a restarted agent
// never repeats a number the aggregate has seen.
type changes struct {
	mu       sync.Mutex
	seq      uint64
	recent   []changed            // the last maxRecent changes, oldest first
	sessions []agent.SessionEvent // SSH session events no aggregate has acknowledged, oldest first (sessions.go)
	journal  *sessionJournal      // the same on disk; nil: memory only
	log      *slog.Logger
	wake     chan struct{} // closed at the next change
}

type changed struct {
	seq uint64
	id  string // sliver id; "" for "anything may have changed"
}

const maxRecent = 4096

func newChanges() *changes {
	return &changes{seq: uint64(time.Now().UnixNano()), wake: make(chan struct{})}
}

// bump records a change of sliver id ("": of anything).
func (c *changes) bump(id string) {
	c.mu.Lock()
	c.bumpLocked(id)
	c.mu.Unlock()
}

// session records an SSH session's start or end as a change of its sliver,
// kept until an aggregate acknowledges it (sessions.go).
func (c *changes) session(ev agent.SessionEvent) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ev.Seq = c.seq + 1
	c.keepSessionLocked(ev) // on disk before anyone can see the number
	c.bumpLocked(ev.Sliver)
}

// sessionsSince acknowledges the session events up to after (an aggregate
// asking from after has written them) and returns those after it.
func (c *changes) sessionsSince(after uint64) []agent.SessionEvent {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ackSessionsLocked(after)
	i := len(c.sessions)
	for i > 0 && c.sessions[i-1].Seq > after {
		i--
	}
	return append([]agent.SessionEvent(nil), c.sessions[i:]...)
}

func (c *changes) bumpLocked(id string) {
	c.seq++
	if len(c.recent) == maxRecent {
		c.recent = append(c.recent[:0], c.recent[maxRecent/2:]...)
	}
	c.recent = append(c.recent, changed{c.seq, id})
	close(c.wake)
	c.wake = make(chan struct{})
}

// since returns the slivers changed after seq after, or all=true when the
// agent cannot say (after is older than what it remembers, from another
// run, or something unspecific changed).
func (c *changes) since(after uint64) (seq uint64, ids []string, all bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.recent) == 0 || after < c.recent[0].seq-1 || after > c.seq {
		return c.seq, nil, true
	}
	seen := map[string]bool{}
	for _, ch := range c.recent {
		if ch.seq <= after {
			continue
		}
		if ch.id == "" {
			return c.seq, nil, true
		}
		if !seen[ch.id] {
			seen[ch.id] = true
			ids = append(ids, ch.id)
		}
	}
	return c.seq, ids, false
}

// wait returns once the change number differs from after, or when ctx ends.
func (c *changes) wait(ctx context.Context, after uint64) {
	for {
		c.mu.Lock()
		seq, wake := c.seq, c.wake
		c.mu.Unlock()
		if seq != after {
			return
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return
		}
	}
}

// WaitChange returns the agent's change number as soon as it differs from
// after, or after wait, with the slivers that changed since after (all:
// the agent cannot name them; check everything).
func (s *Service) WaitChange(ctx context.Context, after uint64, wait time.Duration) agent.ChangesAnswer {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	s.changes.wait(ctx, after)
	seq, ids, all := s.changes.since(after)
	return agent.ChangesAnswer{Seq: seq, Slivers: ids, All: all, Sessions: s.changes.sessionsSince(after)}
}

// watchEngine follows the engine's events of this agent's containers while
// the service lives, reconnecting after a break.
func (s *Service) watchEngine(es agent.EventSource) {
	defer s.wg.Done()
	backoff := time.Second
	for s.ctx.Err() == nil {
		t0 := time.Now()
		err := es.Events(s.ctx, s.labels(), func(e agent.ContainerEvent) {
			s.log.Debug("agent: container event", "sliver", e.Sliver, "container", e.ContainerID, "action", e.Action)
			s.changes.bump(e.Sliver)
		})
		if s.ctx.Err() != nil {
			return
		}
		if time.Since(t0) > time.Minute {
			backoff = time.Second
		}
		s.log.Warn("agent: the engine's event stream broke; the aggregate's poll covers the gap", "err", err, "retry_in", backoff)
		s.changes.bump("") // anything may have happened meanwhile
		select {
		case <-s.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// maxChangesWait bounds one long poll (under the server's timeouts).
const maxChangesWait = 60 * time.Second

// changesHandler: GET /v2/changes?after=N&wait=DURATION answers with the
// change number as soon as it differs from N, or after wait (default 25 s).
func (h *Handler) changes(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var after uint64
	if v := q.Get("after"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			writeErr(w, r, h.log, am.Errorf(am.BadArgs, "after must be a change number, not %q", am.Clip(v, 40)))
			return
		}
		after = n
	}
	wait := 25 * time.Second
	if v := q.Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			writeErr(w, r, h.log, am.Errorf(am.BadArgs, "wait must be a duration such as 25s, not %q", am.Clip(v, 40)))
			return
		}
		wait = min(d, maxChangesWait)
	}
	writeJSON(w, http.StatusOK, h.svc.WaitChange(r.Context(), after, wait))
}
