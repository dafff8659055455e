package node_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/geniam/geniam/am/agent"
	"github.com/geniam/geniam/am/agent/node"
	"github.com/geniam/geniam/am/amtest"
)

// These tests run the attacks of issue 13 as a hostile experimenter would:
// inside a real container (testdata/prog -hostile ..., an image built FROM
// scratch), against a real agent over mutual TLS. Each shows the attack
// refused or contained and logs the figure.

// stressSeconds is how long the race tests run: 5 s by default,
// GENIAM_STRESS_SECONDS for longer runs.
func stressSeconds() time.Duration {
	if n, err := strconv.Atoi(os.Getenv("GENIAM_STRESS_SECONDS")); err == nil && n > 0 {
		return time.Duration(n) * time.Second
	}
	return 5 * time.Second
}

// TestHostileSymlinkSwap (issue 13, item 1): the container keeps swapping
// the directory /data/d with a symbolic link to a host directory holding a
// secret of the same name, while the agent exports and empties /data again
// and again. No export may ever hold a byte of the host file, and emptying
// /data must never touch the host directory.
func TestHostileSymlinkSwap(t *testing.T) {
	needDocker(t)
	a := startAgent(t, testConfig(t))
	host := t.TempDir()
	const secret = "HOST-SECRET-KEY"
	must(t, os.WriteFile(filepath.Join(host, "key.pem"), []byte(secret+"\n"), 0o600))
	const id = "swapper"
	a.started(t, id, agent.StartRequest{Command: []string{"/prog", "-hostile", "swap", host}})
	a.waitFor(t, id, 20*time.Second, "swapping", func(st agent.Status) bool { return strings.Contains(st.StdoutTail, "swapping") })

	ctx := ctxT(t, stressSeconds()+time.Minute)
	var exports, insideSeen, linkSeen, clears int
	for end := time.Now().Add(stressSeconds()); time.Now().Before(end); {
		rc, err := a.client.Data(ctx, id)
		must(t, err)
		amtest.TarEntries(t, rc, func(h *tar.Header, contents io.Reader) {
			b, err := io.ReadAll(contents)
			must(t, err)
			if strings.Contains(string(b), secret) {
				t.Fatalf("export %d holds the host's file as %s", exports, h.Name)
			}
			switch {
			case h.Name == "d/key.pem":
				insideSeen++
			case h.Typeflag == tar.TypeSymlink && h.Linkname == host:
				linkSeen++
			}
		})
		rc.Close()
		exports++
		if exports%10 == 0 {
			// Emptying /data races the swaps too; the container then fails
			// its next rename and exits, so do it only near the end.
			if time.Until(end) < time.Second && clears == 0 {
				must(t, a.client.DeleteData(ctx, id))
				clears++
			}
		}
	}
	if b, err := os.ReadFile(filepath.Join(host, "key.pem")); err != nil || string(b) != secret+"\n" {
		t.Fatalf("the host directory was touched: %q, %v", b, err)
	}
	t.Logf("%d exports in %s against a container swapping /data/d for a link to a host directory: "+
		"0 bytes of the host file archived (d/key.pem from inside archived %d times, the link archived as a link %d times)",
		exports, stressSeconds(), insideSeen, linkSeen)
	if exports < 10 || insideSeen == 0 {
		t.Fatalf("the race did not run: %d exports, %d with d/key.pem", exports, insideSeen)
	}
	must(t, a.client.Delete(ctx, id))
	if _, err := os.Stat(filepath.Join(host, "key.pem")); err != nil {
		t.Fatalf("Delete followed the link: %v", err)
	}
}

