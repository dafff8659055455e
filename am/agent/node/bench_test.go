package node_test

import (
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/geniam/geniam/am/agent"
	"github.com/geniam/geniam/am/agent/imagetest"
)

var (
	bigOnce  sync.Once
	bigImage savedImage
	bigErr   error
)

func smallImage() savedImage {
	fi, _ := os.Stat(imageTar)
	return savedImage{name: "small", tag: "geniam.test/agent/test:" + instance, tar: imageTar, digest: imageDigest, id: imageID, mb: float64(fi.Size()) / 1e6}
}

// largeImage is the test image plus a 64 MiB layer of random bytes, built
// on first use (served by the same loopback server).
func largeImage(b *testing.B) savedImage {
	bigOnce.Do(func() {
		dir := filepath.Join(testTmp, "big")
		blob := make([]byte, 64<<20)
		_, _ = rand.Read(blob)
		df := "FROM scratch\nCOPY prog /prog\nCOPY blob /blob\nENTRYPOINT [\"/prog\"]\n"
		if bigErr = progContext(dir, df, map[string][]byte{"blob": blob}); bigErr != nil {
			return
		}
		bigImage, bigErr = saveImage(dir, "64MiB", "big")
	})
	if bigErr != nil {
		b.Fatal(bigErr)
	}
	return bigImage
}

// onImages runs bench (after needDocker) once on the small test image and
// once on the 64 MiB one, and reports the image's size with its figures.
func onImages(b *testing.B, bench func(b *testing.B, im savedImage)) {
	needDocker(b)
	for _, pick := range []func(*testing.B) savedImage{func(*testing.B) savedImage { return smallImage() }, largeImage} {
		im := pick(b)
		b.Run(im.name, func(b *testing.B) {
			bench(b, im)
			b.ReportMetric(im.mb, "MB/image")
		})
	}
}

// BenchmarkFetchToRunning measures, through the agent's v2 API over mutual
// TLS, the time from the fetch request (download from a loopback HTTP
// server, digest check while streaming, load) to a running container.
// Compare with BenchmarkCLILoadRun. Each iteration starts with the image
// absent from the engine.
func BenchmarkFetchToRunning(b *testing.B) {
	onImages(b, func(b *testing.B, im savedImage) {
		a := startAgent(b, testConfig(b))
		ctx := ctxT(b, 10*time.Minute)
		req := agent.FetchRequest{URL: servedURL(im.tar), SHA256: im.digest}
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			id := fmt.Sprintf("bench-%d", i)
			st, err := a.client.FetchWait(ctx, id, req, time.Minute)
			must(b, err)
			if st.State != agent.StateFetched {
				b.Fatalf("fetch: %+v", st)
			}
			st, _, err = a.client.Run(ctx, id, agent.StartRequest{Command: []string{"/prog", "-sleep", "forever"}})
			must(b, err)
			if st.State != agent.StateRunning {
				b.Fatalf("run: %+v", st)
			}
			b.StopTimer()
			must(b, a.client.Delete(ctx, id))
			b.StartTimer()
		}
	})
}

// BenchmarkCLILoadRun is the same work done by hand with the docker CLI:
// `docker load -i` of the same tar (already on local disk: no download, no
// digest check) and `docker run -d --network none` with a /data bind.
func BenchmarkCLILoadRun(b *testing.B) {
	onImages(b, func(b *testing.B, im savedImage) {
		data := b.TempDir()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if err := imagetest.Docker("load", "-q", "-i", im.tar); err != nil {
				b.Fatal(err)
			}
			name := fmt.Sprintf("geniam-cli-bench-%s-%d", instance, i)
			if err := imagetest.Docker("run", "-d", "--name", name, "--network", "none", "--label", "geniam-cli-bench="+instance,
				"-v", data+":/data", im.tag, "-sleep", "forever"); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			_ = imagetest.Docker("rm", "-f", name)
			_ = imagetest.Docker("rmi", im.tag)
			b.StartTimer()
		}
	})
}
