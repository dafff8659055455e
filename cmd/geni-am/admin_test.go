package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/store"
	"github.com/geniam/geniam/store/storetest"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The operator guide's admin examples run against this database.
const (
	docAMURN  = "urn:publicid:IDN+geniam.example.org+authority+am"
	docAlice  = "urn:publicid:IDN+ch.geni.net+user+alice"
	docBob    = "urn:publicid:IDN+ch.geni.net+user+bob"
	docSlice1 = "urn:publicid:IDN+ch.geni.net:myproj+slice+exp1"
	docSlice2 = "urn:publicid:IDN+ch.geni.net:myproj+slice+exp2"
)

func docNode(n string) string { return "urn:publicid:IDN+geniam.example.org+node+" + n }

// seedDocDatabase fills a fresh database with the testbed the operator
// guide shows: three nodes, two slices, three slivers and their audit trail.
func seedDocDatabase(t *testing.T) (string, *pgxpool.Pool) {
	t.Helper()
	ctx := context.Background()
	st, url := storetest.Open(t)
	pool := st.Pool()
	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	img := "https://images.example.org/ubuntu-24.04-tools.tar"
	sha := "3b5d5c3712955042212316173ccf37be800a3f8e2b2c4b0f8b2c8d9e0f1a2b3c"
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		stmts := []struct {
			q    string
			args []any
		}{
			{"INSERT INTO nodes (name, component_urn, agent_url, sliver_types, capacity) VALUES ($1, $2, $3, $4, $5)",
				[]any{"node1", docNode("node1"), "https://node1.example.org:1887", []string{"container"}, 4}},
			{"INSERT INTO nodes (name, component_urn, agent_url, sliver_types, capacity) VALUES ($1, $2, $3, $4, $5)",
				[]any{"node2", docNode("node2"), "https://node2.example.org:1887", []string{"container"}, 4}},
			{"INSERT INTO nodes (name, component_urn, agent_url, sliver_types, capacity) VALUES ($1, $2, $3, $4, $5)",
				[]any{"node3", docNode("node3"), "https://node3.example.org:1887", []string{"container", "exclusive"}, 2}},
			{"INSERT INTO slices (urn, credential_expires_at, created_at) VALUES ($1, $2, $3), ($4, $2, $5)",
				[]any{docSlice1, at("2026-12-20T00:00:00Z"), at("2026-11-20T09:00:00Z"), docSlice2, at("2026-11-20T11:00:00Z")}},
			{"SELECT set_config('geniam.event', 'Allocate', true), set_config('geniam.actor', $1, true)", []any{docAlice}},
		}
		for _, s := range stmts {
			if _, err := tx.Exec(ctx, s.q, s.args...); err != nil {
				return err
			}
		}
		slivers := []struct {
			urn, slice, node, client, state, op, by string
			slot                                    int
			created                                 string
		}{
			{"urn:publicid:IDN+geniam.example.org+sliver+5f2c9a0e4b7d1c38", docSlice1, "node1", "worker", "geni_allocated", "geni_pending_allocation", docAlice, 0, "2026-11-20T09:00:05Z"},
			{"urn:publicid:IDN+geniam.example.org+sliver+a1b2c3d4e5f60718", docSlice1, "node2", "server", "geni_allocated", "geni_pending_allocation", docAlice, 0, "2026-11-20T09:00:05Z"},
			{"urn:publicid:IDN+geniam.example.org+sliver+0c1d2e3f40516273", docSlice2, "node1", "probe", "geni_allocated", "geni_pending_allocation", docBob, 1, "2026-11-20T11:00:02Z"},
		}
		for _, v := range slivers {
			if _, err := tx.Exec(ctx, `INSERT INTO slivers (urn, slice_urn, node_name, sliver_type, client_id, image_url, image_sha256,
				allocation_state, operational_state, expires_at, created_by, created_at)
				VALUES ($1, $2, $3, 'container', $4, $5, $6, $7, $8, $9, $10, $11)`,
				v.urn, v.slice, v.node, v.client, img, sha, v.state, v.op, at("2026-11-27T09:00:00Z"), v.by, at(v.created)); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, "INSERT INTO node_slots VALUES ($1, $2, $3)", v.node, v.slot, v.urn); err != nil {
				return err
			}
		}
		// Provision, as the aggregate records it in sliver_history.
		if _, err := tx.Exec(ctx, "SELECT set_config('geniam.event', 'Provision', true)"); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE slivers SET allocation_state = 'geni_provisioned', operational_state = 'geni_notready'
			WHERE slice_urn = $1`, docSlice1)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "SELECT set_config('geniam.event', 'geni_start', true)"); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE slivers SET operational_state = 'geni_ready' WHERE slice_urn = $1`, docSlice1)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	// Bob's reservation of node3 (Allocate with geni_start_time), a week ahead
	// of whenever the test runs: it holds no slot now.
	booked := time.Now().UTC().Truncate(time.Hour).Add(7 * 24 * time.Hour)
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		const urn = "urn:publicid:IDN+geniam.example.org+sliver+7d3e9f1a2b4c5d6e"
		if _, err := tx.Exec(ctx, `INSERT INTO slivers (urn, slice_urn, node_name, sliver_type, client_id, image_url, image_sha256,
				allocation_state, operational_state, expires_at, starts_at, requested_end_at, created_by, created_at)
			VALUES ($1, $2, 'node3', 'exclusive', 'field', $3, $4, 'geni_allocated', 'geni_pending_allocation', $5, $6, $5, $7, $8)`,
			urn, docSlice2, img, sha, booked.Add(4*time.Hour), booked, docBob, at("2026-11-20T11:05:00Z")); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "INSERT INTO node_slots (node_name, slot_no, sliver_urn) VALUES ('node3', 0, $1), ('node3', 1, $1)", urn)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	// The audit trail of those slivers, as the aggregate writes it.
	rec := func(at time.Time, id, method string, code am.Code, user, slice, out string, ms int, slivers ...string) *am.AuditRecord {
		r := &am.AuditRecord{At: at, LogID: id, Method: method, Caller: user, Code: code, Output: out,
			Duration: time.Duration(ms) * time.Millisecond, Options: map[string]any{}}
		r.NoteAuthorization(&am.Authorization{User: user, Digest: strings.Repeat("7e", 32), Issuer: "urn:publicid:IDN+ch.geni.net+authority+sa"})
		r.NoteSlice(slice)
		r.NoteSlivers(slivers...)
		return r
	}
	s1 := "urn:publicid:IDN+geniam.example.org+sliver+5f2c9a0e4b7d1c38"
	s2 := "urn:publicid:IDN+geniam.example.org+sliver+a1b2c3d4e5f60718"
	prov := rec(at("2026-11-20T09:01:10Z"), "4be1f07c2a9d", "Provision", am.Success, docAlice, docSlice1, "", 48, s1, s2)
	prov.NoteDeployed([]am.Sliver{
		{URN: s1, NodeName: "node1", ClientID: "worker", Image: am.Image{URL: img, SHA256: sha}},
		{URN: s2, NodeName: "node2", ClientID: "server", Image: am.Image{URL: img, SHA256: sha}}})
	err = store.WriteAudit(ctx, pool,
		rec(at("2026-11-20T08:59:58Z"), "9c0d4e1a7b32", "Allocate", am.BadArgs, docAlice, docSlice1,
			`client_id "worker" appears twice in the request (log id 9c0d4e1a7b32)`, 3),
		rec(at("2026-11-20T09:00:05Z"), "e13a5b7c9d20", "Allocate", am.Success, docAlice, docSlice1, "", 31, s1, s2),
		prov,
		rec(at("2026-11-20T09:02:00Z"), "0a7f3c8e5d41", "Status", am.Success, docAlice, docSlice1, "", 6, s1, s2),
	)
	if err != nil {
		t.Fatal(err)
	}
	return url, pool
}

