package provision

import (
	"context"
	"sync"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/agent"
	"github.com/geniam/geniam/store"
)

// State within a second: besides the periodic health poll, this process
// long-polls every agent's GET /v2/changes (agent/node/changes.go). When an
// agent says which slivers changed (a container exited, crashed, was killed
// for memory or time, restarted), their statuses are read and applied at
// once, the way the health poll applies them; when it cannot say, the whole
// node is checked (checkAgent). So Status shows a container's exit within a
// second. An agent that predates /v2/changes is left to the poll. The feed
// also carries the SSH sessions' starts and ends, written to the audit
// trail here (ssh.go).

// changeWait is one long poll; under the agent's own cap (60 s) and the
// client's response timeout.
const changeWait = 25 * time.Second

// minCheckGap spaces the checks one agent's changes cause, so a node whose
// containers churn is not listed continuously.
const minCheckGap = 200 * time.Millisecond

// watchers are the long-poll loops of this process, by node name and URL.
type watchers struct {
	mu      sync.Mutex
	running map[string]bool
	wanted  map[string]bool
}

// watchAgents starts a watcher for every agent node not yet watched; a
// watcher whose node is gone (or moved to another URL) ends by itself.
func (p *Provisioner) watchAgents(ctx context.Context, wg *sync.WaitGroup) {
	nodes, err := p.st.AgentNodes(ctx)
	if err != nil {
		return // the health loop logs it
	}
	w := &p.watch
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.running == nil {
		w.running = map[string]bool{}
	}
	w.wanted = map[string]bool{}
	for _, n := range nodes {
		key := n.Name + " " + n.AgentURL
		w.wanted[key] = true
		if w.running[key] {
			continue
		}
		w.running[key] = true
		wg.Add(1)
		go func(n store.AgentNode, key string) {
			defer wg.Done()
			p.watchAgent(ctx, n, key)
			w.mu.Lock()
			delete(w.running, key)
			w.mu.Unlock()
		}(n, key)
	}
}

func (p *Provisioner) stillWanted(key string) bool {
	p.watch.mu.Lock()
	defer p.watch.mu.Unlock()
	return p.watch.wanted[key]
}

// watchAgent long-polls one agent and checks what changed: the slivers it
// names, or the whole node when it cannot name them.
func (p *Provisioner) watchAgent(ctx context.Context, n store.AgentNode, key string) {
	c := p.client(n.AgentURL)
	var seq uint64
	var last time.Time
	for ctx.Err() == nil && p.stillWanted(key) {
		a, err := c.WaitChange(ctx, seq, changeWait)
		if am.CodeOf(err) == am.Unsupported {
			p.log.Info("provisioner: agent has no change feed; its node follows the health poll", "node", n.Name, "agent", n.AgentURL)
			return
		}
		if err != nil {
			// Unreachable: the health poll marks the node; try again later.
			p.sleep(ctx, min(p.cfg.HealthInterval, 5*time.Second))
			continue
		}
		if a.Seq == seq {
			continue
		}
		if len(a.Sessions) > 0 {
			if err := p.auditSessions(ctx, n, a.Sessions); err != nil {
				// Ask again from the same number: the agent still has them.
				p.log.Warn("provisioner: writing the audit rows of SSH sessions; retrying", "node", n.Name, "err", err)
				p.sleep(ctx, min(p.cfg.HealthInterval, 5*time.Second))
				continue
			}
		}
		first := seq == 0
		seq = a.Seq
		if first {
			continue // the health loop has just checked the node
		}
		if gap := time.Since(last); gap < minCheckGap {
			select {
			case <-ctx.Done():
				return
			case <-time.After(minCheckGap - gap):
			}
		}
		last = time.Now()
		if a.All {
			p.checkAgent(ctx, n)
		} else if len(a.Slivers) > 0 {
			p.checkSlivers(ctx, n, c, a.Slivers)
		}
	}
}

// checkSlivers brings the named slivers of a node in line with what their
// agent reports, as the health poll does, reading only their statuses, and
// only of slivers without a job under way (the job reports itself). A
// sliver the agent no longer knows is left to the next full check, which
// tells a lost sliver from a deleted one.
func (p *Provisioner) checkSlivers(ctx context.Context, n store.AgentNode, c *agent.Client, ids []string) {
	slivers, err := p.st.NodeSlivers(ctx, n.Name)
	if err != nil {
		return
	}
	pendingBefore, err := p.st.PendingJobSlivers(ctx, n.Name)
	if err != nil {
		return
	}
	byID := make(map[string]am.Sliver, len(slivers))
	for _, s := range slivers {
		if !pendingBefore[s.URN] {
			byID[AgentID(s.URN)] = s
		}
	}
	reports := map[string]agent.Status{}
	for _, id := range ids {
		if _, ok := byID[id]; !ok {
			continue
		}
		actx, cancel := context.WithTimeout(ctx, p.cfg.AgentTimeout)
		st, err := c.Status(actx, id)
		cancel()
		if err == nil {
			reports[id] = st
		}
	}
	if len(reports) == 0 {
		return
	}
	pending, err := p.st.PendingJobSlivers(ctx, n.Name)
	if err != nil {
		return
	}
	for id, st := range reports {
		s := byID[id]
		if pending[s.URN] {
			continue
		}
		if u := agentUpdate(s, st, n); u != nil {
			if _, err := p.st.UpdateSliver(ctx, s.URN, "agent:change", *u); err != nil && ctx.Err() == nil {
				p.log.Warn("provisioner: recording an agent's change", "sliver", s.URN, "err", err)
			}
		}
	}
}
