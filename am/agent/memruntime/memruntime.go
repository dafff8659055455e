// Package memruntime is an agent.Runtime kept in memory, for tests: the
// agent's bookkeeping (records, states, logs, labels, image use, restart
// policies, idle detection) runs without a container engine. A container
// does not run a program. Its command line (the image's Cmd when the spec
// names none) is read as the few flags of the agent tests' program
// (am/agent/testdata/prog) that need no kernel: -out LINE and -err LINE are
// printed at start, -write NAME=CONTENT and -append NAME write into the host
// directory mounted at /data, -sleep DURATION|forever keeps it running, -exit
// N is its exit code. The restart policy is followed; Stats reports no
// activity. Everything else a spec asks for (limits, devices, network) is
// recorded but not enforced; runtimetest pins what both runtimes share.
package memruntime

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/geniam/geniam/am/agent"
)

// Runtime is the in-memory runtime; the zero value is not usable, call New.
type Runtime struct {
	mu         sync.Mutex
	images     map[string][]string // id → the image's default command (its config's Cmd)
	containers map[string]*container
}

type container struct {
	r      *Runtime
	spec   agent.ContainerSpec
	state  agent.ContainerState
	stdout bytes.Buffer
	stderr bytes.Buffer
	timer  *time.Timer // ends a -sleep DURATION run
	runs   int         // bumps on every start so that an old timer is ignored
}

var (
	_ agent.Runtime     = (*Runtime)(nil)
	_ agent.StatsSource = (*Runtime)(nil)
)

// New returns an empty runtime.
func New() *Runtime {
	return &Runtime{images: map[string][]string{}, containers: map[string]*container{}}
}

// LoadImage reads a `docker save` archive; the image id is, as in Docker,
// the sha256 of the image's config file named in manifest.json.
func (r *Runtime) LoadImage(ctx context.Context, archive io.Reader) (string, error) {
	files := map[string][]byte{}
	tr := tar.NewReader(archive)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", fmt.Errorf("reading the image archive: %w", err)
		}
		if h.Typeflag != tar.TypeReg || (h.Name != "manifest.json" && h.Size > 1<<20) {
			continue // layers: only their presence matters here
		}
		b, err := io.ReadAll(io.LimitReader(tr, 1<<20))
		if err != nil {
			return "", fmt.Errorf("reading the image archive: %w", err)
		}
		files[h.Name] = b
	}
	var manifest []struct{ Config string }
	if err := json.Unmarshal(files["manifest.json"], &manifest); err != nil || len(manifest) == 0 {
		return "", errors.New("the image archive has no usable manifest.json")
	}
	cfg, ok := files[manifest[0].Config]
	if !ok {
		return "", fmt.Errorf("the image archive lacks its config %q", manifest[0].Config)
	}
	var conf struct{ Config struct{ Cmd []string } }
	_ = json.Unmarshal(cfg, &conf)
	sum := sha256.Sum256(cfg)
	id := "sha256:" + hex.EncodeToString(sum[:])
	r.mu.Lock()
	r.images[id] = append([]string{}, conf.Config.Cmd...)
	r.mu.Unlock()
	return id, nil
}

// HasImage reports whether the image is loaded (for tests' checks).
func (r *Runtime) HasImage(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.images[id]
	return ok
}

// RemoveImage removes the image unless a container uses it.
func (r *Runtime) RemoveImage(ctx context.Context, id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.containers {
		if c.spec.Image == id {
			return fmt.Errorf("%w: container %s uses image %s", agent.ErrInUse, c.state.ID, id)
		}
	}
	delete(r.images, id)
	return nil
}

// Create records the container; the image must be loaded and the name free.
func (r *Runtime) Create(ctx context.Context, s agent.ContainerSpec) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	defaultCmd, ok := r.images[s.Image]
	if !ok {
		return "", fmt.Errorf("%w: image %s", agent.ErrNotFound, s.Image)
	}
	if len(s.Entrypoint) == 0 && len(s.Cmd) == 0 { // as the engine: the image's command
		s.Cmd = defaultCmd
	}
	if _, err := parseCmd(s.Cmd); err != nil {
		return "", err
	}
	for _, c := range r.containers {
		if s.Name != "" && c.spec.Name == s.Name {
			return "", fmt.Errorf("container name %q is already in use by %s", s.Name, c.state.ID)
		}
	}
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	id := hex.EncodeToString(b)
	s.Labels = maps.Clone(s.Labels)
	r.containers[id] = &container{r: r, spec: s, state: agent.ContainerState{
		ID: id, Name: "/" + s.Name, Status: "created", Labels: s.Labels,
	}}
	return id, nil
}

