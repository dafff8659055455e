package node_test

import (
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/geniam/geniam/am/agent"
	"github.com/geniam/geniam/am/agent/imagetest"
)

// benchImage is an image tar the benchmarks load.
type benchImage struct {
	name, tag, tar, digest, id string
	mb                         float64
}

var (
	bigOnce  sync.Once
	bigImage benchImage
	bigErr   error
)

func smallImage() benchImage {
	fi, _ := os.Stat(imageTar)
	return benchImage{name: "small", tag: "geniam.test/agent/test:" + instance, tar: imageTar, digest: imageDigest, id: imageID, mb: float64(fi.Size()) / 1e6}
}

// largeImage is the test image plus a 64 MiB layer of random bytes, built
// on first use (served by the same loopback server).
func largeImage(b *testing.B) benchImage {
	bigOnce.Do(func() {
		dir := filepath.Join(testTmp, "big")
		if bigErr = os.MkdirAll(dir, 0o755); bigErr != nil {
			return
		}
		blob := make([]byte, 64<<20)
		_, _ = rand.Read(blob)
		if bigErr = os.WriteFile(filepath.Join(dir, "blob"), blob, 0o644); bigErr != nil {
			return
		}
		prog, _ := os.ReadFile(filepath.Join(testTmp, "build", "prog"))
		if bigErr = os.WriteFile(filepath.Join(dir, "prog"), prog, 0o755); bigErr != nil {
			return
		}
		df := "FROM scratch\nCOPY prog /prog\nCOPY blob /blob\nENTRYPOINT [\"/prog\"]\n"
		if bigErr = os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(df), 0o644); bigErr != nil {
			return
		}
		bigImage, bigErr = saveImage(dir, "64MiB", "big")
		if bigErr != nil {
			return
		}
	})
	if bigErr != nil {
		b.Fatal(bigErr)
	}
	return bigImage
}

// saveImage builds the image in dir, saves it as <name>.docker.tar in the
// image server's directory, removes it from the engine (a fetch loads it)
// and returns it; the run's cleanup removes it if a test loaded it.
func saveImage(dir, label, name string) (benchImage, error) {
	im := benchImage{name: label, tag: "geniam.test/agent/" + name + ":" + instance, tar: filepath.Join(imageDir, name+".docker.tar")}
	saved, err := imagetest.Save(dir, im.tag, im.tar)
	if saved.ID != "" {
		extraImages = append(extraImages, saved.ID)
	}
	im.id, im.digest, im.mb = saved.ID, saved.SHA256, float64(saved.Size)/1e6
	return im, err
}

// BenchmarkFetchToRunning measures, through the agent's v2 API over mutual
// TLS, the time from the fetch request (download from a loopback HTTP
// server, digest check while streaming, load) to a running container.
// Compare with BenchmarkCLILoadRun. Each iteration starts with the image
// absent from the engine.
func BenchmarkFetchToRunning(b *testing.B) {
	needDocker(b)
	for _, pick := range []func(*testing.B) benchImage{func(*testing.B) benchImage { return smallImage() }, largeImage} {
		im := pick(b)
		b.Run(im.name, func(b *testing.B) {
			a := startAgent(b, testConfig(b))
			ctx := ctxT(b, 10*time.Minute)
			req := agent.FetchRequest{URL: imageServer.URL + "/" + filepath.Base(im.tar), SHA256: im.digest}
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
			b.ReportMetric(im.mb, "MB/image")
		})
	}
}

// BenchmarkCLILoadRun is the same work done by hand with the docker CLI:
// `docker load -i` of the same tar (already on local disk: no download, no
// digest check) and `docker run -d --network none` with a /data bind.
func BenchmarkCLILoadRun(b *testing.B) {
	needDocker(b)
	for _, pick := range []func(*testing.B) benchImage{func(*testing.B) benchImage { return smallImage() }, largeImage} {
		im := pick(b)
		b.Run(im.name, func(b *testing.B) {
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
				_ = exec.Command("docker", "rm", "-f", name).Run()
				_ = exec.Command("docker", "rmi", im.tag).Run()
				b.StartTimer()
			}
			b.ReportMetric(im.mb, "MB/image")
		})
	}
}
