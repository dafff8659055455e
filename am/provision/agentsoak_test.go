package provision_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/amtest"
	"github.com/geniam/geniam/am/provision"
	"github.com/geniam/geniam/store"
)

// agentProc is a geni-nodeagent process the soak kills and restarts on
// the same address, state directory and instance.
type agentProc struct {
	name, addr, config, log, stateDir, instance string
	mu                                          sync.Mutex
	cmd                                         *exec.Cmd
}

func (a *agentProc) start(t *testing.T, bin string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	logf, err := os.OpenFile(a.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Error(err)
		return
	}
	cmd := exec.Command(bin, "-config", a.config)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Errorf("%s: %v", a.name, err)
		return
	}
	go func() { _ = cmd.Wait(); logf.Close() }()
	a.cmd = cmd
}

func (a *agentProc) kill() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmd != nil {
		_ = a.cmd.Process.Kill()
		for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
			if err := a.cmd.Process.Signal(syscall.Signal(0)); err != nil {
				break
			}
		}
		a.cmd = nil
	}
}

// TestAgentSoak (make soak; GENIAM_SOAK set): slices are allocated,
// provisioned, deleted or left to expire on three geni-nodeagent processes
// while the soak SIGKILLs agents and restarts them after a while (sometimes
// longer than the whole retry budget) and fills one agent's disk through a
// sliver's /data. At the end, with every agent back, the nodes converge to
// the database: no container left of a deleted or expired sliver, no job
// pending, no stray, no node left unavailable.
func TestAgentSoak(t *testing.T) {
	if os.Getenv("GENIAM_SOAK") == "" {
		t.Skip("skipping: make soak (GENIAM_SOAK) runs the agent soak")
	}
	needDocker(t)
	duration := time.Minute
	if d, err := time.ParseDuration(os.Getenv("GENIAM_SOAK_DURATION")); err == nil && d > 0 && d <= time.Hour {
		duration = d
	}
	dir := t.TempDir()
	bin := amtest.GoBuild(t, "github.com/geniam/geniam/cmd/geni-nodeagent")
	e := newEnv(t)
	caFile := e.agentCA.CertFile
	imgDir := filepath.Dir(imageTar)
	var agents []*agentProc
	for i, ip := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"} {
		name := fmt.Sprintf("node%d", i+1)
		ln := amtest.ListenStable(t, ip) // the agent is killed and started again on it
		addr := ln.Addr().String()
		ln.Close()
		cert, key := e.agentFiles(name, ip)
		a := &agentProc{name: name, addr: addr, config: filepath.Join(dir, name+".json"), log: filepath.Join(dir, name+".log"),
			stateDir: filepath.Join(dir, name+"-state"), instance: fmt.Sprintf("%s-soak-%s", run, name)}
		if i == 2 { // the agent whose disk fills: a 64 MiB tmpfs when we may mount one
			must(t, os.MkdirAll(a.stateDir, 0o755))
			if err := mountTmpfs(t, a.stateDir, "64m"); err != nil {
				t.Logf("no tmpfs for the disk-full fault (needs root): %v", err)
			}
		}
		b, _ := json.Marshal(map[string]any{"listen": addr, "cert": cert, "key": key, "client_ca": caFile, "state_dir": a.stateDir,
			"instance": a.instance, "allow_file_images": true, "file_image_dirs": []string{imgDir}, "stop_grace": "2s",
			"pids_limit": 64, "log_format": "text", "log_level": "warn", "allowed_clients": []string{amURN}, "image_hosts": []string{"127.0.0.1"}})
		must(t, os.WriteFile(a.config, b, 0o644))
		t.Cleanup(func() { removeContainers(a.instance) })
		t.Cleanup(a.kill)
		a.start(t, bin)
		agents = append(agents, a)
		_, err := e.st.Pool().Exec(e.ctx, `INSERT INTO nodes (name, component_urn, agent_url, sliver_types, capacity)
			VALUES ($1, $2, $3, ARRAY['container'], 8)`, name, "urn:publicid:IDN+geniam.test+node+"+name, "https://"+addr)
		must(t, err)
	}
	_, agg := e.served("soak", func(c *provision.Config) {
		c.MaxAttempts, c.BackoffBase, c.BackoffMax, c.HealthInterval = 3, 200*time.Millisecond, time.Second, 500*time.Millisecond
	})
	reaper := agg.NewReaper(500 * time.Millisecond)
	reaper.Log = testLogger()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	stats := map[string]int{}
	count := func(k string) { mu.Lock(); stats[k]++; mu.Unlock() }
	wg.Add(1)
	go func() { // the reaper
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(500 * time.Millisecond):
				if n, err := reaper.Sweep(e.ctx); err == nil && n > 0 {
					mu.Lock()
					stats["slivers expired"] += n
					mu.Unlock()
				}
			}
		}
	}()
	for c := 0; c < 3; c++ { // clients
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				slice, call, _ := e.slice(fmt.Sprintf("soak%d-%d", c, i))
				n1, n2 := fmt.Sprintf("node%d", 1+rand.IntN(3)), fmt.Sprintf("node%d", 1+rand.IntN(3))
				if _, err := agg.Allocate(e.ctx, call, slice, request("/demo -every 1s", [2]string{"a", n1}, [2]string{"b", n2})); err != nil {
					count("allocate refused: " + am.CodeOf(err).String())
					time.Sleep(300 * time.Millisecond)
					continue
				}
				if _, err := agg.Provision(e.ctx, call, []string{slice}); err != nil {
					count("provision refused: " + am.CodeOf(err).String())
				} else {
					count("slices provisioned")
				}
				time.Sleep(time.Duration(500+rand.IntN(2500)) * time.Millisecond)
				if rand.IntN(2) == 0 {
					if _, err := agg.Delete(e.ctx, call, []string{slice}); err == nil {
						count("slices deleted")
					}
				} else { // left to expire
					_, _ = e.st.Pool().Exec(e.ctx, "UPDATE slivers SET expires_at = now() WHERE slice_urn = $1", slice)
				}
			}
		}(c)
	}
	wg.Add(1)
	go func() { // the faults
		defer wg.Done()
		for k := 0; ; k++ {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(3000+rand.IntN(3000)) * time.Millisecond):
			}
			a := agents[rand.IntN(len(agents))]
			a.kill()
			down := time.Duration(1000+rand.IntN(9000)) * time.Millisecond // up to 10 s: past the retry budget (about 2 s)
			count("agent kills")
			select {
			case <-stop:
			case <-time.After(down):
			}
			a.start(t, bin)
		}
	}()
	wg.Add(1)
	go func() { // fill node3's disk through a provisioned sliver's /data, every 10-20 s
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(10000+rand.IntN(10000)) * time.Millisecond):
			}
			rows, err := e.st.Pool().Query(e.ctx, "SELECT urn FROM slivers WHERE node_name = 'node3' AND allocation_state = 'geni_provisioned'")
			if err != nil {
				continue
			}
			var urns []string
			for rows.Next() {
				var u string
				if rows.Scan(&u) == nil {
					urns = append(urns, u)
				}
			}
			rows.Close()
			for _, u := range urns {
				f, err := os.Create(filepath.Join(agents[2].stateDir, "slivers", provision.AgentID(u), "data", "fill"))
				if err != nil {
					continue // no container yet
				}
				buf := make([]byte, 1<<20)
				for j := 0; j < 256; j++ { // at most 256 MiB: the tmpfs is 64 MiB
					if _, err := f.Write(buf); err != nil {
						break
					}
				}
				f.Close()
				count("disk fills")
				break
			}
		}
	}()
	time.Sleep(duration)
	close(stop)
	wg.Wait()
	for _, a := range agents {
		a.kill()
		a.start(t, bin)
	}
	// Everything deleted now; the nodes must converge to empty.
	_, err := e.st.Pool().Exec(e.ctx, "UPDATE slivers SET expires_at = now()")
	must(t, err)
	_, err = reaper.Sweep(e.ctx)
	must(t, err)
	start := time.Now()
	var pending, containers, strays, unavailable int
	for {
		must(t, e.st.Pool().QueryRow(e.ctx, "SELECT count(*) FROM jobs WHERE state IN ('queued', 'running')").Scan(&pending))
		must(t, e.st.Pool().QueryRow(e.ctx, "SELECT count(*) FROM stray_containers").Scan(&strays))
		must(t, e.st.Pool().QueryRow(e.ctx, "SELECT count(*) FROM nodes WHERE NOT available").Scan(&unavailable))
		containers = 0
		for _, a := range agents {
			containers += len(engineContainers(t, a.instance))
		}
		if pending == 0 && containers == 0 && strays == 0 && unavailable == 0 {
			break
		}
		if time.Since(start) > 90*time.Second {
			logAgents(t, agents)
			for _, sc := range mustStrays(t, e) {
				t.Logf("stray: %+v", sc)
			}
			t.Fatalf("not converged 90 s after the soak: %d jobs pending, %d containers, %d strays, %d nodes unavailable", pending, containers, strays, unavailable)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Work was done: an agent that refuses the aggregate (its
	// configuration) converges too, with nothing ever running.
	var ready int
	must(t, e.st.Pool().QueryRow(e.ctx, "SELECT count(DISTINCT sliver_urn) FROM sliver_history WHERE operational_state = 'geni_ready'").Scan(&ready))
	if ready == 0 {
		logAgents(t, agents)
		t.Fatalf("no sliver reached geni_ready during the soak: %v", stats)
	}
	var failedTeardowns, retried, archives int
	must(t, e.st.Pool().QueryRow(e.ctx, "SELECT count(*) FROM jobs WHERE kind = 'delete' AND state = 'failed'").Scan(&failedTeardowns))
	must(t, e.st.Pool().QueryRow(e.ctx, "SELECT count(*) FROM jobs WHERE kind = 'delete' AND created_by = 'reconciliation'").Scan(&retried))
	must(t, e.st.Pool().QueryRow(e.ctx, "SELECT count(*) FROM sliver_archives WHERE final").Scan(&archives))
	t.Logf("agent soak %s: %v; %d slivers reached geni_ready; %d teardowns gave up during outages and %d were enqueued again by the reconciliation; %d final archives; converged %s after the end",
		duration, stats, ready, failedTeardowns, retried, archives, time.Since(start).Round(100*time.Millisecond))
}

// logAgents puts the end of each agent's log in the test's output.
func logAgents(t *testing.T, agents []*agentProc) {
	for _, a := range agents {
		b, _ := os.ReadFile(a.log)
		t.Logf("%s log (end):\n%s", a.name, b[max(0, len(b)-4000):])
	}
}

func mustStrays(t *testing.T, e *env) []store.StrayContainer {
	sc, err := e.st.StrayContainers(e.ctx)
	must(t, err)
	return sc
}