// run is what a container's command line asks of the in-memory program.
type run struct {
	lines   [2][]string   // printed on stdout and stderr at start
	sleep   time.Duration // how long it runs; -1: until stopped
	exit    int
	writes  []string // name=content: written to /data/name at start
	appends []string // name: a line "run" appended to /data/name at start
}

// parseCmd reads the flags the in-memory container understands.
func parseCmd(args []string) (p run, err error) {
	for i := 0; i < len(args); i += 2 {
		if i+1 >= len(args) {
			return p, fmt.Errorf("%w: memruntime: flag %s lacks its value", agent.ErrRefused, args[i])
		}
		v := args[i+1]
		switch args[i] {
		case "-out": // the last one counts, as with the flag package
			p.lines[0] = []string{v}
		case "-err":
			p.lines[1] = []string{v}
		case "-write":
			p.writes = append(p.writes, v)
		case "-append":
			p.appends = append(p.appends, v)
		case "-exit":
			if p.exit, err = strconv.Atoi(v); err != nil {
				return p, fmt.Errorf("%w: memruntime: -exit %q", agent.ErrRefused, v)
			}
		case "-sleep":
			if v == "forever" {
				p.sleep = -1
			} else if p.sleep, err = time.ParseDuration(v); err != nil {
				return p, fmt.Errorf("%w: memruntime: -sleep %q", agent.ErrRefused, v)
			}
		default:
			return p, fmt.Errorf("%w: memruntime runs only -out, -err, -write, -append, -sleep and -exit, not %s", agent.ErrRefused, args[i])
		}
	}
	return p, nil
}

// writeData does the run's -append and -write in the host directory
// mounted at /data, and returns the test program's exit code when one
// fails (100, 101), else 0.
func (c *container) writeData(p run) int {
	dir := ""
	for _, m := range c.spec.Mounts {
		if m.Container == "/data" {
			dir = m.Host
		}
	}
	for _, a := range p.appends {
		f, err := os.OpenFile(filepath.Join(dir, a), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if dir == "" || err != nil {
			return 100
		}
		fmt.Fprintln(f, "run")
		f.Close()
	}
	for _, w := range p.writes {
		name, content, _ := strings.Cut(w, "=")
		if dir == "" || os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644) != nil {
			return 101
		}
	}
	return 0
}

func (r *Runtime) get(id string) (*container, error) {
	if c, ok := r.containers[id]; ok {
		return c, nil
	}
	for _, c := range r.containers {
		if c.spec.Name != "" && (c.spec.Name == id || c.state.Name == id) {
			return c, nil
		}
	}
	return nil, fmt.Errorf("%w: container %s", agent.ErrNotFound, id)
}

// Start runs the container's command; starting a running one does nothing.
func (r *Runtime) Start(ctx context.Context, id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, err := r.get(id)
	if err != nil || c.state.Running {
		return err
	}
	r.run(c)
	return nil
}

// run starts the container's program once; r.mu is held.
func (r *Runtime) run(c *container) {
	p, _ := parseCmd(c.spec.Cmd) // checked by Create
	c.runs++
	c.state.Running, c.state.Status, c.state.ExitCode = true, "running", 0
	c.state.StartedAt, c.state.FinishedAt = time.Now().UTC(), time.Time{}
	if code := c.writeData(p); code != 0 {
		r.finish(c, code)
		return
	}
	for i, w := range []*bytes.Buffer{&c.stdout, &c.stderr} {
		for _, l := range p.lines[i] {
			w.WriteString(l + "\n")
		}
	}
	switch {
	case p.sleep == 0:
		r.finish(c, p.exit)
	case p.sleep > 0:
		c.later(p.sleep, func() { r.finish(c, p.exit) })
	}
}

// later calls fn with r.mu held after d, unless the container was started,
// stopped or removed meanwhile.
func (c *container) later(d time.Duration, fn func()) {
	run := c.runs
	c.timer = time.AfterFunc(d, func() {
		c.r.mu.Lock()
		defer c.r.mu.Unlock()
		if c.runs == run && c.r.containers[c.state.ID] == c {
			fn()
		}
	})
}

