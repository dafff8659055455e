package rspec

import (
	"encoding/xml"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/geniam/geniam/am"
)

const testSlice = "urn:publicid:IDN+ch.geni.net:proj+slice+myslice"

// place is the test's stand-in for the store's placement: unbound slivers go
// round robin over two nodes.
func place(r *RSpecs, req *am.Request) []am.Sliver {
	var out []am.Sliver
	for i, s := range req.Slivers {
		node := fmt.Sprintf("node%d", i%2+1)
		cid := s.ComponentID
		if cid == "" {
			cid = NodeURN(r.authority, node)
		} else {
			u, _ := am.ParseURN(cid)
			node = u.Name
		}
		out = append(out, am.Sliver{
			URN: fmt.Sprintf("urn:publicid:IDN+geniam.localhost+sliver+%d", 1000+i), SliceURN: testSlice,
			ClientID: s.ClientID, NodeName: node, ComponentID: cid, SliverType: s.SliverType, Exclusive: s.Exclusive,
			Image: s.Image, Execute: s.Execute, Install: s.Install, NodeXML: s.NodeXML,
			Allocation: am.Allocated, Operational: am.PendingAllocation, Expires: testNow.Add(10 * time.Minute),
		})
	}
	return out
}

// manifestDoc is the part of a manifest the tests inspect.
type manifestDoc struct {
	XMLName        xml.Name `xml:"http://www.geni.net/resources/rspec/3 rspec"`
	Type           string   `xml:"type,attr"`
	SchemaLocation string   `xml:"http://www.w3.org/2001/XMLSchema-instance schemaLocation,attr"`
	Nodes          []struct {
		ClientID    string `xml:"client_id,attr"`
		ComponentID string `xml:"component_id,attr"`
		CMID        string `xml:"component_manager_id,attr"`
		SliverID    string `xml:"sliver_id,attr"`
		Exclusive   string `xml:"exclusive,attr"`
		SliverTypes []struct {
			Name   string `xml:"name,attr"`
			Images []struct {
				Name    string `xml:"name,attr"`
				SHA256  string `xml:"http://geniam.github.io/rspec/ext/geniam/1 sha256,attr"`
				ImageID string `xml:"http://geniam.github.io/rspec/ext/geniam/1 image_id,attr"`
			} `xml:"http://www.geni.net/resources/rspec/3 disk_image"`
		} `xml:"http://www.geni.net/resources/rspec/3 sliver_type"`
		Services []struct {
			Logins []struct {
				Authentication string `xml:"authentication,attr"`
				Hostname       string `xml:"hostname,attr"`
				Port           string `xml:"port,attr"`
				Username       string `xml:"username,attr"`
			} `xml:"http://www.geni.net/resources/rspec/3 login"`
			Users []struct {
				Login string   `xml:"login,attr"`
				URN   string   `xml:"user_urn,attr"`
				Keys  []string `xml:"http://www.geni.net/resources/rspec/ext/user/1 public_key"`
			} `xml:"http://www.geni.net/resources/rspec/ext/user/1 services_user"`
			Executes []struct {
				Command string `xml:"command,attr"`
			} `xml:"http://www.geni.net/resources/rspec/3 execute"`
		} `xml:"http://www.geni.net/resources/rspec/3 services"`
		State []struct {
			Allocation  string `xml:"allocation,attr"`
			Operational string `xml:"operational,attr"`
			ExitCode    string `xml:"exit_code,attr"`
			Error       string `xml:"error,attr"`
		} `xml:"http://geniam.github.io/rspec/ext/geniam/1 sliver_state"`
		Log []struct {
			URL string `xml:"url,attr"`
		} `xml:"http://geniam.github.io/rspec/ext/geniam/1 sliver_log"`
		Data []struct {
			URL string `xml:"url,attr"`
		} `xml:"http://geniam.github.io/rspec/ext/geniam/1 sliver_data"`
		NodeInfo []struct {
			X string `xml:"x,attr"`
		} `xml:"http://www.protogeni.net/resources/rspec/ext/jacks/1 nodeinfo"`
	} `xml:"http://www.geni.net/resources/rspec/3 node"`
	Links []struct {
		ClientID string `xml:"client_id,attr"`
	} `xml:"http://www.geni.net/resources/rspec/3 link"`
}

