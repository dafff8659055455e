package main

// The soak's world: a private PostgreSQL cluster it may stop and start, a dev
// clearinghouse written to disk, and aggregate processes (this test binary
// re-executed as `geni-am serve`) it may SIGKILL and start again.

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/geniam/geniam/am/config"
	"github.com/geniam/geniam/credentials/devch"
	"github.com/geniam/geniam/credentials/devpki"
	"github.com/geniam/geniam/credentials/devpki/pkitest"
	"github.com/geniam/geniam/store/pgcluster"
	"github.com/jackc/pgx/v5"
)

// soakServeEnv names the configuration file a re-executed test binary serves.
const soakServeEnv = "GENIAM_SOAK_SERVE_CONFIG"

// init turns a re-executed test binary into `geni-am serve --config FILE`
// before any test or TestMain runs, so the aggregate is a real process of
// its own that a SIGKILL ends for good.
func init() {
	file := os.Getenv(soakServeEnv)
	if file == "" {
		return
	}
	cfg, err := loadConfig("serve", []string{"--config", file})
	if err == nil {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err = serve(ctx, cfg, newLogger(cfg.Log), nil)
		stop()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "geni-am:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// soakAMURN is the URN of the soak's aggregates: the docs/examples requests
// name it as their component_manager_id.
const soakAMURN = "urn:publicid:IDN+geniam.localhost+authority+am"

// soakLifecycle is what the aggregates are configured with: short, so that
// the reaper expires allocations and provisioned slivers during the run.
type soakLifecycle struct {
	AllocationHold   time.Duration
	ProvisionDefault time.Duration
	ReaperInterval   time.Duration
	RequestTimeout   time.Duration // limits.request_timeout
}

// soakWorld is everything the clients talk to and the faults break.
type soakWorld struct {
	t       *testing.T
	dir     string
	cluster *pgcluster.Cluster
	dbURL   string
	ch      *devch.Clearinghouse
	amCert  string // the aggregates' certificate and key files
	amKey   string
	user    *devpki.Identity
	userTLS tls.Certificate
	ams     []*soakAM
}

// soakNewWorld starts a private cluster (never pgtest's shared one: the soak
// stops it) with an empty database "soak", and writes the clearinghouse's
// root, the aggregate's identity and alice's identity to disk.
func soakNewWorld(t *testing.T) *soakWorld {
	t.Helper()
	w := &soakWorld{t: t, dir: t.TempDir()}
	c, err := pgcluster.New(filepath.Join(w.dir, "pg"), 0)
	if err != nil {
		t.Skipf("no PostgreSQL for the soak: %v", err)
	}
	if err := c.Init(); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	w.cluster = c
	t.Cleanup(func() {
		if c.Running() {
			_ = c.Stop()
		}
	})
	if out, err := c.Psql("postgres", "-c", "CREATE DATABASE soak"); err != nil {
		t.Fatalf("create database: %v: %s", err, out)
	}
	w.dbURL = c.URL("soak")

	fed := newDevFederation(t)
	w.ch, w.user = fed.ch, fed.alice
	pkitest.RootsDir(t, filepath.Join(w.dir, "roots"), w.ch.CA.Cert)
	ca := pkitest.Of(t, w.ch.CA)
	w.amCert, w.amKey = ca.Files(ca.Server(devpki.Options{URN: soakAMURN}), "am")
	w.userTLS = pkitest.TLS(t, w.user)
	return w
}

// soakSeedNodes adds a scarce inventory (contention is the point): capacities
// 2 to 4, two nodes that can also be taken whole.
func (w *soakWorld) soakSeedNodes(ctx context.Context) error {
	db, err := pgx.Connect(ctx, w.dbURL)
	if err != nil {
		return err
	}
	defer db.Close(ctx)
	return w.soakSeedNodesOn(ctx, db)
}

func (w *soakWorld) soakSeedNodesOn(ctx context.Context, db *pgx.Conn) error {
	_, err := db.Exec(ctx, `
INSERT INTO nodes (name, component_urn, sliver_types, capacity) VALUES
  ('soak1', 'urn:publicid:IDN+geniam.localhost+node+soak1', ARRAY['container'], 4),
  ('soak2', 'urn:publicid:IDN+geniam.localhost+node+soak2', ARRAY['container'], 3),
  ('soak3', 'urn:publicid:IDN+geniam.localhost+node+soak3', ARRAY['container'], 2),
  ('soak4', 'urn:publicid:IDN+geniam.localhost+node+soak4', ARRAY['container'], 4),
  ('soak5', 'urn:publicid:IDN+geniam.localhost+node+soak5', ARRAY['container','exclusive'], 3),
  ('soak6', 'urn:publicid:IDN+geniam.localhost+node+soak6', ARRAY['container','exclusive'], 2)`)
	return err
}

// soakAM is one aggregate process, restartable on the same address.
type soakAM struct {
	name   string
	addr   string // 127.0.0.1:port
	config string // YAML file
	log    string // stderr of every run, appended
	tlsCfg *tls.Config

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
	runs int
}

// soakNewAM writes the configuration of an aggregate on a free port.
func (w *soakWorld) soakNewAM(name string, lc soakLifecycle) *soakAM {
	w.t.Helper()
	addr := freeAddr(w.t)
	a := &soakAM{name: name, addr: addr, config: filepath.Join(w.dir, name+".yaml"), log: filepath.Join(w.dir, name+".log"),
		tlsCfg: &tls.Config{Certificates: []tls.Certificate{w.userTLS}, InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}}
	err := config.WriteYAML(a.config, map[string]any{
		"listen": addr, "am_urn": soakAMURN, "var_dir": filepath.Join(w.dir, name),
		"db.url": w.dbURL, "db.max_conns": 8,
		"tls.cert": w.amCert, "tls.key": w.amKey,
		"tls.trusted_roots":         filepath.Join(w.dir, "roots"),
		"lifecycle.allocation_hold": lc.AllocationHold.String(), "lifecycle.provision_default": lc.ProvisionDefault.String(),
		"lifecycle.reaper_interval": lc.ReaperInterval.String(), "limits.request_timeout": lc.RequestTimeout.String(),
		"operations.listen": "", "log.level": "warn",
	})
	if err != nil {
		w.t.Fatal(err)
	}
	w.ams = append(w.ams, a)
	w.t.Cleanup(func() { a.soakKill() })
	return a
}

func (a *soakAM) url() string { return "https://" + a.addr + "/" }

// soakStart starts the process and waits until it answers GetVersion.
func (a *soakAM) soakStart(timeout time.Duration) error {
	logf, err := os.OpenFile(a.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.runs++
	fmt.Fprintf(logf, "--- run %d at %s\n", a.runs, time.Now().UTC().Format(time.RFC3339Nano))
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), soakServeEnv+"="+a.config)
	cmd.Stdout, cmd.Stderr = logf, logf
	// The aggregate must not outlive a test that dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		a.mu.Unlock()
		logf.Close()
		return err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	a.cmd, a.done = cmd, done
	a.mu.Unlock()

	client := soakNewRPC(a, 5*time.Second)
	defer client.close()
	deadline := time.Now().Add(timeout)
	for {
		_, err := client.call(context.Background(), "GetVersion", map[string]any{})
		if err == nil {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("%s exited while starting (see %s): %s", a.name, a.log, soakTail(a.log, 2000))
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not answering after %s: %v", a.name, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// soakKill SIGKILLs the process (if running) and waits for it to be gone.
func (a *soakAM) soakKill() {
	a.mu.Lock()
	cmd, done := a.cmd, a.done
	a.cmd = nil
	a.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// soakAlive reports whether the process is still running (it should be,
// unless the soak killed it).
func (a *soakAM) soakAlive() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmd == nil {
		return false
	}
	select {
	case <-a.done:
		return false
	default:
		return true
	}
}

// soakTail is the end of a log file, for failure messages.
func soakTail(file string, n int) string {
	b, _ := os.ReadFile(file)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.TrimSpace(string(b))
}

// soakUsage is what a running aggregate process holds: resident memory and
// open file descriptors (sockets included), read from /proc.
type soakUsage struct {
	RSSKiB int
	FDs    int
}

func (u soakUsage) String() string { return fmt.Sprintf("%d MiB RSS, %d fds", u.RSSKiB/1024, u.FDs) }

// soakUsageOf reads the usage of the running process ("" if not running).
func (a *soakAM) soakUsageOf() (soakUsage, bool) {
	a.mu.Lock()
	cmd := a.cmd
	a.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return soakUsage{}, false
	}
	dir := fmt.Sprintf("/proc/%d", cmd.Process.Pid)
	status, err := os.ReadFile(dir + "/status")
	if err != nil {
		return soakUsage{}, false
	}
	var u soakUsage
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			fmt.Sscanf(strings.TrimSpace(rest), "%d", &u.RSSKiB)
		}
	}
	fds, _ := os.ReadDir(dir + "/fd")
	u.FDs = len(fds)
	return u, true
}

// soakCrashPostgres stops PostgreSQL the hard way: SIGQUIT to the postmaster
// is an immediate shutdown (no checkpoint; every backend quits at once), so
// the next start runs crash recovery. It waits until the postmaster is gone.
func (w *soakWorld) soakCrashPostgres() error {
	b, err := os.ReadFile(filepath.Join(w.cluster.Dir, "postmaster.pid"))
	if err != nil {
		return err
	}
	var pid int
	if _, err := fmt.Sscanf(string(b), "%d", &pid); err != nil || pid <= 1 {
		return fmt.Errorf("postmaster.pid: no pid in %.40q", b)
	}
	if err := syscall.Kill(pid, syscall.SIGQUIT); err != nil {
		return fmt.Errorf("SIGQUIT postmaster %d: %w", pid, err)
	}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if soakProcessGone(pid) {
			return nil
		}
	}
	return fmt.Errorf("postmaster %d still running 30 s after SIGQUIT", pid)
}

