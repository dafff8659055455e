package rspec

import (
	"fmt"
	"maps"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/amtest"
)

var digest = strings.Repeat("0123456789abcdef", 4)

// req wraps node elements in a request root declaring the namespaces the
// tests use.
func req(body string) string {
	return `<?xml version="1.0" encoding="UTF-8"?>
<rspec xmlns="http://www.geni.net/resources/rspec/3"
       xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
       xmlns:geniam="http://geniam.github.io/rspec/ext/geniam/1"
       xmlns:jacks="http://www.protogeni.net/resources/rspec/ext/jacks/1"
       xsi:schemaLocation="http://www.geni.net/resources/rspec/3 http://www.geni.net/resources/rspec/3/request.xsd"
       type="request">
` + body + "\n</rspec>\n"
}

func containerNode(clientID, extra string) string {
	return fmt.Sprintf(`<node client_id=%q component_manager_id=%q>
  <sliver_type name="container"><disk_image name="https://img.example.org/a.tar" geniam:sha256=%q/></sliver_type>%s
</node>`, clientID, testAMURN, digest, extra)
}

// exampleRequests are the request RSpecs of docs/examples, by file name.
func exampleRequests(t testing.TB) map[string]string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "docs", "examples", "*.xml"))
	if err != nil {
		t.Fatal(err)
	}
	docs := make(map[string]string, len(files))
	for _, f := range files {
		docs[filepath.Base(f)] = string(amtest.ReadFile(t, f))
	}
	return docs
}

func TestParseRequestExamples(t *testing.T) {
	v := newValidator(t)
	r := newTestRSpecs(t, nil)
	examples := exampleRequests(t)
	names := slices.Sorted(maps.Keys(examples))
	if len(names) < 3 {
		t.Fatalf("want at least 3 examples in docs/examples, found %v", names)
	}
	want := map[string][]string{ // file -> client_id:sliver_type:exclusive
		"request-one-container.xml":              {"worker:container:false"},
		"request-three-containers-two-nodes.xml": {"server:container:false", "client1:container:false", "client2:container:false"},
		"request-exclusive-node.xml":             {"bench:exclusive:true"},
		"request-book-node.xml":                  {"field:exclusive:true"},
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			doc := examples[name]
			v.validate(t, "request", doc)
			got, err := r.ParseRequest(doc)
			if err != nil {
				t.Fatal(err)
			}
			var summary []string
			for _, s := range got.Slivers {
				summary = append(summary, fmt.Sprintf("%s:%s:%v", s.ClientID, s.SliverType, s.Exclusive))
				if !isSHA256(s.Image.SHA256) || !strings.HasPrefix(s.Image.URL, "https://") || strings.Contains(s.Image.URL, "#") {
					t.Errorf("%s: image %+v", s.ClientID, s.Image)
				}
			}
			if w, ok := want[name]; ok && fmt.Sprint(summary) != fmt.Sprint(w) {
				t.Errorf("slivers %v, want %v", summary, w)
			}
		})
	}
}

