package store

import (
	"context"
	"encoding/json"

	"github.com/jackc/pgx/v5"

	"github.com/geniam/geniam/am"
)

// Link tags (VXLAN VNIs) live in link_tags (migrations/0008_links.sql): its
// primary key makes a double allocation impossible, a trigger frees a tag
// with the last sliver of its link.

// minLinkTag keeps VNIs above the 802.1Q range, so a tag never reads as a VLAN id.
// Allocate (place in slivers.go) draws a link's tag at random from the 16
// million above it, so one freed a moment ago (whose teardown may still be
// under way on a node) is practically never handed out again at once, and
// geniam_allocate takes it in link_tags or says it is taken.
const minLinkTag = 4096

func interfacesJSON(ifs []am.Interface) []byte {
	if len(ifs) == 0 {
		return []byte("[]")
	}
	b, _ := json.Marshal(ifs)
	return b
}

func parseInterfaces(b []byte) []am.Interface {
	var ifs []am.Interface
	_ = json.Unmarshal(b, &ifs) // hand-edited garbage reads as no interfaces
	return ifs
}

// LinkPeers returns the experiment-network addresses (VTEPs) of the nodes,
// other than node, that hold slivers of the slice on the link. When the
// link spans nodes, each of them (node too) must have an address: one
// without is an error naming it.
func (s *Store) LinkPeers(ctx context.Context, sliceURN, link, node string) ([]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT DISTINCT v.node_name, coalesce(host(n.vtep), '')
		FROM slivers v JOIN nodes n ON n.name = v.node_name, jsonb_array_elements(v.interfaces) i
		WHERE v.slice_urn = $1 AND i->>'link' = $2 ORDER BY 1`, sliceURN, link)
	if err != nil {
		return nil, cleanError("link peers", err)
	}
	type peer struct{ Node, Addr string }
	ps, err := pgx.CollectRows(rows, pgx.RowToStructByPos[peer])
	if err != nil {
		return nil, cleanError("link peers", err)
	}
	if len(ps) < 2 {
		return nil, nil // within one node
	}
	var out []string
	for _, p := range ps {
		if p.Addr == "" {
			return nil, am.Errorf(am.Error, "link %q spans several nodes, but node %s has no experiment network address (nodes.vtep); the operator must set it", link, p.Node)
		}
		if p.Node != node {
			out = append(out, p.Addr)
		}
	}
	return out, nil
}

// SetNodeVTEP sets (or with "" clears) a node's experiment-network address.
func (s *Store) SetNodeVTEP(ctx context.Context, node, addr string) error {
	var a any
	if addr != "" {
		a = addr
	}
	tag, err := s.pool.Exec(ctx, "UPDATE nodes SET vtep = $2::inet WHERE name = $1", node, a)
	if err != nil {
		return am.Wrap(am.BadArgs, err, "node %s: %q is not an IP address", node, addr)
	}
	if tag.RowsAffected() == 0 {
		return am.Errorf(am.SearchFailed, "no node %q", node)
	}
	return nil
}
