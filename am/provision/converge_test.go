package provision_test

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/agent"
	"github.com/geniam/geniam/am/provision"
	"github.com/geniam/geniam/store"
)

// faultRepeats is how many rounds a fault test runs: 1 in make test,
// GENIAM_FAULT_REPEAT for the figures (docs/provisioning.md quotes 10).
func faultRepeats(t *testing.T) int {
	n, err := strconv.Atoi(os.Getenv("GENIAM_FAULT_REPEAT"))
	if err != nil || n < 1 {
		return 1
	}
	if n > 100 {
		t.Fatalf("GENIAM_FAULT_REPEAT=%d: at most 100", n)
	}
	return n
}

// figures summarises durations: min, median, max.
func figures(ds []time.Duration) string {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	r := func(d time.Duration) time.Duration { return d.Round(10 * time.Millisecond) }
	return fmt.Sprintf("n=%d min %s median %s max %s", len(s), r(s[0]), r(s[len(s)/2]), r(s[len(s)-1]))
}

// TestTeardownConvergesAfterOutage: an agent is down longer than the whole
// retry budget while its slivers expire, so their teardown jobs end
// failed. When the agent is back, the reconciliation enqueues the
// teardowns again: within one health interval (plus the teardown itself)
// every expired container is archived and gone.
func TestTeardownConvergesAfterOutage(t *testing.T) {
	needDocker(t)
	e := newEnv(t, "127.0.0.2")
	const health = time.Second
	_, agg := e.served("converge", func(c *provision.Config) {
		c.MaxAttempts, c.BackoffBase, c.BackoffMax, c.HealthInterval = 2, 100*time.Millisecond, 200*time.Millisecond, health
	})
	var took []time.Duration
	for round := 0; round < faultRepeats(t); round++ {
		slice, call, _ := e.slice(fmt.Sprintf("converge%d", round))
		res := e.allocateProvision(agg, call, slice, request("/demo -every 1s", [2]string{"a", "node1"}, [2]string{"b", "node1"}, [2]string{"c", "node1"}))
		e.waitStates(agg, call, slice, 60*time.Second, "geni_ready", opIs(am.Ready))
		if n := len(engineContainers(t, e.agents[0].instance)); n != 3 {
			t.Fatalf("round %d: %d containers before the outage, want 3", round, n)
		}

		e.agents[0].stop()
		reaper := agg.NewReaper(time.Hour)
		reaper.Clock = func() time.Time { return time.Now().Add(400 * 24 * time.Hour) }
		reaper.Log = testLogger()
		n, err := reaper.Sweep(e.ctx)
		must(t, err)
		if n != 3 {
			t.Fatalf("round %d: the reaper expired %d slivers, want 3", round, n)
		}
		e.waitCount(30*time.Second, 50*time.Millisecond, fmt.Sprintf("round %d: not all 3 teardowns gave up while the agent was down", round),
			func(n int) bool { return n >= 3 },
			"SELECT count(*) FROM jobs WHERE kind = 'delete' AND state = 'failed' AND slice_urn = $1", slice)

		e.agents[0].start(t)
		back := time.Now()
		for len(engineContainers(t, e.agents[0].instance)) > 0 {
			if time.Since(back) > 30*time.Second {
				t.Fatalf("round %d: expired containers still on the node 30 s after the agent came back", round)
			}
			time.Sleep(20 * time.Millisecond)
		}
		took = append(took, time.Since(back))
		for _, s := range res.Slivers {
			a, err := e.st.ArchiveOf(e.ctx, s.URN)
			must(t, err)
			if a == nil || !a.Final {
				t.Fatalf("round %d: %s gone without a final archive of /data (%+v)", round, s.URN, a)
			}
			if _, err := os.Stat(a.Path); err != nil {
				t.Errorf("round %d: archive file: %v", round, err)
			}
		}
		if d := took[len(took)-1]; d > health+10*time.Second {
			t.Errorf("round %d: converged %s after the agent came back, want within one health interval (%s) plus the teardown", round, d, health)
		}
	}
	t.Logf("agent back → every expired container archived and gone (health interval %s): %s", health, figures(took))
}

