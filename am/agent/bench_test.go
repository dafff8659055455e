package agent_test

import (
	"fmt"
	"os/exec"
	"testing"
	"time"

	"github.com/geniam/geniam/am/agent"
)

// BenchmarkFetchToRunning measures, through the agent's v2 API over mutual
// TLS, the time from the fetch request (download from a loopback HTTP
// server, digest check, load) to a running container. Compare with
// BenchmarkCLILoadRun. Each iteration starts with the image absent.
func BenchmarkFetchToRunning(b *testing.B) {
	needDocker(b)
	a := startAgent(b, testConfig(b))
	ctx := ctxT(b, 10*time.Minute)
	req := agent.FetchRequest{URL: imageServer.URL + "/image.docker.tar", SHA256: imageDigest}
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
}

// BenchmarkCLILoadRun is the same work done by hand with the docker CLI:
// `docker load -i` of the same tar (already on local disk: no download, no
// digest check) and `docker run -d --network none` with a /data bind.
func BenchmarkCLILoadRun(b *testing.B) {
	needDocker(b)
	data := b.TempDir()
	tag := "geniam-agent-test:" + instance
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := run("docker", "load", "-q", "-i", imageTar); err != nil {
			b.Fatal(err)
		}
		name := fmt.Sprintf("geniam-cli-bench-%s-%d", instance, i)
		if err := run("docker", "run", "-d", "--name", name, "--network", "none", "--label", "geniam-cli-bench="+instance,
			"-v", data+":/data", tag, "-sleep", "forever"); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		_ = exec.Command("docker", "rm", "-f", name).Run()
		_ = exec.Command("docker", "rmi", tag).Run()
		b.StartTimer()
	}
}
