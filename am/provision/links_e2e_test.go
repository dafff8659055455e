package provision_test

import (
	"context"
	"encoding/xml"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/agent"
	"github.com/geniam/geniam/am/agent/expnet"
	"github.com/geniam/geniam/am/agent/expnet/expnettest"
	"github.com/geniam/geniam/am/agent/imagetest"
	"github.com/geniam/geniam/am/provision"
	"github.com/geniam/geniam/rspec"
)

// lanRequest is a request of netprog containers: nodes maps client_id to
// node name; every node has one interface "<client_id>:if0" on a LAN named
// link with the given <property> attributes ("" for none).
func lanRequest(imageURL, digest, link, property string, nodes ...[2]string) string {
	var b strings.Builder
	b.WriteString(`<rspec xmlns="http://www.geni.net/resources/rspec/3" xmlns:geniam="http://geniam.github.io/rspec/ext/geniam/1" type="request">`)
	for _, n := range nodes {
		fmt.Fprintf(&b, `<node client_id=%q component_id="urn:publicid:IDN+geniam.test+node+%s" component_manager_id=%q>`, n[0], n[1], amURN)
		fmt.Fprintf(&b, `<sliver_type name="container"><disk_image name=%q geniam:sha256=%q/></sliver_type>`, imageURL, digest)
		fmt.Fprintf(&b, `<interface client_id="%s:if0"/></node>`, n[0])
	}
	fmt.Fprintf(&b, `<link client_id=%q><component_manager name=%q/>`, link, amURN)
	for _, n := range nodes {
		fmt.Fprintf(&b, `<interface_ref client_id="%s:if0"/>`, n[0])
	}
	b.WriteString(`<link_type name="lan"/>`)
	if property != "" {
		fmt.Fprintf(&b, `<property source_id="%s:if0" dest_id="%s:if0" %s/>`, nodes[0][0], nodes[1][0], property)
	}
	b.WriteString(`</link></rspec>`)
	return b.String()
}

// manifestLAN is what a test needs of a manifest: per node client_id its
// sliver, MAC and IP; per link its VNI.
type manifestLAN struct {
	Nodes []struct {
		ClientID  string `xml:"client_id,attr"`
		SliverID  string `xml:"sliver_id,attr"`
		Interface []struct {
			MAC string `xml:"mac_address,attr"`
			IP  struct {
				Address string `xml:"address,attr"`
			} `xml:"ip"`
		} `xml:"interface"`
	} `xml:"node"`
	Links []struct {
		ClientID string `xml:"client_id,attr"`
		VNI      int    `xml:"http://geniam.github.io/rspec/ext/geniam/1 vni,attr"`
		Refs     []struct {
			ClientID string `xml:"client_id,attr"`
		} `xml:"interface_ref"`
	} `xml:"link"`
}

// lanMember is a container on a LAN, as found from the manifest.
type lanMember struct {
	client, ip, mac, container string
}

func parseLAN(t *testing.T, manifest string) ([]lanMember, int) {
	t.Helper()
	var m manifestLAN
	if err := xml.Unmarshal([]byte(manifest), &m); err != nil {
		t.Fatalf("manifest: %v\n%s", err, manifest)
	}
	var out []lanMember
	for _, n := range m.Nodes {
		if len(n.Interface) != 1 || n.Interface[0].IP.Address == "" || n.Interface[0].MAC == "" {
			t.Fatalf("node %s: the manifest gives no interface with MAC and IP:\n%s", n.ClientID, manifest)
		}
		out = append(out, lanMember{client: n.ClientID, ip: n.Interface[0].IP.Address, mac: n.Interface[0].MAC, container: containerOf(t, n.SliverID)})
	}
	if len(m.Links) != 1 || m.Links[0].VNI == 0 || len(m.Links[0].Refs) != len(m.Nodes) {
		t.Fatalf("the manifest should have one link with a VNI and %d interface_refs:\n%s", len(m.Nodes), manifest)
	}
	return out, m.Links[0].VNI
}

// linkAggregate is the env's aggregate (e.aggregate) with links allowed,
// up to 8 a slice, its RSpecs rs.
func (e *env) linkAggregate(p am.Provisioner, rs *rspec.RSpecs) *am.Aggregate {
	return am.NewAggregate(am.AggregateConfig{URN: amURN, URL: "https://127.0.0.1:8001/", Provisioner: p, MaxLinks: 8}, e.st, e.verifier, rs, nil)
}

