package node_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/agent"
	"github.com/geniam/geniam/am/agent/node"
	"github.com/geniam/geniam/am/amtest"
)

// Tests against the real Docker engine. Each uses its own agent (own state
// directory) and sliver ids; all share the instance label of this run.

func TestFetchDigest(t *testing.T) {
	onBeds(t, func(t *testing.T, b bed) {
		a := startAgentOn(t, testConfig(t), b)
		ctx := ctxT(t, time.Minute)
		url := a.img.url

		bad := strings.Repeat("ab", 32)
		st, err := a.client.Fetch(ctx, "bad-digest", agent.FetchRequest{URL: url, SHA256: bad})
		must(t, err)
		if st.State != agent.StateFetching {
			t.Fatalf("fetch answered state %q, want fetching", st.State)
		}
		_, err = a.client.WaitFetched(ctx, "bad-digest", 50*time.Millisecond)
		if am.CodeOf(err) != am.Error || !strings.Contains(err.Error(), "digest mismatch") {
			t.Fatalf("bad digest: got %v, want a digest mismatch", err)
		}
		st, err = a.client.Status(ctx, "bad-digest")
		must(t, err)
		if st.State != agent.StateFailed || !strings.Contains(st.Reason, "digest mismatch") {
			t.Fatalf("bad digest status: %+v", st)
		}
		if a.hasImage(a.img.id) {
			t.Fatalf("the engine loaded the image although its digest was wrong")
		}

		st = a.fetched(t, "good-digest")
		if st.Image.ID != a.img.id || !st.Image.Verified || st.State != agent.StateFetched {
			t.Fatalf("good digest: %+v, want image %s verified", st.Image, a.img.id)
		}
		// Idempotent: the same fetch again does nothing new and says fetched.
		st, err = a.client.Fetch(ctx, "good-digest", agent.FetchRequest{URL: url, SHA256: a.img.sha256})
		must(t, err)
		if st.State != agent.StateFetched {
			t.Fatalf("repeated fetch: state %q", st.State)
		}
		// A missing file and a server error are failures with a reason.
		_, err = a.client.Fetch(ctx, "missing", agent.FetchRequest{URL: strings.TrimSuffix(a.img.url, "image.docker.tar") + "nope.tar", SHA256: a.img.sha256})
		must(t, err)
		_, err = a.client.WaitFetched(ctx, "missing", 50*time.Millisecond)
		if err == nil || !strings.Contains(err.Error(), "404") {
			t.Fatalf("missing tar: %v", err)
		}
		// A local file works when the agent allows files (here: tests).
		st, err = a.client.FetchWait(ctx, "local", agent.FetchRequest{URL: a.img.tar, SHA256: a.img.sha256}, time.Minute)
		must(t, err)
		if st.State != agent.StateFetched || st.Image.ID != a.img.id {
			t.Fatalf("local file fetch: %+v", st)
		}
		must(t, a.client.Delete(ctx, "local"))
		must(t, a.client.Delete(ctx, "good-digest"))
		if a.hasImage(a.img.id) {
			t.Fatalf("image still in the engine after the only sliver using it was deleted")
		}
		if _, err := a.client.Status(ctx, "good-digest"); am.CodeOf(err) != am.SearchFailed {
			t.Fatalf("status after delete: %v, want SEARCHFAILED", err)
		}
	})
}

