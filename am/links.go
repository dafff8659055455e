package am

import (
	"crypto/sha256"
	"fmt"
	"net"
	"strings"
)

// Experiment links: a request's <link>s joining interfaces of its nodes,
// realised by the node agents as per-link bridges, carried between nodes by
// VXLAN whose VNI (the link's tag) the store allocates, unique across the
// aggregate.

// LinkTypeLAN is the link_type we offer: a layer-2 segment (a point-to-point
// link is a LAN of two).
const LinkTypeLAN = "lan"

// MaxLinkTag is the largest VXLAN network identifier.
const MaxLinkTag = 1<<24 - 1

// Shaping is the ProtoGENI link <property> of a link, applied to every
// interface on it: what an interface sends is limited to CapacityKbps,
// delayed by LatencyMs and dropped with LossPercent; what it receives is
// limited to CapacityKbps.
type Shaping struct {
	CapacityKbps int64   `json:"capacity_kbps,omitempty"`
	LatencyMs    int     `json:"latency_ms,omitempty"`
	LossPercent  float64 `json:"loss_percent,omitempty"`
}

// IsZero reports whether the link is unshaped.
func (s Shaping) IsZero() bool { return s == Shaping{} }

// LinkRequest is one <link> of a request whose interfaces are all ours.
type LinkRequest struct {
	ClientID   string
	Type       string   // link_type, LinkTypeLAN
	Interfaces []string // interface client_ids of the interface_refs, in order
	Shaping    Shaping
}

// InterfaceRequest is one <interface> of a request node.
type InterfaceRequest struct {
	ClientID string
	IP       string // address from the request's <ip>, "" = assign one
	Prefix   int    // prefix length of IP
}

// Interface is one interface of a sliver on a link: what the agent creates
// in the container and the manifest reports.
type Interface struct {
	ClientID string  `json:"client_id"`
	Link     string  `json:"link"`      // the link's client_id
	LinkType string  `json:"link_type"` // LinkTypeLAN
	Name     string  `json:"name"`      // eth1, eth2, ... inside the container
	MAC      string  `json:"mac"`
	IP       string  `json:"ip,omitempty"`
	Prefix   int     `json:"prefix,omitempty"`
	Tag      int     `json:"tag"` // the link's VNI, set by the store
	Shaping  Shaping `json:"shaping,omitzero"`
}

// CIDR is the interface's address/prefix, "" when it has no address.
func (i Interface) CIDR() string {
	if i.IP == "" {
		return ""
	}
	return fmt.Sprintf("%s/%d", i.IP, i.Prefix)
}

// LinkMAC derives a stable, locally administered unicast MAC address for an
// interface of a sliver.
func LinkMAC(sliverURN, ifaceClientID string) string {
	h := sha256.Sum256([]byte(sliverURN + "\x00" + ifaceClientID))
	h[0] = h[0]&0xfc | 0x02
	return net.HardwareAddr(h[:6]).String()
}

// LinkSubnet is where the aggregate numbers interfaces the request leaves
// without an address: the n-th link of a request gets 10.<10+n/256>.<n%256>.0/24
// (links are isolated, so every slice may use the same addresses).
func linkSubnet(n int) (string, int) {
	return fmt.Sprintf("10.%d.%d.", 10+n/256, n%256), 24
}

