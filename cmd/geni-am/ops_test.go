package main

import (
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/geniam/geniam/am/devenv"
)

// expectedCall is one call of the walkthrough and what the audit must say.
type expectedCall struct {
	name   string
	method string
	code   int64
	user   bool // the audit row names alice as the authorized user
	slice  string
}

// TestEveryCallIsAudited drives a served aggregate over TLS through the
// experimenter walkthrough of docs/experimenter.md (allocate, provision,
// status, fetch data, delete) plus each failure class, then checks one audit
// row per call with the right caller, the log id in every error output, the
// deployments view, the metrics and the health endpoints.
func TestEveryCallIsAudited(t *testing.T) {
	s := serveForTest(t)
	alice := devenv.UserURN
	slice, sliceCred := s.newSlice("walk", 24*time.Hour)
	userCred := s.userCredential()
	rspec := exampleRequest(t, "request-one-container.xml")
	var calls []expectedCall
	var replies []map[string]any
	do := func(e expectedCall, r map[string]any) map[string]any {
		t.Helper()
		if got := opsGeniCode(r); got != e.code {
			t.Fatalf("%s: geni_code %d, want %d: %v", e.name, got, e.code, r["output"])
		}
		calls, replies = append(calls, e), append(replies, r)
		return r
	}
	do(expectedCall{name: "getversion", method: "GetVersion"}, s.call("GetVersion", map[string]any{}))
	do(expectedCall{name: "listresources", method: "ListResources", user: true}, s.call("ListResources", creds(userCred), geni3Opts))
	do(expectedCall{name: "listresources without rspec version", method: "ListResources", code: 1}, s.call("ListResources", creds(userCred), map[string]any{}))
	do(expectedCall{name: "allocate without credentials", method: "Allocate", code: 3, slice: slice.URN}, s.call("Allocate", slice.URN, []any{}, rspec, map[string]any{}))
	alloc := do(expectedCall{name: "allocate", method: "Allocate", user: true, slice: slice.URN}, s.call("Allocate", slice.URN, creds(sliceCred), rspec, map[string]any{}))
	sliverURN := firstSliver(alloc)
	do(expectedCall{name: "describe", method: "Describe", user: true, slice: slice.URN}, s.call("Describe", []any{slice.URN}, creds(sliceCred), geni3Opts))
	do(expectedCall{name: "renew", method: "Renew", user: true, slice: slice.URN}, s.call("Renew", []any{slice.URN}, creds(sliceCred), time.Now().Add(time.Hour).UTC().Format(time.RFC3339), map[string]any{}))
	provOpts := map[string]any{"geni_rspec_version": geni3Opts["geni_rspec_version"],
		"geni_users": []any{map[string]any{"urn": alice, "keys": []any{"ssh-ed25519 AAAAsecretish alice"}}}}
	do(expectedCall{name: "provision", method: "Provision", user: true, slice: slice.URN}, s.call("Provision", []any{slice.URN}, creds(sliceCred), provOpts))
	do(expectedCall{name: "status", method: "Status", user: true, slice: slice.URN}, s.call("Status", []any{slice.URN}, creds(sliceCred), map[string]any{}))
	do(expectedCall{name: "fetch data", method: "PerformOperationalAction", user: true, slice: slice.URN},
		s.call("PerformOperationalAction", []any{sliverURN}, creds(sliceCred), "geniam_fetch_data", map[string]any{}))
	do(expectedCall{name: "unknown action", method: "PerformOperationalAction", code: 1, slice: slice.URN},
		s.call("PerformOperationalAction", []any{slice.URN}, creds(sliceCred), "geni_dance", map[string]any{}))
	do(expectedCall{name: "status of an unknown sliver", method: "Status", code: 12},
		s.call("Status", []any{"urn:publicid:IDN+geniam.localhost+sliver+00000000"}, creds(sliceCred), map[string]any{}))
	do(expectedCall{name: "delete", method: "Delete", user: true, slice: slice.URN}, s.call("Delete", []any{slice.URN}, creds(sliceCred), map[string]any{}))
	// Maintenance switched on by the operator: Allocate is UNAVAILABLE, Status works.
	s.admin("maintenance", "on", "kernel upgrade")
	time.Sleep(1100 * time.Millisecond) // the aggregate re-reads the switch every second
	do(expectedCall{name: "allocate in maintenance", method: "Allocate", code: 11, user: true, slice: slice.URN},
		s.call("Allocate", slice.URN, creds(sliceCred), rspec, map[string]any{}))
	s.admin("maintenance", "off")
	do(expectedCall{name: "shutdown", method: "Shutdown", user: true, slice: slice.URN}, s.call("Shutdown", slice.URN, creds(sliceCred), map[string]any{}))
	do(expectedCall{name: "status of a shut-down slice", method: "Status", code: 3, user: true, slice: slice.URN},
		s.call("Status", []any{slice.URN}, creds(sliceCred), map[string]any{}))
	do(expectedCall{name: "unknown method", method: "Dance", code: -32601}, s.call("Dance", "x"))
	do(expectedCall{name: "unreadable", method: "(unreadable)", code: -32700}, s.post([]byte("<methodCall><methodName>Status")))

	// Every error output quotes a log id.
	logIDIn := regexp.MustCompile(`log id ([0-9a-f]{12})`)
	var errorLogIDs []string
	for i, r := range replies {
		if calls[i].code == 0 {
			errorLogIDs = append(errorLogIDs, "")
			continue
		}
		m := logIDIn.FindStringSubmatch(r["output"].(string))
		if m == nil {
			t.Fatalf("%s: output %q has no log id", calls[i].name, r["output"])
		}
		errorLogIDs = append(errorLogIDs, m[1])
	}

	// One audit row per call, in order (the writer is asynchronous).
	ctx := context.Background()
	deadline := time.Now().Add(15 * time.Second)
	var n int
	for time.Now().Before(deadline) {
		if err := s.pool.QueryRow(ctx, "SELECT count(*) FROM audit_log").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n >= len(calls) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	rows, err := s.pool.Query(ctx, `SELECT method, geni_code, caller_urn, user_urn, slice_urn, log_id, output, credential_digest, options::text
		FROM audit_log ORDER BY at, id`)
	if err != nil {
		t.Fatal(err)
	}
	type auditRow struct {
		method                          string
		code                            int64
		caller, user, slice, logID, out string
		digest, options                 string
	}
	var got []auditRow
	for rows.Next() {
		var a auditRow
		if err := rows.Scan(&a.method, &a.code, &a.caller, &a.user, &a.slice, &a.logID, &a.out, &a.digest, &a.options); err != nil {
			t.Fatal(err)
		}
		got = append(got, a)
	}
	if len(got) != len(calls) {
		t.Fatalf("%d audit rows for %d calls", len(got), len(calls))
	}
	for i, e := range calls {
		a := got[i]
		if a.method != e.method || a.code != e.code {
			t.Errorf("%s: audit says %s %d", e.name, a.method, a.code)
		}
		if e.method != "(unreadable)" && a.caller != alice {
			t.Errorf("%s: caller %q", e.name, a.caller)
		}
		if e.user && (a.user != alice || a.digest == "") {
			t.Errorf("%s: user %q digest %q", e.name, a.user, a.digest)
		}
		if e.slice != "" && a.slice != e.slice {
			t.Errorf("%s: slice %q", e.name, a.slice)
		}
		if e.code != 0 && a.logID != errorLogIDs[i] {
			t.Errorf("%s: reply quotes log id %s, audit has %s", e.name, errorLogIDs[i], a.logID)
		}
		if strings.Contains(a.options, "AAAAsecretish") {
			t.Errorf("%s: SSH key in the audit options: %s", e.name, a.options)
		}
	}
	// The call is in the log under the same id.
	if !strings.Contains(s.logBuf.String(), `"log_id":"`+errorLogIDs[3]+`"`) {
		t.Errorf("log id %s not in the log", errorLogIDs[3])
	}
	// Who deployed which image where: the documented query.
	var who, node, digest string
	err = s.pool.QueryRow(ctx, "SELECT user_urn, node_name, image_sha256 FROM deployments WHERE sliver_urn = $1", sliverURN).Scan(&who, &node, &digest)
	if err != nil || who != alice || node == "" || len(digest) != 64 {
		t.Fatalf("deployments: %q %q %q %v", who, node, digest, err)
	}

	// Metrics.
	metricsText := httpGet(t, s.opsURL+"/metrics", 200)
	for _, want := range []string{
		`geniam_calls_total{method="Allocate",code="SUCCESS"} 1`,
		`geniam_calls_total{method="Allocate",code="UNAVAILABLE"} 1`,
		`geniam_calls_total{method="Status",code="SEARCHFAILED"} 1`,
		`geniam_calls_total{method="other",code="FAULT-32601"} 1`,
		`geniam_call_duration_seconds_count{method="Provision"} 1`,
		`geniam_call_duration_seconds_bucket{method="GetVersion",le="+Inf"} 1`,
		"# TYPE geniam_db_connections_open gauge",
		"geniam_reaper_batches_total",
		"geniam_maintenance 0",
		"geniam_slots_free 10\n",
		"geniam_nodes_taking_slivers 3\n",
		"geniam_slivers_live 0\n",
	} {
		if !strings.Contains(metricsText, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if !regexp.MustCompile(`geniam_credential_cache_hits_total [1-9]`).MatchString(metricsText) {
		t.Errorf("no credential cache hits in metrics:\n%s", metricsText)
	}
	if !regexp.MustCompile(`geniam_audit_written_total [1-9]`).MatchString(metricsText) {
		t.Errorf("no audit writes in metrics")
	}
	var health map[string]any
	if err := json.Unmarshal([]byte(httpGet(t, s.opsURL+"/healthz", 200)), &health); err != nil || health["database"] != "ok" {
		t.Errorf("healthz %v %v", health, err)
	}
	httpGet(t, s.opsURL+"/readyz", 200)

	// The admin audit command shows the failures of the slice with their log ids.
	if out := s.admin("audit", "--slice", slice.URN); !strings.Contains(out, errorLogIDs[3]) || !strings.Contains(out, "FORBIDDEN") {
		t.Errorf("admin audit:\n%s", out)
	}
}
