package node_test

import (
	"strings"
	"testing"
	"time"

	"github.com/geniam/geniam/am/agent"
)

// Idle detection: a container doing nothing is warned about, then stopped
// (container and data kept), and Start brings it back.
func TestIdleStop(t *testing.T) {
	onBeds(t, func(t *testing.T, b bed) {
		a := idleAgent(t, b)
		ctx := ctxT(t, 2*time.Minute)
		a.fetched(t, "idle")
		t0 := time.Now()
		_, _, err := a.client.Run(ctx, "idle", agent.StartRequest{Command: []string{"/prog", "-sleep", "forever", "-write", "kept=yes"},
			IdleStopSeconds: 3, IdleWarnSeconds: 2})
		must(t, err)
		st := a.waitFor(t, "idle", 10*time.Second, "the idle warning", func(st agent.Status) bool { return st.Idle != nil && st.Idle.Warned })
		if st.State != agent.StateRunning || !st.Idle.StopAt.After(time.Now()) {
			t.Fatalf("warned in state %s with stop at %s; want running and a stop still to come", st.State, st.Idle.StopAt)
		}
		t.Logf("idle policy 3 s, warning 2 s before: warned %s after the start", time.Since(t0).Round(100*time.Millisecond))
		st = a.waitFor(t, "idle", 10*time.Second, "stopped for idleness", inState(agent.StateStopped))
		if !strings.Contains(st.Reason, "idleness") || st.Idle == nil || st.Idle.Stopped == nil {
			t.Fatalf("idle stop: %+v", st)
		}
		t.Logf("idle policy 3 s: stopped %s after the start", time.Since(t0).Round(100*time.Millisecond))
		if got := readTar(t, a, "idle"); got["kept"] != "yes" {
			t.Fatalf("/data after the idle stop: %v", got)
		}
		st, err = a.client.Start(ctx, "idle")
		must(t, err)
		if st.State != agent.StateRunning || st.Reason != "" {
			t.Fatalf("Start after the idle stop: %s %q", st.State, st.Reason)
		}
	})
}

// A command that finished is not idle: it keeps its exit code.
func TestIdleLeavesFinishedAlone(t *testing.T) {
	onBeds(t, func(t *testing.T, b bed) {
		a := idleAgent(t, b)
		ctx := ctxT(t, time.Minute)
		a.started(t, "done", agent.StartRequest{Command: []string{"/prog", "-exit", "5"}, IdleStopSeconds: 1})
		a.waitFor(t, "done", 10*time.Second, "exited", inState(agent.StateExited))
		time.Sleep(2 * time.Second) // past the idle limit
		st, err := a.client.Status(ctx, "done")
		must(t, err)
		if st.State != agent.StateExited || st.ExitCode == nil || *st.ExitCode != 5 {
			t.Fatalf("a finished command after the idle limit: %s %q exit %v", st.State, st.Reason, st.ExitCode)
		}
	})
}

// idleAgent is an agent on b that checks for idleness five times a second.
func idleAgent(t *testing.T, b bed) *testAgent {
	cfg := testConfig(t)
	cfg.IdleCheckInterval = 200 * time.Millisecond
	return startAgentOn(t, cfg, b)
}