func TestParseRequestFields(t *testing.T) {
	r := newTestRSpecs(t, nil)
	doc := req(`
<node client_id="a" component_id="urn:publicid:IDN+geniam.localhost+node+node1" component_manager_id="` + testAMURN + `" exclusive="1">
  <sliver_type name="container">
    <disk_image name="https://img.example.org/a.tar#sha256=` + strings.ToUpper(digest) + `"/>
  </sliver_type>
  <services>
    <install url="https://f.example.org/s.tgz" install_path="/opt/s"/>
    <execute shell="sh" command="/opt/s/run &amp;&amp; echo &quot;done&quot;"/>
    <execute shell="bash" command="true"/>
    <login authentication="ssh-keys"/>
  </services>
  <interface client_id="a:if0"/>
  <jacks:nodeinfo x="1" y="2"/>
</node>
<node client_id="b">
  <sliver_type name="exclusive"><disk_image name="sha256:` + digest + `" url="https://img.example.org/b.tar"/></sliver_type>
</node>
<node client_id="c" component_manager_id="urn:publicid:IDN+geniam.localhost+authority+cm"/>`)
	got, err := r.ParseRequest(doc)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Slivers) != 3 || len(got.Foreign) != 0 {
		t.Fatalf("got %d slivers, %d foreign", len(got.Slivers), len(got.Foreign))
	}
	a, b, c := got.Slivers[0], got.Slivers[1], got.Slivers[2]
	if a.ClientID != "a" || a.ComponentID != "urn:publicid:IDN+geniam.localhost+node+node1" || !a.Exclusive ||
		a.SliverType != am.SliverTypeContainer || a.Image != (am.Image{URL: "https://img.example.org/a.tar", SHA256: digest}) {
		t.Errorf("a: %+v", a)
	}
	if fmt.Sprint(a.Install) != "[{https://f.example.org/s.tgz /opt/s}]" ||
		fmt.Sprint(a.Execute) != `[{sh /opt/s/run && echo "done"} {bash true}]` {
		t.Errorf("a services: %v %v", a.Install, a.Execute)
	}
	for _, want := range []string{`xmlns="http://www.geni.net/resources/rspec/3"`, `<jacks:nodeinfo`,
		`xmlns:jacks="http://www.protogeni.net/resources/rspec/ext/jacks/1"`, `<interface client_id="a:if0"/>`} {
		if !strings.Contains(a.NodeXML, want) {
			t.Errorf("NodeXML lacks %s:\n%s", want, a.NodeXML)
		}
	}
	if b.SliverType != am.SliverTypeExclusive || !b.Exclusive || b.Image.URL != "https://img.example.org/b.tar" || b.Image.SHA256 != digest {
		t.Errorf("b: %+v", b)
	}
	// No sliver_type: a container with the default image.
	if c.SliverType != am.SliverTypeContainer || c.Image.URL != "https://images.example.org/ubuntu.tar" {
		t.Errorf("c: %+v", c)
	}
}

func TestParseRequestForeign(t *testing.T) {
	r := newTestRSpecs(t, nil)
	doc := req(containerNode("mine", "") + `
<node client_id="theirs" component_manager_id="urn:publicid:IDN+utah.cloudlab.us+authority+cm">
  <sliver_type name="raw-pc"/><jacks:nodeinfo x="3"/>
</node>
<node client_id="bound-elsewhere" component_id="urn:publicid:IDN+utah.cloudlab.us+node+pc1"/>
<link client_id="stitched"><component_manager name="urn:publicid:IDN+utah.cloudlab.us+authority+cm"/></link>
<jacks:site id="x"/>`)
	got, err := r.ParseRequest(doc)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Slivers) != 1 || got.Slivers[0].ClientID != "mine" {
		t.Fatalf("slivers %+v", got.Slivers)
	}
	if len(got.Foreign) != 4 {
		t.Fatalf("foreign %q", got.Foreign)
	}
	for i, want := range []string{`client_id="theirs"`, `client_id="bound-elsewhere"`, `<link xmlns=`, `<jacks:site xmlns:jacks=`} {
		if !strings.Contains(got.Foreign[i], want) {
			t.Errorf("foreign[%d] = %s, want %s", i, got.Foreign[i], want)
		}
	}
}

// The real omni sample asks for gcf's "fake-vm" without an image: refused
// by default, accepted with an alias and a default image.
func TestParseOmniSample(t *testing.T) {
	sample := sharedPath(t, filepath.Join("omni-samples", "request-1node.xml"))
	if sample == "" {
		t.Skip("omni's request-1node.xml not found in $GENIAM_SHARED or a shared folder next to the repository")
	}
	doc := string(amtest.ReadFile(t, sample))
	_, err := newTestRSpecs(t, nil).ParseRequest(doc)
	if am.CodeOf(err) != am.Unsupported || !strings.Contains(am.MessageOf(err), `"fake-vm"`) {
		t.Fatalf("default policy: %v", err)
	}
	r := newTestRSpecs(t, func(c *Config) { c.SliverTypeAliases = map[string]string{"fake-vm": am.SliverTypeContainer} })
	got, err := r.ParseRequest(doc)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Slivers) != 1 || got.Slivers[0].ClientID != "node1" || got.Slivers[0].SliverType != am.SliverTypeContainer ||
		got.Slivers[0].Image.SHA256 != strings.Repeat("ab", 32) {
		t.Fatalf("%+v", got.Slivers)
	}
}

