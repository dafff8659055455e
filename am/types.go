package am

import (
	"crypto/x509"
	"time"
)

// AllocationState is a sliver's geni_allocation_status.
type AllocationState string

const (
	Unallocated AllocationState = "geni_unallocated"
	Allocated   AllocationState = "geni_allocated"
	Provisioned AllocationState = "geni_provisioned"
)

// OperationalState is a sliver's geni_operational_status. The geni_* states
// are the standard ones; our sliver types use exactly these (advertised in the
// operational-state extension of the advertisement).
type OperationalState string

const (
	PendingAllocation OperationalState = "geni_pending_allocation"
	NotReady          OperationalState = "geni_notready"
	Configuring       OperationalState = "geni_configuring"
	Stopping          OperationalState = "geni_stopping"
	Ready             OperationalState = "geni_ready"
	ReadyBusy         OperationalState = "geni_ready_busy"
	Failed            OperationalState = "geni_failed"
)

// Operational actions (PerformOperationalAction). ActionFetchData is ours.
const (
	ActionStart       = "geni_start"
	ActionStop        = "geni_stop"
	ActionRestart     = "geni_restart"
	ActionUpdateUsers = "geni_update_users"
	ActionFetchData   = "geniam_fetch_data"
)

// Sliver types offered by our nodes.
const (
	SliverTypeContainer = "container" // one of up to Node.Capacity containers on a shared node
	SliverTypeExclusive = "exclusive" // the whole node for one slice
)

// Caller is the authenticated party of a request: the leaf certificate of the
// TLS client and the chain it presented.
type Caller struct {
	URN   string              // urn:publicid:IDN+... from the leaf's subjectAltName
	Email string              // from the subjectAltName, when present
	Cert  *x509.Certificate   // the leaf
	Chain []*x509.Certificate // leaf first, then intermediates the client sent
}

// Credential is one entry of the v3 credentials argument.
type Credential struct {
	Type    string // geni_type, e.g. "geni_sfa" or "geni_abac" (compare case-insensitively)
	Version string // geni_version, e.g. "3"
	Value   string // geni_value: the signed document
}

// AuthRequest asks the trust layer whether the caller may perform an operation.
type AuthRequest struct {
	Method      string       // AM API method, for messages
	Caller      *Caller      // TLS identity
	Credentials []Credential // as passed by the caller
	Target      string       // slice URN the call acts on; "" for ListResources
	Privileges  []string     // gcf operation names required, e.g. "createsliver"; all must be granted
	SpeakingFor string       // geni_speaking_for option, if any
	Now         time.Time
}

// Authorization is a positive trust decision.
type Authorization struct {
	User       string    // the effective user URN (the spoken-for user under speaks-for)
	Tool       string    // the caller's URN when it speaks for User; "" otherwise
	Expires    time.Time // earliest expiry of the credentials used: slivers may not outlive it
	Digest     string    // sha256 of the credential that granted the call (audit)
	Issuer     string    // URN of the credential's signer (audit)
	Privileges []string  // privileges the credential grants
}

// Authorizer is the trust decision (implemented by package credentials).
// A refusal is an *Err with code Forbidden and a message naming the failed check.
type Authorizer interface {
	Authorize(req AuthRequest) (*Authorization, error)
}

// Location of a node, when the operator knows it.
type Location struct {
	Country   string
	Latitude  float64
	Longitude float64
}

// Node is one testbed node of the inventory with its current usage.
type Node struct {
	Name         string   // short name, unique, e.g. "node1"
	ComponentID  string   // urn:publicid:IDN+<am authority>+node+<name>
	AgentURL     string   // https://host:1887 of its node agent
	HardwareType string   // e.g. "docker-host"
	SliverTypes  []string // SliverTypeContainer and/or SliverTypeExclusive
	Capacity     int      // how many container slivers it holds
	Available    bool     // operator or health says it may take new slivers
	Reason       string   // why it is unavailable, when it is not
	Location     *Location
	Used         int  // container slots taken by live slivers
	Exclusive    bool // an exclusive sliver holds the whole node
}

