-- geniam_delete is the whole of a Delete as one statement: it locks the slice
-- row shared (a concurrent Shutdown is before or after it), refuses a
-- shut-down slice unless p_operator (GN002), and deletes the named slivers
-- (p_urns NULL: every live sliver of the slice), returning them as they were
-- (the columns of store.sliverColumns up to starts_at). A named sliver that
-- is not a live sliver of the slice raises GN004 (DETAIL: its URN) and
-- deletes nothing. An unknown slice has nothing to delete. Slots go with
-- their slivers (ON DELETE CASCADE); history, ended_slivers rows and teardown
-- jobs come from the triggers. Called by store.Delete (store/slivers.go).
CREATE OR REPLACE FUNCTION geniam_delete(p_actor text, p_slice text, p_urns text[], p_operator boolean)
RETURNS TABLE (urn text, slice_urn text, client_id text, node_name text, component_urn text, sliver_type text,
    image_url text, image_sha256 text, image_id text, execute jsonb, install jsonb, users jsonb, node_xml text,
    allocation_state text, operational_state text, expires_at timestamptz, error text, resource_status text,
    created_by text, created_at timestamptz, exit_code integer, log_url text, data_url text, requested_end_at timestamptz,
    interfaces jsonb, starts_at timestamptz)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    shut    boolean;
    missing text;
    tagged  text;
BEGIN
    -- For the triggers. Assignments, not PERFORM: a simple expression is
    -- evaluated without starting the executor.
    tagged := set_config('geniam.event', 'Delete', true);
    tagged := set_config('geniam.actor', p_actor, true);
    SELECT s.shut_down INTO shut FROM slices s WHERE s.urn = p_slice FOR SHARE;
    IF shut AND NOT p_operator THEN
        RAISE EXCEPTION 'slice % has been shut down', p_slice USING ERRCODE = 'GN002';
    END IF;
    IF p_urns IS NOT NULL THEN
        PERFORM 1 FROM slivers v WHERE v.slice_urn = p_slice AND v.urn = ANY(p_urns) ORDER BY v.urn FOR UPDATE;
        SELECT u INTO missing FROM unnest(p_urns) u
            WHERE NOT EXISTS (SELECT 1 FROM slivers v WHERE v.slice_urn = p_slice AND v.urn = u) LIMIT 1;
        IF missing IS NOT NULL THEN
            RAISE EXCEPTION 'no sliver % in slice %', missing, p_slice USING ERRCODE = 'GN004', DETAIL = missing;
        END IF;
    END IF;
    -- Two plain statements rather than one with "p_urns IS NULL OR": each
    -- keeps an index scan in the plan cached for the session.
    IF p_urns IS NULL THEN
        RETURN QUERY
            DELETE FROM slivers v WHERE v.slice_urn = p_slice
            RETURNING v.urn, v.slice_urn, v.client_id, v.node_name,
                (SELECT n.component_urn FROM nodes n WHERE n.name = v.node_name), v.sliver_type,
                v.image_url, v.image_sha256, v.image_id, v.execute, v.install, v.users, v.node_xml,
                v.allocation_state, v.operational_state, v.expires_at, v.error, v.resource_status,
                v.created_by, v.created_at, v.exit_code, v.log_url, v.data_url, v.requested_end_at, v.interfaces, v.starts_at;
    ELSE
        RETURN QUERY
            DELETE FROM slivers v WHERE v.urn = ANY(p_urns) AND v.slice_urn = p_slice
            RETURNING v.urn, v.slice_urn, v.client_id, v.node_name,
                (SELECT n.component_urn FROM nodes n WHERE n.name = v.node_name), v.sliver_type,
                v.image_url, v.image_sha256, v.image_id, v.execute, v.install, v.users, v.node_xml,
                v.allocation_state, v.operational_state, v.expires_at, v.error, v.resource_status,
                v.created_by, v.created_at, v.exit_code, v.log_url, v.data_url, v.requested_end_at, v.interfaces, v.starts_at;
    END IF;
END $$;
COMMENT ON FUNCTION geniam_delete(text, text, text[], boolean) IS
    'One Delete in one statement (migrations/functions/geniam_delete.sql, store/slivers.go).';
