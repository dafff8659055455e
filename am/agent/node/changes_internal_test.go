package node

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/geniam/geniam/am/agent"
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
	if evs := c.sessionsSince(start + 1); len(evs) != 1 || evs[0].Event != agent.SessionEnd || evs[0].Seq != start+3 {
		t.Errorf("since the first event: %+v", evs)
	}
	if evs := c.sessionsSince(0); len(evs) != 2 {
		t.Errorf("a first poll: %+v", evs)
	}
	for i := 0; i < maxSessions+10; i++ {
		c.session(agent.SessionEvent{Sliver: "x"})
	}
	if evs := c.sessionsSince(0); len(evs) > maxSessions || evs[len(evs)-1].Seq != c.seq {
		t.Errorf("bounded: %d kept, last %d of %d", len(evs), evs[len(evs)-1].Seq, c.seq)
	}
}
