package devenv

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// SeedInventory adds the demo nodes when the inventory is empty: two shared
// nodes of four container slots and one node that can also be taken whole.
// Their agents are expected on 127.0.0.2-4:1887 (see docs/nodeagent.md).
func SeedInventory(ctx context.Context, db *pgx.Conn, authority string) error {
	var n int
	if err := db.QueryRow(ctx, "SELECT count(*) FROM nodes").Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return nil
	}
	_, err := db.Exec(ctx, `
INSERT INTO nodes (name, component_urn, agent_url, sliver_types, capacity, country) VALUES
  ('node1', 'urn:publicid:IDN+'||$1||'+node+node1', 'https://127.0.0.2:1887', ARRAY['container'], 4, 'US'),
  ('node2', 'urn:publicid:IDN+'||$1||'+node+node2', 'https://127.0.0.3:1887', ARRAY['container'], 4, 'US'),
  ('node3', 'urn:publicid:IDN+'||$1||'+node+node3', 'https://127.0.0.4:1887', ARRAY['container','exclusive'], 2, 'US')`, authority)
	return err
}
