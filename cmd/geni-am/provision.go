package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/agent"
	"github.com/geniam/geniam/am/config"
	"github.com/geniam/geniam/am/devenv"
	"github.com/geniam/geniam/am/provision"
	"github.com/geniam/geniam/store"
)

// newProvisioner returns the provisioner of serve, or nil when agents.cert,
// agents.key and agents.ca are not all set (the aggregate then only keeps
// its books: slivers stay geni_notready). It is started with its Run.
func newProvisioner(cfg *config.Config, st *store.Store, rs am.RSpecs, log *slog.Logger) (*provision.Provisioner, error) {
	a := cfg.Agents
	if a.Cert == "" && a.Key == "" && a.CA == "" {
		log.Warn("no agents.cert/key/ca: provisioning is off (Provision records slivers but starts nothing)")
		return nil, nil
	}
	if a.Cert == "" || a.Key == "" || a.CA == "" {
		return nil, errors.New("agents.cert, agents.key and agents.ca must be set together")
	}
	tlsConf, err := agent.ClientTLSConfig(a.Cert, a.Key, a.CA)
	if err != nil {
		return nil, err
	}
	pc := cfg.Provisioning
	archive := pc.ArchiveDir
	if archive == "" {
		archive = filepath.Join(cfg.VarDir, "archive")
	}
	return provision.New(provision.Config{Store: st, RSpecs: rs, AgentTLS: tlsConf, PublicURL: cfg.PublicURL(),
		Authority: cfg.Authority(), SliverLimits: cfg.SliverLimits.ByType(), ArchiveDir: archive, ArchiveRetention: pc.ArchiveRetention, ArchiveMaxBytes: pc.ArchiveMaxBytes, Workers: pc.Workers,
		Lease: pc.Lease, MaxAttempts: pc.MaxAttempts, BackoffMax: pc.BackoffMax, HealthInterval: pc.HealthInterval,
		DownAfter: pc.DownAfter, StrayGrace: pc.StrayGrace, DiskPressure: pc.DiskPressure, IdleStop: pc.IdleStop, IdleWarn: pc.IdleWarn, Log: log})
}

// asProvisioner keeps a nil *Provisioner from becoming a non-nil interface.
func asProvisioner(p *provision.Provisioner) am.Provisioner {
	if p == nil {
		return nil
	}
	return p
}

// withData mounts /data/ (sliver data downloads) next to the XML-RPC
// handler on the same TLS listener.
func withData(api, data http.Handler) http.Handler {
	if data == nil {
		return api
	}
	mux := http.NewServeMux()
	mux.Handle("/data/", data)
	mux.Handle("/", api)
	return mux
}

// devAgents is what make run starts besides the aggregate when a Docker
// engine is reachable: the demo inventory's node agents in this process
// (127.0.0.2-4:1887, state under var/agents/<node>) and the demo image.
type devAgents struct {
	imageTar    string
	imageSHA256 string
	request     string // a request RSpec using the demo image
}

var devAgentNodes = []struct{ name, ip string }{{"node1", "127.0.0.2"}, {"node2", "127.0.0.3"}, {"node3", "127.0.0.4"}}