func TestRunLifecycle(t *testing.T) {
	needDocker(t)
	cfg := testConfig(t)
	cfg.MemoryBytes, cfg.NanoCPUs = 64<<20, 5e8
	a := startAgent(t, cfg)
	ctx := ctxT(t, 2*time.Minute)
	const id = "life.1"
	a.fetched(t, id)
	req := agent.StartRequest{
		SliceURN:  "urn:publicid:IDN+geniam.test+slice+s1",
		SliverURN: "urn:publicid:IDN+geniam.test+sliver+life.1",
		Command: []string{"/prog", "-out", "hello from the container", "-err", "a warning",
			"-write", "result.txt=42", "-cat", "/geni/slice_urn", "-cat", "/geni/authorized_keys",
			"-try-write", "/geni/evil", "-try-write", "/data/fine", "-exit", "3"},
		MemoryBytes: 32 << 20, // under the agent's cap: kept
		CPUs:        4,        // over the agent's cap: cut to 0.5
		Manifest:    "<rspec/>",
		Users:       []agent.User{{URN: "urn:publicid:IDN+geniam.test+user+alice", Keys: []string{"ssh-ed25519 AAAAC3Nza alice@laptop"}}},
	}
	st, created, err := a.client.Run(ctx, id, req)
	must(t, err)
	if !created || st.Container == nil || st.Container.Network != "none" {
		t.Fatalf("run: created=%v status %+v", created, st)
	}
	st = a.waitFor(t, id, 20*time.Second, "exited", inState(agent.StateExited))
	if st.ExitCode == nil || *st.ExitCode != 3 {
		t.Fatalf("exit code %v, want 3", st.ExitCode)
	}
	for _, want := range []string{"hello from the container", req.SliceURN, "ssh-ed25519 AAAAC3Nza alice@laptop",
		"write /geni/evil: refused", "write /data/fine: ok"} {
		if !strings.Contains(st.StdoutTail, want) {
			t.Errorf("stdout tail %q lacks %q", st.StdoutTail, want)
		}
	}
	if !strings.Contains(st.StderrTail, "a warning") {
		t.Errorf("stderr tail %q", st.StderrTail)
	}
	if st.Container.StartedAt == nil || st.Container.FinishedAt == nil {
		t.Errorf("no start/finish times: %+v", st.Container)
	}
	cid := st.Container.ID
	if got := engineField("container", cid, "{{.HostConfig.NetworkMode}} {{index .Config.Labels \"org.geniam.managed-by\"}}"); got != "none geniam agent" {
		t.Errorf("network mode and label: %q", got)
	}
	if got := engineField("container", cid, "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.HostConfig.PidsLimit}}"); got != "33554432 500000000 64" {
		t.Errorf("memory, CPU and pids limits: %q", got)
	}
	// Idempotent: running again reports the existing container.
	st2, created, err := a.client.Run(ctx, id, req)
	must(t, err)
	if created || st2.Container.ID != cid {
		t.Fatalf("second run created a container: %v %s", created, st2.Container.ID)
	}

	for stream, want := range map[string]string{"stdout": "hello from the container\n", "stderr": "a warning\n"} {
		rc, err := a.client.Logs(ctx, id, stream)
		must(t, err)
		b, err := io.ReadAll(rc)
		rc.Close()
		must(t, err)
		if !strings.HasSuffix(string(b), want) {
			t.Errorf("%s log %q does not end with %q", stream, b, want)
		}
	}
	files := readTar(t, a, id)
	if files["result.txt"] != "42" || len(files) != 2 {
		t.Fatalf("data tar: %v", files)
	}
	must(t, a.client.DeleteData(ctx, id))
	if files := readTar(t, a, id); len(files) != 0 {
		t.Fatalf("data after delete: %v", files)
	}

	must(t, a.client.Kill(ctx, id))
	if _, err := a.client.Logs(ctx, id, "stdout"); am.CodeOf(err) != am.SearchFailed {
		t.Fatalf("logs without a container: %v, want SEARCHFAILED", err)
	}
	if engineHas("container", cid) {
		t.Fatalf("container %s survives kill", cid)
	}
	must(t, a.client.Kill(ctx, id)) // idempotent
	st, err = a.client.Status(ctx, id)
	must(t, err)
	if st.State != agent.StateFetched || st.Container != nil {
		t.Fatalf("after kill: %+v", st)
	}
	must(t, a.client.Delete(ctx, id))
	must(t, a.client.Delete(ctx, id)) // idempotent
}

// readTar downloads the sliver's data and returns its regular files.
func readTar(t *testing.T, a *testAgent, id string) map[string]string {
	t.Helper()
	rc, err := a.client.Data(ctxT(t, time.Minute), id)
	must(t, err)
	defer rc.Close()
	return amtest.TarFiles(t, rc)
}

