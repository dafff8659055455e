package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/geniam/geniam/am"
)

// Config is how an operator tunes the agent (see docs/nodeagent.md).
type Config struct {
	StateDir string // records, /data and /geni directories; required
	// Instance names this agent in container labels, so two agents sharing
	// an engine never touch each other's containers. Default "default".
	Instance string

	DefaultNetwork  string   // network mode when a request names none; default "none"
	AllowedNetworks []string // modes a request may name; default only DefaultNetwork

	AllowFileImages bool     // accept local paths as image URLs (tests, pre-staged images)
	FileImageDirs   []string // if set, local paths must be inside one of these
	// ImageHosts, if not empty, are the only hosts images are fetched
	// from; listed hosts may have private or loopback addresses. With none
	// listed, any host with a public address (fetchpolicy.go).
	ImageHosts    []string
	MaxImageBytes int64 // default 20 GiB
	// MaxImageUnpackedBytes caps what an image expands to in the engine
	// (compressed tars and layers counted uncompressed, files at their
	// full size); default 4 × MaxImageBytes.
	MaxImageUnpackedBytes int64
	// MaxArchiveBytes caps one /data archive (tar bytes, holes of sparse
	// files not counted); entries beyond it are left out and the archive
	// ends with a note saying so. 0 = no limit.
	MaxArchiveBytes int64
	FetchTimeout    time.Duration // whole download+load; default 30 min

	StopGrace time.Duration // SIGTERM to SIGKILL on stop; default 10 s
	// Per-container limits (limits.go). 0 is the safe default
	// (DefaultMemoryBytes, DefaultNanoCPUs, DefaultPidsLimit), a negative
	// value is no limit. Memory and CPUs also cap what a request asks for.
	MemoryBytes int64
	NanoCPUs    int64 // in 1e-9 CPUs
	PidsLimit   int64
	// Capabilities the container keeps; all others are dropped. nil is
	// DefaultCapabilities.
	Capabilities []string
	// DataQuotaBytes is the size of each sliver's /data, enforced by a
	// filesystem of its own (dataquota.go; needs root, mkfs.ext4 and loop
	// devices). 0: not enforced, /data is a directory on the host's
	// filesystem.
	DataQuotaBytes int64
	// DataOwner is the host uid and gid that own each /data ("" or
	// "0:0": root). With the engine's user-namespace remapping, set it to
	// the remapped root (e.g. "100000:100000") so root in the container
	// can write /data.
	DataOwner string
	// ReadOnlyRootfs makes the image's filesystem read-only (a tmpfs is
	// mounted at /tmp); /data stays writable.
	ReadOnlyRootfs bool
	Devices        []string // host devices passed to every container (e.g. /dev/bus/usb)

	// Links puts containers on experiment links; nil refuses requests with links.
	Links ExperimentNetwork

	LogTailLines int // lines of stdout/stderr in a status; default 50
	LogTailBytes int // bytes of each; default 8 KiB

	// ContainerStore is the base URL the v1 fetchContainer path downloads
	// NAME.docker.tar from (the AERPAW "containerStore").
	ContainerStore string
	// V1RequireDigest makes v1 fetchContainer refuse requests without ?sha256=.
	V1RequireDigest bool

	Logger *slog.Logger
}

