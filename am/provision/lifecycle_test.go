package provision_test

import (
	"bytes"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/amtest"
	"github.com/geniam/geniam/am/provision"
	"github.com/geniam/geniam/store"
)

// TestExpiryWarningsAndPruning: a provisioned sliver gets its 24 h and 1 h
// warnings once each (across two aggregate processes), a Renew earns new
// ones, and archives past retention are removed with their records.
func TestExpiryWarningsAndPruning(t *testing.T) {
	e := newEnv(t)
	_, err := e.st.Pool().Exec(e.ctx, `INSERT INTO nodes (name, component_urn, capacity) VALUES ('n', 'urn:publicid:IDN+geniam.test+node+n', 10)`)
	must(t, err)
	_, err = e.st.Pool().Exec(e.ctx, `INSERT INTO slices (urn) VALUES ('urn:publicid:IDN+geniam.test+slice+w')`)
	must(t, err)
	slot := 0
	insert := func(urn string, in time.Duration) {
		// The sliver and its slot in one statement (one transaction).
		_, err := e.st.Pool().Exec(e.ctx, `WITH v AS (
				INSERT INTO slivers (urn, slice_urn, node_name, sliver_type, client_id, allocation_state, operational_state, expires_at, created_by)
				VALUES ($1, 'urn:publicid:IDN+geniam.test+slice+w', 'n', 'container', $1, 'geni_provisioned', 'geni_ready',
					now() + $2 * interval '1 second', 'urn:publicid:IDN+geniam.test+user+alice') RETURNING urn)
			INSERT INTO node_slots (node_name, slot_no, sliver_urn) SELECT 'n', $3, urn FROM v`, urn, int(in.Seconds()), slot)
		must(t, err)
		slot++
	}
	insert("urn:publicid:IDN+geniam.test+sliver+soon", 30*time.Minute) // both warnings due
	insert("urn:publicid:IDN+geniam.test+sliver+today", 20*time.Hour)  // the 24 h one
	insert("urn:publicid:IDN+geniam.test+sliver+later", 72*time.Hour)  // none
	var logs [2]amtest.LogBuffer
	var ps [2]*provision.Provisioner
	for i := range ps {
		lg := slog.New(slog.NewTextHandler(&logs[i], nil))
		ps[i] = e.provisioner("warn", func(c *provision.Config) { c.Log = lg })
	}
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Add(1)
		go func(p *provision.Provisioner) { defer wg.Done(); p.Housekeep(e.ctx) }(p)
	}
	wg.Wait()
	all := logs[0].String() + logs[1].String()
	if n := strings.Count(all, "event=expiry_warning"); n != 3 {
		t.Errorf("%d warnings logged, want 3:\n%s", n, all)
	}
	for _, want := range []string{"lead=1h sliver=urn:publicid:IDN+geniam.test+sliver+soon", "lead=24h sliver=urn:publicid:IDN+geniam.test+sliver+soon",
		"lead=24h sliver=urn:publicid:IDN+geniam.test+sliver+today", "user=urn:publicid:IDN+geniam.test+user+alice"} {
		if !strings.Contains(all, want) {
			t.Errorf("no %q in the warnings:\n%s", want, all)
		}
	}
	ps[0].Housekeep(e.ctx)
	if n := strings.Count(logs[0].String()+logs[1].String(), "event=expiry_warning"); n != 3 {
		t.Errorf("a second round warned again (%d warnings)", n)
	}
	// A Renew gives a new expiry, hence new warnings when it comes near.
	_, err = e.st.Pool().Exec(e.ctx, "UPDATE slivers SET expires_at = now() + interval '50 minutes' WHERE urn LIKE '%sliver+soon'")
	must(t, err)
	ps[0].Housekeep(e.ctx)
	if n := strings.Count(logs[0].String(), "event=expiry_warning"); n < 2 {
		t.Errorf("no new warnings after a renewal:\n%s", logs[0].String())
	}

	// The belt: a sliver left configuring with no job gets one, once.
	_, err = e.st.Pool().Exec(e.ctx, "UPDATE slivers SET operational_state = 'geni_configuring' WHERE urn LIKE '%sliver+later'")
	must(t, err)
	if n, err := e.st.RequeueConfiguring(e.ctx, 0); err != nil || n != 1 {
		t.Errorf("requeue: %d %v, want 1", n, err)
	}
	if n, err := e.st.RequeueConfiguring(e.ctx, 0); err != nil || n != 0 {
		t.Errorf("second requeue: %d %v, want 0 (its job is pending)", n, err)
	}

	// Pruning: an archive past its retention goes, file and record.
	old := filepath.Join(e.archive, "old.tar")
	must(t, os.WriteFile(old, []byte("x"), 0o600))
	must(t, e.st.PutArchive(e.ctx, store.Archive{SliverURN: "urn:publicid:IDN+geniam.test+sliver+old", SliceURN: "s", NodeName: "n",
		Path: old, Bytes: 1, Final: true, ExpiresAt: time.Now().Add(-time.Second)}))
	keep := filepath.Join(e.archive, "keep.tar")
	must(t, os.WriteFile(keep, []byte("x"), 0o600))
	must(t, e.st.PutArchive(e.ctx, store.Archive{SliverURN: "urn:publicid:IDN+geniam.test+sliver+keep", SliceURN: "s", NodeName: "n",
		Path: keep, Bytes: 1, Final: true, ExpiresAt: time.Now().Add(time.Hour)}))
	ps[1].Housekeep(e.ctx)
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Errorf("the expired archive is still there: %v", err)
	}
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("the kept archive is gone: %v", err)
	}
	if a, _ := e.st.ArchiveOf(e.ctx, "urn:publicid:IDN+geniam.test+sliver+old"); a != nil {
		t.Errorf("the expired archive's record is still there: %+v", a)
	}
}

