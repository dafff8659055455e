package node

import (
	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/agent"
)

// SSH login (package agent/sshlogin) reaches a sliver's container through
// the engine: the agent's SSH server authenticates with the sliver's
// geni_users keys and runs the session as a process inside the container.
// This file is what the server asks the Service about a login name; the
// runtime verb that runs the process (agent.Execer) and the answer's type
// (agent.LoginTarget) are package agent's.

// LoginTarget returns the login target of sliver id (the SSH user name is
// the sliver id). Only a sliver with a container can be logged in to; an
// unknown, deleted or never started sliver is SEARCHFAILED. It reads the
// agent's records only, so the SSH server can ask it often.
func (s *Service) LoginTarget(id string) (agent.LoginTarget, error) {
	sl, err := s.lookup(id)
	if err != nil {
		return agent.LoginTarget{}, err
	}
	defer sl.mu.Unlock()
	r := sl.rec
	if r.ContainerID == "" || r.Spec == nil {
		return agent.LoginTarget{}, am.Errorf(am.SearchFailed, "sliver %s has no container to log in to", id)
	}
	if r.TimeLimitKilled {
		return agent.LoginTarget{}, am.Errorf(am.Expired, "sliver %s used up its time limit", id)
	}
	if r.StoppedByRequest {
		// geni_stop, Shutdown or the idle policy: no new logins, and the
		// server ends open ones; geni_start lets them in again.
		return agent.LoginTarget{}, am.Errorf(am.Refused, "sliver %s is stopped", id)
	}
	return agent.LoginTarget{SliverID: id, SliceURN: r.SliceURN, SliverURN: r.SliverURN, ContainerID: r.ContainerID,
		Users: append([]agent.User(nil), r.Spec.Users...)}, nil
}

// NoteSession records an SSH session's start or end in the change feed,
// from which the aggregate writes its audit row.
func (s *Service) NoteSession(ev agent.SessionEvent) { s.changes.session(ev) }

// login is the Status' login field for a record with a container.
func (s *Service) login(r *record) *agent.Login {
	if s.cfg.LoginPort <= 0 || r.ContainerID == "" {
		return nil
	}
	return &agent.Login{Host: s.cfg.LoginHost, Port: s.cfg.LoginPort, Username: r.ID}
}
