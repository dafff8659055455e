package store

import (
	"context"
	"testing"
	"time"

	"github.com/geniam/geniam/store/pgtest"
)

// TestTakeoverOnProcessDeath: a job leased for a minute by a process whose
// database session ends (SIGKILL closes its socket) is claimable at once by
// another process, and the dead holder is fenced out; while the holder
// lives its job stays its own.
func TestTakeoverOnProcessDeath(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.Pool(t, pgtest.NewDatabase(t))
	if err := Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	st := New(pool)
	if _, err := pool.Exec(ctx, `INSERT INTO nodes (name, component_urn) VALUES ('n', 'urn:publicid:IDN+geniam.test+node+n')`); err != nil {
		t.Fatal(err)
	}
	for round := 0; round < 3; round++ {
		if _, err := pool.Exec(ctx, "INSERT INTO jobs (kind, sliver_urn, slice_urn, node_name) VALUES ('provision', $1, 's', 'n')", "v"+string(rune('a'+round))); err != nil {
			t.Fatal(err)
		}
		a, err := st.LockProcess(ctx, "procA"+string(rune('a'+round)))
		if err != nil {
			t.Fatal(err)
		}
		held, err := st.ClaimJob(ctx, "procA"+string(rune('a'+round))+":0", time.Minute)
		if err != nil || held == nil {
			t.Fatalf("A claims: %v %v", held, err)
		}
		if j, err := st.ClaimJob(ctx, "procB:0", time.Minute); err != nil || j != nil {
			t.Fatalf("B took %+v (%v) while A lives", j, err)
		}
		a.Close() // the session ends, as when the process is killed
		start := time.Now()
		var j *Job
		for j == nil && time.Since(start) < 5*time.Second {
			if j, err = st.ClaimJob(ctx, "procB:0", time.Minute); err != nil {
				t.Fatal(err)
			}
		}
		if j == nil || j.ID != held.ID || j.Attempts != 2 {
			t.Fatalf("B got %+v after A died, want job %d attempt 2", j, held.ID)
		}
		t.Logf("round %d: taken over %s after the holder's session ended (lease was 1 min)", round, time.Since(start).Round(time.Millisecond))
		if err := st.FinishJob(ctx, held, "late"); !IsLeaseLost(err) {
			t.Errorf("the dead holder finished a job taken over: %v", err)
		}
		if err := st.FinishJob(ctx, j, "ok"); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := st.PruneProcesses(ctx, 0); err != nil || n != 3 {
		t.Errorf("pruned %d dead processes (%v), want 3", n, err)
	}
}
