package store_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/store"
	"github.com/geniam/geniam/store/storetest"
)

// policyAggregate is the env's aggregate with an operator policy.
func (e *env) withPolicy(p *am.OpsPolicy) *am.Aggregate {
	return e.aggregate(e.store, am.AggregateConfig{URL: "https://127.0.0.1:8001/", Operators: []string{operator}, Ops: p})
}

func TestAuditRecordsWhatTheAggregateNoted(t *testing.T) {
	e := newEnv(t)
	e.addNode("n1", 4)
	slice := sliceURN("audited")
	rec := &am.AuditRecord{At: e.clock.Now(), LogID: "abc123", Method: "Allocate", Caller: alice}
	ctx := am.WithAudit(e.ctx, rec)
	res, err := e.agg.Allocate(ctx, e.call(alice, am.Options{}), slice, request(container("c1", "n1")))
	if err != nil {
		t.Fatal(err)
	}
	prec := &am.AuditRecord{At: e.clock.Now(), LogID: "def456", Method: "Provision", Caller: alice,
		Options: am.AuditOptions(map[string]any{"geni_users": []any{map[string]any{"urn": alice, "keys": []any{"ssh-rsa AAAA"}}},
			"api_token": "s3cret", "geni_best_effort": true})}
	if _, err := e.agg.Provision(am.WithAudit(e.ctx, prec), e.call(alice, geni3), []string{slice}); err != nil {
		t.Fatal(err)
	}
	prec.Code, prec.Duration = am.Success, 3*time.Millisecond
	rec.Code, rec.Output = am.Success, ""
	if err := store.WriteAudit(e.ctx, e.pool, rec, prec); err != nil {
		t.Fatal(err)
	}
	rows, err := e.store.Audit(e.ctx, store.AuditFilter{Slice: slice})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0].LogID != "abc123" || rows[1].Method != "Provision" {
		t.Fatalf("audit rows %+v", rows)
	}
	if rows[0].User != alice || len(rows[0].Slivers) != 1 || rows[0].Slivers[0] != res.Slivers[0].URN {
		t.Errorf("allocate row %+v", rows[0])
	}
	if opts := string(rows[1].Options); strings.Contains(opts, "s3cret") || strings.Contains(opts, "ssh-rsa") || !strings.Contains(opts, `"keys": 1`) {
		t.Errorf("options not scrubbed: %s", rows[1].Options)
	}
	var node, digest, who string
	if err := e.pool.QueryRow(e.ctx, "SELECT node_name, image_sha256, user_urn FROM deployments WHERE slice_urn = $1", slice).Scan(&node, &digest, &who); err != nil {
		t.Fatal(err)
	}
	if node != "n1" || digest != strings.Repeat("ab", 32) || who != alice {
		t.Errorf("deployment %s %s %s", node, digest, who)
	}
}

func TestAuditWriterQueuesAndCountsDrops(t *testing.T) {
	e := newEnv(t)
	var logBuf bytes.Buffer
	w := store.NewAuditWriter(e.pool, slog.New(slog.NewTextHandler(&logBuf, nil)), 2)
	// Not started: the queue fills, the third record is dropped and logged.
	for i := 0; i < 3; i++ {
		w.Audit(&am.AuditRecord{At: time.Now(), LogID: "q" + string(rune('0'+i)), Method: "GetVersion"})
	}
	if st := w.Stats(); st.Dropped != 1 || st.Queued != 2 {
		t.Fatalf("stats %+v", st)
	}
	if !strings.Contains(logBuf.String(), "log_id=q2") {
		t.Errorf("drop not logged: %s", logBuf.String())
	}
	w.Start()
	w.Close(5 * time.Second)
	if st := w.Stats(); st.Written != 2 || st.Queued != 0 {
		t.Fatalf("after close: %+v", st)
	}
	if n := e.count("SELECT count(*) FROM audit_log WHERE log_id IN ('q0', 'q1')"); n != 2 {
		t.Fatalf("%d rows written", n)
	}
}

func TestAuditWriterCountsFailures(t *testing.T) {
	e := newEnv(t)
	e.sql("DROP VIEW deployments")
	e.sql("DROP TABLE audit_log")
	var logBuf bytes.Buffer
	w := store.NewAuditWriter(e.pool, slog.New(slog.NewTextHandler(&logBuf, nil)), 10)
	w.Start()
	w.Audit(&am.AuditRecord{At: time.Now(), LogID: "lost1", Method: "Status"})
	w.Close(5 * time.Second)
	if st := w.Stats(); st.Failed != 1 {
		t.Fatalf("stats %+v", st)
	}
	if !strings.Contains(logBuf.String(), "log_id=lost1") {
		t.Errorf("failure not logged with the record: %s", logBuf.String())
	}
}

