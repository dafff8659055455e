package provision_test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/credentials/devpki"
)

// TestSIGKILLedAggregate: the real thing behind TestKilledMidProvision.
// `geni-am serve` (built from cmd/geni-am) works the queue of a Provision of
// 8 slivers and is SIGKILLed while it holds jobs; a second `geni-am serve`
// on the same database finishes them. Every sliver ends ready, nothing is
// stuck, and there is one container per sliver.
func TestSIGKILLedAggregate(t *testing.T) {
	needDocker(t)
	if testing.Short() {
		t.Skip("skipping: builds and runs geni-am")
	}
	e := newEnv(t, "127.0.0.2", "127.0.0.3")
	dir := t.TempDir()
	bin := filepath.Join(dir, "geni-am")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/geniam/geniam/cmd/geni-am").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	// The aggregate's files: server certificate, trusted roots (the
	// clearinghouse), the agent client certificate and the agents' CA.
	roots := filepath.Join(dir, "roots")
	must(t, os.MkdirAll(roots, 0o755))
	must(t, os.WriteFile(filepath.Join(roots, "ch.pem"), e.ch.CA.CertPEM(), 0o644))
	srv, err := e.ch.CA.Issue(devpki.Options{URN: amURN, IPs: []net.IP{net.ParseIP("127.0.0.1")}, KeyBits: 2048})
	must(t, err)
	certFile, keyFile, err := srv.WriteFiles(dir, "am")
	must(t, err)
	cli, err := e.agentCA.Issue(devpki.Options{URN: amURN, KeyBits: 2048})
	must(t, err)
	agentCert, agentKey, err := cli.WriteFiles(dir, "agent-client")
	must(t, err)
	agentCA := filepath.Join(dir, "agents-ca.pem")
	must(t, os.WriteFile(agentCA, e.agentCA.CertPEM(), 0o644))

	start := func(name string) *exec.Cmd {
		cmd := exec.Command(bin, "serve")
		// The operations listener on a free port, not the default 9101,
		// which other aggregates on this machine may hold.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		must(t, err)
		opsAddr := ln.Addr().String()
		ln.Close()
		cmd.Env = append(os.Environ(), "GENIAM_DB_URL="+e.dbURL, "GENIAM_LISTEN=127.0.0.1:0", "GENIAM_AM_URN="+amURN,
			"GENIAM_OPERATIONS_LISTEN="+opsAddr,
			"GENIAM_VAR_DIR="+dir, "GENIAM_TLS_CERT="+certFile, "GENIAM_TLS_KEY="+keyFile, "GENIAM_TLS_TRUSTED_ROOTS="+roots,
			"GENIAM_AGENTS_CERT="+agentCert, "GENIAM_AGENTS_KEY="+agentKey, "GENIAM_AGENTS_CA="+agentCA,
			"GENIAM_PROVISIONING_LEASE=3s", "GENIAM_PROVISIONING_WORKERS=4", "GENIAM_PROVISIONING_HEALTH_INTERVAL=1s",
			"GENIAM_LIFECYCLE_REAPER_INTERVAL=1h")
		logf, err := os.Create(filepath.Join(dir, name+".log"))
		must(t, err)
		cmd.Stdout, cmd.Stderr = logf, logf
		must(t, cmd.Start())
		t.Cleanup(func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait(); logf.Close() })
		return cmd
	}

	// Allocate and Provision in this process (its provisioner never runs:
	// the jobs wait in the queue for the subprocess).
	agg := e.aggregate(e.provisioner("idle", nil))
	slice, call, _ := e.slice("sigkill")
	var nodes [][2]string
	for i := 0; i < 8; i++ {
		nodes = append(nodes, [2]string{fmt.Sprintf("k%d", i), fmt.Sprintf("node%d", i%2+1)})
	}
	_, err = agg.Allocate(e.ctx, call, slice, request("/demo -every 1s", nodes...))
	must(t, err)
	_, err = agg.Provision(e.ctx, call, []string{slice})
	must(t, err)

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
	for _, a := range e.agents {
		if n := len(engineContainers(t, a.instance)); n != 4 {
			t.Errorf("%s's engine has %d containers, want 4 (one per sliver)", a.name, n)
		}
	}
}
