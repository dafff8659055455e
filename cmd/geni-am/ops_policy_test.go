package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/geniam/geniam/am/config"
	"github.com/geniam/geniam/store"
	"github.com/geniam/geniam/store/pgtest"
	"github.com/jackc/pgx/v5/pgxpool"
)

func TestPolicyFromConfig(t *testing.T) {
	o := &opsSide{}
	p, err := o.policy(config.Operations{Allow: "ch.geni.net, ch.geni.net:*", Deny: "urn:publicid:IDN+bad+user+*",
		MaxSliversPerUser: 5, UserLimits: "urn:publicid:IDN+ch.geni.net+user+alice=50",
		ProjectLimits: "ch.geni.net:big=500,ch.geni.net:small=2"}, &store.Store{})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Allow) != 2 || len(p.Deny) != 1 || p.UserLimits["urn:publicid:IDN+ch.geni.net+user+alice"] != 50 ||
		p.ProjectLimits["ch.geni.net:small"] != 2 || p.MaintenanceFrom == nil || p.Counter == nil {
		t.Fatalf("policy %+v", p)
	}
	for _, bad := range []config.Operations{
		{UserLimits: "alice"},
		{ProjectLimits: "p=-1"},
		{ProjectLimits: "p=x"},
		{Deny: "[unclosed"},
	} {
		if _, err := o.policy(bad, &store.Store{}); err == nil {
			t.Errorf("accepted %+v", bad)
		}
	}
}

// The queue and agent gauges follow the provisioner's tables once they exist.
func TestMetricsReadProvisioningTables(t *testing.T) {
	// An empty database (no migrations): the provisioner's tables are made
	// here in their simplest form, whatever migration 0002 makes of them.
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	cfg, err := config.Load("", nil)
	if err != nil {
		t.Fatal(err)
	}
	o := newOps(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), store.New(pool), nil)
	defer o.close()
	scrape := func() string {
		rec := httptest.NewRecorder()
		o.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		return rec.Body.String()
	}
	if m := scrape(); !strings.Contains(m, "geniam_jobs_queued 0\n") || !strings.Contains(m, "geniam_agents_unreachable 0\n") {
		t.Fatalf("without the tables:\n%s", m)
	}
	for _, q := range []string{
		"CREATE TABLE jobs (id bigserial, state text, created_at timestamptz DEFAULT now() - interval '30 seconds')",
		"INSERT INTO jobs (state) VALUES ('queued'), ('queued'), ('running'), ('failed')",
		"CREATE TABLE agent_health (node_name text, reachable boolean)",
		"INSERT INTO agent_health VALUES ('n1', false)",
	} {
		if _, err := pool.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	m := scrape()
	for _, want := range []string{"geniam_jobs_queued 2\n", "geniam_jobs_running 1\n", "geniam_jobs_failed 1\n",
		"geniam_agents_unreachable 1\n", "geniam_agents_reachable 0\n", "geniam_slots_free 0\n"} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if !regexp.MustCompile(`geniam_jobs_oldest_queued_seconds (2|3)\d`).MatchString(m) {
		t.Errorf("oldest queued job:\n%s", m)
	}
	// /readyz is 503 until the AM listener is up.
	rec := httptest.NewRecorder()
	o.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	if rec.Code != 503 {
		t.Errorf("readyz before ready: %d", rec.Code)
	}
	// /healthz is 503 with the reason when the database does not answer.
	dead, err := pgxpool.New(ctx, "postgres://nobody@127.0.0.1:1/none?connect_timeout=1")
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	down := &opsSide{st: store.New(dead)}
	rec = httptest.NewRecorder()
	down.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
	if rec.Code != 503 || !strings.Contains(rec.Body.String(), `"status":"failing"`) || !strings.Contains(rec.Body.String(), "unreachable") {
		t.Errorf("healthz with the database down: %d %s", rec.Code, rec.Body.String())
	}
}

func TestDevOpsListenAvoidsABusyPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := &config.Config{Operations: config.Operations{Listen: ln.Addr().String()}}
	devOpsListen(cfg, true, log)
	if cfg.Operations.Listen != ln.Addr().String() {
		t.Fatal("an explicit address was replaced")
	}
	devOpsListen(cfg, false, log)
	if cfg.Operations.Listen != "127.0.0.1:0" {
		t.Fatalf("busy default kept: %s", cfg.Operations.Listen)
	}
}
