package rspec

import (
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/amtest"
)

// FuzzParseRequest: any input is either refused with an *am.Err of a
// request code, or parsed into slivers whose echoed XML is well-formed and
// renders into a well-formed manifest that keeps every client_id.
func FuzzParseRequest(f *testing.F) {
	examples := exampleRequests(f)
	for _, name := range slices.Sorted(maps.Keys(examples)) { // in order: seed#N names the same seed every run
		f.Add(examples[name])
	}
	if sample := sharedPath(f, filepath.Join("omni-samples", "request-1node.xml")); sample != "" {
		f.Add(string(amtest.ReadFile(f, sample)))
	}
	f.Add(req(containerNode("a", `<jacks:nodeinfo x="1"/><services><execute shell="sh" command="x"/></services>`) +
		`<node client_id="o" component_manager_id="urn:publicid:IDN+other+authority+cm"/><jacks:site/>`))
	f.Add(billionLaughs)
	f.Add(`<rspec xmlns="http://www.geni.net/resources/rspec/3" xmlns:a="urn:x" type="request"><node client_id="n" a:b="c"><a:c xmlns="" d="e"><f/></a:c></node></rspec>`)

	r := newTestRSpecs(f, func(c *Config) { c.AllowLocalImages = true })
	f.Fuzz(func(t *testing.T, doc string) {
		got, err := r.ParseRequest(doc)
		if err != nil {
			switch am.CodeOf(err) {
			case am.BadArgs, am.BadVersion, am.Unsupported, am.TooBig:
			default:
				t.Fatalf("unexpected error code %v: %v", am.CodeOf(err), err)
			}
			if am.MessageOf(err) == "" {
				t.Fatalf("error without a message: %v", err)
			}
			return
		}
		if len(got.Slivers) == 0 {
			t.Fatal("accepted a request without slivers")
		}
		for _, s := range got.Slivers {
			// Our own reader is stricter than encoding/xml (duplicate
			// attributes, names, namespace declarations).
			if _, _, err := parseElement(s.NodeXML, storedLimits); err != nil {
				t.Fatalf("NodeXML does not re-read: %v\n%s", err, s.NodeXML)
			}
			if err := amtest.WellFormedXML(s.NodeXML); err != nil {
				t.Fatalf("NodeXML not well-formed: %v\n%s", err, s.NodeXML)
			}
		}
		for _, x := range got.Foreign {
			if err := amtest.WellFormedXML(x); err != nil {
				t.Fatalf("foreign element not well-formed: %v\n%s", err, x)
			}
		}
		slivers := make([]am.Sliver, len(got.Slivers))
		for i, s := range got.Slivers {
			slivers[i] = am.Sliver{URN: fmt.Sprintf("urn:publicid:IDN+geniam.localhost+sliver+%d", i), ClientID: s.ClientID,
				SliverType: s.SliverType, Image: s.Image, NodeXML: s.NodeXML, Allocation: am.Allocated}
		}
		m, err := r.ManifestWith(testSlice, slivers, got.Foreign, testNow)
		if err != nil {
			t.Fatalf("manifest: %v", err)
		}
		if err := amtest.WellFormedXML(m); err != nil {
			t.Fatalf("manifest not well-formed: %v\n%s", err, m)
		}
		if _, _, err := parseElement(m, storedLimits); err != nil {
			t.Fatalf("manifest does not re-read: %v\n%s", err, m)
		}
		for _, s := range got.Slivers {
			var b strings.Builder
			writeAttr(&b, "client_id", s.ClientID)
			if !strings.Contains(m, b.String()) {
				t.Fatalf("manifest lost client_id %q", s.ClientID)
			}
		}
	})
}