func TestParseRequestRefusals(t *testing.T) {
	r := newTestRSpecs(t, nil)
	noDefault := newTestRSpecs(t, func(c *Config) { c.Images = nil })
	for _, tc := range []struct {
		name string
		r    *RSpecs
		doc  string
		code am.Code
		msg  string
	}{
		{"empty", r, "", am.BadArgs, "empty"},
		{"blank", r, " \n ", am.BadArgs, "empty"},
		{"not xml", r, "this is not xml", am.BadArgs, "not well-formed"},
		{"truncated", r, req(containerNode("a", ""))[:200], am.BadArgs, "not well-formed"},
		{"mismatched tags", r, `<rspec xmlns="http://www.geni.net/resources/rspec/3" type="request"><node></rspec>`, am.BadArgs, "not well-formed"},
		{"undefined entity", r, req(`<node client_id="&foo;"/>`), am.BadArgs, "not well-formed"},
		{"undeclared prefix", r, req(containerNode("a", `<foo:bar/>`)), am.BadArgs, "undeclared namespace prefix"},
		{"not rspec", r, `<html/>`, am.BadArgs, "<html>"},
		{"no namespace", r, `<rspec type="request"><node client_id="a"/></rspec>`, am.BadVersion, "no namespace"},
		{"protogeni v2", r, `<rspec xmlns="http://www.protogeni.net/resources/rspec/2" type="request"/>`, am.BadVersion, "protogeni.net"},
		{"advertisement", r, strings.Replace(req(containerNode("a", "")), `type="request"`, `type="advertisement"`, 1), am.BadArgs, "advertisement"},
		{"manifest", r, strings.Replace(req(containerNode("a", "")), `type="request"`, `type="manifest"`, 1), am.BadArgs, "manifest"},
		{"no type", r, strings.Replace(req(containerNode("a", "")), `type="request"`, ``, 1), am.BadArgs, "type"},
		{"no nodes", r, req(""), am.BadArgs, "no node for this aggregate"},
		{"only foreign nodes", r, req(`<node client_id="x" component_manager_id="urn:publicid:IDN+other+authority+cm"/>`), am.BadArgs, "no node"},
		{"no client_id", r, req(`<node><sliver_type name="container"/></node>`), am.BadArgs, "client_id"},
		{"duplicate client_id", r, req(containerNode("a", "") + containerNode("a", "")), am.BadArgs, `"a"`},
		{"unknown sliver type", r, req(`<node client_id="a"><sliver_type name="raw-pc"/></node>`), am.Unsupported, `"raw-pc"`},
		{"sliver type without name", r, req(`<node client_id="a"><sliver_type/></node>`), am.BadArgs, "no name"},
		{"two sliver types", r, req(`<node client_id="a"><sliver_type name="container"/><sliver_type name="container"/></node>`), am.BadArgs, "sliver_type"},
		{"image without digest", r, req(`<node client_id="a"><sliver_type name="container"><disk_image name="https://i/a.tar"/></sliver_type></node>`), am.BadArgs, "no sha256 digest"},
		{"image bad digest", r, req(`<node client_id="a"><sliver_type name="container"><disk_image name="https://i/a.tar" geniam:sha256="abc"/></sliver_type></node>`), am.BadArgs, "not a sha256"},
		{"image conflicting digests", r, req(`<node client_id="a"><sliver_type name="container"><disk_image name="https://i/a.tar#sha256=` + strings.Repeat("1", 64) + `" geniam:sha256="` + digest + `"/></sliver_type></node>`), am.BadArgs, "two different"},
		{"image bad fragment", r, req(`<node client_id="a"><sliver_type name="container"><disk_image name="https://i/a.tar#md5=x"/></sliver_type></node>`), am.BadArgs, "fragment"},
		{"image urn", r, req(`<node client_id="a"><sliver_type name="container"><disk_image name="urn:publicid:IDN+x+image+y" geniam:sha256="` + digest + `"/></sliver_type></node>`), am.BadArgs, "not the http(s) URL"},
		{"image local path", r, req(`<node client_id="a"><sliver_type name="container"><disk_image name="/srv/a.tar" geniam:sha256="` + digest + `"/></sliver_type></node>`), am.BadArgs, "not the http(s) URL"},
		{"image digest as name", r, req(`<node client_id="a"><sliver_type name="container"><disk_image name="sha256:` + digest + `"/></sliver_type></node>`), am.BadArgs, "is a digest"},
		{"image without name", r, req(`<node client_id="a"><sliver_type name="container"><disk_image/></sliver_type></node>`), am.BadArgs, "no name"},
		{"two images", r, req(`<node client_id="a"><sliver_type name="container"><disk_image name="https://i/a.tar"/><disk_image name="https://i/b.tar"/></sliver_type></node>`), am.BadArgs, "2 disk_image"},
		{"no image, no default", noDefault, req(`<node client_id="a"><sliver_type name="container"/></node>`), am.BadArgs, "no default image"},
		{"bad exclusive", r, req(`<node client_id="a" exclusive="yes"/>`), am.BadArgs, "exclusive"},
		{"bad component_id", r, req(`<node client_id="a" component_id="node1"/>`), am.BadArgs, "component_id"},
		{"component of other authority", r, req(`<node client_id="a" component_manager_id="` + testAMURN + `" component_id="urn:publicid:IDN+other+node+n1"/>`), am.BadArgs, "not a node of this aggregate"},
		{"execute without command", r, req(containerNode("a", `<services><execute shell="sh"/></services>`)), am.BadArgs, "command"},
		{"execute without shell", r, req(containerNode("a", `<services><execute command="x"/></services>`)), am.BadArgs, "shell"},
		{"install without url", r, req(containerNode("a", `<services><install install_path="/x"/></services>`)), am.BadArgs, "url"},
		{"install relative path", r, req(containerNode("a", `<services><install url="https://x/y.tgz" install_path="x"/></services>`)), am.BadArgs, "install_path"},
		{"install ftp", r, req(containerNode("a", `<services><install url="ftp://x/y.tgz" install_path="/x"/></services>`)), am.BadArgs, "not an http(s) URL"},
		{"interface without client_id", r, req(containerNode("a", `<interface/>`)), am.BadArgs, "interface"},
		{"duplicate interface", r, req(containerNode("a", `<interface client_id="i"/>`) + containerNode("b", `<interface client_id="i"/>`)), am.BadArgs, `"i"`},
		{"link", r, req(containerNode("a", "") + `<link client_id="lan0"><component_manager name="` + testAMURN + `"/></link>`), am.BadArgs, `link "lan0" has no interface_ref`},
		{"link without manager", r, req(containerNode("a", "") + `<link client_id="lan0"/>`), am.BadArgs, "no interface_ref"},
		{"unexpected core element", r, req(containerNode("a", "") + `<external_ref component_id="x"/>`), am.BadArgs, "external_ref"},
		{"colon in name", r, req(containerNode("a", `<:x/>`)), am.BadArgs, "not a valid XML name"},
		{"duplicate attribute", r, req(`<node client_id="a" client_id="b"/>`), am.BadArgs, "twice"},
		{"duplicate expanded attribute", r, req(containerNode("a", `<jacks:x xmlns:j2="http://www.protogeni.net/resources/rspec/ext/jacks/1" jacks:y="1" j2:y="2"/>`)), am.BadArgs, "twice"},
		{"empty prefix binding", r, req(containerNode("a", `<x xmlns:p=""/>`)), am.BadArgs, "empty namespace"},
		{"relative namespace", r, req(containerNode("a", `<p:x xmlns:p="rel"/>`)), am.BadArgs, "absolute URI"},
		{"xmlns namespace bound", r, req(containerNode("a", `<p:x xmlns:p="http://www.w3.org/2000/xmlns/"/>`)), am.BadArgs, "reserved"},
		{"doctype", r, `<?xml version="1.0"?><!DOCTYPE rspec><rspec xmlns="http://www.geni.net/resources/rspec/3" type="request"/>`, am.BadArgs, "DOCTYPE"},
		{"billion laughs", r, billionLaughs, am.BadArgs, "DOCTYPE"},
		{"external entity", r, `<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><rspec xmlns="http://www.geni.net/resources/rspec/3" type="request"><node client_id="&x;"/></rspec>`, am.BadArgs, "DOCTYPE"},
		{"second root", r, req(containerNode("a", "")) + "<rspec/>", am.BadArgs, "second root"},
		{"trailing text", r, req(containerNode("a", "")) + "junk", am.BadArgs, "text after"},
		{"latin1", r, `<?xml version="1.0" encoding="ISO-8859-1"?><rspec/>`, am.BadArgs, "not well-formed"},
		{"too deep", r, req(containerNode("a", strings.Repeat("<jacks:x>", 100)+strings.Repeat("</jacks:x>", 100))), am.BadArgs, "deeper"},
		{"too many elements in a node", r, req(containerNode("a", strings.Repeat("<jacks:x/>", 2000))), am.TooBig, "more than 1000"},
		{"too large", r, req(containerNode("a", "<!--"+strings.Repeat("x", DefaultMaxBytes)+"-->")), am.TooBig, "bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.r.ParseRequest(tc.doc)
			if err == nil {
				t.Fatalf("accepted: %+v", got)
			}
			if am.CodeOf(err) != tc.code || !strings.Contains(am.MessageOf(err), tc.msg) {
				t.Fatalf("got %v (code %v), want %v with %q", err, am.CodeOf(err), tc.code, tc.msg)
			}
		})
	}
}