// finish ends a run that ended by itself, and starts it again (after a
// pause, as the engine does) when the restart policy says so; r.mu is held.
func (r *Runtime) finish(c *container, code int) {
	c.exit(code)
	pol := c.spec.Restart
	if pol.Name == "always" || (pol.Name == "on-failure" && code != 0 && (pol.MaxRetries == 0 || c.state.RestartCount < pol.MaxRetries)) {
		c.state.Status = "restarting"
		c.later(100*time.Millisecond, func() {
			c.state.RestartCount++
			r.run(c)
		})
	}
}

// exit ends the run with the code; r.mu is held.
func (c *container) exit(code int) {
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
	c.state.Running, c.state.Status, c.state.ExitCode = false, "exited", code
	c.state.FinishedAt = time.Now().UTC()
}

// Stop ends a running container as the test program does on SIGTERM
// (exit 143); the grace period is never needed.
func (r *Runtime) Stop(ctx context.Context, id string, grace time.Duration) error {
	return r.signal(id, 143)
}

// Kill ends a running container with SIGKILL's code (137).
func (r *Runtime) Kill(ctx context.Context, id string) error {
	return r.signal(id, 137)
}

func (r *Runtime) signal(id string, code int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, err := r.get(id)
	switch {
	case err != nil:
	case c.state.Running:
		c.exit(code)
	case c.state.Status == "restarting": // stopped in the pause: no restart
		c.runs++
		c.exit(c.state.ExitCode)
	}
	return err
}

// Remove deletes the container, running or not; nil when it is gone.
func (r *Runtime) Remove(ctx context.Context, id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c, err := r.get(id); err == nil {
		c.exit(c.state.ExitCode)
		delete(r.containers, c.state.ID)
	}
	return nil
}

// Stats reports no activity: the in-memory program uses neither CPU nor
// network, so a container under an idle policy is always idle.
func (r *Runtime) Stats(ctx context.Context, id string) (agent.ContainerStats, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, err := r.get(id)
	return agent.ContainerStats{}, err
}

// Inspect returns a copy of the container's state.
func (r *Runtime) Inspect(ctx context.Context, id string) (agent.ContainerState, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, err := r.get(id)
	if err != nil {
		return agent.ContainerState{}, err
	}
	s := c.state
	s.Labels = maps.Clone(s.Labels)
	return s, nil
}

// Logs returns the last lines of each stream, each cut to maxBytes
// (lines <= 0: all of them).
func (r *Runtime) Logs(ctx context.Context, id string, lines, maxBytes int) ([]byte, []byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, err := r.get(id)
	if err != nil {
		return nil, nil, err
	}
	return tail(c.stdout.Bytes(), lines, maxBytes), tail(c.stderr.Bytes(), lines, maxBytes), nil
}

func tail(b []byte, lines, maxBytes int) []byte {
	if lines > 0 {
		n := 0
		for i := len(b) - 2; i >= 0; i-- {
			if b[i] == '\n' {
				if n++; n == lines {
					b = b[i+1:]
					break
				}
			}
		}
	}
	if len(b) > maxBytes { // as the engine's client: the newest maxBytes
		b = b[len(b)-max(maxBytes, 0):]
	}
	return bytes.Clone(b)
}

// StreamLogs copies everything the container printed.
func (r *Runtime) StreamLogs(ctx context.Context, id string, stdout, stderr io.Writer) error {
	r.mu.Lock()
	c, err := r.get(id)
	var o, e []byte
	if err == nil {
		o, e = bytes.Clone(c.stdout.Bytes()), bytes.Clone(c.stderr.Bytes())
	}
	r.mu.Unlock()
	if err != nil {
		return err
	}
	if _, err := stdout.Write(o); err != nil {
		return err
	}
	_, err = stderr.Write(e)
	return err
}

// List returns the containers carrying all the labels, in id order.
func (r *Runtime) List(ctx context.Context, labels map[string]string) ([]agent.ContainerState, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []agent.ContainerState
next:
	for _, c := range r.containers {
		for k, v := range labels {
			if c.state.Labels[k] != v {
				continue next
			}
		}
		s := c.state
		s.Labels = maps.Clone(s.Labels)
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}
