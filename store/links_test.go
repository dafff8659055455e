package store_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/geniam/geniam/am"
)

// linkRSpecs: a request is the JSON of a whole am.Request (slivers and links).
type linkRSpecs struct{ fakeRSpecs }

func (linkRSpecs) ParseRequest(doc string) (*am.Request, error) {
	var r am.Request
	if err := json.Unmarshal([]byte(doc), &r); err != nil {
		return nil, am.Errorf(am.BadArgs, "request RSpec is not well-formed")
	}
	return &r, nil
}

func lanRequest(link string, members ...am.SliverRequest) string {
	r := am.Request{Links: []am.LinkRequest{{ClientID: link, Type: am.LinkTypeLAN}}}
	for _, m := range members {
		m.Interfaces = []am.InterfaceRequest{{ClientID: m.ClientID + ":if0"}}
		r.Slivers = append(r.Slivers, m)
		r.Links[0].Interfaces = append(r.Links[0].Interfaces, m.ClientID+":if0")
	}
	b, _ := json.Marshal(r)
	return string(b)
}

// Link tags: one per link, never two links on one tag (the schema's word),
// freed with the link's last sliver by Delete and by expiry.
func TestLinkTags(t *testing.T) {
	e := newEnv(t)
	e.agg = am.NewAggregate(am.AggregateConfig{URN: amURN, URL: "https://127.0.0.1:8001/", MaxLinks: 4},
		e.store, e.auth, linkRSpecs{}, e.clock.Now)
	e.addNode("node1", 4)
	e.addNode("node2", 4)
	c := e.call(alice, am.Options{})
	sa, sb := sliceURN("a"), sliceURN("b")
	resA, err := e.agg.Allocate(e.ctx, c, sa, lanRequest("lan0", container("x", "node1"), container("y", "node1"), container("z", "node2")))
	if err != nil {
		t.Fatal(err)
	}
	slivers, err := e.store.Slivers(e.ctx, sa, nil)
	if err != nil || len(slivers) != 3 {
		t.Fatalf("slivers %v %v", slivers, err)
	}
	tag := slivers[0].Interfaces[0].Tag
	ips := map[string]bool{}
	for _, s := range slivers {
		f := s.Interfaces
		if len(f) != 1 || f[0].Tag != tag || f[0].Tag < 4096 || f[0].Name != "eth1" || f[0].MAC == "" || f[0].Link != "lan0" {
			t.Fatalf("%s: interfaces %+v", s.ClientID, f)
		}
		ips[f[0].CIDR()] = true
	}
	if !ips["10.10.0.1/24"] || !ips["10.10.0.2/24"] || !ips["10.10.0.3/24"] {
		t.Errorf("assigned addresses %v", ips)
	}
	if _, err := e.agg.Allocate(e.ctx, c, sb, lanRequest("lan0", container("x", "node1"), container("z", "node2"))); err != nil {
		t.Fatal(err)
	}
	if n := e.count("SELECT count(DISTINCT tag) FROM link_tags"); n != 2 {
		t.Errorf("%d tags for two links", n)
	}
	// The same link name again in slice a: refused, nothing half-allocated.
	_, err = e.agg.Allocate(e.ctx, c, sa, lanRequest("lan0", container("p", "node1"), container("q", "node2")))
	wantCode(t, err, am.AlreadyExists, `link "lan0"`)
	if n := e.count("SELECT count(*) FROM slivers WHERE slice_urn = $1", sa); n != 3 {
		t.Errorf("%d slivers in slice a after the refused allocation", n)
	}

	// The schema refuses a second holder of a tag, and tags out of range.
	for _, tc := range []struct{ sql, says string }{
		{"INSERT INTO link_tags (tag, slice_urn, link_client_id) SELECT tag, slice_urn, 'other' FROM link_tags LIMIT 1", "link_tags_pkey"},
		{"INSERT INTO link_tags (tag, slice_urn, link_client_id) VALUES (16777216, '" + sa + "', 'big')", "link_tags_tag_check"},
		{"INSERT INTO link_tags (tag, slice_urn, link_client_id) VALUES (5000, '" + sa + "', 'lan0')", "link_tags_slice_urn_link_client_id_key"},
	} {
		if _, err := e.pool.Exec(e.ctx, tc.sql); err == nil || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s: err = %v, want %q", tc.sql, err, tc.says)
		}
	}

	// Peers: the other nodes' experiment addresses, or which node has none.
	_, err = e.store.LinkPeers(e.ctx, sa, "lan0", "node2")
	wantCode(t, err, am.Error, "node node1 has no experiment network address")
	if err := e.store.SetNodeVTEP(e.ctx, "node1", "192.0.2.1"); err != nil {
		t.Fatal(err)
	}
	_, err = e.store.LinkPeers(e.ctx, sa, "lan0", "node1")
	wantCode(t, err, am.Error, "node node2 has no experiment network address")
	if err := e.store.SetNodeVTEP(e.ctx, "node2", "192.0.2.2"); err != nil {
		t.Fatal(err)
	}
	wantCode(t, e.store.SetNodeVTEP(e.ctx, "node2", "not-an-ip"), am.BadArgs)
	if peers, err := e.store.LinkPeers(e.ctx, sa, "lan0", "node1"); err != nil || len(peers) != 1 || peers[0] != "192.0.2.2" {
		t.Errorf("peers of node1: %v %v", peers, err)
	}

	// Delete of one member keeps the tag; of the last frees it.
	var x string
	for _, s := range resA.Slivers {
		if s.ClientID == "x" {
			x = s.URN
		}
	}
	if _, err := e.agg.Delete(e.ctx, c, []string{x}); err != nil {
		t.Fatal(err)
	}
	if n := e.count("SELECT count(*) FROM link_tags WHERE slice_urn = $1", sa); n != 1 {
		t.Errorf("tag freed while two slivers are still on the link")
	}
	if _, err := e.agg.Delete(e.ctx, c, []string{sa}); err != nil {
		t.Fatal(err)
	}
	if n := e.count("SELECT count(*) FROM link_tags WHERE slice_urn = $1", sa); n != 0 {
		t.Errorf("slice a's tag not freed by Delete")
	}
	// Expiry frees slice b's.
	e.clock.Add(2 * time.Hour)
	if _, err := e.store.Expire(e.ctx, e.clock.Now(), 100); err != nil {
		t.Fatal(err)
	}
	if n := e.count("SELECT count(*) FROM link_tags"); n != 0 {
		t.Errorf("%d tags left after expiry", n)
	}
}
