package rspec

import (
	"math"
	"strconv"
	"strings"

	"github.com/geniam/geniam/am"
)

// Links in requests and manifests. A request <link> whose interface_refs
// name interfaces of our nodes becomes an am.LinkRequest; one that names
// only other aggregates' interfaces is echoed; one that mixes both would
// need stitching between aggregates, which we do not offer.

// pendingLink is a request link read before all nodes are known.
type pendingLink struct {
	el  *element
	req am.LinkRequest
	cms []string // component_manager names
}

// link reads one <link> of a request; resolveLinks decides whose it is once
// every node has been read.
func (p *requestParser) link(el *element) error {
	id, _ := el.attr("client_id")
	id = strings.TrimSpace(id)
	if id == "" {
		return am.Errorf(am.BadArgs, "a link has no client_id")
	}
	pl := pendingLink{el: el, req: am.LinkRequest{ClientID: id}}
	var shaping *am.Shaping
	for _, c := range el.elementsIn(am.RSpecNamespace) {
		switch c.Local {
		case "component_manager":
			name, _ := c.attr("name")
			pl.cms = append(pl.cms, name)
		case "interface_ref":
			ref, _ := c.attr("client_id")
			if strings.TrimSpace(ref) == "" {
				return am.Errorf(am.BadArgs, "link %q: an interface_ref has no client_id", id)
			}
			pl.req.Interfaces = append(pl.req.Interfaces, strings.TrimSpace(ref))
		case "link_type":
			name, _ := c.attr("name")
			if pl.req.Type != "" && pl.req.Type != name {
				return am.Errorf(am.BadArgs, "link %q has two link_types (%q, %q)", id, pl.req.Type, name)
			}
			pl.req.Type = strings.TrimSpace(name)
		case "property":
			s, err := parseProperty(id, c)
			if err != nil {
				return err
			}
			if shaping != nil && *shaping != s {
				return am.Errorf(am.Unsupported, "link %q: its properties differ by direction; this aggregate shapes a link the same way in every direction", id)
			}
			shaping = &s
		}
	}
	if shaping != nil {
		pl.req.Shaping = *shaping
	}
	p.links = append(p.links, pl)
	return nil
}

// parseProperty reads ProtoGENI's capacity (kbps), latency (ms) and
// packet_loss (a fraction).
func parseProperty(link string, el *element) (am.Shaping, error) {
	var s am.Shaping
	if v, ok := el.attr("capacity"); ok && strings.TrimSpace(v) != "" {
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil || n < 0 || n > 100_000_000 {
			return s, am.Errorf(am.BadArgs, "link %q: property capacity=%q is not a number of kbps (0-100000000)", link, v)
		}
		s.CapacityKbps = n
	}
	if v, ok := el.attr("latency"); ok && strings.TrimSpace(v) != "" {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 0 || n > 60_000 {
			return s, am.Errorf(am.BadArgs, "link %q: property latency=%q is not a number of ms (0-60000)", link, v)
		}
		s.LatencyMs = n
	}
	if v, ok := el.attr("packet_loss"); ok && strings.TrimSpace(v) != "" {
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || math.IsNaN(f) || f < 0 || f > 1 {
			return s, am.Errorf(am.BadArgs, "link %q: property packet_loss=%q is not a fraction between 0 and 1", link, v)
		}
		s.LossPercent = f * 100
	}
	return s, nil
}

// nodeInterface reads one <interface> of one of our nodes.
func nodeInterface(nodeID, id string, el *element) (am.InterfaceRequest, error) {
	f := am.InterfaceRequest{ClientID: id}
	for _, c := range el.elements() {
		if !c.is(am.RSpecNamespace, "ip") {
			continue
		}
		if f.IP != "" {
			return f, am.Errorf(am.BadArgs, "node %q: interface %q has more than one ip", nodeID, id)
		}
		if t, _ := c.attr("type"); t != "" && !strings.EqualFold(t, "ipv4") {
			return f, am.Errorf(am.Unsupported, "node %q: interface %q: ip type %q is not offered (ipv4)", nodeID, id, t)
		}
		addr, _ := c.attr("address")
		mask, _ := c.attr("netmask")
		ip, prefix, err := am.ValidIPv4(addr, mask)
		if err != nil {
			return f, am.Errorf(am.BadArgs, "node %q: interface %q: %v", nodeID, id, err)
		}
		f.IP, f.Prefix = ip, prefix
	}
	return f, nil
}