// TestHostileSparseFile (issue 13, item 4): a 64 GiB sparse file written by
// the container costs its data in the archive, not 64 GiB of zeros.
func TestHostileSparseFile(t *testing.T) {
	needDocker(t)
	a := startAgent(t, testConfig(t))
	const id = "sparse"
	a.started(t, id, agent.StartRequest{Command: []string{"/prog", "-hostile", "sparse", "64"}})
	st := a.waitFor(t, id, 30*time.Second, "exited", inState(agent.StateExited))
	if !strings.Contains(st.StdoutTail, "64 GiB: <nil>") {
		t.Fatalf("the container could not write its file: %q", st.StdoutTail)
	}
	ctx := ctxT(t, time.Minute)
	rc, err := a.client.Data(ctx, id)
	must(t, err)
	cr, archived := countingReader(rc)
	var size int64
	amtest.TarEntries(t, cr, func(h *tar.Header, _ io.Reader) {
		if h.Name == "sparse.bin" {
			size = h.Size
		}
	})
	_, _ = io.Copy(io.Discard, cr)
	rc.Close()
	if size != 64<<30 {
		t.Fatalf("sparse.bin has size %d in the archive", size)
	}
	t.Logf("a 64 GiB sparse file in /data: %d bytes archived", archived())
	if archived() > 1<<20 {
		t.Fatalf("%d bytes archived", archived())
	}
	must(t, a.client.Delete(ctx, id))
}

// lastLine returns the last line of s that starts with prefix.
func lastLine(s, prefix string) string {
	out := ""
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = l
		}
	}
	return out
}

// TestHostileResources (issue 13, item 5): a fork bomb stops at the pids
// limit, a memory hog is killed at the memory limit, and the status reports
// both the limits and why the container died.
func TestHostileResources(t *testing.T) {
	needDocker(t)
	cfg := testConfig(t)
	cfg.PidsLimit = 64
	cfg.MemoryBytes = 64 << 20
	a := startAgent(t, cfg)
	ctx := ctxT(t, 2*time.Minute)

	// The sliver type asks for 32 (sliver_limits), the node allows 64.
	a.started(t, "forkbomb", agent.StartRequest{Command: []string{"/prog", "-sleep", "forever", "-hostile", "forkbomb"}, Pids: 32})
	st := a.waitFor(t, "forkbomb", 60*time.Second, "the fork bomb to stop", func(st agent.Status) bool {
		return strings.Contains(st.StdoutTail, "processes started")
	})
	line := lastLine(st.StdoutTail, "processes started: ")
	n, _ := strconv.Atoi(strings.TrimPrefix(line, "processes started: "))
	if n == 0 || n >= 32 || !strings.Contains(st.StdoutTail, "fork refused") {
		t.Fatalf("fork bomb: %q", st.StdoutTail)
	}
	if l := st.Container.Limits; l == nil || l.Pids != 32 {
		t.Fatalf("status limits %+v", st.Container.Limits)
	}
	t.Logf("fork bomb against pids limit 32: %d processes started (each a Go program with several threads), then %q", n, lastLine(st.StdoutTail, "fork refused"))
	must(t, a.client.Delete(ctx, "forkbomb"))

	a.started(t, "memhog", agent.StartRequest{Command: []string{"/prog", "-hostile", "mem", "1024"}})
	st = a.waitFor(t, "memhog", 60*time.Second, "the memory hog to end", func(st agent.Status) bool {
		return st.State == agent.StateFailed || st.State == agent.StateExited
	})
	if st.State != agent.StateFailed || !st.Container.OOMKilled || !strings.Contains(st.Reason, "out of memory") {
		t.Fatalf("memory hog: %s %q, stdout %q", st.State, st.Reason, st.StdoutTail)
	}
	if l := st.Container.Limits; l == nil || l.MemoryBytes != 64<<20 {
		t.Fatalf("status limits %+v", st.Container.Limits)
	}
	t.Logf("memory hog asking for 1024 MiB against a 64 MiB limit: %q, then %s (%s)", lastLine(st.StdoutTail, "touched"), st.State, st.Reason)
	must(t, a.client.Delete(ctx, "memhog"))
}

