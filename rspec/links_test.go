package rspec

import (
	"strings"
	"testing"
	"time"

	"github.com/geniam/geniam/am"
)

func TestParseLinks(t *testing.T) {
	r := newTestRSpecs(t, nil)
	doc := exampleRequests(t)["request-lan-three-containers.xml"]
	// The example names geniam.localhost; the tests' AM is testAMURN.
	got, err := r.ParseRequest(strings.ReplaceAll(doc, "urn:publicid:IDN+geniam.localhost+authority+am", testAMURN))
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Links) != 2 || len(got.Foreign) != 0 {
		t.Fatalf("links %+v foreign %v", got.Links, got.Foreign)
	}
	lan, slow := got.Links[0], got.Links[1]
	if lan.ClientID != "lan0" || lan.Type != "lan" || strings.Join(lan.Interfaces, ",") != "server:if0,client1:if0,client2:if0" || !lan.Shaping.IsZero() {
		t.Errorf("lan0: %+v", lan)
	}
	if slow.Shaping != (am.Shaping{CapacityKbps: 10000, LatencyMs: 50, LossPercent: 1}) {
		t.Errorf("slow: %+v", slow.Shaping)
	}
	if f := got.Slivers[0].Interfaces; len(f) != 2 || f[0].IP != "" || f[1].IP != "192.168.10.1" || f[1].Prefix != 24 {
		t.Errorf("server interfaces %+v", f)
	}

	ours := func(id string) string { return containerNode(id, `<interface client_id="`+id+`:0"/>`) }
	for _, tc := range []struct {
		name, body string
		code       am.Code
		says       string
	}{
		{"stitching by interface", ours("a") + `<link client_id="l"><interface_ref client_id="a:0"/><interface_ref client_id="elsewhere"/></link>`, am.Unsupported, "stitching"},
		{"stitching by manager", ours("a") + ours("b") + `<link client_id="l"><component_manager name="` + testAMURN + `"/><component_manager name="urn:publicid:IDN+other+authority+am"/><interface_ref client_id="a:0"/><interface_ref client_id="b:0"/></link>`, am.Unsupported, "stitching"},
		{"direction-dependent", ours("a") + ours("b") + `<link client_id="l"><interface_ref client_id="a:0"/><interface_ref client_id="b:0"/><property source_id="a:0" dest_id="b:0" capacity="100"/><property source_id="b:0" dest_id="a:0" capacity="200"/></link>`, am.Unsupported, "direction"},
		{"bad capacity", ours("a") + ours("b") + `<link client_id="l"><interface_ref client_id="a:0"/><interface_ref client_id="b:0"/><property capacity="fast"/></link>`, am.BadArgs, "capacity"},
		{"bad loss", ours("a") + ours("b") + `<link client_id="l"><interface_ref client_id="a:0"/><interface_ref client_id="b:0"/><property packet_loss="2"/></link>`, am.BadArgs, "packet_loss"},
		{"bad ip", containerNode("a", `<interface client_id="a:0"><ip address="10.0.0.300"/></interface>`), am.BadArgs, "IPv4"},
		{"ipv6", containerNode("a", `<interface client_id="a:0"><ip address="fe80::1" type="ipv6"/></interface>`), am.Unsupported, "ipv6"},
		{"no refs", ours("a") + `<link client_id="l"/>`, am.BadArgs, "no interface_ref"},
	} {
		_, err := r.ParseRequest(req(tc.body))
		if am.CodeOf(err) != tc.code || !strings.Contains(am.MessageOf(err), tc.says) {
			t.Errorf("%s: %v, want %v naming %q", tc.name, err, tc.code, tc.says)
		}
	}
	// A link among other aggregates' interfaces only is theirs: echoed.
	got, err = r.ParseRequest(req(ours("a") + `<link client_id="theirs"><interface_ref client_id="x:0"/><interface_ref client_id="y:0"/></link>`))
	if err != nil || len(got.Links) != 0 || len(got.Foreign) != 1 {
		t.Errorf("foreign link: %+v %v", got, err)
	}
}

