package rspec

import (
	"encoding/xml"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/geniam/geniam/am"
)

const testAMURN = "urn:publicid:IDN+geniam.localhost+authority+am"

var testNow = time.Date(2026, 11, 21, 21, 0, 0, 0, time.UTC)

func newTestRSpecs(t testing.TB, mod func(*Config)) *RSpecs {
	t.Helper()
	cfg := Config{
		AMURN: testAMURN,
		Images: []OfferedImage{{
			URL: "https://images.example.org/ubuntu.tar", SHA256: strings.Repeat("ab", 32),
			Description: "Ubuntu 24.04 <tools> & more", OS: "Linux", Version: "24.04", Default: true,
		}},
	}
	if mod != nil {
		mod(&cfg)
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func testNodes() []am.Node {
	both := []string{am.SliverTypeContainer, am.SliverTypeExclusive}
	return []am.Node{
		{Name: "node1", HardwareType: "docker-host", SliverTypes: both, Capacity: 4, Available: true, Used: 1,
			Location: &am.Location{Country: "DE", Latitude: 52.52, Longitude: 13.405}},
		{Name: "full", HardwareType: "docker-host", SliverTypes: []string{am.SliverTypeContainer}, Capacity: 2, Available: true, Used: 2},
		{Name: "drained", SliverTypes: both, Capacity: 4, Available: false, Reason: `disk "sdb" failing & <replaced>`},
		{Name: "held", ComponentID: "urn:publicid:IDN+geniam.localhost+node+held", SliverTypes: both, Capacity: 4, Available: true, Exclusive: true},
		{Name: "bare-metal", SliverTypes: []string{am.SliverTypeExclusive}, Capacity: 0, Available: true},
		{Name: "busy-exclusive-only", SliverTypes: []string{am.SliverTypeExclusive}, Capacity: 0, Available: true, Used: 1},
		{Name: "odd\x01name\"", SliverTypes: []string{am.SliverTypeContainer}, Capacity: 1, Available: true},
	}
}

// adDoc is the part of an advertisement the tests inspect.
type adDoc struct {
	XMLName        xml.Name `xml:"http://www.geni.net/resources/rspec/3 rspec"`
	Type           string   `xml:"type,attr"`
	SchemaLocation string   `xml:"http://www.w3.org/2001/XMLSchema-instance schemaLocation,attr"`
	Generated      string   `xml:"generated,attr"`
	Expires        string   `xml:"expires,attr"`
	OpState        []struct {
		AM          string `xml:"aggregate_manager_id,attr"`
		Start       string `xml:"start,attr"`
		SliverTypes []struct {
			Name string `xml:"name,attr"`
		} `xml:"http://www.geni.net/resources/rspec/ext/opstate/1 sliver_type"`
		States []struct {
			Name    string `xml:"name,attr"`
			Actions []struct {
				Name string `xml:"name,attr"`
				Next string `xml:"next,attr"`
			} `xml:"http://www.geni.net/resources/rspec/ext/opstate/1 action"`
		} `xml:"http://www.geni.net/resources/rspec/ext/opstate/1 state"`
	} `xml:"http://www.geni.net/resources/rspec/ext/opstate/1 rspec_opstate"`
	Nodes []struct {
		ComponentID   string `xml:"component_id,attr"`
		CMID          string `xml:"component_manager_id,attr"`
		ComponentName string `xml:"component_name,attr"`
		Exclusive     string `xml:"exclusive,attr"`
		Available     []struct {
			Now string `xml:"now,attr"`
		} `xml:"http://www.geni.net/resources/rspec/3 available"`
		SliverTypes []struct {
			Name   string `xml:"name,attr"`
			Images []struct {
				Name   string `xml:"name,attr"`
				SHA256 string `xml:"http://geniam.github.io/rspec/ext/geniam/1 sha256,attr"`
			} `xml:"http://www.geni.net/resources/rspec/3 disk_image"`
		} `xml:"http://www.geni.net/resources/rspec/3 sliver_type"`
		Capacity struct {
			Free string `xml:"free,attr"`
		} `xml:"http://geniam.github.io/rspec/ext/geniam/1 node_capacity"`
		Status *struct {
			Reason string `xml:"reason,attr"`
		} `xml:"http://geniam.github.io/rspec/ext/geniam/1 node_status"`
	} `xml:"http://www.geni.net/resources/rspec/3 node"`
}

func parseAd(t testing.TB, doc string) adDoc {
	t.Helper()
	return unmarshalDoc[adDoc](t, "advertisement", doc)
}

func TestAdvertisement(t *testing.T) {
	v := newValidator(t)
	r := newTestRSpecs(t, nil)
	for _, tc := range []struct {
		availableOnly bool
		want          map[string]string // component_name -> available now
	}{
		{false, map[string]string{"node1": "true", "full": "false", "drained": "false", "held": "false",
			"bare-metal": "true", "busy-exclusive-only": "false", "odd\uFFFDname\"": "true"}},
		{true, map[string]string{"node1": "true", "bare-metal": "true", "odd\uFFFDname\"": "true"}},
	} {
		t.Run(fmt.Sprintf("availableOnly=%v", tc.availableOnly), func(t *testing.T) {
			doc, err := r.Advertisement(testNodes(), tc.availableOnly, testNow)
			if err != nil {
				t.Fatal(err)
			}
			v.validate(t, "ad", doc)
			ad := parseAd(t, doc)
			if ad.Type != "advertisement" || !strings.Contains(ad.SchemaLocation, am.AdSchemaURL) {
				t.Errorf("type %q, schemaLocation %q", ad.Type, ad.SchemaLocation)
			}
			if ad.Generated != "2026-11-21T21:00:00Z" || ad.Expires != "2026-11-21T21:10:00Z" {
				t.Errorf("generated %q expires %q", ad.Generated, ad.Expires)
			}
			got := map[string]string{}
			for _, n := range ad.Nodes {
				if len(n.Available) != 1 {
					t.Errorf("node %q has %d available elements", n.ComponentName, len(n.Available))
					continue
				}
				got[n.ComponentName] = n.Available[0].Now
				if n.CMID != testAMURN || !strings.HasPrefix(n.ComponentID, "urn:publicid:IDN+geniam.localhost+node+") {
					t.Errorf("node %q: component_id %q component_manager_id %q", n.ComponentName, n.ComponentID, n.CMID)
				}
				for _, st := range n.SliverTypes {
					if len(st.Images) != 1 || st.Images[0].SHA256 != strings.Repeat("ab", 32) {
						t.Errorf("node %q sliver_type %q images %+v", n.ComponentName, st.Name, st.Images)
					}
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("nodes and availability:\n got %v\nwant %v", got, tc.want)
			}
			if len(ad.OpState) != 1 || ad.OpState[0].Start != "geni_notready" || len(ad.OpState[0].SliverTypes) != 2 {
				t.Fatalf("opstate: %+v", ad.OpState)
			}
			actions := map[string]bool{}
			for _, s := range ad.OpState[0].States {
				for _, a := range s.Actions {
					actions[a.Name] = true
				}
			}
			for _, a := range []string{am.ActionStart, am.ActionStop, am.ActionRestart, am.ActionUpdateUsers, am.ActionFetchData} {
				if !actions[a] {
					t.Errorf("opstate lacks action %s", a)
				}
			}
		})
	}
}

func TestAdvertisementDetails(t *testing.T) {
	r := newTestRSpecs(t, nil)
	doc, _ := r.Advertisement(testNodes(), false, testNow)
	ad := parseAd(t, doc)
	byName := map[string]int{}
	for i, n := range ad.Nodes {
		byName[n.ComponentName] = i
	}
	node1 := ad.Nodes[byName["node1"]]
	if node1.Exclusive != "true" || node1.Capacity.Free != "3" || len(node1.SliverTypes) != 2 {
		t.Errorf("node1: %+v", node1)
	}
	if full := ad.Nodes[byName["full"]]; full.Exclusive != "false" || full.Capacity.Free != "0" {
		t.Errorf("full: %+v", full)
	}
	if d := ad.Nodes[byName["drained"]]; d.Status == nil || d.Status.Reason != `disk "sdb" failing & <replaced>` {
		t.Errorf("drained node status: %+v", d.Status)
	}
	if h := ad.Nodes[byName["held"]]; h.ComponentID != "urn:publicid:IDN+geniam.localhost+node+held" {
		t.Errorf("held component_id %q", h.ComponentID)
	}
	if !strings.Contains(doc, `<location country="DE" latitude="52.52" longitude="13.405"/>`) {
		t.Errorf("location missing")
	}
}

func TestAdvertisementEmptyAndNoImages(t *testing.T) {
	v := newValidator(t)
	r := newTestRSpecs(t, func(c *Config) { c.Images = nil })
	for _, nodes := range [][]am.Node{nil, testNodes()} {
		doc, err := r.Advertisement(nodes, false, testNow)
		if err != nil {
			t.Fatal(err)
		}
		v.validate(t, "ad", doc)
	}
}

// Our extension elements are really checked against our schema, not skipped
// by lax processing.
func TestAdvertisementExtensionIsValidated(t *testing.T) {
	v := newValidator(t)
	r := newTestRSpecs(t, nil)
	doc, _ := r.Advertisement(testNodes()[:1], false, testNow)
	for _, bad := range []struct{ from, to string }{
		{`free="3"`, `free="three"`},
		{`geniam:sha256="abab`, `geniam:sha256="zzab`},
		{`<geniam:node_capacity containers="4"`, `<geniam:node_capacity`}, // required attribute missing
	} {
		mutated := strings.Replace(doc, bad.from, bad.to, 1)
		if mutated == doc {
			t.Fatalf("mutation %q not applied", bad.from)
		}
		if err := v.check("ad", mutated); err == nil {
			t.Errorf("xmllint accepted an advertisement with %s", bad.to)
		}
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	for _, cfg := range []Config{
		{},
		{AMURN: "not-a-urn"},
		{AMURN: testAMURN, DefaultImage: am.Image{URL: "https://x/y.tar"}},
		{AMURN: testAMURN, SliverTypeAliases: map[string]string{"vm": "raw-pc"}},
		{AMURN: testAMURN, Images: []OfferedImage{{URL: "https://x/y.tar"}}},
		{AMURN: testAMURN, Images: []OfferedImage{{URL: "https://x/y.tar", SHA256: "abc"}}},
		{AMURN: testAMURN, Images: []OfferedImage{{SHA256: digest}}},
	} {
		if _, err := New(cfg); am.CodeOf(err) != am.BadArgs {
			t.Errorf("New(%+v) = %v, want BADARGS", cfg, err)
		}
	}
}

// The advertised state machine is closed: start and every next are states,
// and every state can be left or is final by design.
func TestOpStateMachine(t *testing.T) {
	states := map[string]bool{}
	for _, s := range opStates {
		states[s.name] = true
	}
	if !states[string(am.NotReady)] {
		t.Fatal("start state geni_notready is not advertised")
	}
	for _, s := range opStates {
		if len(s.actions)+len(s.waits) == 0 {
			t.Errorf("state %s has no way out", s.name)
		}
		for _, tr := range append(append([]opTransition{}, s.actions...), s.waits...) {
			if !states[tr.next] {
				t.Errorf("state %s: %s leads to unadvertised state %s", s.name, tr.name, tr.next)
			}
		}
	}
}

func TestAdvertisement1000Validates(t *testing.T) {
	v := newValidator(t)
	r := newTestRSpecs(t, nil)
	doc, err := r.Advertisement(thousandNodes(), false, testNow)
	if err != nil {
		t.Fatal(err)
	}
	v.validate(t, "ad", doc)
	if got := strings.Count(doc, "<available now="); got != 1000 {
		t.Fatalf("%d available elements for 1000 nodes", got)
	}
}
