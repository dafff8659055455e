package provision

import (
	"context"
	"os"
	"sort"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/agent"
	"github.com/geniam/geniam/store"
)

// nodeHealth is what this process has seen of one agent.
type nodeHealth struct {
	failures  int
	downSince time.Time // first failure of the current run of failures
	unknown   map[string]bool
	links     *am.LinkSupport // what the agent last reported for links, as recorded in nodes.link_support
}

// healthLoop polls every agent each HealthInterval.
func (p *Provisioner) healthLoop(ctx context.Context) {
	for {
		p.CheckAgents(ctx)
		select {
		case <-ctx.Done():
			return
		case <-time.After(p.cfg.HealthInterval):
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
	list, err := p.client(n.AgentURL).List(lctx)
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
	h.failures = 0
	p.healthMu.Unlock()
	unknown, err := p.reconcile(ctx, n, list, pendingBefore)
	if err != nil {
		p.log.Warn("provisioner: health: reconciling", "node", n.Name, "err", err)
		return
	}
	p.recordLinkSupport(ctx, n, h)
	wasDown, err := p.st.MarkAgentReachable(ctx, n.Name, unknown)
	if err != nil {
		p.log.Warn("provisioner: health: recording a reachable agent", "node", n.Name, "err", err)
	} else if wasDown {
		p.log.Info("provisioner: node agent reachable again: node available", "node", n.Name, "agent", n.AgentURL)
	}
}

// recordLinkSupport asks the agent what its kernel supports for links and
// records it on the node when it differs from what this process last
// recorded (the first poll after the aggregate starts writes it once), so
// the advertisement and Allocate follow an agent restarted on a kernel that
// gained or lost, say, netem.
func (p *Provisioner) recordLinkSupport(ctx context.Context, n store.AgentNode, h *nodeHealth) {
	lctx, cancel := context.WithTimeout(ctx, p.cfg.AgentTimeout)
	info, err := p.client(n.AgentURL).PingInfo(lctx)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			p.log.Warn("provisioner: health: asking the agent what it supports for links", "node", n.Name, "err", err)
		}
		return
	}
	p.healthMu.Lock()
	same := h.links != nil && *h.links == info.Links
	p.healthMu.Unlock()
	if same {
		return
	}
	if err := p.st.SetLinkSupport(ctx, n.Name, info.Links); err != nil {
		p.log.Warn("provisioner: health: recording the node's link support", "node", n.Name, "err", err)
		return
	}
	p.healthMu.Lock()
	h.links = &info.Links
	p.healthMu.Unlock()
	p.log.Info("provisioner: node agent reports link support", "node", n.Name, "links", info.Links.Enabled,
		"shaping", info.Links.Shaping(), "transport", info.Links.Transports())
}

// reconcile compares the agent's list with the aggregate's slivers on the
// node. Slivers with a job under way are left to the job; the others take
// the state the agent reports (a container that finished, crashed or was
// lost). Slivers the agent runs that the aggregate does not know are
// reported to the operator (log, agent_health.unknown_containers), never
// deleted: they may be an operator's, or the aggregate's database may have
// been restored from an old backup.
func (p *Provisioner) reconcile(ctx context.Context, n store.AgentNode, list []agent.Status, pendingBefore map[string]bool) ([]string, error) {
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
		var u store.SliverUpdate
		if !ok {
			if s.Operational == am.Failed {
				continue
			}
			msg := "agent on " + n.Name + " has no record of this sliver (lost on the node); geni_start provisions it again"
			u = store.SliverUpdate{Operational: am.Failed, Error: &msg}
		} else {
			u = sliverUpdate(st, n.Name)
			if sameState(s, u) {
				continue
			}
			if u.Operational == am.Configuring && s.Operational != am.Configuring {
				// An image fetched but no container (a start the agent
				// refused): the sliver's failure stands until the user
				// acts, rather than flipping back to configuring.
				continue
			}
		}
		u.OnlyIf = []am.OperationalState{s.Operational}
		if _, err := p.st.UpdateSliver(ctx, s.URN, "agent:poll", u); err != nil {
			return nil, err
		}
	}
	// Deleted slivers whose teardown is still queued are not strangers.
	var unknown []string
	p.healthMu.Lock()
	h := p.health[n.Name]
	p.healthMu.Unlock()
	for id, st := range byID {
		if known[id] {
			continue
		}
		if st.SliverURN != "" && pending[st.SliverURN] {
			continue
		}
		unknown = append(unknown, id)
		p.healthMu.Lock()
		seen := h != nil && h.unknown[id]
		if h != nil {
			h.unknown[id] = true
		}
		p.healthMu.Unlock()
		if !seen {
			p.log.Warn("provisioner: the agent runs a sliver the aggregate does not know; left alone for the operator",
				"node", n.Name, "agent_sliver", id, "sliver_urn", st.SliverURN, "slice_urn", st.SliceURN, "state", st.State)
		}
	}
	sort.Strings(unknown)
	return unknown, nil
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
	return true
}

// housekeeping: expiry warnings, pruning of archives and old jobs, and the
// requeue belt, every WarnInterval.
func (p *Provisioner) housekeeping(ctx context.Context) {
	for {
		p.Housekeep(ctx)
		select {
		case <-ctx.Done():
			return
		case <-time.After(p.cfg.WarnInterval):
		}
	}
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
		p.log.Info("provisioner: archive retention ended: removed", "sliver", a.SliverURN, "path", a.Path)
	}
	if n, err := p.st.PruneJobs(ctx, p.cfg.JobRetention); err != nil && ctx.Err() == nil {
		p.log.Warn("provisioner: pruning jobs", "err", err)
	} else if n > 0 {
		p.log.Info("provisioner: old jobs pruned", "count", n)
	}
	if n, err := p.st.RequeueConfiguring(ctx, 2*p.cfg.Lease); err != nil && ctx.Err() == nil {
		p.log.Warn("provisioner: requeue", "err", err)
	} else if n > 0 {
		p.log.Warn("provisioner: slivers left configuring without a job were requeued", "count", n)
		p.wake()
	}
}
