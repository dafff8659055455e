package agent

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/geniam/geniam/am"
)

// Runtime is the container engine as the agent sees it: a handful of verbs on
// container and image ids, returning typed state (after Nomad's task drivers).
// The Docker implementation is in package agent/docker; tests may use any.
type Runtime interface {
	// LoadImage reads an image archive (`docker save` format) from r and
	// returns the loaded image's id. If r returns an error, nothing is loaded.
	LoadImage(ctx context.Context, r io.Reader) (imageID string, err error)
	// RemoveImage deletes an image; ErrInUse if a container still uses it,
	// nil if it is already gone.
	RemoveImage(ctx context.Context, imageID string) error
	// Create makes a container (not started) and returns its id.
	Create(ctx context.Context, spec ContainerSpec) (containerID string, err error)
	// Start starts a created or stopped container.
	Start(ctx context.Context, containerID string) error
	// Stop asks the container to stop, killing it after grace.
	Stop(ctx context.Context, containerID string, grace time.Duration) error
	// Kill kills the container at once; not an error if it is not running.
	Kill(ctx context.Context, containerID string) error
	// Remove deletes the container (killing it if needed); nil if it is gone.
	Remove(ctx context.Context, containerID string) error
	// Inspect returns the container's state; ErrNotFound if it does not exist.
	Inspect(ctx context.Context, containerID string) (ContainerState, error)
	// Logs returns the last lines of stdout and stderr, each at most maxBytes.
	Logs(ctx context.Context, containerID string, lines, maxBytes int) (stdout, stderr []byte, err error)
	// StreamLogs copies the container's whole stdout and stderr so far to
	// the writers (either may be io.Discard), with constant memory.
	StreamLogs(ctx context.Context, containerID string, stdout, stderr io.Writer) error
	// List returns the containers carrying all the given labels.
	List(ctx context.Context, labels map[string]string) ([]ContainerState, error)
}

// Errors a Runtime returns for the cases the agent handles.
var (
	ErrNotFound = errors.New("no such container or image")
	ErrInUse    = errors.New("image is in use")
	// ErrRefused is the runtime refusing what a request or an image asks
	// for (an image VOLUME); the message says what and why.
	ErrRefused = errors.New("refused by the agent's policy")
)

// ContainerSpec is everything needed to create a sliver's container.
type ContainerSpec struct {
	Name        string // engine name, ContainerPrefix + sliver id
	Image       string // image id
	Entrypoint  []string
	Cmd         []string
	Env         []string
	Labels      map[string]string
	Mounts      []Mount
	Network     string // engine network mode; "none" cuts the container off
	Restart     RestartPolicy
	MemoryBytes int64
	NanoCPUs    int64
	PidsLimit   int64
	Devices     []string // host device paths passed through unchanged
	// Capabilities the container keeps; the runtime drops all others.
	Capabilities   []string
	ReadOnlyRootfs bool
}

// Mount is a host directory bound into the container.
type Mount struct {
	Host      string
	Container string
	ReadOnly  bool
}

// RestartPolicy is what the engine does when the container exits.
type RestartPolicy struct {
	Name       string // "no", "always" or "on-failure"
	MaxRetries int    // on-failure only; 0 means unlimited
}

// ContainerState is what the runtime knows of one container.
type ContainerState struct {
	ID           string
	Name         string
	Status       string // created, running, restarting, paused, exited, dead, removing
	Running      bool
	ExitCode     int
	Pid          int    // the container's init on the host, 0 when it is not running
	Error        string // why the engine could not run it, if it could not
	OOMKilled    bool
	StartedAt    time.Time
	FinishedAt   time.Time
	RestartCount int
	Labels       map[string]string
}

// EventSource is a runtime that reports container events as they happen.
// docker.Runtime implements it with the engine's /events stream.
type EventSource interface {
	// Events calls fn for each event of the containers carrying all the
	// labels, until ctx ends or the stream breaks (then it returns why).
	Events(ctx context.Context, labels map[string]string, fn func(ContainerEvent)) error
}

// ContainerEvent is one event of a container in the engine.
type ContainerEvent struct {
	ContainerID string
	Action      string // start, die, oom, kill, restart, destroy, ...
	Sliver      string // the sliver label
}

// StatsSource is a runtime that reports a container's resource use
// (docker.Runtime implements it).
type StatsSource interface {
	Stats(ctx context.Context, containerID string) (ContainerStats, error)
}

// ContainerStats are cumulative counters of a running container.
type ContainerStats struct {
	CPUNanos uint64 // CPU time used
	NetBytes uint64 // bytes received and sent on all interfaces
}

// Copier is a runtime that can unpack a tar into a container
// (docker.Runtime implements it).
type Copier interface {
	// CopyTo unpacks the tar (plain, gzip, bzip2 or xz) into dir of the
	// container, which must exist.
	CopyTo(ctx context.Context, containerID, dir string, tar io.Reader) error
}

// Execer runs processes inside a running container (`docker exec`). It is
// kept apart from Runtime so that runtimes without it still serve
// everything else; docker.Runtime implements both.
type Execer interface {
	// Exec starts spec.Cmd in the container; its output goes to stdout and
	// stderr (with a TTY everything goes to stdout) until it ends.
	Exec(ctx context.Context, containerID string, spec ExecSpec, stdout, stderr io.Writer) (ExecProcess, error)
	// PathExists reports whether path exists in the container's files
	// (a shell, an sftp server), so a login can choose what to run.
	PathExists(ctx context.Context, containerID, path string) (bool, error)
}

// ExecSpec is a process to run in a container.
type ExecSpec struct {
	Cmd        []string // argv; never a host shell string
	Env        []string // KEY=value
	Tty        bool
	Rows, Cols uint32 // initial terminal size with Tty
}

// ExecProcess is a process started by Execer.Exec.
type ExecProcess interface {
	io.Writer          // its stdin
	CloseStdin() error // end of its input
	Resize(ctx context.Context, rows, cols uint32) error
	// Wait returns the exit code once the output has been copied out.
	Wait(ctx context.Context) (int, error)
	Close() error
}

// ExperimentNetwork puts containers on experiment links (implemented by
// package expnet with netlink). Both methods are idempotent: Attach on a
// container that already has the interfaces only re-applies addresses and
// shaping, Detach of what is gone is not an error.
type ExperimentNetwork interface {
	// Attach creates the interfaces of links in the network namespace of
	// the process pid (the container's init).
	Attach(ctx context.Context, sliverID string, pid int, links []LinkAttachment) error
	// Detach removes the sliver's interfaces and every link bridge and
	// tunnel no other container uses any more.
	Detach(ctx context.Context, sliverID string, links []LinkAttachment) error
	// Prune removes the link bridges and tunnels no container is on (left
	// by slivers whose records were lost), and says how many.
	Prune(ctx context.Context) (int, error)
	// Support says what the node's kernel was found to support for links
	// (probed once, when the network was opened).
	Support() am.LinkSupport
}
