package provision_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/agent"
	"github.com/geniam/geniam/am/agent/imagetest"
	"github.com/geniam/geniam/am/provision"
)

// TestExitShowsWithinASecond: with the health poll a minute away, a
// container killed behind the aggregate's back shows in Status through the
// agent's change feed, with its exit code and the last lines of its output
// (Status and Describe).
func TestExitShowsWithinASecond(t *testing.T) {
	needDocker(t)
	e := newEnv(t, "127.0.0.2")
	p, agg := e.served("changes", func(c *provision.Config) { c.HealthInterval = time.Minute })
	e.startDataServer(p)
	slice, call, cred := e.slice("changes")
	e.allocateProvision(agg, call, slice, request("/demo -every 100ms", [2]string{"a", "node1"}))
	sts := e.waitStates(agg, call, slice, 60*time.Second, "geni_ready", opIs(am.Ready))
	container := agent.ContainerPrefix + provision.AgentID(sts[0].URN)

	var worst time.Duration
	for round := 0; round < 3; round++ {
		if round > 0 {
			_, err := agg.PerformOperationalAction(e.ctx, call, []string{slice}, am.ActionStart)
			must(t, err)
			e.waitStates(agg, call, slice, 30*time.Second, "running again", func(s am.SliverStatus) bool { return s.ResourceMsg == "running" })
		}
		if err := imagetest.Docker("kill", container); err != nil {
			t.Fatal(err)
		}
		t0 := time.Now() // the engine has killed it when the CLI returns
		var st am.SliverStatus
		for {
			res, err := agg.Status(e.ctx, call, []string{slice})
			must(t, err)
			st = res.Slivers[0]
			if st.ExitCode != nil {
				break
			}
			if time.Since(t0) > 5*time.Second {
				t.Fatalf("5 s after the kill Status still says %s %q", st.Operational, st.ResourceMsg)
			}
			time.Sleep(10 * time.Millisecond)
		}
		took := time.Since(t0)
		worst = max(worst, took)
		t.Logf("container killed → Status shows exit code %d: %s", *st.ExitCode, took.Round(time.Millisecond))
		if *st.ExitCode != 137 || !strings.Contains(st.ResourceMsg, "exit code 137") {
			t.Errorf("Status after the kill: exit %d, %q", *st.ExitCode, st.ResourceMsg)
		}
		if !strings.Contains(st.StdoutTail, "geni-demo-container: sliver "+sts[0].URN) {
			t.Errorf("Status's stdout tail lacks the program's first line: %q", st.StdoutTail)
		}
	}
	if worst > time.Second {
		t.Errorf("the slowest exit took %s to show in Status; the goal is 1 s", worst)
	}
	desc, err := agg.Describe(e.ctx, call, []string{slice})
	must(t, err)
	if !strings.Contains(desc.RSpec, "<geniam:sliver_output>") || !strings.Contains(desc.RSpec, `exit_code="137"`) ||
		!strings.Contains(desc.RSpec, ".log") {
		t.Errorf("Describe's manifest lacks the output, exit code or log URL:\n%s", desc.RSpec)
	}

	// The whole output downloads like /data, live and, after Delete, from
	// the archive.
	name := provision.AgentID(sts[0].URN)
	code, logs, src := e.downloadLog(name, cred)
	if code != http.StatusOK || src != "live node1" {
		t.Fatalf("logs download: HTTP %d from %q: %.300s", code, src, logs)
	}
	if n := strings.Count(string(logs), "geni-demo-container: sliver "); n != 3 {
		t.Errorf("the output has %d starts of the program, want 3 (one per run): %.500q", n, logs)
	}
	_, _, otherCred := e.slice("other")
	if code, _, _ := e.downloadLog(name, otherCred); code != http.StatusForbidden {
		t.Errorf("another slice's credential got the logs: HTTP %d", code)
	}
	_, err = agg.Delete(e.ctx, call, []string{slice})
	must(t, err)
	var body []byte
	for end := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		code, body, src = e.downloadLog(name, cred)
		if code == http.StatusOK && strings.HasPrefix(src, "archive ") {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("after Delete the logs never came from the archive: HTTP %d from %q", code, src)
		}
	}
	if string(body) != string(logs) {
		t.Errorf("the archived output differs from the live one:\n%q\n%q", body, logs)
	}

	// After the end: an empty slice by default (as the AM API tests want),
	// the ended sliver with why, exit code and archive URLs on request.
	res, err := agg.Status(e.ctx, call, []string{slice})
	must(t, err)
	if len(res.Slivers) != 0 {
		t.Errorf("Status after Delete lists %d slivers without %s", len(res.Slivers), am.OptionEnded)
	}
	ecall := call
	ecall.Options.Raw = map[string]any{am.OptionEnded: true}
	res, err = agg.Status(e.ctx, ecall, []string{slice})
	must(t, err)
	if len(res.Slivers) != 1 {
		t.Fatalf("Status with %s lists %d slivers, want the deleted one", am.OptionEnded, len(res.Slivers))
	}
	ended := res.Slivers[0]
	if ended.Allocation != am.Unallocated || !strings.Contains(ended.Error, "deleted at") || ended.ExitCode == nil || *ended.ExitCode != 137 ||
		!strings.HasSuffix(ended.DataURL, name+".tar") || !strings.HasSuffix(ended.LogURL, name+".log") {
		t.Errorf("the ended sliver: %+v", ended)
	}
	dres, err := agg.Describe(e.ctx, ecall, []string{slice})
	must(t, err)
	if len(dres.Slivers) != 1 || dres.Slivers[0].Allocation != am.Unallocated {
		t.Errorf("Describe with %s: %+v", am.OptionEnded, dres.Slivers)
	}
}
