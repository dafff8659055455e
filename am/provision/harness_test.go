package provision_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/agent"
	"github.com/geniam/geniam/am/agent/docker"
	"github.com/geniam/geniam/am/agent/imagetest"
	"github.com/geniam/geniam/am/agent/node"
	"github.com/geniam/geniam/am/agent/sshlogin"
	"github.com/geniam/geniam/am/amtest"
	"github.com/geniam/geniam/am/geniapi"
	"github.com/geniam/geniam/am/provision"
	"github.com/geniam/geniam/credentials"
	"github.com/geniam/geniam/credentials/devch"
	"github.com/geniam/geniam/credentials/devpki"
	"github.com/geniam/geniam/credentials/devpki/pkitest"
	"github.com/geniam/geniam/rspec"
	"github.com/geniam/geniam/store"
	"github.com/geniam/geniam/store/pgtest"
	"github.com/geniam/geniam/store/storetest"
)

const (
	authority = "geniam.test"
	amURN     = "urn:publicid:IDN+geniam.test+authority+am"
)

var (
	testTmp     string // removed after the run
	dockerSkip  string // why Docker tests cannot run ("" when they can)
	imageTar    string
	imageDigest string
	imageServer *httptest.Server
	run         = fmt.Sprintf("provtest-%d", os.Getpid()) // agent instance label prefix of this run
)

func TestMain(m *testing.M) {
	code := imagetest.Main(m, "geniam-provision-test", &testTmp, &dockerSkip, func() (func(), error) {
		imageTar = filepath.Join(testTmp, "img", "demo.tar")
		var err error
		if imageDigest, err = provision.BuildDemoImage(context.Background(), imageTar, "geniam.test/provision/demo:"+run); err != nil {
			return nil, err
		}
		imageServer = httptest.NewServer(http.FileServer(http.Dir(filepath.Dir(imageTar))))
		return func() { removeContainers(run); imageServer.Close() }, nil
	})
	pgtest.Stop()
	os.Exit(code)
}

func needDocker(tb testing.TB) {
	tb.Helper()
	imagetest.NeedDocker(tb, dockerSkip)
}

// removeContainers force-removes the containers of the agent instances
// whose name starts with prefix.
func removeContainers(prefix string) { imagetest.RemoveContainers(agent.LabelInstance, prefix) }

// engineContainers lists the engine's containers of an agent instance.
func engineContainers(t testing.TB, inst string) []string {
	t.Helper()
	out, err := enginePS(inst, "{{.Names}}")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(out)
}

// enginePS is `docker ps -a` of an agent instance's containers in format.
func enginePS(inst, format string) (string, error) {
	return imagetest.Output("ps", "-a", "--filter", "label="+agent.LabelInstance+"="+inst, "--format", format)
}

// mountTmpfs mounts a tmpfs of size (mount's -o size=) on dir until the
// test ends, or says why it cannot (it needs root).
func mountTmpfs(t *testing.T, dir, size string) error {
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		return fmt.Errorf("%v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", dir).Run() })
	return nil
}

// untar maps the regular files of a tar to their contents.
func untar(t *testing.T, b []byte) map[string]string {
	t.Helper()
	return amtest.TarFiles(t, bytes.NewReader(b))
}

// engineStatus is the engine's status of the (only) container of an agent
// instance.
func engineStatus(inst string) string {
	out, _ := enginePS(inst, "{{.State}}")
	return strings.TrimSpace(out)
}

// waitFile waits until path exists.
func waitFile(t *testing.T, path string, d time.Duration) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if _, err := os.Stat(path); err == nil {
			return
		}
	}
	t.Fatalf("%s did not appear in %s", path, d)
}

// waitAgentFile waits until a file of the sliver on the agent's host
// (under its state directory) contains want.
func waitAgentFile(t *testing.T, a *testAgent, id, rel, want string, d time.Duration) string {
	t.Helper()
	var got string
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		matches, _ := filepath.Glob(filepath.Join(a.cfg.StateDir, "slivers", id, rel))
		for _, m := range matches {
			b, _ := os.ReadFile(m)
			if got = string(b); strings.Contains(got, want) {
				return got
			}
		}
	}
	t.Fatalf("%s of %s on %s never contained %q (last %q)", rel, id, a.name, want, got)
	return got
}

