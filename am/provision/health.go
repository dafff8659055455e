package provision

import (
	"context"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/agent"
	"github.com/geniam/geniam/store"
)

// nodeHealth is what this process has seen of one agent.
type nodeHealth struct {
	failures  int
	answered  bool      // a poll of this process has succeeded
	downSince time.Time // first failure of the current run of failures
	unknown   map[string]bool
	links     *am.LinkSupport // what the agent last reported for links, as recorded in nodes.link_support
}

// healthLoop polls every agent each HealthInterval, and keeps a watcher on
// each agent's change feed (watch.go) for the changes in between.
func (p *Provisioner) healthLoop(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	every(ctx, p.cfg.HealthInterval, func() {
		p.watchAgents(ctx, &wg)
		p.CheckAgents(ctx)
	})
}

// every runs round now and then every interval until ctx ends.
func every(ctx context.Context, interval time.Duration, round func()) {
	for {
		round()
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}

// CheckAgents polls every agent once (List): an agent that fails DownAfter
// polls in a row makes its node unavailable and its slivers say so; one that
// answers has its node's own reason lifted and its slivers' states brought
// in line with what it reports.
func (p *Provisioner) CheckAgents(ctx context.Context) {
	nodes, err := p.st.AgentNodes(ctx)
	if err != nil {
		if ctx.Err() == nil {
			p.log.Warn("provisioner: health: reading nodes", "err", err)
		}
		return
	}
	done := make(chan struct{}, len(nodes))
	for _, n := range nodes {
		go func(n store.AgentNode) {
			defer func() { done <- struct{}{} }()
			p.checkAgent(ctx, n)
		}(n)
	}
	for range nodes {
		<-done
	}
}

func (p *Provisioner) nodeHealth(name string) *nodeHealth {
	p.healthMu.Lock()
	defer p.healthMu.Unlock()
	h := p.health[name]
	if h == nil {
		h = &nodeHealth{unknown: map[string]bool{}}
		p.health[name] = h
	}
	return h
}

func (p *Provisioner) checkAgent(ctx context.Context, n store.AgentNode) {
	h := p.nodeHealth(n.Name)
	// Slivers with a job under way before the list is taken are the job's
	// business too: a job that ends between List and reconcile's own read
	// must not leave its sliver looking "lost" (seen once in 100 under
	// make bench).
	pendingBefore, err := p.st.PendingJobSlivers(ctx, n.Name)
	if err != nil {
		p.log.Warn("provisioner: health: reading pending jobs", "node", n.Name, "err", err)
		return
	}
	lctx, cancel := context.WithTimeout(ctx, p.cfg.AgentTimeout)
	instance, err := p.instance(ctx)
	if err != nil {
		cancel()
		p.log.Warn("provisioner: health: reading the aggregate instance", "err", err)
		return
	}
	list, err := p.client(n.AgentURL).ListOf(lctx, instance)
	cancel()
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		p.healthMu.Lock()
		if h.failures == 0 {
			h.downSince = time.Now()
		}
		h.failures++
		failures, since := h.failures, h.downSince
		p.healthMu.Unlock()
		if failures >= p.cfg.DownAfter {
			changed, merr := p.st.MarkAgentUnreachable(ctx, n.Name, since, errText(err))
			if merr != nil {
				p.log.Warn("provisioner: health: recording an unreachable agent", "node", n.Name, "err", merr)
			} else if changed {
				p.log.Warn("provisioner: node agent unreachable: node made unavailable", "node", n.Name, "agent", n.AgentURL, "since", since, "err", err)
			}
		}
		return
	}
	p.healthMu.Lock()
	// This process's first good poll counts as a return too: the agent
	// may have come back while no process was polling it.
	wasFailing := h.failures > 0 || !h.answered
	h.failures, h.answered = 0, true
	p.healthMu.Unlock()
	unknown, err := p.reconcile(ctx, n, list, pendingBefore, instance)
	if err != nil {
		p.log.Warn("provisioner: health: reconciling", "node", n.Name, "err", err)
		return
	}
	// One ping says what the node supports for links and its disk space.
	pctx, cancel := context.WithTimeout(ctx, p.cfg.AgentTimeout)
	info, pingErr := p.client(n.AgentURL).PingInfo(pctx)
	cancel()
	if pingErr != nil && ctx.Err() == nil {
		p.log.Warn("provisioner: health: ping (link support, disk space)", "node", n.Name, "err", pingErr)
	}
	if pingErr == nil {
		p.recordLinkSupport(ctx, n, h, info.Links)
	}
	wasDown, err := p.st.MarkAgentReachable(ctx, n.Name, unknown)
	if err != nil {
		p.log.Warn("provisioner: health: recording a reachable agent", "node", n.Name, "err", err)
	} else if wasDown {
		p.log.Info("provisioner: node agent reachable again: node available", "node", n.Name, "agent", n.AgentURL)
	}
	if pingErr == nil {
		p.checkDisk(ctx, n, info.Disk)
	}
	// Jobs that ran out of attempts while the agent was away run again:
	// at once when it has just come back, else once per BackoffMax.
	again := p.cfg.BackoffMax
	if wasDown || wasFailing {
		again = 0
	}
	if count, err := p.st.RetryGaveUp(ctx, n.Name, again); err != nil {
		p.log.Warn("provisioner: health: retrying jobs that gave up", "node", n.Name, "err", err)
	} else if count > 0 {
		p.log.Info("provisioner: slivers whose jobs ran out of attempts are provisioned again", "node", n.Name, "slivers", count)
		p.wake()
	}
	if wasDown || wasFailing {
		// Jobs that failed while the agent was gone wait out backoffs of
		// up to BackoffMax: run them now that it answers.
		if moved, err := p.st.RetryNodeJobsNow(ctx, n.Name); err != nil {
			p.log.Warn("provisioner: health: retrying the node's jobs", "node", n.Name, "err", err)
		} else if moved > 0 {
			p.log.Info("provisioner: node agent answers again: its jobs in backoff run now", "node", n.Name, "jobs", moved)
			p.wake()
		}
	}
}

