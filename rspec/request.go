package rspec

import (
	"encoding/xml"
	"errors"
	"io"
	"strconv"
	"strings"

	"github.com/geniam/geniam/am"
)

// ParseRequest parses a request RSpec into the slivers this aggregate must
// place. The document is read as a stream, one top-level element at a time,
// so a huge request is refused after MaxNodes nodes rather than after it has
// been read whole. Errors are *am.Err: TOOBIG (too large), BADVERSION (not
// GENI v3), UNSUPPORTED (links, unknown sliver types) and BADARGS (anything
// else wrong), each naming the element or attribute.
func (r *RSpecs) ParseRequest(doc string) (*am.Request, error) {
	if len(doc) > r.cfg.MaxBytes {
		return nil, am.Errorf(am.TooBig, "request RSpec is %d bytes; this aggregate accepts at most %d", len(doc), r.cfg.MaxBytes)
	}
	if strings.TrimSpace(doc) == "" {
		return nil, am.Errorf(am.BadArgs, "request RSpec is empty")
	}
	p := &requestParser{
		r:             r,
		rd:            newReader(doc, readLimits{maxDepth: r.cfg.MaxDepth, maxElements: r.cfg.MaxElementsPerNode}),
		clientIDs:     map[string]bool{},
		interfaces:    map[string]bool{},
		ourInterfaces: map[string]bool{},
		req:           &am.Request{},
	}
	if err := p.parse(); err != nil {
		return nil, err
	}
	return p.req, nil
}

type requestParser struct {
	r          *RSpecs
	rd         *reader
	clientIDs  map[string]bool // node client_ids seen
	interfaces map[string]bool // interface client_ids seen
	// ourInterfaces are the interfaces of our nodes; links are resolved
	// against them at the end (links.go).
	ourInterfaces map[string]bool
	links         []pendingLink
	nodes         int // node elements seen, ours or not
	others        int // other top-level elements seen
	req           *am.Request
}

func (p *requestParser) parse() error {
	root, err := p.root()
	if err != nil {
		return err
	}
	if err := checkRoot(root); err != nil {
		return err
	}
	for {
		tok, err := p.rd.token()
		if err != nil {
			return err
		}
		switch t := tok.(type) {
		case xml.EndElement: // of <rspec>
			if err := p.rest(); err != nil {
				return err
			}
			if err := p.resolveLinks(); err != nil {
				return err
			}
			if len(p.req.Slivers) == 0 {
				return am.Errorf(am.BadArgs, "request RSpec names no node for this aggregate (%s)", p.r.cfg.AMURN)
			}
			return nil
		case xml.StartElement:
			if err := p.topLevel(t); err != nil {
				return err
			}
		}
	}
}

// root skips the prolog and returns the root element's start tag.
func (p *requestParser) root() (xml.StartElement, error) {
	for {
		tok, err := p.rd.token()
		if err != nil {
			return xml.StartElement{}, err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			return t, nil
		case xml.CharData:
			if strings.TrimSpace(string(t)) != "" {
				return xml.StartElement{}, am.Errorf(am.BadArgs, "request RSpec is not well-formed XML: it has text before its root element")
			}
		}
	}
}

// checkRoot requires <rspec type="request"> in the GENI v3 namespace.
func checkRoot(root xml.StartElement) error {
	if root.Name.Local != "rspec" {
		return am.Errorf(am.BadArgs, "root element is <%s>, not <rspec>", root.Name.Local)
	}
	if root.Name.Space != am.RSpecNamespace {
		ns := root.Name.Space
		if ns == "" {
			ns = "no namespace"
		}
		return am.Errorf(am.BadVersion, "<rspec> is in %s; this aggregate speaks GENI v3 (%s)", quoteNS(ns), am.RSpecNamespace)
	}
	var typ string
	var hasType bool
	for _, a := range root.Attr {
		if a.Name.Space == "" && a.Name.Local == "type" {
			typ, hasType = strings.TrimSpace(a.Value), true
		}
	}
	switch {
	case !hasType:
		return am.Errorf(am.BadArgs, `<rspec> has no type attribute; a request needs type="request"`)
	case typ == "request":
		return nil
	case typ == "advertisement" || typ == "manifest":
		return am.Errorf(am.BadArgs, `<rspec type=%q> is %s RSpec; Allocate needs a request (type="request")`, typ, article(typ))
	default:
		return am.Errorf(am.BadArgs, `<rspec type=%q> is not a request RSpec (type="request")`, typ)
	}
}

func quoteNS(ns string) string {
	if ns == "no namespace" {
		return ns
	}
	return "namespace " + strconv.Quote(ns)
}

func article(typ string) string {
	if typ == "advertisement" {
		return "an advertisement"
	}
	return "a manifest"
}

