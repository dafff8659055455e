package provision

import (
	"context"
	"errors"
	"fmt"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/agent"
	"github.com/geniam/geniam/store"
)

// SSH logins (agent/sshlogin) through the aggregate's gate, like every
// other entry point (issue 15):
//
//   - whose keys an agent gets for a sliver (at provision and at every
//     geni_update_users) is the gate's decision, user by user: a user the
//     operator's lists refuse, or every user of a shut-down slice
//     (operators aside), gets none, so the agent refuses their logins and
//     ends their open sessions within its check interval;
//   - the agent reports each session's start and end in its change feed
//     (agent.SessionEvent), and the watcher of that feed (watch.go) writes
//     an audit_log row for each, method SSH, naming the user whose key it
//     was.

// sshMethod names SSH logins at the gate and in the audit trail.
const sshMethod = "SSH"

// UseGate sets the aggregate's gate, which decides whose SSH keys the agents
// get and who may download /data. Call it before Run. Without a gate
// (tests, tools) every geni_users key is pushed and no download is served.
func (p *Provisioner) UseGate(g *am.Gate) { p.gate = g }

// loginUsers are the users of s whose keys its agent gets: those the gate
// lets log in to s's slice now. An error is the gate's own failure (the
// database), for the job to retry; a refusal only withholds the keys.
func (p *Provisioner) loginUsers(ctx context.Context, s *am.Sliver) ([]agent.User, error) {
	if p.gate == nil {
		return agentUsers(s.Users), nil
	}
	var granted []am.User
	for _, u := range s.Users {
		_, err := p.gate.Check(ctx, am.Access{Method: sshMethod, Caller: &am.Caller{URN: u.URN}, IdentityOnly: true,
			Slice: s.SliceURN})
		var refusal *am.Err
		switch {
		case err == nil:
			granted = append(granted, u)
		case errors.As(err, &refusal) && refusal.Code != am.ServerError && refusal.Code != am.Busy:
			p.log.Info("provisioner: SSH keys withheld", "sliver", s.URN, "user", u.URN, "reason", refusal.Msg)
		default:
			return nil, err
		}
	}
	return agentUsers(granted), nil
}

// WithdrawKeys pushes the users of every live sliver again where the gate
// now withholds keys: the operator's lists are read when the aggregate
// starts and again on SIGHUP, so a user put on the deny list loses their
// logins (and open sessions) then, not only at the sliver's next
// geni_update_users. Run calls it once; serve calls it after each policy
// reload; the next start or reload tries again after an error.
func (p *Provisioner) WithdrawKeys(ctx context.Context) error {
	if p.gate == nil {
		return nil
	}
	nodes, err := p.st.AgentNodes(ctx)
	if err != nil {
		return err
	}
	for _, n := range nodes {
		if err := p.withdrawNodeKeys(ctx, n); err != nil {
			return err
		}
	}
	return nil
}

func (p *Provisioner) withdrawNodeKeys(ctx context.Context, n store.AgentNode) error {
	slivers, err := p.st.NodeSlivers(ctx, n.Name)
	if err != nil {
		return err
	}
	pending, err := p.st.PendingJobSlivers(ctx, n.Name)
	if err != nil {
		return err
	}
	for _, s := range slivers {
		if pending[s.URN] || len(s.Users) == 0 {
			continue // a job under way pushes the gate's users itself
		}
		users, err := p.loginUsers(ctx, &s)
		if err != nil {
			return err
		}
		if len(users) == len(s.Users) {
			continue
		}
		actx, cancel := context.WithTimeout(ctx, p.cfg.AgentTimeout)
		_, err = p.client(n.AgentURL).UpdateUsers(actx, AgentID(s.URN), users)
		cancel()
		if err != nil {
			// The node may be down; its slivers' logins end with it.
			p.log.Warn("provisioner: could not withdraw SSH keys the gate refuses", "sliver", s.URN, "node", n.Name, "err", err)
			continue
		}
		p.log.Info("provisioner: withdrew SSH keys the gate refuses", "sliver", s.URN, "users", len(users), "of", len(s.Users))
	}
	return nil
}

func agentUsers(us []am.User) []agent.User {
	out := make([]agent.User, 0, len(us))
	for _, u := range us {
		out = append(out, agent.User{URN: u.URN, Keys: u.Keys})
	}
	return out
}

// auditSessions writes the audit rows of the session events node n's agent
// reported. Each process watching the agent writes them; the store keeps
// one row per event.
func (p *Provisioner) auditSessions(ctx context.Context, n store.AgentNode, evs []agent.SessionEvent) error {
	recs := make([]*am.AuditRecord, 0, len(evs))
	for _, ev := range evs {
		recs = append(recs, sessionRecord(n.Name, ev))
	}
	return p.st.AuditSessions(ctx, recs...)
}

// sessionRecord is the audit row of one session event: the user whose key
// logged in (the agent has it from geni_users) as caller and user, the
// slice and sliver, the client's address; options say which event, key,
// node and command, and the exit status at the end.
func sessionRecord(node string, ev agent.SessionEvent) *am.AuditRecord {
	rec := &am.AuditRecord{At: ev.At, LogID: ev.Session, Method: sshMethod, RemoteAddr: ev.Remote, Caller: ev.User,
		Options: map[string]any{"event": ev.Event, "key": ev.Key, "node": node, "command": ev.Command}}
	rec.NoteAuthorization(&am.Authorization{User: ev.User})
	rec.NoteSlice(ev.SliceURN)
	rec.NoteSlivers(ev.SliverURN)
	switch {
	case ev.Event == agent.SessionStart:
		rec.Output = "SSH session started: " + ev.Command
	case ev.ExitStatus != nil:
		rec.Options["exit_status"] = *ev.ExitStatus
		rec.Output = fmt.Sprintf("SSH session ended: exit status %d", *ev.ExitStatus)
	default:
		rec.Output = "SSH session ended without an exit status (the connection closed, or access ended)"
	}
	return rec
}