// recordLinkSupport records what the agent's ping said its kernel supports
// for links on the node when it differs from what this process last
// recorded (the first poll after the aggregate starts writes it once), so
// the advertisement and Allocate follow an agent restarted on a kernel that
// gained or lost, say, netem.
func (p *Provisioner) recordLinkSupport(ctx context.Context, n store.AgentNode, h *nodeHealth, ls am.LinkSupport) {
	p.healthMu.Lock()
	same := h.links != nil && *h.links == ls
	p.healthMu.Unlock()
	if same {
		return
	}
	if err := p.st.SetLinkSupport(ctx, n.Name, ls); err != nil {
		p.log.Warn("provisioner: health: recording the node's link support", "node", n.Name, "err", err)
		return
	}
	p.healthMu.Lock()
	h.links = &ls
	p.healthMu.Unlock()
	p.log.Info("provisioner: node agent reports link support", "node", n.Name, "links", ls.Enabled,
		"shaping", ls.Shaping(), "transport", ls.Transports())
}

// reconcile compares the agent's list with the aggregate's slivers on the
// node. Slivers with a job under way are left to the job; the others take
// the state the agent reports (a container that finished, crashed or was
// lost). What the agent runs that is not a live sliver is converged
// (store.Converge): a deleted or expired sliver is archived and torn down
// again, whatever became of its earlier teardown; a container the database
// never knew is a stray, reported (log, stray_containers,
// agent_health.unknown_containers) and removed only after StrayGrace (the
// default 0 never removes one: the database may have been restored from an
// old backup). Containers of other aggregates are not in the list at all
// (the agent filters by our instance label).
func (p *Provisioner) reconcile(ctx context.Context, n store.AgentNode, list []agent.Status, pendingBefore map[string]bool, instance string) ([]string, error) {
	slivers, err := p.st.NodeSlivers(ctx, n.Name)
	if err != nil {
		return nil, err
	}
	pending, err := p.st.PendingJobSlivers(ctx, n.Name)
	if err != nil {
		return nil, err
	}
	byID := make(map[string]agent.Status, len(list))
	for _, st := range list {
		byID[st.ID] = st
	}
	known := map[string]bool{}
	for _, s := range slivers {
		id := AgentID(s.URN)
		known[id] = true
		if pending[s.URN] || pendingBefore[s.URN] {
			continue
		}
		st, ok := byID[id]
		var u *store.SliverUpdate
		if !ok {
			if s.Operational == am.Failed {
				continue
			}
			msg := "agent on " + n.Name + " has no record of this sliver (lost on the node); geni_start provisions it again"
			u = &store.SliverUpdate{Operational: am.Failed, Error: &msg, OnlyIf: []am.OperationalState{s.Operational}}
		} else if u = agentUpdate(s, st, n); u == nil {
			continue
		}
		if _, err := p.st.UpdateSliver(ctx, s.URN, "agent:poll", *u); err != nil {
			return nil, err
		}
	}
	// What the agent runs that is not a live sliver: a deleted or expired
	// sliver's container is torn down again, however its earlier teardown
	// ended; a container the database never knew is a stray (reported,
	// removed after StrayGrace). A teardown under way is left to its job.
	var found []store.AgentContainer
	for id, st := range byID {
		jobURN := st.SliverURN
		if jobURN == "" || AgentID(jobURN) != id {
			jobURN = "urn:publicid:IDN+" + p.cfg.Authority + "+sliver+" + id
		}
		if known[id] || pending[jobURN] || pendingBefore[jobURN] {
			continue
		}
		found = append(found, store.AgentContainer{AgentID: id, SliverURN: st.SliverURN, SliceURN: st.SliceURN, State: string(st.State),
			JobURN: jobURN, Ours: st.Aggregate != "" && st.Aggregate == instance})
	}
	sort.Slice(found, func(i, j int) bool { return found[i].AgentID < found[j].AgentID })
	conv, err := p.st.Converge(ctx, n.Name, found, p.cfg.StrayGrace)
	if err != nil {
		return nil, err
	}
	if len(conv.Teardowns)+len(conv.Removals) > 0 {
		p.log.Warn("provisioner: reconciliation: teardowns enqueued for what the agent still runs", "node", n.Name,
			"deleted_slivers", conv.Teardowns, "strays_past_grace", conv.Removals)
		p.metricsConverged(len(conv.Teardowns), len(conv.Removals))
		p.wake()
	}
	p.healthMu.Lock()
	h := p.health[n.Name]
	var fresh []string
	for _, id := range conv.Strays {
		if h != nil && !h.unknown[id] {
			h.unknown[id] = true
			fresh = append(fresh, id)
		}
	}
	p.healthMu.Unlock()
	for _, id := range fresh {
		st := byID[id]
		how := "left alone (provisioning.stray_grace is 0)"
		if st.Aggregate == "" {
			how = "left alone (it carries no aggregate instance: another aggregate may own it)"
		} else if p.cfg.StrayGrace > 0 {
			how = "removed, after an archive of /data, once seen for " + p.cfg.StrayGrace.String()
		}
		p.log.Warn("provisioner: the agent runs a sliver of this aggregate the database does not know; "+how,
			"node", n.Name, "agent_sliver", id, "sliver_urn", st.SliverURN, "slice_urn", st.SliceURN, "state", st.State)
	}
	return conv.Strays, nil
}

