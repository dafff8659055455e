// Package agent is the node agent: the program that runs next to the
// container engine on every testbed node and does what the aggregate tells it
// (fetch an image, start it with a /data directory, report status, hand back
// /data, clean up). This package holds the domain (sliver records, the
// Runtime interface, the operations in Service), the HTTP edge (Handler, v2
// JSON plus the AERPAW v1 paths) and the aggregate's Client. The Docker
// runtime lives in package agent/docker; the HTTP layer never touches it.
//
// It replaces the AERPAW NodeAgent, whose faults it avoids: state never
// changes on GET except on the v1 paths kept for compatibility, no shell
// string is ever built, answers come after the work is done (or say 202 and
// give a status to poll), /data streams with constant memory, every sliver
// has a status, and only the aggregate (mutual TLS) gets in.
package agent

import (
	"context"
	"errors"
	"io"
	"regexp"
	"time"

	"github.com/geniam/geniam/am"
)

// Labels put on every container the agent creates. Cleanup and reconciliation
// only ever touch containers that carry LabelManagedBy=ManagedByValue and this
// agent's LabelInstance.
const (
	LabelManagedBy = "org.geniam.managed-by"
	ManagedByValue = "geniam agent"
	LabelInstance  = "org.geniam.agent-instance"
	LabelSliver    = "org.geniam.sliver"
	LabelSliverURN = "org.geniam.sliver-urn"
	LabelSliceURN  = "org.geniam.slice-urn"
	// LabelAggregate names the aggregate (its instance) a container was
	// started for: two aggregates sharing an agent or an engine list only
	// their own (GET /v2/slivers?aggregate=NAME).
	LabelAggregate = "org.geniam.aggregate-instance"
)

// ContainerPrefix starts the engine name of every sliver container
// ("geniam-<sliver id>"), so `docker ps` shows which sliver a container is.
const ContainerPrefix = "geniam-"

// sliverIDPattern is what a sliver id may look like. It is also a valid
// Docker container name and a safe single path element: no "/", no "..",
// no shell metacharacters, no spaces.
var sliverIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// ValidID checks a sliver id and returns a BADARGS error naming the problem.
func ValidID(id string) error {
	if !sliverIDPattern.MatchString(id) {
		return am.Errorf(am.BadArgs, "invalid sliver id %q: want 1-128 of [A-Za-z0-9_.-], starting with a letter or digit", truncate(id, 80))
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

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