// containerOf finds the engine's container of a sliver by its label.
func containerOf(t *testing.T, sliverURN string) string {
	t.Helper()
	out, err := imagetest.Output("ps", "-q", "--filter", "label="+agent.LabelSliver+"="+provision.AgentID(sliverURN))
	if err != nil || len(strings.Fields(out)) != 1 {
		t.Fatalf("container of %s: %v %q", sliverURN, err, out)
	}
	return out
}

func waitLANReach(t *testing.T, ctx context.Context, ms []lanMember, within time.Duration) {
	t.Helper()
	end := time.Now().Add(within)
	for _, a := range ms {
		for _, b := range ms {
			if a == b {
				continue
			}
			for !expnettest.Reach(ctx, a.container, b.container, b.ip) {
				if time.Now().After(end) {
					t.Fatalf("%s cannot reach %s at %s (its manifest address)", a.client, b.client, b.ip)
				}
			}
		}
	}
}

// TestLinksEndToEnd is issue 17's acceptance test through the aggregate:
// two hosts made of network namespaces (each with its agent's experiment
// interface on a shared switch bridge), a three-node LAN across them from a
// request RSpec, containers reaching each other at their manifest
// addresses, a second slice's shaped LAN in the same subnet that cannot
// reach the first, and Delete leaving no device, container or tag behind.
func TestLinksEndToEnd(t *testing.T) {
	needDocker(t)
	if why := expnettest.Why(); why != "" {
		t.Skip("skipping: " + why)
	}
	e := newEnv(t, "127.0.0.2", "127.0.0.3")
	hosts := expnettest.NewHosts(t, 2)
	for i, a := range e.agents {
		n, err := expnet.New(expnet.Config{Interface: hosts[i].Interface, Address: hosts[i].Address, NetNS: hosts[i].NSPath})
		must(t, err)
		t.Cleanup(n.Close)
		a.stop()
		a.cfg.Links = n
		a.start(t)
		must(t, e.st.SetNodeVTEP(e.ctx, a.name, hosts[i].Address))
	}
	im := expnettest.BuildImage(t)
	imgSrv := httptest.NewServer(http.FileServer(http.Dir(filepath.Dir(im.Tar))))
	t.Cleanup(imgSrv.Close)
	imageURL := imgSrv.URL + "/" + filepath.Base(im.Tar)

	p := e.provisioner("links", nil)
	e.runProvisioner(p)
	rs, err := rspec.New(rspec.Config{AMURN: amURN, MaxLinks: 8})
	must(t, err)
	agg := e.linkAggregate(p, rs)
	netem := expnettest.HasNetem()
	checkLinkOffer(t, e, p, agg, netem)

	// Slice 1: a three-node LAN, two containers on node1, one on node2.
	slice1, call1, _ := e.slice("lan1")
	_, err = agg.Allocate(e.ctx, call1, slice1, lanRequest(imageURL, im.SHA256, "lan0", "", [2]string{"a", "node1"}, [2]string{"b", "node1"}, [2]string{"c", "node2"}))
	must(t, err)
	start := time.Now()
	_, err = agg.Provision(e.ctx, call1, []string{slice1})
	must(t, err)
	e.waitStates(agg, call1, slice1, 90*time.Second, "geni_ready", opIs(am.Ready))
	ready := time.Since(start)
	desc, err := agg.Describe(e.ctx, call1, []string{slice1})
	must(t, err)
	lan1, vni1 := parseLAN(t, desc.RSpec)
	waitLANReach(t, e.ctx, lan1, 10*time.Second)
	t.Logf("Provision → geni_ready: %v; → every pair of the three-node LAN reachable at its manifest address: %v",
		ready.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	rtt, err := expnettest.Ping(e.ctx, lan1[0].container, lan1[2].ip, 20)
	must(t, err)
	tput, err := expnettest.Throughput(e.ctx, lan1[0].container, lan1[2].ip, 2)
	must(t, err)
	t.Logf("unshaped LAN across hosts: median UDP round trip %.3f ms, TCP %.0f Mbit/s", rtt, tput)

	// Slice 2: a shaped two-node LAN in the same (aggregate-assigned) subnet.
	property := `capacity="10000"`
	if netem {
		property += ` latency="50"`
	}
	slice2, call2, _ := e.slice("lan2")
	_, err = agg.Allocate(e.ctx, call2, slice2, lanRequest(imageURL, im.SHA256, "lan0", property, [2]string{"x", "node1"}, [2]string{"y", "node2"}))
	must(t, err)
	_, err = agg.Provision(e.ctx, call2, []string{slice2})
	must(t, err)
	e.waitStates(agg, call2, slice2, 90*time.Second, "geni_ready", opIs(am.Ready))
	desc, err = agg.Describe(e.ctx, call2, []string{slice2})
	must(t, err)
	lan2, vni2 := parseLAN(t, desc.RSpec)
	if vni1 == vni2 {
		t.Errorf("both slices' links have VNI %d", vni1)
	}
	waitLANReach(t, e.ctx, lan2, 10*time.Second)
	// The aggregate numbered both LANs alike (10.10.0.1-3 and 10.10.0.1-2):
	// no container of one slice gets an answer from one of the other.
	for _, x := range lan1 {
		for _, y := range lan2 {
			if expnettest.Reach(e.ctx, y.container, x.container, x.ip) || expnettest.Reach(e.ctx, x.container, y.container, y.ip) {
				t.Errorf("slice 2's %s and slice 1's %s reach each other", y.client, x.client)
			}
		}
	}
	tput, err = expnettest.Throughput(e.ctx, lan2[0].container, lan2[1].ip, 4)
	must(t, err)
	rtt, err = expnettest.Ping(e.ctx, lan2[0].container, lan2[1].ip, 20)
	must(t, err)
	t.Logf("shaped LAN (%s): TCP %.2f Mbit/s, median UDP round trip %.3f ms", property, tput, rtt)
	if tput < 9 || tput > 11 {
		t.Errorf("shaped throughput %.2f Mbit/s is not within 10%% of 10 Mbit/s", tput)
	}
	if netem && (rtt < 90 || rtt > 110) {
		t.Errorf("shaped round trip %.1f ms is not within 10%% of 2 x 50 ms", rtt)
	}
	var tags int
	must(t, e.st.Pool().QueryRow(e.ctx, "SELECT count(*) FROM link_tags").Scan(&tags))
	if tags != 2 {
		t.Errorf("%d link tags held, want 2", tags)
	}

	// Delete: every container, interface, bridge, tunnel and tag goes.
	for _, s := range []struct {
		urn  string
		call am.Call
	}{{slice1, call1}, {slice2, call2}} {
		_, err := agg.Delete(e.ctx, s.call, []string{s.urn})
		must(t, err)
	}
	must(t, e.st.Pool().QueryRow(e.ctx, "SELECT count(*) FROM link_tags").Scan(&tags))
	if tags != 0 {
		t.Errorf("%d link tags still held after Delete", tags)
	}
	end := time.Now().Add(30 * time.Second)
	for {
		left := append(hosts[0].Links(t), hosts[1].Links(t)...)
		for _, a := range e.agents {
			left = append(left, engineContainers(t, a.instance)...)
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("30 s after Delete these remain: %v", left)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// checkLinkOffer: once the health poll has read what the real agents
// probed, the advertisement offers latency and packet_loss only where the
// kernel has netem, and without netem Allocate refuses a link with latency,
// naming the property, the node and the kernel option, and holds nothing.
func checkLinkOffer(t *testing.T, e *env, p *provision.Provisioner, agg *am.Aggregate, netem bool) {
	t.Helper()
	p.CheckAgents(e.ctx)
	_, call, _ := e.slice("offer")
	ad, err := agg.ListResources(e.ctx, call)
	must(t, err)
	shaping := `shaping="capacity"`
	if netem {
		shaping = `shaping="capacity latency packet_loss"`
	}
	for _, want := range []string{`<geniam:links link_types="lan" ` + shaping + ` max_per_request="8" transport="vxlan"/>`,
		`<geniam:node_links link_types="lan" ` + shaping + ` transport="vxlan"/>`} {
		if !strings.Contains(ad, want) {
			t.Errorf("the advertisement lacks %s:\n%s", want, ad)
		}
	}
	if strings.Count(ad, "<geniam:node_links") != 2 {
		t.Errorf("want node_links on both nodes:\n%s", ad)
	}
	if netem {
		return // the shaped LAN below measures latency for real
	}
	if strings.Contains(ad, "latency") || strings.Contains(ad, "packet_loss") {
		t.Errorf("this kernel has no netem, but the advertisement offers latency or packet_loss:\n%s", ad)
	}
	slice, call, _ := e.slice("latency")
	_, err = agg.Allocate(e.ctx, call, slice, lanRequest(imageServerURL()+"/demo.tar", imageDigest, "lan0", `latency="50"`, [2]string{"x", "node1"}, [2]string{"y", "node2"}))
	if am.CodeOf(err) != am.Unsupported || !strings.Contains(am.MessageOf(err), `link "lan0": latency needs the kernel's netem qdisc (CONFIG_NET_SCH_NETEM), which node node1's kernel lacks`) {
		t.Errorf("Allocate with latency on a kernel without netem: %v", err)
	}
	var held int
	must(t, e.st.Pool().QueryRow(e.ctx, "SELECT (SELECT count(*) FROM slivers WHERE slice_urn = $1) + (SELECT count(*) FROM link_tags WHERE slice_urn = $1)", slice).Scan(&held))
	if held != 0 {
		t.Errorf("the refused Allocate left %d slivers or tags", held)
	}
}

// waitLinkSupport waits until the health poll has recorded what every
// node's agent supports for links.
func waitLinkSupport(t *testing.T, e *env) {
	t.Helper()
	e.waitCount(20*time.Second, 50*time.Millisecond, "nodes have no link support recorded", zero,
		"SELECT count(*) FROM nodes WHERE link_support IS NULL")
}

// TestLinkSetupFailureFailsSlivers: a link that cannot be set up is refused
// at Allocate when the agent said it cannot (links not enabled), and fails
// its slivers with the reason when the aggregate finds out only at Provision
// (a node without an experiment network address).
func TestLinkSetupFailureFailsSlivers(t *testing.T) {
	needDocker(t)
	e := newEnv(t, "127.0.0.2", "127.0.0.3")
	// One health poll only (at the start), so that nothing rewrites the
	// link support this test sets below.
	p := e.provisioner("linkfail", func(c *provision.Config) { c.HealthInterval = time.Hour })
	e.runProvisioner(p)
	agg := e.linkAggregate(p, e.rs)
	failedWith := func(says string) func(am.SliverStatus) bool {
		return func(s am.SliverStatus) bool { return s.Operational == am.Failed && strings.Contains(s.Error, says) }
	}

	// Within node1, whose agent has no experiment network configured: it
	// says so in its ping, and Allocate refuses.
	waitLinkSupport(t, e)
	slice, call, _ := e.slice("nolinks")
	_, err := agg.Allocate(e.ctx, call, slice, lanRequest(imageServerURL()+"/demo.tar", imageDigest, "lan0", "", [2]string{"a", "node1"}, [2]string{"b", "node1"}))
	if am.CodeOf(err) != am.Unsupported || !strings.Contains(am.MessageOf(err), `link "lan0": node node1's agent does not offer links`) {
		t.Errorf("Allocate of a link on a node whose agent has links off: %v", err)
	}

	// Across nodes, node2 has no address on the experiment network. The
	// agents here have no links; record them as if they had reported VXLAN
	// (the poll rewrites the column only when an agent's report changes).
	for _, n := range []string{"node1", "node2"} {
		must(t, e.st.SetLinkSupport(e.ctx, n, am.LinkSupport{Enabled: true, Capacity: true, VXLAN: true}))
	}
	must(t, e.st.SetNodeVTEP(e.ctx, "node1", "192.0.2.1"))
	slice, call, _ = e.slice("novtep")
	_, err = agg.Allocate(e.ctx, call, slice, lanRequest(imageServerURL()+"/demo.tar", imageDigest, "lan0", "", [2]string{"a", "node1"}, [2]string{"b", "node2"}))
	must(t, err)
	_, err = agg.Provision(e.ctx, call, []string{slice})
	must(t, err)
	e.waitStates(agg, call, slice, 60*time.Second, "failed naming node2", failedWith("node node2 has no experiment network address"))
}
