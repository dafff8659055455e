package main

import (
	"os"
	"strings"
	"testing"

	"github.com/beevik/etree"
)

func TestReplicateNodes(t *testing.T) {
	gcf, err := os.ReadFile("testdata/request-1node.xml")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name    string
		request string
		n       int
		ids     []string
	}{
		{"default, one", defaultRequest, 1, []string{"bench"}},
		{"default, three", defaultRequest, 3, []string{"bench", "bench-2", "bench-3"}},
		{"gcf fake-vm, two", string(gcf), 2, []string{"node1", "node1-2"}},
		{"two nodes to five", `<rspec type="request"><node client_id="a"><interface client_id="a:if0"/></node><node client_id="b"/><link client_id="l"/></rspec>`,
			5, []string{"a", "b", "a-3", "b-4", "a-5"}},
		{"enough already", `<rspec><node client_id="a"/><node client_id="b"/></rspec>`, 1, []string{"a", "b"}},
	} {
		out, err := replicateNodes(c.request, c.n)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		doc := etree.NewDocument()
		if err := doc.ReadFromString(out); err != nil {
			t.Fatalf("%s: output does not parse: %v", c.name, err)
		}
		var ids []string
		for _, n := range doc.Root().SelectElements("node") {
			ids = append(ids, n.SelectAttrValue("client_id", ""))
			if len(ids) > 2 && len(n.SelectElements("interface")) > 0 {
				t.Errorf("%s: a copy kept an interface", c.name)
			}
		}
		if strings.Join(ids, ",") != strings.Join(c.ids, ",") {
			t.Errorf("%s: client_ids %v, want %v", c.name, ids, c.ids)
		}
		if c.n == 3 && !strings.Contains(out, `geniam:sha256="3b5d5c`) {
			t.Errorf("%s: copies lost the image digest:\n%s", c.name, out)
		}
	}
}

func TestReplicateNodesRefuses(t *testing.T) {
	for _, c := range []struct {
		request string
		n       int
		want    string
	}{
		{defaultRequest, 0, "out of range"},
		{defaultRequest, maxSlivers + 1, "out of range"},
		{"", 2, "request RSpec"},
		{"<rspec>", 2, "request RSpec"},
		{"<other/>", 2, "not <rspec>"},
		{`<rspec type="request"/>`, 2, "no <node>"},
		{`<!DOCTYPE x [<!ENTITY a "aaaa">]><rspec><node>&a;</node></rspec>`, 2, ""}, // any outcome but a panic
	} {
		_, err := replicateNodes(c.request, c.n)
		if err == nil && c.want != "" || err != nil && !strings.Contains(err.Error(), c.want) {
			t.Errorf("replicateNodes(%.40q, %d) = %v, want %q", c.request, c.n, err, c.want)
		}
	}
}

func FuzzReplicateNodes(f *testing.F) {
	gcf, _ := os.ReadFile("testdata/request-1node.xml")
	f.Add(defaultRequest, 3)
	f.Add(string(gcf), 2)
	f.Add(`<rspec><node client_id="a"/></rspec>`, 1000)
	f.Fuzz(func(t *testing.T, request string, n int) {
		if n > 50 {
			n = n%50 + 1 // the bound is tested above; keep each input cheap
		}
		out, err := replicateNodes(request, n)
		if err != nil {
			return
		}
		doc := etree.NewDocument()
		if err := doc.ReadFromString(out); err != nil {
			t.Fatalf("output does not parse: %v", err)
		}
		if got := len(doc.Root().SelectElements("node")); got < n {
			t.Fatalf("%d nodes, want at least %d", got, n)
		}
	})
}
