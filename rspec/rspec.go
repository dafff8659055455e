// Package rspec is the XML side of the resource model: it renders the
// inventory as a GENI v3 advertisement RSpec, parses request RSpecs into
// am.Request, and renders slivers as GENI v3 manifest RSpecs. It implements
// am.RSpecs.
//
// Our conventions on top of GENI v3 (see docs/examples and schemas/):
//   - Sliver types are "container" (one of up to Node.Capacity containers on a
//     shared node) and "exclusive" (the whole node).
//   - The image of a node is sliver_type/disk_image. Its name is the http(s)
//     URL of a `docker save` tar and our attribute geniam:sha256 pins its
//     content:
//     <disk_image name="https://example.org/img.tar" geniam:sha256="<64 hex>"/>
//     Also accepted: the digest as a URL fragment ("...img.tar#sha256=<hex>"),
//     and a non-schema `url` attribute (as APT writes it) with name
//     "sha256:<hex>". A missing digest is BADARGS unless
//     Config.AllowUnpinnedImages.
//   - SliverRequest.NodeXML is the request's <node> re-serialized to stand
//     alone: every namespace it uses is declared on it, and the prefixes
//     geniam, ssh-user, opstate, emulab and xsi always mean our namespaces
//     (other prefixes are kept unless they collide), so that the manifest
//     can add our elements inside it safely. Comments and extensions stay.
//   - Nodes whose component_manager_id names another aggregate, and unknown
//     top-level extensions, are kept in am.Request.Foreign and echoed in the
//     manifest. A node without component_manager_id is ours when it is unbound
//     or bound to a component of our authority.
package rspec

import (
	"strings"
	"time"

	"github.com/geniam/geniam/am"
)

// Defaults of the Config limits.
const (
	DefaultMaxBytes           = 4 << 20
	DefaultMaxNodes           = 10000
	DefaultMaxDepth           = 64
	DefaultMaxElementsPerNode = 1000
	DefaultAdValidity         = 10 * time.Minute
)

// OfferedImage is a disk image the advertisement lists for every sliver type.
type OfferedImage struct {
	URL         string // http(s) URL of the `docker save` tar
	SHA256      string // its digest (hex)
	Description string
	OS          string
	Version     string
	Default     bool // the image used when a request names none
}

// Config is the RSpec policy of the aggregate.
type Config struct {
	AMURN               string            // the AM's URN: component_manager_id of our nodes
	Images              []OfferedImage    // images the advertisement offers
	DefaultImage        am.Image          // for request nodes without disk_image; zero URL: refuse such nodes
	AllowUnpinnedImages bool              // accept a disk_image without a sha256 digest
	AllowLocalImages    bool              // accept absolute paths and file: URLs as image locations (tests, development)
	SliverTypeAliases   map[string]string // more request sliver_type names, e.g. "fake-vm": "container"
	// SliverLimits per sliver type are advertised in each sliver_type and
	// reported on each manifest node (geniam:sliver_limits).
	SliverLimits       map[string]am.SliverLimits
	AdValidity         time.Duration // how long an advertisement may be cached (its expires); default 10 min
	GeneratedBy        string        // generated_by of our RSpecs; default "geniam <version>"
	MaxBytes           int           // largest request accepted (TOOBIG beyond); default 4 MiB
	MaxNodes           int           // most nodes in a request (TOOBIG beyond); default 10,000
	MaxDepth           int           // deepest element nesting (BADARGS beyond); default 64
	MaxElementsPerNode int           // most elements inside one node (TOOBIG beyond); default 1,000
	MaxLinks           int           // links a request may hold, advertised; 0: links are not offered
	// IdleStop and IdleWarn are the idle policy (provisioning.idle_stop,
	// idle_warn) the advertisement and manifests state; 0: none.
	IdleStop, IdleWarn time.Duration
}

// RSpecs implements am.RSpecs.
type RSpecs struct {
	cfg       Config
	authority string // authority part of the AM URN, e.g. "example.org"
}

var _ am.RSpecs = (*RSpecs)(nil)

// New checks cfg, fills in defaults and returns the RSpec codec.
func New(cfg Config) (*RSpecs, error) {
	amURN, err := am.ParseURN(cfg.AMURN)
	auth := amURN.Authority
	if err != nil {
		return nil, am.Errorf(am.BadArgs, "rspec: AM URN %q is not a urn:publicid:IDN+<authority>+authority+<name> URN", cfg.AMURN)
	}
	check := func(what string, im am.Image) error {
		if im.SHA256 == "" && !cfg.AllowUnpinnedImages {
			return am.Errorf(am.BadArgs, "rspec: %s %q has no sha256 digest", what, im.URL)
		}
		if im.SHA256 != "" && !isSHA256(strings.ToLower(im.SHA256)) {
			return am.Errorf(am.BadArgs, "rspec: %s %q: %q is not a sha256 digest", what, im.URL, im.SHA256)
		}
		return nil
	}
	if cfg.DefaultImage.URL != "" {
		if err := check("the default image", cfg.DefaultImage); err != nil {
			return nil, err
		}
	}
	for _, im := range cfg.Images {
		if im.URL == "" {
			return nil, am.Errorf(am.BadArgs, "rspec: an offered image has no URL")
		}
		if err := check("offered image", am.Image{URL: im.URL, SHA256: im.SHA256}); err != nil {
			return nil, err
		}
	}
	if cfg.DefaultImage.URL == "" {
		for _, im := range cfg.Images {
			if im.Default {
				cfg.DefaultImage = am.Image{URL: im.URL, SHA256: strings.ToLower(im.SHA256)}
				break
			}
		}
	}
	for alias, target := range cfg.SliverTypeAliases {
		if target != am.SliverTypeContainer && target != am.SliverTypeExclusive {
			return nil, am.Errorf(am.BadArgs, "rspec: sliver type alias %q maps to %q, which is not a sliver type of ours", alias, target)
		}
	}
	am.DefaultIfUnset(&cfg.AdValidity, DefaultAdValidity)
	if cfg.GeneratedBy == "" {
		cfg.GeneratedBy = am.AMType + " " + am.CodeVersion
	}
	am.DefaultIfUnset(&cfg.MaxBytes, DefaultMaxBytes)
	am.DefaultIfUnset(&cfg.MaxNodes, DefaultMaxNodes)
	am.DefaultIfUnset(&cfg.MaxDepth, DefaultMaxDepth)
	am.DefaultIfUnset(&cfg.MaxElementsPerNode, DefaultMaxElementsPerNode)
	return &RSpecs{cfg: cfg, authority: auth}, nil
}

// NodeURN is the component_id of the node called name at authority.
func NodeURN(authority, name string) string {
	return am.URN{Authority: authority, Type: "node", Name: name}.String()
}

// componentID is the node's component_id, derived from its name when the
// inventory left it empty.
func (r *RSpecs) componentID(n *am.Node) string {
	if n.ComponentID != "" {
		return n.ComponentID
	}
	return NodeURN(r.authority, n.Name)
}

// ours reports whether a component_manager_id names this aggregate. URNs
// compare case-insensitively, and clients sometimes write the CM form
// (+authority+cm) of an AM's URN.
func (r *RSpecs) ours(cmid string) bool {
	if strings.EqualFold(cmid, r.cfg.AMURN) {
		return true
	}
	u, err := am.ParseURN(cmid)
	return err == nil && u.Type == "authority" && strings.EqualFold(u.Authority, r.authority)
}

func rfc3339(t time.Time) string { return t.UTC().Format(time.RFC3339) }