// checkLinks validates the request's links against its nodes and returns,
// per sliver request, its interfaces (without MAC and tag, which need the
// sliver URN and the store). maxLinks bounds the links of one request.
func checkLinks(reqs []SliverRequest, links []LinkRequest, maxLinks int) ([][]Interface, error) {
	out := make([][]Interface, len(reqs))
	if len(links) == 0 {
		return out, nil
	}
	if maxLinks <= 0 {
		return nil, Errorf(Unsupported, "link %q: links and LANs are not offered by this aggregate", links[0].ClientID)
	}
	if len(links) > maxLinks {
		return nil, Errorf(TooBig, "the request has %d links; this aggregate accepts at most %d per request", len(links), maxLinks)
	}
	type owner struct {
		node  int
		iface InterfaceRequest
	}
	ifaces := map[string]owner{}
	for i, r := range reqs {
		for _, f := range r.Interfaces {
			ifaces[f.ClientID] = owner{node: i, iface: f}
		}
	}
	used := map[string]string{} // interface -> link
	linkIDs := map[string]bool{}
	if maxLinks > 65000 {
		maxLinks = 65000 // linkSubnet's numbering
	}
	for n, l := range links {
		if l.ClientID == "" {
			return nil, Errorf(BadArgs, "a link has no client_id")
		}
		if linkIDs[l.ClientID] {
			return nil, Errorf(BadArgs, "client_id %q names two links", l.ClientID)
		}
		linkIDs[l.ClientID] = true
		if l.Type != "" && l.Type != LinkTypeLAN {
			return nil, Errorf(Unsupported, "link %q: link_type %q is not offered (offered: %s)", l.ClientID, l.Type, LinkTypeLAN)
		}
		if len(l.Interfaces) < 2 {
			return nil, Errorf(BadArgs, "link %q has %d interface_ref; a link joins at least two interfaces", l.ClientID, len(l.Interfaces))
		}
		if s := l.Shaping; s.CapacityKbps < 0 || s.CapacityKbps > 100_000_000 || s.LatencyMs < 0 || s.LatencyMs > 60_000 || s.LossPercent < 0 || s.LossPercent > 100 {
			return nil, Errorf(BadArgs, "link %q: capacity (0-100000000 kbps), latency (0-60000 ms) or packet_loss (0-1) out of range", l.ClientID)
		}
		prefix, plen := linkSubnet(n)
		var subnet *net.IPNet
		for k, ref := range l.Interfaces {
			o, ok := ifaces[ref]
			if !ok {
				return nil, Errorf(BadArgs, "link %q: interface_ref %q names no interface of a node of this aggregate in the request", l.ClientID, ref)
			}
			if other, dup := used[ref]; dup {
				return nil, Errorf(BadArgs, "interface %q is on two links (%q and %q); an interface joins one link", ref, other, l.ClientID)
			}
			used[ref] = l.ClientID
			ip, pl := o.iface.IP, o.iface.Prefix
			if ip == "" {
				ip, pl = fmt.Sprintf("%s%d", prefix, k+1), plen
				if k+1 > 254 {
					return nil, Errorf(TooBig, "link %q has more than 254 interfaces without addresses", l.ClientID)
				}
			} else {
				_, sn, _ := net.ParseCIDR(fmt.Sprintf("%s/%d", ip, pl))
				if subnet == nil {
					subnet = sn
				} else if sn == nil || !subnet.Contains(net.ParseIP(ip)) {
					return nil, Errorf(BadArgs, "link %q: interface %q's address %s/%d is not in the link's subnet %s", l.ClientID, ref, ip, pl, subnet)
				}
			}
			idx := o.node
			out[idx] = append(out[idx], Interface{ClientID: ref, Link: l.ClientID, LinkType: LinkTypeLAN,
				Name: fmt.Sprintf("eth%d", len(out[idx])+1), IP: ip, Prefix: pl, Shaping: l.Shaping})
		}
	}
	for _, ifs := range out {
		if len(ifs) > 64 {
			return nil, Errorf(TooBig, "a node has %d link interfaces; at most 64", len(ifs))
		}
	}
	return out, nil
}

// LinkTags returns the distinct links of slivers, in order of appearance.
func LinkTags(slivers []Sliver) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range slivers {
		for _, f := range s.Interfaces {
			if !seen[f.Link] {
				seen[f.Link] = true
				out = append(out, f.Link)
			}
		}
	}
	return out
}

// SetLinkTags writes each link's tag into the interfaces on it.
func SetLinkTags(slivers []Sliver, tags map[string]int) {
	for i := range slivers {
		for j := range slivers[i].Interfaces {
			slivers[i].Interfaces[j].Tag = tags[slivers[i].Interfaces[j].Link]
		}
	}
}

// ValidIPv4 parses an <ip address netmask> pair into address and prefix.
func ValidIPv4(address, netmask string) (string, int, error) {
	ip := net.ParseIP(strings.TrimSpace(address)).To4()
	if ip == nil {
		return "", 0, fmt.Errorf("address %q is not an IPv4 address", address)
	}
	if ip.IsLoopback() || ip.IsMulticast() || ip.IsUnspecified() || ip.Equal(net.IPv4bcast) {
		return "", 0, fmt.Errorf("address %q is a loopback, multicast, broadcast or unspecified address, not one for an interface", address)
	}
	m := net.ParseIP(strings.TrimSpace(netmask)).To4()
	if netmask == "" {
		return ip.String(), 24, nil
	}
	if m == nil {
		return "", 0, fmt.Errorf("netmask %q is not an IPv4 netmask", netmask)
	}
	ones, bits := net.IPMask(m).Size()
	if bits == 0 || ones < 8 || ones > 30 {
		return "", 0, fmt.Errorf("netmask %q is not a contiguous mask of /8 to /30", netmask)
	}
	return ip.String(), ones, nil
}

