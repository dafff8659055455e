package geniclient

import (
	"encoding/xml"
	"fmt"
	"io"
	"net/url"
	"regexp"
	"strconv"
	"strings"
)

// ManifestNode is what a client acts on in a manifest <node>: its names, the
// login services (the standard services/login) and the links of geniam's
// manifest extension (sliver_data, sliver_log) where the aggregate has them.
type ManifestNode struct {
	ClientID    string
	ComponentID string
	SliverID    string
	Logins      []Login
	DataURL     string // geniam:sliver_data url: POST the slice credential for a tar of /data
	LogURL      string // geniam:sliver_log url: the start command's output
	ExitCode    string // geniam:sliver_state exit_code
	StateError  string // geniam:sliver_state error
}

// Login is a services/login element.
type Login struct {
	Authentication string
	Hostname       string
	Port           string
	Username       string
}

// ParseManifest reads the nodes of a manifest RSpec. It reads elements by
// local name within <node>, so extensions of any namespace version are seen.
func ParseManifest(doc string) ([]ManifestNode, error) {
	var nodes []ManifestNode
	err := walkNodes(doc, "manifest", func(attr func(string) string) {
		nodes = append(nodes, ManifestNode{ClientID: attr("client_id"), ComponentID: attr("component_id"), SliverID: attr("sliver_id")})
	}, func(local string, attr func(string) string) {
		cur := &nodes[len(nodes)-1]
		switch local {
		case "login":
			cur.Logins = append(cur.Logins, Login{Authentication: attr("authentication"), Hostname: attr("hostname"),
				Port: attr("port"), Username: attr("username")})
		case "sliver_data":
			cur.DataURL = attr("url")
		case "sliver_log":
			cur.LogURL = attr("url")
		case "sliver_state":
			cur.ExitCode, cur.StateError = attr("exit_code"), attr("error")
		}
	})
	return nodes, err
}

// walkNodes calls node for each outermost <node> of an RSpec and child for
// each element inside it, with the element's attributes by local name.
func walkNodes(doc, kind string, node func(attr func(string) string), child func(local string, attr func(string) string)) error {
	d := xml.NewDecoder(strings.NewReader(doc))
	d.Strict = true
	depth, nodeDepth := 0, -1
	for {
		tok, err := d.Token()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("the %s is not well-formed XML: %w", kind, err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			depth++
			attr := func(name string) string {
				for _, a := range t.Attr {
					if a.Name.Local == name {
						return a.Value
					}
				}
				return ""
			}
			switch {
			case t.Name.Local == "node" && nodeDepth < 0:
				nodeDepth = depth
				node(attr)
			case nodeDepth >= 0:
				child(t.Name.Local, attr)
			}
		case xml.EndElement:
			if depth == nodeDepth {
				nodeDepth = -1
			}
			depth--
		}
	}
}

// PickNode chooses the node named clientID, or the only node when clientID
// is "". what says which command asks, for the message.
func PickNode(nodes []ManifestNode, clientID string) (ManifestNode, error) {
	var names []string
	for _, n := range nodes {
		if clientID != "" && n.ClientID == clientID {
			return n, nil
		}
		names = append(names, n.ClientID)
	}
	switch {
	case len(nodes) == 0:
		return ManifestNode{}, fmt.Errorf("the manifest has no nodes")
	case clientID != "":
		return ManifestNode{}, fmt.Errorf("no node %q in the manifest (nodes: %s)", clientID, strings.Join(names, ", "))
	case len(nodes) > 1:
		return ManifestNode{}, fmt.Errorf("the slice has %d nodes (%s): name one", len(nodes), strings.Join(names, ", "))
	}
	return nodes[0], nil
}

// AdNode is a node of an advertisement, as a person scans it.
type AdNode struct {
	ComponentID   string
	ComponentName string
	Available     string // available/@now: "true", "false" or "" (not said)
	SliverTypes   []string
}

// ParseAdvertisement reads the nodes of an advertisement RSpec.
func ParseAdvertisement(doc string) ([]AdNode, error) {
	var nodes []AdNode
	err := walkNodes(doc, "advertisement", func(attr func(string) string) {
		nodes = append(nodes, AdNode{ComponentID: attr("component_id"), ComponentName: attr("component_name")})
	}, func(local string, attr func(string) string) {
		cur := &nodes[len(nodes)-1]
		switch local {
		case "available":
			cur.Available = attr("now")
		case "sliver_type":
			cur.SliverTypes = append(cur.SliverTypes, attr("name"))
		}
	})
	return nodes, err
}

var (
	hostPattern = regexp.MustCompile(`^[A-Za-z0-9_.:\[\]-]{1,253}$`)
	userPattern = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$`)
)

// Check refuses a login a client must not hand to ssh: the manifest comes
// from the aggregate, and a host or user starting with "-" would be read as
// an ssh option (-oProxyCommand=... runs a command on the user's machine).
func (l Login) Check() error {
	if !hostPattern.MatchString(l.Hostname) || strings.HasPrefix(l.Hostname, "-") {
		return fmt.Errorf("the manifest's login hostname %q is not a host name", l.Hostname)
	}
	if l.Username != "" && !userPattern.MatchString(l.Username) {
		return fmt.Errorf("the manifest's login username %q is not a user name", l.Username)
	}
	if l.Port != "" {
		if n, err := strconv.Atoi(l.Port); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("the manifest's login port %q is not a port", l.Port)
		}
	}
	return nil
}

// SameSite checks that a link from a manifest points at the aggregate's own
// host over https: the client POSTs the slice credential there with the
// user's certificate, which must not go to a third party a manifest names.
func SameSite(link, aggregateURL string) error {
	u, err := url.Parse(link)
	if err != nil {
		return fmt.Errorf("the manifest's link %q is not a URL", link)
	}
	a, err := url.Parse(aggregateURL)
	if err != nil {
		return err
	}
	if u.Scheme != "https" || !strings.EqualFold(u.Hostname(), a.Hostname()) {
		return fmt.Errorf("the manifest's link %s is not on the aggregate's host (https://%s): not sending your credential there", link, a.Hostname())
	}
	return nil
}

// FileNamePart makes a name from a manifest (a client_id) safe as part of a
// file name: no path separators, no leading dot.
func FileNamePart(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			b[i] = '-'
		}
	}
	out := strings.TrimLeft(string(b), ".")
	if out == "" {
		return "node"
	}
	if len(out) > 64 {
		out = out[:64]
	}
	return out
}