// The image has no /bin/sh: the engine's exec finds that out.
func TestShellOnScratchImage(t *testing.T) {
	needDocker(t)
	a := startAgent(t, testConfig(t))
	ctx := ctxT(t, 2*time.Minute)

	// A shell command cannot start. The agent says so before starting
	// (BADARGS, with the hint to use shell="exec") and the status says
	// failed with that reason.
	a.fetched(t, "noshell")
	_, _, err := a.client.Run(ctx, "noshell", agent.StartRequest{Shell: "echo hi"})
	if am.CodeOf(err) != am.BadArgs || !strings.Contains(am.MessageOf(err), `shell="exec"`) {
		t.Fatalf("shell start on a scratch image: %v, want BADARGS with the shell=\"exec\" hint", err)
	}
	st, err := a.client.Status(ctx, "noshell")
	must(t, err)
	if st.State != agent.StateFailed || !strings.Contains(st.Reason, "/bin/sh") {
		t.Fatalf("status after failed start: %+v", st)
	}
	must(t, a.client.Delete(ctx, "noshell"))
}

// Stop and start an existing container (geni_stop / geni_start).
func TestStopStart(t *testing.T) {
	onBeds(t, func(t *testing.T, b bed) {
		a := startAgentOn(t, testConfig(t), b)
		ctx := ctxT(t, 2*time.Minute)
		a.started(t, "stopstart", agent.StartRequest{Command: []string{"/prog", "-sleep", "forever", "-append", "runs"}})
		a.waitFor(t, "stopstart", 10*time.Second, "running", inState(agent.StateRunning))
		// "running" is the engine's word for the process existing; wait until the
		// program has appended its first line, or a stop can come before it.
		a.waitData(t, "stopstart", "runs", "run\n")
		st, err := a.client.Stop(ctx, "stopstart")
		must(t, err)
		if st.State != agent.StateStopped {
			t.Fatalf("after stop: %+v", st)
		}
		st, err = a.client.Start(ctx, "stopstart")
		must(t, err)
		if st.State != agent.StateRunning {
			t.Fatalf("after start: %+v", st)
		}
		a.waitData(t, "stopstart", "runs", "run\nrun\n")
		must(t, a.client.Delete(ctx, "stopstart"))
	})
}

func TestTimeLimitAndRestartPolicy(t *testing.T) {
	onBeds(t, func(t *testing.T, b bed) {
		a := startAgentOn(t, testConfig(t), b)
		ctx := ctxT(t, 2*time.Minute)

		// A runaway with restart "always" is still killed at its time limit
		// and stays dead.
		a.started(t, "runaway", agent.StartRequest{Command: []string{"/prog", "-sleep", "forever"}, Restart: agent.RestartAlways, TimeLimitSeconds: 2})
		a.started(t, "flaky", agent.StartRequest{Command: []string{"/prog", "-append", "runs", "-exit", "1"}, Restart: agent.RestartOnFailure, MaxRetries: 2})

		st := a.waitFor(t, "runaway", 15*time.Second, "killed at the time limit", inState(agent.StateFailed))
		if !st.Container.TimeLimitKilled || !strings.Contains(st.Reason, "time limit") {
			t.Fatalf("runaway: %+v", st)
		}
		time.Sleep(1500 * time.Millisecond)
		if st, _ = a.client.Status(ctx, "runaway"); st.State != agent.StateFailed || st.Container.RestartCount != 0 {
			t.Fatalf("runaway came back after its time limit: %+v", st)
		}
		if _, err := a.client.Start(ctx, "runaway"); am.CodeOf(err) != am.Expired {
			t.Fatalf("restarting past the time limit: %v, want EXPIRED", err)
		}

		st = a.waitFor(t, "flaky", 20*time.Second, "two restarts then exited", func(st agent.Status) bool {
			return st.State == agent.StateExited && st.Container.RestartCount == 2
		})
		if *st.ExitCode != 1 {
			t.Fatalf("flaky exit code %d", *st.ExitCode)
		}
		if got := readTar(t, a, "flaky")["runs"]; got != "run\nrun\nrun\n" {
			t.Fatalf("flaky ran %q, want 3 runs", got)
		}
		must(t, a.client.Delete(ctx, "runaway"))
		must(t, a.client.Delete(ctx, "flaky"))
	})
}

