package agent

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/geniam/geniam/am"
)

// State within a second: the agent numbers its changes (every record it
// writes, every event of its containers in the engine: start, die, oom,
// restart) and the aggregate long-polls GET /v2/changes?after=N&wait=25s,
// which answers as soon as the number differs from N. The aggregate then
// reads the list as its health poll does, so a container's exit shows in
// Status within a second, and the periodic poll stays as the safety net.

// EventSource is a runtime that reports container events as they happen.
// docker.Runtime implements it with the engine's /events stream.
type EventSource interface {
	// Events calls fn for each event of the containers carrying all the
	// labels, until ctx ends or the stream breaks (then it returns why).
	Events(ctx context.Context, labels map[string]string, fn func(ContainerEvent)) error
}

// ContainerEvent is one event of a container in the engine.
type ContainerEvent struct {
	ContainerID string
	Action      string // start, die, oom, kill, restart, destroy, ...
	Sliver      string // the sliver label
}

// changes is the agent's change counter, with the slivers of the last
// changes. It starts at the start time in nanoseconds, so a restarted agent
// never repeats a number the aggregate has seen.
type changes struct {
	mu       sync.Mutex
	seq      uint64
	recent   []changed      // the last maxRecent changes, oldest first
	sessions []SessionEvent // the last maxSessions SSH session events, oldest first
	wake     chan struct{}  // closed at the next change
}

type changed struct {
	seq uint64
	id  string // sliver id; "" for "anything may have changed"
}

const maxRecent = 4096

// maxSessions bounds the SSH session events kept for the aggregate: far
// more than its long polls (one at least every 25 s) let pile up.
const maxSessions = 1024

func newChanges() *changes {
	return &changes{seq: uint64(time.Now().UnixNano()), wake: make(chan struct{})}
}

// bump records a change of sliver id ("": of anything).
func (c *changes) bump(id string) {
	c.mu.Lock()
	c.bumpLocked(id)
	c.mu.Unlock()
}

// session records an SSH session's start or end as a change of its sliver.
func (c *changes) session(ev SessionEvent) {
	c.mu.Lock()
	c.bumpLocked(ev.Sliver)
	ev.Seq = c.seq
	if len(c.sessions) == maxSessions {
		c.sessions = append(c.sessions[:0], c.sessions[maxSessions/2:]...)
	}
	c.sessions = append(c.sessions, ev)
	c.mu.Unlock()
}

// sessionsSince returns the session events recorded after seq after that
// are still kept.
func (c *changes) sessionsSince(after uint64) []SessionEvent {
	c.mu.Lock()
	defer c.mu.Unlock()
	i := len(c.sessions)
	for i > 0 && c.sessions[i-1].Seq > after {
		i--
	}
	return append([]SessionEvent(nil), c.sessions[i:]...)
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
func (s *Service) WaitChange(ctx context.Context, after uint64, wait time.Duration) ChangesAnswer {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	s.changes.wait(ctx, after)
	seq, ids, all := s.changes.since(after)
	return ChangesAnswer{Seq: seq, Slivers: ids, All: all, Sessions: s.changes.sessionsSince(after)}
}

// watchEngine follows the engine's events of this agent's containers while
// the service lives, reconnecting after a break.
func (s *Service) watchEngine(es EventSource) {
	defer s.wg.Done()
	backoff := time.Second
	for s.ctx.Err() == nil {
		t0 := time.Now()
		err := es.Events(s.ctx, s.labels(), func(e ContainerEvent) {
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

// ChangesAnswer is the body of GET /v2/changes.
type ChangesAnswer struct {
	Seq     uint64   `json:"seq"`
	Slivers []string `json:"slivers,omitempty"` // the slivers changed since after
	All     bool     `json:"all,omitempty"`     // the agent cannot name them: check every sliver
	// Sessions are the SSH sessions' starts and ends since after, as far as
	// the agent still keeps them (the last maxSessions, since it started):
	// the aggregate writes an audit row for each.
	Sessions []SessionEvent `json:"sessions,omitempty"`
}

// SessionEvent is the start or end of an SSH session in a sliver's
// container (package sshlogin).
type SessionEvent struct {
	Seq       uint64    `json:"seq"`        // the change number it was recorded under
	Session   string    `json:"session"`    // the same for a session's start and end (its log id)
	Event     string    `json:"event"`      // SessionStart or SessionEnd
	Sliver    string    `json:"sliver"`     // sliver id (the SSH user name)
	SliverURN string    `json:"sliver_urn"` // as the agent's record has them
	SliceURN  string    `json:"slice_urn"`
	User      string    `json:"user"` // URN of the geni_users entry whose key logged in
	Key       string    `json:"key"`  // that key's SHA256 fingerprint
	Remote    string    `json:"remote"`
	At        time.Time `json:"at"`
	Command   string    `json:"command,omitempty"` // what ran: "shell /bin/sh", "exec", "subsystem sftp"
	// ExitStatus is the process's exit status at SessionEnd; nil when the
	// session ended without one (the connection closed, access ended).
	ExitStatus *int `json:"exit_status,omitempty"`
}

// The events of a session.
const (
	SessionStart = "start"
	SessionEnd   = "end"
)

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
			writeErr(w, r, h.log, am.Errorf(am.BadArgs, "after must be a change number, not %q", truncate(v, 40)))
			return
		}
		after = n
	}
	wait := 25 * time.Second
	if v := q.Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			writeErr(w, r, h.log, am.Errorf(am.BadArgs, "wait must be a duration such as 25s, not %q", truncate(v, 40)))
			return
		}
		wait = min(d, maxChangesWait)
	}
	writeJSON(w, http.StatusOK, h.svc.WaitChange(r.Context(), after, wait))
}

// WaitChange long-polls the agent: it answers as soon as the agent's
// change number differs from after, or after wait, with the slivers that
// changed. An agent that predates /v2/changes answers UNSUPPORTED.
func (c *Client) WaitChange(ctx context.Context, after uint64, wait time.Duration) (ChangesAnswer, error) {
	var a ChangesAnswer
	_, err := c.call(ctx, "changes", http.MethodGet, "/v2/changes?after="+strconv.FormatUint(after, 10)+"&wait="+wait.String(), nil, &a)
	if am.CodeOf(err) == am.SearchFailed { // "no such endpoint"
		return a, am.Errorf(am.Unsupported, "the agent at %s has no /v2/changes (an older agent): state follows the health poll", c.base)
	}
	return a, err
}