// startDevAgents configures cfg.Agents with the dev PKI and, when Docker is
// reachable, starts the agents and builds the demo image (once). Without
// Docker it says so and returns nil: the aggregate still serves.
func startDevAgents(ctx context.Context, dir string, pki *devenv.PKI, cfg *config.Config, lg *slog.Logger) *devAgents {
	if cfg.Agents.Cert == "" {
		cfg.Agents.Cert, cfg.Agents.Key = pki.File("am-agent-client")
		cfg.Agents.CA, _ = pki.File("agents-ca")
	}
	if why := provision.DockerAvailable(ctx); why != "" {
		lg.Warn("make run: no Docker engine, so no node agents and no demo image: slivers will fail to provision", "why", why)
		return nil
	}
	images := filepath.Join(dir, "images")
	caFile, _ := pki.File("agents-ca")
	agentLog := lg
	if cfg.Log.Level != "debug" {
		// Every health poll is an agent request: keep make run's terminal
		// for what matters.
		agentLog = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	for _, n := range devAgentNodes {
		if _, err := startDevAgent(ctx, filepath.Join(dir, "agents", n.name), images, caFile, pki, n.name, n.ip, "1887", "geniam-dev-"+n.name, agentLog); err != nil {
			lg.Warn("make run: node agent not started (its node will show as unreachable)", "node", n.name, "err", err)
		}
	}
	d := &devAgents{imageTar: filepath.Join(images, "demo.tar")}
	sum, err := os.ReadFile(d.imageTar + ".sha256")
	if _, serr := os.Stat(d.imageTar); err == nil && serr == nil {
		d.imageSHA256 = strings.TrimSpace(string(sum))
	} else {
		lg.Info("make run: building the demo image (once)", "tar", d.imageTar)
		if d.imageSHA256, err = provision.BuildDemoImage(ctx, d.imageTar, "geniam.dev/demo:latest"); err != nil {
			lg.Warn("make run: could not build the demo image (run make run from the geniam source tree, with Go)", "err", err)
			return nil
		}
		_ = os.WriteFile(d.imageTar+".sha256", []byte(d.imageSHA256+"\n"), 0o644)
	}
	d.request = filepath.Join(dir, "dev", "demo-request.xml")
	if err := os.WriteFile(d.request, []byte(demoRequest(d.imageTar, d.imageSHA256)), 0o644); err != nil {
		lg.Warn("make run: writing the demo request", "err", err)
	}
	return d
}

// nodeAgentProgram finds the geni-nodeagent that make run's agents run:
// the one built next to this program (make build puts both in bin/), else
// the one on PATH. Tests point it at one they build.
var nodeAgentProgram = func() (string, error) {
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "geni-nodeagent")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath("geni-nodeagent")
	if err != nil {
		return "", fmt.Errorf("no geni-nodeagent next to %s or on PATH (make build builds both)", os.Args[0])
	}
	return p, nil
}

// startDevAgent runs a node agent on ip:port (port "0": a free one) until
// ctx ends, with its containers labelled instance, and returns its address.
// The agent is geni-nodeagent in a child process, as on a real node, so
// that the aggregate links none of the agent's code.
func startDevAgent(ctx context.Context, stateDir, images, caFile string, pki *devenv.PKI, name, ip, port, instance string, lg *slog.Logger) (net.Addr, error) {
	if _, err := pki.AgentIdentity(name, net.ParseIP(ip)); err != nil {
		return nil, err
	}
	prog, err := nodeAgentProgram()
	if err != nil {
		return nil, err
	}
	sshPort := "2222"
	if port == "0" {
		sshPort = "0"
		if port, err = freePort(ip); err != nil {
			return nil, err
		}
	}
	certFile, keyFile := pki.File("agent-" + name)
	// The demo image is a local file in images/ (allowed explicitly); no
	// image host is listed, so URLs must be public. /data has no quota here:
	// loop mounts need root and outlive the process, which a development
	// aggregate (and the tests that start these agents) should not leave
	// behind; a production geni-nodeagent enforces it (data_quota_bytes).
	conf := map[string]any{
		"listen": net.JoinHostPort(ip, port), "cert": certFile, "key": keyFile, "client_ca": caFile,
		// Only the aggregate's own certificate may call a dev agent: the
		// other agents' certificates come from the same CA.
		"allowed_clients": []string{devenv.AMURN},
		"state_dir":       stateDir, "instance": instance,
		"allow_file_images": true, "file_image_dirs": []string{images},
		"max_archive_bytes": 1 << 30, "data_quota_bytes": -1,
		"log_level": "warn", "log_format": "text",
	}
	if lg.Enabled(ctx, slog.LevelDebug) {
		conf["log_level"] = "debug"
	}
	// SSH logins into the containers on <ip>:2222 (a free port when the
	// agent's is "0"), the manifest's <login>; when the port is taken the
	// agent still runs, without logins.
	if sshPort, err := portFor(ip, sshPort); err != nil {
		lg.Warn("make run: no SSH login on this node", "node", name, "err", err)
	} else {
		conf["ssh_listen"], conf["ssh_host"] = net.JoinHostPort(ip, sshPort), ip
	}
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return nil, err
	}
	confFile := filepath.Join(stateDir, "geni-nodeagent.json")
	b, _ := json.MarshalIndent(conf, "", "  ")
	if err := os.WriteFile(confFile, b, 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command(prog, "-config", confFile)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM} // never outlive the aggregate
	// Through a pipe of our own, so that Wait returns only once every line
	// is relayed.
	logR, logW := io.Pipe()
	cmd.Stderr = logW
	go relayAgentLog(lg, name, logR)
	if err := cmd.Start(); err != nil {
		logW.Close()
		return nil, err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); logW.Close(); close(exited) }()
	go func() {
		select {
		case <-ctx.Done():
			_ = cmd.Process.Signal(syscall.SIGTERM)
		case <-exited:
		}
	}()
	// Ready once a handshake as the aggregate succeeds (a bare TCP probe
	// would make the agent log a failed TLS handshake at every start).
	clientCert, clientKey := pki.File("am-agent-client")
	probeTLS, err := agent.ClientTLSConfig(clientCert, clientKey, caFile)
	if err != nil {
		_ = cmd.Process.Kill()
		return nil, err
	}
	probe := tls.Dialer{NetDialer: &net.Dialer{Timeout: time.Second}, Config: probeTLS}
	addr := net.JoinHostPort(ip, port)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if c, err := probe.DialContext(ctx, "tcp", addr); err == nil {
			c.Close()
			break
		}
		select {
		case <-exited:
			return nil, fmt.Errorf("%s stopped at its start (its log says why)", prog)
		default:
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			return nil, fmt.Errorf("%s did not listen on %s within 30s", prog, addr)
		}
	}
	lg.Info("make run: node agent serving", "node", name, "url", "https://"+addr, "pid", cmd.Process.Pid)
	return net.ResolveTCPAddr("tcp", addr)
}