// TestHostilePrivileges (issue 13, items 5 and 8): device nodes and raw
// sockets are refused (MKNOD and NET_RAW dropped), the optional read-only
// root filesystem holds, and an image with a VOLUME is refused by name.
func TestHostilePrivileges(t *testing.T) {
	needDocker(t)
	cfg := testConfig(t)
	cfg.ReadOnlyRootfs = true
	a := startAgent(t, cfg)
	ctx := ctxT(t, 2*time.Minute)
	a.started(t, "priv", agent.StartRequest{Command: []string{"/prog", "-hostile", "privileged"}})
	st := a.waitFor(t, "priv", 30*time.Second, "exited", inState(agent.StateExited))
	for _, want := range []string{"mknod /data/mem: refused", "raw socket: refused", "write /prog: refused", "chown /data: ALLOWED"} {
		if !strings.Contains(st.StdoutTail, want) {
			t.Errorf("want %q in:\n%s", want, st.StdoutTail)
		}
	}
	if fi, err := os.Lstat(filepath.Join(a.svc.DataDir("priv"), "mem")); err == nil {
		t.Fatalf("a device node was created under /data: %v", fi.Mode())
	}
	t.Logf("in the container:\n%s", st.StdoutTail)
	must(t, a.client.Delete(ctx, "priv"))

	// An image that declares a VOLUME.
	dir := t.TempDir()
	must(t, progContext(dir, "FROM scratch\nCOPY prog /prog\nVOLUME /var/lib/hidden\nENTRYPOINT [\"/prog\"]\n", nil))
	im, err := saveImage(dir, "volume", "volume-"+randHex(3))
	must(t, err)
	_, err = a.client.Fetch(ctx, "volume", agent.FetchRequest{URL: servedURL(im.tar), SHA256: im.digest})
	must(t, err)
	_, err = a.client.WaitFetched(ctx, "volume", 50*time.Millisecond)
	must(t, err)
	_, _, err = a.client.Run(ctx, "volume", agent.StartRequest{})
	if err == nil || !strings.Contains(err.Error(), "VOLUME /var/lib/hidden") {
		t.Fatalf("an image with a VOLUME: %v", err)
	}
	t.Logf("an image with a VOLUME: %v", err)
	must(t, a.client.Delete(ctx, "volume"))
}

// failedFetch fetches url into id and waits for the fetch to fail; it
// returns the failure as the experimenter sees it.
func (a *testAgent) failedFetch(t *testing.T, id, url, digest string) string {
	t.Helper()
	ctx := ctxT(t, time.Minute)
	_, err := a.client.Fetch(ctx, id, agent.FetchRequest{URL: url, SHA256: digest})
	if err != nil {
		return err.Error()
	}
	st := a.waitFor(t, id, 30*time.Second, "the fetch to end", func(st agent.Status) bool { return st.State != agent.StateFetching })
	if st.State != agent.StateFailed {
		t.Fatalf("fetch of %s: %s, want failed", url, st.State)
	}
	return st.Reason
}