func must(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
}

func testLogger() *slog.Logger {
	if os.Getenv("GENIAM_PROVISION_TEST_LOG") == "1" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// testAgent is an in-process node agent with a mutual-TLS listener on its
// own loopback address; it can be stopped and started again on the same
// address (same state directory and instance: an agent restart).
type testAgent struct {
	name     string
	ip       string
	addr     string // host:port once started
	cfg      node.Config
	srvTLS   *tls.Config
	mu       sync.Mutex
	svc      *node.Service
	srv      *http.Server
	instance string
	ssh      *sshlogin.Server // the agent's SSH login, on ip, port cfg.LoginPort
}

type env struct {
	t        testing.TB
	ctx      context.Context
	st       *store.Store
	dbURL    string
	ch       *devch.Clearinghouse
	alice    *devpki.Identity
	caller   *am.Caller
	verifier *credentials.Verifier
	rs       *rspec.RSpecs
	agents   []*testAgent
	agentCA  *pkitest.Authority // the agent fleet's
	chCA     *pkitest.Authority // the clearinghouse's, which users and the aggregate have certificates of
	clientTL *tls.Config
	archive  string
	dataSrv  *httptest.Server
	dataCli  *http.Client
	// dataGate is the gate /data asks; startDataServer makes one (the
	// verifier and the store, no operator policy) when it is nil.
	dataGate *am.Gate
}

func newEnv(t testing.TB, agentIPs ...string) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	e := &env{t: t, ctx: ctx, archive: t.TempDir()}
	e.st, e.dbURL = storetest.Open(t)
	var err error

	e.ch, err = devch.New(authority)
	must(t, err)
	e.alice, err = e.ch.IssueUser("alice", "alice@geniam.test")
	must(t, err)
	e.caller = &am.Caller{URN: "urn:publicid:IDN+geniam.test+user+alice", Cert: e.alice.Cert, Chain: append([]*x509.Certificate{e.alice.Cert}, e.alice.Chain...)}
	e.verifier = credentials.NewVerifier(e.ch.Roots(), credentials.Options{})
	e.rs, err = rspec.New(rspec.Config{AMURN: amURN})
	must(t, err)

	e.chCA = pkitest.Of(t, e.ch.CA)

	// The agent fleet's PKI: its own CA, a server certificate per agent,
	// the aggregate's client certificate.
	e.agentCA = pkitest.New(t, devpki.Options{URN: "urn:publicid:IDN+geniam.test+authority+agents"})
	cc, ck := e.agentCA.Files(e.agentCA.Issue(devpki.Options{URN: amURN}), "am")
	e.clientTL, err = agent.ClientTLSConfig(cc, ck, e.agentCA.CertFile)
	must(t, err)
	for i, ip := range agentIPs {
		name := fmt.Sprintf("node%d", i+1)
		sc, sk := e.agentFiles(name, ip)
		srvTLS, err := node.ServerTLSConfig(sc, sk, e.agentCA.CertFile)
		must(t, err)
		inst := fmt.Sprintf("%s-%s-%s", run, strings.ReplaceAll(t.Name(), "/", "_"), name)
		a := &testAgent{name: name, ip: ip, srvTLS: srvTLS, instance: inst, cfg: node.Config{
			StateDir: t.TempDir(), Instance: inst, AllowFileImages: true, ImageHosts: []string{"127.0.0.1"}, FetchTimeout: 2 * time.Minute,
			StopGrace: 2 * time.Second, PidsLimit: 64, IdleCheckInterval: 200 * time.Millisecond, Logger: testLogger()}}
		if dockerSkip == "" {
			t.Cleanup(func() { removeContainers(inst) })
		}
		a.start(t)
		t.Cleanup(a.stop)
		e.agents = append(e.agents, a)
		_, err = e.st.Pool().Exec(ctx, `INSERT INTO nodes (name, component_urn, agent_url, sliver_types, capacity)
			VALUES ($1, $2, $3, ARRAY['container'], 60)`, name, "urn:publicid:IDN+geniam.test+node+"+name, "https://"+a.addr)
		must(t, err)
	}
	return e
}

