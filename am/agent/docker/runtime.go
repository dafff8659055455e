package docker

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/geniam/geniam/am/agent"
)

// Runtime adapts the engine client to agent.Runtime.
type Runtime struct {
	*Client
}

var _ agent.Runtime = Runtime{}

// NewRuntime returns the agent runtime for the engine at the unix socket path.
func NewRuntime(socket string) Runtime { return Runtime{New(socket)} }

func translate(err error) error {
	switch {
	case err == nil:
		return nil
	case IsNotFound(err):
		return fmt.Errorf("%w: %v", agent.ErrNotFound, err)
	default:
		return err
	}
}

// LoadImage loads the archive and returns the id of its (first) image.
func (r Runtime) LoadImage(ctx context.Context, tar io.Reader) (string, error) {
	ids, err := r.Client.LoadImage(ctx, tar)
	if err != nil {
		return "", err
	}
	return ids[0], nil
}

// RemoveImage removes the image unless a container uses it.
func (r Runtime) RemoveImage(ctx context.Context, id string) error {
	err := r.Client.RemoveImage(ctx, id)
	switch {
	case IsNotFound(err):
		return nil
	case IsConflict(err):
		return fmt.Errorf("%w: %v", agent.ErrInUse, err)
	}
	return err
}

// Create makes the container from the spec.
func (r Runtime) Create(ctx context.Context, s agent.ContainerSpec) (string, error) {
	cfg := ContainerConfig{
		Image:      s.Image,
		Entrypoint: s.Entrypoint,
		Cmd:        s.Cmd,
		Env:        s.Env,
		Labels:     s.Labels,
		HostConfig: HostConfig{
			NetworkMode:   s.Network,
			RestartPolicy: RestartPolicy{Name: s.Restart.Name, MaximumRetryCount: s.Restart.MaxRetries},
			Memory:        s.MemoryBytes,
			NanoCPUs:      s.NanoCPUs,
			// no-new-privileges: setuid binaries in an experimenter's image
			// cannot raise privileges inside the container.
			SecurityOpt: []string{"no-new-privileges"},
			// Every capability is dropped but the documented minimum the
			// agent asks for (agent.DefaultCapabilities: no MKNOD, no
			// NET_RAW).
			CapDrop:        []string{"ALL"},
			CapAdd:         s.Capabilities,
			ReadonlyRootfs: s.ReadOnlyRootfs,
		},
	}
	if s.MemoryBytes > 0 {
		cfg.HostConfig.MemorySwap = s.MemoryBytes // no swap beyond the limit
	}
	if s.ReadOnlyRootfs {
		cfg.HostConfig.Tmpfs = map[string]string{"/tmp": "rw,nosuid,nodev,size=64m"}
	}
	// An image's VOLUME would make the engine create a volume outside /data
	// that is never archived and outlives the sliver: refuse it by name.
	vols, err := r.ImageVolumes(ctx, s.Image)
	if err != nil {
		return "", translate(err)
	}
	if len(vols) > 0 {
		return "", fmt.Errorf("%w: the image declares VOLUME %s; volumes live outside /data and are never archived, so this agent refuses them (rebuild the image without VOLUME and keep data in /data)",
			agent.ErrRefused, strings.Join(vols, ", "))
	}
	if s.Network == "none" {
		cfg.NetworkDisabled = true
	}
	if s.PidsLimit > 0 {
		p := s.PidsLimit
		cfg.HostConfig.PidsLimit = &p
	}
	for _, m := range s.Mounts {
		b := m.Host + ":" + m.Container
		if m.ReadOnly {
			b += ":ro"
		}
		cfg.HostConfig.Binds = append(cfg.HostConfig.Binds, b)
	}
	for _, d := range s.Devices {
		cfg.HostConfig.Devices = append(cfg.HostConfig.Devices, Device{PathOnHost: d, PathInContainer: d, CgroupPermissions: "rwm"})
	}
	id, err := r.CreateContainer(ctx, s.Name, cfg)
	return id, translate(err)
}

// Start starts the container.
func (r Runtime) Start(ctx context.Context, id string) error {
	return translate(r.StartContainer(ctx, id))
}

// Stop stops the container with a grace period.
func (r Runtime) Stop(ctx context.Context, id string, grace time.Duration) error {
	return translate(r.StopContainer(ctx, id, grace))
}

// Kill kills the container.
func (r Runtime) Kill(ctx context.Context, id string) error {
	return translate(r.KillContainer(ctx, id))
}

// Remove force-removes the container.
func (r Runtime) Remove(ctx context.Context, id string) error {
	return r.RemoveContainer(ctx, id)
}

// Inspect returns the container's state.
func (r Runtime) Inspect(ctx context.Context, id string) (agent.ContainerState, error) {
	j, err := r.InspectContainer(ctx, id)
	if err != nil {
		return agent.ContainerState{}, translate(err)
	}
	return agent.ContainerState{
		ID:           j.ID,
		Name:         j.Name,
		Status:       j.State.Status,
		Running:      j.State.Running,
		ExitCode:     j.State.ExitCode,
		Pid:          j.State.Pid,
		Error:        j.State.Error,
		OOMKilled:    j.State.OOMKilled,
		StartedAt:    parseTime(j.State.StartedAt),
		FinishedAt:   parseTime(j.State.FinishedAt),
		RestartCount: j.RestartCount,
		Labels:       j.Config.Labels,
	}, nil
}

// parseTime reads the engine's RFC 3339 times; its "zero" time
// (0001-01-01T00:00:00Z) and garbage become the zero time.Time.
func parseTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil || t.Year() < 2000 {
		return time.Time{}
	}
	return t
}

// Logs returns the tails of stdout and stderr.
func (r Runtime) Logs(ctx context.Context, id string, lines, maxBytes int) ([]byte, []byte, error) {
	o, e, err := r.Client.Logs(ctx, id, lines, maxBytes)
	return o, e, translate(err)
}

// StreamLogs copies the container's output to the writers.
func (r Runtime) StreamLogs(ctx context.Context, id string, stdout, stderr io.Writer) error {
	return translate(r.Client.StreamLogs(ctx, id, stdout, stderr))
}

// List returns the labelled containers.
func (r Runtime) List(ctx context.Context, labels map[string]string) ([]agent.ContainerState, error) {
	cs, err := r.ListContainers(ctx, labels)
	if err != nil {
		return nil, err
	}
	out := make([]agent.ContainerState, 0, len(cs))
	for _, c := range cs {
		name := ""
		if len(c.Names) > 0 {
			name = c.Names[0]
		}
		out = append(out, agent.ContainerState{ID: c.ID, Name: name, Status: c.State, Running: c.State == "running", Labels: c.Labels})
	}
	return out, nil
}
