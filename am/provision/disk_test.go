package provision_test

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/amtest"
	"github.com/geniam/geniam/am/provision"
)

// TestDiskFullDeleteStillFrees: a container fills the agent's state
// filesystem (a 64 MiB tmpfs) through /data. The node shows disk pressure
// (unavailable with the free space in its reason, so the advertisement
// says it; its sliver's geni_error says it), Delete still archives and
// removes the sliver and gives the space back, and the pressure is lifted.
// Needs root to mount the tmpfs (CI runs as root); skipped otherwise.
func TestDiskFullDeleteStillFrees(t *testing.T) {
	needDocker(t)
	mnt := t.TempDir()
	if err := mountTmpfs(t, mnt, "64m"); err != nil {
		t.Skipf("skipping: cannot mount a tmpfs (needs root): %v", err)
	}
	e := newEnv(t, "127.0.0.2")
	a := e.agents[0]
	a.stop()
	a.cfg.StateDir = mnt
	a.start(t)
	_, agg := e.served("disk", nil)
	var took []time.Duration
	for round := 0; round < faultRepeats(t); round++ {
		slice, call, _ := e.slice(fmt.Sprintf("disk%d", round))
		res := e.allocateProvision(agg, call, slice, request("/demo -every 1s", [2]string{"full", "node1"}))
		e.waitStates(agg, call, slice, 60*time.Second, "geni_ready", opIs(am.Ready))
		id := provision.AgentID(res.Slivers[0].URN)
		fill(t, filepath.Join(mnt, "slivers", id, "data", "fill"))

		reason := e.waitNode("node1", 20*time.Second, func(avail bool, reason string) bool {
			return !avail && strings.HasPrefix(reason, "disk pressure on the node: ")
		})
		sts := e.waitStates(agg, call, slice, 10*time.Second, "the sliver says the node's disk is full", func(s am.SliverStatus) bool {
			return strings.HasPrefix(s.Error, "node disk pressure: ")
		})
		ad, err := agg.ListResources(e.ctx, call)
		must(t, err)
		if !strings.Contains(ad, "disk pressure on the node") {
			t.Errorf("round %d: the advertisement does not show the disk pressure", round)
		}
		if round == 0 {
			t.Logf("node: %q; sliver: %q", reason, sts[0].Error)
		}

		deleted := time.Now()
		_, err = agg.Delete(e.ctx, call, []string{slice})
		must(t, err)
		for {
			var done bool
			must(t, e.st.Pool().QueryRow(e.ctx, "SELECT EXISTS (SELECT 1 FROM jobs WHERE kind = 'delete' AND state = 'done' AND sliver_urn = $1)", res.Slivers[0].URN).Scan(&done))
			if done && len(engineContainers(t, a.instance)) == 0 {
				break
			}
			if time.Since(deleted) > 60*time.Second {
				var st, last string
				_ = e.st.Pool().QueryRow(e.ctx, "SELECT state, last_error FROM jobs WHERE kind = 'delete' ORDER BY id DESC LIMIT 1").Scan(&st, &last)
				t.Fatalf("round %d: the container is still there 60 s after Delete on a full disk (teardown %s: %s)", round, st, last)
			}
			time.Sleep(50 * time.Millisecond)
		}
		took = append(took, time.Since(deleted))
		if _, err := os.Stat(filepath.Join(mnt, "slivers", id)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("round %d: the sliver's files are still on the node: %v", round, err)
		}
		arch, err := e.st.ArchiveOf(e.ctx, res.Slivers[0].URN)
		must(t, err)
		// Archives are gzipped (a file of zeros shrinks to a few KB): look
		// for the filled file in the tar itself.
		if arch == nil || archivedSize(t, arch.Path, "fill") < 32<<20 {
			t.Errorf("round %d: archive %+v, want the filled /data in it", round, arch)
		}
		e.waitNode("node1", 20*time.Second, func(avail bool, reason string) bool { return avail && reason == "" })
	}
	t.Logf("Delete on a full disk → container, data and files gone: %s", figures(took))
}

// archivedSize is the size of the entry name in the gzipped tar at path
// (-1 if absent).
func archivedSize(t *testing.T, path, name string) int64 {
	t.Helper()
	f, err := os.Open(path)
	must(t, err)
	defer f.Close()
	zr, err := gzip.NewReader(f)
	must(t, err)
	size := int64(-1)
	amtest.TarEntries(t, zr, func(h *tar.Header, _ io.Reader) {
		if h.Name == name {
			size = h.Size
		}
	})
	return size
}

// fill writes zeros to path until the filesystem is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	must(t, err)
	defer f.Close()
	buf := make([]byte, 1<<20)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill: %v", err)
			}
			return
		}
	}
}
