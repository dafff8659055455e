package provision_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/amtest"
	"github.com/geniam/geniam/credentials/devpki"
)

// TestSIGKILLedAggregate: the real thing behind TestKilledMidProvision.
// `geni-am serve` (built from cmd/geni-am) works the queue of a Provision of
// 8 slivers and is SIGKILLed while it holds jobs; a second `geni-am serve`
// on the same database finishes them. Every sliver ends ready, nothing is
// stuck, and there is one container per sliver.
func TestSIGKILLedAggregate(t *testing.T) {
	// Allocate and Provision in this process (its provisioner never runs:
	// the jobs wait in the queue for the subprocess).
	e, dir, start, agg := serveFixture(t, "3s")
	slice, call := e.provisionEight(agg, "sigkill")

	first := start("first")
	held := 0
	for end := time.Now().Add(60 * time.Second); held < 3; time.Sleep(10 * time.Millisecond) {
		must(t, e.st.Pool().QueryRow(e.ctx, "SELECT count(*) FROM jobs WHERE state = 'running'").Scan(&held))
		if time.Now().After(end) {
			b, _ := os.ReadFile(filepath.Join(dir, "first.log"))
			t.Fatalf("geni-am serve never took jobs; its log:\n%s", b)
		}
	}
	must(t, first.Process.Signal(syscall.SIGKILL))
	_, _ = first.Process.Wait()
	var done int
	must(t, e.st.Pool().QueryRow(e.ctx, "SELECT count(*) FROM jobs WHERE state = 'done'").Scan(&done))
	t.Logf("SIGKILLed geni-am serve holding %d jobs (%d done)", held, done)

	start("second")
	e.waitStates(agg, call, slice, 90*time.Second, "every sliver ready after the SIGKILL", opIs(am.Ready))
	var pending, failed, takenOver int
	must(t, e.st.Pool().QueryRow(e.ctx, `SELECT count(*) FILTER (WHERE state IN ('queued','running')), count(*) FILTER (WHERE state = 'failed'),
		count(*) FILTER (WHERE attempts > 1) FROM jobs`).Scan(&pending, &failed, &takenOver))
	if pending != 0 || failed != 0 {
		t.Errorf("after the restart: %d jobs pending, %d failed", pending, failed)
	}
	if held > 0 && takenOver == 0 {
		t.Error("no job was taken over after the SIGKILL")
	}
	e.checkContainers("one per sliver", 4, 4)
}

// provisionEight allocates and provisions a slice of 8 slivers over node1
// and node2 (the jobs wait in the queue for a geni-am serve).
func (e *env) provisionEight(agg *am.Aggregate, name string) (string, am.Call) {
	e.t.Helper()
	slice, call, _ := e.slice(name)
	_, err := agg.Allocate(e.ctx, call, slice, request("/demo -every 1s", spread("k", 8, 2)...))
	must(e.t, err)
	_, err = agg.Provision(e.ctx, call, []string{slice})
	must(e.t, err)
	return slice, call
}

// serveFixture is the world of the geni-am serve tests: two agents, the
// start function of serveCommand (files in dir) with the given job lease,
// and an aggregate in this process whose provisioner never runs.
func serveFixture(t *testing.T, lease string) (*env, string, func(name string) *exec.Cmd, *am.Aggregate) {
	needDocker(t)
	if testing.Short() {
		t.Skip("skipping: builds and runs geni-am")
	}
	e := newEnv(t, "127.0.0.2", "127.0.0.3")
	dir := t.TempDir()
	return e, dir, e.serveCommand(t, dir, "GENIAM_PROVISIONING_LEASE="+lease), e.aggregate(e.provisioner("idle", nil))
}

