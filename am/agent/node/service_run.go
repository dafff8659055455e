package node

import (
	"context"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/agent"
)

// Run creates and starts the sliver's container from its fetched image. It
// returns created=false, without touching anything, if the container already
// exists (whatever its state): kill it first to run again.
func (s *Service) Run(ctx context.Context, id string, req agent.StartRequest) (st agent.Status, created bool, err error) {
	if err := req.Validate(); err != nil {
		return agent.Status{}, false, err
	}
	network := req.Network
	if network == "" {
		network = s.cfg.DefaultNetwork
	}
	if !slices.Contains(s.cfg.AllowedNetworks, network) {
		return agent.Status{}, false, am.Errorf(am.Forbidden, "start: network %q is not allowed on this agent (allowed: %s)", am.Clip(network, 60), strings.Join(s.cfg.AllowedNetworks, ", "))
	}
	if len(req.Links) > 0 && s.cfg.Links == nil {
		return agent.Status{}, false, errNoExperimentNetwork()
	}
	sl, err := s.lookup(id)
	if err != nil {
		return agent.Status{}, false, err
	}
	defer sl.mu.Unlock()
	r := sl.rec
	if r.ContainerID != "" {
		st, err := s.status(ctx, sl)
		return st, false, err
	}
	switch r.Image.State {
	case agent.ImageReady:
	case agent.ImageFetching:
		return agent.Status{}, false, am.Errorf(am.InProgress, "start: the image of %s is still being fetched", id)
	case agent.ImageFailed:
		return agent.Status{}, false, am.Errorf(am.Error, "start: the image of %s could not be fetched: %s", id, r.Image.Error)
	default:
		return agent.Status{}, false, am.Errorf(am.SearchFailed, "start: no image has been fetched for %s", id)
	}
	if err := s.writeIdentity(id, req.SliceURN, req.SliverURN, req.Manifest, req.Users); err != nil {
		return agent.Status{}, false, am.Wrap(am.ServerError, err, "start: could not prepare the files of %s", id)
	}
	if err := s.ensureData(ctx, id, s.dataQuota(&req)); err != nil {
		return agent.Status{}, false, am.Wrap(am.ServerError, err, "start: could not prepare the /data of %s", id)
	}
	spec := s.containerSpec(id, r.Image.ID, network, &req)
	r.SliceURN, r.SliverURN = req.SliceURN, req.SliverURN
	setAggregate(r, req.Aggregate)
	reqCopy := req
	r.Spec, r.Network, r.StartError = &reqCopy, network, ""
	r.StoppedByRequest, r.TimeLimitKilled, r.Deadline, r.Adopted, r.IdleStoppedAt = false, false, time.Time{}, false, time.Time{}
	sl.idle = idleTrack{}
	// Record the intent before creating: if the agent dies in between, the
	// labelled container is found again by Reconcile.
	if err := s.save(r); err != nil {
		return agent.Status{}, false, err
	}
	cid, err := s.rt.Create(ctx, spec)
	if err != nil {
		if cs, lerr := s.rt.List(ctx, s.sliverLabels(id)); lerr == nil && len(cs) > 0 {
			cid, err = cs[0].ID, nil // a container of ours with this name already exists: adopt it
		}
	}
	if err != nil {
		r.StartError = err.Error()
		s.saveLogged(r)
		return agent.Status{}, false, am.Wrap(am.Error, err, "start: the engine could not create the container of %s: %s", id, err)
	}
	r.ContainerID = cid
	if err := s.save(r); err != nil {
		return agent.Status{}, false, err
	}
	if err := s.prepare(ctx, cid, &req); err != nil {
		// The container goes, so that the next start (geni_start) creates
		// it afresh and installs again; the record says why.
		if rerr := s.rt.Remove(ctx, cid); rerr != nil {
			s.log.Warn("agent: removing a container that could not be prepared", "sliver", id, "err", rerr)
		} else {
			r.ContainerID = ""
		}
		r.StartError = am.MessageOf(err)
		s.saveLogged(r)
		s.log.Info("agent: container not started", "sliver", id, "reason", r.StartError)
		return agent.Status{}, false, err
	}
	if err := s.rt.Start(ctx, cid); err != nil {
		r.StartError = err.Error()
		s.saveLogged(r)
		return agent.Status{}, false, am.Wrap(am.Error, err, "start: the container of %s did not start: %s", id, err)
	}
	if err := s.attachLinks(ctx, sl); err != nil {
		return agent.Status{}, false, err
	}
	if req.TimeLimitSeconds > 0 {
		r.Deadline = time.Now().UTC().Add(time.Duration(req.TimeLimitSeconds) * time.Second)
		s.saveLogged(r)
		s.armTimeLimit(sl)
	}
	s.log.Info("agent: container started", "sliver", id, "container", cid, "image", r.Image.ID, "network", network, "restart", req.Restart)
	st, err = s.status(ctx, sl)
	return st, true, err
}

func (s *Service) sliverLabels(id string) map[string]string {
	l := s.labels()
	l[agent.LabelSliver] = id
	return l
}