// resolveLinks sorts the links read into ours (Request.Links), foreign
// (echoed) and refused.
func (p *requestParser) resolveLinks() error {
	for _, l := range p.links {
		ours, foreign := 0, 0
		for _, ref := range l.req.Interfaces {
			if p.ourInterfaces[ref] {
				ours++
			} else {
				foreign++
			}
		}
		otherCM := false
		for _, cm := range l.cms {
			if !p.r.ours(cm) {
				otherCM = true
			}
		}
		switch {
		case ours == 0 && foreign == 0 && !otherCM:
			return am.Errorf(am.BadArgs, "link %q has no interface_ref; a link joins at least two interfaces", l.req.ClientID)
		case ours == 0:
			p.req.Foreign = append(p.req.Foreign, p.serialize(l.el))
		case foreign > 0 || otherCM:
			return am.Errorf(am.Unsupported, "link %q joins this aggregate's nodes to other aggregates' (interfaces or component_managers); links between aggregates (stitching) are not offered", l.req.ClientID)
		default:
			p.req.Links = append(p.req.Links, l.req)
		}
	}
	return nil
}

// manifestInterfaces writes, on the request's <interface>s of a sliver's
// node, the MAC address, the IP address and the name in the container.
func manifestInterfaces(node *element, s *am.Sliver) {
	if len(s.Interfaces) == 0 {
		return
	}
	byID := map[string]am.Interface{}
	for _, f := range s.Interfaces {
		byID[f.ClientID] = f
	}
	for _, c := range node.elements() {
		if !c.is(am.RSpecNamespace, "interface") {
			continue
		}
		id, _ := c.attr("client_id")
		f, ok := byID[id]
		if !ok {
			continue
		}
		c.setAttr("", "sliver_id", s.URN+":"+id)
		c.setAttr("", "mac_address", f.MAC)
		c.setAttr(am.GeniamNamespace, "ifname", f.Name)
		c.removeChildren(func(e *element) bool { return e.is(am.RSpecNamespace, "ip") })
		if f.IP != "" {
			c.Children = append(c.Children, &element{Space: am.RSpecNamespace, Local: "ip", Attrs: []attr{
				{"", "address", f.IP}, {"", "netmask", netmask(f.Prefix)}, {"", "type", "ipv4"}}})
		}
	}
}

func netmask(prefix int) string {
	if prefix <= 0 || prefix > 32 {
		return ""
	}
	m := uint32(math.MaxUint32) << (32 - prefix)
	return strconv.Itoa(int(m>>24)) + "." + strconv.Itoa(int(m>>16&0xff)) + "." + strconv.Itoa(int(m>>8&0xff)) + "." + strconv.Itoa(int(m&0xff))
}

