package provision_test

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/agent"
	"github.com/geniam/geniam/am/provision"
	"github.com/geniam/geniam/store"
	"github.com/geniam/geniam/store/pgtest"
)

// TestQueue: the job queue without agents. Concurrent workers take each job
// once; a sliver's jobs run in order; a lease that runs out passes the job
// to another worker and fences the old holder out; a retry waits its
// backoff.
func TestQueue(t *testing.T) {
	e := newEnv(t)
	ctx := e.ctx
	_, err := e.st.Pool().Exec(ctx, `INSERT INTO nodes (name, component_urn) VALUES ('n', 'urn:publicid:IDN+geniam.test+node+n')`)
	must(t, err)
	enqueue := func(kind, sliver string) {
		_, err := e.st.Pool().Exec(ctx, "INSERT INTO jobs (kind, sliver_urn, slice_urn, node_name) VALUES ($1, $2, 's', 'n')", kind, sliver)
		must(t, err)
	}
	// 40 slivers with two jobs each, drained by 8 concurrent workers.
	for i := 0; i < 40; i++ {
		enqueue(store.JobProvision, fmt.Sprintf("s%d", i))
		enqueue(store.JobStop, fmt.Sprintf("s%d", i))
	}
	var mu sync.Mutex
	order := map[string][]string{}
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for idle := 0; idle < 5; {
				j, err := e.st.ClaimJob(ctx, fmt.Sprintf("w%d", w), time.Minute)
				if err != nil {
					t.Error(err)
					return
				}
				if j == nil {
					idle++
					time.Sleep(20 * time.Millisecond)
					continue
				}
				mu.Lock()
				order[j.SliverURN] = append(order[j.SliverURN], j.Kind)
				mu.Unlock()
				if err := e.st.FinishJob(ctx, j, "ok"); err != nil {
					t.Error(err)
				}
			}
		}(w)
	}
	wg.Wait()
	for i := 0; i < 40; i++ {
		if got := strings.Join(order[fmt.Sprintf("s%d", i)], ","); got != "provision,stop" {
			t.Errorf("s%d ran %q, want provision,stop once each", i, got)
		}
	}

	// Lease expiry: A takes a job and dies; B takes it after the lease; A
	// can no longer finish it.
	enqueue(store.JobProvision, "lease")
	a, err := e.st.ClaimJob(ctx, "A", 300*time.Millisecond)
	must(t, err)
	if b, _ := e.st.ClaimJob(ctx, "B", time.Minute); b != nil {
		t.Fatalf("B took job %d while A's lease runs", b.ID)
	}
	time.Sleep(400 * time.Millisecond)
	b, err := e.st.ClaimJob(ctx, "B", time.Minute)
	must(t, err)
	if b == nil || b.ID != a.ID || b.Attempts != 2 {
		t.Fatalf("B got %+v after A's lease ran out, want job %d attempt 2", b, a.ID)
	}
	if err := e.st.FinishJob(ctx, a, "late"); !store.IsLeaseLost(err) {
		t.Errorf("A finished a job it lost: %v", err)
	}
	if err := e.st.RenewLease(ctx, a, time.Minute); !store.IsLeaseLost(err) {
		t.Errorf("A renewed a lease it lost: %v", err)
	}
	// Retry with backoff: not due before next_run_at.
	must(t, e.st.RetryJob(ctx, b, "agent unreachable", 400*time.Millisecond))
	if j, _ := e.st.ClaimJob(ctx, "C", time.Minute); j != nil {
		t.Fatalf("a job in backoff was taken: %+v", j)
	}
	time.Sleep(500 * time.Millisecond)
	j, err := e.st.ClaimJob(ctx, "C", time.Minute)
	must(t, err)
	if j == nil || j.ID != a.ID || j.Attempts != 3 {
		t.Fatalf("after backoff C got %+v", j)
	}
	must(t, e.st.FailJob(ctx, j, "gave up"))
	counts, err := e.st.JobCounts(ctx)
	must(t, err)
	if counts["done"] != 80 || counts["failed"] != 1 || counts["queued"]+counts["running"] != 0 {
		t.Errorf("job counts %v", counts)
	}
}

