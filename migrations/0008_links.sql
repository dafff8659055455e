-- Experiment links (issue 17): containers joined by per-link bridges on the
-- nodes, carried between nodes by VXLAN. Every link of a live slice holds a
-- row in link_tags, whose primary key (the VNI) admits one link per tag, so
-- two links can never share a segment; the row goes with the link's last
-- sliver (Delete or expiry), by the trigger below.

ALTER TABLE nodes ADD COLUMN vtep inet;
COMMENT ON COLUMN nodes.vtep IS 'The node''s address on the experiment network (its VXLAN tunnel endpoint); NULL: the node cannot be on a link that spans nodes.';

ALTER TABLE slivers ADD COLUMN interfaces jsonb NOT NULL DEFAULT '[]';
COMMENT ON COLUMN slivers.interfaces IS 'The container''s interfaces on links: [{"client_id","link","link_type","name","mac","ip","prefix","tag","shaping"}].';

CREATE TABLE link_tags (
    tag            integer PRIMARY KEY CHECK (tag BETWEEN 1 AND 16777215),
    slice_urn      text NOT NULL REFERENCES slices(urn),
    link_client_id text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (slice_urn, link_client_id)
);
COMMENT ON TABLE link_tags IS 'VXLAN network identifiers held by the links of live slivers: one link per tag (primary key), one tag per link of a slice.';

-- Frees the tags of the links a deleted sliver was the last one on. The
-- slice row is locked first, so two transactions deleting the last two
-- slivers of a link cannot each see the other's sliver and both keep the tag.
CREATE FUNCTION link_tags_free() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM slices WHERE urn = OLD.slice_urn FOR NO KEY UPDATE;
    DELETE FROM link_tags t
     WHERE t.slice_urn = OLD.slice_urn
       AND t.link_client_id IN (SELECT i->>'link' FROM jsonb_array_elements(OLD.interfaces) i)
       AND NOT EXISTS (SELECT 1 FROM slivers v, jsonb_array_elements(v.interfaces) j
                        WHERE v.slice_urn = OLD.slice_urn AND j->>'link' = t.link_client_id);
    RETURN NULL;
END $$;
CREATE TRIGGER slivers_free_link_tags AFTER DELETE ON slivers
    FOR EACH ROW WHEN (OLD.interfaces <> '[]'::jsonb) EXECUTE FUNCTION link_tags_free();
