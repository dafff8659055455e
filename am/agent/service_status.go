package agent

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/geniam/geniam/am"
)

// Status reports the sliver's state, asking the engine for the container's.
func (s *Service) Status(ctx context.Context, id string) (Status, error) {
	sl, err := s.lookup(id)
	if err != nil {
		return Status{}, err
	}
	defer sl.mu.Unlock()
	return s.status(ctx, sl)
}

// status builds the Status of a locked sliver.
func (s *Service) status(ctx context.Context, sl *sliver) (st Status, err error) {
	r := sl.rec
	st = Status{ID: r.ID, SliceURN: r.SliceURN, SliverURN: r.SliverURN, Aggregate: r.Aggregate, Adopted: r.Adopted,
		Image: ImageStatus{URL: r.Image.URL, SHA256: r.Image.SHA256, Verified: r.Image.Verified, ID: r.Image.ID,
			State: r.Image.State, Error: r.Image.Error, Bytes: r.Image.Bytes,
			StartedAt: timePtr(r.Image.StartedAt), FinishedAt: timePtr(r.Image.FinishedAt)}}
	if st.Image.State == "" {
		st.Image.State = ImageNone
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
			st.State, st.Reason = StateFailed, "start failed: "+r.StartError
		case r.Image.State == ImageFetching:
			st.State = StateFetching
		case r.Image.State == ImageFailed:
			st.State, st.Reason = StateFailed, "fetch failed: "+r.Image.Error
		case r.Image.State == ImageReady:
			st.State = StateFetched
		default:
			st.State = StateEmpty
		}
		return st, nil
	}
	cst := &ContainerStatus{ID: r.ContainerID, Network: r.Network, TimeLimitKilled: r.TimeLimitKilled, Deadline: timePtr(r.Deadline)}
	if r.Spec != nil {
		cst.Restart = r.Spec.Restart
		lim := s.limits(r.Spec)
		cst.Limits = &lim
	}
	st.Container = cst
	st.Login = s.login(r)
	st.Idle = s.idleStatus(sl)
	cs, err := s.rt.Inspect(ctx, r.ContainerID)
	if errors.Is(err, ErrNotFound) {
		cst.EngineStatus = "missing"
		st.State, st.Reason = StateFailed, "the container is gone from the engine (removed outside the agent?)"
		return st, nil
	} else if err != nil {
		return Status{}, engineErr("status", err)
	}
	if s.relinkIfRestarted(ctx, sl, cs) { // failed, and killed the container
		if cs, err = s.rt.Inspect(ctx, r.ContainerID); err != nil {
			return Status{}, engineErr("status", err)
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
		st.State = StateRestarting
	case cs.Running:
		st.State = StateRunning
	case r.TimeLimitKilled:
		st.State, st.Reason = StateFailed, fmt.Sprintf("killed at its time limit of %d s", r.Spec.timeLimit())
	case cs.OOMKilled:
		st.State, st.Reason = StateFailed, "killed: out of memory"
	case cs.Error != "" || r.StartError != "":
		st.State, st.Reason = StateFailed, "start failed: "+firstNonEmpty(cs.Error, r.StartError)
	case r.StoppedByRequest:
		st.State, st.Reason = StateStopped, idleReason(r)
	case finished:
		st.State = StateExited
	default:
		st.State = StateCreated
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
func (s *Service) List(ctx context.Context) ([]Status, error) {
	var ids []string
	for _, sl := range s.all() {
		ids = append(ids, sl.id)
	}
	sort.Strings(ids)
	out := []Status{}
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

// OfAggregate keeps the statuses an aggregate instance may see: its own
// and those started without an instance (by an older aggregate or the v1
// API), never another aggregate's.
func OfAggregate(sts []Status, aggregate string) []Status {
	if aggregate == "" {
		return sts
	}
	out := sts[:0:0]
	for _, st := range sts {
		if st.Aggregate == "" || st.Aggregate == aggregate {
			out = append(out, st)
		}
	}
	return out
}