// TestHostileImageFetch (issue 13, items 6 and 7): the agent does not fetch
// from loopback or private addresses unless listed, follows no redirect to
// another host, never echoes what an internal service answered, and stops a
// decompression bomb while it streams into the engine.
func TestHostileImageFetch(t *testing.T) {
	needDocker(t)
	const secret = "INTERNAL-SECRET-PAGE"
	internal := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/elsewhere":
			http.Redirect(w, r, strings.Replace(imageServer.URL, "127.0.0.1", "localhost", 1)+"/image.docker.tar", http.StatusFound)
		case "/error":
			http.Error(w, secret, http.StatusInternalServerError)
		default:
			_, _ = io.WriteString(w, secret)
		}
	}))
	defer internal.Close()
	zeros := strings.Repeat("0", 64)

	// Default policy: no listed hosts, so loopback is refused before any
	// byte is sent.
	cfg := testConfig(t)
	cfg.ImageHosts = nil
	a := startAgent(t, cfg)
	got := a.failedFetch(t, "ssrf", internal.URL+"/latest/meta-data", zeros)
	if !strings.Contains(got, "refused by policy") || strings.Contains(got, secret) || strings.Contains(got, "connection refused") {
		t.Fatalf("loopback fetch: %q", got)
	}
	t.Logf("fetch from a loopback service: %q", got)

	// Listed hosts: only those, and no redirect elsewhere; an internal
	// answer is reduced to its status code; a wrong digest does not tell
	// the hash of what answered.
	cfg = testConfig(t)
	cfg.ImageHosts = []string{"127.0.0.1"}
	b := startAgent(t, cfg)
	_, err := b.client.Fetch(ctxT(t, time.Minute), "other", agent.FetchRequest{URL: "http://192.0.2.1/x.tar", SHA256: zeros})
	if err == nil || !strings.Contains(err.Error(), "refused by policy") {
		t.Fatalf("unlisted host: %v", err)
	}
	for path, want := range map[string]string{"/elsewhere": "redirect to another host", "/error": "HTTP 500", "/page": "digest mismatch"} {
		got := b.failedFetch(t, "internal"+strings.ReplaceAll(path, "/", "-"), internal.URL+path, zeros)
		if !strings.Contains(got, want) || strings.Contains(got, secret) {
			t.Fatalf("fetch %s: %q, want %q and no echo", path, got, want)
		}
		sum := sha256.Sum256([]byte(secret))
		if strings.Contains(got, hex.EncodeToString(sum[:])) {
			t.Fatalf("fetch %s echoes the page's digest: %q", path, got)
		}
		t.Logf("fetch %s: %q", path, got)
	}

	// A decompression bomb: a small image tar whose gzip layer expands to
	// 256 MiB, against a 32 MiB unpacked limit.
	cfg = testConfig(t)
	cfg.MaxImageUnpackedBytes = 32 << 20
	c := startAgent(t, cfg)
	bomb, sum := writeBomb(t, 256<<20)
	fi, err := os.Stat(bomb)
	must(t, err)
	got = c.failedFetch(t, "bomb", servedURL(bomb), sum)
	if !strings.Contains(got, "expands to more than the limit of 33554432 bytes") {
		t.Fatalf("bomb: %q", got)
	}
	t.Logf("an image tar of %d bytes that expands to 256 MiB, against a 32 MiB limit: %q", fi.Size(), got)
}

// writeBomb writes, next to the test image, a docker-save-shaped tar whose
// one layer is a gzip-compressed tar holding a file of size zeros.
func writeBomb(t *testing.T, size int64) (string, string) {
	t.Helper()
	var layer bytes.Buffer
	zw, err := gzip.NewWriterLevel(&layer, gzip.BestCompression)
	must(t, err)
	ltw := tar.NewWriter(zw)
	must(t, ltw.WriteHeader(&tar.Header{Name: "zeros", Mode: 0o644, Size: size, Typeflag: tar.TypeReg}))
	chunk := make([]byte, 1<<20)
	for n := int64(0); n < size; n += int64(len(chunk)) {
		_, err := ltw.Write(chunk)
		must(t, err)
	}
	must(t, ltw.Close())
	must(t, zw.Close())
	path := servedPath("bomb-" + randHex(3) + ".tar")
	f, err := os.Create(path)
	must(t, err)
	h := sha256.New()
	amtest.WriteTar(t, io.MultiWriter(f, h), map[string]string{
		"manifest.json": `[{"Config":"config.json","RepoTags":null,"Layers":["l/layer.tar"]}]`,
		"config.json":   `{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`,
		"l/layer.tar":   layer.String(),
	})
	must(t, f.Close())
	return path, hex.EncodeToString(h.Sum(nil))
}

// needLoopMounts skips unless the agent can make and loop-mount /data
// filesystems here (root, mkfs.ext4, mount, loop devices).
func needLoopMounts(t *testing.T) {
	t.Helper()
	if why := node.DataQuotaUsable(); why != "" {
		t.Skip("skipping: " + why)
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skipf("skipping: no loop devices: %v", err)
	}
}

