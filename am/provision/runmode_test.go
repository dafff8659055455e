package provision_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/agent"
	"github.com/geniam/geniam/am/provision"
)

// runNode is a request node of the demo image with a <geniam:run> body
// (and optionally a services/install).
func runNode(clientID, node, run, services string) string {
	return fmt.Sprintf(`<node client_id=%q component_id="urn:publicid:IDN+geniam.test+node+%s" component_manager_id=%q>`+
		`<sliver_type name="container"><disk_image name="%s/demo.tar" geniam:sha256=%q/></sliver_type>%s%s</node>`,
		clientID, node, amURN, imageServerURL(), imageDigest, run, services)
}

func args(argv ...string) string {
	var b strings.Builder
	for _, a := range argv {
		fmt.Fprintf(&b, "<geniam:arg>%s</geniam:arg>", a)
	}
	return b.String()
}

// TestRunModes: run modes asked in the request reach the node: restart
// "always" brings a crashing command back, a time limit kills a runaway,
// and the manifest echoes what was granted; an install that cannot be
// fetched fails the sliver with the reason.
func TestRunModes(t *testing.T) {
	needDocker(t)
	e := newEnv(t, "127.0.0.2")
	_, agg := e.served("runmodes", nil)
	slice, call, _ := e.slice("runmodes")
	rs := `<rspec xmlns="http://www.geni.net/resources/rspec/3" xmlns:geniam="http://geniam.github.io/rspec/ext/geniam/1" type="request">` +
		runNode("crash", "node1", `<geniam:run restart="always">`+args("/demo", "-once", "-exit", "1")+`</geniam:run>`, "") +
		runNode("runaway", "node1", `<geniam:run time_limit="2"><geniam:env name="MODE" value="runaway"/>`+args("/demo", "-every", "1s")+`</geniam:run>`, "") +
		runNode("noinstall", "node1", "", `<services><install url="`+imageServerURL()+`/no-such.tar.gz" install_path="/opt/x"/></services>`) +
		`</rspec>`
	alloc, err := agg.Allocate(e.ctx, call, slice, rs)
	must(t, err)
	if !strings.Contains(alloc.RSpec, `<geniam:run restart="always">`) || !strings.Contains(alloc.RSpec, `time_limit="2"`) {
		t.Errorf("the manifest does not echo the granted run modes:\n%s", alloc.RSpec)
	}
	urn := map[string]string{}
	for _, s := range alloc.Slivers {
		urn[s.ClientID] = s.URN
	}
	_, err = agg.Provision(e.ctx, call, []string{slice})
	must(t, err)

	status := func(client string) am.SliverStatus {
		res, err := agg.Status(e.ctx, call, []string{urn[client]})
		must(t, err)
		return res.Slivers[0]
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		run, inst := status("runaway"), status("noinstall")
		if run.Operational == am.Failed && inst.Operational == am.Failed {
			if !strings.Contains(run.Error, "time limit of 2 s") {
				t.Errorf("runaway: geni_error %q, want the time limit", run.Error)
			}
			if !strings.Contains(inst.Error, "install of") || !strings.Contains(inst.Error, "no-such.tar.gz") {
				t.Errorf("failed install: geni_error %q, want the install and its URL", inst.Error)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("runaway %s %q, noinstall %s %q: not both failed in time", run.Operational, run.Error, inst.Operational, inst.Error)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// The crashing command is brought back again and again, and the
	// sliver stays geni_ready.
	ctx := e.ctx
	var st agent.Status
	for end := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		st, err = e.agents[0].svc.Status(ctx, provision.AgentID(urn["crash"]))
		must(t, err)
		if st.Container != nil && st.Container.RestartCount >= 2 {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("restart always: the crashing command was not restarted twice: %+v", st.Container)
		}
	}
	if s := status("crash"); s.Operational != am.Ready || st.Container.Restart != agent.RestartAlways {
		t.Errorf("crash: %s %q (restart %q); want geni_ready under restart always", s.Operational, s.ResourceMsg, st.Container.Restart)
	}
}

// TestIdleStopEndToEnd: under the operator's idle policy an idle container
// is warned about in Status, stopped (geni_notready, saying why), and
// geni_start brings it back.
func TestIdleStopEndToEnd(t *testing.T) {
	needDocker(t)
	e := newEnv(t, "127.0.0.2")
	_, agg := e.served("idle", func(c *provision.Config) { c.IdleStop, c.IdleWarn = 4*time.Second, 3*time.Second })
	slice, call, _ := e.slice("idle")
	e.allocateProvision(agg, call, slice, request("/demo -every 1h", [2]string{"a", "node1"}))
	e.waitStates(agg, call, slice, 60*time.Second, "the idle warning", func(s am.SliverStatus) bool {
		return s.Operational == am.Ready && strings.Contains(s.ResourceMsg, "idle since")
	})
	sts := e.waitStates(agg, call, slice, 30*time.Second, "stopped for idleness", opIs(am.NotReady))
	if !strings.Contains(sts[0].ResourceMsg, "idleness") {
		t.Errorf("idle stop: geni_resource_status %q", sts[0].ResourceMsg)
	}
	_, err := agg.PerformOperationalAction(e.ctx, call, []string{slice}, am.ActionStart)
	must(t, err)
	e.waitStates(agg, call, slice, 30*time.Second, "running after geni_start", func(s am.SliverStatus) bool {
		return s.Operational == am.Ready && s.ResourceMsg == "running"
	})
}
