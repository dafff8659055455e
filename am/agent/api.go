package agent

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/geniam/geniam/am"
)

// The JSON bodies of the v2 API, shared by Handler and Client.

// FetchRequest asks the agent to load an image archive (`docker save` tar).
type FetchRequest struct {
	URL    string `json:"url"`    // http(s) URL, or a local path when the agent allows files
	SHA256 string `json:"sha256"` // lowercase hex digest of the tar; required on v2
	// Aggregate is the instance of the aggregate asking (see LabelAggregate).
	Aggregate string `json:"aggregate,omitempty"`
}

var sha256Pattern = regexp.MustCompile(`^[0-9a-f]{64}$`)

// Validate checks the request's form (not whether the URL is allowed).
func (f *FetchRequest) Validate() error { return f.validate(true) }

// validate checks the form; without requireDigest (v1) an empty sha256 passes.
func (f *FetchRequest) validate(requireDigest bool) error {
	f.SHA256 = strings.ToLower(strings.TrimPrefix(f.SHA256, "sha256:"))
	if f.URL == "" {
		return am.Errorf(am.MissingArgs, "fetch: url is required")
	}
	if len(f.URL) > 4096 {
		return am.Errorf(am.BadArgs, "fetch: url is longer than 4096 bytes")
	}
	if f.SHA256 == "" && !requireDigest {
		return nil
	}
	if !sha256Pattern.MatchString(f.SHA256) {
		return am.Errorf(am.BadArgs, "fetch: sha256 must be 64 hex digits, got %q", truncate(f.SHA256, 80))
	}
	return nil
}

// User is one login user of the slice and their SSH public keys.
type User struct {
	URN  string   `json:"urn"`
	Keys []string `json:"keys"`
}

// Restart policies a StartRequest may name.
const (
	RestartOnce      = "once"       // run once, never restart (Docker "no")
	RestartAlways    = "always"     // restart whenever it exits
	RestartOnFailure = "on-failure" // restart on a non-zero exit, up to max_retries
)

// StartRequest creates and starts a sliver's container from its fetched image.
type StartRequest struct {
	SliceURN  string `json:"slice_urn"`
	SliverURN string `json:"sliver_urn"`
	Aggregate string `json:"aggregate,omitempty"` // the instance of the aggregate asking (LabelAggregate)
	// Command, if given, replaces the image's entrypoint and command (argv).
	Command []string `json:"command,omitempty"`
	// Shell is a command string the experimenter wrote; it runs as
	// ["/bin/sh","-c",Shell] inside their own container. Never on the host.
	Shell string   `json:"shell,omitempty"`
	Env   []string `json:"env,omitempty"` // KEY=value
	// Network is the engine network mode; "" means the agent's default
	// ("none"). Only modes the agent's configuration allows are accepted.
	Network    string `json:"network,omitempty"`
	Restart    string `json:"restart,omitempty"` // once (default), always, on-failure
	MaxRetries int    `json:"max_retries,omitempty"`
	// TimeLimitSeconds, if positive, is how long the container may run
	// before the agent kills it.
	TimeLimitSeconds int64   `json:"time_limit_seconds,omitempty"`
	MemoryBytes      int64   `json:"memory_bytes,omitempty"`  // capped by the agent's limit
	CPUs             float64 `json:"cpus,omitempty"`          // capped by the agent's limit
	DataBytes        int64   `json:"data_bytes,omitempty"`    // size of /data, capped by the agent's data_quota_bytes
	Pids             int64   `json:"pids,omitempty"`          // processes and threads, capped by the agent's pids_limit
	ArchiveBytes     int64   `json:"archive_bytes,omitempty"` // largest /data archive, capped by max_archive_bytes
	Manifest         string  `json:"manifest,omitempty"`      // manifest RSpec, shown in /geni/manifest.xml
	Users            []User  `json:"users,omitempty"`         // become /geni/authorized_keys
	// Links are the container's interfaces on experiment links (see links.go).
	Links []LinkAttachment `json:"links,omitempty"`
}