// Free returns how many more container slivers the node can take now.
func (n Node) Free() int {
	if !n.Available || n.Exclusive {
		return 0
	}
	if f := n.Capacity - n.Used; f > 0 {
		return f
	}
	return 0
}

// Image names a `docker save` tar and pins its content.
type Image struct {
	URL    string // http(s) URL (or file path, tests) of the tar
	SHA256 string // lowercase hex digest of the tar
}

// Execute is a services/execute element: a command run in the container.
type Execute struct {
	Shell   string
	Command string
}

// Install is a services/install element: an archive unpacked at a path.
type Install struct {
	URL  string
	Path string
}

// User is one geni_users entry: a login user and their SSH public keys.
type User struct {
	URN  string
	Keys []string
}

// SliverLimits are what one sliver of a type may use on its node, set by
// the operator per sliver type (config sliver_limits), advertised in
// ListResources and reported in the manifest. The node's agent caps them by
// its own limits. Zero means "the node's limit".
type SliverLimits struct {
	MemoryBytes  int64
	CPUs         float64
	Pids         int64 // processes and threads
	DataBytes    int64 // size of /data
	ArchiveBytes int64 // largest /data archive (tar bytes, holes not counted)
}

// IsZero reports whether no limit is set.
func (l SliverLimits) IsZero() bool { return l == SliverLimits{} }

// SliverRequest is one node of a request RSpec, as the placement sees it.
type SliverRequest struct {
	ClientID    string // client_id, unique within the request
	ComponentID string // bound node URN, "" when unbound
	SliverType  string // SliverTypeContainer or SliverTypeExclusive
	Exclusive   bool   // exclusive="true"
	Image       Image
	Execute     []Execute
	Install     []Install
	NodeXML     string // the request's <node> element, echoed in the manifest
	Interfaces  []InterfaceRequest
}

// Request is a parsed request RSpec.
type Request struct {
	Slivers []SliverRequest
	Links   []LinkRequest // links joining our nodes' interfaces (links.go)
	Foreign []string      // top-level elements for other aggregates or tools, echoed in the manifest
}

// Sliver is one allocated or provisioned resource of a slice.
type Sliver struct {
	URN         string
	SliceURN    string
	ClientID    string
	NodeName    string
	ComponentID string
	SliverType  string
	Exclusive   bool
	Image       Image
	ImageID     string // image id the agent loaded, once known
	Execute     []Execute
	Install     []Install
	NodeXML     string
	Allocation  AllocationState
	Operational OperationalState
	Expires     time.Time
	EndWanted   time.Time // geni_end_time asked at Allocate (zero: none); Provision honours it within policy
	Error       string    // geni_error
	ResourceMsg string    // geni_resource_status
	CreatedBy   string    // user URN that allocated it
	CreatedAt   time.Time
	Users       []User
	ExitCode    *int        // the start command's exit code, when it has finished
	LogURL      string      // where the start command's output can be read
	DataURL     string      // where /data can be downloaded
	LoginHost   string      // SSH host of the sliver once provisioned ("" = no login service yet)
	LoginPort   int         // SSH port on LoginHost (0 means 22)
	LoginUser   string      // account the geni_users keys are installed for
	Interfaces  []Interface // the container's interfaces on links
}

// Slice is what the aggregate knows of a slice.
type Slice struct {
	URN      string
	ShutDown bool
	Expires  time.Time // of the slice credential last seen
}

// SliverStatus is the v3 per-sliver struct in most returns.
type SliverStatus struct {
	URN         string
	Allocation  AllocationState
	Operational OperationalState // "" omits geni_operational_status
	Expires     time.Time
	Error       string
	ErrorSet    bool   // include geni_error even when empty (Status requires it)
	ResourceMsg string // geni_resource_status, omitted when empty
	ClientID    string
}

// StatusOf builds the v3 status struct of a sliver.
func StatusOf(s Sliver) SliverStatus {
	return SliverStatus{URN: s.URN, Allocation: s.Allocation, Operational: s.Operational,
		Expires: s.Expires, Error: s.Error, ResourceMsg: s.ResourceMsg, ClientID: s.ClientID}
}