// TestStraysAndOtherAggregates: two aggregates (two databases, two
// instances) share one agent. Neither lists, reports or removes the
// other's containers; a container of an aggregate's own instance that its
// database never knew is reported and, with provisioning.stray_grace set,
// archived and removed after the grace.
func TestStraysAndOtherAggregates(t *testing.T) {
	needDocker(t)
	e := newEnv(t, "127.0.0.2")
	other := newEnv(t)
	_, err := other.st.Pool().Exec(other.ctx, `INSERT INTO nodes (name, component_urn, agent_url, sliver_types, capacity)
		VALUES ('node1', 'urn:publicid:IDN+geniam.test+node+node1', $1, ARRAY['container'], 60)`, "https://"+e.agents[0].addr)
	must(t, err)
	const grace = 1500 * time.Millisecond
	pa := e.provisioner("am-a", func(c *provision.Config) { c.StrayGrace = grace })
	pb := other.provisioner("am-b", func(c *provision.Config) { c.StrayGrace = grace; c.AgentTLS = e.clientTL })
	e.runProvisioner(pa)
	other.runProvisioner(pb)
	aggA, aggB := e.aggregate(pa), other.aggregate(pb)
	instA, instB := instanceOf(t, e.st), instanceOf(t, other.st)
	if instA == instB {
		t.Fatalf("two databases have the same aggregate instance %q", instA)
	}
	cli := agent.NewClient("https://"+e.agents[0].addr, e.clientTL)
	var removed []time.Duration
	for round := 0; round < faultRepeats(t); round++ {
		sliceA, callA, _ := e.slice(fmt.Sprintf("a%d", round))
		sliceB, callB, _ := other.slice(fmt.Sprintf("b%d", round))
		_, err := aggA.Allocate(e.ctx, callA, sliceA, request("/demo -every 1s", [2]string{"x", "node1"}))
		must(t, err)
		_, err = aggB.Allocate(other.ctx, callB, sliceB, request("/demo -every 1s", [2]string{"y", "node1"}))
		must(t, err)
		_, err = aggA.Provision(e.ctx, callA, []string{sliceA})
		must(t, err)
		_, err = aggB.Provision(other.ctx, callB, []string{sliceB})
		must(t, err)
		e.waitStates(aggA, callA, sliceA, 60*time.Second, "A's sliver ready", opIs(am.Ready))
		other.waitStates(aggB, callB, sliceB, 60*time.Second, "B's sliver ready", opIs(am.Ready))

		// A stray of A's instance: fetched and run straight on the agent.
		stray := fmt.Sprintf("stray%d", round)
		seen := time.Now() // the health poll may see it from its fetch on
		_, err = cli.FetchWait(e.ctx, stray, agent.FetchRequest{URL: imageServerURL() + "/demo.tar", SHA256: imageDigest, Aggregate: instA}, 30*time.Second)
		must(t, err)
		_, _, err = cli.Run(e.ctx, stray, agent.StartRequest{SliceURN: "urn:publicid:IDN+elsewhere+slice+s", SliverURN: "urn:publicid:IDN+elsewhere+sliver+" + stray,
			Aggregate: instA, Command: []string{"/demo", "-every", "1s"}})
		must(t, err)

		for _, inst := range []string{instA, instB} {
			sts, err := cli.ListOf(e.ctx, inst)
			must(t, err)
			for _, st := range sts {
				if st.Aggregate != inst {
					t.Errorf("round %d: aggregate %s lists %s of instance %q", round, inst, st.ID, st.Aggregate)
				}
			}
		}
		// The stray is reported by A only, then removed after the grace;
		// B's sliver stays untouched all along.
		for {
			if _, err := cli.Status(e.ctx, stray); am.CodeOf(err) == am.SearchFailed {
				break
			}
			if time.Since(seen) > grace+30*time.Second {
				t.Fatalf("round %d: the stray is still there %s after it appeared", round, time.Since(seen))
			}
			time.Sleep(50 * time.Millisecond)
		}
		removed = append(removed, time.Since(seen))
		if d := time.Since(seen); d < grace {
			t.Errorf("round %d: the stray was removed after %s, before its grace %s", round, d, grace)
		}
		a, err := e.st.ArchiveOf(e.ctx, "urn:publicid:IDN+elsewhere+sliver+"+stray)
		must(t, err)
		if a == nil {
			t.Errorf("round %d: the stray was removed without an archive of its /data", round)
		}
		var strayRowsB int
		must(t, other.st.Pool().QueryRow(other.ctx, "SELECT count(*) FROM stray_containers").Scan(&strayRowsB))
		var unknownB []string
		_ = other.st.Pool().QueryRow(other.ctx, "SELECT unknown_containers FROM agent_health WHERE node_name = 'node1'").Scan(&unknownB)
		if strayRowsB != 0 || len(unknownB) != 0 {
			t.Errorf("round %d: aggregate B saw A's containers: %d stray rows, unknown %v", round, strayRowsB, unknownB)
		}
		// Both real slivers are still running; deleting them cleans up.
		e.waitStates(aggA, callA, sliceA, 5*time.Second, "A's sliver still ready", opIs(am.Ready))
		other.waitStates(aggB, callB, sliceB, 5*time.Second, "B's sliver still ready", opIs(am.Ready))
		_, err = aggA.Delete(e.ctx, callA, []string{sliceA})
		must(t, err)
		_, err = aggB.Delete(other.ctx, callB, []string{sliceB})
		must(t, err)
	}
	for end := time.Now().Add(30 * time.Second); len(engineContainers(t, e.agents[0].instance)) > 0; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("containers left after Delete: %v", engineContainers(t, e.agents[0].instance))
		}
	}
	t.Logf("stray of our instance removed after grace %s: %s", grace, figures(removed))
}