// TestExpiryArchives: the reaper's expiry goes through the same teardown as
// Delete: /data is archived, then the container and its data go.
func TestExpiryArchives(t *testing.T) {
	needDocker(t)
	e := newEnv(t, "127.0.0.2")
	p, agg := e.served("expiry", nil)
	e.startDataServer(p)
	slice, call, cred := e.slice("expiry")
	res := e.allocateProvision(agg, call, slice, request("/demo -once -exit 7", [2]string{"job", "node1"}))
	sts := e.waitStates(agg, call, slice, 60*time.Second, "the run-once command finished", func(s am.SliverStatus) bool {
		return s.Operational == am.Ready && s.ResourceMsg == "finished with exit code 7"
	})
	desc, err := agg.Describe(e.ctx, call, []string{slice})
	must(t, err)
	if !strings.Contains(desc.RSpec, `exit_code="7"`) {
		t.Errorf("the manifest does not show the exit code:\n%s", desc.RSpec)
	}
	urn := sts[0].URN
	_, err = e.st.Pool().Exec(e.ctx, "UPDATE slivers SET expires_at = now() - interval '1 second' WHERE urn = $1", urn)
	must(t, err)
	if n, err := agg.NewReaper(time.Second).Sweep(e.ctx); err != nil || n != 1 {
		t.Fatalf("reaper: %d %v", n, err)
	}
	waitFile(t, p.ArchivePath(urn), 30*time.Second)
	waitNoContainers(t, e.agents[0], 20*time.Second, "the expired sliver's container is still there")
	result := e.deleteJobResult(urn, 15*time.Second)
	if !strings.HasPrefix(result, "expired, archived") {
		t.Errorf("delete job result %q", result)
	}
	code, body, _ := e.download(provision.AgentID(res.Slivers[0].URN), cred)
	if code != 200 || !strings.Contains(untar(t, body)["hello.txt"], urn) {
		t.Errorf("the expired sliver's archive: HTTP %d, files %v", code, untar(t, body))
	}
}

