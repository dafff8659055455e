package rspec

import (
	"fmt"
	"testing"

	"github.com/geniam/geniam/am"
)

func thousandNodes() []am.Node {
	nodes := make([]am.Node, 1000)
	for i := range nodes {
		nodes[i] = am.Node{
			Name: fmt.Sprintf("node%04d", i), HardwareType: "docker-host",
			SliverTypes: []string{am.SliverTypeContainer, am.SliverTypeExclusive},
			Capacity:    8, Used: i % 9, Available: i%17 != 0, Reason: "maintenance",
			Location: &am.Location{Country: "DE", Latitude: 52.5, Longitude: 13.4},
		}
	}
	return nodes
}

// BenchmarkAdvertisement1000 renders an advertisement of 1,000 nodes (the
// aggregate's cache, am/adcache.go, serves it between inventory changes).
func BenchmarkAdvertisement1000(b *testing.B) {
	r := newTestRSpecs(b, nil)
	nodes := thousandNodes()
	b.Run("cold", func(b *testing.B) {
		b.ReportAllocs()
		var size int
		for b.Loop() {
			doc, err := r.Advertisement(nodes, false, testNow)
			if err != nil {
				b.Fatal(err)
			}
			size = len(doc)
		}
		b.ReportMetric(float64(size), "bytes/doc")
	})
	b.Run("cold-available-only", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := r.Advertisement(nodes, true, testNow); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// request100 is a request of 100 container nodes, each with an execute.
func request100() string {
	body := ""
	for i := 0; i < 100; i++ {
		body += containerNode(fmt.Sprintf("n%d", i), `<services><execute shell="sh" command="run"/></services>`)
	}
	return req(body)
}

func BenchmarkParseRequest100(b *testing.B) {
	r := newTestRSpecs(b, nil)
	doc := request100()
	b.ReportAllocs()
	b.SetBytes(int64(len(doc)))
	for b.Loop() {
		if _, err := r.ParseRequest(doc); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkManifest100(b *testing.B) {
	r := newTestRSpecs(b, nil)
	parsed, err := r.ParseRequest(request100())
	if err != nil {
		b.Fatal(err)
	}
	slivers := place(r, parsed)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Manifest(testSlice, slivers, testNow); err != nil {
			b.Fatal(err)
		}
	}
}
