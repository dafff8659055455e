package node_test

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/geniam/geniam/am/agent"
)

// TestEmitDataLarge streams a 512 MiB /data (a sparse file) through the
// agent and its client over mutual TLS and checks that the process did not
// allocate anywhere near the archive's size: the tar is built and sent as it
// is read. No engine is needed: the sliver exists once a fetch was asked
// for, even one that fails.
func TestEmitDataLarge(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	cfg := testConfig(t)
	a := startAgent(t, cfg)
	ctx := ctxT(t, 2*time.Minute)
	const id = "big-data"
	const size = 512 << 20
	dir := a.dataDirOf(t, ctx, id)
	f, err := os.Create(filepath.Join(dir, "big.bin"))
	must(t, err)
	must(t, f.Truncate(size))
	must(t, f.Close())

	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	rc, err := a.client.Data(ctx, id)
	must(t, err)
	name, n := oneFile(t, tar.NewReader(rc))
	rc.Close()
	runtime.ReadMemStats(&after)
	if name != "big.bin" || n != size {
		t.Fatalf("got %s with %d bytes", name, n)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > size/8 && !raceEnabled {
		t.Fatalf("allocated %d MiB to stream %d MiB", grew>>20, size>>20)
	} else {
		t.Logf("streamed %d MiB allocating %d MiB in total (server and client)", size>>20, grew>>20)
	}
}

// dataDirOf makes the sliver id known to the agent without an engine (a
// fetch creates it, even one that fails) and returns its /data directory.
func (a *testAgent) dataDirOf(t *testing.T, ctx context.Context, id string) string {
	_, err := a.client.Fetch(ctx, id, agent.FetchRequest{URL: filepath.Join(t.TempDir(), "absent.tar"), SHA256: imageDigestOr0()})
	must(t, err)
	dir := a.svc.DataDir(id)
	must(t, os.MkdirAll(dir, 0o755))
	return dir
}

// oneFile reads a tar that must hold exactly one file: its name and size.
func oneFile(t *testing.T, tr *tar.Reader) (string, int64) {
	h, err := tr.Next()
	must(t, err)
	n, err := io.Copy(io.Discard, tr)
	must(t, err)
	if _, err := tr.Next(); err != io.EOF {
		t.Fatalf("after the file: %v", err)
	}
	return h.Name, n
}

func imageDigestOr0() string {
	if imageDigest != "" {
		return imageDigest
	}
	return "0000000000000000000000000000000000000000000000000000000000000000"
}

// TestDataCompressed: the aggregate asks for /data gzipped (DataGzip) and
// gets a gzip stream of the tar; 64 MiB of written zeros cost well under a
// MiB on the wire.
func TestDataCompressed(t *testing.T) {
	cfg := testConfig(t)
	a := startAgent(t, cfg)
	ctx := ctxT(t, time.Minute)
	const id = "zeros"
	dir := a.dataDirOf(t, ctx, id)
	must(t, os.WriteFile(filepath.Join(dir, "zeros.bin"), make([]byte, 64<<20), 0o644))
	rc, err := a.client.DataGzip(ctx, id)
	must(t, err)
	defer rc.Close()
	cr, wire := countingReader(rc)
	zr, err := gzip.NewReader(cr)
	must(t, err)
	if name, n := oneFile(t, tar.NewReader(zr)); name != "zeros.bin" || n != 64<<20 {
		t.Fatalf("got %s with %d bytes", name, n)
	}
	t.Logf("64 MiB of zeros in /data: %d bytes gzipped on the wire", wire())
	if wire() > 1<<20 {
		t.Fatalf("%d bytes compressed", wire())
	}
}
