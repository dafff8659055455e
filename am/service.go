package am

import (
	"context"
	"time"
)

// RSpecVersion is the geni_rspec_version option and the entries of GetVersion's
// geni_request_rspec_versions / geni_ad_rspec_versions.
type RSpecVersion struct {
	Type       string
	Version    string
	Schema     string
	Namespace  string
	Extensions []string
}

// Options are the parsed standard options of a call. Unknown options are
// ignored, as the spec requires; Raw keeps the original struct for the audit.
type Options struct {
	RSpecVersion *RSpecVersion // geni_rspec_version (type/version only)
	Available    bool          // geni_available
	Compressed   bool          // geni_compressed
	BestEffort   bool          // geni_best_effort
	EndTime      *time.Time    // geni_end_time
	StartTime    *time.Time    // geni_start_time (gcf extension)
	Users        []User        // geni_users
	UsersSet     bool          // geni_users was present
	SpeakingFor  string        // geni_speaking_for
	ExtendALAP   bool          // geni_extend_alap
	Raw          map[string]any
}

// Call is what every method receives besides its own arguments.
type Call struct {
	Caller      *Caller
	Credentials []Credential
	Options     Options
	LogID       string // id of this call in the log and audit trail
}

// Version is the value of GetVersion.
type Version struct {
	URN                  string // the AM's URN
	URL                  string // absolute URL of the v3 endpoint
	CodeVersion          string // geniam's own version
	RequestRSpecVersions []RSpecVersion
	AdRSpecVersions      []RSpecVersion
	CredentialTypes      []Credential // Type and Version only
	Extra                map[string]any
}

// DescribeResult is the value of Describe.
type DescribeResult struct {
	RSpec    string // manifest, compressed when asked
	SliceURN string
	Slivers  []SliverStatus
}

// AllocateResult is the value of Allocate and Provision.
type AllocateResult struct {
	RSpec   string
	Slivers []SliverStatus
}

// StatusResult is the value of Status.
type StatusResult struct {
	SliceURN string
	Slivers  []SliverStatus
}

// API is the AM API v3 as Go methods: what the XML-RPC edge calls. Every error
// is an *Err (or an internal error the edge turns into SERVERERROR + log id).
type API interface {
	GetVersion(ctx context.Context, c Call) (*Version, error)
	ListResources(ctx context.Context, c Call) (string, error)
	Describe(ctx context.Context, c Call, urns []string) (*DescribeResult, error)
	Allocate(ctx context.Context, c Call, sliceURN string, rspec string) (*AllocateResult, error)
	Renew(ctx context.Context, c Call, urns []string, expiration time.Time) ([]SliverStatus, error)
	Provision(ctx context.Context, c Call, urns []string) (*AllocateResult, error)
	Status(ctx context.Context, c Call, urns []string) (*StatusResult, error)
	PerformOperationalAction(ctx context.Context, c Call, urns []string, action string) ([]SliverStatus, error)
	Delete(ctx context.Context, c Call, urns []string) ([]SliverStatus, error)
	Shutdown(ctx context.Context, c Call, sliceURN string) error
}

// RSpecs is the XML side of the resource model (implemented by package rspec).
type RSpecs interface {
	// Advertisement renders the inventory as a GENI v3 ad RSpec. With
	// availableOnly, unavailable or full nodes are left out.
	Advertisement(nodes []Node, availableOnly bool, now time.Time) (string, error)
	// ParseRequest parses a request RSpec. Errors are *Err with BadArgs
	// (malformed), BadVersion (wrong type/namespace) or Unsupported (an
	// element we do not implement, named in the message).
	ParseRequest(doc string) (*Request, error)
	// Manifest renders the slivers of a slice as a GENI v3 manifest RSpec.
	Manifest(sliceURN string, slivers []Sliver, now time.Time) (string, error)
}
