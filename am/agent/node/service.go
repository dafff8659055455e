// Package node is the node agent: the program that runs next to the
// container engine on every testbed node and does what the aggregate tells
// it (fetch an image, start it with a /data directory, report status, hand
// back /data, clean up). It holds the operations (Service, one file a verb
// group: service_*.go), the sliver records on disk, the HTTP edge (Handler,
// v2 JSON plus the AERPAW v1 paths) and its TLS, the change feed, idle
// detection, installs, image fetching and its policy, the /data quota and
// the glue to links and SSH logins. The protocol it speaks and the Runtime
// it drives are package agent; the Docker runtime lives in agent/docker, and
// the HTTP layer never touches it.
//
// It replaces the AERPAW NodeAgent, whose faults it avoids: state never
// changes on GET except on the v1 paths kept for compatibility, no shell
// string is ever built, answers come after the work is done (or say 202 and
// give a status to poll), /data streams with constant memory, every sliver
// has a status, and only the aggregate (mutual TLS) gets in.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/agent"
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

	// LoginPort is the port of the agent's SSH login server (0: none);
	// LoginHost the name experimenters reach it by ("": the aggregate
	// takes its agent URL's host). Status reports them for the manifest.
	LoginHost string
	LoginPort int

	// IdleCheckInterval is how often running containers under an idle
	// policy are measured (idle.go); default 1 min.
	IdleCheckInterval time.Duration
	// Links puts containers on experiment links; nil refuses requests with links.
	Links agent.ExperimentNetwork

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
	if c.IdleCheckInterval <= 0 {
		c.IdleCheckInterval = time.Minute
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
	rt     agent.Runtime
	st     store
	log    *slog.Logger
	ctx    context.Context // lives as long as the service: fetches and timers
	close  context.CancelFunc
	wg     sync.WaitGroup

	changes *changes // numbered changes, long-polled by the aggregate (changes.go)

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
	idle        idleTrack // activity measure (idle.go)
}

// New opens the state directory, loads the records and reconciles them with
// the engine. An unreachable engine is logged, not fatal: the agent still
// answers (status calls will say the engine is unavailable) and Reconcile
// can be called again.
func New(cfg Config, rt agent.Runtime) (*Service, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	st := store{root: cfg.StateDir}
	if err := st.init(); err != nil {
		return nil, fmt.Errorf("agent: state directory: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Service{cfg: cfg, policy: newImagePolicy(cfg.ImageHosts, cfg.ContainerStore), rt: rt, st: st, log: cfg.Logger, ctx: ctx, close: cancel, slivers: map[string]*sliver{}, imageRefs: map[string]map[string]bool{},
		changes: newChanges()}
	s.changes.openJournal(filepath.Join(cfg.StateDir, "sessions.jsonl"), s.log) // sessions.go
	recs, errs := st.loadAll()
	for _, err := range errs {
		s.log.Warn("agent: skipping state file", "err", err)
	}
	for _, r := range recs {
		sl := &sliver{id: r.ID, rec: r}
		if r.Image.State == agent.ImageFetching {
			// The download died with the previous process; say so. A
			// repeated fetch request starts it again.
			r.Image.State, r.Image.Error = agent.ImageFailed, "the agent restarted during the fetch; fetch again"
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
	if es, ok := rt.(agent.EventSource); ok {
		s.wg.Add(1)
		go s.watchEngine(es)
	}
	if ss, ok := rt.(agent.StatsSource); ok {
		s.wg.Add(1)
		go s.idleLoop(ss)
	}
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
	s.changes.closeJournal()
}

func (s *Service) labels() map[string]string {
	return map[string]string{agent.LabelManagedBy: agent.ManagedByValue, agent.LabelInstance: s.cfg.Instance}
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
		id := c.Labels[agent.LabelSliver]
		if agent.ValidID(id) != nil {
			s.log.Warn("agent: labelled container without a valid sliver label", "container", c.ID)
			continue
		}
		sl := s.get(id)
		sl.mu.Lock()
		switch {
		case sl.rec == nil:
			now := time.Now().UTC()
			sl.rec = &record{ID: id, SliceURN: c.Labels[agent.LabelSliceURN], SliverURN: c.Labels[agent.LabelSliverURN], Aggregate: c.Labels[agent.LabelAggregate],
				Image: imageRecord{State: agent.ImageNone}, ContainerID: c.ID, Adopted: true, Created: now}
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

// locked runs fn on the sliver id under its lock, whether the agent knows
// it or not: for the verbs where what is not there is already done.
func (s *Service) locked(id string, fn func(*sliver) error) error {
	if err := agent.ValidID(id); err != nil {
		return err
	}
	sl := s.get(id)
	sl.mu.Lock()
	defer sl.mu.Unlock()
	return fn(sl)
}

// lookup returns the locked sliver for id, or a SEARCHFAILED error if the
// agent has no record of it. The caller must unlock.
func (s *Service) lookup(id string) (*sliver, error) {
	if err := agent.ValidID(id); err != nil {
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
	s.changes.bump(r.ID)
	if err := s.st.save(r); err != nil {
		s.log.Error("agent: writing sliver record", "sliver", r.ID, "err", err)
	}
}

func (s *Service) save(r *record) error {
	s.changes.bump(r.ID)
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
