package node

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/geniam/geniam/am/agent"
	"github.com/geniam/geniam/am/agent/memruntime"
	"github.com/geniam/geniam/am/amtest"
)

func TestChangesSince(t *testing.T) {
	c := newChanges()
	start := c.seq
	if _, _, all := c.since(0); !all {
		t.Error("a first poll (after=0) must check everything")
	}
	c.bump("a")
	c.bump("b")
	c.bump("a")
	seq, ids, all := c.since(start)
	if all || seq != start+3 || !slices.Equal(ids, []string{"a", "b"}) {
		t.Errorf("since the start: %d %v %v", seq, ids, all)
	}
	if _, ids, all := c.since(start + 2); all || !slices.Equal(ids, []string{"a"}) {
		t.Errorf("since the second change: %v %v", ids, all)
	}
	if _, ids, all := c.since(seq); all || len(ids) != 0 {
		t.Errorf("nothing new: %v %v", ids, all)
	}
	if _, _, all := c.since(seq + 100); !all {
		t.Error("a number from another run of the agent must check everything")
	}
	c.bump("")
	if _, _, all := c.since(seq); !all {
		t.Error("an unspecific change must check everything")
	}
	for i := 0; i < maxRecent+10; i++ {
		c.bump("x")
	}
	if _, _, all := c.since(start); !all {
		t.Error("a number older than the remembered changes must check everything")
	}
	// wait returns at the next change, or when its context ends.
	now := c.seq
	go func() { time.Sleep(20 * time.Millisecond); c.bump("late") }()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c.wait(ctx, now)
	if _, ids, _ := c.since(now); !slices.Equal(ids, []string{"late"}) {
		t.Errorf("after wait: %v", ids)
	}
}

// TestChangesSessions: SSH session events ride on the change feed, each a
// change of its sliver, and a poll gets those after its number, as far as
// they are kept (a first poll gets all of them).
func TestChangesSessions(t *testing.T) {
	c := newChanges()
	start := c.seq
	c.session(agent.SessionEvent{Session: "s1", Event: agent.SessionStart, Sliver: "a"})
	c.bump("b")
	c.session(agent.SessionEvent{Session: "s1", Event: agent.SessionEnd, Sliver: "a"})
	if _, ids, all := c.since(start); all || !slices.Equal(ids, []string{"a", "b"}) {
		t.Errorf("session events are changes of their sliver: %v %v", ids, all)
	}
	if evs := c.sessionsSince(0); len(evs) != 2 {
		t.Errorf("a first poll: %+v", evs)
	}
	if evs := c.sessionsSince(start + 1); len(evs) != 1 || evs[0].Event != agent.SessionEnd || evs[0].Seq != start+3 {
		t.Errorf("since the first event: %+v", evs)
	}
	if evs := c.sessionsSince(0); len(evs) != 1 {
		t.Errorf("the poll from the first event's number did not acknowledge it: %+v", evs)
	}
	for i := 0; i < maxSessions+10; i++ {
		c.session(agent.SessionEvent{Sliver: "x"})
	}
	if evs := c.sessionsSince(0); len(evs) > maxSessions || evs[len(evs)-1].Seq != c.seq {
		t.Errorf("bounded: %d kept, last %d of %d", len(evs), evs[len(evs)-1].Seq, c.seq)
	}
}

// TestSessionJournal: SSH session events outlive the agent until an
// aggregate acknowledges them, by polling from a number at or past theirs;
// a number the agent has not reached acknowledges nothing; a torn last line
// (a crash in the middle of a write) is skipped and reported.
func TestSessionJournal(t *testing.T) {
	dir := t.TempDir()
	var logs amtest.LogBuffer
	start := func() *Service {
		s, err := New(Config{StateDir: dir, Logger: slog.New(slog.NewTextHandler(&logs, nil))}, memruntime.New())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		return s
	}
	poll := func(s *Service, after uint64) []string {
		var ids []string
		for _, ev := range s.WaitChange(context.Background(), after, 0).Sessions {
			ids = append(ids, ev.Session)
		}
		return ids
	}
	s := start()
	for _, id := range []string{"s1", "s2", "s3"} {
		s.NoteSession(agent.SessionEvent{Session: id, Event: agent.SessionStart, Sliver: "a"})
	}
	if ids := poll(s, 0); !slices.Equal(ids, []string{"s1", "s2", "s3"}) {
		t.Fatalf("a first poll: %v", ids)
	}
	s.Close()

	s = start() // a new run of the agent
	evs := s.WaitChange(context.Background(), 0, 0).Sessions
	if len(evs) != 3 || evs[2].Session != "s3" || s.changes.seq <= evs[2].Seq {
		t.Fatalf("after a restart: %+v (numbering from %d)", evs, s.changes.seq)
	}
	if ids := poll(s, evs[1].Seq); !slices.Equal(ids, []string{"s3"}) { // wrote s1, s2
		t.Errorf("after an acknowledgement of two: %v", ids)
	}
	poll(s, s.changes.seq+1000)
	if ids := poll(s, 0); !slices.Equal(ids, []string{"s3"}) {
		t.Errorf("a number from the future acknowledged: %v", ids)
	}
	s.Close()

	f, err := os.OpenFile(filepath.Join(dir, "sessions.jsonl"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(`{"seq":17,"sess`); err != nil {
		t.Fatal(err)
	}
	f.Close()
	s = start()
	if ids := poll(s, 0); !slices.Equal(ids, []string{"s3"}) {
		t.Errorf("after two acknowledged and a torn line: %v", ids)
	}
	if !strings.Contains(logs.String(), "line 2 is not a session event") {
		t.Errorf("the torn line is not reported:\n%s", logs.String())
	}
}