// TestShutdownStopsAndKeeps: Shutdown stops the slice's containers and keeps
// them and their data.
func TestShutdownStopsAndKeeps(t *testing.T) {
	needDocker(t)
	e := newEnv(t, "127.0.0.2")
	_, agg := e.served("shutdown", nil)
	slice, call, _ := e.slice("shut")
	e.allocateProvision(agg, call, slice, request("/demo -every 1s", [2]string{"s", "node1"}))
	sts := e.waitStates(agg, call, slice, 60*time.Second, "geni_ready", opIs(am.Ready))
	must(t, agg.Shutdown(e.ctx, call, slice))
	for end := time.Now().Add(20 * time.Second); engineStatus(e.agents[0].instance) != "exited"; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("after Shutdown the container is %q, want exited", engineStatus(e.agents[0].instance))
		}
	}
	s, err := e.st.SliverByURN(e.ctx, sts[0].URN)
	must(t, err)
	if s == nil || s.Operational != am.NotReady {
		t.Fatalf("after Shutdown the sliver is %+v", s)
	}
	waitAgentFile(t, e.agents[0], provision.AgentID(s.URN), "data/hello.txt", s.URN, 5*time.Second)
}

// TestDataHandlerRefusals: what /data answers without Docker or agents.
func TestDataHandlerRefusals(t *testing.T) {
	e := newEnv(t)
	p := e.provisioner("data", nil)
	e.startDataServer(p)
	_, _, cred := e.slice("data")
	cases := []struct {
		path string
		body []byte
		want int
	}{
		{"/data/0123456789abcdef.tar", cred, http.StatusNotFound},         // no such sliver
		{"/data/..%2f..%2fetc%2fpasswd.tar", cred, http.StatusBadRequest}, // not a sliver name
		{"/data/0123456789abcdef.tar", nil, http.StatusBadRequest},        // no credential
		{"/data/0123456789abcdef", cred, http.StatusNotFound},             // not .tar
		{"/data/x.tar", bytes.Repeat([]byte("x"), 2<<20), http.StatusRequestEntityTooLarge},
		{"/data/x.tar", bytes.Repeat([]byte("x"), 32<<20), http.StatusRequestEntityTooLarge}, // answered, not reset
	}
	for _, c := range cases {
		code, body, _ := e.post(c.path, c.body)
		if code != c.want || !strings.Contains(string(body), `"error"`) {
			t.Errorf("POST %s: HTTP %d %s, want %d with a JSON error", c.path, code, body, c.want)
		}
		if c.want == http.StatusRequestEntityTooLarge && !strings.Contains(string(body), "limit of 1048576 bytes") {
			t.Errorf("POST %s of %d bytes: %s does not name the limit", c.path, len(c.body), body)
		}
	}
	// An archive of a deleted sliver is only for its slice's members.
	arch := filepath.Join(e.archive, "feedfacefeedface.tar")
	must(t, os.WriteFile(arch, []byte("not really a tar"), 0o600))
	must(t, e.st.PutArchive(e.ctx, store.Archive{SliverURN: "urn:publicid:IDN+geniam.test+sliver+feedfacefeedface",
		SliceURN: "urn:publicid:IDN+geniam.test+slice+elsewhere", NodeName: "n", Path: arch, Bytes: 16, Final: true, ExpiresAt: time.Now().Add(time.Hour)}))
	if code, body, _ := e.download("feedfacefeedface", cred); code != http.StatusForbidden || strings.Contains(string(body), "elsewhere") {
		t.Errorf("another slice's archive: HTTP %d %s (the refusal must not name that slice)", code, body)
	}
	// No client certificate: the TLS handshake itself refuses.
	anon := &http.Client{Transport: &http.Transport{TLSClientConfig: e.dataCli.Transport.(*http.Transport).TLSClientConfig.Clone()}}
	anon.Transport.(*http.Transport).TLSClientConfig.Certificates = nil
	if resp, err := anon.Post(e.dataSrv.URL+"/data/feedfacefeedface.tar", "application/xml", bytes.NewReader(cred)); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Error("a caller without a certificate got the archive")
		}
	}
}

