package store

import (
	"context"
	"time"
)

// Gauge is a number the operator's metrics read from the database at scrape
// time, so that it is right whichever aggregate process did the work.
type Gauge struct {
	Name, Help string
	table      string // 0 while this table does not exist (an older schema)
	query      string
}

// Gauges are the database's numbers in /metrics.
var Gauges = []Gauge{
	{"geniam_jobs_queued", "provisioning jobs waiting for a worker", "jobs", "SELECT count(*) FROM jobs WHERE state = 'queued'"},
	{"geniam_jobs_running", "provisioning jobs a worker holds", "jobs", "SELECT count(*) FROM jobs WHERE state = 'running'"},
	{"geniam_jobs_failed", "provisioning jobs that gave up (see geni-am admin jobs list)", "jobs", "SELECT count(*) FROM jobs WHERE state = 'failed'"},
	{"geniam_jobs_oldest_queued_seconds", "age of the oldest queued job", "jobs",
		"SELECT coalesce(extract(epoch FROM now() - min(created_at)), 0) FROM jobs WHERE state = 'queued'"},
	{"geniam_agents_reachable", "node agents whose last health poll succeeded", "agent_health", "SELECT count(*) FROM agent_health WHERE reachable"},
	{"geniam_agents_unreachable", "node agents whose last health poll failed", "agent_health", "SELECT count(*) FROM agent_health WHERE NOT reachable"},
	{"geniam_nodes_taking_slivers", "nodes that take new slivers (not drained, retired or unavailable)", "nodes",
		"SELECT count(*) FROM nodes WHERE available AND NOT drained AND NOT retired"},
	{"geniam_slots_free", "container slots free on nodes that take new slivers", "nodes",
		"SELECT coalesce(sum(slots_free), 0) FROM node_usage WHERE takes_new_slivers"},
	{"geniam_slivers_live", "live slivers (allocated or provisioned)", "slivers", "SELECT count(*) FROM slivers"},
}

// ReadGauge reads one gauge (1 s timeout); 0 when its table does not exist
// or the database does not answer (/healthz says which).
func (s *Store) ReadGauge(g Gauge) float64 {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	var reg *string
	if err := s.pool.QueryRow(ctx, "SELECT to_regclass($1)::text", g.table).Scan(&reg); err != nil || reg == nil {
		return 0
	}
	var v float64
	if err := s.pool.QueryRow(ctx, g.query).Scan(&v); err != nil {
		return 0
	}
	return v
}
