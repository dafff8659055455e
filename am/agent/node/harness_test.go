package node_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/geniam/geniam/am/agent"
	"github.com/geniam/geniam/am/agent/docker"
	"github.com/geniam/geniam/am/agent/imagetest"
	"github.com/geniam/geniam/am/agent/memruntime"
	"github.com/geniam/geniam/am/agent/node"
	"github.com/geniam/geniam/am/agent/runtimetest"
	"github.com/geniam/geniam/credentials/devpki"
	"github.com/geniam/geniam/credentials/devpki/pkitest"
)

// The test image: a static Go program (testdata/prog) in an image built
// FROM scratch, built and `docker save`d once per test run by TestMain, then
// removed from the engine so that every fetch really loads it.
var (
	dockerSkip  string // why Docker tests cannot run ("" when they can)
	imageTar    string // path of the saved tar
	imageDigest string // its sha256
	imageID     string // the image id the engine gives it
	imageDir    string // directory served over HTTP (holds the tar)
	imageServer *httptest.Server
	instance    = "test-" + randHex(4) // label scoping every container of this run
	testTmp     string                 // removed after the run
	extraImages []string               // other images built by this run (benchmarks)
)

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func TestMain(m *testing.M) {
	code := func() int {
		tmp, err := os.MkdirTemp("", "geniam-agent-test")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(tmp)
		testTmp = tmp
		flag.Parse()
		if imagetest.NoImageRun() {
			dockerSkip = "fuzzing or listing: the test image is not built"
		} else if err := buildImage(tmp); err != nil {
			dockerSkip = err.Error()
		} else {
			imageServer = httptest.NewServer(http.FileServer(http.Dir(imageDir)))
			defer imageServer.Close()
		}
		defer cleanupEngine()
		return m.Run()
	}()
	os.Exit(code)
}

