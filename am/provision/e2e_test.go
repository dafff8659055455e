package provision_test

import (
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/metrics"
	"github.com/geniam/geniam/am/provision"
)

// TestEndToEnd is the acceptance test: two agents on two loopback
// addresses, real Docker, real PostgreSQL, real TLS and credentials.
func TestEndToEnd(t *testing.T) {
	needDocker(t)
	e := newEnv(t, "127.0.0.2", "127.0.0.3")
	p := e.provisioner("e2e", nil)
	reg := metrics.NewRegistry()
	p.RegisterMetrics(reg)
	e.runProvisioner(p)
	e.startDataServer(p)
	agg := e.aggregate(p)
	slice, call, cred := e.slice("e2e")

	rs := request("/demo -every 200ms", [2]string{"a", "node1"}, [2]string{"b", "node1"}, [2]string{"c", "node2"})
	alloc, err := agg.Allocate(e.ctx, call, slice, rs)
	must(t, err)
	if len(alloc.Slivers) != 3 {
		t.Fatalf("allocated %d slivers, want 3", len(alloc.Slivers))
	}
	start := time.Now()
	prov, err := agg.Provision(e.ctx, call, []string{slice})
	must(t, err)
	for _, s := range prov.Slivers {
		if s.Operational != am.Configuring {
			t.Errorf("Provision returned %s for %s, want geni_configuring", s.Operational, s.ClientID)
		}
	}
	if !strings.Contains(prov.RSpec, "/data/") {
		t.Errorf("the manifest lists no data URL:\n%s", prov.RSpec)
	}
	sts := e.waitStates(agg, call, slice, 60*time.Second, "geni_ready", opIs(am.Ready))
	t.Logf("Provision → geni_ready for 3 slivers on 2 nodes: %s", time.Since(start).Round(time.Millisecond))
	byClient := map[string]string{}
	for _, s := range sts {
		byClient[s.ClientID] = s.URN
		if s.ResourceMsg != "running" {
			t.Errorf("%s: geni_resource_status %q, want running", s.ClientID, s.ResourceMsg)
		}
	}
	e.checkContainers("where the placement put them", 2, 1)
	desc, err := agg.Describe(e.ctx, call, []string{slice})
	must(t, err)
	if !strings.Contains(desc.RSpec, `operational="geni_ready"`) {
		t.Errorf("Describe's manifest does not say geni_ready:\n%s", desc.RSpec)
	}

	// The container wrote into /data: download it through the aggregate.
	name := provision.AgentID(byClient["c"])
	var files map[string]string
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		code, body, src := e.download(name, cred)
		if code != http.StatusOK {
			t.Fatalf("download: HTTP %d: %s", code, body)
		}
		if !strings.HasPrefix(src, "live node2") {
			t.Errorf("download source %q, want live node2", src)
		}
		if files = untar(t, body); files["heartbeat"] != "" {
			break
		}
	}
	if !strings.Contains(files["hello.txt"], byClient["c"]) || files["heartbeat"] == "" {
		t.Fatalf("the /data tar lacks what the container wrote: %v", files)
	}
	// Without a credential, with a wrong one, or with GET: refused.
	if code, body, _ := e.download(name, []byte("<not-a-credential/>")); code != http.StatusForbidden {
		t.Errorf("a bogus credential got HTTP %d: %s", code, body)
	}
	_, _, otherCred := e.slice("other")
	if code, body, _ := e.download(name, otherCred); code != http.StatusForbidden {
		t.Errorf("another slice's credential got HTTP %d: %s", code, body)
	}
	if resp, err := e.dataCli.Get(e.dataSrv.URL + "/data/" + name + ".tar"); err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Errorf("GET: %v %v", resp.StatusCode, err)
	}

	// geni_stop, then geni_start.
	urnC := []string{byClient["c"]}
	got, err := agg.PerformOperationalAction(e.ctx, call, urnC, am.ActionStop)
	must(t, err)
	if got[0].Operational != am.Stopping {
		t.Errorf("geni_stop returned %s, want geni_stopping", got[0].Operational)
	}
	e.waitStates(agg, call, byClient["c"], 20*time.Second, "geni_notready after geni_stop", opIs(am.NotReady))
	if st := engineStatus(e.agents[1].instance); st != "exited" {
		t.Errorf("after geni_stop the container is %q, want exited", st)
	}
	_, err = agg.PerformOperationalAction(e.ctx, call, urnC, am.ActionStart)
	must(t, err)
	e.waitStates(agg, call, byClient["c"], 20*time.Second, "geni_ready after geni_start", opIs(am.Ready))
	if st := engineStatus(e.agents[1].instance); st != "running" {
		t.Errorf("after geni_start the container is %q, want running", st)
	}

	// geni_update_users rewrites the keys; geniam_fetch_data archives.
	call.Options.Users, call.Options.UsersSet = []am.User{{URN: "urn:publicid:IDN+geniam.test+user+bob", Keys: []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK0 bob"}}}, true
	_, err = agg.PerformOperationalAction(e.ctx, call, urnC, am.ActionUpdateUsers)
	must(t, err)
	call.Options.Users, call.Options.UsersSet = nil, false
	_, err = agg.PerformOperationalAction(e.ctx, call, urnC, am.ActionFetchData)
	must(t, err)
	waitFile(t, p.ArchivePath(byClient["c"]), 20*time.Second)
	keys := waitAgentFile(t, e.agents[1], name, "geni/authorized_keys", "bob", 10*time.Second)
	if !strings.Contains(keys, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK0") {
		t.Errorf("authorized_keys after geni_update_users: %q", keys)
	}

	// Delete: the slots are free at once, the data is archived, the
	// containers are gone, the archive is downloadable.
	_, err = agg.Delete(e.ctx, call, []string{slice})
	must(t, err)
	var used int
	must(t, e.st.Pool().QueryRow(e.ctx, "SELECT count(*) FROM node_slots").Scan(&used))
	if used != 0 {
		t.Errorf("%d slots still held after Delete", used)
	}
	e.waitCount(30*time.Second, 200*time.Millisecond, "jobs still pending after Delete", zero,
		"SELECT count(*) FROM jobs WHERE state IN ('queued','running')")
	var failed int
	must(t, e.st.Pool().QueryRow(e.ctx, "SELECT count(*) FROM jobs WHERE state = 'failed'").Scan(&failed))
	if failed != 0 {
		t.Errorf("%d jobs failed", failed)
	}
	e.checkContainers("after Delete", 0, 0)
	code, body, src := e.download(name, cred)
	if code != http.StatusOK || !strings.HasPrefix(src, "archive") {
		t.Fatalf("download after Delete: HTTP %d source %q: %s", code, src, body)
	}
	if files := untar(t, body); !strings.Contains(files["hello.txt"], byClient["c"]) {
		t.Errorf("the archive lacks the container's data: %v", files)
	}
	for _, c := range []string{"a", "b"} {
		if _, err := os.Stat(p.ArchivePath(byClient[c])); err != nil {
			t.Errorf("no archive of %s after Delete: %v", c, err)
		}
	}
	var exp strings.Builder
	reg.Expose(&exp)
	for _, want := range []string{`geniam_provision_jobs_total{kind="provision",outcome="done"} 3`, `geniam_provision_jobs_total{kind="delete",outcome="done"} 3`,
		`geniam_provision_job_seconds_count{kind="stop"} 1`, "geniam_provision_agents_unreachable 0"} {
		if !strings.Contains(exp.String(), want) {
			t.Errorf("metrics lack %q:\n%s", want, exp.String())
		}
	}
	// Re-Allocate on the freed node works at once.
	_, err = agg.Allocate(e.ctx, call, slice, request("", [2]string{"again", "node2"}))
	must(t, err)
}