// soakProcessGone: no such process, or only its zombie (the postmaster is
// not our child; whoever inherited it may be slow to reap it).
func soakProcessGone(pid int) bool {
	if syscall.Kill(pid, 0) == syscall.ESRCH {
		return true
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// pid (comm) state ...: the state follows the last ')'.
	i := strings.LastIndexByte(string(stat), ')')
	return i >= 0 && i+2 < len(stat) && stat[i+2] == 'Z'
}

// soakFreezePostgres stops (SIGSTOP) the postmaster and every backend, as a
// network partition from the database would look to the aggregates: their
// connections and new connects neither fail nor answer. It returns the
// function that thaws them (SIGCONT).
func (w *soakWorld) soakFreezePostgres() (thaw func(), err error) {
	b, err := os.ReadFile(filepath.Join(w.cluster.Dir, "postmaster.pid"))
	if err != nil {
		return nil, err
	}
	var pid int
	if _, err := fmt.Sscanf(string(b), "%d", &pid); err != nil || pid <= 1 {
		return nil, fmt.Errorf("postmaster.pid: no pid in %.40q", b)
	}
	// The postmaster first, so that it forks no backend we miss.
	pids := []int{pid}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		return nil, err
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", child))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		i := strings.LastIndexByte(string(stat), ')')
		var state string
		var ppid int
		if i < 0 || func() bool { _, err := fmt.Sscanf(string(stat[i+1:]), " %s %d", &state, &ppid); return err != nil }() {
			continue
		}
		if ppid == pid {
			_ = syscall.Kill(child, syscall.SIGSTOP)
			pids = append(pids, child)
		}
	}
	return func() {
		for _, p := range pids {
			_ = syscall.Kill(p, syscall.SIGCONT)
		}
	}, nil
}