// buildImage builds and saves the test image, or says why it cannot.
func buildImage(tmp string) error {
	if _, err := exec.LookPath("docker"); err != nil {
		return fmt.Errorf("no docker CLI: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := docker.New("").Version(ctx); err != nil {
		return fmt.Errorf("no Docker engine: %v", err)
	}
	build := filepath.Join(tmp, "build")
	if err := os.MkdirAll(build, 0o755); err != nil {
		return err
	}
	if err := imagetest.GoStatic(".", "github.com/geniam/geniam/am/agent/testdata/prog", filepath.Join(build, "prog")); err != nil {
		return err
	}
	dockerfile := "FROM scratch\nCOPY prog /prog\nENTRYPOINT [\"/prog\"]\nCMD [\"-out\", \"default command\"]\n"
	if err := os.WriteFile(filepath.Join(build, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		return err
	}
	imageDir = filepath.Join(tmp, "store")
	if err := os.MkdirAll(imageDir, 0o755); err != nil {
		return err
	}
	im, err := imagetest.Save(build, "geniam.test/agent/test:"+instance, filepath.Join(imageDir, "image.docker.tar"))
	imageTar, imageID, imageDigest = im.Tar, im.ID, im.SHA256
	return err
}

// cleanupEngine removes every container of this run (by its instance
// label) and the test image. Nothing else in the engine is touched.
func cleanupEngine() {
	if dockerSkip != "" {
		return
	}
	removeContainers(instance)
	imagetest.RemoveContainers("geniam-cli-bench", instance)
	for _, id := range append(extraImages, imageID) {
		if id != "" {
			_ = exec.Command("docker", "rmi", "-f", id).Run()
		}
	}
}

// removeContainers force-removes the containers whose agent-instance label
// starts with prefix (each test agent has instance "<run>-<random>").
func removeContainers(prefix string) { imagetest.RemoveContainers(agent.LabelInstance, prefix) }

// countingReader wraps r and returns a function that says how many bytes
// have been read through it (a LimitedReader that never reaches its limit).
func countingReader(r io.Reader) (io.Reader, func() int64) {
	lr := &io.LimitedReader{R: r, N: math.MaxInt64}
	return lr, func() int64 { return math.MaxInt64 - lr.N }
}

// needDocker skips the test when there is no engine, unless
// GENIAM_REQUIRE_DOCKER=1 makes that a failure.
func needDocker(tb testing.TB) {
	tb.Helper()
	imagetest.NeedDocker(tb, dockerSkip)
}

// pki is the test PKI: a CA for the aggregate and agents, the agent's server
// certificate, the aggregate's client certificate, and a stranger's from
// another CA.
type pki struct {
	dir                       string
	caFile                    string
	serverCert, serverKey     string
	clientCert, clientKey     string
	strangerCert, strangerKey string
	otherCA                   string
	clientURN                 string
}

func newPKI(tb testing.TB, dir string) *pki {
	tb.Helper()
	ca := pkitest.NewIn(tb, filepath.Join(dir, "ca"), devpki.Options{URN: "urn:publicid:IDN+geniam.test+authority+ca"})
	other := pkitest.NewIn(tb, filepath.Join(dir, "other"), devpki.Options{URN: "urn:publicid:IDN+elsewhere+authority+ca"})
	p := &pki{dir: dir, caFile: ca.CertFile, otherCA: other.CertFile, clientURN: "urn:publicid:IDN+geniam.test+authority+am"}
	p.serverCert, p.serverKey = ca.Files(ca.Server(devpki.Options{URN: "urn:publicid:IDN+geniam.test+node+agent1"}), "agent")
	p.clientCert, p.clientKey = ca.Files(ca.Issue(devpki.Options{URN: p.clientURN}), "am")
	p.strangerCert, p.strangerKey = other.Files(other.Issue(devpki.Options{URN: "urn:publicid:IDN+elsewhere+user+mallory"}), "mallory")
	return p
}

var testPKI *pki

func sharedPKI(tb testing.TB) *pki {
	if testPKI == nil {
		dir, err := os.MkdirTemp(testTmp, "pki")
		must(tb, err)
		testPKI = newPKI(tb, dir)
	}
	return testPKI
}

func must(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
}

// testAgent is one agent under test: the service, its mutual-TLS server and
// a client holding the aggregate's certificate.
type testAgent struct {
	svc    *node.Service
	srv    *httptest.Server
	client *agent.Client
	cfg    node.Config
	pki    *pki
	bed
}

// bed is what an agent under test runs on: a runtime and an image of the
// test program it can load.
type bed struct {
	rt  agent.Runtime
	img testImage
}

// testImage is an image archive served over HTTP: its URL, its path, the
// sha256 of the archive and the id the runtime gives it.
type testImage struct{ url, tar, sha256, id string }

// dockerBed is the real engine and the test program's image.
func dockerBed(tb testing.TB) bed {
	needDocker(tb)
	return bed{docker.NewRuntime(""), engineImage()}
}

// engineImage is the test program's image, built by TestMain (empty
// without an engine).
func engineImage() testImage {
	if imageServer == nil {
		return testImage{}
	}
	return testImage{imageServer.URL + "/image.docker.tar", imageTar, imageDigest, imageID}
}

// memBed is an in-memory runtime and an image of a config and a manifest,
// served by a server of its own: what the agent does with a runtime's
// answers needs no engine.
func memBed(tb testing.TB) bed {
	archive := runtimetest.FakeImage(tb, runtimetest.FakeImageConfig)
	dir := tb.TempDir()
	tar := filepath.Join(dir, "image.docker.tar")
	must(tb, os.WriteFile(tar, archive, 0o644))
	srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
	tb.Cleanup(srv.Close)
	sum, cfgSum := sha256.Sum256(archive), sha256.Sum256([]byte(runtimetest.FakeImageConfig))
	return bed{memruntime.New(), testImage{srv.URL + "/image.docker.tar", tar, hex.EncodeToString(sum[:]), "sha256:" + hex.EncodeToString(cfgSum[:])}}
}

// onBeds runs test on the in-memory runtime and, when there is an engine
// (a failure without one under GENIAM_REQUIRE_DOCKER=1), on Docker.
func onBeds(t *testing.T, test func(t *testing.T, b bed)) {
	t.Run("memruntime", func(t *testing.T) { test(t, memBed(t)) })
	t.Run("docker", func(t *testing.T) { test(t, dockerBed(t)) })
}

// hasImage reports whether the runtime holds the image.
func (b bed) hasImage(id string) bool {
	if m, ok := b.rt.(*memruntime.Runtime); ok {
		return m.HasImage(id)
	}
	return engineHas("image", id)
}

// testConfig is a fresh agent configuration with its own state directory
// and instance label, so no test adopts another's containers. The test's
// containers are removed when it ends, pass or fail.
func testConfig(tb testing.TB) node.Config {
	inst := instance + "-" + randHex(3)
	if dockerSkip == "" {
		tb.Cleanup(func() { removeContainers(inst) })
	}
	return node.Config{
		StateDir:        tb.TempDir(),
		Instance:        inst,
		AllowFileImages: true,
		ImageHosts:      []string{"127.0.0.1"}, // the loopback image server, listed explicitly
		FetchTimeout:    2 * time.Minute,
		StopGrace:       2 * time.Second,
		PidsLimit:       64,
		Logger:          testLogger(tb),
	}
}

func testLogger(tb testing.TB) *slog.Logger {
	if os.Getenv("GENIAM_AGENT_TEST_LOG") == "1" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func startAgent(tb testing.TB, cfg node.Config) *testAgent {
	tb.Helper()
	return startAgentOn(tb, cfg, bed{docker.NewRuntime(""), engineImage()})
}

// startAgentOn starts an agent on the bed b (memBed for the tests that
// need no engine).
func startAgentOn(tb testing.TB, cfg node.Config, b bed) *testAgent {
	tb.Helper()
	p := sharedPKI(tb)
	svc, err := node.New(cfg, b.rt)
	must(tb, err)
	srv := httptest.NewUnstartedServer(node.NewHandler(svc, node.HandlerOptions{Logger: cfg.Logger}))
	srv.TLS, err = node.ServerTLSConfig(p.serverCert, p.serverKey, p.caFile)
	must(tb, err)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // handshake refusals are expected
	srv.StartTLS()
	ctls, err := agent.ClientTLSConfig(p.clientCert, p.clientKey, p.caFile)
	must(tb, err)
	a := &testAgent{svc: svc, srv: srv, client: agent.NewClient(srv.URL, ctls), cfg: cfg, pki: p, bed: b}
	tb.Cleanup(a.stop)
	return a
}

func (a *testAgent) stop() {
	a.client.CloseIdleConnections()
	a.srv.Close()
	a.svc.Close()
}

func ctxT(tb testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	tb.Cleanup(cancel)
	return ctx
}

// fetched fetches the test image into sliver id over the API and waits.
func (a *testAgent) fetched(tb testing.TB, id string) agent.Status {
	tb.Helper()
	ctx := ctxT(tb, time.Minute)
	_, err := a.client.Fetch(ctx, id, agent.FetchRequest{URL: a.img.url, SHA256: a.img.sha256})
	must(tb, err)
	st, err := a.client.WaitFetched(ctx, id, 50*time.Millisecond)
	must(tb, err)
	return st
}

// waitFor polls the sliver's status until ok says yes or the time is up.
func (a *testAgent) waitFor(tb testing.TB, id string, d time.Duration, what string, ok func(agent.Status) bool) agent.Status {
	tb.Helper()
	ctx := ctxT(tb, d+5*time.Second)
	deadline := time.Now().Add(d)
	var st agent.Status
	var err error
	for time.Now().Before(deadline) {
		st, err = a.client.Status(ctx, id)
		if err == nil && ok(st) {
			return st
		}
		time.Sleep(100 * time.Millisecond)
	}
	tb.Fatalf("sliver %s: %s not reached in %s; last status %+v (err %v)", id, what, d, st, err)
	return st
}

// waitData polls the sliver's data until file name has the wanted content.
func (a *testAgent) waitData(t *testing.T, id, name, want string) {
	t.Helper()
	var got map[string]string
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if got = readTar(t, a, id); got[name] == want {
			return
		}
	}
	t.Fatalf("sliver %s: /data/%s never became %q; data %v", id, name, want, got)
}

func inState(s agent.State) func(agent.Status) bool {
	return func(st agent.Status) bool { return st.State == s }
}

// engineHas reports whether the engine knows the container or image ref.
func engineHas(kind, ref string) bool {
	return exec.Command("docker", kind, "inspect", ref).Run() == nil
}

func engineField(kind, ref, format string) string {
	out, _ := exec.Command("docker", kind, "inspect", "-f", format, ref).Output()
	return strings.TrimSpace(string(out))
}
