// Package provision drives the node agents: it is the aggregate's
// am.Provisioner. The work lives in PostgreSQL (table jobs, migration 0002):
// triggers on slivers enqueue a job in the same transaction as the change
// that calls for it (Provision, an operational action, Shutdown, Delete,
// expiry), and workers here claim jobs with FOR UPDATE SKIP LOCKED, hold a
// lease they renew while they work, and call the agents over mutual TLS.
// Several aggregate processes share the queue; a job whose worker died is
// taken over when its lease runs out, and every agent operation is
// idempotent, so a job taken over is finished, not done twice.
//
// Besides the workers, Run keeps a health loop (agents polled with List; an
// unreachable agent makes its node unavailable; sliver states follow what
// the agents report), the expiry warnings, and the pruning of old archives
// and jobs. See docs/provisioning.md.
package provision

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/agent"
	"github.com/geniam/geniam/store"
)

// Config is the provisioner's policy. Zero values take the defaults named.
type Config struct {
	Store     *store.Store
	RSpecs    am.RSpecs   // renders the manifest a container finds in /geni/manifest.xml
	AgentTLS  *tls.Config // the aggregate's client certificate and the agents' CA (agent.ClientTLSConfig)
	PublicURL string      // the aggregate's URL; data URLs are <PublicURL>data/<sliver name>.tar
	Authority string      // authority of our sliver URNs (for /data/<name>.tar lookups)

	// SliverLimits per sliver type go into every start request (zero: the
	// node's own limits).
	SliverLimits map[string]am.SliverLimits

	ArchiveDir       string        // where /data archives are kept; required
	ArchiveRetention time.Duration // how long archives stay; default 7 days
	ArchiveMaxBytes  int64         // largest archive kept (gzipped); default 10 GiB

	Workers        int           // concurrent jobs in this process; default 8
	Lease          time.Duration // job lease, renewed every Lease/3; default 30 s
	PollInterval   time.Duration // queue poll when idle; default 1 s
	MaxAttempts    int           // attempts before a transient failure becomes permanent; default 10
	BackoffBase    time.Duration // first retry delay, doubled per attempt; default 1 s
	BackoffMax     time.Duration // longest retry delay; default 2 min
	FetchWait      time.Duration // one long-poll of an image fetch; default 20 s
	HealthInterval time.Duration // agent poll period; default 15 s
	DownAfter      int           // consecutive failed polls before a node is unavailable; default 2
	AgentTimeout   time.Duration // one health poll; default 10 s
	WarnInterval   time.Duration // expiry warning and pruning sweep period; default 1 min
	JobRetention   time.Duration // finished jobs are kept this long; default 7 days
	// DiskPressure is the fraction of an agent's state filesystem that,
	// when no more than it is free, is disk pressure: the node takes no
	// new slivers and its slivers' geni_error says so. Default 0.05.
	DiskPressure float64
	// StrayGrace is how long a container of this aggregate that the
	// database never knew is only reported; past it, it is archived and
	// removed. 0 (the default) only ever reports.
	StrayGrace time.Duration
	// Instance is this aggregate's instance name, put on every container it
	// starts; the agents list only this instance's containers to it. ""
	// reads it from the database (settings aggregate_instance).
	Instance string
	IdleStop time.Duration // stop a container idle this long (0: never); agent/node/idle.go
	IdleWarn time.Duration // warn this long before the idle stop

	Owner string       // worker name prefix in jobs.lease_owner; default host:pid/random
	Log   *slog.Logger // default slog.Default()
}

