package provision_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/agent/imagetest"
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
		ref, err := cliLoad()
		if err != nil {
			b.Fatal(err)
		}
		name := fmt.Sprintf("geniam-cli-bench-%s-%d", run, i)
		if err := cliRun(name, ref, "1s"); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(time.Since(start).Milliseconds()), "ms/load+run")
		b.StopTimer()
		_ = imagetest.Docker("rm", "-f", name)
		_ = imagetest.Docker("rmi", "-f", ref)
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
	_, agg := e.served("bench", func(c *provision.Config) { c.Workers = 16 })
	nodes := spread("c", n, 2)
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
		waitJobs(t, e)
		readyTotal += ready
		deletedTotal += time.Since(start)
	}
	// Means over the iterations (ReportMetric keeps only the last value given).
	b.ReportMetric(float64(readyTotal.Milliseconds())/float64(b.N), "ms/provision-to-ready")
	b.ReportMetric(float64(n*b.N)/readyTotal.Seconds(), "slivers-ready/s")
	b.ReportMetric(float64(n*b.N)/deletedTotal.Seconds(), "slivers-deleted/s")
}

// BenchmarkTutorialBurst is a class of 40 students running the same
// walkthrough at once: 40 clients each Allocate 5 containers and Provision
// them on 4 agents; the clock runs from the first Allocate until all 200
// slivers are geni_ready. Beside it, the same 200 containers started with
// `docker run -d` on the same engine, 40 at a time, after one `docker load`
// of the same tar: the floor. Reported: both times and their ratio.
//
//	go test ./am/provision/ -run XXX -bench TutorialBurst -benchtime 1x
func BenchmarkTutorialBurst(b *testing.B) {
	const clients, each, agents = 40, 5, 4
	needDocker(b)
	b.StopTimer()
	e := newEnv(b, "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5")
	_, agg := e.served("burst", func(c *provision.Config) { c.Workers = 16 })
	var burstTotal, rawTotal time.Duration
	for i := 0; i < b.N; i++ {
		type student struct {
			slice string
			call  am.Call
			req   string
		}
		students := make([]student, clients)
		for c := range students {
			var nodes [][2]string
			for j := 0; j < each; j++ {
				nodes = append(nodes, [2]string{fmt.Sprintf("c%d", j), fmt.Sprintf("node%d", (c*each+j)%agents+1)})
			}
			slice, call, _ := e.slice(fmt.Sprintf("burst%d-%d", i, c))
			students[c] = student{slice, call, request("/demo -every 5s", nodes...)}
		}
		start := time.Now()
		errs := make(chan error, clients)
		for _, s := range students {
			go func() { errs <- burstStudent(e, agg, s.call, s.slice, s.req) }()
		}
		for range students {
			if err := <-errs; err != nil {
				b.Fatal(err)
			}
		}
		burst := time.Since(start)
		for _, s := range students {
			_, err := agg.Delete(e.ctx, s.call, []string{s.slice})
			must(b, err)
		}
		waitJobs(b, e)

		raw, err := rawDockerRun(fmt.Sprintf("geniam-burst-raw-%s-%d", run, i), clients*each, clients)
		if err != nil {
			b.Fatal(err)
		}
		burstTotal += burst
		rawTotal += raw
	}
	b.ReportMetric(float64(burstTotal.Milliseconds())/float64(b.N), "ms/burst-to-ready")
	b.ReportMetric(float64(rawTotal.Milliseconds())/float64(b.N), "ms/docker-run")
	b.ReportMetric(burstTotal.Seconds()/rawTotal.Seconds(), "x-docker-run")
}

// burstStudent is one student: Allocate, Provision, then Status every
// 100 ms until every sliver is geni_ready.
func burstStudent(e *env, agg *am.Aggregate, call am.Call, slice, req string) error {
	if _, err := agg.Allocate(e.ctx, call, slice, req); err != nil {
		return fmt.Errorf("Allocate %s: %w", slice, err)
	}
	if _, err := agg.Provision(e.ctx, call, []string{slice}); err != nil {
		return fmt.Errorf("Provision %s: %w", slice, err)
	}
	deadline := time.Now().Add(10 * time.Minute)
	for time.Now().Before(deadline) {
		res, err := agg.Status(e.ctx, call, []string{slice})
		if err != nil {
			return fmt.Errorf("Status %s: %w", slice, err)
		}
		ready := len(res.Slivers) > 0
		for _, s := range res.Slivers {
			if s.Operational == am.Failed {
				return fmt.Errorf("sliver %s failed: %s", s.URN, s.Error)
			}
			ready = ready && s.Operational == am.Ready
		}
		if ready {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("slice %s not geni_ready in 10 minutes", slice)
}

// waitJobs waits until the provisioner has no queued or running job.
func waitJobs(tb testing.TB, e *env) {
	for {
		var pending int
		must(tb, e.st.Pool().QueryRow(e.ctx, "SELECT count(*) FROM jobs WHERE state IN ('queued','running')").Scan(&pending))
		if pending == 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// rawDockerRun loads the demo tar once and starts n containers of it with
// `docker run -d --network none`, parallel at a time, and returns how long
// that took; then it removes them (untimed).
func rawDockerRun(prefix string, n, parallel int) (time.Duration, error) {
	start := time.Now()
	ref, err := cliLoad()
	if err != nil {
		return 0, err
	}
	names := make(chan string, n)
	for i := 0; i < n; i++ {
		names <- fmt.Sprintf("%s-%d", prefix, i)
	}
	close(names)
	errs := make(chan error, parallel)
	for w := 0; w < parallel; w++ {
		go func() {
			var first error
			for name := range names {
				if err := cliRun(name, ref, "5s"); err != nil && first == nil {
					first = err
				}
			}
			errs <- first
		}()
	}
	for w := 0; w < parallel; w++ {
		if e := <-errs; e != nil && err == nil {
			err = e
		}
	}
	took := time.Since(start)
	ids, _ := imagetest.Output("ps", "-aq", "--filter", "name="+prefix+"-")
	if f := strings.Fields(ids); len(f) > 0 {
		_ = imagetest.Docker(append([]string{"rm", "-f"}, f...)...)
	}
	return took, err
}

// cliLoad loads the demo image's tar with `docker load` and returns the
// reference the engine gives the image.
func cliLoad() (string, error) {
	out, err := imagetest.Output("load", "-q", "-i", imageTar)
	return out[strings.LastIndex(out, " ")+1:], err
}

// cliRun starts container name of image ref with `docker run -d --network
// none`: the demo program, its heartbeat every period, writing into / (no
// /data mount here).
func cliRun(name, ref, every string) error {
	return imagetest.Docker("run", "-d", "--name", name, "--network", "none", ref, "-every", every, "-data", "/")
}
