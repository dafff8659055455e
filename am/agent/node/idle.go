package node

import (
	"context"
	"fmt"
	"time"

	"github.com/geniam/geniam/am/agent"
)

// Idle detection, after ProtoGENI's idle-swap: when the aggregate's policy
// asks for it (StartRequest.IdleStopSeconds), the agent measures each
// running container's activity (CPU time, network bytes, SSH login
// sessions), warns IdleWarnSeconds before the end (Status.Idle, an
// event=idle_warning log line, a change for the aggregate's feed), then
// stops the container; container and /data are kept, and geni_start
// (Start) brings it back.

// idleTrack is the in-memory measure of one sliver (guarded by sliver.mu).
type idleTrack struct {
	lastActive time.Time
	cpu, net   uint64
	sampled    bool
	warned     bool
}

// Activity below these amounts in one check interval is idleness.
const (
	idleCPUFraction = 0.01 // of one CPU
	idleNetBytes    = 4096
)

// NoteActivity marks the sliver active now (an SSH session is open).
func (s *Service) NoteActivity(id string) {
	if agent.ValidID(id) != nil {
		return
	}
	sl := s.get(id)
	sl.mu.Lock()
	sl.idle.lastActive = time.Now()
	sl.mu.Unlock()
}

// idleLoop checks every IdleCheckInterval.
func (s *Service) idleLoop(ss agent.StatsSource) {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.IdleCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		for _, sl := range s.all() {
			s.checkIdle(ss, sl)
		}
	}
}

func (s *Service) checkIdle(ss agent.StatsSource, sl *sliver) {
	sl.mu.Lock()
	defer sl.mu.Unlock()
	r := sl.rec
	if r == nil || r.Spec == nil || r.Spec.IdleStopSeconds <= 0 || r.ContainerID == "" || r.StoppedByRequest {
		sl.idle = idleTrack{}
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	// Only a running container can be idle: one whose command finished
	// keeps its exit code, not an idle stop.
	if cs, err := s.rt.Inspect(ctx, r.ContainerID); err != nil || !cs.Running {
		sl.idle = idleTrack{}
		return
	}
	st, err := ss.Stats(ctx, r.ContainerID)
	if err != nil {
		return // not running, or the engine is busy: look again next time
	}
	now := time.Now()
	tr := &sl.idle
	busyCPU := uint64(idleCPUFraction * float64(s.cfg.IdleCheckInterval))
	if !tr.sampled || st.CPUNanos < tr.cpu || st.CPUNanos-tr.cpu > busyCPU || st.NetBytes < tr.net || st.NetBytes-tr.net > idleNetBytes {
		if tr.lastActive.IsZero() || tr.sampled {
			tr.lastActive = now
		}
		tr.warned = false
	}
	tr.cpu, tr.net, tr.sampled = st.CPUNanos, st.NetBytes, true
	stopAfter := time.Duration(r.Spec.IdleStopSeconds) * time.Second
	warnBefore := time.Duration(r.Spec.IdleWarnSeconds) * time.Second
	idleFor := now.Sub(tr.lastActive)
	switch {
	case idleFor >= stopAfter:
		if err := s.rt.Stop(ctx, r.ContainerID, s.cfg.StopGrace); err != nil {
			s.log.Warn("agent: idle sliver could not be stopped", "sliver", sl.id, "err", err)
			return
		}
		r.StoppedByRequest, r.IdleStoppedAt = true, now.UTC()
		s.saveLogged(r)
		s.log.Info("agent: idle sliver stopped (container and /data kept)", "event", "idle_stop", "sliver", sl.id,
			"slice", r.SliceURN, "idle_since", tr.lastActive.UTC())
		sl.idle = idleTrack{}
	case idleFor >= stopAfter-warnBefore && !tr.warned:
		tr.warned = true
		s.changes.bump(sl.id)
		s.log.Warn("agent: idle sliver will be stopped", "event", "idle_warning", "sliver", sl.id, "slice", r.SliceURN,
			"idle_since", tr.lastActive.UTC(), "stop_at", tr.lastActive.Add(stopAfter).UTC())
	}
}

// idleStatus is the Status' idle field of a locked sliver.
func (s *Service) idleStatus(sl *sliver) *agent.IdleStatus {
	r := sl.rec
	if r.Spec == nil || r.Spec.IdleStopSeconds <= 0 {
		return nil
	}
	if !r.IdleStoppedAt.IsZero() {
		t := r.IdleStoppedAt
		return &agent.IdleStatus{Stopped: &t}
	}
	if sl.idle.lastActive.IsZero() {
		return nil
	}
	return &agent.IdleStatus{Since: sl.idle.lastActive.UTC(), StopAt: sl.idle.lastActive.Add(time.Duration(r.Spec.IdleStopSeconds) * time.Second).UTC(),
		Warned: sl.idle.warned}
}

// idleReason is the stopped Status' reason after an idle stop.
func idleReason(r *record) string {
	if r.IdleStoppedAt.IsZero() {
		return ""
	}
	return fmt.Sprintf("stopped at %s for idleness (container and /data kept; geni_start brings it back)", r.IdleStoppedAt.Format(time.RFC3339))
}