// TestKilledMidProvision: an aggregate process dies (its worker context
// ends, its leases stay) in the middle of a Provision; another process
// takes the jobs over when the leases run out. Every sliver ends ready,
// nothing is stuck and no container is created twice.
func TestKilledMidProvision(t *testing.T) {
	needDocker(t)
	e := newEnv(t, "127.0.0.2", "127.0.0.3")
	first := e.provisioner("first", func(c *provision.Config) { c.Lease = 2 * time.Second })
	stopFirst := e.runProvisioner(first)
	agg := e.aggregate(first)
	slice, call, _ := e.slice("killed")
	e.allocateProvision(agg, call, slice, request("/demo -every 1s", spread("c", 6, 2)...))
	// Kill it as soon as it holds jobs.
	e.waitCount(20*time.Second, 5*time.Millisecond, "the first process never took a job", func(n int) bool { return n >= 4 },
		"SELECT count(*) FROM jobs WHERE state = 'running'")
	stopFirst()
	var held int
	must(t, e.st.Pool().QueryRow(e.ctx, "SELECT count(*) FROM jobs WHERE state = 'running' AND lease_owner LIKE 'first%'").Scan(&held))
	t.Logf("killed the first process holding %d jobs", held)

	second := e.provisioner("second", nil)
	e.runProvisioner(second)
	agg2 := e.aggregate(second)
	e.waitStates(agg2, call, slice, 60*time.Second, "every sliver ready after the takeover", opIs(am.Ready))
	var pending, failed, maxAttempts int
	must(t, e.st.Pool().QueryRow(e.ctx, `SELECT count(*) FILTER (WHERE state IN ('queued','running')), count(*) FILTER (WHERE state = 'failed'),
		coalesce(max(attempts), 0) FROM jobs`).Scan(&pending, &failed, &maxAttempts))
	if pending != 0 || failed != 0 {
		t.Errorf("after the takeover: %d jobs pending, %d failed", pending, failed)
	}
	if held > 0 && maxAttempts < 2 {
		t.Errorf("no job was taken over (max attempts %d)", maxAttempts)
	}
	e.checkContainers("one per sliver", 3, 3)
}

// TestAgentDownAndBack: an agent that stops answering makes its node
// unavailable and its slivers say so; when it answers again the node is
// available, the slivers are reconciled, and a sliver the aggregate does
// not know is reported, not deleted.
func TestAgentDownAndBack(t *testing.T) {
	needDocker(t)
	e := newEnv(t, "127.0.0.2", "127.0.0.3")
	_, agg := e.served("health", nil)
	slice, call, _ := e.slice("health")
	res := e.allocateProvision(agg, call, slice, request("/demo -every 1s", [2]string{"x", "node1"}, [2]string{"y", "node2"}))
	e.waitStates(agg, call, slice, 60*time.Second, "geni_ready", opIs(am.Ready))
	// An operator's own reason on node2 must survive everything below.
	_, err := e.st.Pool().Exec(e.ctx, "UPDATE nodes SET available = false, unavailable_reason = 'maintenance: new antenna' WHERE name = 'node2'")
	must(t, err)

	e.agents[0].stop()
	down := e.waitNode("node1", 20*time.Second, func(avail bool, reason string) bool {
		return !avail && strings.HasPrefix(reason, "agent unreachable since ")
	})
	t.Logf("node1 while its agent is down: %s", down)
	var x am.SliverStatus
	for _, s := range res.Slivers {
		if s.ClientID == "x" {
			x = s
		}
	}
	sts := e.waitStates(agg, call, x.URN, 10*time.Second, "the sliver says its agent is unreachable, and is not geni_ready", func(s am.SliverStatus) bool {
		return strings.HasPrefix(s.Error, "node agent unreachable since ") && s.Operational == am.NotReady &&
			strings.HasPrefix(s.ResourceMsg, store.UnheardStatusPrefix) && strings.HasSuffix(s.ResourceMsg, "(last seen: running)")
	})
	t.Logf("sliver on node1: %s, error %q, resource status %q", sts[0].Operational, sts[0].Error, sts[0].ResourceMsg)

	// While it is down, someone leaves a sliver on the node the aggregate
	// does not know.
	e.agents[0].start(t)
	cli := agent.NewClient("https://"+e.agents[0].addr, e.clientTL)
	_, err = cli.FetchWait(e.ctx, "stranger", agent.FetchRequest{URL: imageServerURL() + "/demo.tar", SHA256: imageDigest}, 30*time.Second)
	must(t, err)

	e.waitNode("node1", 20*time.Second, func(avail bool, reason string) bool { return avail && reason == "" })
	e.waitStates(agg, call, slice, 10*time.Second, "slivers ready and without error again", func(s am.SliverStatus) bool {
		return s.Operational == am.Ready && s.Error == ""
	})
	var unknown []string
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		must(t, e.st.Pool().QueryRow(e.ctx, "SELECT unknown_containers FROM agent_health WHERE node_name = 'node1'").Scan(&unknown))
		if len(unknown) > 0 {
			break
		}
	}
	if strings.Join(unknown, ",") != "stranger" {
		t.Errorf("unknown containers reported %v, want [stranger]", unknown)
	}
	if _, err := cli.Status(e.ctx, "stranger"); err != nil {
		t.Errorf("the stranger was touched: %v", err)
	}
	var reason string
	must(t, e.st.Pool().QueryRow(e.ctx, "SELECT unavailable_reason FROM nodes WHERE name = 'node2'").Scan(&reason))
	if reason != "maintenance: new antenna" {
		t.Errorf("the operator's reason on node2 became %q", reason)
	}
	must(t, cli.Delete(e.ctx, "stranger"))
}

// waitNode polls a node's availability until ok.
func (e *env) waitNode(name string, d time.Duration, ok func(avail bool, reason string) bool) string {
	e.t.Helper()
	var avail bool
	var reason string
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		must(e.t, e.st.Pool().QueryRow(e.ctx, "SELECT available, unavailable_reason FROM nodes WHERE name = $1", name).Scan(&avail, &reason))
		if ok(avail, reason) {
			return reason
		}
	}
	e.t.Fatalf("node %s: available=%t reason=%q, not the state waited for", name, avail, reason)
	return ""
}

