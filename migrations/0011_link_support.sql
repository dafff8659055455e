-- What each node's agent reported its kernel can do for experiment links
-- (issue 17 follow-up): the advertisement offers, and Allocate accepts, only
-- the link types and shaping a node's kernel supports, instead of a sliver
-- failing at Provision for want of, say, netem.

ALTER TABLE nodes ADD COLUMN link_support jsonb;
COMMENT ON COLUMN nodes.link_support IS 'What the node''s agent last reported it can do for links, probed in its kernel at its start: {"enabled","capacity","netem","vxlan","vlan"}; written by the health poll. NULL: not reported yet (no links are offered on the node).';