// manifestLinks builds the <link>s the slivers are on: each with the
// interfaces of these slivers, its type, shaping and VXLAN VNI.
func (r *RSpecs) manifestLinks(slivers []am.Sliver) []*element {
	var out []*element
	byID := map[string]*element{}
	refs := map[string][]string{}
	for _, s := range slivers {
		for _, f := range s.Interfaces {
			l := byID[f.Link]
			if l == nil {
				// vlantag is required by the manifest schema (ProtoGENI's
				// VLAN id); ours is the VXLAN id, said again as geniam:vni.
				l = &element{Space: am.RSpecNamespace, Local: "link", Attrs: []attr{{"", "client_id", f.Link}, {"", "vlantag", strconv.Itoa(f.Tag)}}}
				if f.Tag > 0 {
					l.Attrs = append(l.Attrs, attr{am.GeniamNamespace, "vni", strconv.Itoa(f.Tag)})
				}
				l.Children = append(l.Children, &element{Space: am.RSpecNamespace, Local: "component_manager", Attrs: []attr{{"", "name", r.cfg.AMURN}}})
				byID[f.Link] = l
				out = append(out, l)
			}
			l.Children = append(l.Children, &element{Space: am.RSpecNamespace, Local: "interface_ref", Attrs: []attr{
				{"", "client_id", f.ClientID}, {"", "sliver_id", s.URN + ":" + f.ClientID}}})
			refs[f.Link] = append(refs[f.Link], f.ClientID)
		}
	}
	for _, s := range slivers {
		for _, f := range s.Interfaces {
			l := byID[f.Link]
			if l == nil {
				continue
			}
			delete(byID, f.Link) // once per link
			l.Children = append(l.Children, &element{Space: am.RSpecNamespace, Local: "link_type", Attrs: []attr{{"", "name", f.LinkType}}})
			if f.Shaping.IsZero() {
				continue
			}
			for _, a := range refs[f.Link] {
				for _, b := range refs[f.Link] {
					if a == b {
						continue
					}
					p := &element{Space: am.RSpecNamespace, Local: "property", Attrs: []attr{{"", "source_id", a}, {"", "dest_id", b}}}
					if f.Shaping.CapacityKbps > 0 {
						p.Attrs = append(p.Attrs, attr{"", "capacity", strconv.FormatInt(f.Shaping.CapacityKbps, 10)})
					}
					if f.Shaping.LatencyMs > 0 {
						p.Attrs = append(p.Attrs, attr{"", "latency", strconv.Itoa(f.Shaping.LatencyMs)})
					}
					if f.Shaping.LossPercent > 0 {
						p.Attrs = append(p.Attrs, attr{"", "packet_loss", strconv.FormatFloat(f.Shaping.LossPercent/100, 'g', -1, 64)})
					}
					l.Children = append(l.Children, p)
				}
			}
		}
	}
	return out
}

// writeAdLinks says in the advertisement what links a request may ask for:
// the link types, shaping and transports at least one of the nodes' agents
// reported (each node's own are in its geniam:node_links). Without a node
// that offers links, nothing is said.
func (r *RSpecs) writeAdLinks(b *strings.Builder, nodes []am.Node) {
	if r.cfg.MaxLinks <= 0 {
		return
	}
	var some am.LinkSupport
	for _, n := range nodes {
		if n.Links != nil && n.Links.Enabled {
			some.Enabled = true
			some.Capacity = some.Capacity || n.Links.Capacity
			some.Netem = some.Netem || n.Links.Netem
			some.VXLAN = some.VXLAN || n.Links.VXLAN
		}
	}
	if !some.Enabled {
		return
	}
	b.WriteString("  <geniam:links")
	writeAttr(b, "link_types", am.LinkTypeLAN)
	writeListAttr(b, "shaping", some.Shaping())
	writeAttr(b, "max_per_request", strconv.Itoa(r.cfg.MaxLinks))
	writeListAttr(b, "transport", some.Transports())
	b.WriteString("/>\n")
}

// writeAdNodeLinks says what links the node's agent reported it can
// realise: nothing when it offers none or has not reported yet.
func (r *RSpecs) writeAdNodeLinks(b *strings.Builder, n *am.Node) {
	if r.cfg.MaxLinks <= 0 || n.Links == nil || !n.Links.Enabled {
		return
	}
	b.WriteString("    <geniam:node_links")
	writeAttr(b, "link_types", am.LinkTypeLAN)
	writeListAttr(b, "shaping", n.Links.Shaping())
	writeListAttr(b, "transport", n.Links.Transports())
	b.WriteString("/>\n")
}

// writeListAttr writes a space-separated list attribute, none when empty.
func writeListAttr(b *strings.Builder, name string, values []string) {
	if len(values) > 0 {
		writeAttr(b, name, strings.Join(values, " "))
	}
}