// serveCommand builds geni-am and returns a function that starts
// `geni-am serve` on the env's database and agents (files in dir), with
// extra environment settings; each process is killed when the test ends.
func (e *env) serveCommand(t *testing.T, dir string, extra ...string) func(name string) *exec.Cmd {
	t.Helper()
	bin := amtest.GoBuild(t, "github.com/geniam/geniam/cmd/geni-am")
	// The aggregate's files: server certificate, trusted roots (the
	// clearinghouse), the agent client certificate and the agents' CA.
	roots := e.chCA.Roots()
	certFile, keyFile := e.chCA.Files(e.chCA.Server(devpki.Options{URN: amURN}), "am")
	agentCert, agentKey := e.agentCA.Files(e.agentCA.Issue(devpki.Options{URN: amURN}), "agent-client")
	agentCA := e.agentCA.CertFile

	return func(name string) *exec.Cmd {
		cmd := exec.Command(bin, "serve")
		cmd.Env = append(os.Environ(), "GENIAM_DB_URL="+e.dbURL, "GENIAM_LISTEN=127.0.0.1:0", "GENIAM_AM_URN="+amURN,
			"GENIAM_VAR_DIR="+dir, "GENIAM_TLS_CERT="+certFile, "GENIAM_TLS_KEY="+keyFile, "GENIAM_TLS_TRUSTED_ROOTS="+roots,
			"GENIAM_AGENTS_CERT="+agentCert, "GENIAM_AGENTS_KEY="+agentKey, "GENIAM_AGENTS_CA="+agentCA,
			"GENIAM_PROVISIONING_WORKERS=4", "GENIAM_PROVISIONING_HEALTH_INTERVAL=1s",
			"GENIAM_LIFECYCLE_REAPER_INTERVAL=1h", "GENIAM_OPERATIONS_LISTEN=127.0.0.1:0")
		cmd.Env = append(cmd.Env, extra...)
		logf, err := os.Create(filepath.Join(dir, name+".log"))
		must(t, err)
		cmd.Stdout, cmd.Stderr = logf, logf
		must(t, cmd.Start())
		t.Cleanup(func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait(); logf.Close() })
		return cmd
	}
}

// TestSIGKILLWithLivePeer: two `geni-am serve` share the queue (leases of
// 30 s, the default); the one holding jobs is SIGKILLed, and the other takes
// every job it held over within 5 s (its database session ended, so its
// advisory lock is gone), far sooner than the leases. Each round ends with
// every sliver ready and one container per sliver.
func TestSIGKILLWithLivePeer(t *testing.T) {
	e, _, start, agg := serveFixture(t, "30s")
	start("peer")
	var took []time.Duration
	for round := 0; round < faultRepeats(t); round++ {
		victim := start(fmt.Sprintf("victim%d", round))
		// The victim is up when it has registered its process lock.
		pidOwner := fmt.Sprintf("%%:%d/%%", victim.Process.Pid)
		e.waitCount(60*time.Second, 20*time.Millisecond, fmt.Sprintf("round %d: the victim never registered", round), func(n int) bool { return n == 1 },
			"SELECT count(*) FROM aggregate_processes WHERE owner LIKE $1", pidOwner)
		slice, call := e.provisionEight(agg, fmt.Sprintf("peer%d", round))
		held := e.waitCount(60*time.Second, 5*time.Millisecond, fmt.Sprintf("round %d: the victim never took a job", round), nonzero,
			"SELECT count(*) FROM jobs WHERE state = 'running' AND lease_owner LIKE $1", pidOwner)
		must(t, victim.Process.Signal(syscall.SIGKILL))
		killed := time.Now()
		_, _ = victim.Process.Wait()
		e.waitCount(25*time.Second, 20*time.Millisecond, fmt.Sprintf("round %d: jobs of the killed process not taken over", round), zero,
			"SELECT count(*) FROM jobs WHERE state = 'running' AND lease_owner LIKE $1", pidOwner)
		took = append(took, time.Since(killed))
		if d := took[len(took)-1]; d > 5*time.Second {
			t.Errorf("round %d: the killed process's %d jobs were taken over after %s, want within 5 s", round, held, d)
		}
		e.waitStates(agg, call, slice, 90*time.Second, "every sliver ready after the SIGKILL", opIs(am.Ready))
		_, err := agg.Delete(e.ctx, call, []string{slice})
		must(t, err)
		// The next round provisions the same image: let this round's
		// teardown (which removes the image once unused) finish first.
		for end := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			var pending int
			must(t, e.st.Pool().QueryRow(e.ctx, "SELECT count(*) FROM jobs WHERE state IN ('queued','running')").Scan(&pending))
			if pending == 0 || time.Now().After(end) {
				break
			}
		}
		t.Logf("round %d: the killed process held %d jobs; taken over after %s", round, held, took[len(took)-1].Round(time.Millisecond))
	}
	var pending, failed int
	for end := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		must(t, e.st.Pool().QueryRow(e.ctx, `SELECT count(*) FILTER (WHERE state IN ('queued','running')), count(*) FILTER (WHERE state = 'failed') FROM jobs`).Scan(&pending, &failed))
		if pending == 0 || time.Now().After(end) {
			break
		}
	}
	if pending != 0 || failed != 0 {
		t.Errorf("at the end: %d jobs pending, %d failed", pending, failed)
	}
	e.checkContainers("after every Delete", 0, 0)
	t.Logf("SIGKILL with a live peer → jobs taken over (lease 30 s): %s", figures(took))
}