// agentFiles issues the server certificate of the agent of node name on ip
// and returns its files.
func (e *env) agentFiles(name, ip string) (certFile, keyFile string) {
	e.t.Helper()
	return e.agentCA.Files(e.agentCA.Server(devpki.Options{URN: "urn:publicid:IDN+geniam.test+node+" + name, IPs: []net.IP{net.ParseIP(ip)}}), name)
}

func (a *testAgent) start(t testing.TB) {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	// A restarted agent takes its address back (the aggregate knows the
	// node by its URL), so the first start takes ports no other process is
	// handed while this one is stopped.
	sshAddr := ""
	if a.cfg.LoginPort != 0 {
		sshAddr = net.JoinHostPort(a.ip, fmt.Sprint(a.cfg.LoginPort))
	}
	ln, sshLn := a.listen(t, a.addr), a.listen(t, sshAddr)
	a.addr = ln.Addr().String()
	var err error
	a.cfg.LoginPort = sshLn.Addr().(*net.TCPAddr).Port // LoginHost stays "": the aggregate uses the agent URL's host
	rt := docker.NewRuntime("")
	a.svc, err = node.New(a.cfg, rt)
	must(t, err)
	a.ssh, err = sshlogin.New(sshlogin.Config{HostKeyFile: filepath.Join(a.cfg.StateDir, "ssh_host_key"), Logger: a.cfg.Logger,
		CheckInterval: 200 * time.Millisecond}, a.svc, rt)
	must(t, err)
	go func(s *sshlogin.Server) { _ = s.Serve(sshLn) }(a.ssh)
	a.srv = &http.Server{Handler: node.NewHandler(a.svc, node.HandlerOptions{Logger: a.cfg.Logger}), TLSConfig: a.srvTLS,
		ErrorLog: log.New(io.Discard, "", 0)}
	go func(srv *http.Server) { _ = srv.ServeTLS(ln, "", "") }(a.srv)
}