// Limits on request fields, so a request cannot make the agent write without bound.
const (
	maxArgs        = 256
	maxArgBytes    = 64 << 10
	maxManifest    = 1 << 20
	maxUsers       = 1000
	maxKeysPerUser = 100
	maxKeyBytes    = 16 << 10
	maxURNBytes    = 1024
)

// Validate checks the request's form and fills defaults.
func (s *StartRequest) Validate() error {
	bad := func(format string, args ...any) error {
		return am.Errorf(am.BadArgs, "start: "+format, args...)
	}
	if len(s.Command) > 0 && s.Shell != "" {
		return bad("give either command (argv) or shell, not both")
	}
	if len(s.Command) > maxArgs || len(s.Env) > maxArgs {
		return bad("at most %d command arguments and %d environment variables", maxArgs, maxArgs)
	}
	for _, a := range append(append([]string{s.Shell}, s.Command...), s.Env...) {
		if len(a) > maxArgBytes || strings.ContainsRune(a, 0) {
			return bad("an argument or variable is longer than %d bytes or contains NUL", maxArgBytes)
		}
	}
	if len(s.Command) > 0 && s.Command[0] == "" {
		return bad("command[0] is empty")
	}
	for _, e := range s.Env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			return bad("environment entry %q is not KEY=value", truncate(e, 60))
		}
	}
	switch s.Restart {
	case "":
		s.Restart = RestartOnce
	case RestartOnce, RestartAlways, RestartOnFailure:
	default:
		return bad("restart must be once, always or on-failure, not %q", truncate(s.Restart, 40))
	}
	if s.MaxRetries < 0 || s.MaxRetries > 1000 || (s.MaxRetries > 0 && s.Restart != RestartOnFailure) {
		return bad("max_retries must be 0-1000 and only with restart on-failure")
	}
	if s.TimeLimitSeconds < 0 || s.TimeLimitSeconds > 366*24*3600 {
		return bad("time_limit_seconds must be between 0 and a year")
	}
	if s.MemoryBytes < 0 || s.CPUs < 0 || s.CPUs > 1024 || s.DataBytes < 0 || s.Pids < 0 || s.ArchiveBytes < 0 {
		return bad("memory_bytes, cpus, pids, data_bytes and archive_bytes must not be negative")
	}
	if len(s.SliceURN) > maxURNBytes || len(s.SliverURN) > maxURNBytes || strings.ContainsAny(s.SliceURN+s.SliverURN, "\x00\n") {
		return bad("slice_urn and sliver_urn must be single lines of at most %d bytes", maxURNBytes)
	}
	if len(s.Manifest) > maxManifest {
		return bad("manifest is larger than %d bytes", maxManifest)
	}
	if err := validLinks(s.Links); err != nil {
		return err
	}
	return validUsers(s.Users)
}

func validUsers(us []User) error {
	if len(us) > maxUsers {
		return am.Errorf(am.BadArgs, "users: at most %d users", maxUsers)
	}
	for _, u := range us {
		if len(u.Keys) > maxKeysPerUser {
			return am.Errorf(am.BadArgs, "users: %s has more than %d keys", truncate(u.URN, 80), maxKeysPerUser)
		}
		for _, k := range u.Keys {
			// One key per authorized_keys line: a newline would let a key
			// smuggle in a second entry with options.
			if len(k) > maxKeyBytes || strings.ContainsAny(k, "\r\n\x00") {
				return am.Errorf(am.BadArgs, "users: a key of %s contains a line break or is longer than %d bytes", truncate(u.URN, 80), maxKeyBytes)
			}
		}
		if len(u.URN) > maxURNBytes || strings.ContainsAny(u.URN, "\r\n\x00") {
			return am.Errorf(am.BadArgs, "users: a user URN is not a single line")
		}
	}
	return nil
}

// UsersRequest replaces the slice users (geni_update_users).
type UsersRequest struct {
	Users []User `json:"users"`
}