func TestManifestLinks(t *testing.T) {
	r := newTestRSpecs(t, nil)
	sh := am.Shaping{CapacityKbps: 10000, LatencyMs: 50, LossPercent: 1}
	mk := func(client string, ip string) am.Sliver {
		urn := "urn:publicid:IDN+geniam.test+sliver+" + client
		return am.Sliver{URN: urn, SliceURN: "urn:publicid:IDN+ch.test+slice+s", ClientID: client, NodeName: "node1", SliverType: am.SliverTypeContainer,
			Allocation: am.Allocated, Operational: am.PendingAllocation, Expires: time.Now(),
			NodeXML: `<node xmlns="http://www.geni.net/resources/rspec/3" client_id="` + client + `"><interface client_id="` + client + `:0"/></node>`,
			Interfaces: []am.Interface{{ClientID: client + ":0", Link: "lan0", LinkType: am.LinkTypeLAN, Name: "eth1",
				MAC: am.LinkMAC(urn, client+":0"), IP: ip, Prefix: 24, Tag: 70000, Shaping: sh}}}
	}
	out, err := r.Manifest("urn:publicid:IDN+ch.test+slice+s", []am.Sliver{mk("a", "10.10.0.1"), mk("b", "10.10.0.2")}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`mac_address="` + am.LinkMAC("urn:publicid:IDN+geniam.test+sliver+a", "a:0") + `"`,
		`<ip address="10.10.0.2" netmask="255.255.255.0" type="ipv4"/>`, `geniam:ifname="eth1"`,
		`<link client_id="lan0" vlantag="70000" geniam:vni="70000">`, `<interface_ref client_id="b:0"`, `<link_type name="lan"/>`,
		`source_id="a:0" dest_id="b:0" capacity="10000" latency="50" packet_loss="0.01"`} {
		if !strings.Contains(out, want) {
			t.Errorf("manifest lacks %s:\n%s", want, out)
		}
	}
	if strings.Count(out, "<link ") != 1 || strings.Count(out, "<link_type") != 1 {
		t.Errorf("one link with one link_type expected:\n%s", out)
	}
	newValidator(t).validate(t, "manifest", out)
}

func TestAdvertisementLinks(t *testing.T) {
	// What the agents reported: one node without netem (this project's
	// test machine), one with everything, one that has not reported, one
	// with links off.
	nodes := []am.Node{
		{Name: "nonetem", SliverTypes: []string{am.SliverTypeContainer}, Capacity: 2, Available: true,
			Links: &am.LinkSupport{Enabled: true, Capacity: true, VXLAN: true}},
		{Name: "full", SliverTypes: []string{am.SliverTypeContainer}, Capacity: 2, Available: true,
			Links: &am.LinkSupport{Enabled: true, Capacity: true, Netem: true, VXLAN: true, VLAN: true}},
		{Name: "silent", SliverTypes: []string{am.SliverTypeContainer}, Capacity: 2, Available: true},
		{Name: "off", SliverTypes: []string{am.SliverTypeContainer}, Capacity: 2, Available: true, Links: &am.LinkSupport{Capacity: true, Netem: true}},
	}
	without, err := newTestRSpecs(t, nil).Advertisement(nodes, false, time.Now())
	if err != nil || strings.Contains(without, "geniam:links") || strings.Contains(without, "geniam:node_links") {
		t.Errorf("links advertised while off: %v\n%s", err, without)
	}
	r := newTestRSpecs(t, func(c *Config) { c.MaxLinks = 64 })
	cases := []struct {
		name  string
		nodes []am.Node
		want  []string // in this order
		not   []string
	}{
		{"no netem", nodes[:1], []string{
			`<geniam:links link_types="lan" shaping="capacity" max_per_request="64" transport="vxlan"/>`,
			`component_name="nonetem"`, `<geniam:node_links link_types="lan" shaping="capacity" transport="vxlan"/>`,
		}, []string{"latency", "packet_loss"}},
		{"mixed", nodes, []string{
			`<geniam:links link_types="lan" shaping="capacity latency packet_loss" max_per_request="64" transport="vxlan"/>`,
			`component_name="nonetem"`, `<geniam:node_links link_types="lan" shaping="capacity" transport="vxlan"/>`,
			`component_name="full"`, `<geniam:node_links link_types="lan" shaping="capacity latency packet_loss" transport="vxlan"/>`,
			`component_name="silent"`, `component_name="off"`,
		}, nil},
		{"none reported", nodes[2:], nil, []string{"geniam:links", "geniam:node_links"}},
		{"within a node, unshaped", []am.Node{{Name: "n", SliverTypes: []string{am.SliverTypeContainer}, Capacity: 1, Available: true,
			Links: &am.LinkSupport{Enabled: true}}}, []string{
			`<geniam:links link_types="lan" max_per_request="64"/>`, `<geniam:node_links link_types="lan"/>`,
		}, nil},
	}
	for _, tc := range cases {
		ad, err := r.Advertisement(tc.nodes, false, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		rest := ad
		for _, w := range tc.want {
			i := strings.Index(rest, w)
			if i < 0 {
				t.Errorf("%s: ad lacks (in order) %s:\n%s", tc.name, w, ad)
				break
			}
			rest = rest[i+len(w):]
		}
		for _, w := range tc.not {
			if strings.Contains(ad, w) {
				t.Errorf("%s: ad has %s:\n%s", tc.name, w, ad)
			}
		}
		if tc.name == "mixed" && strings.Count(ad, "geniam:node_links") != 2 {
			t.Errorf("mixed: node_links on the nodes that did not report links or have them off:\n%s", ad)
		}
		newValidator(t).validate(t, "ad", ad)
	}
}