// TestDataThroughGate: POST /data/<sliver>.tar is decided by the aggregate's
// gate (issue 15): the operator's deny list and a shut-down slice refuse it,
// and every request, refused or served, leaves an audit record.
func TestDataThroughGate(t *testing.T) {
	e := newEnv(t)
	p := e.provisioner("gate", nil)
	ops := &am.OpsPolicy{}
	auditor := &amtest.Auditor{}
	e.dataGate = am.NewGate(am.GateConfig{Authorizer: e.verifier, Slices: e.st, Ops: ops, Auditor: auditor})
	e.startDataServer(p)
	slice, _, cred := e.slice("gated")
	arch := filepath.Join(e.archive, "0badc0de0badc0de.tar")
	must(t, os.WriteFile(arch, []byte("archived data"), 0o600))
	sliver := "urn:publicid:IDN+" + authority + "+sliver+0badc0de0badc0de"
	must(t, e.st.PutArchive(e.ctx, store.Archive{SliverURN: sliver, SliceURN: slice, NodeName: "n", Path: arch,
		Bytes: 13, Final: true, ExpiresAt: time.Now().Add(time.Hour)}))

	code, body, _ := e.download("0badc0de0badc0de", cred)
	if code != http.StatusOK || string(body) != "archived data" {
		t.Fatalf("open gate: HTTP %d %s", code, body)
	}
	rec := auditor.Last()
	if rec == nil || rec.Method != "GetData" || rec.Code != am.Success || rec.Caller != e.caller.URN ||
		rec.View().SliceURN != slice || rec.View().User != e.caller.URN || len(rec.View().SliverURNs) != 1 {
		t.Fatalf("audit record of a download: %+v %+v", rec, rec.View())
	}

	ops.Deny = []string{"*+user+alice"}
	code, body, _ = e.download("0badc0de0badc0de", cred)
	if code != http.StatusForbidden || !strings.Contains(string(body), "deny") {
		t.Errorf("denied user: HTTP %d %s", code, body)
	}
	if rec := auditor.Last(); rec.Code != am.Forbidden || !strings.Contains(rec.Output, "deny") ||
		rec.LogID == "" || !strings.Contains(string(body), "(log id "+rec.LogID+")") {
		t.Errorf("audit record of a refusal: code %v output %q log id %q; the reply %s", rec.Code, rec.Output, rec.LogID, body)
	}
	ops.Deny = nil

	// Maintenance refuses new work only: downloading stays open.
	ops.Maintenance = "upgrading"
	if code, body, _ := e.download("0badc0de0badc0de", cred); code != http.StatusOK {
		t.Errorf("download in maintenance: HTTP %d %s", code, body)
	}
	ops.Maintenance = ""

	must(t, e.st.Shutdown(e.ctx, slice, "urn:publicid:IDN+test+user+op", time.Now()))
	if code, body, _ := e.download("0badc0de0badc0de", cred); code != http.StatusForbidden || !strings.Contains(string(body), "shut down") {
		t.Errorf("shut-down slice: HTTP %d %s", code, body)
	}
}

// TestArchiveTooLargeStillDeletes: a /data over archive_max_bytes is not
// kept, and Delete still removes the sliver from its node.
func TestArchiveTooLargeStillDeletes(t *testing.T) {
	needDocker(t)
	e := newEnv(t, "127.0.0.2")
	p, agg := e.served("toolarge", func(c *provision.Config) { c.ArchiveMaxBytes = 64 })
	slice, call, _ := e.slice("toolarge")
	e.allocateProvision(agg, call, slice, request("/demo -once -exit 0", [2]string{"job", "node1"}))
	sts := e.waitStates(agg, call, slice, 60*time.Second, "the run-once command finished", func(s am.SliverStatus) bool {
		return s.Operational == am.Ready && strings.HasPrefix(s.ResourceMsg, "finished")
	})
	urn := sts[0].URN
	_, err := agg.Delete(e.ctx, call, []string{slice})
	must(t, err)
	result := e.deleteJobResult(urn, 30*time.Second)
	if !strings.Contains(result, "archive_max_bytes") {
		t.Errorf("delete job result %q", result)
	}
	if _, err := os.Stat(p.ArchivePath(urn)); !os.IsNotExist(err) {
		t.Errorf("an archive over the limit was kept: %v", err)
	}
	e.checkContainers("after Delete", 0)
}