// TestHostileDataQuota (issue 13, item 5): a container filling /data stops
// at its quota, the status says "over quota", the host's filesystem is not
// touched, and Delete still works and unmounts.
func TestHostileDataQuota(t *testing.T) {
	needDocker(t)
	needLoopMounts(t)
	cfg := testConfig(t)
	cfg.DataQuotaBytes = 64 << 20
	cfg.DataOwner = "100000:100000" // the root of a user-namespace-remapped engine
	a := startAgent(t, cfg)
	ctx := ctxT(t, 2*time.Minute)
	const id = "filler"
	a.started(t, id, agent.StartRequest{Command: []string{"/prog", "-sleep", "forever", "-hostile", "fill"}})
	t.Cleanup(func() { _ = exec.Command("umount", "-l", a.svc.DataDir(id)).Run() }) // if the test fails before Delete
	st := a.waitFor(t, id, 60*time.Second, "/data to be full", func(st agent.Status) bool {
		return strings.Contains(st.StdoutTail, "wrote ")
	})
	line := lastLine(st.StdoutTail, "wrote ")
	if !strings.Contains(line, "no space left on device") {
		t.Fatalf("filling /data: %q", line)
	}
	if st.Data == nil || !st.Data.OverQuota || !strings.Contains(st.Reason, "over quota") || st.Data.LimitBytes != 64<<20 {
		t.Fatalf("status of a full /data: %+v, reason %q", st.Data, st.Reason)
	}
	if st.Container.Limits == nil || st.Container.Limits.DataBytes != 64<<20 {
		t.Fatalf("limits %+v", st.Container.Limits)
	}
	t.Logf("filling /data against a 64 MiB quota: %q; status: %q", line, st.Reason)
	dir := a.svc.DataDir(id)
	if _, err := os.Lstat(filepath.Join(dir, "lost+found")); !os.IsNotExist(err) {
		t.Errorf("mkfs's lost+found is in the experimenter's /data: %v", err)
	}
	var fst syscall.Stat_t
	must(t, syscall.Stat(dir, &fst))
	if fst.Uid != 100000 || fst.Gid != 100000 {
		t.Fatalf("/data belongs to %d:%d, want data_owner 100000:100000", fst.Uid, fst.Gid)
	}
	must(t, a.client.Delete(ctx, id))
	if b, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(b), dir) {
		t.Fatalf("/data of %s is still mounted after Delete", id)
	}
	if _, err := os.Stat(filepath.Dir(dir)); !os.IsNotExist(err) {
		t.Fatalf("the sliver's directory survived Delete: %v", err)
	}
}

// TestHostileBodies (issue 13, item 8): an oversized body gets a 413 that
// names the limit, not a reset connection: announced, chunked, and from
// curl, which used to report "Connection reset by peer".
func TestHostileBodies(t *testing.T) {
	a := startAgent(t, testConfig(t))
	hc := a.httpClient(t, time.Minute)
	t0 := time.Now()
	check := func(name string, resp *http.Response, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(b), "limit of 2097152 bytes") {
			t.Fatalf("%s: %s %s", name, resp.Status, b)
		}
		t.Logf("%s (%s): %s %s", name, time.Since(t0).Round(time.Millisecond), resp.Status, strings.Join(strings.Fields(string(b)), " "))
	}
	url := a.srv.URL + "/v2/slivers/big/image"
	// Announced length: refused before the body is read.
	req, _ := http.NewRequest(http.MethodPut, url, io.LimitReader(zeroReader{}, 16<<20))
	req.ContentLength = 16 << 20
	resp, err := hc.Do(req)
	check("Content-Length 16 MiB", resp, err)
	// Chunked: refused when the reader passes the limit.
	req, _ = http.NewRequest(http.MethodPut, url, io.MultiReader(strings.NewReader(`{"url":"`), io.LimitReader(zeroReader{}, 8<<20)))
	resp, err = hc.Do(req)
	check("chunked 8 MiB", resp, err)
	if _, err := exec.LookPath("curl"); err == nil {
		f := filepath.Join(t.TempDir(), "big")
		must(t, os.WriteFile(f, make([]byte, 16<<20), 0o600))
		out, err := exec.Command("curl", "-sS", "--cacert", a.pki.caFile, "--cert", a.pki.clientCert, "--key", a.pki.clientKey,
			"-X", "PUT", "--data-binary", "@"+f, "-w", "\nHTTP %{http_code}", url).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "HTTP 413") || !strings.Contains(string(out), "limit of 2097152 bytes") {
			t.Fatalf("curl, 16 MiB: %v\n%s", err, out)
		}
		t.Logf("curl, 16 MiB: %s", strings.Join(strings.Fields(string(out)), " "))
	}
}

// zeroReader is an endless JSON string body.
type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'x' // valid inside a JSON string: the limit, not the syntax, must stop it
	}
	return len(p), nil
}
