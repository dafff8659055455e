package agent

import (
	"fmt"
	"net"
	"path"
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

// ValidateV1 is Validate as the v1 API has it: an empty sha256 passes.
func (f *FetchRequest) ValidateV1() error { return f.validate(false) }

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
		return am.Errorf(am.BadArgs, "fetch: sha256 must be 64 hex digits, got %q", am.Clip(f.SHA256, 80))
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
	// Install archives are unpacked into the container before its first
	// start (install.go).
	Install []Install `json:"install,omitempty"`
	// IdleStopSeconds, if positive, stops the container (keeping it and
	// its data) after that long without activity, with a warning
	// IdleWarnSeconds before (idle.go).
	IdleStopSeconds int64 `json:"idle_stop_seconds,omitempty"`
	IdleWarnSeconds int64 `json:"idle_warn_seconds,omitempty"`
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
			return bad("environment entry %q is not KEY=value", am.Clip(e, 60))
		}
	}
	switch s.Restart {
	case "":
		s.Restart = RestartOnce
	case RestartOnce, RestartAlways, RestartOnFailure:
	default:
		return bad("restart must be once, always or on-failure, not %q", am.Clip(s.Restart, 40))
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
	if s.IdleStopSeconds < 0 || s.IdleWarnSeconds < 0 || s.IdleWarnSeconds > s.IdleStopSeconds {
		return bad("idle_warn_seconds must be between 0 and idle_stop_seconds")
	}
	if err := validInstalls(s.Install); err != nil {
		return err
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
			return am.Errorf(am.BadArgs, "users: %s has more than %d keys", am.Clip(u.URN, 80), maxKeysPerUser)
		}
		for _, k := range u.Keys {
			// One key per authorized_keys line: a newline would let a key
			// smuggle in a second entry with options.
			if len(k) > maxKeyBytes || strings.ContainsAny(k, "\r\n\x00") {
				return am.Errorf(am.BadArgs, "users: a key of %s contains a line break or is longer than %d bytes", am.Clip(u.URN, 80), maxKeyBytes)
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

// Validate checks the users and their keys.
func (u UsersRequest) Validate() error { return validUsers(u.Users) }

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

// PingResult is the answer to GET /v2/ping.
type PingResult struct {
	OK       bool           `json:"ok"`
	Instance string         `json:"instance"`
	Caller   string         `json:"caller"`
	Links    am.LinkSupport `json:"links"` // what this node's kernel supports for links, probed at the agent's start
	Disk                    // the space of the state directory's filesystem (zero: unknown)
}

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
	Login      *Login           `json:"login,omitempty"`   // SSH login to the container, when the agent offers it
	Idle       *IdleStatus      `json:"idle,omitempty"`    // under an idle policy: last activity, stop time
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

// DataUsage is how full the sliver's /data is.
type DataUsage struct {
	UsedBytes  int64 `json:"used_bytes"`
	LimitBytes int64 `json:"limit_bytes,omitempty"` // 0: not enforced on this node
	// OverQuota says /data is full: the container's writes fail with "no
	// space left on device".
	OverQuota bool `json:"over_quota,omitempty"`
}

// IdleStatus is what Status says of a sliver under an idle policy.
type IdleStatus struct {
	Since   time.Time  `json:"since"`             // last activity seen
	StopAt  time.Time  `json:"stop_at"`           // when it is stopped unless active again
	Warned  bool       `json:"warned,omitempty"`  // the warning was given
	Stopped *time.Time `json:"stopped,omitempty"` // when it was stopped for idleness
}

// Limits are what one container of a sliver gets. The agent reports them in
// every status (the aggregate puts them in the manifest), so an
// experimenter can see why a container was killed.
type Limits struct {
	MemoryBytes  int64    `json:"memory_bytes,omitempty"` // 0: none
	NanoCPUs     int64    `json:"nano_cpus,omitempty"`    // 0: none
	Pids         int64    `json:"pids,omitempty"`         // 0: none
	DataBytes    int64    `json:"data_bytes,omitempty"`   // size of /data; 0: not enforced
	ArchiveBytes int64    `json:"archive_bytes,omitempty"`
	Capabilities []string `json:"capabilities"`
	ReadOnlyRoot bool     `json:"read_only_root,omitempty"`
}

// Disk is the space of the filesystem holding the agent's state directory
// (records, /data, /geni), as GET /v2/ping reports it, so that the
// aggregate can show disk pressure before a full disk gets in the way.
type Disk struct {
	FreeBytes  int64 `json:"disk_free_bytes"`
	TotalBytes int64 `json:"disk_total_bytes"`
}

// ChangesAnswer is the body of GET /v2/changes.
type ChangesAnswer struct {
	Seq     uint64   `json:"seq"`
	Slivers []string `json:"slivers,omitempty"` // the slivers changed since after
	All     bool     `json:"all,omitempty"`     // the agent cannot name them: check every sliver
	// Sessions are the SSH sessions' starts and ends since after, as far as
	// the agent still keeps them (the last maxSessions, since it started):
	// the aggregate writes an audit row for each.
	Sessions []SessionEvent `json:"sessions,omitempty"`
}

// SessionEvent is the start or end of an SSH session in a sliver's
// container (package sshlogin).
type SessionEvent struct {
	Seq       uint64    `json:"seq"`        // the change number it was recorded under
	Session   string    `json:"session"`    // the same for a session's start and end (its log id)
	Event     string    `json:"event"`      // SessionStart or SessionEnd
	Sliver    string    `json:"sliver"`     // sliver id (the SSH user name)
	SliverURN string    `json:"sliver_urn"` // as the agent's record has them
	SliceURN  string    `json:"slice_urn"`
	User      string    `json:"user"` // URN of the geni_users entry whose key logged in
	Key       string    `json:"key"`  // that key's SHA256 fingerprint
	Remote    string    `json:"remote"`
	At        time.Time `json:"at"`
	Command   string    `json:"command,omitempty"` // what ran: "shell /bin/sh", "exec", "subsystem sftp"
	// ExitStatus is the process's exit status at SessionEnd; nil when the
	// session ended without one (the connection closed, access ended).
	ExitStatus *int `json:"exit_status,omitempty"`
}

// The events of a session.
const (
	SessionStart = "start"
	SessionEnd   = "end"
)

// Install is one services/install of a StartRequest.
type Install struct {
	URL  string `json:"url"`
	Path string `json:"path"` // absolute directory in the container, created if missing
}

const maxInstalls = 16

func validInstalls(ins []Install) error {
	if len(ins) > maxInstalls {
		return am.Errorf(am.BadArgs, "start: at most %d installs", maxInstalls)
	}
	for _, in := range ins {
		if in.URL == "" || len(in.URL) > 4096 {
			return am.Errorf(am.BadArgs, "start: an install needs a url of at most 4096 bytes")
		}
		if !strings.HasPrefix(in.Path, "/") || len(in.Path) > 1024 || strings.ContainsRune(in.Path, 0) || path.Clean(in.Path) != in.Path {
			return am.Errorf(am.BadArgs, "start: install path %q must be a clean absolute path", am.Clip(in.Path, 80))
		}
	}
	return nil
}

// LinkAttachment is one interface of a sliver's container on an experiment
// link or LAN: the agent puts a veth into the container's network namespace
// and joins it to the link's bridge, which reaches the link's other nodes by
// VXLAN (VNI Tag) over the node's experiment network.
type LinkAttachment struct {
	Link  string   `json:"link"`            // the link's client_id, for messages
	Name  string   `json:"name"`            // interface name inside the container, e.g. eth1
	MAC   string   `json:"mac"`             // 02:xx:.. (locally administered)
	CIDR  string   `json:"cidr,omitempty"`  // address/prefix inside the container; "" = no address
	Tag   int      `json:"tag"`             // VXLAN VNI of the link, unique across the aggregate
	Peers []string `json:"peers,omitempty"` // experiment-network addresses (VTEPs) of the other nodes on the link
	// Shaping of what the container sends and receives on this interface.
	CapacityKbps int64   `json:"capacity_kbps,omitempty"` // 0 = unshaped
	LatencyMs    int     `json:"latency_ms,omitempty"`    // one-way delay added to what the container sends
	LossPercent  float64 `json:"loss_percent,omitempty"`  // random loss of what the container sends
}

// Limits on link attachments.
const (
	maxLinksPerSliver = 64
	maxPeers          = 1024
	MaxVNI            = 1<<24 - 1
)

var ifNamePattern = regexp.MustCompile(`^eth[0-9]{1,3}$`)

func validLinks(ls []LinkAttachment) error {
	if len(ls) > maxLinksPerSliver {
		return am.Errorf(am.BadArgs, "start: at most %d links per sliver", maxLinksPerSliver)
	}
	names, tags := map[string]bool{}, map[int]bool{}
	for _, l := range ls {
		bad := func(format string, args ...any) error {
			return am.Errorf(am.BadArgs, "start: link %q: "+format, append([]any{am.Clip(l.Link, 80)}, args...)...)
		}
		if !ifNamePattern.MatchString(l.Name) || l.Name == "eth0" {
			return bad("interface name %q is not eth1..eth999", am.Clip(l.Name, 20))
		}
		if names[l.Name] {
			return bad("interface name %s is used twice", l.Name)
		}
		names[l.Name] = true
		if l.Tag < 1 || l.Tag > MaxVNI {
			return bad("tag %d is not a VNI (1-%d)", l.Tag, MaxVNI)
		}
		if tags[l.Tag] {
			return bad("tag %d is used by two interfaces of one sliver", l.Tag)
		}
		tags[l.Tag] = true
		mac, err := net.ParseMAC(l.MAC)
		if err != nil || len(mac) != 6 || mac[0]&1 != 0 {
			return bad("mac %q is not a unicast Ethernet address", am.Clip(l.MAC, 40))
		}
		if l.CIDR != "" {
			if _, _, err := net.ParseCIDR(l.CIDR); err != nil {
				return bad("cidr %q is not address/prefix", am.Clip(l.CIDR, 60))
			}
		}
		if len(l.Peers) > maxPeers {
			return bad("more than %d peers", maxPeers)
		}
		for _, p := range l.Peers {
			if net.ParseIP(p) == nil {
				return bad("peer %q is not an IP address", am.Clip(p, 60))
			}
		}
		if l.CapacityKbps < 0 || l.CapacityKbps > 100_000_000 || l.LatencyMs < 0 || l.LatencyMs > 60_000 || l.LossPercent < 0 || l.LossPercent > 100 {
			return bad("capacity_kbps (0-1e8), latency_ms (0-60000) or loss_percent (0-100) out of range")
		}
	}
	return nil
}

// Login is where the experimenter logs in to a sliver: the manifest's
// <login authentication="ssh-keys" hostname port username>.
type Login struct {
	Host     string `json:"host,omitempty"` // "" when the agent does not know its public name: the aggregate uses its agent URL's host
	Port     int    `json:"port"`
	Username string `json:"username"`
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

// V1Answer is the body of a successful answer on the AERPAW v1 paths
// (/v1/...), which the old agent's clients read.
type V1Answer struct {
	Status    string `json:"status"` // "OK"
	Sliver    string `json:"sliver"`
	ImageID   string `json:"image_id,omitempty"`
	Verified  *bool  `json:"verified,omitempty"`
	Container string `json:"container_id,omitempty"`
	State     State  `json:"state,omitempty"`
}
