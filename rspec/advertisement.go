package rspec

import (
	"strconv"
	"strings"
	"time"

	"github.com/geniam/geniam/am"
)

// Schema locations of the extensions we write.
const (
	OpStateAdSchemaURL    = "http://www.geni.net/resources/rspec/ext/opstate/1/ad.xsd"
	UserManifestSchemaURL = "http://www.geni.net/resources/rspec/ext/user/1/manifest.xsd"
	// GeniamSchemaURL is where our extension schema (schemas/geniam-rspec-ext-1.xsd) is published.
	GeniamSchemaURL = "http://geniam.github.io/rspec/ext/geniam/1/rspec.xsd"
	xsiNamespace    = "http://www.w3.org/2001/XMLSchema-instance"
)

// opTransition is an action or an automatic (wait) transition of the
// operational state machine.
type opTransition struct{ name, next, description string }

// opState is one state of the machine we advertise for both sliver types.
type opState struct {
	name, description string
	actions           []opTransition
	waits             []opTransition // name is the wait type
}

// opStates is the operational state machine of container and exclusive
// slivers, as the advertisement tells experimenters. Provision leaves a
// sliver in geni_notready; the wait types are ours (the opstate extension
// names none).
var opStates = []opState{
	{name: string(am.NotReady), description: "The container exists (image loaded and verified) but is not running, or its start command has exited.",
		actions: []opTransition{
			{am.ActionStart, string(am.Configuring), "Start the container and run the execute services."},
			{am.ActionFetchData, string(am.NotReady), "Collect the log and /data of the container for download."},
		}},
	{name: string(am.Configuring), description: "The container is being started: image fetched and verified, install services unpacked.",
		waits: []opTransition{
			{"geni_success", string(am.Ready), "The container runs."},
			{"geni_failure", string(am.Failed), "The image, an install service or the container start failed."},
		}},
	{name: string(am.Ready), description: "The container runs; the geni_users keys are installed.",
		actions: []opTransition{
			{am.ActionStop, string(am.Stopping), "Stop the container (its data is kept)."},
			{am.ActionRestart, string(am.Configuring), "Stop and start the container again."},
			{am.ActionUpdateUsers, string(am.Ready), "Install the SSH keys given in geni_users."},
			{am.ActionFetchData, string(am.Ready), "Collect the log and /data of the container for download."},
		}},
	{name: string(am.Stopping), description: "The container is being stopped.",
		waits: []opTransition{
			{"geni_success", string(am.NotReady), "The container has stopped."},
		}},
	{name: string(am.Failed), description: "Starting or running the container failed; see geni_error and the log.",
		actions: []opTransition{
			{am.ActionRestart, string(am.Configuring), "Try to start the container again."},
			{am.ActionFetchData, string(am.Failed), "Collect the log and /data of the container for download."},
		}},
}

// Advertisement renders the inventory as a GENI v3 advertisement RSpec.
// With availableOnly, nodes that cannot take a new sliver now are left out.
// It writes the text directly (no DOM) so that 1,000 nodes stay cheap.
func (r *RSpecs) Advertisement(nodes []am.Node, availableOnly bool, now time.Time) (string, error) {
	// The sliver_type elements (with their disk images) are the same for
	// every node offering the type: render each once.
	sliverTypes := map[string]string{
		am.SliverTypeContainer: r.adSliverType(am.SliverTypeContainer),
		am.SliverTypeExclusive: r.adSliverType(am.SliverTypeExclusive),
	}
	var b strings.Builder
	b.Grow(4096 + (700+2*len(sliverTypes[am.SliverTypeContainer]))*len(nodes))
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` + "\n<rspec")
	writeAttr(&b, "xmlns", am.RSpecNamespace)
	writeAttr(&b, "xmlns:xsi", xsiNamespace)
	writeAttr(&b, "xmlns:opstate", am.OpStateNamespace)
	writeAttr(&b, "xmlns:geniam", am.GeniamNamespace)
	writeAttr(&b, "xsi:schemaLocation", am.RSpecNamespace+" "+am.AdSchemaURL+" "+
		am.OpStateNamespace+" "+OpStateAdSchemaURL+" "+am.GeniamNamespace+" "+GeniamSchemaURL)
	writeAttr(&b, "type", "advertisement")
	writeAttr(&b, "generated", rfc3339(now))
	writeAttr(&b, "expires", rfc3339(now.Add(r.cfg.AdValidity)))
	writeAttr(&b, "generated_by", r.cfg.GeneratedBy)
	b.WriteString(">\n")
	r.writeOpState(&b)
	r.writeAdLinks(&b, nodes)

	for i := range nodes {
		n := &nodes[i]
		if availableOnly && !availableNow(n) {
			continue
		}
		r.writeAdNode(&b, n, sliverTypes)
	}
	b.WriteString("</rspec>\n")
	return b.String(), nil
}

// availableNow reports whether n can take a new sliver of a type it offers
// (am.Node.CanTake, the rule placement uses).
func availableNow(n *am.Node) bool { return n.CanTake(false) || n.CanTake(true) }

func (r *RSpecs) writeAdNode(b *strings.Builder, n *am.Node, sliverTypes map[string]string) {
	b.WriteString("  <node")
	writeAttr(b, "component_id", r.componentID(n))
	writeAttr(b, "component_manager_id", r.cfg.AMURN)
	writeAttr(b, "component_name", n.Name)
	writeAttr(b, "exclusive", strconv.FormatBool(n.Offers(true)))
	b.WriteString(">\n")
	if n.HardwareType != "" {
		b.WriteString("    <hardware_type")
		writeAttr(b, "name", n.HardwareType)
		b.WriteString("/>\n")
	}
	for _, t := range n.SliverTypes {
		s, ok := sliverTypes[t]
		if !ok {
			s = r.adSliverType(t)
			sliverTypes[t] = s
		}
		b.WriteString(s)
	}
	b.WriteString(`    <available now="`)
	b.WriteString(strconv.FormatBool(availableNow(n)))
	b.WriteString("\"/>\n")
	if l := n.Location; l != nil && l.Country != "" {
		b.WriteString("    <location")
		writeAttr(b, "country", l.Country)
		writeAttr(b, "latitude", strconv.FormatFloat(l.Latitude, 'f', -1, 64))
		writeAttr(b, "longitude", strconv.FormatFloat(l.Longitude, 'f', -1, 64))
		b.WriteString("/>\n")
	}
	b.WriteString("    <geniam:node_capacity")
	writeAttr(b, "containers", strconv.Itoa(n.Capacity))
	writeAttr(b, "used", strconv.Itoa(n.Used))
	writeAttr(b, "free", strconv.Itoa(n.Free()))
	if n.Exclusive {
		writeAttr(b, "exclusive_in_use", "true")
	}
	b.WriteString("/>\n")
	// What <geniam:run> may ask for here (the request extension).
	b.WriteString(`    <geniam:run_modes restart="never on-failure always" max_retries="` + strconv.Itoa(maxRetries) +
		`" max_time_limit="` + strconv.Itoa(maxTimeLimit) + `"/>` + "\n")
	if r.cfg.IdleStop > 0 {
		b.WriteString(`    <geniam:idle_policy stop_after="` + strconv.Itoa(int(r.cfg.IdleStop.Seconds())) +
			`" warn_before="` + strconv.Itoa(int(r.cfg.IdleWarn.Seconds())) + `"/>` + "\n")
	}
	r.writeAdNodeLinks(b, n)
	if !n.Available && n.Reason != "" {
		b.WriteString("    <geniam:node_status")
		writeAttr(b, "reason", n.Reason)
		b.WriteString("/>\n")
	}
	for _, k := range n.Bookings {
		b.WriteString("    <geniam:booked")
		writeAttr(b, "start", rfc3339(k.Start))
		writeAttr(b, "end", rfc3339(k.End))
		b.WriteString("/>\n")
	}
	b.WriteString("  </node>\n")
}