func parseManifest(t testing.TB, doc string) manifestDoc {
	t.Helper()
	m := unmarshalDoc[manifestDoc](t, "manifest", doc)
	if m.Type != "manifest" || !strings.Contains(m.SchemaLocation, am.ManifestSchemaURL) {
		t.Fatalf("type %q schemaLocation %q", m.Type, m.SchemaLocation)
	}
	return m
}

// Request -> placement -> manifest keeps every client_id and maps it to its
// sliver, for every example and for a request with foreign content.
func TestManifestRoundTrip(t *testing.T) {
	v := newValidator(t)
	r := newTestRSpecs(t, nil)
	docs := map[string]string{
		"mixed": req(containerNode("mine", `<interface client_id="mine:if0"/><jacks:nodeinfo x="7"/>
  <services><execute shell="sh" command="echo hi"/><login authentication="ssh-keys" hostname="fake"/></services>`) + `
<node client_id="theirs" component_manager_id="urn:publicid:IDN+utah.cloudlab.us+authority+cm" exclusive="true">
  <sliver_type name="raw-pc"/><jacks:nodeinfo x="3"/>
</node>
<node client_id="bound" component_id="urn:publicid:IDN+geniam.localhost+node+node7" exclusive="false">
  <sliver_type name="exclusive"><disk_image name="https://i.example.org/x.tar#sha256=` + digest + `"/></sliver_type>
</node>
<link client_id="stitched" vlantag="100"><component_manager name="urn:publicid:IDN+utah.cloudlab.us+authority+cm"/></link>
<jacks:site id="s1"/>`),
	}
	maps.Copy(docs, exampleRequests(t))
	for name, doc := range docs {
		t.Run(name, func(t *testing.T) {
			parsed, err := r.ParseRequest(doc)
			if err != nil {
				t.Fatal(err)
			}
			slivers := place(r, parsed)
			out, err := r.ManifestWith(testSlice, slivers, parsed.Foreign, testNow)
			if err != nil {
				t.Fatal(err)
			}
			v.validate(t, "manifest", out)
			m := parseManifest(t, out)
			bySliver := map[string]string{}
			for _, s := range slivers {
				bySliver[s.ClientID] = s.URN
			}
			seen := map[string]bool{}
			for _, n := range m.Nodes {
				seen[n.ClientID] = true
				want, ours := bySliver[n.ClientID]
				if !ours {
					if n.SliverID != "" || n.CMID == testAMURN {
						t.Errorf("foreign node %q was changed: %+v", n.ClientID, n)
					}
					continue
				}
				if n.SliverID != want || n.CMID != testAMURN || n.ComponentID == "" {
					t.Errorf("node %q: sliver_id %q (want %q) component_manager_id %q component_id %q", n.ClientID, n.SliverID, want, n.CMID, n.ComponentID)
				}
				if len(n.SliverTypes) != 1 || len(n.SliverTypes[0].Images) != 1 || !isSHA256(n.SliverTypes[0].Images[0].SHA256) {
					t.Errorf("node %q: sliver_type/disk_image %+v", n.ClientID, n.SliverTypes)
				}
				if len(n.State) != 1 || n.State[0].Allocation != string(am.Allocated) {
					t.Errorf("node %q: state %+v", n.ClientID, n.State)
				}
			}
			for c := range bySliver {
				if !seen[c] {
					t.Errorf("client_id %q missing from the manifest", c)
				}
			}
			for _, c := range []string{"theirs"} {
				if name == "mixed" && !seen[c] {
					t.Errorf("foreign node %q not echoed", c)
				}
			}
			if name == "mixed" {
				for _, n := range m.Nodes {
					switch n.ClientID {
					case "mine":
						if len(n.NodeInfo) != 1 || n.NodeInfo[0].X != "7" || len(n.Services) != 1 ||
							len(n.Services[0].Executes) != 1 || len(n.Services[0].Logins) != 0 {
							t.Errorf("mine lost its extensions or kept the request's login: %+v", n)
						}
					case "bound":
						if n.Exclusive != "true" || n.ComponentID != "urn:publicid:IDN+geniam.localhost+node+node7" ||
							n.SliverTypes[0].Images[0].Name != "https://i.example.org/x.tar" {
							t.Errorf("bound: %+v", n)
						}
					case "theirs":
						if n.Exclusive != "true" || len(n.NodeInfo) != 1 {
							t.Errorf("theirs: %+v", n)
						}
					}
				}
				if len(m.Links) != 1 || !strings.Contains(out, `<jacks:site`) {
					t.Errorf("foreign link or extension not echoed")
				}
			}
		})
	}
}