const billionLaughs = `<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol9 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
]>
<rspec xmlns="http://www.geni.net/resources/rspec/3" type="request"><node client_id="&lol9;"/></rspec>`

func TestParseRequestPolicies(t *testing.T) {
	unpinned := newTestRSpecs(t, func(c *Config) { c.AllowUnpinnedImages = true; c.AllowLocalImages = true })
	got, err := unpinned.ParseRequest(req(`<node client_id="a"><sliver_type name="container"><disk_image name="/srv/images/a.tar"/></sliver_type>
<services><install url="/srv/files/x.tgz" install_path="/x"/></services></node>`))
	if err != nil {
		t.Fatal(err)
	}
	if got.Slivers[0].Image != (am.Image{URL: "/srv/images/a.tar"}) {
		t.Errorf("image %+v", got.Slivers[0].Image)
	}
	// A client may write the CM form of our URN.
	r := newTestRSpecs(t, nil)
	got, err = r.ParseRequest(req(`<node client_id="a" component_manager_id="URN:PUBLICID:IDN+GENIAM.LOCALHOST+authority+cm"/>`))
	if err != nil || len(got.Slivers) != 1 {
		t.Fatalf("%v %+v", err, got)
	}
	small := newTestRSpecs(t, func(c *Config) { c.MaxNodes = 2 })
	_, err = small.ParseRequest(req(containerNode("a", "") + containerNode("b", "") + containerNode("c", "")))
	if am.CodeOf(err) != am.TooBig {
		t.Fatalf("MaxNodes: %v", err)
	}
}