// agentUpdate is the change a status from the agent makes to sliver s, or
// nil when there is none to make. It applies only while s is still in the
// state it was read in (a job may have moved it since).
func agentUpdate(s am.Sliver, st agent.Status, n store.AgentNode) *store.SliverUpdate {
	u := sliverUpdate(st, n.Name, n.AgentURL)
	if sameState(s, u) {
		return nil
	}
	if u.Operational == am.Configuring && s.Operational != am.Configuring {
		// An image fetched but no container (a start the agent refused):
		// the sliver's failure stands until the user acts, rather than
		// flipping back to configuring.
		return nil
	}
	u.OnlyIf = []am.OperationalState{s.Operational}
	return &u
}

// sameState: the update would change nothing a user sees.
func sameState(s am.Sliver, u store.SliverUpdate) bool {
	if u.Operational != s.Operational {
		return false
	}
	if u.Error != nil && *u.Error != s.Error {
		return false
	}
	if u.ResourceMsg != nil && *u.ResourceMsg != s.ResourceMsg {
		return false
	}
	if u.ExitCode != nil {
		a, b := *u.ExitCode, s.ExitCode
		if (a == nil) != (b == nil) || (a != nil && *a != *b) {
			return false
		}
	}
	if u.Login != nil && (u.Login.Host != s.LoginHost || u.Login.Port != s.LoginPort || u.Login.User != s.LoginUser) {
		return false
	}
	if (u.StdoutTail != nil && *u.StdoutTail != s.StdoutTail) || (u.StderrTail != nil && *u.StderrTail != s.StderrTail) {
		return false
	}
	return true
}

