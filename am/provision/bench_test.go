package provision_test

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/provision"
)

// The figures of docs/provisioning.md:
//   go test ./am/provision/ -run XXX -bench . -benchtime 1x
// BenchmarkDockerCLI is the floor: `docker load` + `docker run -d` of the
// same tar from the command line. BenchmarkProvisionReady is one sliver
// from Provision to geni_ready through the aggregate, queue, TLS and agent.
// BenchmarkProvision50 is the throughput with 50 slivers on 2 agents.

func BenchmarkDockerCLI(b *testing.B) {
	needDocker(b)
	for i := 0; i < b.N; i++ {
		start := time.Now()
		out, err := exec.Command("docker", "load", "-q", "-i", imageTar).CombinedOutput()
		if err != nil {
			b.Fatalf("docker load: %v %s", err, out)
		}
		ref := strings.TrimSpace(string(out))
		ref = ref[strings.LastIndex(ref, " ")+1:]
		name := fmt.Sprintf("geniam-cli-bench-%s-%d", run, i)
		if out, err := exec.Command("docker", "run", "-d", "--name", name, "--network", "none", ref, "-every", "1s", "-data", "/").CombinedOutput(); err != nil {
			b.Fatalf("docker run: %v %s", err, out)
		}
		b.ReportMetric(float64(time.Since(start).Milliseconds()), "ms/load+run")
		b.StopTimer()
		_ = exec.Command("docker", "rm", "-f", name).Run()
		_ = exec.Command("docker", "rmi", "-f", ref).Run()
		b.StartTimer()
	}
}

func BenchmarkProvisionReady(b *testing.B) {
	benchProvision(b, 1)
}

func BenchmarkProvision50(b *testing.B) {
	benchProvision(b, 50)
}

// benchProvision sets up one environment (database, agents, provisioner) for
// the whole benchmark: its cleanups run only when the benchmark ends, so an
// environment per iteration would pile up connections.
func benchProvision(b *testing.B, n int) {
	needDocker(b)
	b.StopTimer()
	t := b
	e := newEnv(t, "127.0.0.2", "127.0.0.3")
	p := e.provisioner("bench", func(c *provision.Config) { c.Workers = 16 })
	e.runProvisioner(p)
	agg := e.aggregate(p)
	var nodes [][2]string
	for j := 0; j < n; j++ {
		nodes = append(nodes, [2]string{fmt.Sprintf("c%d", j), fmt.Sprintf("node%d", j%2+1)})
	}
	var readyTotal, deletedTotal time.Duration
	for i := 0; i < b.N; i++ {
		slice, call, _ := e.slice(fmt.Sprintf("bench%d-%d", n, i))
		_, err := agg.Allocate(e.ctx, call, slice, request("/demo -every 5s", nodes...))
		must(t, err)
		b.StartTimer()
		start := time.Now()
		_, err = agg.Provision(e.ctx, call, []string{slice})
		must(t, err)
		e.waitStates(agg, call, slice, 5*time.Minute, "geni_ready", opIs(am.Ready))
		ready := time.Since(start)
		b.StopTimer()
		start = time.Now()
		_, err = agg.Delete(e.ctx, call, []string{slice})
		must(t, err)
		for {
			var pending int
			must(t, e.st.Pool().QueryRow(e.ctx, "SELECT count(*) FROM jobs WHERE state IN ('queued','running')").Scan(&pending))
			if pending == 0 {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		readyTotal += ready
		deletedTotal += time.Since(start)
	}
	// Means over the iterations (ReportMetric keeps only the last value given).
	b.ReportMetric(float64(readyTotal.Milliseconds())/float64(b.N), "ms/provision-to-ready")
	b.ReportMetric(float64(n*b.N)/readyTotal.Seconds(), "slivers-ready/s")
	b.ReportMetric(float64(n*b.N)/deletedTotal.Seconds(), "slivers-deleted/s")
}