// A 100,000-node request is refused after MaxNodes nodes, without reading
// the rest into memory.
func TestParseRequestHugeBoundedMemory(t *testing.T) {
	r := newTestRSpecs(t, nil)
	var b strings.Builder
	b.WriteString(`<rspec xmlns="http://www.geni.net/resources/rspec/3" type="request">`)
	for i := 0; i < 100000; i++ {
		fmt.Fprintf(&b, `<node client_id="n%d"/>`, i)
	}
	b.WriteString(`</rspec>`)
	doc := b.String()
	if len(doc) > DefaultMaxBytes {
		t.Fatalf("test document is %d bytes: it should reach the node limit, not the size limit", len(doc))
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := r.ParseRequest(doc)
	runtime.ReadMemStats(&after)
	if am.CodeOf(err) != am.TooBig || !strings.Contains(am.MessageOf(err), "10000 nodes") {
		t.Fatalf("got %v, want TOOBIG naming the node limit", err)
	}
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("refusing a %d-byte, 100,000-node request allocated %.1f MiB", len(doc), float64(allocated)/(1<<20))
	if allocated > 64<<20 {
		t.Errorf("allocated %d bytes", allocated)
	}

	// Past the size limit nothing is parsed at all.
	b.Reset()
	b.WriteString(`<rspec xmlns="http://www.geni.net/resources/rspec/3" type="request">`)
	for b.Len() <= DefaultMaxBytes {
		b.WriteString(`<node client_id="x"><sliver_type name="container"/></node>`)
	}
	runtime.ReadMemStats(&before)
	_, err = r.ParseRequest(b.String())
	runtime.ReadMemStats(&after)
	if am.CodeOf(err) != am.TooBig {
		t.Fatalf("oversize: %v", err)
	}
	if allocated := after.TotalAlloc - before.TotalAlloc; allocated > 1<<20 {
		t.Errorf("refusing an oversize request allocated %d bytes", allocated)
	}
}

func TestLoginName(t *testing.T) {
	for in, want := range map[string]string{
		"urn:publicid:IDN+ch.geni.net+user+alice":            "alice",
		"urn:publicid:IDN+ch.geni.net+user+Bob.S":            "bobs",
		"urn:publicid:IDN+x+user+007":                        "u007",
		"urn:publicid:IDN+x+user+" + strings.Repeat("a", 40): strings.Repeat("a", 32),
		"":     "geniuser",
		"!!!!": "geniuser",
	} {
		if got := LoginName(in); got != want {
			t.Errorf("LoginName(%q) = %q, want %q", in, got, want)
		}
	}
}