func TestManifestProvisioned(t *testing.T) {
	v := newValidator(t)
	r := newTestRSpecs(t, nil)
	parsed, err := r.ParseRequest(req(containerNode("a", "") + containerNode("b", "")))
	if err != nil {
		t.Fatal(err)
	}
	slivers := place(r, parsed)
	exit := 3
	slivers[0].Allocation, slivers[0].Operational = am.Provisioned, am.Failed
	slivers[0].ExitCode = &exit
	slivers[0].Error = `start command exited with 3 & said "<no>"`
	slivers[0].ImageID = "sha256:" + digest
	slivers[0].LoginHost, slivers[0].LoginPort, slivers[0].LoginUser = "node1.example.org", 2201, "geni"
	slivers[0].LogURL = "https://am.example.org/log/1000?x=1&y=2"
	slivers[0].DataURL = "https://am.example.org/data/1000.tar"
	slivers[0].Users = []am.User{
		{URN: "urn:publicid:IDN+ch.geni.net+user+alice", Keys: []string{"ssh-ed25519 AAAA alice@laptop", "ssh-rsa BBBB alice@desk"}},
		{URN: "urn:publicid:IDN+ch.geni.net+user+bob", Keys: []string{"ssh-ed25519 CCCC bob"}},
	}
	slivers[1].Users = slivers[0].Users[1:] // users known, no login host yet
	slivers[1].NodeXML = ""                 // a sliver stored without its request node
	out, err := r.Manifest(testSlice, slivers, testNow)
	if err != nil {
		t.Fatal(err)
	}
	v.validate(t, "manifest", out)
	m := parseManifest(t, out)
	a, b := m.Nodes[0], m.Nodes[1]
	if len(a.Services) != 1 || len(a.Services[0].Logins) != 1 {
		t.Fatalf("a services: %+v", a.Services)
	}
	if l := a.Services[0].Logins[0]; l.Authentication != "ssh-keys" || l.Hostname != "node1.example.org" || l.Port != "2201" || l.Username != "geni" {
		t.Errorf("login %+v", l)
	}
	if u := a.Services[0].Users; len(u) != 2 || u[0].Login != "geni" || u[0].URN != "urn:publicid:IDN+ch.geni.net+user+alice" || len(u[0].Keys) != 2 {
		t.Errorf("services_user %+v", u)
	}
	if s := a.State[0]; s.Operational != "geni_failed" || s.ExitCode != "3" || s.Error != `start command exited with 3 & said "<no>"` {
		t.Errorf("state %+v", s)
	}
	if a.Log[0].URL != "https://am.example.org/log/1000?x=1&y=2" || a.Data[0].URL != "https://am.example.org/data/1000.tar" {
		t.Errorf("log %+v data %+v", a.Log, a.Data)
	}
	if a.SliverTypes[0].Images[0].ImageID != "sha256:"+digest {
		t.Errorf("image id %+v", a.SliverTypes[0].Images)
	}
	if b.ClientID != "b" || len(b.Services) != 1 || len(b.Services[0].Logins) != 0 || b.Services[0].Users[0].Login != "bob" {
		t.Errorf("b: %+v", b)
	}
}