func TestPolicyRefusals(t *testing.T) {
	e := newEnv(t)
	e.addNode("n1", 8)
	bob := "urn:publicid:IDN+ch.test+user+bob"
	policy := &am.OpsPolicy{MaxSliversPerUser: 2, MaxSliversPerProject: 3, UserLimits: map[string]int{bob: 5},
		Deny: []string{"urn:publicid:IDN+evil.example+user+*"}, Counter: e.store, MaintenanceFrom: e.store.Maintenance}
	agg := e.withPolicy(policy)
	alloc := func(user, slice string, ids ...string) error {
		var reqs []am.SliverRequest
		for _, id := range ids {
			reqs = append(reqs, container(id, "n1"))
		}
		_, err := agg.Allocate(e.ctx, e.call(user, am.Options{}), slice, request(reqs...))
		return err
	}
	if err := alloc(alice, sliceURN("a"), "a1", "a2"); err != nil {
		t.Fatal(err)
	}
	wantCode(t, alloc(alice, sliceURN("b"), "b1"), am.Refused, "user limit", "limit per user is 2")
	wantCode(t, alloc(bob, sliceURN("c"), "c1", "c2"), am.Refused, "project limit", "ch.test:proj", "limit per project is 3")
	// Another project is not counted against ch.test:proj.
	if err := alloc(bob, "urn:publicid:IDN+ch.test:other+slice+d", "d1", "d2"); err != nil {
		t.Fatal(err)
	}
	// Deny by pattern, for every method (not only Allocate).
	evil := "urn:publicid:IDN+evil.example+user+mallory"
	_, err := agg.Status(e.ctx, e.call(evil, am.Options{}), []string{sliceURN("a")})
	wantCode(t, err, am.Forbidden, "denied", "evil.example")
	// An allow list admits only what matches it.
	allowOnly := e.withPolicy(&am.OpsPolicy{Allow: []string{"ch.test"}})
	if _, err := allowOnly.Status(e.ctx, e.call(alice, am.Options{}), []string{sliceURN("a")}); err != nil {
		t.Fatal(err)
	}
	_, err = allowOnly.Status(e.ctx, e.call(evil, am.Options{}), []string{sliceURN("a")})
	wantCode(t, err, am.Forbidden, "allow list")

	// Maintenance, switched at runtime through the settings table.
	if err := e.store.SetSetting(e.ctx, store.SettingMaintenance, "disk replacement until 14:00 UTC", "ops"); err != nil {
		t.Fatal(err)
	}
	e.clock.Add(2 * time.Second) // past the one-second cache
	wantCode(t, alloc(bob, sliceURN("m"), "m1"), am.Unavailable, "maintenance", "disk replacement")
	if _, err := agg.Status(e.ctx, e.call(alice, am.Options{}), []string{sliceURN("a")}); err != nil {
		t.Fatalf("Status during maintenance: %v", err)
	}
	if _, err := agg.Delete(e.ctx, e.call(alice, am.Options{}), []string{sliceURN("a")}); err != nil {
		t.Fatalf("Delete during maintenance: %v", err)
	}
	if err := e.store.SetSetting(e.ctx, store.SettingMaintenance, "", "ops"); err != nil {
		t.Fatal(err)
	}
	e.clock.Add(2 * time.Second)
	if err := alloc(alice, sliceURN("after"), "x1"); err != nil {
		t.Fatalf("after maintenance: %v", err)
	}
	// The static switch from the configuration.
	static := e.withPolicy(&am.OpsPolicy{Maintenance: "moving racks"})
	_, err = static.Allocate(e.ctx, e.call(alice, am.Options{}), sliceURN("s"), request(container("s1", "n1")))
	wantCode(t, err, am.Unavailable, "moving racks")
}