// adSliverType renders one sliver_type of the ad with the offered images.
func (r *RSpecs) adSliverType(name string) string {
	var b strings.Builder
	b.WriteString("    <sliver_type")
	writeAttr(&b, "name", name)
	lim := r.cfg.SliverLimits[name]
	if len(r.cfg.Images) == 0 && lim.IsZero() {
		b.WriteString("/>\n")
		return b.String()
	}
	b.WriteString(">\n")
	if el := limitsElement(lim); el != nil {
		b.WriteString("      <geniam:sliver_limits")
		for _, a := range el.Attrs {
			writeAttr(&b, a.Local, a.Value)
		}
		b.WriteString("/>\n")
	}
	for _, im := range r.cfg.Images {
		b.WriteString("      <disk_image")
		writeAttr(&b, "name", im.URL)
		if im.OS != "" {
			writeAttr(&b, "os", im.OS)
		}
		if im.Version != "" {
			writeAttr(&b, "version", im.Version)
		}
		if im.Description != "" {
			writeAttr(&b, "description", im.Description)
		}
		if im.Default {
			writeAttr(&b, "default", "true")
		}
		if im.SHA256 != "" {
			writeAttr(&b, "geniam:sha256", strings.ToLower(im.SHA256))
		}
		b.WriteString("/>\n")
	}
	b.WriteString("    </sliver_type>\n")
	return b.String()
}

// writeOpState writes the operational-state extension: one machine shared
// by both sliver types.
func (r *RSpecs) writeOpState(b *strings.Builder) {
	b.WriteString("  <opstate:rspec_opstate")
	writeAttr(b, "aggregate_manager_id", r.cfg.AMURN)
	writeAttr(b, "start", string(am.NotReady))
	b.WriteString(">\n")
	for _, t := range []string{am.SliverTypeContainer, am.SliverTypeExclusive} {
		b.WriteString("    <opstate:sliver_type")
		writeAttr(b, "name", t)
		b.WriteString("/>\n")
	}
	for _, s := range opStates {
		b.WriteString("    <opstate:state")
		writeAttr(b, "name", s.name)
		b.WriteString(">\n")
		for _, a := range s.actions {
			writeTransition(b, "action", "name", a)
		}
		for _, w := range s.waits {
			writeTransition(b, "wait", "type", w)
		}
		b.WriteString("      <opstate:description>")
		escapeText(b, s.description)
		b.WriteString("</opstate:description>\n    </opstate:state>\n")
	}
	b.WriteString("  </opstate:rspec_opstate>\n")
}

func writeTransition(b *strings.Builder, element, nameAttr string, t opTransition) {
	b.WriteString("      <opstate:" + element)
	writeAttr(b, nameAttr, t.name)
	writeAttr(b, "next", t.next)
	b.WriteString("><opstate:description>")
	escapeText(b, t.description)
	b.WriteString("</opstate:description></opstate:" + element + ">\n")
}
