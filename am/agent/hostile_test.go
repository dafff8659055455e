package agent_test

import (
	"archive/tar"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/geniam/geniam/am/agent"
)

// These tests run the attacks of issue 13 as a hostile experimenter would:
// inside a real container (testdata/prog -hostile ..., an image built FROM
// scratch), against a real agent over mutual TLS. Each shows the attack
// refused or contained and logs the figure.

// runHostile fetches the test image into id and starts it with args.
func (a *testAgent) runHostile(t *testing.T, id string, req agent.StartRequest) agent.Status {
	t.Helper()
	a.fetched(t, id)
	st, _, err := a.client.Run(ctxT(t, time.Minute), id, req)
	must(t, err)
	return st
}

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
	a.runHostile(t, id, agent.StartRequest{Command: []string{"/prog", "-hostile", "swap", host}})
	a.waitFor(t, id, 20*time.Second, "swapping", func(st agent.Status) bool { return strings.Contains(st.StdoutTail, "swapping") })

	ctx := ctxT(t, stressSeconds()+time.Minute)
	var exports, insideSeen, linkSeen, clears int
	for end := time.Now().Add(stressSeconds()); time.Now().Before(end); {
		rc, err := a.client.Data(ctx, id)
		must(t, err)
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			must(t, err)
			b, err := io.ReadAll(tr)
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
		}
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
	a.runHostile(t, id, agent.StartRequest{Command: []string{"/prog", "-hostile", "sparse", "64"}})
	st := a.waitFor(t, id, 30*time.Second, "exited", inState(agent.StateExited))
	if !strings.Contains(st.StdoutTail, "64 GiB: <nil>") {
		t.Fatalf("the container could not write its file: %q", st.StdoutTail)
	}
	ctx := ctxT(t, time.Minute)
	rc, err := a.client.Data(ctx, id)
	must(t, err)
	cr := &countReader{r: rc}
	tr := tar.NewReader(cr)
	var size int64
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		must(t, err)
		if h.Name == "sparse.bin" {
			size = h.Size
		}
	}
	_, _ = io.Copy(io.Discard, cr)
	rc.Close()
	if size != 64<<30 {
		t.Fatalf("sparse.bin has size %d in the archive", size)
	}
	t.Logf("a 64 GiB sparse file in /data: %d bytes archived", cr.n)
	if cr.n > 1<<20 {
		t.Fatalf("%d bytes archived", cr.n)
	}
	must(t, a.client.Delete(ctx, id))
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
