package rspec

import (
	"strings"
	"testing"

	"github.com/geniam/geniam/am"
)

// TestSliverLimits: the operator's limits per sliver type are advertised in
// the sliver_type and reported on each manifest node, and both documents
// still validate against the GENI schemas and ours.
func TestSliverLimits(t *testing.T) {
	v := newValidator(t)
	r := newTestRSpecs(t, func(c *Config) {
		c.SliverLimits = map[string]am.SliverLimits{am.SliverTypeContainer: {MemoryBytes: 1 << 30, CPUs: 1.5, Pids: 512, DataBytes: 10 << 30, ArchiveBytes: 1 << 30}}
	})
	const want = `<geniam:sliver_limits memory_bytes="1073741824" cpus="1.5" pids="512" data_bytes="10737418240" archive_bytes="1073741824"/>`
	ad, err := r.Advertisement(testNodes(), false, testNow)
	if err != nil {
		t.Fatal(err)
	}
	v.validate(t, "ad", ad)
	if !strings.Contains(ad, `<sliver_type name="container">`+"\n      "+want) {
		t.Fatalf("the advertisement's container sliver_type lacks %s:\n%s", want, ad)
	}
	if strings.Contains(ad, `<sliver_type name="exclusive">`+"\n      <geniam:sliver_limits") {
		t.Fatal("exclusive slivers advertise limits none were set for")
	}
	parsed, err := r.ParseRequest(req(containerNode("a", "")))
	if err != nil {
		t.Fatal(err)
	}
	m, err := r.Manifest(testSlice, place(r, parsed), testNow)
	if err != nil {
		t.Fatal(err)
	}
	v.validate(t, "manifest", m)
	if !strings.Contains(m, want) {
		t.Fatalf("the manifest lacks %s:\n%s", want, m)
	}
}