// runAdminText runs one admin command line as the operator guide shows it.
func runAdminText(t *testing.T, dbURL string, args []string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	full := append([]string{"--db.url", dbURL, "--am_urn", docAMURN}, args...)
	err := runAdmin(context.Background(), full, &out)
	return out.String(), err
}

func TestAdminCommands(t *testing.T) {
	url, pool := seedDocDatabase(t)
	run := func(args ...string) string {
		t.Helper()
		out, err := runAdminText(t, url, args)
		if err != nil {
			t.Fatalf("admin %v: %v", args, err)
		}
		return out
	}
	// Aligned table: every row's columns start where the header's do.
	out := run("nodes", "list")
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "NAME ") {
		t.Fatalf("nodes list:\n%s", out)
	}
	col := strings.Index(lines[0], "STATE")
	for _, l := range lines[1:] {
		if l[col-1] != ' ' || l[col] == ' ' {
			t.Errorf("column STATE not aligned in %q", l)
		}
	}
	if !strings.Contains(lines[1], "node1") || !strings.Contains(lines[1], " 2 ") {
		t.Errorf("node1 row %q", lines[1])
	}
	// JSON.
	var nodes []store.NodeRow
	if err := json.Unmarshal([]byte(run("--json", "nodes", "list")), &nodes); err != nil || len(nodes) != 3 || nodes[0].Used != 2 {
		t.Fatalf("nodes --json: %+v %v", nodes, err)
	}
	run("nodes", "add", "node4", "--agent", "https://node4.example.org:1887", "--capacity", "8")
	run("nodes", "drain", "node2", "--reason", "disk replacement")
	out = run("nodes", "show", "node2")
	if !strings.Contains(out, "drained") || !strings.Contains(out, "disk replacement") || !strings.Contains(out, "server") {
		t.Errorf("nodes show node2:\n%s", out)
	}
	var drained bool
	if err := pool.QueryRow(context.Background(), "SELECT drained FROM nodes WHERE name = 'node2'").Scan(&drained); err != nil || !drained {
		t.Fatalf("node2 not drained: %v", err)
	}
	run("nodes", "undrain", "node2")
	run("nodes", "retire", "node4")
	if out := run("nodes", "show", "node4"); !strings.Contains(out, "retired") {
		t.Errorf("node4:\n%s", out)
	}
	if out := run("nodes", "calendar", "node3"); !strings.Contains(out, "reservation") || !strings.Contains(out, docBob) {
		t.Errorf("nodes calendar node3:\n%s", out)
	}
	if _, err := runAdminText(t, url, []string{"nodes", "calendar", "nope"}); am.CodeOf(err) != am.SearchFailed {
		t.Errorf("calendar of an unknown node: %v", err)
	}
	if _, err := runAdminText(t, url, []string{"nodes", "drain", "nope"}); am.CodeOf(err) != am.SearchFailed {
		t.Errorf("drain unknown node: %v", err)
	}

	if out := run("slivers", "list", "--user", docBob); strings.Count(out, "\n") != 3 || !strings.Contains(out, "probe") || !strings.Contains(out, "field") {
		t.Errorf("slivers --user bob:\n%s", out)
	}
	if out := run("slivers", "list", "--node", "node1", "--slice", docSlice1); strings.Count(out, "\n") != 2 || !strings.Contains(out, "worker") {
		t.Errorf("slivers --node --slice:\n%s", out)
	}
	s1 := "urn:publicid:IDN+geniam.example.org+sliver+5f2c9a0e4b7d1c38"
	run("sliver", "extend", s1, "--until", "2026-12-01T00:00:00Z")
	out = run("slivers", "show", s1)
	if !strings.Contains(out, "admin:extend") || !strings.Contains(out, "2026-12-01T00:00:00Z") {
		t.Errorf("slivers show after extend:\n%s", out)
	}
	run("sliver", "expire", s1)
	var expires time.Time
	if err := pool.QueryRow(context.Background(), "SELECT expires_at FROM slivers WHERE urn = $1", s1).Scan(&expires); err != nil || time.Since(expires) > time.Minute {
		t.Errorf("expire: %v %v", expires, err)
	}
	run("slice", "shutdown", docSlice2)
	if out := run("slices", "list"); !strings.Contains(out, "true") {
		t.Errorf("slices list after shutdown:\n%s", out)
	}
	run("slice", "restore", docSlice2)
	if out := run("slices", "show", docSlice2); strings.Contains(out, "true") {
		t.Errorf("slice still shut down:\n%s", out)
	}
	if out := run("audit", "--user", docAlice, "--limit", "2"); strings.Count(out, "\n") != 3 || !strings.Contains(out, "0a7f3c8e5d41") {
		t.Errorf("audit --limit 2:\n%s", out)
	}
	if out := run("audit", "--since", "1h"); strings.TrimSpace(out) != "(none)" {
		t.Errorf("audit --since 1h :\n%s", out)
	}
	// Without the provisioner's migration there is no jobs table; with it, a table.
	if out := run("jobs", "list"); !strings.Contains(out, "no jobs table") && !strings.HasPrefix(out, "ID ") && out != "(none)\n" {
		t.Errorf("jobs list: %s", out)
	}
	run("maintenance", "on", "rack move, back at 14:00 UTC")
	if out := run("maintenance", "status"); !strings.Contains(out, "rack move") {
		t.Errorf("maintenance status: %s", out)
	}
	run("maintenance", "off")
	if _, err := runAdminText(t, url, []string{"frobnicate"}); err == nil {
		t.Error("unknown command accepted")
	}
}

