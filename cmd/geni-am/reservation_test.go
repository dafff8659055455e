package main

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestReservationOverTheWire books node3 of the served demo inventory for a
// future window with the request of docs/examples/request-book-node.xml, as
// docs/experimenter.md shows: the window in the v3 structs and the manifest,
// the calendar in ListResources, an overlapping booking refused, Provision
// accepted early. Run with -v to see the replies the guide quotes.
func TestReservationOverTheWire(t *testing.T) {
	s := serveForTest(t)
	rspec := exampleRequest(t, "request-book-node.xml")
	slice, sliceCred := s.newSlice("fieldday", 7*24*time.Hour)
	other, otherCred := s.newSlice("other", 7*24*time.Hour)
	userCred := s.userCredential()
	start := time.Now().UTC().Truncate(time.Hour).Add(26 * time.Hour)
	end := start.Add(3 * time.Hour)
	window := func(from, to time.Time) map[string]any {
		return map[string]any{"geni_start_time": from.Format(time.RFC3339), "geni_end_time": to.Format(time.RFC3339)}
	}
	show := func(what string, r map[string]any) {
		b, _ := json.MarshalIndent(r, "", "  ")
		t.Logf("%s:\n%s", what, b)
	}

	r := s.call("Allocate", slice.URN, creds(sliceCred), rspec, window(start, end))
	if opsGeniCode(r) != 0 {
		t.Fatalf("Allocate: %v", r["output"])
	}
	v := r["value"].(map[string]any)
	manifest := v["geni_rspec"].(string)
	v["geni_rspec"] = "[...]"
	show("Allocate", r)
	sl := v["geni_slivers"].([]any)[0].(map[string]any)
	if sl["geni_start_time"] != start.Format(time.RFC3339) || sl["geni_expires"] != end.Format(time.RFC3339) || sl["geni_allocation_status"] != "geni_allocated" {
		t.Errorf("the booking's status struct: %v", sl)
	}
	state := regexp.MustCompile(`<geniam:sliver_state [^>]*>`).FindString(manifest)
	t.Logf("manifest: %s", state)
	if !strings.Contains(state, `starts="`+start.Format(time.RFC3339)+`"`) {
		t.Errorf("the manifest lacks the window: %s", manifest)
	}

	ad := s.call("ListResources", creds(userCred), geni3Opts)["value"].(string)
	booked := regexp.MustCompile(`(?s)<node component_id="[^"]*node3".*?</node>`).FindString(ad)
	t.Logf("ListResources, node3:\n%s", booked)
	if !strings.Contains(booked, `<geniam:booked start="`+start.Format(time.RFC3339)+`" end="`+end.Format(time.RFC3339)+`"/>`) ||
		!strings.Contains(booked, `<available now="true"/>`) {
		t.Errorf("node3 in the advertisement:\n%s", booked)
	}

	over := s.call("Allocate", other.URN, creds(otherCred), rspec, window(start.Add(2*time.Hour), end.Add(2*time.Hour)))
	show("overlapping Allocate", over)
	if opsGeniCode(over) != 11 || !strings.Contains(over["output"].(string), "booked from "+start.Format(time.RFC3339)) {
		t.Errorf("an overlapping booking: %v", over["output"])
	}
	after := s.call("Allocate", other.URN, creds(otherCred), rspec, window(end, end.Add(time.Hour)))
	if opsGeniCode(after) != 0 {
		t.Errorf("the window right after: %v", after["output"])
	}

	prov := s.call("Provision", []any{slice.URN}, creds(sliceCred), geni3Opts)
	if opsGeniCode(prov) != 0 {
		t.Fatalf("Provision: %v", prov["output"])
	}
	prov["value"].(map[string]any)["geni_rspec"] = "[...]"
	show("Provision before the start", prov)
	ps := prov["value"].(map[string]any)["geni_slivers"].([]any)[0].(map[string]any)
	if ps["geni_operational_status"] != "geni_notready" || ps["geni_expires"] != end.Format(time.RFC3339) {
		t.Errorf("provisioned booking: %v", ps)
	}
	var next time.Time
	if err := s.pool.QueryRow(t.Context(), "SELECT next_run_at FROM jobs WHERE kind = 'provision'").Scan(&next); err != nil || !next.Equal(start) {
		t.Errorf("the provision job waits until %v (%v), want %v", next, err, start)
	}
}

// The geni client books node3 with --start-time/--end-time; the booking is
// in the JSON it prints and the calendar of `geni-am admin nodes calendar`.
func TestGeniBooksANode(t *testing.T) {
	w := newGeniWalk(t)
	request := examplePath(t, "request-book-node.xml")
	start := time.Now().UTC().Truncate(time.Hour).Add(50 * time.Hour)
	end := start.Add(2 * time.Hour)
	w.ok([]string{"-V3", "-a", "geniam", "createslice", "field"})
	r := w.ok([]string{"-V3", "-a", "geniam", "--json", "--start-time", start.Format(time.RFC3339), "--end-time", end.Format(time.RFC3339),
		"allocate", "field", request}, `"geni_start_time":"`+start.Format(time.RFC3339)+`"`, `"geni_expires":"`+end.Format(time.RFC3339)+`"`)
	t.Logf("geni allocate --start-time: %s", r.stdout)
	if out := w.s.admin("nodes", "calendar", "node3"); !strings.Contains(out, start.Format(time.RFC3339)+"  "+end.Format(time.RFC3339)+"  reservation") {
		t.Errorf("nodes calendar node3:\n%s", out)
	}
	refused := w.fails(1, []string{"-V3", "-a", "geniam", "--start-time", start.Add(time.Hour).Format(time.RFC3339), "--end-time", end.Add(time.Hour).Format(time.RFC3339),
		"allocate", "field", request}, "UNAVAILABLE")
	t.Logf("geni allocate, an overlapping window: %s", refused.stderr)
	w.ok([]string{"-V3", "-a", "geniam", "createslice", "later"})
	r = w.ok([]string{"-V3", "-a", "geniam", "--start-time", end.Format(time.RFC3339), "--end-time", end.Add(time.Hour).Format(time.RFC3339),
		"allocate", "later", request}, "booked from "+end.Format(time.RFC3339), "Booked from")
	t.Logf("geni allocate, the window after:\n%s", r.stdout)
	t.Logf("nodes calendar node3:\n%s", w.s.admin("nodes", "calendar", "node3"))
}