// freePort returns a port of ip nobody listens on now.
func freePort(ip string) (string, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return fmt.Sprint(ln.Addr().(*net.TCPAddr).Port), nil
}

// portFor returns port when nobody listens on it now ("0": a free one).
func portFor(ip, port string) (string, error) {
	if port == "0" {
		return freePort(ip)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, port))
	if err != nil {
		return "", err
	}
	ln.Close()
	return port, nil
}

// relayAgentLog passes the child agent's log lines (text format) to lg at
// their own level.
func relayAgentLog(lg *slog.Logger, name string, r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		lvl := slog.LevelInfo
		for _, l := range []slog.Level{slog.LevelDebug, slog.LevelWarn, slog.LevelError} {
			if strings.Contains(line, "level="+l.String()) {
				lvl = l
			}
		}
		lg.Log(context.Background(), lvl, "node agent", "node", name, "log", line)
	}
	_, _ = io.Copy(io.Discard, r) // past a line too long to scan: the agent must never block on its log
}

// demoRequest is a request RSpec of two demo containers, one run-once.
func demoRequest(tar, sha string) string {
	return fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by make run: two containers of the demo image (cmd/geni-demo-container).
     "server" keeps running and writes a heartbeat into /data; "once" writes a
     greeting and exits with code 3 (see its exit code in Status). -->
<rspec xmlns="http://www.geni.net/resources/rspec/3"
       xmlns:geniam="http://geniam.github.io/rspec/ext/geniam/1" type="request">
  <node client_id="server" component_manager_id="%[3]s">
    <sliver_type name="container">
      <disk_image name="%[1]s" geniam:sha256="%[2]s"/>
    </sliver_type>
  </node>
  <node client_id="once" component_manager_id="%[3]s">
    <sliver_type name="container">
      <disk_image name="%[1]s" geniam:sha256="%[2]s"/>
    </sliver_type>
    <services>
      <execute shell="exec" command="/demo -once -exit 3"/>
    </services>
  </node>
</rspec>
`, tar, sha, devenv.AMURN)
}

// printDemo tells a make run user how to run the demo image with geni.
func printDemo(d *devAgents, omniConfig string) {
	if d == nil {
		fmt.Print("\nNo Docker engine or no demo image (see the log above): provisioned slivers may stay geni_configuring (agents unreachable) and fail after the retries.\n")
		return
	}
	fmt.Printf(`
Node agents run as geni-nodeagent child processes (127.0.0.2-4:1887, state in var/agents); the demo image is
  %s (sha256 %s)
Run it (docs/experimenter.md):
  geni -c %[3]s createslice demo
  geni -c %[3]s -a geniam allocate demo %[4]s
  geni -c %[3]s -a geniam provision demo
  geni -c %[3]s -a geniam wait demo        # until ready; "once" then says: finished with exit code 3
  geni -c %[3]s -a geniam data demo        # demo-server-data.tar, demo-once-data.tar
  geni -c %[3]s -a geniam ssh demo server -- /demo -once   # log in (SSH through the node agent; no shell in this image)
  geni -c %[3]s -a geniam logs demo        # the start commands' output
  geni -c %[3]s -a geniam delete demo
`, d.imageTar, d.imageSHA256, omniConfig, d.request)
}
