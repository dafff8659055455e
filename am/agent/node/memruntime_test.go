package node_test

import (
	"testing"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/agent"
)

// TestLifecycleWithoutEngine drives a sliver through the agent's v2 API
// (mutual TLS) on the in-memory runtime: fetch with a digest, run, exit
// code and output, delete. It runs where there is no Docker engine.
func TestLifecycleWithoutEngine(t *testing.T) {
	a := startAgentOn(t, testConfig(t), memBed(t))
	ctx := ctxT(t, time.Minute)
	st, err := a.client.FetchWait(ctx, "mem", agent.FetchRequest{URL: a.img.tar, SHA256: a.img.sha256}, time.Minute)
	must(t, err)
	if st.State != agent.StateFetched || !st.Image.Verified {
		t.Fatalf("fetch: %+v", st)
	}
	_, created, err := a.client.Run(ctx, "mem", agent.StartRequest{Command: []string{"/prog", "-out", "hello", "-exit", "7"}})
	must(t, err)
	if !created {
		t.Fatal("Run did not create the container")
	}
	st = a.waitFor(t, "mem", 30*time.Second, "the command to exit", func(st agent.Status) bool { return st.State == agent.StateExited })
	if st.ExitCode == nil || *st.ExitCode != 7 || st.StdoutTail != "hello\n" {
		t.Fatalf("exited: %+v, want exit code 7 and stdout hello", st)
	}
	must(t, a.client.Delete(ctx, "mem"))
	if _, err := a.client.Status(ctx, "mem"); am.CodeOf(err) != am.SearchFailed {
		t.Fatalf("status after delete: %v, want SEARCHFAILED", err)
	}
}
