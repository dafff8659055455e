package provision_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/provision"
)

// A reservation provisioned before its start: nothing runs on the node until
// the start, then the container runs; at the end the reaper deletes it and
// /data is archived (real agent, real Docker engine). The window is a few
// seconds long.
func TestReservationRunsInItsWindow(t *testing.T) {
	needDocker(t)
	e := newEnv(t, "127.0.0.2")
	_, err := e.st.Pool().Exec(e.ctx, "UPDATE nodes SET sliver_types = ARRAY['container', 'exclusive'] WHERE name = 'node1'")
	must(t, err)
	p, agg := e.served("reservation", nil)
	e.startDataServer(p)
	reaper := agg.NewReaper(10 * time.Second) // the default: it wakes at the window's end (NextExpiry), not 10 s late
	reaper.Log = testLogger()
	ctx, cancel := context.WithCancel(e.ctx)
	reaped := make(chan struct{})
	go func() { reaper.Run(ctx); close(reaped) }()
	defer func() { cancel(); <-reaped }()

	slice, call, cred := e.slice("booked")
	start := time.Now().Add(4 * time.Second).Truncate(time.Second)
	end := start.Add(6 * time.Second)
	call.Options.StartTime, call.Options.EndTime = &start, &end
	rs := strings.Replace(request("/demo -every 200ms", [2]string{"r", "node1"}), "<node ", `<node exclusive="true" `, 1)
	res, err := agg.Allocate(e.ctx, call, slice, rs)
	must(t, err)
	s := res.Slivers[0]
	if !s.Starts.Equal(start) || !s.Expires.Equal(end) || s.Allocation != am.Allocated {
		t.Fatalf("reservation %+v, want allocated for %v to %v", s, start, end)
	}
	if !strings.Contains(res.RSpec, `starts="`+start.UTC().Format(time.RFC3339)+`"`) {
		t.Errorf("the manifest does not show the window's start:\n%s", res.RSpec)
	}
	call.Options.StartTime, call.Options.EndTime = nil, nil
	prov, err := agg.Provision(e.ctx, call, []string{slice})
	must(t, err)
	if got := prov.Slivers[0]; got.Operational != am.NotReady || !got.Expires.Equal(end) || !strings.HasPrefix(got.ResourceMsg, "reserved") {
		t.Errorf("Provision before the start: %+v", got)
	}
	time.Sleep(time.Until(start) - time.Second)
	if cs := engineContainers(t, e.agents[0].instance); len(cs) != 0 {
		t.Fatalf("containers before the start of the window: %v", cs)
	}
	e.waitStates(agg, call, slice, 30*time.Second, "geni_ready", opIs(am.Ready))
	ready := time.Now()
	if ready.Before(start) {
		t.Errorf("ready at %v, before the start %v", ready, start)
	}
	t.Logf("ready %v after the start of the window", ready.Sub(start).Round(time.Millisecond))

	// At the end: deleted by the reaper, /data archived, the container gone.
	waitFile(t, p.ArchivePath(s.URN), time.Until(end)+30*time.Second)
	waitNoContainers(t, e.agents[0], 20*time.Second, "the reservation's container is still there after its end")
	var reapedAt time.Time
	must(t, e.st.Pool().QueryRow(e.ctx, "SELECT at FROM sliver_history WHERE sliver_urn = $1 AND event = 'expire'", s.URN).Scan(&reapedAt))
	t.Logf("reaped %v after the end of the window", reapedAt.Sub(end).Round(time.Millisecond))
	if reapedAt.Before(end) || reapedAt.Sub(end) > 2500*time.Millisecond {
		t.Errorf("reaped at %v, window ended %v", reapedAt, end)
	}
	if result := e.deleteJobResult(s.URN, 15*time.Second); !strings.HasPrefix(result, "expired, archived") {
		t.Errorf("delete job result %q", result)
	}
	code, body, _ := e.download(provision.AgentID(s.URN), cred)
	if files := untar(t, body); code != 200 || !strings.Contains(files["hello.txt"], s.URN) || files["heartbeat"] == "" {
		t.Errorf("the reservation's archive: HTTP %d, files %v", code, files)
	}
}