// rest checks that nothing but comments and blanks follow the root element.
func (p *requestParser) rest() error {
	for {
		tok, err := p.rd.d.Token()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return p.rd.badXML(err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			return am.Errorf(am.BadArgs, "request RSpec has a second root element <%s>", t.Name.Local)
		case xml.CharData:
			if strings.TrimSpace(string(t)) != "" {
				return am.Errorf(am.BadArgs, "request RSpec has text after its root element")
			}
		case xml.Directive:
			return am.Errorf(am.BadArgs, "RSpec must not contain a DOCTYPE or other <!...> declaration")
		}
	}
}

// topLevel handles one child of <rspec>.
func (p *requestParser) topLevel(start xml.StartElement) error {
	isNode := start.Name.Space == am.RSpecNamespace && start.Name.Local == "node"
	if isNode {
		p.nodes++
		if p.nodes > p.r.cfg.MaxNodes {
			return am.Errorf(am.TooBig, "request RSpec has more than %d nodes", p.r.cfg.MaxNodes)
		}
	} else {
		p.others++
		if p.others > p.r.cfg.MaxNodes {
			return am.Errorf(am.TooBig, "request RSpec has more than %d top-level elements besides nodes", p.r.cfg.MaxNodes)
		}
	}
	el, err := p.rd.readElement(start)
	if err != nil {
		return err
	}
	switch {
	case isNode:
		return p.node(el)
	case el.is(am.RSpecNamespace, "link"):
		if p.foreignLink(el) {
			p.req.Foreign = append(p.req.Foreign, p.serialize(el))
			return nil
		}
		return p.link(el)
	case el.Space == am.RSpecNamespace:
		return am.Errorf(am.BadArgs, "unexpected element <%s> in a request RSpec", el.Local)
	default:
		// An extension (a tool's layout data, another testbed's request
		// data): echoed in the manifest untouched.
		p.req.Foreign = append(p.req.Foreign, p.serialize(el))
		return nil
	}
}

// foreignLink reports whether every component_manager of a link is another aggregate.
func (p *requestParser) foreignLink(el *element) bool {
	n := 0
	for _, c := range el.elements() {
		if c.is(am.RSpecNamespace, "component_manager") {
			name, _ := c.attr("name")
			if p.r.ours(name) {
				return false
			}
			n++
		}
	}
	return n > 0
}

func (p *requestParser) serialize(el *element) string {
	var b strings.Builder
	writeElement(&b, el, newPrefixer(p.rd.prefixes), nil, "", 0)
	return b.String()
}

// node turns one <node> into a SliverRequest, or into Foreign when it is
// another aggregate's.
func (p *requestParser) node(el *element) error {
	clientID, _ := el.attr("client_id")
	if clientID == "" {
		return am.Errorf(am.BadArgs, "node #%d has no client_id", p.nodes)
	}
	if p.clientIDs[clientID] {
		return am.Errorf(am.BadArgs, "client_id %q names two nodes; client_ids must be unique", clientID)
	}
	p.clientIDs[clientID] = true

	componentID, bound := el.attr("component_id")
	cmid, hasCM := el.attr("component_manager_id")
	var auth string
	if bound {
		u, err := am.ParseURN(componentID)
		auth = u.Authority
		if err != nil || u.Type != "node" {
			return am.Errorf(am.BadArgs, "node %q: component_id %q is not a node URN (urn:publicid:IDN+<authority>+node+<name>)", clientID, componentID)
		}
	}
	switch {
	case hasCM && !p.r.ours(cmid):
		p.req.Foreign = append(p.req.Foreign, p.serialize(el))
		return nil
	case !hasCM && bound && !strings.EqualFold(auth, p.r.authority):
		// Bound to another authority's component and no manager named: it
		// is not ours to place.
		p.req.Foreign = append(p.req.Foreign, p.serialize(el))
		return nil
	case bound && !strings.EqualFold(auth, p.r.authority):
		return am.Errorf(am.BadArgs, "node %q: component_id %q is not a node of this aggregate (%s)", clientID, componentID, p.r.cfg.AMURN)
	}

	s := am.SliverRequest{ClientID: clientID, ComponentID: componentID}
	if v, ok := el.attr("exclusive"); ok {
		b, err := parseBool(v)
		if err != nil {
			return am.Errorf(am.BadArgs, "node %q: exclusive=%q is not a boolean", clientID, v)
		}
		s.Exclusive = b
	}

	var sliverTypes, images []*element
	for _, c := range el.elements() {
		if c.is(am.GeniamNamespace, "run") {
			if s.Run != nil {
				return am.Errorf(am.BadArgs, "node %q has two geniam:run elements", clientID)
			}
			r, err := parseRun(clientID, c)
			if err != nil {
				return err
			}
			s.Run = r
			continue
		}
		if c.Space != am.RSpecNamespace {
			continue // extensions are echoed through NodeXML
		}
		switch c.Local {
		case "sliver_type":
			sliverTypes = append(sliverTypes, c)
			for _, d := range c.elements() {
				if d.is(am.RSpecNamespace, "disk_image") {
					images = append(images, d)
				}
			}
		case "disk_image": // not in the v3 schema, but some tools put it here
			images = append(images, c)
		case "services":
			if err := p.services(&s, c); err != nil {
				return err
			}
		case "interface":
			id, _ := c.attr("client_id")
			if id == "" {
				return am.Errorf(am.BadArgs, "node %q: an interface has no client_id", clientID)
			}
			if p.interfaces[id] {
				return am.Errorf(am.BadArgs, "interface client_id %q is used twice", id)
			}
			p.interfaces[id] = true
			f, err := nodeInterface(clientID, id, c)
			if err != nil {
				return err
			}
			s.Interfaces = append(s.Interfaces, f)
			p.ourInterfaces[id] = true
		}
	}

	switch len(sliverTypes) {
	case 0:
		s.SliverType = am.SliverTypeContainer
	case 1:
		name, _ := sliverTypes[0].attr("name")
		t, err := p.r.sliverType(clientID, name)
		if err != nil {
			return err
		}
		s.SliverType = t
	default:
		return am.Errorf(am.BadArgs, "node %q has %d sliver_type elements; a request node has one", clientID, len(sliverTypes))
	}
	if s.SliverType == am.SliverTypeExclusive {
		s.Exclusive = true // the whole node is the slice's whatever the attribute says
	}

	switch len(images) {
	case 0:
		if p.r.cfg.DefaultImage.URL == "" {
			return am.Errorf(am.BadArgs, "node %q: sliver_type has no disk_image and this aggregate has no default image", clientID)
		}
		s.Image = p.r.cfg.DefaultImage
	case 1:
		im, err := p.r.parseDiskImage(clientID, images[0])
		if err != nil {
			return err
		}
		s.Image = im
	default:
		return am.Errorf(am.BadArgs, "node %q has %d disk_image elements; a node runs one image", clientID, len(images))
	}

	if s.Run != nil && len(s.Run.Args) > 0 && len(s.Execute) > 0 {
		return am.Errorf(am.BadArgs, "node %q: give the command either as geniam:run arg elements or as services/execute, not both", clientID)
	}
	s.NodeXML = p.serialize(el)
	p.req.Slivers = append(p.req.Slivers, s)
	return nil
}