func TestAdminQueries(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.addNode("n1", 2)
	if err := e.store.AddNode(ctx, store.NewNode{Name: "n2", ComponentURN: nodeURN("n2"), Capacity: 3}); err != nil {
		t.Fatal(err)
	}
	wantCode(t, e.store.AddNode(ctx, store.NewNode{Name: "n2", ComponentURN: nodeURN("n2")}), am.AlreadyExists)
	if err := e.store.SetNodeState(ctx, "n2", "drained", "fan noise"); err != nil {
		t.Fatal(err)
	}
	wantCode(t, e.store.SetNodeState(ctx, "nope", "retired", ""), am.SearchFailed)
	nodes, err := e.store.Nodes(ctx)
	if err != nil || len(nodes) != 2 || nodes[1].State != "drained" || nodes[1].Reason != "fan noise" || nodes[1].Capacity != 3 {
		t.Fatalf("nodes %+v %v", nodes, err)
	}
	res := e.allocate(sliceURN("adm"), container("c1", "n1"))
	urn := res.Slivers[0].URN
	slivers, err := e.store.AdminSlivers(ctx, store.SliverFilter{Node: "n1", User: alice})
	if err != nil || len(slivers) != 1 || slivers[0].URN != urn {
		t.Fatalf("slivers %+v %v", slivers, err)
	}
	if s, _ := e.store.AdminSlivers(ctx, store.SliverFilter{Node: "n2"}); len(s) != 0 {
		t.Fatalf("filter by node: %+v", s)
	}
	until := e.clock.Now().Add(48 * time.Hour).Truncate(time.Second)
	if err := e.store.SetSliverExpiry(ctx, urn, until, "admin:extend", "psql:ops"); err != nil {
		t.Fatal(err)
	}
	hist, err := e.store.SliverHistory(ctx, urn)
	if err != nil || len(hist) != 2 || hist[1].Event != "admin:extend" || !hist[1].Expires.Equal(until) {
		t.Fatalf("history %+v %v", hist, err)
	}
	slices, err := e.store.Slices(ctx, "")
	if err != nil || len(slices) != 1 || slices[0].Slivers != 1 {
		t.Fatalf("slices %+v %v", slices, err)
	}
	if has, _ := e.store.HasTable(ctx, "jobs"); has {
		// The provisioner's migration is applied: its table must list.
		if _, _, err := e.store.Jobs(ctx, store.JobFilter{State: "queued"}); err != nil {
			t.Fatal(err)
		}
		return
	}
	if _, _, err := e.store.Jobs(ctx, store.JobFilter{}); !store.IsNoJobs(err) {
		t.Fatalf("jobs without the table: %v", err)
	}
	e.sql("CREATE TABLE jobs (id bigserial PRIMARY KEY, kind text, state text, node_name text, args jsonb DEFAULT '{}', created_at timestamptz DEFAULT now())")
	e.sql("INSERT INTO jobs (kind, state, node_name) VALUES ('provision', 'done', 'n1'), ('start', 'queued', 'n2')")
	cols, rows, err := e.store.Jobs(ctx, store.JobFilter{})
	if err != nil || strings.Join(cols, ",") != "id,kind,state,node_name,created_at" || len(rows) != 2 || rows[0][1] != "start" {
		t.Fatalf("jobs %v %v %v", cols, rows, err)
	}
	cols, rows, err = e.store.Jobs(ctx, store.JobFilter{Node: "n1", State: "done", Slice: "ignored: no such column"})
	if err != nil || len(rows) != 1 || rows[0][1] != "provision" {
		t.Fatalf("jobs filtered %v %v %v", cols, rows, err)
	}
}

func benchRecord(i int) *am.AuditRecord {
	rec := &am.AuditRecord{At: time.Now(), LogID: "0123456789ab", Method: "Status", Caller: alice, Code: am.Success,
		Duration: time.Millisecond, Options: am.AuditOptions(map[string]any{"geni_best_effort": true})}
	rec.NoteAuthorization(&am.Authorization{User: alice, Digest: strings.Repeat("ab", 32), Issuer: "urn:publicid:IDN+ch.test+authority+sa"})
	rec.NoteSlice(sliceURN("bench"))
	rec.NoteSlivers("urn:publicid:IDN+geniam.test+sliver+0000000000000001")
	return rec
}

// BenchmarkAuditWriter: records queued by calls and written by the
// AuditWriter in batches, until the queue is drained. ns/op is per record.
func BenchmarkAuditWriter(b *testing.B) {
	st, _ := storetest.Open(b)
	w := store.NewAuditWriter(st.Pool(), slog.New(slog.NewTextHandler(io.Discard, nil)), b.N+1)
	b.ResetTimer()
	w.Start()
	for i := 0; i < b.N; i++ {
		w.Audit(benchRecord(i))
	}
	w.Close(time.Minute)
	b.StopTimer()
	if s := w.Stats(); s.Written != uint64(b.N) {
		b.Fatalf("stats %+v for %d records", s, b.N)
	}
}

// BenchmarkAuditEnqueue is what a call pays for its audit record: the
// non-blocking hand-off to the queue.
func BenchmarkAuditEnqueue(b *testing.B) {
	w := store.NewAuditWriter(nil, slog.New(slog.NewTextHandler(io.Discard, nil)), b.N+1)
	rec := benchRecord(0)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		w.Audit(rec)
	}
}
