package provision

import (
	"github.com/geniam/geniam/am/metrics"
)

// jobBuckets suit agent jobs, in seconds: a cached start takes tens of
// milliseconds, a large image fetch minutes.
var jobBuckets = []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800}

// provisionMetrics are the provisioner's series, when a registry is given.
type provisionMetrics struct {
	jobs     *metrics.Counter   // by kind and outcome (done, retry, failed)
	duration *metrics.Histogram // by kind, finished jobs
	converge *metrics.Counter   // teardowns the reconciliation enqueued, by what
	takeover *metrics.Counter   // losses of this process's lock (jobs may be taken over)
}

// RegisterMetrics adds the provisioner's series to r (call once, before Run):
// geniam_provision_jobs_total{kind,outcome}, geniam_provision_job_seconds{kind}
// and geniam_provision_agents_unreachable.
func (p *Provisioner) RegisterMetrics(r *metrics.Registry) {
	p.metrics = &provisionMetrics{
		jobs:     r.NewCounter("geniam_provision_jobs_total", "Agent jobs ended by this process, by kind and outcome (done, retry, failed).", "kind", "outcome"),
		duration: r.NewHistogram("geniam_provision_job_seconds", "Time from claim to end of agent jobs that ended (done or failed), by kind.", jobBuckets, "kind"),
		converge: r.NewCounter("geniam_provision_reconcile_teardowns_total", "Teardowns the reconciliation enqueued for containers an agent still ran: deleted (a deleted or expired sliver) or stray (unknown, past provisioning.stray_grace).", "what"),
		takeover: r.NewCounter("geniam_provision_process_lock_lost_total", "Times this process lost its database lock (its jobs may have been taken over by another process)."),
	}
	r.NewGaugeFunc("geniam_provision_agents_unreachable", "Node agents this process currently finds unreachable.", func() float64 {
		p.healthMu.Lock()
		defer p.healthMu.Unlock()
		n := 0
		for _, h := range p.health {
			if h.failures >= p.cfg.DownAfter {
				n++
			}
		}
		return float64(n)
	})
}

func (p *Provisioner) observe(kind, outcome string, seconds float64) {
	if p.metrics == nil {
		return
	}
	p.metrics.jobs.Inc(kind, outcome)
	if outcome != "retry" {
		p.metrics.duration.Observe(seconds, kind)
	}
}

func (p *Provisioner) metricsConverged(deleted, strays int) {
	if p.metrics == nil {
		return
	}
	p.metrics.converge.Add(float64(deleted), "deleted")
	p.metrics.converge.Add(float64(strays), "stray")
}
