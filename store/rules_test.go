package store_test

import (
	"context"
	"io/fs"
	"maps"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/amtest"
	"github.com/geniam/geniam/migrations"
	"github.com/geniam/geniam/store"
	"github.com/geniam/geniam/store/storetest"
)

// latestSQL returns the text of the last migration that matches re (a later
// migration may replace a function or a constraint), or fails.
func latestSQL(t *testing.T, re *regexp.Regexp) []string {
	t.Helper()
	names, err := fs.Glob(migrations.FS, "*.sql")
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(names)
	var last []string
	for _, n := range names {
		b, err := fs.ReadFile(migrations.FS, n)
		if err != nil {
			t.Fatal(err)
		}
		if m := re.FindStringSubmatch(string(b)); m != nil {
			last = m
		}
	}
	if last == nil {
		t.Fatalf("no migration matches %s", re)
	}
	return last
}

// TestActionJobTable holds the SQL to am.ActionJobs and am.JobKinds, the one
// table in Go (issue 15: the action list lived in the Go types, the trigger's
// CASE, the CHECK on jobs.kind and the job switch): the CASE maps exactly the
// table's events to its jobs, the CHECK allows exactly am.JobKinds, and, in a
// real database, each event on a provisioned sliver enqueues the job the
// table says.
func TestActionJobTable(t *testing.T) {
	caseSQL := latestSQL(t, regexp.MustCompile(`(?s)k := CASE ev (.*?) ELSE NULL END;`))[1]
	got := map[string]string{}
	for _, m := range regexp.MustCompile(`WHEN '([^']+)' THEN '([^']+)'`).FindAllStringSubmatch(caseSQL, -1) {
		got[m[1]] = m[2]
	}
	want := map[string]string{}
	for _, aj := range am.ActionJobs {
		want[aj.Event] = string(aj.Job)
	}
	if !maps.Equal(got, want) {
		t.Errorf("the trigger's CASE maps %v; am.ActionJobs says %v", got, want)
	}

	checkSQL := latestSQL(t, regexp.MustCompile(`kind\s+text NOT NULL CHECK \(kind IN \(([^)]*)\)\)`))[1]
	var kinds, wantKinds []string
	for _, m := range regexp.MustCompile(`'([^']+)'`).FindAllStringSubmatch(checkSQL, -1) {
		kinds = append(kinds, m[1])
	}
	for _, k := range am.JobKinds {
		wantKinds = append(wantKinds, string(k))
	}
	slices.Sort(kinds)
	slices.Sort(wantKinds)
	if !slices.Equal(kinds, wantKinds) {
		t.Errorf("CHECK (kind IN ...) allows %v; am.JobKinds is %v", kinds, wantKinds)
	}

	// The behaviour, not only the text: each event on a provisioned sliver.
	e := newEnv(t)
	e.addNode("node1", 8)
	res := e.allocate(sliceURN("jobs"), container("a", "node1"))
	urn := res.Slivers[0].URN
	e.sql("UPDATE slivers SET allocation_state = 'geni_provisioned' WHERE urn = $1", urn)
	if n := e.count("SELECT count(*) FROM jobs WHERE sliver_urn = $1 AND kind = 'provision'", urn); n != 1 {
		t.Fatalf("Provision enqueued %d provision jobs", n)
	}
	for _, aj := range am.ActionJobs {
		e.sql(`BEGIN; SELECT set_config('geniam.event', '` + aj.Event + `', true);
			UPDATE slivers SET resource_status = 'x' WHERE urn = '` + urn + `'; COMMIT`)
		var kind string
		if err := e.pool.QueryRow(e.ctx, "SELECT kind FROM jobs WHERE sliver_urn = $1 ORDER BY id DESC LIMIT 1", urn).Scan(&kind); err != nil {
			t.Fatal(err)
		}
		if kind != string(aj.Job) {
			t.Errorf("event %s enqueued %q, am.ActionJobs says %q", aj.Event, kind, aj.Job)
		}
	}
	e.sql("DELETE FROM slivers WHERE urn = $1", urn)
	if n := e.count("SELECT count(*) FROM jobs WHERE sliver_urn = $1 AND kind = $2", urn, string(am.JobDelete)); n != 1 {
		t.Errorf("deleting a provisioned sliver enqueued %d delete jobs", n)
	}
	if !strings.Contains(strings.Join(am.SupportedActions, " "), am.ActionFetchData) {
		t.Errorf("SupportedActions %v lacks %s", am.SupportedActions, am.ActionFetchData)
	}
}

// TestSeedDemoInventory: make run's demo nodes, then bench nodes up to a
// count; seeding again adds nothing.
func TestSeedDemoInventory(t *testing.T) {
	e := newEnv(t)
	for _, want := range []int{3, 3, 50} {
		if err := e.store.SeedDemoInventory(e.ctx, "geniam.test", want); err != nil {
			t.Fatal(err)
		}
		if n := e.count("SELECT count(*) FROM nodes"); n != want {
			t.Fatalf("after seeding %d: %d nodes", want, n)
		}
	}
}

// TestLifecycleSuite runs the aggregate's lifecycle rules on PostgreSQL, the same
// suite am/amtest runs on its in-memory store.
func TestLifecycleSuite(t *testing.T) {
	amtest.Lifecycle(t, func(t *testing.T, nodes []am.Node) am.Store {
		st, _ := storetest.Open(t)
		for _, n := range nodes {
			if err := st.AddNode(context.Background(), store.NewNode{Name: n.Name, ComponentURN: n.ComponentID,
				SliverTypes: n.SliverTypes, Capacity: n.Capacity}); err != nil {
				t.Fatal(err)
			}
		}
		return st
	})
}
