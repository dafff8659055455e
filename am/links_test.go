package am

import (
	"strings"
	"testing"
)

func TestCheckLinks(t *testing.T) {
	node := func(id string, ifs ...InterfaceRequest) SliverRequest {
		return SliverRequest{ClientID: id, Interfaces: ifs}
	}
	ifc := func(id, ip string, prefix int) InterfaceRequest {
		return InterfaceRequest{ClientID: id, IP: ip, Prefix: prefix}
	}
	reqs := []SliverRequest{
		node("a", ifc("a:0", "", 0), ifc("a:1", "192.168.5.1", 24)),
		node("b", ifc("b:0", "", 0), ifc("b:1", "192.168.5.2", 24)),
		node("c", ifc("c:0", "192.168.6.9", 24)),
	}
	lan := func(id string, refs ...string) LinkRequest { return LinkRequest{ClientID: id, Interfaces: refs} }

	got, err := checkLinks(reqs, []LinkRequest{lan("lan0", "a:0", "b:0"), lan("p2p", "a:1", "b:1")}, 8)
	if err != nil {
		t.Fatal(err)
	}
	a, b := got[0], got[1]
	if len(a) != 2 || a[0].Name != "eth1" || a[1].Name != "eth2" || a[0].CIDR() != "10.10.0.1/24" || b[0].CIDR() != "10.10.0.2/24" ||
		a[1].CIDR() != "192.168.5.1/24" || a[1].Link != "p2p" || len(got[2]) != 0 {
		t.Errorf("interfaces: %+v", got)
	}

	for _, tc := range []struct {
		name  string
		links []LinkRequest
		max   int
		code  Code
		says  string
	}{
		{"links off", []LinkRequest{lan("l", "a:0", "b:0")}, 0, Unsupported, "not offered"},
		{"too many", []LinkRequest{lan("l", "a:0", "b:0"), lan("m", "a:1", "b:1")}, 1, TooBig, "at most 1"},
		{"one end", []LinkRequest{lan("l", "a:0")}, 8, BadArgs, "at least two"},
		{"unknown ref", []LinkRequest{lan("l", "a:0", "zz")}, 8, BadArgs, `"zz"`},
		{"interface twice", []LinkRequest{lan("l", "a:0", "b:0"), lan("m", "a:0", "c:0")}, 8, BadArgs, "on two links"},
		{"same link id", []LinkRequest{lan("l", "a:0", "b:0"), lan("l", "a:1", "b:1")}, 8, BadArgs, "two links"},
		{"type", []LinkRequest{{ClientID: "l", Type: "gre-tunnel", Interfaces: []string{"a:0", "b:0"}}}, 8, Unsupported, "gre-tunnel"},
		{"subnets differ", []LinkRequest{lan("l", "a:1", "c:0")}, 8, BadArgs, "not in the link's subnet"},
		{"shaping range", []LinkRequest{{ClientID: "l", Interfaces: []string{"a:0", "b:0"}, Shaping: Shaping{LatencyMs: -1}}}, 8, BadArgs, "out of range"},
	} {
		_, err := checkLinks(reqs, tc.links, tc.max)
		if CodeOf(err) != tc.code || !strings.Contains(MessageOf(err), tc.says) {
			t.Errorf("%s: %v, want %v naming %q", tc.name, err, tc.code, tc.says)
		}
	}
}

func TestLinkMACAndAddresses(t *testing.T) {
	m := LinkMAC("urn:x+sliver+1", "a:0")
	if m != LinkMAC("urn:x+sliver+1", "a:0") || m == LinkMAC("urn:x+sliver+2", "a:0") || len(m) != 17 {
		t.Errorf("MAC %q not stable or not distinct", m)
	}
	if m[1] != '2' && m[1] != '6' && m[1] != 'a' && m[1] != 'e' {
		t.Errorf("MAC %q is not locally administered unicast", m)
	}
	for _, tc := range []struct {
		addr, mask, ip string
		prefix         int
		ok             bool
	}{
		{"10.0.0.1", "255.255.255.0", "10.0.0.1", 24, true},
		{"10.0.0.1", "", "10.0.0.1", 24, true},
		{"10.0.0.1", "255.255.0.0", "10.0.0.1", 16, true},
		{"10.0.0.1", "255.0.255.0", "", 0, false},
		{"fe80::1", "", "", 0, false},
		{"10.0.0.1", "255.255.255.255", "", 0, false},
		{"127.0.0.2", "", "", 0, false},
		{"224.0.0.1", "", "", 0, false},
		{"0.0.0.0", "", "", 0, false},
	} {
		ip, p, err := ValidIPv4(tc.addr, tc.mask)
		if (err == nil) != tc.ok || ip != tc.ip || p != tc.prefix {
			t.Errorf("%s/%s: %s %d %v", tc.addr, tc.mask, ip, p, err)
		}
	}
}