// services reads services/execute and services/install.
func (p *requestParser) services(s *am.SliverRequest, el *element) error {
	for _, c := range el.elementsIn(am.RSpecNamespace) {
		switch c.Local {
		case "execute":
			shell, _ := c.attr("shell")
			command, _ := c.attr("command")
			if strings.TrimSpace(shell) == "" {
				return am.Errorf(am.BadArgs, "node %q: services/execute has no shell attribute", s.ClientID)
			}
			if strings.TrimSpace(command) == "" {
				return am.Errorf(am.BadArgs, "node %q: services/execute has no command attribute", s.ClientID)
			}
			s.Execute = append(s.Execute, am.Execute{Shell: shell, Command: command})
		case "install":
			u, _ := c.attr("url")
			path, _ := c.attr("install_path")
			u, path = strings.TrimSpace(u), strings.TrimSpace(path)
			if u == "" {
				return am.Errorf(am.BadArgs, "node %q: services/install has no url attribute", s.ClientID)
			}
			if !strings.HasPrefix(path, "/") {
				return am.Errorf(am.BadArgs, "node %q: services/install install_path %q is not an absolute path", s.ClientID, path)
			}
			if err := p.r.checkInstallURL(s.ClientID, u); err != nil {
				return err
			}
			s.Install = append(s.Install, am.Install{URL: u, Path: path})
		}
		// login in a request is the AM's to fill in: ignored.
	}
	return nil
}

func (r *RSpecs) checkInstallURL(clientID, u string) error {
	lower := strings.ToLower(u)
	if strings.HasPrefix(lower, "http://") || strings.HasPrefix(lower, "https://") {
		return nil
	}
	if r.cfg.AllowLocalImages && (strings.HasPrefix(u, "/") || strings.HasPrefix(lower, "file:/")) {
		return nil
	}
	return am.Errorf(am.BadArgs, "node %q: services/install url %q is not an http(s) URL", clientID, u)
}

// sliverType maps a request sliver_type name to ours.
func (r *RSpecs) sliverType(clientID, name string) (string, error) {
	name = strings.TrimSpace(name)
	switch name {
	case "":
		return "", am.Errorf(am.BadArgs, "node %q: sliver_type has no name", clientID)
	case am.SliverTypeContainer, am.SliverTypeExclusive:
		return name, nil
	}
	if t, ok := r.cfg.SliverTypeAliases[name]; ok {
		return t, nil
	}
	return "", am.Errorf(am.Unsupported, "node %q: sliver_type %q is not offered here (offered: %s, %s)", clientID, name, am.SliverTypeContainer, am.SliverTypeExclusive)
}

// parseBool accepts the xs:boolean lexical forms.
func parseBool(s string) (bool, error) {
	switch strings.TrimSpace(s) {
	case "true", "1":
		return true, nil
	case "false", "0":
		return false, nil
	}
	return false, strconv.ErrSyntax
}