func (c *Config) defaults() error {
	if c.StateDir == "" {
		return errors.New("agent: StateDir is required")
	}
	if c.Instance == "" {
		c.Instance = "default"
	}
	if c.DefaultNetwork == "" {
		c.DefaultNetwork = "none"
	}
	if len(c.AllowedNetworks) == 0 {
		c.AllowedNetworks = []string{c.DefaultNetwork}
	}
	if c.MaxImageBytes == 0 {
		c.MaxImageBytes = 20 << 30
	}
	if c.MaxImageUnpackedBytes == 0 {
		c.MaxImageUnpackedBytes = 4 * c.MaxImageBytes
	}
	if c.FetchTimeout == 0 {
		c.FetchTimeout = 30 * time.Minute
	}
	if c.StopGrace == 0 {
		c.StopGrace = 10 * time.Second
	}
	if err := c.limitDefaults(); err != nil {
		return err
	}
	if c.LogTailLines == 0 {
		c.LogTailLines = 50
	}
	if c.LogTailBytes == 0 {
		c.LogTailBytes = 8 << 10
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Service carries out the agent's operations. Every operation is keyed by a
// sliver id and idempotent: repeating a request that already took effect
// reports the current state instead of failing or doing the work twice.
type Service struct {
	cfg    Config
	policy imagePolicy
	rt     Runtime
	st     store
	log    *slog.Logger
	ctx    context.Context // lives as long as the service: fetches and timers
	close  context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	slivers map[string]*sliver
	// imageRefs says which slivers' records name each image id, so that an
	// image is removed only when no sliver uses it (guarded by mu).
	imageRefs map[string]map[string]bool
}

// sliver is the in-memory side of one record. mu serialises operations on
// the sliver; different slivers proceed in parallel.
type sliver struct {
	mu  sync.Mutex
	id  string
	rec *record // nil: the agent knows nothing of this sliver

	fetchGen    int
	fetchCancel context.CancelFunc
	fetchDone   chan struct{} // closed when the running fetch ends; nil if none
	timer       *time.Timer
}

// New opens the state directory, loads the records and reconciles them with
// the engine. An unreachable engine is logged, not fatal: the agent still
// answers (status calls will say the engine is unavailable) and Reconcile
// can be called again.
func New(cfg Config, rt Runtime) (*Service, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	st := store{root: cfg.StateDir}
	if err := st.init(); err != nil {
		return nil, fmt.Errorf("agent: state directory: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Service{cfg: cfg, policy: newImagePolicy(cfg.ImageHosts, cfg.ContainerStore), rt: rt, st: st, log: cfg.Logger, ctx: ctx, close: cancel, slivers: map[string]*sliver{}, imageRefs: map[string]map[string]bool{}}
	recs, errs := st.loadAll()
	for _, err := range errs {
		s.log.Warn("agent: skipping state file", "err", err)
	}
	for _, r := range recs {
		sl := &sliver{id: r.ID, rec: r}
		if r.Image.State == ImageFetching {
			// The download died with the previous process; say so. A
			// repeated fetch request starts it again.
			r.Image.State, r.Image.Error = ImageFailed, "the agent restarted during the fetch; fetch again"
			s.saveLogged(r)
		}
		s.slivers[r.ID] = sl
		s.setImageRef(r.ID, "", r.Image.ID)
		if _, err := os.Stat(st.dataImage(r.ID)); err == nil {
			// After a reboot: mount /data again before the engine's restart
			// policy lets a container write beneath the mount point.
			if err := s.ensureData(ctx, r.ID, s.dataQuota(r.Spec)); err != nil {
				s.log.Error("agent: mounting the /data of a sliver", "sliver", r.ID, "err", err)
			}
		}
	}
	rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
	defer rcancel()
	if err := s.Reconcile(rctx); err != nil {
		s.log.Warn("agent: reconciling with the engine failed; will report engine errors until it answers", "err", err)
	}
	for _, sl := range s.slivers {
		sl.mu.Lock()
		s.armTimeLimit(sl)
		sl.mu.Unlock()
	}
	s.restoreLinks(rctx)
	return s, nil
}

// Close stops background fetches and time-limit timers (containers keep
// running; time limits are re-armed by the next New).
func (s *Service) Close() {
	s.close()
	for _, sl := range s.all() {
		sl.mu.Lock()
		if sl.timer != nil {
			sl.timer.Stop()
		}
		sl.mu.Unlock()
	}
	s.wg.Wait()
}

func (s *Service) labels() map[string]string {
	return map[string]string{LabelManagedBy: ManagedByValue, LabelInstance: s.cfg.Instance}
}

// Reconcile matches the records with the containers in the engine that carry
// this agent's labels: a record whose container was recreated under another
// id is updated, and a labelled container with no record (the agent died
// between creating it and writing the record, or the record was lost) is
// adopted so that it shows up in List and can be killed.
func (s *Service) Reconcile(ctx context.Context) error {
	cs, err := s.rt.List(ctx, s.labels())
	if err != nil {
		return err
	}
	for _, c := range cs {
		id := c.Labels[LabelSliver]
		if ValidID(id) != nil {
			s.log.Warn("agent: labelled container without a valid sliver label", "container", c.ID)
			continue
		}
		sl := s.get(id)
		sl.mu.Lock()
		switch {
		case sl.rec == nil:
			now := time.Now().UTC()
			sl.rec = &record{ID: id, SliceURN: c.Labels[LabelSliceURN], SliverURN: c.Labels[LabelSliverURN], Aggregate: c.Labels[LabelAggregate],
				Image: imageRecord{State: ImageNone}, ContainerID: c.ID, Adopted: true, Created: now}
			s.log.Info("agent: adopted a container found by label", "sliver", id, "container", c.ID)
			s.saveLogged(sl.rec)
		case sl.rec.ContainerID != c.ID:
			s.log.Info("agent: record updated from the engine", "sliver", id, "old", sl.rec.ContainerID, "container", c.ID)
			sl.rec.ContainerID = c.ID
			s.saveLogged(sl.rec)
		}
		sl.mu.Unlock()
	}
	return nil
}

// setImageRef records that sliver id now uses image newID instead of oldID.
func (s *Service) setImageRef(id, oldID, newID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if oldID != "" && s.imageRefs[oldID] != nil {
		delete(s.imageRefs[oldID], id)
		if len(s.imageRefs[oldID]) == 0 {
			delete(s.imageRefs, oldID)
		}
	}
	if newID != "" {
		if s.imageRefs[newID] == nil {
			s.imageRefs[newID] = map[string]bool{}
		}
		s.imageRefs[newID][id] = true
	}
}

// all returns every sliver entry. Lock order is sliver before s.mu, so
// callers lock the entries only after s.mu is released.
func (s *Service) all() []*sliver {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*sliver, 0, len(s.slivers))
	for _, sl := range s.slivers {
		out = append(out, sl)
	}
	return out
}

// Known returns nil if the agent has a record of the sliver, else a
// SEARCHFAILED (or BADARGS) error. It does not ask the engine.
func (s *Service) Known(id string) error {
	sl, err := s.lookup(id)
	if err != nil {
		return err
	}
	sl.mu.Unlock()
	return nil
}

// get returns the sliver entry for id, creating an empty one.
// stopFetch cancels the fetch under way for the sliver and waits for it to
// end. It is called with sl.mu held and returns with it released; the
// caller locks again and looks afresh.
func (sl *sliver) stopFetch(ctx context.Context, op, id string) error {
	cancel, done := sl.fetchCancel, sl.fetchDone
	sl.mu.Unlock()
	cancel()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return am.Wrap(am.TimedOut, ctx.Err(), "%s: waiting for the fetch of %s to stop", op, id)
	}
}

func (s *Service) get(id string) *sliver {
	s.mu.Lock()
	defer s.mu.Unlock()
	sl := s.slivers[id]
	if sl == nil {
		sl = &sliver{id: id}
		s.slivers[id] = sl
	}
	return sl
}

// lookup returns the locked sliver for id, or a SEARCHFAILED error if the
// agent has no record of it. The caller must unlock.
func (s *Service) lookup(id string) (*sliver, error) {
	if err := ValidID(id); err != nil {
		return nil, err
	}
	sl := s.get(id)
	sl.mu.Lock()
	if sl.rec == nil {
		sl.mu.Unlock()
		return nil, am.Errorf(am.SearchFailed, "sliver %s is not known to this agent", id)
	}
	return sl, nil
}

func (s *Service) saveLogged(r *record) {
	if err := s.st.save(r); err != nil {
		s.log.Error("agent: writing sliver record", "sliver", r.ID, "err", err)
	}
}

func (s *Service) save(r *record) error {
	if err := s.st.save(r); err != nil {
		return am.Wrap(am.ServerError, err, "could not record the state of sliver %s", r.ID)
	}
	return nil
}

func engineErr(op string, err error) error {
	if err == nil {
		return nil
	}
	var e *am.Err
	if errors.As(err, &e) {
		return err
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return am.Wrap(am.TimedOut, err, "%s: the container engine did not answer in time", op)
	}
	return am.Wrap(am.Unavailable, err, "%s: the container engine failed: %s", op, err)
}

// FetchOptions tune a fetch beyond the request.
type FetchOptions struct {
	AllowNoDigest bool // v1 compatibility: load without a digest (logged, marked unverified)
}

// Fetch starts loading the image of a sliver and returns at once with the
// sliver's status (state "fetching"); started is false when nothing new was
// started because the same image is already loaded or being loaded. Poll
// Status or call WaitFetch for the outcome.
func (s *Service) Fetch(ctx context.Context, id string, req FetchRequest, opt FetchOptions) (st Status, started bool, err error) {
	if err := ValidID(id); err != nil {
		return Status{}, false, err
	}
	if err := req.validate(!opt.AllowNoDigest); err != nil {
		return Status{}, false, err
	}
	src, err := s.checkImageURL(req.URL)
	if err != nil {
		return Status{}, false, err
	}
	sl := s.get(id)
	for {
		sl.mu.Lock()
		if sl.rec != nil && sl.rec.Image.URL == req.URL && sl.rec.Image.SHA256 == req.SHA256 &&
			(sl.rec.Image.State == ImageFetching || sl.rec.Image.State == ImageReady) {
			st, err := s.status(ctx, sl)
			sl.mu.Unlock()
			return st, false, err
		}
		if sl.rec != nil && sl.rec.ContainerID != "" {
			sl.mu.Unlock()
			return Status{}, false, am.Errorf(am.AlreadyExists, "sliver %s has a container from another image; kill it before fetching a new one", id)
		}
		if sl.fetchDone == nil {
			break
		}
		// Another image is being fetched for this sliver: cancel it, wait
		// for it to end, then look again.
		if err := sl.stopFetch(ctx, "fetch", id); err != nil {
			return Status{}, false, err
		}
	}
	defer sl.mu.Unlock()
	now := time.Now().UTC()
	if sl.rec == nil {
		sl.rec = &record{ID: id, Created: now}
	}
	old := sl.rec.Image
	sl.rec.Image = imageRecord{URL: req.URL, SHA256: req.SHA256, State: ImageFetching, StartedAt: now}
	setAggregate(sl.rec, req.Aggregate)
	if err := s.save(sl.rec); err != nil {
		sl.rec.Image = old
		return Status{}, false, err
	}
	s.setImageRef(id, old.ID, "")
	if req.SHA256 == "" {
		s.log.Warn("agent: fetching an image without a digest (v1 request); it will be marked unverified", "sliver", id, "url", req.URL)
	}
	sl.fetchGen++
	fctx, cancel := context.WithTimeout(s.ctx, s.cfg.FetchTimeout)
	sl.fetchCancel, sl.fetchDone = cancel, make(chan struct{})
	s.wg.Add(1)
	go s.runFetch(fctx, cancel, sl, sl.fetchGen, src, req.SHA256, old.ID)
	st, err = s.status(ctx, sl)
	return st, true, err
}

func (s *Service) runFetch(ctx context.Context, cancel context.CancelFunc, sl *sliver, gen int, src imageSource, digest, oldImage string) {
	defer s.wg.Done()
	defer cancel()
	t0 := time.Now()
	var vr *verifyingReader
	imageID, err := func() (string, error) {
		body, size, err := s.open(ctx, src)
		if err != nil {
			return "", err
		}
		defer body.Close()
		if size > s.cfg.MaxImageBytes {
			return "", fmt.Errorf("image is %d bytes, over the limit of %d", size, s.cfg.MaxImageBytes)
		}
		vr = newVerifyingReader(body, digest, s.cfg.MaxImageBytes)
		guard := newUnpackGuard(vr, s.cfg.MaxImageUnpackedBytes)
		defer guard.Close()
		id, err := s.rt.LoadImage(ctx, guard)
		if _, verr := vr.result(); verr != nil {
			return "", verr // the reader's own failure says more than the engine's
		}
		if gerr := guard.verdict(); gerr != nil {
			return "", gerr
		}
		if err != nil {
			return "", fmt.Errorf("loading image: %w", err)
		}
		return id, nil
	}()
	if err != nil && ctx.Err() == context.DeadlineExceeded {
		err = fmt.Errorf("fetch took longer than %s: %w", s.cfg.FetchTimeout, err)
	}
	sl.mu.Lock()
	defer func() {
		close(sl.fetchDone)
		sl.fetchDone, sl.fetchCancel = nil, nil
		sl.mu.Unlock()
	}()
	if sl.fetchGen != gen || sl.rec == nil {
		// Superseded or deleted meanwhile: drop what we loaded, if nobody uses it.
		if err == nil {
			s.removeImageIfUnused(imageID)
		}
		return
	}
	img := &sl.rec.Image
	img.FinishedAt = time.Now().UTC()
	if vr != nil {
		img.Bytes, _ = vr.result()
	}
	if err != nil {
		img.State, img.Error = ImageFailed, err.Error()
		s.log.Warn("agent: fetch failed", "sliver", sl.id, "url", img.URL, "err", err, "cause", errors.Unwrap(err), "took", time.Since(t0))
	} else {
		img.State, img.ID, img.Verified = ImageReady, imageID, digest != ""
		s.setImageRef(sl.id, "", imageID)
		s.log.Info("agent: image loaded", "sliver", sl.id, "image", imageID, "bytes", img.Bytes, "verified", img.Verified, "took", time.Since(t0))
	}
	s.saveLogged(sl.rec)
	if err == nil && oldImage != "" && oldImage != imageID {
		s.removeImageIfUnused(oldImage)
	}
}

// WaitFetch blocks until no fetch is running for the sliver (or ctx ends)
// and returns its status.
func (s *Service) WaitFetch(ctx context.Context, id string) (Status, error) {
	sl, err := s.lookup(id)
	if err != nil {
		return Status{}, err
	}
	done := sl.fetchDone
	sl.mu.Unlock()
	if done != nil {
		select {
		case <-done:
		case <-ctx.Done():
		}
	}
	return s.Status(ctx, id)
}

// Run creates and starts the sliver's container from its fetched image. It
// returns created=false, without touching anything, if the container already
// exists (whatever its state): kill it first to run again.
func (s *Service) Run(ctx context.Context, id string, req StartRequest) (st Status, created bool, err error) {
	if err := req.Validate(); err != nil {
		return Status{}, false, err
	}
	network := req.Network
	if network == "" {
		network = s.cfg.DefaultNetwork
	}
	if !slices.Contains(s.cfg.AllowedNetworks, network) {
		return Status{}, false, am.Errorf(am.Forbidden, "start: network %q is not allowed on this agent (allowed: %s)", truncate(network, 60), strings.Join(s.cfg.AllowedNetworks, ", "))
	}
	if len(req.Links) > 0 && s.cfg.Links == nil {
		return Status{}, false, errNoExperimentNetwork()
	}
	sl, err := s.lookup(id)
	if err != nil {
		return Status{}, false, err
	}
	defer sl.mu.Unlock()
	r := sl.rec
	if r.ContainerID != "" {
		st, err := s.status(ctx, sl)
		return st, false, err
	}
	switch r.Image.State {
	case ImageReady:
	case ImageFetching:
		return Status{}, false, am.Errorf(am.InProgress, "start: the image of %s is still being fetched", id)
	case ImageFailed:
		return Status{}, false, am.Errorf(am.Error, "start: the image of %s could not be fetched: %s", id, r.Image.Error)
	default:
		return Status{}, false, am.Errorf(am.SearchFailed, "start: no image has been fetched for %s", id)
	}
	if err := s.writeIdentity(id, req.SliceURN, req.SliverURN, req.Manifest, req.Users); err != nil {
		return Status{}, false, am.Wrap(am.ServerError, err, "start: could not prepare the files of %s", id)
	}
	if err := s.ensureData(ctx, id, s.dataQuota(&req)); err != nil {
		return Status{}, false, am.Wrap(am.ServerError, err, "start: could not prepare the /data of %s", id)
	}
	spec := s.containerSpec(id, r.Image.ID, network, &req)
	r.SliceURN, r.SliverURN = req.SliceURN, req.SliverURN
	setAggregate(r, req.Aggregate)
	reqCopy := req
	r.Spec, r.Network, r.StartError = &reqCopy, network, ""
	r.StoppedByRequest, r.TimeLimitKilled, r.Deadline, r.Adopted = false, false, time.Time{}, false
	// Record the intent before creating: if the agent dies in between, the
	// labelled container is found again by Reconcile.
	if err := s.save(r); err != nil {
		return Status{}, false, err
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
		return Status{}, false, am.Wrap(am.Error, err, "start: the engine could not create the container of %s: %s", id, err)
	}
	r.ContainerID = cid
	if err := s.save(r); err != nil {
		return Status{}, false, err
	}
	if err := s.rt.Start(ctx, cid); err != nil {
		r.StartError = err.Error()
		s.saveLogged(r)
		return Status{}, false, am.Wrap(am.Error, err, "start: the container of %s did not start: %s", id, err)
	}
	if err := s.attachLinks(ctx, sl); err != nil {
		return Status{}, false, err
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
	l[LabelSliver] = id
	return l
}

// containerSpec turns a start request into the engine's terms.
func (s *Service) containerSpec(id, image, network string, req *StartRequest) ContainerSpec {
	spec := ContainerSpec{
		Name:    ContainerPrefix + id,
		Image:   image,
		Env:     append([]string{"GENI_SLICE_URN=" + req.SliceURN, "GENI_SLIVER_URN=" + req.SliverURN}, req.Env...),
		Network: network,
		Labels:  s.sliverLabels(id),
		Mounts: []Mount{
			{Host: s.st.dataDir(id), Container: "/data"},
			{Host: s.st.geniDir(id), Container: "/geni", ReadOnly: true},
		},
		Devices: s.cfg.Devices,
	}
	spec.Labels[LabelSliceURN] = req.SliceURN
	spec.Labels[LabelSliverURN] = req.SliverURN
	if req.Aggregate != "" {
		spec.Labels[LabelAggregate] = req.Aggregate
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
	case RestartAlways:
		spec.Restart = RestartPolicy{Name: "always"}
	case RestartOnFailure:
		spec.Restart = RestartPolicy{Name: "on-failure", MaxRetries: req.MaxRetries}
	default:
		spec.Restart = RestartPolicy{Name: "no"}
	}
	lim := s.limits(req)
	spec.MemoryBytes, spec.NanoCPUs, spec.PidsLimit = lim.MemoryBytes, lim.NanoCPUs, lim.Pids
	spec.Capabilities, spec.ReadOnlyRootfs = lim.Capabilities, lim.ReadOnlyRoot
	return spec
}

// writeIdentity writes the read-only files the container sees under /geni.
func (s *Service) writeIdentity(id, sliceURN, sliverURN, manifest string, users []User) error {
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
func writeAuthorizedKeys(dir string, users []User) error {
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
		st.State = StateStopped
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

func (r *StartRequest) timeLimit() int64 {
	if r == nil {
		return 0
	}
	return r.TimeLimitSeconds
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

// Stop stops the running container (geni_stop); Start starts it again.
func (s *Service) Stop(ctx context.Context, id string) (Status, error) {
	sl, err := s.lookup(id)
	if err != nil {
		return Status{}, err
	}
	defer sl.mu.Unlock()
	if sl.rec.ContainerID == "" {
		return Status{}, am.Errorf(am.SearchFailed, "stop: sliver %s has no container", id)
	}
	sl.rec.StoppedByRequest = true
	if err := s.save(sl.rec); err != nil {
		return Status{}, err
	}
	if err := s.rt.Stop(ctx, sl.rec.ContainerID, s.cfg.StopGrace); err != nil && !errors.Is(err, ErrNotFound) {
		return Status{}, engineErr("stop", err)
	}
	return s.status(ctx, sl)
}

// Start starts the existing container of a sliver again (geni_start after
// geni_stop, or a re-run of one that exited). The time limit, if any, still
// counts from the first start.
func (s *Service) Start(ctx context.Context, id string) (Status, error) {
	sl, err := s.lookup(id)
	if err != nil {
		return Status{}, err
	}
	defer sl.mu.Unlock()
	r := sl.rec
	if r.ContainerID == "" {
		return Status{}, am.Errorf(am.SearchFailed, "start: sliver %s has no container; create it with PUT .../container", id)
	}
	if r.TimeLimitKilled {
		return Status{}, am.Errorf(am.Expired, "start: sliver %s used up its time limit", id)
	}
	r.StoppedByRequest, r.StartError = false, ""
	if err := s.save(r); err != nil {
		return Status{}, err
	}
	if err := s.ensureData(ctx, id, s.dataQuota(r.Spec)); err != nil {
		return Status{}, am.Wrap(am.ServerError, err, "start: could not prepare the /data of %s", id)
	}
	if err := s.rt.Start(ctx, r.ContainerID); err != nil {
		r.StartError = err.Error()
		s.saveLogged(r)
		return Status{}, am.Wrap(am.Error, err, "start: the container of %s did not start: %s", id, err)
	}
	if err := s.attachLinks(ctx, sl); err != nil {
		return Status{}, err
	}
	s.armTimeLimit(sl)
	return s.status(ctx, sl)
}

// Kill stops and removes the sliver's container (AERPAW killContainer). The
// image, the data and the record stay. Killing what is not there is not an
// error.
func (s *Service) Kill(ctx context.Context, id string) error {
	if err := ValidID(id); err != nil {
		return err
	}
	sl := s.get(id)
	sl.mu.Lock()
	defer sl.mu.Unlock()
	return s.kill(ctx, sl)
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
		if r.Adopted && r.Image.State == ImageNone {
			// An adopted container was all we knew of it.
			sl.rec = nil
			return s.removeRecord(r.ID)
		}
		return s.save(r)
	}
	return nil
}

func (s *Service) removeRecord(id string) error {
	if err := s.st.remove(id); err != nil {
		return am.Wrap(am.ServerError, err, "could not remove the record of %s", id)
	}
	return nil
}

// RemoveImage forgets the sliver's image and deletes it from the engine
// unless another sliver of this agent uses the same image (or a container
// outside the agent does: the engine refuses, and the image stays). Only
// images this agent loaded are ever removed; nothing is pruned globally.
func (s *Service) RemoveImage(ctx context.Context, id string) error {
	if err := ValidID(id); err != nil {
		return err
	}
	sl := s.get(id)
	sl.mu.Lock()
	defer sl.mu.Unlock()
	return s.removeImage(ctx, sl)
}

func (s *Service) removeImage(ctx context.Context, sl *sliver) error {
	r := sl.rec
	if r == nil {
		return nil
	}
	if r.ContainerID != "" {
		return am.Errorf(am.Busy, "remove image: sliver %s still has a container; kill it first", sl.id)
	}
	if r.Image.State == ImageFetching && sl.fetchCancel != nil {
		sl.fetchGen++ // the fetch's result is dropped (and its image removed) when it ends
		sl.fetchCancel()
	}
	imageID := r.Image.ID
	r.Image = imageRecord{State: ImageNone}
	if err := s.save(r); err != nil {
		return err
	}
	if imageID != "" {
		s.setImageRef(sl.id, imageID, "")
		s.removeImageIfUnused(imageID)
	}
	return nil
}

// removeImageIfUnused deletes imageID from the engine unless a sliver's
// record still names it. The caller has already dropped its own reference.
func (s *Service) removeImageIfUnused(imageID string) {
	s.mu.Lock()
	users := len(s.imageRefs[imageID])
	s.mu.Unlock()
	if users > 0 {
		s.log.Info("agent: image kept, another sliver uses it", "image", imageID, "slivers", users)
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, time.Minute)
	defer cancel()
	switch err := s.rt.RemoveImage(ctx, imageID); {
	case err == nil:
		s.log.Info("agent: image removed", "image", imageID)
	case errors.Is(err, ErrInUse):
		s.log.Info("agent: image kept, a container outside this agent uses it", "image", imageID)
	default:
		s.log.Warn("agent: removing image", "image", imageID, "err", err)
	}
}

// Logs copies the whole stdout or stderr (stream "stdout" or "stderr") of
// the sliver's container to w.
func (s *Service) Logs(ctx context.Context, id, stream string, w io.Writer) error {
	if stream != "stdout" && stream != "stderr" {
		return am.Errorf(am.BadArgs, "logs: stream must be stdout or stderr, not %q", truncate(stream, 20))
	}
	sl, err := s.lookup(id)
	if err != nil {
		return err
	}
	cid := sl.rec.ContainerID
	sl.mu.Unlock() // streaming may take long
	if cid == "" {
		return am.Errorf(am.SearchFailed, "logs: sliver %s has no container", id)
	}
	o, e := w, io.Discard
	if stream == "stderr" {
		o, e = io.Discard, w
	}
	if err := s.rt.StreamLogs(ctx, cid, o, e); err != nil {
		if errors.Is(err, ErrNotFound) {
			return am.Errorf(am.SearchFailed, "logs: the container of %s is gone", id)
		}
		return engineErr("logs", err)
	}
	return nil
}

// DataDir is the host directory bound at /data for the sliver.
func (s *Service) DataDir(id string) string { return s.st.dataDir(id) }

// EmitData writes the sliver's /data directory to w as a tar archive, with
// entry names prefixed by prefix ("" for v2; "NAME/data/" for v1). It streams
// with constant memory. A sliver the agent has no record of is
// SEARCHFAILED; a known sliver with no data yet gives an empty archive.
func (s *Service) EmitData(ctx context.Context, id string, w io.Writer, prefix string) (files int, err error) {
	sl, err := s.lookup(id)
	if err != nil {
		return 0, err
	}
	spec := sl.rec.Spec
	sl.mu.Unlock() // streaming may take long; the walk copes with concurrent change
	dir := s.st.dataDir(id)
	quota := s.dataQuota(spec)
	if _, err := os.Stat(s.st.dataImage(id)); spec == nil && err != nil {
		quota = 0 // never started: a plain (empty) directory, no filesystem yet
	}
	if err := s.ensureData(ctx, id, quota); err != nil {
		return 0, am.Wrap(am.ServerError, err, "emit data: could not prepare the /data of %s", id)
	}
	maxBytes := s.cfg.MaxArchiveBytes
	if spec != nil {
		maxBytes = capLimit(spec.ArchiveBytes, maxBytes)
	}
	ts, err := writeTar(ctx, w, dir, prefix, tarLimits{MaxBytes: maxBytes})
	if ts.SkippedFiles > 0 {
		s.log.Warn("agent: /data archive cut at its limit", "sliver", id, "left_out", ts.SkippedFiles, "bytes", ts.Bytes, "limit", maxBytes)
	}
	return ts.Files, err
}

// DeleteData empties the sliver's /data directory (the directory itself
// stays, as a running container may have it mounted).
func (s *Service) DeleteData(ctx context.Context, id string) error {
	if err := ValidID(id); err != nil {
		return err
	}
	if err := clearDir(s.st.dataDir(id)); err != nil {
		return am.Wrap(am.ServerError, err, "delete data: could not empty the data directory of %s", id)
	}
	s.log.Info("agent: data deleted", "sliver", id)
	return nil
}

// UpdateUsers replaces the slice users' keys in /geni/authorized_keys
// (geni_update_users); a running container sees the new file at once.
func (s *Service) UpdateUsers(ctx context.Context, id string, users []User) (Status, error) {
	if err := validUsers(users); err != nil {
		return Status{}, err
	}
	sl, err := s.lookup(id)
	if err != nil {
		return Status{}, err
	}
	defer sl.mu.Unlock()
	dir := s.st.geniDir(id)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Status{}, am.Wrap(am.ServerError, err, "update users: %s", id)
	}
	if err := writeAuthorizedKeys(dir, users); err != nil {
		return Status{}, am.Wrap(am.ServerError, err, "update users: could not write the keys of %s", id)
	}
	if sl.rec.Spec != nil {
		sl.rec.Spec.Users = users
		s.saveLogged(sl.rec)
	}
	return s.status(ctx, sl)
}

// Delete removes everything of a sliver: container, image (if unused),
// data, identity files and record. Deleting an unknown sliver is not an error.
func (s *Service) Delete(ctx context.Context, id string) error {
	if err := ValidID(id); err != nil {
		return err
	}
	sl := s.get(id)
	for {
		sl.mu.Lock()
		if sl.fetchDone == nil {
			break
		}
		if err := sl.stopFetch(ctx, "delete", id); err != nil {
			return err
		}
	}
	defer sl.mu.Unlock()
	// A record that cannot be written (a full disk) must not stop Delete:
	// the record is about to go. Engine failures do stop it.
	if err := s.kill(ctx, sl); err != nil && am.CodeOf(err) != am.ServerError {
		return err
	}
	if err := s.removeImage(ctx, sl); err != nil && am.CodeOf(err) != am.ServerError {
		return err
	}
	if err := s.releaseData(id); err != nil {
		return am.Wrap(am.ServerError, err, "delete: could not unmount the /data of %s", id)
	}
	if err := os.RemoveAll(s.st.sliverDir(id)); err != nil {
		return am.Wrap(am.ServerError, err, "delete: could not remove the files of %s", id)
	}
	sl.rec = nil
	if err := s.removeRecord(id); err != nil {
		return err
	}
	s.log.Info("agent: sliver deleted", "sliver", id)
	return nil
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
