package node

import (
	"context"
	"errors"
	"fmt"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/agent"
)

// LinkSupport is what this agent offers for links, reported in its ping:
// nothing when it has no experiment network.
func (s *Service) LinkSupport() am.LinkSupport {
	if s.cfg.Links == nil {
		return am.LinkSupport{}
	}
	return s.cfg.Links.Support()
}

// errNoExperimentNetwork refuses links on an agent configured without one.
func errNoExperimentNetwork() error {
	return am.Errorf(am.Unsupported, "start: this node has no experiment network configured; links are not available here")
}

func linkErr(id string, err error) error {
	return am.Wrap(am.Error, err, "start: the links of %s could not be set up: %s", id, fmt.Sprint(err))
}

// attachLinks puts the running container of a locked sliver on its links.
// A failure kills the container and records the reason as its start error,
// so the sliver shows failed with why, not running without its network.
func (s *Service) attachLinks(ctx context.Context, sl *sliver) error {
	r := sl.rec
	if r.Spec == nil || len(r.Spec.Links) == 0 || r.ContainerID == "" {
		return nil
	}
	err := func() error {
		if s.cfg.Links == nil {
			return errNoExperimentNetwork()
		}
		cs, err := s.rt.Inspect(ctx, r.ContainerID)
		if err != nil {
			return err
		}
		if !cs.Running {
			return nil // attached when it runs again (Start)
		}
		if err := s.cfg.Links.Attach(ctx, r.ID, cs.Pid, r.Spec.Links); err != nil {
			return err
		}
		if r.LinksPid != cs.Pid {
			r.LinksPid = cs.Pid
			s.saveLogged(r)
		}
		return nil
	}()
	if err == nil {
		return nil
	}
	s.log.Warn("agent: link setup failed; killing the container", "sliver", r.ID, "err", err)
	if kerr := s.rt.Kill(ctx, r.ContainerID); kerr != nil && !errors.Is(kerr, agent.ErrNotFound) {
		s.log.Warn("agent: killing the container after a failed link setup", "sliver", r.ID, "err", kerr)
	}
	r.StartError = "links: " + err.Error()
	s.saveLogged(r)
	return linkErr(r.ID, err)
}

// relinkIfRestarted attaches the links again when the engine has restarted
// a locked sliver's container (restart policy): the new process has a new,
// empty network namespace. Seen at the next status poll. It reports
// whether it failed, in which case the container has been killed.
func (s *Service) relinkIfRestarted(ctx context.Context, sl *sliver, cs agent.ContainerState) (killed bool) {
	r := sl.rec
	if s.cfg.Links == nil || !cs.Running || cs.Pid == 0 || r.Spec == nil || len(r.Spec.Links) == 0 || cs.Pid == r.LinksPid {
		return false
	}
	s.log.Info("agent: container has a new process; attaching its links again", "sliver", r.ID, "pid", cs.Pid)
	if err := s.attachLinks(ctx, sl); err != nil {
		s.log.Warn("agent: re-attaching links", "sliver", r.ID, "err", err)
		return true
	}
	return false
}

// detachLinks removes a locked sliver's link interfaces, and the bridges
// and tunnels no container uses any more.
func (s *Service) detachLinks(ctx context.Context, sl *sliver) error {
	r := sl.rec
	if r == nil || r.Spec == nil || len(r.Spec.Links) == 0 || s.cfg.Links == nil {
		return nil
	}
	if err := s.cfg.Links.Detach(ctx, r.ID, r.Spec.Links); err != nil {
		return am.Wrap(am.ServerError, err, "the links of %s could not be removed: %s", r.ID, err)
	}
	return nil
}

// restoreLinks re-attaches the links of every running container after the
// agent started (the devices survive an agent restart, but not a reboot or
// a container restarted by the engine, which gets a new namespace).
func (s *Service) restoreLinks(ctx context.Context) {
	if s.cfg.Links == nil {
		return
	}
	for _, sl := range s.all() {
		sl.mu.Lock()
		if sl.rec != nil {
			if err := s.attachLinks(ctx, sl); err != nil {
				s.log.Warn("agent: restoring links", "sliver", sl.id, "err", err)
			}
		}
		sl.mu.Unlock()
	}
	if n, err := s.cfg.Links.Prune(ctx); err != nil {
		s.log.Warn("agent: pruning unused link bridges", "err", err)
	} else if n > 0 {
		s.log.Info("agent: removed unused link bridges", "count", n)
	}
}
