package store

import "context"

// SeedDemoInventory adds the demo nodes of make run (am/devenv) when the inventory is empty: two shared
// nodes of four container slots and one node that can also be taken whole.
// Their agents are expected on 127.0.0.2-4:1887 (see docs/nodeagent.md).
// With atLeast > 3 it then adds nodes named bench0004... (no agent, 8 slots
// each; bench10000 and on past 9,999) until the inventory holds atLeast
// nodes: a large inventory for `make bench`, which can allocate there but not
// provision.
func (s *Store) SeedDemoInventory(ctx context.Context, authority string, atLeast int) error {
	var n int
	if err := s.pool.QueryRow(ctx, "SELECT count(*) FROM nodes").Scan(&n); err != nil {
		return err
	}
	if n == 0 {
		if _, err := s.pool.Exec(ctx, `
INSERT INTO nodes (name, component_urn, agent_url, sliver_types, capacity, country) VALUES
  ('node1', 'urn:publicid:IDN+'||$1||'+node+node1', 'https://127.0.0.2:1887', ARRAY['container'], 4, 'US'),
  ('node2', 'urn:publicid:IDN+'||$1||'+node+node2', 'https://127.0.0.3:1887', ARRAY['container'], 4, 'US'),
  ('node3', 'urn:publicid:IDN+'||$1||'+node+node3', 'https://127.0.0.4:1887', ARRAY['container','exclusive'], 2, 'US')`, authority); err != nil {
			return err
		}
		n = 3
	}
	if atLeast <= n {
		return nil
	}
	_, err := s.pool.Exec(ctx, `
INSERT INTO nodes (name, component_urn, hardware_type, capacity)
SELECT 'bench' || lpad(i::text, greatest(4, length(i::text)), '0'), 'urn:publicid:IDN+'||$1||'+node+bench' || lpad(i::text, greatest(4, length(i::text)), '0'), 'bench-host', 8
FROM generate_series($2::int, $3::int) AS i
ON CONFLICT DO NOTHING`, authority, n+1, atLeast)
	return err
}
