package node

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/agent"
)

// Status reports the sliver's state, asking the engine for the container's.
func (s *Service) Status(ctx context.Context, id string) (agent.Status, error) {
	sl, err := s.lookup(id)
	if err != nil {
		return agent.Status{}, err
	}
	defer sl.mu.Unlock()
	return s.status(ctx, sl)
}

// status builds the Status of a locked sliver.
func (s *Service) status(ctx context.Context, sl *sliver) (st agent.Status, err error) {
	r := sl.rec
	st = agent.Status{ID: r.ID, SliceURN: r.SliceURN, SliverURN: r.SliverURN, Aggregate: r.Aggregate, Adopted: r.Adopted,
		Image: agent.ImageStatus{URL: r.Image.URL, SHA256: r.Image.SHA256, Verified: r.Image.Verified, ID: r.Image.ID,
			State: r.Image.State, Error: r.Image.Error, Bytes: r.Image.Bytes,
			StartedAt: timePtr(r.Image.StartedAt), FinishedAt: timePtr(r.Image.FinishedAt)}}
	if st.Image.State == "" {
		st.Image.State = agent.ImageNone
	}
	if st.Data = s.dataUsage(r.ID, s.dataQuota(r.Spec)); st.Data != nil && st.Data.OverQuota {
		usage := st.Data
		defer func() { // whatever else the status says, unless it failed
			if err == nil && st.Reason == "" {
				st.Reason = overQuotaNote(usage)
			}
		}()
	}
	if r.ContainerID == "" {
		switch {
		case r.StartError != "":
			st.State, st.Reason = agent.StateFailed, "start failed: "+r.StartError
		case r.Image.State == agent.ImageFetching:
			st.State = agent.StateFetching
		case r.Image.State == agent.ImageFailed:
			st.State, st.Reason = agent.StateFailed, "fetch failed: "+r.Image.Error
		case r.Image.State == agent.ImageReady:
			st.State = agent.StateFetched
		default:
			st.State = agent.StateEmpty
		}
		return st, nil
	}
	cst := &agent.ContainerStatus{ID: r.ContainerID, Network: r.Network, TimeLimitKilled: r.TimeLimitKilled, Deadline: timePtr(r.Deadline)}
	if r.Spec != nil {
		cst.Restart = r.Spec.Restart
		lim := s.limits(r.Spec)
		cst.Limits = &lim
	}
	st.Container = cst
	st.Login = s.login(r)
	st.Idle = s.idleStatus(sl)
	cs, err := s.rt.Inspect(ctx, r.ContainerID)
	if errors.Is(err, agent.ErrNotFound) {
		cst.EngineStatus = "missing"
		st.State, st.Reason = agent.StateFailed, "the container is gone from the engine (removed outside the agent?)"
		return st, nil
	} else if err != nil {
		return agent.Status{}, engineErr("status", err)
	}
	if s.relinkIfRestarted(ctx, sl, cs) { // failed, and killed the container
		if cs, err = s.rt.Inspect(ctx, r.ContainerID); err != nil {
			return agent.Status{}, engineErr("status", err)
		}
	}
	cst.EngineStatus, cst.Error, cst.OOMKilled, cst.RestartCount = cs.Status, cs.Error, cs.OOMKilled, cs.RestartCount
	cst.StartedAt, cst.FinishedAt = timePtr(cs.StartedAt), timePtr(cs.FinishedAt)
	finished := cs.Status == "exited" || cs.Status == "dead"
	if finished {
		code := cs.ExitCode
		cst.ExitCode, st.ExitCode = &code, &code
	}
	switch {
	case cs.Status == "restarting":
		st.State = agent.StateRestarting
	case cs.Running:
		st.State = agent.StateRunning
	case r.TimeLimitKilled:
		st.State, st.Reason = agent.StateFailed, fmt.Sprintf("killed at its time limit of %d s", timeLimit(r.Spec))
	case cs.OOMKilled:
		st.State, st.Reason = agent.StateFailed, "killed: out of memory"
	case cs.Error != "" || r.StartError != "":
		st.State, st.Reason = agent.StateFailed, "start failed: "+firstNonEmpty(cs.Error, r.StartError)
	case r.StoppedByRequest:
		st.State, st.Reason = agent.StateStopped, idleReason(r)
	case finished:
		st.State = agent.StateExited
	default:
		st.State = agent.StateCreated
	}
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if o, e, err := s.rt.Logs(lctx, r.ContainerID, s.cfg.LogTailLines, s.cfg.LogTailBytes); err == nil {
		st.StdoutTail, st.StderrTail = strings.ToValidUTF8(string(o), "\uFFFD"), strings.ToValidUTF8(string(e), "\uFFFD")
	} else {
		s.log.Warn("agent: reading container logs", "sliver", r.ID, "err", err)
	}
	return st, nil
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// List reports every sliver the agent knows, sorted by id: the aggregate
// compares this with its own view to reconcile.
func (s *Service) List(ctx context.Context) ([]agent.Status, error) {
	var ids []string
	for _, sl := range s.all() {
		ids = append(ids, sl.id)
	}
	sort.Strings(ids)
	out := []agent.Status{}
	for _, id := range ids {
		st, err := s.Status(ctx, id)
		if am.CodeOf(err) == am.SearchFailed {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}

// setAggregate records which aggregate instance a sliver belongs to; a
// request without one (v1, an older aggregate) leaves it as it was.
func setAggregate(r *record, aggregate string) {
	if aggregate != "" {
		r.Aggregate = aggregate
	}
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}