func TestAgentRestartKeepsTrack(t *testing.T) {
	onBeds(t, func(t *testing.T, on bed) {
		cfg := testConfig(t)
		a := startAgentOn(t, cfg, on)
		ctx := ctxT(t, 2*time.Minute)
		cid := a.started(t, "keep", agent.StartRequest{Command: []string{"/prog", "-sleep", "forever"}, TimeLimitSeconds: 4}).Container.ID
		a.started(t, "orphan", agent.StartRequest{Command: []string{"/prog", "-sleep", "forever"}})
		a.stop()

		// The agent dies; one record is lost too. The new agent finds the
		// container by its labels and re-arms the time limit from disk.
		must(t, os.Remove(filepath.Join(cfg.StateDir, "slivers", "orphan.json")))
		b := startAgentOn(t, cfg, on)
		st, err := b.client.Status(ctx, "keep")
		must(t, err)
		if st.State != agent.StateRunning || st.Container.ID != cid || st.Image.ID != a.img.id {
			t.Fatalf("after agent restart: %+v", st)
		}
		list, err := b.client.List(ctx)
		must(t, err)
		ids := []string{}
		for _, s := range list {
			ids = append(ids, s.ID)
		}
		sort.Strings(ids)
		if strings.Join(ids, ",") != "keep,orphan" {
			t.Fatalf("list after restart: %v", ids)
		}
		if st, _ := b.client.Status(ctx, "orphan"); !st.Adopted || st.State != agent.StateRunning {
			t.Fatalf("orphan not adopted: %+v", st)
		}
		b.waitFor(t, "keep", 10*time.Second, "time limit after restart", inState(agent.StateFailed))
		must(t, b.client.Delete(ctx, "orphan"))
		must(t, b.client.Delete(ctx, "keep"))
		if list, _ := b.client.List(ctx); len(list) != 0 {
			t.Fatalf("list after delete: %+v", list)
		}
	})
}

func TestTwoSlivers(t *testing.T) {
	onBeds(t, func(t *testing.T, b bed) {
		a := startAgentOn(t, testConfig(t), b)
		ctx := ctxT(t, 2*time.Minute)
		for _, id := range []string{"one", "two"} {
			a.started(t, id, agent.StartRequest{Command: []string{"/prog", "-write", "who=" + id, "-sleep", "forever"}})
		}
		for _, id := range []string{"one", "two"} {
			a.waitFor(t, id, 10*time.Second, "running", inState(agent.StateRunning))
			a.waitData(t, id, "who", id)
		}
		// geni_update_users rewrites /geni/authorized_keys in place.
		users := []agent.User{{URN: "urn:publicid:IDN+geniam.test+user+bob", Keys: []string{"ssh-rsa AAAAB3 bob@host", "ssh-ed25519 AAAAC3 bob@other"}}}
		_, err := a.client.UpdateUsers(ctx, "two", users)
		must(t, err)
		keys, err := os.ReadFile(filepath.Join(a.cfg.StateDir, "slivers", "two", "geni", "authorized_keys"))
		must(t, err)
		if string(keys) != "ssh-rsa AAAAB3 bob@host urn:publicid:IDN+geniam.test+user+bob\nssh-ed25519 AAAAC3 bob@other urn:publicid:IDN+geniam.test+user+bob\n" {
			t.Fatalf("authorized_keys after update:\n%s", keys)
		}
		// Removing "one" keeps the image "two" still uses.
		must(t, a.client.Kill(ctx, "one"))
		must(t, a.client.RemoveImage(ctx, "one"))
		if !a.hasImage(a.img.id) {
			t.Fatalf("image removed while sliver two uses it")
		}
		if st, _ := a.client.Status(ctx, "two"); st.State != agent.StateRunning {
			t.Fatalf("two after one was removed: %+v", st)
		}
		// Removing the image while its container exists is refused.
		if err := a.client.RemoveImage(ctx, "two"); am.CodeOf(err) != am.Busy {
			t.Fatalf("remove image under a container: %v, want BUSY", err)
		}
		must(t, a.client.Delete(ctx, "two"))
		must(t, a.client.Delete(ctx, "one"))
		if a.hasImage(a.img.id) {
			t.Fatalf("image left after both slivers were deleted")
		}
	})
}