// State is the sliver's overall state, as the aggregate polls it.
type State string

const (
	StateEmpty      State = "empty"      // nothing fetched, no container
	StateFetching   State = "fetching"   // the image is being downloaded and loaded
	StateFetched    State = "fetched"    // the image is loaded, no container yet
	StateCreated    State = "created"    // the container exists but never started
	StateRunning    State = "running"    // the container runs
	StateRestarting State = "restarting" // the engine is restarting it (restart policy)
	StateStopped    State = "stopped"    // stopped on request (geni_stop); can be started again
	StateExited     State = "exited"     // the command finished; see exit_code
	StateFailed     State = "failed"     // fetch or start failed, killed at its time limit, OOM, lost; see reason
)

// Status is everything the agent knows about one sliver.
type Status struct {
	ID         string           `json:"id"`
	SliceURN   string           `json:"slice_urn,omitempty"`
	SliverURN  string           `json:"sliver_urn,omitempty"`
	Aggregate  string           `json:"aggregate,omitempty"` // the aggregate instance it was started for
	State      State            `json:"state"`
	Reason     string           `json:"reason,omitempty"` // why it failed
	ExitCode   *int             `json:"exit_code,omitempty"`
	Image      ImageStatus      `json:"image"`
	Container  *ContainerStatus `json:"container,omitempty"`
	StdoutTail string           `json:"stdout_tail,omitempty"`
	StderrTail string           `json:"stderr_tail,omitempty"`
	Adopted    bool             `json:"adopted,omitempty"` // found in the engine by label, no record on disk
	Data       *DataUsage       `json:"data,omitempty"`    // when /data has a quota
}

// ImageStatus is the state of the sliver's image.
type ImageStatus struct {
	URL        string     `json:"url,omitempty"`
	SHA256     string     `json:"sha256,omitempty"`
	Verified   bool       `json:"verified"` // the tar matched SHA256 (v1 fetches may skip it)
	ID         string     `json:"id,omitempty"`
	State      string     `json:"state"` // none, fetching, ready, failed
	Error      string     `json:"error,omitempty"`
	Bytes      int64      `json:"bytes,omitempty"`
	StartedAt  *time.Time `json:"started_at,omitempty"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
}

// Image states.
const (
	ImageNone     = "none"
	ImageFetching = "fetching"
	ImageReady    = "ready"
	ImageFailed   = "failed"
)

// ContainerStatus is the state of the sliver's container.
type ContainerStatus struct {
	ID              string     `json:"id"`
	EngineStatus    string     `json:"engine_status"` // the engine's word: created, running, exited, ...
	ExitCode        *int       `json:"exit_code,omitempty"`
	Error           string     `json:"error,omitempty"`
	OOMKilled       bool       `json:"oom_killed,omitempty"`
	TimeLimitKilled bool       `json:"time_limit_killed,omitempty"`
	RestartCount    int        `json:"restart_count"`
	Restart         string     `json:"restart,omitempty"`
	Network         string     `json:"network,omitempty"`
	Deadline        *time.Time `json:"deadline,omitempty"` // when the time limit kills it
	StartedAt       *time.Time `json:"started_at,omitempty"`
	FinishedAt      *time.Time `json:"finished_at,omitempty"`
	// Limits are what the container was given (see limits.go).
	Limits *Limits `json:"limits,omitempty"`
}

// ErrorBody is every error answer of the agent.
type ErrorBody struct {
	Error    string `json:"error"`     // message safe to show the experimenter
	Code     string `json:"code"`      // geni_code label, e.g. BADARGS
	GeniCode int    `json:"geni_code"` // numeric geni_code
	LogID    string `json:"log_id,omitempty"`
}

func (b ErrorBody) asErr(op string) error {
	msg := b.Error
	if b.LogID != "" {
		msg = fmt.Sprintf("%s (agent log id %s)", msg, b.LogID)
	}
	return &am.Err{Code: am.Code(b.GeniCode), Op: op, Msg: msg}
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}
