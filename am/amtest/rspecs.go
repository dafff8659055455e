package amtest

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/geniam/geniam/am"
)

// RSpecs is a fake am.RSpecs: a request is the JSON of []am.SliverRequest
// (Request builds one); the advertisement and the manifest list names,
// enough to check what the aggregate passed. The rspec package has the real
// XML and its own tests.
type RSpecs struct{}

// Advertisement lists the nodes with their free slots.
func (RSpecs) Advertisement(nodes []am.Node, availableOnly bool, now time.Time) (string, error) {
	var b strings.Builder
	b.WriteString("<rspec type=\"advertisement\">")
	for _, n := range nodes {
		if availableOnly && n.Free() == 0 {
			continue
		}
		fmt.Fprintf(&b, "<node component_id=%q free=\"%d\"/>", n.ComponentID, n.Free())
	}
	return b.String() + "</rspec>", nil
}

// ParseRequest reads what Request wrote.
func (RSpecs) ParseRequest(doc string) (*am.Request, error) {
	var r am.Request
	if err := json.Unmarshal([]byte(doc), &r.Slivers); err != nil {
		return nil, am.Errorf(am.BadArgs, "request RSpec is not well-formed")
	}
	return &r, nil
}

// Manifest lists the slivers.
func (RSpecs) Manifest(slice string, slivers []am.Sliver, now time.Time) (string, error) {
	var b strings.Builder
	b.WriteString("<rspec type=\"manifest\">")
	for _, s := range slivers {
		fmt.Fprintf(&b, "<node client_id=%q component_id=%q sliver_id=%q/>", s.ClientID, s.ComponentID, s.URN)
	}
	return b.String() + "</rspec>", nil
}

// Request is the request RSpecs.ParseRequest reads.
func Request(reqs ...am.SliverRequest) string {
	b, _ := json.Marshal(reqs)
	return string(b)
}

// Authority is the authority of the test aggregate's URNs.
const Authority = "geniam.test"

// NodeURN is the component URN of a test node.
func NodeURN(name string) string {
	return am.URN{Authority: Authority, Type: "node", Name: name}.String()
}

// SliceURN is a slice URN of a test project.
func SliceURN(name string) string {
	return am.URN{Authority: "ch.test:proj", Type: "slice", Name: name}.String()
}

// Container is a request for a container sliver, bound to node unless "".
func Container(clientID, node string) am.SliverRequest {
	r := am.SliverRequest{ClientID: clientID, SliverType: am.SliverTypeContainer,
		Image:   am.Image{URL: "http://127.0.0.1/img.tar", SHA256: strings.Repeat("ab", 32)},
		Execute: []am.Execute{{Shell: "sh", Command: "echo hi"}}}
	if node != "" {
		r.ComponentID = NodeURN(node)
	}
	return r
}

// Exclusive is a request for a whole node.
func Exclusive(clientID, node string) am.SliverRequest {
	r := Container(clientID, node)
	r.SliverType, r.Exclusive = am.SliverTypeExclusive, true
	return r
}

// Clock is a settable test clock.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock starts at t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

// Now reads the clock.
func (c *Clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

// Add moves the clock on.
func (c *Clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}