func instanceOf(t *testing.T, st *store.Store) string {
	t.Helper()
	v, err := st.Setting(t.Context(), store.SettingAggregateInstance)
	must(t, err)
	if !strings.HasPrefix(v, "am-") {
		t.Fatalf("aggregate instance %q", v)
	}
	return v
}

// TestGaveUpIsNotTheEnd: a Provision whose agent stays away through every
// attempt leaves the sliver geni_failed ("gave up after ... retried when the
// node agent answers again"); when the agent is back the sliver is
// provisioned again without anyone acting.
func TestGaveUpIsNotTheEnd(t *testing.T) {
	needDocker(t)
	e := newEnv(t, "127.0.0.2")
	_, agg := e.served("gaveup", func(c *provision.Config) {
		c.MaxAttempts, c.BackoffBase, c.BackoffMax = 2, 100*time.Millisecond, 200*time.Millisecond
	})
	slice, call, _ := e.slice("gaveup")
	_, err := agg.Allocate(e.ctx, call, slice, request("/demo -every 1s", [2]string{"g", "node1"}))
	must(t, err)
	e.agents[0].stop()
	_, err = agg.Provision(e.ctx, call, []string{slice})
	must(t, err)
	sts := e.waitStates(agg, call, slice, 30*time.Second, "geni_failed after every attempt", opIs(am.Failed))
	if !strings.Contains(sts[0].Error, "gave up after 2 attempts") || !strings.Contains(sts[0].Error, "retried when the node agent answers again") {
		t.Errorf("geni_error %q does not say it gave up for now", sts[0].Error)
	}
	e.agents[0].start(t)
	back := time.Now()
	e.waitStates(agg, call, slice, 60*time.Second, "geni_ready once the agent is back", opIs(am.Ready))
	t.Logf("agent back → the sliver that gave up is ready after %s", time.Since(back).Round(10*time.Millisecond))

	// A geni_stop that gave up is carried out when the agent is back, not
	// dropped by the poll that finds the container still running.
	e.agents[0].stop()
	_, err = agg.PerformOperationalAction(e.ctx, call, []string{slice}, am.ActionStop)
	must(t, err)
	e.waitCount(30*time.Second, 50*time.Millisecond, "the stop never gave up while the agent was down", nonzero,
		"SELECT count(*) FROM jobs WHERE kind = 'stop' AND state = 'failed' AND last_error LIKE 'gave up after %'")
	e.agents[0].start(t)
	e.waitStates(agg, call, slice, 60*time.Second, "geni_notready once the agent is back", opIs(am.NotReady))
}
