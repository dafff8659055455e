package main

// The soak's verdict on the database, in SQL against the tables of
// migrations/0001_init.sql.

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/geniam/geniam/store/storetest"
	"github.com/jackc/pgx/v5"
)

// soakInvariants are queries that must return no rows; each row found is
// described by its columns joined with spaces.
var soakInvariants = []struct{ name, query string }{
	{"node with more slots used than its capacity", `
SELECT n.name, n.capacity, count(s.slot_no) FROM nodes n JOIN node_slots s ON s.node_name = n.name
GROUP BY n.name, n.capacity HAVING count(s.slot_no) > n.capacity`},
	{"slot beyond its node's capacity", `
SELECT s.node_name, s.slot_no, n.capacity FROM node_slots s JOIN nodes n ON n.name = s.node_name WHERE s.slot_no >= n.capacity`},
	{"live sliver not holding exactly its slots (1 for a container, all for an exclusive sliver)", `
SELECT v.urn, v.sliver_type, count(s.slot_no), n.capacity FROM slivers v JOIN nodes n ON n.name = v.node_name
LEFT JOIN node_slots s ON s.sliver_urn = v.urn AND s.node_name = v.node_name
GROUP BY v.urn, v.sliver_type, n.capacity
HAVING count(s.slot_no) <> CASE WHEN v.sliver_type = 'exclusive' THEN n.capacity ELSE 1 END`},
	{"slot held by a sliver that is gone", `
SELECT s.node_name, s.slot_no, s.sliver_urn FROM node_slots s
LEFT JOIN slivers v ON v.urn = s.sliver_urn AND v.node_name = s.node_name WHERE v.urn IS NULL`},
	{"exclusive sliver sharing its node", `
SELECT node_name, count(*) FROM slivers GROUP BY node_name HAVING bool_or(sliver_type = 'exclusive') AND count(*) > 1`},
	{"sliver whose operational state does not fit its allocation state", `
SELECT urn, allocation_state, operational_state FROM slivers
WHERE NOT ((allocation_state = 'geni_allocated' AND operational_state = 'geni_pending_allocation')
        OR (allocation_state = 'geni_provisioned' AND operational_state IN
            ('geni_notready', 'geni_configuring', 'geni_stopping', 'geni_ready', 'geni_ready_busy', 'geni_failed')))`},
	{"sliver stuck in a transient state for over a minute", `
SELECT urn, operational_state, updated_at FROM slivers
WHERE operational_state IN ('geni_configuring', 'geni_stopping') AND updated_at < now() - interval '60 seconds'`},
	{"sliver that came back after it was deleted or expired", `
SELECT h.sliver_urn, h.event, h.id FROM sliver_history h
WHERE h.allocation_state <> 'geni_unallocated' AND EXISTS (
    SELECT 1 FROM sliver_history d WHERE d.sliver_urn = h.sliver_urn AND d.allocation_state = 'geni_unallocated' AND d.id < h.id)`},
	{"live sliver whose history says it ended", `
SELECT v.urn FROM slivers v WHERE EXISTS (
    SELECT 1 FROM sliver_history d WHERE d.sliver_urn = v.urn AND d.allocation_state = 'geni_unallocated')`},
	{"slice shut down (the soak never calls Shutdown)", `SELECT urn FROM slices WHERE shut_down`},
}

// soakCheckDatabase waits for the reaper to catch up, then checks the
// invariants and that nothing the clients were told happened is missing.
func soakCheckDatabase(t *testing.T, dbURL string, rec *soakRecord, plan soakPlan) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatalf("connect for the checks: %v", err)
	}
	defer db.Close(ctx)

	// The reaper runs every ReaperInterval in both aggregates: give it a few
	// rounds to take what expired while the traffic ran.
	var overdue int
	deadline := time.Now().Add(10*plan.Lifecycle.ReaperInterval + 5*time.Second)
	for {
		if err := db.QueryRow(ctx, `SELECT count(*) FROM slivers WHERE expires_at < now() - $1::interval`,
			(2 * plan.Lifecycle.ReaperInterval).String()).Scan(&overdue); err != nil {
			t.Fatal(err)
		}
		if overdue == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(plan.Lifecycle.ReaperInterval)
	}
	if overdue > 0 {
		t.Errorf("%d slivers still live well past their expiry: the reaper did not take them", overdue)
	}

	violations, err := soakViolations(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	for _, inv := range soakInvariants {
		rows := violations[inv.name]
		for i, r := range rows {
			if i == 5 {
				t.Errorf("%s: ... %d in all", inv.name, len(rows))
				break
			}
			t.Errorf("%s: %s", inv.name, r)
		}
	}

	// Each aggregate's pool is at most db.max_conns (8) connections, however
	// often PostgreSQL went away under it; one more is this check's own.
	var conns int
	if err := db.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()`).Scan(&conns); err != nil {
		t.Fatal(err)
	}
	t.Logf("soak: %d connections to the database at the end", conns)
	if conns > 2*8+1 {
		t.Errorf("%d connections to the database: more than the two pools may hold", conns)
	}

	var live, allocated, provisioned, expired, history int
	if err := db.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE allocation_state = 'geni_allocated'),
	    count(*) FILTER (WHERE allocation_state = 'geni_provisioned') FROM slivers`).Scan(&live, &allocated, &provisioned); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRow(ctx, `SELECT count(*) FILTER (WHERE event = 'expire'), count(*) FROM sliver_history`).Scan(&expired, &history); err != nil {
		t.Fatal(err)
	}
	t.Logf("soak: database at the end: %d live slivers (%d allocated, %d provisioned); %d history rows, %d expiries by the reaper",
		live, allocated, provisioned, history, expired)
	if expired == 0 {
		t.Errorf("the reaper expired no sliver during the soak (allocation_hold %s)", plan.Lifecycle.AllocationHold)
	}

	// What the aggregates acknowledged happened.
	seen := func(event string) map[string]bool {
		rows, err := db.Query(ctx, `SELECT DISTINCT sliver_urn FROM sliver_history WHERE event = $1`, event)
		if err != nil {
			t.Fatal(err)
		}
		urns, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		out := make(map[string]bool, len(urns))
		for _, u := range urns {
			out[u] = true
		}
		return out
	}
	rows, err := db.Query(ctx, `SELECT urn FROM slivers`)
	if err != nil {
		t.Fatal(err)
	}
	liveURNs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	soakMissing(t, "acknowledged Allocate with no Allocate in the sliver's history", rec.allocated, seen("Allocate"))
	soakMissing(t, "acknowledged Provision with no Provision in the sliver's history", rec.provisioned, seen("Provision"))
	for _, urn := range liveURNs {
		if rec.deleted[urn] {
			t.Errorf("sliver %s is live although a Delete of it was acknowledged", urn)
		}
	}
	t.Logf("soak: acknowledged %d Allocates, %d Provisions, %d Deletes of slivers", len(rec.allocated), len(rec.provisioned), len(rec.deleted))
}

