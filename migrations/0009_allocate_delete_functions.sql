-- geniam schema: Allocate and Delete in one round trip each.
--
-- geniam_allocate is the whole write of an Allocate as one server-side
-- function, called as one statement (its own transaction): the aggregate
-- plans in Go on its recent node list, then this function records the slice,
-- refuses a shut-down slice, locks the nodes the plan places on (SKIP LOCKED:
-- it never waits for another allocation's nodes, except those named in
-- p_bound and p_wait, which it waits for first, in name order), checks that
-- the plan still holds on each of them as they are now, and inserts the
-- slivers and their slots. History rows come from the triggers of 0001.
--
-- When the plan no longer holds it changes nothing and raises SQLSTATE GN001
-- with a JSON DETAIL {"busy": [names it could not lock], "changed": [names
-- locked but now without room for what the plan puts there]}: the aggregate
-- learns those nodes' state, plans again and calls again. A shut-down slice
-- (and p_operator false) raises GN002, a client_id the slice already has GN003
-- (DETAIL: the client_id). node_slots' primary key and the
-- triggers of 0001 still refuse a double booking whatever this function does.
--
-- p_slivers is a JSON array of the planned slivers: {urn, node, type,
-- client_id, image_url, image_sha256, execute_list, install_list, users, node_xml,
-- operational_state, expires_at, requested_end_at, interfaces}; p_link_tags
-- the tags the aggregate drew for the request's links, {link client_id: tag}
-- (a tag another link holds: GN005, draw again; a link the slice already
-- has: GN006, DETAIL its client_id). The result is the state
-- of each node placed on after the insert (slots used, held exclusively), for
-- the aggregate's node list.
CREATE FUNCTION geniam_allocate(
    p_actor text,
    p_slice text,
    p_credential_expires timestamptz,
    p_operator boolean,
    p_bound text[],
    p_wait text[],
    p_slivers jsonb,
    p_created_at timestamptz,
    p_link_tags jsonb
) RETURNS TABLE (node_name text, used integer, held_exclusively boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    shut      boolean;
    busy      text[] := '{}';
    changed   text[] := '{}';
    p         record;
    s         record;
    n         record;
    n_used    integer;
    n_held    boolean;
    placed    text[] := '{}';
    used_now  integer[] := '{}';
    held_now  boolean[] := '{}';
    free      integer;
    used_id   text;
    got_tags  integer;
BEGIN
    PERFORM set_config('geniam.event', 'Allocate', true), set_config('geniam.actor', p_actor, true);
    -- Upserting locks the slice row: allocations in one slice are serial, and
    -- a concurrent Shutdown is either before us (seen here) or after.
    INSERT INTO slices AS sl (urn, credential_expires_at) VALUES (p_slice, p_credential_expires)
        ON CONFLICT (urn) DO UPDATE SET credential_expires_at = coalesce(EXCLUDED.credential_expires_at, sl.credential_expires_at)
        RETURNING sl.shut_down INTO shut;
    IF shut AND NOT p_operator THEN
        RAISE EXCEPTION 'slice % has been shut down', p_slice USING ERRCODE = 'GN002';
    END IF;
    -- The only lock this function waits for, and the first it takes on nodes.
    IF cardinality(p_bound) > 0 OR cardinality(p_wait) > 0 THEN
        PERFORM 1 FROM nodes w WHERE NOT w.retired AND (w.component_urn = ANY(p_bound) OR w.name = ANY(p_wait))
            ORDER BY w.name FOR UPDATE OF w;
    END IF;
    -- The slice row is locked: no concurrent allocation adds a client_id to it.
    SELECT x->>'client_id' INTO used_id FROM jsonb_array_elements(p_slivers) x
        WHERE EXISTS (SELECT 1 FROM slivers v WHERE v.slice_urn = p_slice AND v.client_id = x->>'client_id') LIMIT 1;
    IF used_id IS NOT NULL THEN
        RAISE EXCEPTION 'slice % already has a sliver with client_id %', p_slice, used_id
            USING ERRCODE = 'GN003', DETAIL = used_id;
    END IF;
    -- Lock each node the plan uses without waiting (rows this transaction
    -- already holds are not skipped) and check that the plan still holds on
    -- it: the node takes new slivers of the planned types, is not held
    -- exclusively, and has the slots (all of them free for an exclusive
    -- sliver, enough for the planned containers). One small indexed lookup
    -- per node: cheaper than a set-based query over a plan of a few nodes.
    FOR p IN SELECT x->>'node' AS node,
                    count(*) FILTER (WHERE x->>'type' = 'exclusive') AS exclusives,
                    count(*) FILTER (WHERE x->>'type' <> 'exclusive') AS containers,
                    array_agg(DISTINCT x->>'type') AS types
             FROM jsonb_array_elements(p_slivers) x GROUP BY 1 ORDER BY 1
    LOOP
        SELECT c.capacity, c.available AND NOT c.drained AS takes, c.sliver_types INTO n
            FROM nodes c WHERE c.name = p.node AND NOT c.retired FOR UPDATE OF c SKIP LOCKED;
        IF NOT FOUND THEN
            busy := busy || p.node;
            CONTINUE;
        END IF;
        SELECT count(*) INTO n_used FROM node_slots t WHERE t.node_name = p.node;
        n_held := EXISTS (SELECT 1 FROM slivers v WHERE v.node_name = p.node AND v.sliver_type = 'exclusive');
        IF NOT (n.takes AND p.types <@ n.sliver_types AND NOT n_held
                AND CASE WHEN p.exclusives > 0 THEN p.exclusives = 1 AND p.containers = 0 AND n_used = 0
                         ELSE n_used + p.containers <= n.capacity END) THEN
            changed := changed || p.node;
            CONTINUE;
        END IF;
        placed := placed || p.node;
        used_now := used_now || CASE WHEN p.exclusives > 0 THEN n.capacity ELSE (n_used + p.containers)::integer END;
        held_now := held_now || (p.exclusives > 0);
    END LOOP;
    IF cardinality(busy) > 0 OR cardinality(changed) > 0 THEN
        RAISE EXCEPTION 'the placement no longer holds on nodes %', array_cat(busy, changed)
            USING ERRCODE = 'GN001', DETAIL = json_build_object('busy', busy, 'changed', changed)::text;
    END IF;
    -- The links' tags (VNIs, drawn by the aggregate): one link per tag, one
    -- tag per link of a slice (link_tags, migrations/0008_links.sql).
    IF p_link_tags <> '{}'::jsonb THEN
        SELECT t.link_client_id INTO used_id FROM link_tags t
            WHERE t.slice_urn = p_slice AND t.link_client_id IN (SELECT jsonb_object_keys(p_link_tags)) LIMIT 1;
        IF used_id IS NOT NULL THEN
            RAISE EXCEPTION 'slice % already has a link %', p_slice, used_id USING ERRCODE = 'GN006', DETAIL = used_id;
        END IF;
        INSERT INTO link_tags (tag, slice_urn, link_client_id)
            SELECT l.value::integer, p_slice, l.key FROM jsonb_each_text(p_link_tags) l
            ON CONFLICT (tag) DO NOTHING;
        GET DIAGNOSTICS got_tags = ROW_COUNT;
        IF got_tags < (SELECT count(*) FROM jsonb_object_keys(p_link_tags)) THEN
            RAISE EXCEPTION 'a link tag of this request is taken' USING ERRCODE = 'GN005';
        END IF;
    END IF;
    FOR s IN SELECT * FROM jsonb_to_recordset(p_slivers) AS x(urn text, node text, type text, client_id text,
            image_url text, image_sha256 text, execute_list jsonb, install_list jsonb, users jsonb, node_xml text,
            operational_state text, expires_at timestamptz, requested_end_at timestamptz, interfaces jsonb)
    LOOP
        INSERT INTO slivers (urn, slice_urn, node_name, sliver_type, client_id, image_url, image_sha256,
                execute, install, users, node_xml, allocation_state, operational_state, expires_at, requested_end_at,
                created_by, created_at, interfaces)
        VALUES (s.urn, p_slice, s.node, s.type, s.client_id, s.image_url, s.image_sha256,
                s.execute_list, s.install_list, s.users, s.node_xml, 'geni_allocated', s.operational_state, s.expires_at,
                s.requested_end_at, p_actor, p_created_at, coalesce(s.interfaces, '[]'));
        IF s.type = 'exclusive' THEN
            INSERT INTO node_slots (node_name, slot_no, sliver_urn)
                SELECT s.node, g, s.urn FROM generate_series(0, (SELECT c.capacity FROM nodes c WHERE c.name = s.node) - 1) g;
        ELSE
            SELECT g INTO free FROM generate_series(0, (SELECT c.capacity FROM nodes c WHERE c.name = s.node) - 1) g
                WHERE NOT EXISTS (SELECT 1 FROM node_slots t WHERE t.node_name = s.node AND t.slot_no = g)
                ORDER BY g LIMIT 1;
            IF free IS NULL THEN -- the check above makes this unreachable
                RAISE EXCEPTION 'node % has no free slot for %', s.node, s.client_id USING ERRCODE = 'GN001',
                    DETAIL = json_build_object('busy', ARRAY[]::text[], 'changed', ARRAY[s.node])::text;
            END IF;
            INSERT INTO node_slots (node_name, slot_no, sliver_urn) VALUES (s.node, free, s.urn);
        END IF;
    END LOOP;
    RETURN QUERY SELECT * FROM unnest(placed, used_now, held_now);
END $$;
COMMENT ON FUNCTION geniam_allocate(text, text, timestamptz, boolean, text[], text[], jsonb, timestamptz, jsonb) IS
    'The write of one Allocate in one statement (see migrations/0009_allocate_delete_functions.sql and store/slivers.go).';

-- geniam_delete is the whole of a Delete as one statement: it locks the slice
-- row shared (a concurrent Shutdown is before or after it), refuses a
-- shut-down slice unless p_operator (GN002), and deletes the named slivers
-- (p_urns NULL: every live sliver of the slice), returning them as they were
-- (the columns of store.sliverColumns). A named sliver that is not a live
-- sliver of the slice raises GN004 (DETAIL: its URN) and deletes nothing. An
-- unknown slice has nothing to delete. Slots go with their slivers (ON DELETE
-- CASCADE); history and teardown jobs come from the triggers.
CREATE FUNCTION geniam_delete(p_actor text, p_slice text, p_urns text[], p_operator boolean)
RETURNS TABLE (urn text, slice_urn text, client_id text, node_name text, component_urn text, sliver_type text,
    image_url text, image_sha256 text, image_id text, execute jsonb, install jsonb, users jsonb, node_xml text,
    allocation_state text, operational_state text, expires_at timestamptz, error text, resource_status text,
    created_by text, created_at timestamptz, exit_code integer, log_url text, data_url text, requested_end_at timestamptz,
    interfaces jsonb)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    shut    boolean;
    missing text;
BEGIN
    PERFORM set_config('geniam.event', 'Delete', true), set_config('geniam.actor', p_actor, true);
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
                v.created_by, v.created_at, v.exit_code, v.log_url, v.data_url, v.requested_end_at, v.interfaces;
    ELSE
        RETURN QUERY
            DELETE FROM slivers v WHERE v.urn = ANY(p_urns) AND v.slice_urn = p_slice
            RETURNING v.urn, v.slice_urn, v.client_id, v.node_name,
                (SELECT n.component_urn FROM nodes n WHERE n.name = v.node_name), v.sliver_type,
                v.image_url, v.image_sha256, v.image_id, v.execute, v.install, v.users, v.node_xml,
                v.allocation_state, v.operational_state, v.expires_at, v.error, v.resource_status,
                v.created_by, v.created_at, v.exit_code, v.log_url, v.data_url, v.requested_end_at, v.interfaces;
    END IF;
END $$;
COMMENT ON FUNCTION geniam_delete(text, text, text[], boolean) IS
    'One Delete in one statement (see migrations/0009_allocate_delete_functions.sql and store/slivers.go).';
