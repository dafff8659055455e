package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/config"
	"github.com/geniam/geniam/am/metrics"
	"github.com/geniam/geniam/credentials"
	"github.com/geniam/geniam/store"
)

// opsSide is the operator's side of a running aggregate: the metrics
// registry, the audit writer, the operator policy and the listener serving
// /metrics, /healthz and /readyz. serve.go builds one and wires it in.
//
// Other parts of the aggregate add their own metrics to Registry (e.g. the
// provisioner's queue depth and agent health gauges).
type opsSide struct {
	Registry *metrics.Registry
	log      *slog.Logger
	st       *store.Store
	audit    *store.AuditWriter
	ready    atomic.Bool

	calls   *metrics.Counter
	latency *metrics.Histogram

	reaperBatches, reaperExpired, reaperErrors *metrics.Counter

	rootsReloads, policyReloads *metrics.Counter
}

// reloadRoots re-reads the trusted-roots directory into the Verifier, whose
// set the TLS edge reads too, so both change at once or not at all. A failure
// is loud: an error in the log, the failed counter, and the error returned;
// the previous set stays in force.
func (o *opsSide) reloadRoots(v *credentials.Verifier, dir string, legacy bool) error {
	problems, err := v.ReloadRoots(dir, legacy)
	for _, p := range problems {
		o.log.Warn("trusted roots: skipped", "problem", p)
	}
	if err != nil {
		o.rootsReloads.Inc("failed")
		o.log.Error("trusted roots NOT reloaded; the previous set stays in force", "dir", dir, "err", err)
		return err
	}
	o.rootsReloads.Inc("ok")
	o.log.Info("trusted roots reloaded", "dir", dir, "count", len(v.Roots().Certs()), "skipped", len(problems))
	return nil
}

// reloadPolicy reads the configuration again (load) and puts its operator
// policy in force at the gate as one set: operators, and the operations
// keys allow, deny, the sliver limits and maintenance (config.Field.Reload).
// A configuration that does not load, or whose policy does not parse, is
// loud (an error in the log, the failed counter, the error returned) and
// leaves the previous policy in force. Other keys take effect at the next
// start: a warning names those that differ from the ones the aggregate
// started with.
func (o *opsSide) reloadPolicy(load func() (*config.Config, error), started *config.Config, gate *am.Gate) error {
	next, err := load()
	var p *am.OpsPolicy
	if err == nil {
		p, err = o.policy(next.Operations, o.st)
	}
	if err != nil {
		o.policyReloads.Inc("failed")
		o.log.Error("operator policy NOT reloaded; the previous one stays in force", "err", err)
		return err
	}
	gate.SetPolicy(p, next.OperatorURNs())
	o.policyReloads.Inc("ok")
	o.log.Info("operator policy reloaded", "operators", len(next.OperatorURNs()), "allow", len(p.Allow), "deny", len(p.Deny),
		"maintenance", p.Maintenance)
	if keys := config.RestartKeys(started, next); len(keys) > 0 {
		o.log.Warn("configuration keys changed that take effect only at the next start", "keys", strings.Join(keys, ", "))
	}
	return nil
}

