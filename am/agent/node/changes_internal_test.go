package node

import (
	"context"
	"slices"
	"testing"
	"time"
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