// TestOperatorGuideExamples runs every command of the checked examples in
// docs/operator.md and compares the output (timestamps aside). With
// GENIAM_WRITE_DOCS=1 it rewrites the examples from what the commands print.
func TestOperatorGuideExamples(t *testing.T) {
	const path = "../../docs/operator.md"
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	url, pool := seedDocDatabase(t)
	block := regexp.MustCompile("(?s)<!-- checked -->\n```console\n(.*?)```")
	stamp := regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ`)
	write := os.Getenv("GENIAM_WRITE_DOCS") != ""
	checked := 0
	rewritten := block.ReplaceAllStringFunc(string(doc), func(m string) string {
		body := block.FindStringSubmatch(m)[1]
		var out strings.Builder
		for _, ex := range splitExamples(body) {
			args, err := shellWords(strings.TrimPrefix(ex.command, "geni-am admin "))
			if err != nil || !strings.HasPrefix(ex.command, "geni-am admin ") {
				t.Errorf("example %q: not a geni-am admin command (%v)", ex.command, err)
				continue
			}
			got, err := runAdminText(t, url, args)
			if err != nil {
				got += "geni-am: " + err.Error() + "\n"
			}
			checked++
			if !write && stamp.ReplaceAllString(got, "TIME") != stamp.ReplaceAllString(ex.output, "TIME") {
				t.Errorf("$ %s\n--- the guide shows:\n%s--- the command prints:\n%s", ex.command, ex.output, got)
			}
			out.WriteString("$ " + ex.command + "\n" + got)
		}
		return "<!-- checked -->\n```console\n" + out.String() + "```"
	})
	// The "who ran what where, when" query.
	query := regexp.MustCompile("(?s)```sql\n(SELECT [^`]*FROM deployments[^`]*)```").FindStringSubmatch(string(doc))
	if query == nil {
		t.Fatal("no deployments query in the guide")
	}
	var who, node, digest, sliver string
	var at time.Time
	var slice, logID string
	if err := pool.QueryRow(context.Background(), query[1]).Scan(&at, &who, &node, &digest, &slice, &sliver, &logID); err != nil {
		t.Fatalf("%s: %v", query[1], err)
	}
	if who != docAlice || node != "node1" || logID != "4be1f07c2a9d" || !strings.HasSuffix(sliver, "5f2c9a0e4b7d1c38") {
		t.Errorf("deployments query: %v %s %s %s %s %s", at, who, node, digest, sliver, logID)
	}
	if checked < 10 {
		t.Errorf("only %d checked examples in %s", checked, path)
	}
	if write {
		if err := os.WriteFile(path, []byte(rewritten), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

type example struct{ command, output string }

// splitExamples splits "$ cmd\noutput...\n$ cmd2\n..." into examples.
func splitExamples(body string) []example {
	var out []example
	for _, line := range strings.SplitAfter(body, "\n") {
		if strings.HasPrefix(line, "$ ") {
			out = append(out, example{command: strings.TrimSpace(line[2:])})
			continue
		}
		if len(out) > 0 && line != "" {
			out[len(out)-1].output += line
		}
	}
	return out
}

// shellWords splits a command line on spaces, honouring double quotes.
func shellWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inQuote, have := false, false
	for _, r := range s {
		switch {
		case r == '"':
			inQuote, have = !inQuote, true
		case r == ' ' && !inQuote:
			if have {
				words = append(words, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteRune(r)
			have = true
		}
	}
	if inQuote {
		return nil, errUnbalancedQuote
	}
	if have {
		words = append(words, cur.String())
	}
	return words, nil
}

var errUnbalancedQuote = &am.Err{Code: am.BadArgs, Msg: "unbalanced quote"}
