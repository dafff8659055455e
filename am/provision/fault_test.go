package provision_test

import (
	"context"
	"fmt"
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
	var nodes [][2]string
	for i := 0; i < 6; i++ {
		nodes = append(nodes, [2]string{fmt.Sprintf("c%d", i), fmt.Sprintf("node%d", i%2+1)})
	}
	e.allocateProvision(agg, call, slice, request("/demo -every 1s", nodes...))
	// Kill it as soon as it holds jobs.
	for end := time.Now().Add(20 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		var running int
		must(t, e.st.Pool().QueryRow(e.ctx, "SELECT count(*) FROM jobs WHERE state = 'running'").Scan(&running))
		if running >= 4 {
			break
		}
		if time.Now().After(end) {
			t.Fatal("the first process never took a job")
		}
	}
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
	if n := len(engineContainers(t, e.agents[0].instance)); n != 3 {
		t.Errorf("node1's engine has %d containers, want 3 (one per sliver)", n)
	}
	if n := len(engineContainers(t, e.agents[1].instance)); n != 3 {
		t.Errorf("node2's engine has %d containers, want 3 (one per sliver)", n)
	}
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
