package node_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"io"
	"log"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
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
	os.Exit(imagetest.Main(m, "geniam-agent-test", &testTmp, &dockerSkip, func() (func(), error) {
		if err := buildImage(testTmp); err != nil {
			return nil, err
		}
		imageServer = httptest.NewServer(http.FileServer(http.Dir(imageDir)))
		return func() { cleanupEngine(); imageServer.Close() }, nil
	}))
}

// buildImage builds and saves the test image.
func buildImage(tmp string) error {
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
	im, err := imagetest.Save(build, "geniam.test/agent/test:"+instance, servedPath("image.docker.tar"))
	imageTar, imageID, imageDigest = im.Tar, im.ID, im.SHA256
	return err
}

// savedImage is an image tar next to the test image, served by the image
// server: its label in figures, tag, path, sha256, engine id and size.
type savedImage struct {
	name, tag, tar, digest, id string
	mb                         float64
}

// saveImage builds the image in dir, saves it as <name>.docker.tar in the
// image server's directory, removes it from the engine (a fetch loads it)
// and returns it; the run's cleanup removes it if a test loaded it.
func saveImage(dir, label, name string) (savedImage, error) {
	im := savedImage{name: label, tag: "geniam.test/agent/" + name + ":" + instance, tar: servedPath(name + ".docker.tar")}
	saved, err := imagetest.Save(dir, im.tag, im.tar)
	if saved.ID != "" {
		extraImages = append(extraImages, saved.ID)
	}
	im.id, im.digest, im.mb = saved.ID, saved.SHA256, float64(saved.Size)/1e6
	return im, err
}

// progContext writes a docker build context into dir (made if need be):
// the test program as prog, files (name to contents) beside it, all
// executable, and the Dockerfile df.
func progContext(dir, df string, files map[string][]byte) error {
	prog, err := os.ReadFile(filepath.Join(testTmp, "build", "prog"))
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o755); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "prog"), prog, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(df), 0o644)
}

// servedPath is where a file named name goes for the image server to
// serve it, and servedURL the URL it serves the file at path from.
func servedPath(name string) string { return filepath.Join(imageDir, name) }
func servedURL(path string) string  { return imageServer.URL + "/" + filepath.Base(path) }

// cleanupEngine removes every container of this run (by its instance
// label) and the test image. Nothing else in the engine is touched.
func cleanupEngine() {
	removeContainers(instance)
	imagetest.RemoveContainers("geniam-cli-bench", instance)
	for _, id := range append(extraImages, imageID) {
		if id != "" {
			_ = imagetest.Docker("rmi", "-f", id)
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

// clientTLS is the aggregate's side of mutual TLS with an agent: its
// client certificate, and ca as the issuer it trusts agents from.
func (p *pki) clientTLS(tb testing.TB, ca string) *tls.Config {
	tb.Helper()
	c, err := agent.ClientTLSConfig(p.clientCert, p.clientKey, ca)
	must(tb, err)
	return c
}

// serve serves h as an agent does: over TLS with the agent's certificate,
// asking for a client certificate from the CA.
func (p *pki) serve(tb testing.TB, h http.Handler) *httptest.Server {
	tb.Helper()
	srv := httptest.NewUnstartedServer(h)
	var err error
	srv.TLS, err = node.ServerTLSConfig(p.serverCert, p.serverKey, p.caFile)
	must(tb, err)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // handshake refusals are expected
	srv.StartTLS()
	return srv
}

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
	return testImage{servedURL(imageTar), imageTar, imageDigest, imageID}
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
	return slog.New(slog.DiscardHandler)
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
	srv := p.serve(tb, node.NewHandler(svc, node.HandlerOptions{Logger: cfg.Logger}))
	a := &testAgent{svc: svc, srv: srv, client: agent.NewClient(srv.URL, p.clientTLS(tb, p.caFile)), cfg: cfg, pki: p, bed: b}
	tb.Cleanup(a.stop)
	return a
}

// httpClient is a plain HTTP client holding the aggregate's certificate,
// for requests the agent's Client would not send.
func (a *testAgent) httpClient(tb testing.TB, timeout time.Duration) *http.Client {
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: a.pki.clientTLS(tb, a.pki.caFile)}, Timeout: timeout}
	tb.Cleanup(c.CloseIdleConnections)
	return c
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

// started fetches the test image into sliver id and runs req in it, over
// the API.
func (a *testAgent) started(tb testing.TB, id string, req agent.StartRequest) agent.Status {
	tb.Helper()
	a.fetched(tb, id)
	st, _, err := a.client.Run(ctxT(tb, time.Minute), id, req)
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
	return imagetest.Docker(kind, "inspect", ref) == nil
}

func engineField(kind, ref, format string) string {
	out, _ := imagetest.Output(kind, "inspect", "-f", format, ref)
	return out
}