// newOps registers the metrics and starts the audit writer.
func newOps(cfg *config.Config, log *slog.Logger, st *store.Store, verifier *credentials.Verifier) *opsSide {
	reg := metrics.NewRegistry()
	o := &opsSide{Registry: reg, log: log, st: st,
		audit: st.NewAuditWriter(log, cfg.Operations.AuditQueue)}
	o.calls = reg.NewCounter("geniam_calls_total", "AM API calls by method and geni_code (faults: the XML-RPC fault code)", "method", "code")
	o.latency = reg.NewHistogram("geniam_call_duration_seconds", "time from request to reply, by method", metrics.DefaultLatencyBuckets, "method")
	o.reaperBatches = reg.NewCounter("geniam_reaper_batches_total", "expiry transactions the reaper ran")
	o.reaperExpired = reg.NewCounter("geniam_reaper_expired_slivers_total", "slivers the reaper deleted at expiry")
	o.reaperErrors = reg.NewCounter("geniam_reaper_errors_total", "reaper transactions that failed")

	stats := func(f func(store.AuditStats) float64) func() float64 {
		return func() float64 { return f(o.audit.Stats()) }
	}
	reg.NewCounterFunc("geniam_audit_written_total", "audit rows written to the database", stats(func(s store.AuditStats) float64 { return float64(s.Written) }))
	reg.NewCounterFunc("geniam_audit_dropped_total", "audit records not written because the queue was full (each is in the log)", stats(func(s store.AuditStats) float64 { return float64(s.Dropped) }))
	reg.NewCounterFunc("geniam_audit_failed_total", "audit records whose insert failed (each is in the log)", stats(func(s store.AuditStats) float64 { return float64(s.Failed) }))
	reg.NewGaugeFunc("geniam_audit_queue_length", "audit records waiting for the database", stats(func(s store.AuditStats) float64 { return float64(s.Queued) }))
	reg.NewCounterFunc("geniam_audit_spooled_total", "audit records kept on disk while the database was unreachable", stats(func(s store.AuditStats) float64 { return float64(s.Spooled) }))
	reg.NewCounterFunc("geniam_audit_replayed_total", "spooled audit records written to the database once it was back", stats(func(s store.AuditStats) float64 { return float64(s.Replayed) }))
	reg.NewGaugeFunc("geniam_audit_spool_bytes", "size of the on-disk audit spool", stats(func(s store.AuditStats) float64 { return float64(s.SpoolBytes) }))

	o.rootsReloads = reg.NewCounter("geniam_trusted_roots_reloads_total", "reloads of tls.trusted_roots (SIGHUP) by result: ok, failed (the old set stays in force; the log says why)", "result")
	o.policyReloads = reg.NewCounter("geniam_policy_reloads_total", "reloads of the operator policy (operators, operations.allow, deny, limits, maintenance) on SIGHUP or admin reload, by result: ok, failed (the old policy stays in force; the log says why)", "result")
	if verifier != nil {
		reg.NewGaugeFunc("geniam_trusted_roots", "certificates in the trusted-roots set TLS and the credential checks use", func() float64 { return float64(len(verifier.Roots().Certs())) })
		reg.NewCounterFunc("geniam_credential_cache_hits_total", "credentials answered from the verification cache", func() float64 { return float64(verifier.CacheStats().Hits) })
		reg.NewCounterFunc("geniam_credential_cache_misses_total", "credentials verified from scratch", func() float64 { return float64(verifier.CacheStats().Misses) })
		reg.NewGaugeFunc("geniam_credential_cache_entries", "credentials in the verification cache", func() float64 { return float64(verifier.CacheStats().Entries) })
	}
	pstat := func(f func(store.PoolStats) float64) func() float64 {
		return func() float64 { return f(st.PoolStats()) }
	}
	reg.NewGaugeFunc("geniam_db_connections_open", "connections open in the pool", pstat(func(s store.PoolStats) float64 { return float64(s.Open) }))
	reg.NewGaugeFunc("geniam_db_connections_acquired", "connections in use", pstat(func(s store.PoolStats) float64 { return float64(s.Acquired) }))
	reg.NewGaugeFunc("geniam_db_connections_idle", "idle connections", pstat(func(s store.PoolStats) float64 { return float64(s.Idle) }))
	reg.NewGaugeFunc("geniam_db_connections_max", "pool size (db.max_conns)", pstat(func(s store.PoolStats) float64 { return float64(s.Max) }))
	reg.NewCounterFunc("geniam_db_acquire_waits_total", "acquires that had to wait for a connection", pstat(func(s store.PoolStats) float64 { return float64(s.AcquireWaits) }))
	reg.NewCounterFunc("geniam_db_acquire_wait_seconds_total", "time spent waiting for a connection", pstat(func(s store.PoolStats) float64 { return s.AcquireWait.Seconds() }))
	reg.NewGaugeFunc("geniam_maintenance", "1 while new Allocates are refused for maintenance (configuration or geni-am admin maintenance)", func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if msg, err := st.Maintenance(ctx); err == nil && (msg != "" || cfg.Operations.Maintenance != "") {
			return 1
		}
		return 0
	})
	// Read from the database at scrape time (store.Gauges): the provisioner's
	// queue, the agents' health, the inventory.
	for _, g := range store.Gauges {
		reg.NewGaugeFunc(g.Name, g.Help, func() float64 { return st.ReadGauge(g) })
	}
	if max := cfg.Operations.AuditSpoolMax; max > 0 {
		dir := cfg.Operations.AuditSpoolDir
		if dir == "" {
			dir = filepath.Join(cfg.VarDir, "audit-spool")
		}
		if err := o.audit.Spool(dir, max); err != nil {
			// Not fatal: without the spool, records the database cannot
			// take still go to the log, as they always did.
			log.Error("audit: no on-disk spool", "err", err)
		}
	}
	o.audit.Start()
	return o
}

// standardMethods bounds the method label: anything else is "other".
var standardMethods = map[string]bool{"GetVersion": true, "ListResources": true, "Describe": true, "Allocate": true,
	"Renew": true, "Provision": true, "Status": true, "PerformOperationalAction": true, "Delete": true, "Shutdown": true}