// listen listens on addr, or at a stable port of the agent's IP when addr
// is "". The old listener's port may linger briefly after a stop.
func (a *testAgent) listen(t testing.TB, addr string) net.Listener {
	t.Helper()
	if addr == "" {
		return amtest.ListenStable(t, a.ip)
	}
	var err error
	for range 50 {
		var ln net.Listener
		if ln, err = net.Listen("tcp", addr); err == nil {
			return ln
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("agent %s: listen again on %s: %v", a.name, addr, err)
	return nil
}

func (a *testAgent) stop() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.srv != nil {
		_ = a.srv.Close()
		_ = a.ssh.Close()
		a.svc.Close()
		a.srv, a.svc, a.ssh = nil, nil, nil
	}
}

// provisioner makes a provisioner on the env's store with test timings.
func (e *env) provisioner(owner string, tune func(*provision.Config)) *provision.Provisioner {
	cfg := provision.Config{Store: e.st, RSpecs: e.rs, AgentTLS: e.clientTL, PublicURL: "https://127.0.0.1:8001/",
		Authority: authority, ArchiveDir: e.archive, Workers: 6, Lease: 3 * time.Second, PollInterval: 100 * time.Millisecond,
		BackoffBase: 200 * time.Millisecond, BackoffMax: 2 * time.Second, FetchWait: 5 * time.Second,
		HealthInterval: 300 * time.Millisecond, AgentTimeout: 2 * time.Second, DownAfter: 2, Owner: owner, Log: testLogger()}
	if tune != nil {
		tune(&cfg)
	}
	p, err := provision.New(cfg)
	must(e.t, err)
	return p
}

// runProvisioner runs p until the returned stop is called (or the test ends).
func (e *env) runProvisioner(p *provision.Provisioner) (stop func()) {
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	e.t.Cleanup(stop)
	return stop
}

func (e *env) aggregate(p am.Provisioner) *am.Aggregate {
	return am.NewAggregate(am.AggregateConfig{URN: amURN, URL: "https://127.0.0.1:8001/", Provisioner: p}, e.st, e.verifier, e.rs, nil)
}

// slice creates a slice at the clearinghouse and returns its URN and the
// call carrying alice's slice credential.
func (e *env) slice(name string) (string, am.Call, []byte) {
	e.t.Helper()
	s, cred, err := e.ch.CreateSlice([]*x509.Certificate{e.alice.Cert}, name, time.Now().Add(48*time.Hour))
	must(e.t, err)
	c := am.Call{Caller: e.caller, Credentials: []am.Credential{{Type: "geni_sfa", Version: "3", Value: string(cred)}},
		Options: am.Options{RSpecVersion: &am.RSpecVersion{Type: "GENI", Version: "3"}}}
	return s.URN, c, cred
}

// request is a request RSpec of containers running the demo image; nodes
// maps client_id to the node it is bound to.
func request(command string, nodes ...[2]string) string {
	var b strings.Builder
	b.WriteString(`<rspec xmlns="http://www.geni.net/resources/rspec/3" xmlns:geniam="http://geniam.github.io/rspec/ext/geniam/1" type="request">`)
	for _, n := range nodes {
		fmt.Fprintf(&b, `<node client_id=%q component_id="urn:publicid:IDN+geniam.test+node+%s" component_manager_id=%q>`, n[0], n[1], amURN)
		fmt.Fprintf(&b, `<sliver_type name="container"><disk_image name="%s/demo.tar" geniam:sha256=%q/></sliver_type>`, imageServerURL(), imageDigest)
		if command != "" {
			fmt.Fprintf(&b, `<services><execute shell="exec" command=%q/></services>`, command)
		}
		b.WriteString(`</node>`)
	}
	b.WriteString(`</rspec>`)
	return b.String()
}

// spread is n request nodes for request: client ids prefix0, prefix1, ...
// bound in turn to node1 ... node<nodes>.
func spread(prefix string, n, nodes int) [][2]string {
	var out [][2]string
	for i := 0; i < n; i++ {
		out = append(out, [2]string{fmt.Sprintf("%s%d", prefix, i), fmt.Sprintf("node%d", i%nodes+1)})
	}
	return out
}

func imageServerURL() string {
	if imageServer == nil {
		return "http://127.0.0.1:1"
	}
	return imageServer.URL
}

// waitStates polls Status until every sliver satisfies ok, or fails.
// served is a provisioner for owner (tuned by tune) that runs its workers
// until the test ends, and the aggregate that provisions with it.
func (e *env) served(owner string, tune func(*provision.Config)) (*provision.Provisioner, *am.Aggregate) {
	e.t.Helper()
	p := e.provisioner(owner, tune)
	e.runProvisioner(p)
	return p, e.aggregate(p)
}

// allocateProvision allocates the request in slice and provisions it,
// failing the test on any error.
func (e *env) allocateProvision(agg *am.Aggregate, c am.Call, slice, request string) *am.AllocateResult {
	e.t.Helper()
	res, err := agg.Allocate(e.ctx, c, slice, request)
	must(e.t, err)
	_, err = agg.Provision(e.ctx, c, []string{slice})
	must(e.t, err)
	return res
}

// waitCount polls a count(*) query every poll until done says the count is
// what the test waits for, and fails the test with what (and the last count)
// after d. It returns the last count.
func (e *env) waitCount(d, poll time.Duration, what string, done func(n int) bool, query string, args ...any) int {
	e.t.Helper()
	for end := time.Now().Add(d); ; time.Sleep(poll) {
		var n int
		must(e.t, e.st.Pool().QueryRow(e.ctx, query, args...).Scan(&n))
		if done(n) {
			return n
		}
		if time.Now().After(end) {
			e.t.Fatalf("after %s: %s (count %d)", d, what, n)
		}
	}
}

// deleteJobResult waits for the sliver's delete job to be done and returns
// its result. The job is marked done just after the teardown it did: poll.
func (e *env) deleteJobResult(urn string, d time.Duration) string {
	e.t.Helper()
	var result string
	for end := time.Now().Add(d); ; time.Sleep(100 * time.Millisecond) {
		err := e.st.Pool().QueryRow(e.ctx, "SELECT result FROM jobs WHERE kind = 'delete' AND sliver_urn = $1 AND state = 'done'", urn).Scan(&result)
		if err == nil {
			return result
		}
		if time.Now().After(end) {
			e.t.Fatalf("the delete job of %s never finished: %v", urn, err)
		}
	}
}

// checkContainers reports an error (the test goes on) for each agent
// whose engine does not hold want[i] containers of it (agents[i]), saying
// what the count stands for.
func (e *env) checkContainers(what string, want ...int) {
	e.t.Helper()
	for i, n := range want {
		a := e.agents[i]
		if cs := engineContainers(e.t, a.instance); len(cs) != n {
			e.t.Errorf("%s's engine has %d containers, want %d (%s): %v", a.name, len(cs), n, what, cs)
		}
	}
}

// waitNoContainers waits until the engine holds no container of agent a,
// and fails the test saying what (and which are left) after d.
func waitNoContainers(t *testing.T, a *testAgent, d time.Duration, what string) {
	t.Helper()
	for end := time.Now().Add(d); ; time.Sleep(100 * time.Millisecond) {
		left := engineContainers(t, a.instance)
		if len(left) == 0 {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("%s: %v", what, left)
		}
	}
}

// zero and nonzero are the usual tests for waitCount.
func zero(n int) bool    { return n == 0 }
func nonzero(n int) bool { return n > 0 }

func (e *env) waitStates(agg *am.Aggregate, c am.Call, slice string, d time.Duration, what string, ok func(am.SliverStatus) bool) []am.SliverStatus {
	e.t.Helper()
	deadline := time.Now().Add(d)
	var res *am.StatusResult
	var err error
	for time.Now().Before(deadline) {
		res, err = agg.Status(e.ctx, c, []string{slice})
		if err == nil {
			all := len(res.Slivers) > 0
			for _, s := range res.Slivers {
				all = all && ok(s)
			}
			if all {
				return res.Slivers
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if res != nil {
		for _, s := range res.Slivers {
			e.t.Logf("  %s %s %s error=%q resource=%q", s.ClientID, s.Allocation, s.Operational, s.Error, s.ResourceMsg)
		}
	}
	e.t.Fatalf("%s not reached in %s (err %v)", what, d, err)
	return nil
}

func opIs(states ...am.OperationalState) func(am.SliverStatus) bool {
	return func(s am.SliverStatus) bool {
		for _, st := range states {
			if s.Operational == st {
				return true
			}
		}
		return false
	}
}

// startDataServer serves the provisioner's /data handler over TLS the way
// geni-am serve does (client certificates verified against the
// clearinghouse roots), and gives a client holding alice's certificate.
func (e *env) startDataServer(p *provision.Provisioner) {
	e.t.Helper()
	tr, _, err := credentials.LoadTrustRoots(e.chCA.Roots())
	must(e.t, err)
	srvCert := pkitest.TLS(e.t, e.chCA.Server(devpki.Options{URN: amURN}))
	mux := http.NewServeMux()
	if e.dataGate == nil {
		e.dataGate = am.NewGate(am.GateConfig{Authorizer: e.verifier, Slices: e.st})
	}
	p.UseGate(e.dataGate)
	mux.Handle("/data/", p.DataHandler())
	e.dataSrv = httptest.NewUnstartedServer(mux)
	e.dataSrv.TLS = geniapi.ServerTLSConfig(srvCert, tr, false, testLogger())
	e.dataSrv.Config.ErrorLog = log.New(io.Discard, "", 0)
	e.dataSrv.StartTLS()
	e.t.Cleanup(e.dataSrv.Close)
	e.dataCli = &http.Client{Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		Certificates: []tls.Certificate{pkitest.TLS(e.t, e.alice)}, RootCAs: e.chCA.Pool()}}}
}

// download POSTs the credential to /data/<name>.tar and returns the status,
// the body and the source header.
func (e *env) download(name string, cred []byte) (int, []byte, string) {
	e.t.Helper()
	return e.post("/data/"+name+".tar", cred)
}

// downloadLog POSTs the credential to /data/<name>.log (the output).
func (e *env) downloadLog(name string, cred []byte) (int, []byte, string) {
	e.t.Helper()
	return e.post("/data/"+name+".log", cred)
}

func (e *env) post(path string, cred []byte) (int, []byte, string) {
	e.t.Helper()
	resp, err := e.dataCli.Post(e.dataSrv.URL+path, "application/xml", bytes.NewReader(cred))
	must(e.t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	must(e.t, err)
	return resp.StatusCode, body, resp.Header.Get("X-Geniam-Data-Source")
}