// LinkSupport is what a node's agent found its kernel can do for links,
// probed at the agent's start and read by the aggregate's health poll.
// The advertisement offers, and Allocate accepts, only what it says.
type LinkSupport struct {
	Enabled  bool `json:"enabled"`  // the agent puts containers on links (bridge, veth)
	Capacity bool `json:"capacity"` // the tbf qdisc (CONFIG_NET_SCH_TBF): capacity
	Netem    bool `json:"netem"`    // the netem qdisc (CONFIG_NET_SCH_NETEM): latency, packet_loss
	VXLAN    bool `json:"vxlan"`    // VXLAN (CONFIG_VXLAN) and an experiment network: links across nodes
	VLAN     bool `json:"vlan"`     // 802.1Q (CONFIG_VLAN_8021Q); reported only: links do not use it yet
}

// Shaping lists the link properties the node can apply, in the order the
// advertisement gives them.
func (s LinkSupport) Shaping() []string {
	var out []string
	if s.Enabled && s.Capacity {
		out = append(out, "capacity")
	}
	if s.Enabled && s.Netem {
		out = append(out, "latency", "packet_loss")
	}
	return out
}

// Transports lists how the node's links reach other nodes.
func (s LinkSupport) Transports() []string {
	if s.Enabled && s.VXLAN {
		return []string{"vxlan"}
	}
	return nil
}

// checkLinkSupport refuses a placement that puts an interface of a link on
// a node whose agent cannot realise it: links at all, the link's shaping,
// or (for a link spanning nodes) VXLAN. Refused here, at Allocate, rather
// than as a failed sliver at Provision.
func checkLinkSupport(links []LinkRequest, slivers []Sliver, nodes []Node) error {
	if len(links) == 0 {
		return nil // the usual request, planned on every Allocate: no index of all the nodes to build
	}
	byName := make(map[string]*Node, len(nodes))
	for i := range nodes {
		byName[nodes[i].Name] = &nodes[i]
	}
	nodeOf := map[string]string{} // interface client_id -> node name
	for _, s := range slivers {
		for _, f := range s.Interfaces {
			nodeOf[f.ClientID] = s.NodeName
		}
	}
	for _, l := range links {
		var names []string
		seen := map[string]bool{}
		for _, ref := range l.Interfaces {
			if n := nodeOf[ref]; n != "" && !seen[n] {
				seen[n] = true
				names = append(names, n)
			}
		}
		for _, name := range names {
			n := byName[name]
			if n == nil {
				continue // not ours to judge; the store refuses unknown nodes
			}
			refuse := func(format string, args ...any) error {
				return Errorf(Unsupported, "link %q: "+format, append([]any{l.ClientID}, args...)...)
			}
			if n.Links == nil {
				return refuse("node %s's agent has not yet reported what its kernel supports for links (it does at the next health poll); try again shortly", name)
			}
			ls := *n.Links
			switch {
			case !ls.Enabled:
				return refuse("node %s's agent does not offer links (links.enabled is off)", name)
			case l.Shaping.CapacityKbps > 0 && !ls.Capacity:
				return refuse("capacity needs the kernel's tbf qdisc (CONFIG_NET_SCH_TBF), which node %s's kernel lacks", name)
			case l.Shaping.LatencyMs > 0 && !ls.Netem:
				return refuse("latency needs the kernel's netem qdisc (CONFIG_NET_SCH_NETEM), which node %s's kernel lacks", name)
			case l.Shaping.LossPercent > 0 && !ls.Netem:
				return refuse("packet_loss needs the kernel's netem qdisc (CONFIG_NET_SCH_NETEM), which node %s's kernel lacks", name)
			case len(names) > 1 && !ls.VXLAN:
				return refuse("it spans nodes %s, which needs VXLAN (CONFIG_VXLAN and an experiment network), which node %s lacks", strings.Join(names, ", "), name)
			}
		}
	}
	return nil
}
