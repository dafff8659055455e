package rspec

import (
	"strconv"
	"strings"
	"time"

	"github.com/geniam/geniam/am"
)

// storedLimits bound the re-parse of a NodeXML we wrote ourselves.
var storedLimits = readLimits{maxDepth: 256, maxElements: 1 << 20}

// manifestScope is what the manifest root declares; echoed nodes need not
// repeat these declarations.
var manifestScope = map[string]bool{
	"xsi=" + xsiNamespace:                  true,
	"ssh-user=" + am.UserNamespace:         true,
	"geniam=" + am.GeniamNamespace:         true,
	"opstate=" + am.OpStateNamespace:       true,
	"emulab=" + reservedPrefixes["emulab"]: true,
}

// Manifest renders slivers of a slice as a GENI v3 manifest RSpec: each
// sliver's request node echoed (extensions included) with sliver_id,
// component_id, component_manager_id, the image digest, login services and
// our state extension.
func (r *RSpecs) Manifest(sliceURN string, slivers []am.Sliver, now time.Time) (string, error) {
	return r.ManifestWith(sliceURN, slivers, nil, now)
}

// ManifestWith is Manifest that also echoes foreign elements: the
// am.Request.Foreign of the request being answered (nodes and links of
// other aggregates, top-level extensions), copied unchanged.
func (r *RSpecs) ManifestWith(sliceURN string, slivers []am.Sliver, foreign []string, now time.Time) (string, error) {
	var b strings.Builder
	b.Grow(1024 + 1024*len(slivers))
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` + "\n<rspec")
	writeAttr(&b, "xmlns", am.RSpecNamespace)
	writeAttr(&b, "xmlns:xsi", xsiNamespace)
	writeAttr(&b, "xmlns:ssh-user", am.UserNamespace)
	writeAttr(&b, "xmlns:geniam", am.GeniamNamespace)
	writeAttr(&b, "xmlns:opstate", am.OpStateNamespace)
	writeAttr(&b, "xmlns:emulab", reservedPrefixes["emulab"])
	writeAttr(&b, "xsi:schemaLocation", am.RSpecNamespace+" "+am.ManifestSchemaURL+" "+
		am.UserNamespace+" "+UserManifestSchemaURL+" "+am.GeniamNamespace+" "+GeniamSchemaURL)
	writeAttr(&b, "type", "manifest")
	writeAttr(&b, "generated", rfc3339(now))
	writeAttr(&b, "generated_by", r.cfg.GeneratedBy)
	b.WriteString(">\n")
	// A manifest of no slivers has no child at all: clients (and the AM API
	// acceptance tests) take any child element to mean "something is here".
	if sliceURN != "" && (len(slivers) > 0 || len(foreign) > 0) {
		b.WriteString("  <geniam:slice")
		writeAttr(&b, "urn", sliceURN)
		b.WriteString("/>\n")
	}
	for i := range slivers {
		node, hints, err := r.manifestNode(&slivers[i])
		if err != nil {
			return "", err
		}
		b.WriteString("  ")
		writeElement(&b, node, newPrefixer(hints), manifestScope, am.RSpecNamespace, 1)
		b.WriteByte('\n')
	}
	for _, l := range r.manifestLinks(slivers) {
		b.WriteString("  ")
		writeElement(&b, l, newPrefixer(nil), manifestScope, am.RSpecNamespace, 1)
		b.WriteByte('\n')
	}
	for _, f := range foreign {
		el, hints, err := parseElement(f, storedLimits)
		if err != nil {
			return "", am.Wrap(am.ServerError, err, "a stored foreign element of slice %s is not XML", sliceURN)
		}
		b.WriteString("  ")
		writeElement(&b, el, newPrefixer(hints), manifestScope, am.RSpecNamespace, 1)
		b.WriteByte('\n')
	}
	b.WriteString("</rspec>\n")
	return b.String(), nil
}

// manifestNode builds the manifest <node> of one sliver from its request node.
func (r *RSpecs) manifestNode(s *am.Sliver) (*element, map[string]string, error) {
	node := &element{Space: am.RSpecNamespace, Local: "node"}
	var hints map[string]string
	if s.NodeXML != "" {
		el, h, err := parseElement(s.NodeXML, storedLimits)
		if err != nil {
			return nil, nil, am.Wrap(am.ServerError, err, "the stored request node of sliver %s is not XML", s.URN)
		}
		if !el.is(am.RSpecNamespace, "node") {
			return nil, nil, am.Errorf(am.ServerError, "the stored request node of sliver %s is a <%s>", s.URN, el.Local)
		}
		node, hints = el, h
	}
	if s.ClientID != "" {
		node.setAttr("", "client_id", s.ClientID)
	}
	if s.ComponentID != "" {
		node.setAttr("", "component_id", s.ComponentID)
	}
	node.setAttr("", "component_manager_id", r.cfg.AMURN)
	if s.NodeName != "" {
		node.setAttr("", "component_name", s.NodeName)
	}
	node.setAttr("", "exclusive", strconv.FormatBool(s.Exclusive))
	node.setAttr("", "sliver_id", s.URN)

	// What the aggregate reports replaces what the request asked: one
	// sliver_type with the image actually used, the login services, our
	// state elements.
	var sliverType *element
	node.removeChildren(func(c *element) bool {
		switch {
		case c.is(am.RSpecNamespace, "sliver_type"):
			if sliverType != nil {
				return true
			}
			sliverType = c
			return false
		case c.is(am.RSpecNamespace, "disk_image"), c.is(am.RSpecNamespace, "host"):
			return true
		case c.Space == am.GeniamNamespace:
			return true
		}
		return false
	})
	if sliverType == nil {
		sliverType = &element{Space: am.RSpecNamespace, Local: "sliver_type"}
		insertChild(node, sliverType)
	}
	sliverType.setAttr("", "name", s.SliverType)
	sliverType.removeChildren(func(c *element) bool { return c.is(am.RSpecNamespace, "disk_image") })
	if s.Image.URL != "" {
		im := &element{Space: am.RSpecNamespace, Local: "disk_image", Attrs: []attr{{"", "name", s.Image.URL}}}
		if s.Image.SHA256 != "" {
			im.Attrs = append(im.Attrs, attr{am.GeniamNamespace, "sha256", s.Image.SHA256})
		}
		if s.ImageID != "" {
			im.Attrs = append(im.Attrs, attr{am.GeniamNamespace, "image_id", s.ImageID})
		}
		sliverType.Children = append(sliverType.Children, im)
	}

	// Login data in a request is not the aggregate's word: drop it, and
	// write what the sliver carries.
	for _, c := range node.elements() {
		if c.is(am.RSpecNamespace, "services") {
			c.removeChildren(func(c *element) bool {
				return c.is(am.RSpecNamespace, "login") || c.is(am.UserNamespace, "services_user")
			})
		}
	}
	if s.LoginHost != "" || len(s.Users) > 0 {
		r.manifestServices(node, s)
	}
	if s.LoginHost != "" {
		host := &element{Space: am.RSpecNamespace, Local: "host", Attrs: []attr{{"", "name", s.LoginHost}}}
		insertChild(node, host)
	}

	if el := limitsElement(r.cfg.SliverLimits[s.SliverType]); el != nil {
		insertChild(node, el)
	}
	manifestInterfaces(node, s)
	state := &element{Space: am.GeniamNamespace, Local: "sliver_state"}
	state.Attrs = append(state.Attrs, attr{"", "allocation", string(s.Allocation)})
	if s.Operational != "" {
		state.Attrs = append(state.Attrs, attr{"", "operational", string(s.Operational)})
	}
	if !s.Starts.IsZero() {
		state.Attrs = append(state.Attrs, attr{"", "starts", rfc3339(s.Starts)})
	}
	if !s.Expires.IsZero() {
		state.Attrs = append(state.Attrs, attr{"", "expires", rfc3339(s.Expires)})
	}
	if s.ExitCode != nil {
		state.Attrs = append(state.Attrs, attr{"", "exit_code", strconv.Itoa(*s.ExitCode)})
	}
	if s.Error != "" {
		state.Attrs = append(state.Attrs, attr{"", "error", s.Error})
	}
	insertChild(node, state)
	if s.Run != nil {
		insertChild(node, runElement(s.Run))
	}
	if r.cfg.IdleStop > 0 && s.Allocation == am.Provisioned {
		insertChild(node, &element{Space: am.GeniamNamespace, Local: "idle_policy", Attrs: []attr{
			{"", "stop_after", strconv.Itoa(int(r.cfg.IdleStop.Seconds()))}, {"", "warn_before", strconv.Itoa(int(r.cfg.IdleWarn.Seconds()))}}})
	}
	if s.StdoutTail != "" || s.StderrTail != "" {
		out := &element{Space: am.GeniamNamespace, Local: "sliver_output"}
		for _, t := range []struct{ name, text string }{{"stdout", s.StdoutTail}, {"stderr", s.StderrTail}} {
			if t.text != "" {
				out.Children = append(out.Children, &element{Space: am.GeniamNamespace, Local: t.name, Children: []any{charData(t.text)}})
			}
		}
		insertChild(node, out)
	}
	if s.LogURL != "" {
		insertChild(node, &element{Space: am.GeniamNamespace, Local: "sliver_log", Attrs: []attr{{"", "url", s.LogURL}}})
	}
	if s.DataURL != "" {
		insertChild(node, &element{Space: am.GeniamNamespace, Local: "sliver_data", Attrs: []attr{{"", "url", s.DataURL}}})
	}
	return node, hints, nil
}

// limitsElement is geniam:sliver_limits with the limits that are set, or
// nil when none is.
func limitsElement(l am.SliverLimits) *element {
	if l.IsZero() {
		return nil
	}
	el := &element{Space: am.GeniamNamespace, Local: "sliver_limits"}
	if l.MemoryBytes > 0 {
		el.Attrs = append(el.Attrs, attr{"", "memory_bytes", strconv.FormatInt(l.MemoryBytes, 10)})
	}
	if l.CPUs > 0 {
		el.Attrs = append(el.Attrs, attr{"", "cpus", strconv.FormatFloat(l.CPUs, 'f', -1, 64)})
	}
	if l.Pids > 0 {
		el.Attrs = append(el.Attrs, attr{"", "pids", strconv.FormatInt(l.Pids, 10)})
	}
	if l.DataBytes > 0 {
		el.Attrs = append(el.Attrs, attr{"", "data_bytes", strconv.FormatInt(l.DataBytes, 10)})
	}
	if l.ArchiveBytes > 0 {
		el.Attrs = append(el.Attrs, attr{"", "archive_bytes", strconv.FormatInt(l.ArchiveBytes, 10)})
	}
	return el
}

// manifestServices fills services/login and the ssh-user extension. All
// geni_users keys go to one account (LoginUser) in the container; when the
// aggregate has not named it yet, the account is named after the user.
func (r *RSpecs) manifestServices(node *element, s *am.Sliver) {
	var services *element
	for _, c := range node.elements() {
		if c.is(am.RSpecNamespace, "services") {
			services = c
			break
		}
	}
	if services == nil {
		services = &element{Space: am.RSpecNamespace, Local: "services"}
		insertChild(node, services)
	}
	if s.LoginHost != "" {
		port := s.LoginPort
		if port == 0 {
			port = 22
		}
		login := &element{Space: am.RSpecNamespace, Local: "login", Attrs: []attr{
			{"", "authentication", "ssh-keys"}, {"", "hostname", s.LoginHost}, {"", "port", strconv.Itoa(port)}}}
		if s.LoginUser != "" {
			login.Attrs = append(login.Attrs, attr{"", "username", s.LoginUser})
		}
		insertChild(services, login)
	}
	for _, u := range s.Users {
		account := s.LoginUser
		if account == "" {
			account = LoginName(u.URN)
		}
		su := &element{Space: am.UserNamespace, Local: "services_user", Attrs: []attr{{"", "login", account}}}
		if u.URN != "" {
			su.Attrs = append(su.Attrs, attr{"", "user_urn", u.URN})
		}
		for _, k := range u.Keys {
			su.Children = append(su.Children, &element{Space: am.UserNamespace, Local: "public_key",
				Children: []any{charData(strings.TrimSpace(k))}})
		}
		insertChild(services, su)
	}
}

// insertChild appends c to e (the writer redoes the layout).
func insertChild(e, c *element) {
	e.Children = append(e.Children, c)
}

// LoginName derives a Unix account name from a user URN
// (urn:publicid:IDN+ch.geni.net+user+alice -> "alice"): lower case letters,
// digits, '_' and '-', starting with a letter, at most 32 characters.
func LoginName(userURN string) string {
	name := userURN
	if u, err := am.ParseURN(userURN); err == nil {
		name = u.Name
	}
	var b strings.Builder
	for _, c := range strings.ToLower(name) {
		if b.Len() >= 32 {
			break
		}
		switch {
		case 'a' <= c && c <= 'z':
			b.WriteRune(c)
		case ('0' <= c && c <= '9') || c == '_' || c == '-':
			if b.Len() == 0 {
				b.WriteByte('u')
			}
			b.WriteRune(c)
		}
	}
	if b.Len() == 0 {
		return "geniuser"
	}
	return b.String()
}