// containerSpec turns a start request into the engine's terms.
func (s *Service) containerSpec(id, image, network string, req *agent.StartRequest) agent.ContainerSpec {
	spec := agent.ContainerSpec{
		Name:    agent.ContainerPrefix + id,
		Image:   image,
		Env:     append([]string{"GENI_SLICE_URN=" + req.SliceURN, "GENI_SLIVER_URN=" + req.SliverURN}, req.Env...),
		Network: network,
		Labels:  s.sliverLabels(id),
		Mounts: []agent.Mount{
			{Host: s.st.dataDir(id), Container: "/data"},
			{Host: s.st.geniDir(id), Container: "/geni", ReadOnly: true},
		},
		Devices: s.cfg.Devices,
	}
	spec.Labels[agent.LabelSliceURN] = req.SliceURN
	spec.Labels[agent.LabelSliverURN] = req.SliverURN
	if req.Aggregate != "" {
		spec.Labels[agent.LabelAggregate] = req.Aggregate
	}
	switch {
	case len(req.Command) > 0:
		spec.Entrypoint, spec.Cmd = req.Command[:1], req.Command[1:]
	case req.Shell != "":
		// The experimenter's own command line, run by the shell inside
		// their container, as they asked; never by a shell on the host.
		spec.Entrypoint, spec.Cmd = []string{"/bin/sh", "-c"}, []string{req.Shell}
	}
	switch req.Restart {
	case agent.RestartAlways:
		spec.Restart = agent.RestartPolicy{Name: "always"}
	case agent.RestartOnFailure:
		spec.Restart = agent.RestartPolicy{Name: "on-failure", MaxRetries: req.MaxRetries}
	default:
		spec.Restart = agent.RestartPolicy{Name: "no"}
	}
	lim := s.limits(req)
	spec.MemoryBytes, spec.NanoCPUs, spec.PidsLimit = lim.MemoryBytes, lim.NanoCPUs, lim.Pids
	spec.Capabilities, spec.ReadOnlyRootfs = lim.Capabilities, lim.ReadOnlyRoot
	return spec
}

// writeIdentity writes the read-only files the container sees under /geni.
func (s *Service) writeIdentity(id, sliceURN, sliverURN, manifest string, users []agent.User) error {
	dir := s.st.geniDir(id)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	files := map[string]string{
		"slice_urn":    sliceURN + "\n",
		"sliver_urn":   sliverURN + "\n",
		"manifest.xml": manifest,
	}
	for name, content := range files {
		if err := writeFileAtomic(dir+"/"+name, []byte(content), 0o644); err != nil {
			return err
		}
	}
	return writeAuthorizedKeys(dir, users)
}

// writeAuthorizedKeys replaces /geni/authorized_keys atomically (rename in a
// bound directory is visible inside the running container).
func writeAuthorizedKeys(dir string, users []agent.User) error {
	var b strings.Builder
	for _, u := range users {
		for _, k := range u.Keys {
			k = strings.TrimSpace(k)
			if k == "" {
				continue
			}
			b.WriteString(k)
			if u.URN != "" && !strings.Contains(k, u.URN) {
				b.WriteString(" " + u.URN)
			}
			b.WriteString("\n")
		}
	}
	return writeFileAtomic(dir+"/authorized_keys", []byte(b.String()), 0o644)
}

// armTimeLimit (re)starts the timer that kills the container at its
// deadline. Called with sl.mu held.
func (s *Service) armTimeLimit(sl *sliver) {
	if sl.timer != nil {
		sl.timer.Stop()
		sl.timer = nil
	}
	r := sl.rec
	if r == nil || r.ContainerID == "" || r.Deadline.IsZero() || r.TimeLimitKilled {
		return
	}
	deadline, cid := r.Deadline, r.ContainerID
	sl.timer = time.AfterFunc(time.Until(deadline), func() { s.timeLimitReached(sl, cid, deadline) })
}

func (s *Service) timeLimitReached(sl *sliver, cid string, deadline time.Time) {
	if s.ctx.Err() != nil {
		return
	}
	sl.mu.Lock()
	defer sl.mu.Unlock()
	r := sl.rec
	if r == nil || r.ContainerID != cid || !r.Deadline.Equal(deadline) || r.TimeLimitKilled {
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
	defer cancel()
	cs, err := s.rt.Inspect(ctx, cid)
	if err != nil {
		s.log.Warn("agent: time limit reached, container not inspectable", "sliver", sl.id, "err", err)
		return
	}
	if !cs.Running && cs.Status != "restarting" {
		return // it finished in time
	}
	// Stop (not kill) tells the engine the container was stopped on
	// purpose, so a restart policy does not bring it back; the grace period
	// is zero: the time is up.
	if err := s.rt.Stop(ctx, cid, 0); err != nil {
		s.log.Error("agent: time limit reached but the container could not be stopped", "sliver", sl.id, "err", err)
		return
	}
	r.TimeLimitKilled = true
	s.saveLogged(r)
	s.log.Info("agent: container killed at its time limit", "sliver", sl.id, "container", cid, "deadline", deadline)
}

// timeLimit is the request's time limit in seconds; 0 without a request.
func timeLimit(r *agent.StartRequest) int64 {
	if r == nil {
		return 0
	}
	return r.TimeLimitSeconds
}