func TestV1Paths(t *testing.T) {
	onBeds(t, func(t *testing.T, b bed) {
		cfg := testConfig(t)
		cfg.ContainerStore = strings.TrimSuffix(b.img.url, "/image.docker.tar")
		a := startAgentOn(t, cfg, b)
		// The optional plain-HTTP listener (v1 only) on loopback.
		plain := httptest.NewServer(node.NewHandler(a.svc, node.HandlerOptions{V1Only: true, Logger: cfg.Logger}))
		defer plain.Close()

		get := func(path string) (*http.Response, string) {
			t.Helper()
			resp, err := http.Get(plain.URL + path)
			must(t, err)
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			must(t, err)
			return resp, string(b)
		}
		if resp, _ := get("/v1/fetchContainer/x?url=" + a.img.url); resp.StatusCode != http.StatusForbidden {
			t.Fatalf("v1 fetch with ?url= on the plain listener: %d", resp.StatusCode)
		}
		// The old agent fetched <containerStore>/NAME.docker.tar: here NAME is "image".
		if resp, body := get("/v1/fetchContainer/image?sha256=" + strings.Repeat("0", 64)); resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(body, "digest mismatch") {
			t.Fatalf("v1 fetch with a wrong digest: %d %s", resp.StatusCode, body)
		}
		if resp, body := get("/v1/fetchContainer/image?sha256=" + a.img.sha256); resp.StatusCode != http.StatusOK || !strings.Contains(body, `"OK"`) || !strings.Contains(body, a.img.id) {
			t.Fatalf("v1 fetch: %d %s", resp.StatusCode, body)
		}
		if resp, body := get("/v1/startContainer/image"); resp.StatusCode != http.StatusOK || !strings.Contains(body, `"OK"`) {
			t.Fatalf("v1 start: %d %s", resp.StatusCode, body)
		}
		// The image's default command prints "default command" and exits 0.
		st := a.waitFor(t, "image", 10*time.Second, "exited", inState(agent.StateExited))
		if !strings.Contains(st.StdoutTail, "default command") || *st.ExitCode != 0 {
			t.Fatalf("v1 container: %+v", st)
		}
		must(t, os.WriteFile(filepath.Join(a.svc.DataDir("image"), "out.csv"), []byte("1,2,3\n"), 0o644))
		resp, err := http.Get(plain.URL + "/v1/emitDataVolume/image")
		must(t, err)
		if ct := resp.Header.Get("Content-Type"); ct != "application/x-tar" {
			t.Fatalf("emitDataVolume content type %q", ct)
		}
		files := amtest.TarFiles(t, resp.Body)
		resp.Body.Close()
		if files["image/data/out.csv"] != "1,2,3\n" {
			t.Fatalf("v1 tar: %v", files)
		}
		if resp, body := get("/v1/deleteDataVolume/image"); resp.StatusCode != http.StatusOK {
			t.Fatalf("v1 deleteDataVolume: %d %s", resp.StatusCode, body)
		}
		if _, err := os.Stat(filepath.Join(a.svc.DataDir("image"), "out.csv")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("data survives deleteDataVolume: %v", err)
		}
		if resp, body := get("/v1/killContainer/image"); resp.StatusCode != http.StatusOK {
			t.Fatalf("v1 kill: %d %s", resp.StatusCode, body)
		}
		if resp, body := get("/v1/deleteContainer/image"); resp.StatusCode != http.StatusOK {
			t.Fatalf("v1 deleteContainer: %d %s", resp.StatusCode, body)
		}
		if a.hasImage(a.img.id) {
			t.Fatalf("image left after v1 deleteContainer")
		}
		if resp, _ := get("/v1/startContainer/nothing"); resp.StatusCode != http.StatusNotFound {
			t.Fatalf("v1 start of an unknown name: %d", resp.StatusCode)
		}
		if resp, _ := get("/v1/ping/"); resp.StatusCode != http.StatusOK {
			t.Fatalf("v1 ping: %d", resp.StatusCode)
		}
		// v2 is not served on the plain listener; v1 is also served over TLS.
		if resp, _ := get("/v2/slivers"); resp.StatusCode != http.StatusNotFound {
			t.Fatalf("v2 on the plain listener: %d", resp.StatusCode)
		}
		must(t, a.client.Delete(ctxT(t, time.Minute), "image"))
	})
}