// Audit counts the call and queues it for the audit trail (am.Auditor).
func (o *opsSide) Audit(rec *am.AuditRecord) {
	method := rec.Method
	if !standardMethods[method] {
		method = "other"
	}
	o.calls.Inc(method, am.AuditCodeName(rec.Code))
	o.latency.Observe(rec.Duration.Seconds(), method)
	o.audit.Audit(rec)
}

// policy is the operator policy of the configuration, with the runtime
// maintenance switch and the sliver counter read from st.
func (o *opsSide) policy(c config.Operations, st *store.Store) (*am.OpsPolicy, error) {
	users, err := parseLimits(c.UserLimits, "operations.user_limits")
	if err != nil {
		return nil, err
	}
	projects, err := parseLimits(c.ProjectLimits, "operations.project_limits")
	if err != nil {
		return nil, err
	}
	p := &am.OpsPolicy{Allow: config.List(c.Allow), Deny: config.List(c.Deny),
		MaxSliversPerUser: c.MaxSliversPerUser, MaxSliversPerProject: c.MaxSliversPerProject,
		UserLimits: users, ProjectLimits: projects, Maintenance: c.Maintenance,
		MaintenanceFrom: st.Maintenance, Counter: st}
	for _, pat := range append(append([]string(nil), p.Allow...), p.Deny...) {
		if _, err := pathMatch(pat); err != nil {
			return nil, fmt.Errorf("operations.allow/deny: bad pattern %q: %w", pat, err)
		}
	}
	return p, nil
}

// parseLimits reads "key=N, key=N". Keys are URNs or authority:project
// names, which hold no '=' or ','.
func parseLimits(s, key string) (map[string]int, error) {
	out := map[string]int{}
	for _, item := range config.List(s) {
		k, v, ok := strings.Cut(item, "=")
		n, err := strconv.Atoi(v)
		if !ok || k == "" || err != nil || n < 0 {
			return nil, fmt.Errorf("%s: %q is not name=N", key, item)
		}
		out[k] = n
	}
	return out, nil
}

// reaperStore counts the reaper's work for the metrics.
type reaperStore struct {
	am.Store
	o *opsSide
}

func (r reaperStore) Expire(ctx context.Context, now time.Time, limit int) ([]am.Sliver, error) {
	out, err := r.Store.Expire(ctx, now, limit)
	r.o.reaperBatches.Inc()
	if err != nil {
		r.o.reaperErrors.Inc()
	}
	r.o.reaperExpired.Add(float64(len(out)))
	return out, err
}

// Handler serves /metrics, /healthz and /readyz.
func (o *opsSide) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", o.Registry)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		started := time.Now()
		err := o.st.Ping(ctx)
		body := map[string]any{"status": "ok", "database": "ok", "database_ms": time.Since(started).Milliseconds()}
		status := http.StatusOK
		if err != nil {
			status = http.StatusServiceUnavailable
			body["status"], body["database"] = "failing", "unreachable: "+err.Error()
		}
		writeJSON(w, status, body)
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !o.ready.Load() {
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "starting or stopping"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"status": "ready"})
	})
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// serveOps serves Handler on addr (plain HTTP: bind it to loopback or a
// management network) until ctx ends.
func (o *opsSide) serveOps(ctx context.Context, addr string) (net.Addr, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("operations.listen: %w", err)
	}
	srv := &http.Server{Handler: o.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			o.log.Error("operations listener stopped", "err", err)
		}
	}()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	o.log.Info("operations listener", "addr", ln.Addr().String(), "paths", "/metrics /healthz /readyz")
	return ln.Addr(), nil
}

// close flushes the audit queue (at most a few seconds).
func (o *opsSide) close() {
	o.ready.Store(false)
	o.audit.Close(5 * time.Second)
}

// pathMatch checks a glob pattern the way am.OpsPolicy applies it.
func pathMatch(pattern string) (bool, error) { return path.Match(pattern, "") }

// devOpsListen keeps make run from failing when another dev aggregate holds
// the default operations port: unless the address was asked for explicitly,
// a busy one is replaced by a free port (the log names it).
func devOpsListen(cfg *config.Config, explicit bool, log *slog.Logger) {
	if explicit || cfg.Operations.Listen == "" {
		return
	}
	ln, err := net.Listen("tcp", cfg.Operations.Listen)
	if err != nil {
		log.Warn("operations.listen is busy; using a free port instead", "wanted", cfg.Operations.Listen, "err", err)
		cfg.Operations.Listen = "127.0.0.1:0"
		return
	}
	ln.Close()
}
