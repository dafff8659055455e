package node

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/agent"
)

// Stop stops the running container (geni_stop); Start starts it again.
func (s *Service) Stop(ctx context.Context, id string) (agent.Status, error) {
	sl, err := s.lookup(id)
	if err != nil {
		return agent.Status{}, err
	}
	defer sl.mu.Unlock()
	if sl.rec.ContainerID == "" {
		return agent.Status{}, am.Errorf(am.SearchFailed, "stop: sliver %s has no container", id)
	}
	sl.rec.StoppedByRequest, sl.rec.IdleStoppedAt = true, time.Time{}
	if err := s.save(sl.rec); err != nil {
		return agent.Status{}, err
	}
	if err := s.rt.Stop(ctx, sl.rec.ContainerID, s.cfg.StopGrace); err != nil && !errors.Is(err, agent.ErrNotFound) {
		return agent.Status{}, engineErr("stop", err)
	}
	return s.status(ctx, sl)
}

// Start starts the existing container of a sliver again (geni_start after
// geni_stop, or a re-run of one that exited). The time limit, if any, still
// counts from the first start.
func (s *Service) Start(ctx context.Context, id string) (agent.Status, error) {
	sl, err := s.lookup(id)
	if err != nil {
		return agent.Status{}, err
	}
	defer sl.mu.Unlock()
	r := sl.rec
	if r.ContainerID == "" {
		return agent.Status{}, am.Errorf(am.SearchFailed, "start: sliver %s has no container; create it with PUT .../container", id)
	}
	if r.TimeLimitKilled {
		return agent.Status{}, am.Errorf(am.Expired, "start: sliver %s used up its time limit", id)
	}
	r.StoppedByRequest, r.StartError, r.IdleStoppedAt = false, "", time.Time{}
	sl.idle = idleTrack{}
	if err := s.save(r); err != nil {
		return agent.Status{}, err
	}
	if err := s.ensureData(ctx, id, s.dataQuota(r.Spec)); err != nil {
		return agent.Status{}, am.Wrap(am.ServerError, err, "start: could not prepare the /data of %s", id)
	}
	if err := s.rt.Start(ctx, r.ContainerID); err != nil {
		r.StartError = err.Error()
		s.saveLogged(r)
		return agent.Status{}, am.Wrap(am.Error, err, "start: the container of %s did not start: %s", id, err)
	}
	if err := s.attachLinks(ctx, sl); err != nil {
		return agent.Status{}, err
	}
	s.armTimeLimit(sl)
	return s.status(ctx, sl)
}

// Kill stops and removes the sliver's container (AERPAW killContainer). The
// image, the data and the record stay. Killing what is not there is not an
// error.
func (s *Service) Kill(ctx context.Context, id string) error {
	return s.locked(id, func(sl *sliver) error { return s.kill(ctx, sl) })
}

func (s *Service) kill(ctx context.Context, sl *sliver) error {
	if sl.timer != nil {
		sl.timer.Stop()
		sl.timer = nil
	}
	// Every container of ours labelled with this sliver, not only the one in
	// the record: a crash may have left another.
	cs, err := s.rt.List(ctx, s.sliverLabels(sl.id))
	if err != nil {
		return engineErr("kill", err)
	}
	ids := []string{}
	for _, c := range cs {
		ids = append(ids, c.ID)
	}
	if sl.rec != nil && sl.rec.ContainerID != "" && !slices.Contains(ids, sl.rec.ContainerID) {
		ids = append(ids, sl.rec.ContainerID)
	}
	for _, cid := range ids {
		if err := s.rt.Remove(ctx, cid); err != nil {
			return engineErr("kill", err)
		}
		s.log.Info("agent: container removed", "sliver", sl.id, "container", cid)
	}
	if err := s.detachLinks(ctx, sl); err != nil {
		return err
	}
	if r := sl.rec; r != nil && (r.ContainerID != "" || r.StartError != "" || r.Spec != nil) {
		r.ContainerID, r.StartError, r.Spec = "", "", nil
		r.StoppedByRequest, r.TimeLimitKilled, r.Deadline = false, false, time.Time{}
		if r.Adopted && r.Image.State == agent.ImageNone {
			// An adopted container was all we knew of it.
			sl.rec = nil
			return s.removeRecord(r.ID)
		}
		return s.save(r)
	}
	return nil
}