// housekeeping: expiry warnings, pruning of archives and old jobs, and the
// requeue belt, every WarnInterval.
func (p *Provisioner) housekeeping(ctx context.Context) {
	every(ctx, p.cfg.WarnInterval, func() { p.Housekeep(ctx) })
}

// Housekeep runs one round of housekeeping.
func (p *Provisioner) Housekeep(ctx context.Context) {
	now := time.Now()
	warnings, err := p.st.DueExpiryWarnings(ctx, now)
	if err != nil && ctx.Err() == nil {
		p.log.Warn("provisioner: expiry warnings", "err", err)
	}
	for _, w := range warnings {
		// One line per warning, at WARN, with the fields a mail router
		// needs: whom to tell (created_by) and about what.
		p.log.Warn("sliver expires soon", "event", "expiry_warning", "lead", w.Lead, "sliver", w.SliverURN, "slice", w.SliceURN,
			"node", w.NodeName, "user", w.CreatedBy, "expires", w.ExpiresAt.UTC().Format(time.RFC3339),
			"note", "its /data is archived at expiry; Renew to keep it running")
	}
	archives, err := p.st.ExpiredArchives(ctx, now)
	if err != nil && ctx.Err() == nil {
		p.log.Warn("provisioner: pruning archives", "err", err)
	}
	for _, a := range archives {
		if err := os.Remove(a.Path); err != nil && !os.IsNotExist(err) {
			p.log.Warn("provisioner: removing an expired archive", "path", a.Path, "err", err)
			continue
		}
		if err := os.Remove(p.LogsArchivePath(a.SliverURN)); err != nil && !os.IsNotExist(err) {
			p.log.Warn("provisioner: removing an expired output archive", "sliver", a.SliverURN, "err", err)
		}
		p.log.Info("provisioner: archive retention ended: removed", "sliver", a.SliverURN, "path", a.Path)
	}
	if _, err := p.st.PruneEnded(ctx, p.cfg.ArchiveRetention); err != nil && ctx.Err() == nil {
		p.log.Warn("provisioner: pruning ended slivers", "err", err)
	}
	if n, err := p.st.PruneJobs(ctx, p.cfg.JobRetention); err != nil && ctx.Err() == nil {
		p.log.Warn("provisioner: pruning jobs", "err", err)
	} else if n > 0 {
		p.log.Info("provisioner: old jobs pruned", "count", n)
	}
	if _, err := p.st.PruneProcesses(ctx, 24*time.Hour); err != nil && ctx.Err() == nil {
		p.log.Warn("provisioner: pruning processes", "err", err)
	}
	if n, err := p.st.RequeueConfiguring(ctx, 2*p.cfg.Lease); err != nil && ctx.Err() == nil {
		p.log.Warn("provisioner: requeue", "err", err)
	} else if n > 0 {
		p.log.Warn("provisioner: slivers left configuring without a job were requeued", "count", n)
		p.wake()
	}
}

// checkDisk records the space of the agent's state filesystem; at or below
// DiskPressure free, the node takes no new slivers and its slivers say why
// (store.RecordDisk), until space is back.
func (p *Provisioner) checkDisk(ctx context.Context, n store.AgentNode, d agent.Disk) {
	if d.TotalBytes <= 0 {
		return // the list answered; an agent too old to say is no pressure
	}
	pressure := float64(d.FreeBytes) <= p.cfg.DiskPressure*float64(d.TotalBytes)
	changed, err := p.st.RecordDisk(ctx, n.Name, d.FreeBytes, d.TotalBytes, pressure)
	if err != nil {
		p.log.Warn("provisioner: health: recording disk space", "node", n.Name, "err", err)
	} else if changed && pressure {
		p.log.Warn("provisioner: disk pressure on a node: it takes no new slivers", "node", n.Name, "free_bytes", d.FreeBytes, "total_bytes", d.TotalBytes)
	} else if changed {
		p.log.Info("provisioner: disk pressure on a node is over", "node", n.Name, "free_bytes", d.FreeBytes, "total_bytes", d.TotalBytes)
	}
}