// soakViolations runs every invariant: its name → the rows that break it.
func soakViolations(ctx context.Context, db *pgx.Conn) (map[string][]string, error) {
	out := map[string][]string{}
	for _, inv := range soakInvariants {
		rows, err := soakRows(ctx, db, inv.query)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", inv.name, err)
		}
		if len(rows) > 0 {
			out[inv.name] = rows
		}
	}
	return out, nil
}

// soakCheckTheChecks plants a violation of every invariant in a database of
// its own (triggers off, as only a superuser's psql session could) and
// checks that each invariant finds its own: a soak whose checks cannot fail
// proves nothing.
func soakCheckTheChecks(t *testing.T, w *soakWorld) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := w.cluster.Psql("postgres", "-c", "CREATE DATABASE soak_planted"); err != nil {
		t.Fatalf("create database: %v: %s", err, out)
	}
	storetest.OpenURL(t, w.cluster.URL("soak_planted")) // migrates it
	db, err := pgx.Connect(ctx, w.cluster.URL("soak_planted"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(ctx)
	if err := w.soakSeedNodesOn(ctx, db); err != nil {
		t.Fatal(err)
	}
	_, err = db.Exec(ctx, `
SET session_replication_role = replica;
INSERT INTO slices (urn, shut_down) VALUES ('urn:publicid:IDN+geniam.localhost+slice+p', true);
INSERT INTO slivers (urn, slice_urn, node_name, sliver_type, client_id, allocation_state, operational_state, expires_at, created_by, updated_at) VALUES
  ('v1', 'urn:publicid:IDN+geniam.localhost+slice+p', 'soak3', 'container', 'a', 'geni_allocated', 'geni_pending_allocation', now() + interval '1 hour', 'u', now()),
  ('v2', 'urn:publicid:IDN+geniam.localhost+slice+p', 'soak3', 'exclusive', 'b', 'geni_provisioned', 'geni_configuring', now() + interval '1 hour', 'u', now() - interval '1 hour'),
  ('v3', 'urn:publicid:IDN+geniam.localhost+slice+p', 'soak1', 'container', 'c', 'geni_allocated', 'geni_ready', now() + interval '1 hour', 'u', now());
INSERT INTO node_slots VALUES ('soak3', 0, 'v1'), ('soak3', 1, 'v2'), ('soak3', 2, 'v2'), ('soak1', 0, 'gone');
INSERT INTO sliver_history (sliver_urn, slice_urn, node_name, event, actor, allocation_state, operational_state) VALUES
  ('v1', 'urn:publicid:IDN+geniam.localhost+slice+p', 'soak3', 'Delete', 'u', 'geni_unallocated', 'geni_pending_allocation'),
  ('v9', 'urn:publicid:IDN+geniam.localhost+slice+p', 'soak2', 'expire', 'reaper', 'geni_unallocated', 'geni_pending_allocation'),
  ('v9', 'urn:publicid:IDN+geniam.localhost+slice+p', 'soak2', 'Renew', 'u', 'geni_allocated', 'geni_pending_allocation');`)
	if err != nil {
		t.Fatal(err)
	}
	found, err := soakViolations(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	for _, inv := range soakInvariants {
		if len(found[inv.name]) == 0 {
			t.Errorf("the check %q misses the violation planted for it", inv.name)
		}
	}
}

// soakMissing reports the acknowledged URNs absent from the database's record.
func soakMissing(t *testing.T, what string, acked, recorded map[string]bool) {
	n := 0
	for urn := range acked {
		if !recorded[urn] {
			if n < 5 {
				t.Errorf("%s: %s", what, urn)
			}
			n++
		}
	}
	if n > 5 {
		t.Errorf("%s: %d in all", what, n)
	}
}

// soakRows runs a query and formats each row.
func soakRows(ctx context.Context, db *pgx.Conn, query string) ([]string, error) {
	rows, err := db.Query(ctx, query)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			return nil, err
		}
		parts := make([]string, len(vals))
		for i, v := range vals {
			parts[i] = fmt.Sprint(v)
		}
		out = append(out, strings.Join(parts, " "))
	}
	return out, rows.Err()
}