// TestPostgresRestart: PostgreSQL goes away and comes back; the
// provisioner carries on without a restart of its own.
func TestPostgresRestart(t *testing.T) {
	needDocker(t)
	cluster := pgtest.Cluster()
	if cluster == nil {
		t.Skip("skipping: the tests use a shared PostgreSQL (GENIAM_TEST_DATABASE_URL); restarting it would disturb others")
	}
	e := newEnv(t, "127.0.0.2")
	_, agg := e.served("pgrestart", nil)
	slice, call, _ := e.slice("pgrestart")
	e.allocateProvision(agg, call, slice, request("/demo -every 1s", [2]string{"p", "node1"}))
	e.waitStates(agg, call, slice, 60*time.Second, "geni_ready", opIs(am.Ready))

	must(t, cluster.Stop())
	time.Sleep(1500 * time.Millisecond) // workers and the health loop meet a dead database
	must(t, cluster.Start())

	ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
	defer cancel()
	var err error
	for {
		_, err = agg.PerformOperationalAction(ctx, call, []string{slice}, am.ActionStop)
		if err == nil || ctx.Err() != nil {
			break
		}
		time.Sleep(200 * time.Millisecond) // the pool reconnects on use
	}
	must(t, err)
	e.waitStates(agg, call, slice, 30*time.Second, "geni_notready after the restart", opIs(am.NotReady))
}

// TestFailures: a permanent refusal (the image does not match its digest)
// makes the sliver geni_failed with what the agent said, and it stays so; a
// transient one (the agent is down) is retried with backoff until the agent
// is back. geni_update_users is REFUSED on the failed sliver; with
// geni_best_effort the ready one is still updated.
func TestFailures(t *testing.T) {
	needDocker(t)
	e := newEnv(t, "127.0.0.2", "127.0.0.3")
	_, agg := e.served("failures", func(c *provision.Config) { c.HealthInterval = 200 * time.Millisecond })
	slice, call, _ := e.slice("failures")
	bad := strings.ReplaceAll(request("/demo", [2]string{"bad", "node1"}), imageDigest, strings.Repeat("0", 64))
	_, err := agg.Allocate(e.ctx, call, slice, bad)
	must(t, err)
	_, err = agg.Allocate(e.ctx, call, slice, request("/demo -every 1s", [2]string{"late", "node2"}))
	must(t, err)
	e.agents[1].stop()
	_, err = agg.Provision(e.ctx, call, []string{slice})
	must(t, err)
	sts := e.waitStates(agg, call, slice, 30*time.Second, "bad failed, late retrying", func(s am.SliverStatus) bool {
		if s.ClientID == "bad" {
			return s.Operational == am.Failed
		}
		return s.Operational == am.Configuring && strings.Contains(s.ResourceMsg, "retrying in")
	})
	urn := map[string]string{}
	for _, s := range sts {
		urn[s.ClientID] = s.URN
		if s.ClientID == "bad" {
			t.Logf("bad: geni_error %q", s.Error)
			if !strings.Contains(s.Error, "sha256") {
				t.Errorf("the failure does not say what the agent said: %q", s.Error)
			}
		} else {
			t.Logf("late while its agent is down: %q", s.ResourceMsg)
		}
	}
	e.agents[1].start(t)
	e.waitStates(agg, call, urn["late"], 30*time.Second, "late ready once its agent is back", opIs(am.Ready))
	time.Sleep(600 * time.Millisecond) // a few health polls
	res, err := agg.Status(e.ctx, call, []string{urn["bad"]})
	must(t, err)
	if res.Slivers[0].Operational != am.Failed {
		t.Errorf("the failed sliver became %s after health polls", res.Slivers[0].Operational)
	}

	call.Options.Users, call.Options.UsersSet = []am.User{{URN: "urn:publicid:IDN+geniam.test+user+carol", Keys: []string{"ssh-ed25519 AAAAC3 carol"}}}, true
	if _, err := agg.PerformOperationalAction(e.ctx, call, []string{slice}, am.ActionUpdateUsers); am.CodeOf(err) != am.Refused {
		t.Errorf("geni_update_users on a failed sliver without best effort: %v, want REFUSED", err)
	}
	call.Options.BestEffort = true
	got, err := agg.PerformOperationalAction(e.ctx, call, []string{slice}, am.ActionUpdateUsers)
	must(t, err)
	for _, s := range got {
		if (s.URN == urn["bad"]) != strings.HasPrefix(s.Error, "REFUSED") {
			t.Errorf("best effort: %s got geni_error %q", s.URN, s.Error)
		}
	}
	waitAgentFile(t, e.agents[1], provision.AgentID(urn["late"]), "geni/authorized_keys", "carol", 10*time.Second)
}

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
	waitNoContainers(t, e.agents[0], 30*time.Second, "containers left after Delete")
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
