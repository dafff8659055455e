package provision

import (
	"context"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/agent"
)

// linkAttachments turns a sliver's interfaces into the agent's link
// attachments, with the experiment-network addresses of the other nodes on
// each link read now (an operator may have changed them since Allocate).
func (p *Provisioner) linkAttachments(ctx context.Context, s *am.Sliver) ([]agent.LinkAttachment, error) {
	var out []agent.LinkAttachment
	for _, f := range s.Interfaces {
		peers, err := p.st.LinkPeers(ctx, s.SliceURN, f.Link, s.NodeName)
		if err != nil {
			return nil, err
		}
		out = append(out, agent.LinkAttachment{Link: f.Link, Name: f.Name, MAC: f.MAC, CIDR: f.CIDR(), Tag: f.Tag, Peers: peers,
			CapacityKbps: f.Shaping.CapacityKbps, LatencyMs: f.Shaping.LatencyMs, LossPercent: f.Shaping.LossPercent})
	}
	return out, nil
}
