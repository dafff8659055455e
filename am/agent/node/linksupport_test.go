package node_test

import (
	"context"
	"testing"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/agent"
)

// reportingNet is an experiment network that only reports what it found;
// putting containers on links is expnet's (tested there).
type reportingNet struct{ support am.LinkSupport }

func (reportingNet) Attach(context.Context, string, int, []agent.LinkAttachment) error { return nil }
func (reportingNet) Detach(context.Context, string, []agent.LinkAttachment) error      { return nil }
func (reportingNet) Prune(context.Context) (int, error)                                { return 0, nil }
func (n reportingNet) Support() am.LinkSupport                                         { return n.support }

// The ping says what the node supports for links: nothing without an
// experiment network, else what its probe found.
func TestPingReportsLinkSupport(t *testing.T) {
	ctx := ctxT(t, 30*time.Second)
	a := startAgent(t, testConfig(t))
	info, err := a.client.PingInfo(ctx)
	must(t, err)
	if !info.OK || info.Caller != a.pki.clientURN || info.Links != (am.LinkSupport{}) {
		t.Errorf("ping of an agent without links: %+v", info)
	}
	cfg := testConfig(t)
	want := am.LinkSupport{Enabled: true, Capacity: true, VXLAN: true}
	cfg.Links = reportingNet{want}
	b := startAgent(t, cfg)
	info, err = b.client.PingInfo(ctx)
	must(t, err)
	if info.Links != want {
		t.Errorf("ping reports links %+v, want %+v", info.Links, want)
	}
}