func (c *Config) defaults() error {
	if c.Store == nil {
		return errors.New("provision: Store is required")
	}
	if c.AgentTLS == nil {
		return errors.New("provision: AgentTLS is required (agents.cert, agents.key, agents.ca)")
	}
	if c.ArchiveDir == "" {
		return errors.New("provision: ArchiveDir is required")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.ArchiveRetention, 7*24*time.Hour)
	def(&c.Lease, 30*time.Second)
	def(&c.PollInterval, time.Second)
	def(&c.BackoffBase, time.Second)
	def(&c.BackoffMax, 2*time.Minute)
	def(&c.FetchWait, 20*time.Second)
	def(&c.HealthInterval, 15*time.Second)
	def(&c.AgentTimeout, 10*time.Second)
	def(&c.WarnInterval, time.Minute)
	def(&c.JobRetention, 7*24*time.Hour)
	if c.Workers <= 0 {
		c.Workers = 8
	}
	if c.ArchiveMaxBytes <= 0 {
		c.ArchiveMaxBytes = 10 << 30
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 10
	}
	if c.DiskPressure <= 0 {
		c.DiskPressure = 0.05
	}
	if c.DiskPressure >= 1 {
		return fmt.Errorf("provision: provisioning.disk_pressure is a fraction of the disk, below 1: %g", c.DiskPressure)
	}
	if c.DownAfter <= 0 {
		c.DownAfter = 2
	}
	if c.Owner == "" {
		host, _ := os.Hostname()
		b := make([]byte, 3)
		_, _ = rand.Read(b)
		c.Owner = fmt.Sprintf("%s:%d/%s", host, os.Getpid(), hex.EncodeToString(b))
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	if c.PublicURL != "" && !strings.HasSuffix(c.PublicURL, "/") {
		c.PublicURL += "/"
	}
	return os.MkdirAll(c.ArchiveDir, 0o750)
}

// Provisioner implements am.Provisioner on the job queue.
type Provisioner struct {
	cfg   Config
	st    *store.Store
	log   *slog.Logger
	wakeC chan struct{}

	clientsMu sync.Mutex
	clients   map[string]*agent.Client // by agent URL

	healthMu sync.Mutex
	health   map[string]*nodeHealth // by node name

	watch watchers // long polls of the agents' change feeds (watch.go)

	gate *am.Gate // UseGate's: SSH keys (ssh.go) and /data downloads (data.go)

	metrics *provisionMetrics // nil unless RegisterMetrics

	instanceMu sync.Mutex // guards cfg.Instance, read from the database once

	// Counters for the report and metrics.
	JobsDone, JobsFailed, JobsRetried atomic.Int64
}

var _ am.Provisioner = (*Provisioner)(nil)

// New checks cfg and returns a Provisioner; call Run to start its workers.
func New(cfg Config) (*Provisioner, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	return &Provisioner{cfg: cfg, st: cfg.Store, log: cfg.Log, wakeC: make(chan struct{}, 1),
		clients: map[string]*agent.Client{}, health: map[string]*nodeHealth{}}, nil
}

// The am.Provisioner hooks: the jobs are already in the queue (the triggers
// wrote them with the change), so all a hook does is wake a worker.

func (p *Provisioner) Provisioned(ctx context.Context, slivers []am.Sliver)          { p.wake() }
func (p *Provisioner) Acted(ctx context.Context, action string, slivers []am.Sliver) { p.wake() }
func (p *Provisioner) ShutDown(ctx context.Context, sliceURN string)                 { p.wake() }

// Deleted wakes a worker when a deleted sliver had been provisioned: the
// store queued its teardown in the same transaction. Deleting allocations
// queues nothing, and a wake-up would cost each such Delete a ClaimJob
// query that finds no job (the idle poll remains the safety net).
func (p *Provisioner) Deleted(ctx context.Context, slivers []am.Sliver) {
	for _, s := range slivers {
		if s.Allocation == am.Provisioned {
			p.wake()
			return
		}
	}
}

func (p *Provisioner) wake() {
	select {
	case p.wakeC <- struct{}{}:
	default:
	}
}

// Run works until ctx ends: the job workers, the health loop and the
// housekeeping. Jobs this process holds when ctx ends are left leased, as
// if the process had died: another worker takes them when the lease runs
// out (the graceful and the SIGKILL path are the same, and both are tested).
func (p *Provisioner) Run(ctx context.Context) {
	var wg sync.WaitGroup
	// The lock is taken before the first job is claimed, so that no job of
	// this process is ever leased without it.
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	lock, err := p.st.LockProcess(lctx, p.cfg.Owner)
	cancel()
	if err != nil && ctx.Err() == nil {
		p.log.Warn("provisioner: cannot take the process lock yet; jobs of this process are taken over only when their leases run out until it has it", "err", err)
	}
	wg.Add(1)
	go func() { defer wg.Done(); p.holdProcessLock(ctx, lock) }()
	for i := 0; i < p.cfg.Workers; i++ {
		wg.Add(1)
		go func(n int) {
			defer wg.Done()
			p.worker(ctx, fmt.Sprintf("%s:%d", p.cfg.Owner, n))
		}(i)
	}
	wg.Add(3)
	go func() {
		defer wg.Done()
		if err := p.WithdrawKeys(ctx); err != nil && ctx.Err() == nil { // ssh.go
			p.log.Warn("provisioner: cannot check whose SSH keys the agents hold; the next start tries again", "err", err)
		}
	}()
	go func() { defer wg.Done(); p.healthLoop(ctx) }()
	go func() { defer wg.Done(); p.housekeeping(ctx) }()
	p.log.Info("provisioner running", "workers", p.cfg.Workers, "owner", p.cfg.Owner, "archive", p.cfg.ArchiveDir)
	wg.Wait()
}

// holdProcessLock registers this process and holds its database lock until
// ctx ends, so that when it dies another process takes its jobs over at
// once rather than when their leases run out (store.LockProcess). Without
// the lock (PostgreSQL unreachable at start) the leases still work.
func (p *Provisioner) holdProcessLock(ctx context.Context, l *store.ProcessLock) {
	for ctx.Err() == nil {
		var err error
		if l == nil {
			l, err = p.st.LockProcess(ctx, p.cfg.Owner)
		}
		if err == nil {
			l.Hold(ctx, time.Second, func(err error) {
				if p.metrics != nil {
					p.metrics.takeover.Inc()
				}
				p.log.Warn("provisioner: lost the process lock (database connection); taking it again: other processes may take over this one's jobs meanwhile", "err", err)
			})
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// instance is this aggregate's instance name (Config.Instance, or the
// database's, read once).
func (p *Provisioner) instance(ctx context.Context) (string, error) {
	p.instanceMu.Lock()
	defer p.instanceMu.Unlock()
	if p.cfg.Instance != "" {
		return p.cfg.Instance, nil
	}
	v, err := p.st.Setting(ctx, store.SettingAggregateInstance)
	if err != nil {
		return "", am.Wrap(am.Busy, err, "cannot read the aggregate instance")
	}
	if v == "" {
		return "", am.Errorf(am.ServerError, "the database has no aggregate_instance setting (migration 0005)")
	}
	p.cfg.Instance = v
	return v, nil
}

// worker claims and runs jobs until ctx ends.
func (p *Provisioner) worker(ctx context.Context, owner string) {
	for ctx.Err() == nil {
		j, err := p.st.ClaimJob(ctx, owner, p.cfg.Lease)
		if err != nil {
			if ctx.Err() == nil {
				p.log.Warn("provisioner: claiming a job", "err", err)
			}
			p.sleep(ctx, p.cfg.PollInterval)
			continue
		}
		if j == nil {
			p.sleep(ctx, p.cfg.PollInterval)
			continue
		}
		p.runJob(ctx, j)
		p.wake() // a sliver's next job may be due now
	}
}

// sleep waits d, a wake-up, or the end of ctx.
func (p *Provisioner) sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	case <-p.wakeC:
	}
}

// runJob runs one held job under a lease kept alive by a heartbeat; if the
// lease is lost, the job's context is cancelled and nothing more is written.
func (p *Provisioner) runJob(ctx context.Context, j *store.Job) {
	jctx, cancel := context.WithCancel(ctx)
	defer cancel()
	lost := make(chan struct{})
	hbDone := make(chan struct{})
	go func() {
		defer close(hbDone)
		t := time.NewTicker(p.cfg.Lease / 3)
		defer t.Stop()
		for {
			select {
			case <-jctx.Done():
				return
			case <-t.C:
				if err := p.st.RenewLease(jctx, j, p.cfg.Lease); store.IsLeaseLost(err) {
					close(lost)
					cancel()
					return
				} else if err != nil && jctx.Err() == nil {
					p.log.Warn("provisioner: renewing a lease", "job", j.ID, "err", err)
				}
			}
		}
	}()
	start := time.Now()
	result, err := p.do(jctx, j)
	cancel()
	<-hbDone
	select {
	case <-lost:
		p.log.Warn("provisioner: lost the lease of a job; another worker has it", "job", j.ID, "kind", j.Kind, "sliver", j.SliverURN)
		return
	default:
	}
	if ctx.Err() != nil {
		return // stopping: leave the lease to run out, another worker resumes
	}
	bg := context.WithoutCancel(ctx)
	log := p.log.With("job", j.ID, "kind", j.Kind, "sliver", j.SliverURN, "node", j.NodeName, "attempt", j.Attempts)
	switch {
	case err == nil:
		p.JobsDone.Add(1)
		p.observe(j.Kind, "done", time.Since(start).Seconds())
		log.Info("provisioner: job done", "result", result, "took", time.Since(start).Round(time.Millisecond))
		p.endJob(bg, j, p.st.FinishJob(bg, j, result))
	case transient(err) && j.Attempts < p.cfg.MaxAttempts:
		p.JobsRetried.Add(1)
		p.observe(j.Kind, "retry", 0)
		after := p.backoff(j.Attempts)
		log.Warn("provisioner: job failed, will retry", "err", err, "retry_in", after)
		p.noteRetry(bg, j, err, after)
		p.endJob(bg, j, p.st.RetryJob(bg, j, am.MessageOf(err), after))
	default:
		p.JobsFailed.Add(1)
		p.observe(j.Kind, "failed", time.Since(start).Seconds())
		log.Warn("provisioner: job failed", "err", err)
		msg := errText(err)
		if transient(err) && j.Kind != store.JobFetchData {
			// Out of attempts, not refused: the reconciliation runs it
			// again when the agent answers (store.RetryGaveUp; a teardown
			// through store.Converge).
			msg = store.GaveUpPrefix + fmt.Sprintf("%d attempts: %s", j.Attempts, msg)
			err = am.Wrap(am.CodeOf(err), err, "%s; retried when the node agent answers again", msg)
		}
		p.failed(bg, j, err)
		p.endJob(bg, j, p.st.FailJob(bg, j, msg))
	}
}

func (p *Provisioner) endJob(ctx context.Context, j *store.Job, err error) {
	if err != nil && !store.IsLeaseLost(err) {
		// The lease runs out and the job is done again: harmless, as every
		// step is idempotent.
		p.log.Warn("provisioner: recording the end of a job", "job", j.ID, "err", err)
	}
}

// backoff is BackoffBase·2^(attempt-1), capped, with ±25% jitter.
func (p *Provisioner) backoff(attempt int) time.Duration {
	d := float64(p.cfg.BackoffBase) * math.Pow(2, float64(attempt-1))
	if d > float64(p.cfg.BackoffMax) {
		d = float64(p.cfg.BackoffMax)
	}
	return time.Duration(d * (0.75 + 0.5*mrand.Float64()))
}

// transient errors are worth retrying: the agent could not be reached, was
// busy, or is still working.
func transient(err error) bool {
	switch am.CodeOf(err) {
	case am.Unavailable, am.TimedOut, am.Busy, am.InProgress, am.RPCError, am.ServerError:
		return true
	}
	return false
}

// errText is what a failure says in geni_error and jobs.last_error.
func errText(err error) string {
	if msg := am.MessageOf(err); msg != "" {
		return msg
	}
	return err.Error()
}

// client returns the (cached) client of an agent.
func (p *Provisioner) client(url string) *agent.Client {
	p.clientsMu.Lock()
	defer p.clientsMu.Unlock()
	c := p.clients[url]
	if c == nil {
		// Each transport gets its own copy: net/http edits the
		// NextProtos of the configuration it is given.
		c = agent.NewClient(url, p.cfg.AgentTLS.Clone())
		p.clients[url] = c
	}
	return c
}

// AgentID is the agent's id of a sliver: the name part of its URN when that
// is a valid agent id (ours always are), else a digest of the URN.
func AgentID(sliverURN string) string {
	name := sliverURN[strings.LastIndex(sliverURN, "+")+1:]
	if agent.ValidID(name) == nil {
		return name
	}
	sum := sha256.Sum256([]byte(sliverURN))
	return "s" + hex.EncodeToString(sum[:12])
}

// DataURL is where a sliver's /data is downloaded.
func (p *Provisioner) DataURL(sliverURN string) string {
	if p.cfg.PublicURL == "" {
		return ""
	}
	return p.cfg.PublicURL + "data/" + AgentID(sliverURN) + ".tar"
}