func TestManifestEmptySlice(t *testing.T) {
	v := newValidator(t)
	r := newTestRSpecs(t, nil)
	for _, slice := range []string{testSlice, ""} {
		out, err := r.Manifest(slice, nil, testNow)
		if err != nil {
			t.Fatal(err)
		}
		v.validate(t, "manifest", out)
		if m := parseManifest(t, out); len(m.Nodes) != 0 {
			t.Fatalf("nodes in an empty manifest")
		}
	}
}

// A request may bind our reserved prefixes to other namespaces; the echoed
// node must not change meaning, and our elements must stay ours.
func TestManifestPrefixRebinding(t *testing.T) {
	v := newValidator(t)
	r := newTestRSpecs(t, nil)
	doc := `<rspec xmlns="http://www.geni.net/resources/rspec/3" xmlns:real="http://geniam.github.io/rspec/ext/geniam/1"
  xmlns:geniam="http://example.org/not-geniam" xmlns:ssh-user="http://example.org/not-user" xmlns:ns1="http://example.org/one" type="request">
  <node client_id="a">
    <sliver_type name="container"><disk_image name="https://i.example.org/a.tar" real:sha256="` + digest + `"/></sliver_type>
    <geniam:thing geniam:attr="1" ns1:y="2"><ssh-user:other/></geniam:thing>
    <x:deep xmlns:x="http://example.org/deep" xmlns="http://example.org/default-elsewhere"><inner/></x:deep>
  </node>
</rspec>`
	parsed, err := r.ParseRequest(doc)
	if err != nil {
		t.Fatal(err)
	}
	if parsed.Slivers[0].Image.SHA256 != digest {
		t.Fatalf("digest under another prefix not read: %+v", parsed.Slivers[0].Image)
	}
	out, err := r.Manifest(testSlice, place(r, parsed), testNow)
	if err != nil {
		t.Fatal(err)
	}
	v.validate(t, "manifest", out)
	// Re-read the echoed node: the foreign elements keep their namespaces.
	node, _, err := parseElement(out[strings.Index(out, "<node"):strings.LastIndex(out, "</node>")+len("</node>")], storedLimits)
	if err == nil {
		t.Fatal("the node alone should lack the root's declarations")
	}
	root, _, err := parseElement(out, storedLimits)
	if err != nil {
		t.Fatal(err)
	}
	_ = node
	var found []string
	var walk func(e *element)
	walk = func(e *element) {
		found = append(found, e.Space+" "+e.Local)
		for _, c := range e.elements() {
			walk(c)
		}
	}
	walk(root)
	all := strings.Join(found, "\n")
	for _, want := range []string{
		"http://example.org/not-geniam thing", "http://example.org/not-user other",
		"http://example.org/deep deep", "http://example.org/default-elsewhere inner",
		am.GeniamNamespace + " sliver_state",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("manifest lacks element %q:\n%s", want, out)
		}
	}
}

func TestManifestBadStoredNode(t *testing.T) {
	r := newTestRSpecs(t, nil)
	for _, nodeXML := range []string{"<node", "<link/>", "not xml"} {
		_, err := r.Manifest(testSlice, []am.Sliver{{URN: "urn:x", NodeXML: nodeXML}}, testNow)
		if am.CodeOf(err) != am.ServerError {
			t.Errorf("NodeXML %q: %v", nodeXML, err)
		}
	}
}

// A slice with nothing here gets a manifest without children: omni's
// acceptance tests (rspec_util.has_child) read any child as "not empty".
func TestManifestOfNothingHasNoChild(t *testing.T) {
	r := newTestRSpecs(t, nil)
	doc, err := r.Manifest("urn:publicid:IDN+geniam.localhost+slice+empty", nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(strings.NewReader(doc))
	depth, children := 0, 0
	for {
		tok, err := dec.Token()
		if err != nil {
			break
		}
		switch tok.(type) {
		case xml.StartElement:
			if depth == 1 {
				children++
			}
			depth++
		case xml.EndElement:
			depth--
		}
	}
	if children != 0 {
		t.Fatalf("empty manifest has %d child elements:\n%s", children, doc)
	}
}
