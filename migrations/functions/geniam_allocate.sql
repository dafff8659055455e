-- geniam_allocate is the whole write of an Allocate as one server-side
-- function, called as one statement (its own transaction) by store.Allocate
-- (store/slivers.go): the aggregate plans in Go on its recent node list, then
-- this function records the slice, refuses a shut-down slice, locks the nodes
-- the plan places on (SKIP LOCKED: it never waits for another allocation's
-- nodes, except those named in p_bound and p_wait, which it waits for first,
-- in name order), checks that the plan still holds on each of them as they
-- are now, and inserts the slivers and their slots. History rows come from
-- the triggers of 0001.
--
-- When the plan no longer holds it changes nothing and raises SQLSTATE GN001
-- with a JSON DETAIL {"busy": [names it could not lock], "changed": [names
-- locked but now without room for what the plan puts there]}: the aggregate
-- learns those nodes' state, plans again and calls again. A shut-down slice
-- (and p_operator false) raises GN002, a client_id the slice already has GN003
-- (DETAIL: the client_id). node_slots_no_overlap and the triggers still
-- refuse a double booking whatever this function does.
--
-- p_slivers is a JSON array of the planned slivers: {urn, node, type,
-- client_id, image_url, image_sha256, execute_list, install_list, users,
-- node_xml, operational_state, expires_at, requested_end_at, interfaces, run};
-- p_link_tags the tags the aggregate drew for the request's links, {link
-- client_id: tag} (a tag another link holds: GN005, draw again; a link the
-- slice already has: GN006, DETAIL its client_id).
--
-- Windows (0010): p_starts is the start of a reservation (NULL: not one);
-- each planned sliver holds its slots for [p_starts, expires_at). A node
-- takes the plan when, besides the checks above, for a reservation no row of
-- it overlaps the window, and for an immediate allocation no row ahead
-- overlaps the window (a started row is held until the reaper deletes it).
-- p_book_limit (NULL: none) caps, per node, how much of the node's time the
-- reservations of p_actor, or of the slices of project p_project ('' none:
-- the slice's authority has no project part), may hold that have not ended:
-- beyond it GN007 with DETAIL {"node", "booked" (seconds booked already)}.
--
-- The result is the state of each node placed on after the insert (slots
-- used, held exclusively), for the aggregate's node list.
--
-- Cost: every SQL statement here (and in a trigger) is an executor start and
-- end, the bulk of the function's CPU; so the slots are chosen from what the
-- check read, and slivers and slots are written by one INSERT each.
CREATE OR REPLACE FUNCTION geniam_allocate(
    p_actor text,
    p_slice text,
    p_credential_expires timestamptz,
    p_operator boolean,
    p_bound text[],
    p_wait text[],
    p_slivers jsonb,
    p_created_at timestamptz,
    p_link_tags jsonb,
    p_starts timestamptz,
    p_book_limit interval,
    p_project text
) RETURNS TABLE (node_name text, used integer, held_exclusively boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    shut       boolean;
    cred_exp   timestamptz;
    busy       text[] := '{}';
    changed    text[] := '{}';
    p          record;
    n          record;
    n_used     integer;
    n_held     boolean;
    n_ahead    integer;
    n_overlap  integer;
    taken      integer[];
    used_id    text;
    got_tags   integer;
    cur        timestamptz;
    over       record;
    g          integer;
    k          integer;
    slot_nodes text[] := '{}';
    slot_nos   integer[] := '{}';
    slot_urns  text[] := '{}';
    tagged     text;
BEGIN
    -- For the history trigger. Assignments, not PERFORM: a simple
    -- expression is evaluated without starting the executor.
    tagged := set_config('geniam.event', 'Allocate', true);
    tagged := set_config('geniam.actor', p_actor, true);
    -- Lock the slice row (the lock an upsert takes): allocations in one slice
    -- are serial, and a concurrent Shutdown is either before us (seen here) or
    -- after. The row is written only when it is new or the credential's
    -- expiry moved: an upsert wrote a new row version on every Allocate.
    SELECT sl.shut_down, sl.credential_expires_at INTO shut, cred_exp
        FROM slices sl WHERE sl.urn = p_slice FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        INSERT INTO slices AS sl (urn, credential_expires_at) VALUES (p_slice, p_credential_expires)
            ON CONFLICT (urn) DO UPDATE SET credential_expires_at = coalesce(EXCLUDED.credential_expires_at, sl.credential_expires_at)
            RETURNING sl.shut_down INTO shut;
    ELSIF p_credential_expires IS NOT NULL AND p_credential_expires IS DISTINCT FROM cred_exp THEN
        UPDATE slices sl SET credential_expires_at = p_credential_expires WHERE sl.urn = p_slice;
    END IF;
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
    FOR p IN SELECT e.x->>'node' AS node,
                    count(*) FILTER (WHERE e.x->>'type' = 'exclusive') AS exclusives,
                    count(*) FILTER (WHERE e.x->>'type' <> 'exclusive') AS containers,
                    array_agg(DISTINCT e.x->>'type') AS types,
                    array_agg(e.x->>'urn' ORDER BY e.i) AS urns,
                    tstzrange(p_starts, max((e.x->>'expires_at')::timestamptz)) AS win
             FROM jsonb_array_elements(p_slivers) WITH ORDINALITY AS e(x, i) GROUP BY 1 ORDER BY 1
    LOOP
        SELECT c.capacity, c.available AND NOT c.drained AS takes, c.sliver_types INTO n
            FROM nodes c WHERE c.name = p.node AND NOT c.retired FOR UPDATE OF c SKIP LOCKED;
        IF NOT FOUND THEN
            busy := busy || p.node;
            CONTINUE;
        END IF;
        -- A row that has started is held (until the reaper deletes it); an
        -- immediate plan may not overlap a booking ahead, a reservation may
        -- overlap nothing. Now is the database's clock, after the lock.
        -- taken: the slots a new sliver of this plan may not have.
        cur := clock_timestamp();
        SELECT count(*) FILTER (WHERE lower_inf(t.during) OR lower(t.during) <= cur),
               count(*) FILTER (WHERE lower(t.during) > cur AND t.during && p.win),
               count(*) FILTER (WHERE t.during && p.win),
               coalesce(array_agg(t.slot_no) FILTER (WHERE lower_inf(t.during) OR lower(t.during) <= cur OR t.during && p.win), '{}'),
               -- An exclusive sliver holds every slot of its node.
               coalesce(bool_or(v.sliver_type = 'exclusive' AND (v.starts_at IS NULL OR v.starts_at <= cur)), false)
            INTO n_used, n_ahead, n_overlap, taken, n_held
            FROM node_slots t LEFT JOIN slivers v ON v.urn = t.sliver_urn WHERE t.node_name = p.node;
        IF NOT (n.takes AND p.types <@ n.sliver_types
                AND CASE WHEN p_starts IS NOT NULL THEN p.exclusives = 1 AND p.containers = 0 AND n_overlap = 0
                         WHEN n_held OR n_ahead > 0 THEN false
                         WHEN p.exclusives > 0 THEN p.exclusives = 1 AND p.containers = 0 AND n_used = 0
                         ELSE n_used + p.containers <= n.capacity END) THEN
            changed := changed || p.node;
            CONTINUE;
        END IF;
        -- The slots: every one for the exclusive sliver, else the lowest
        -- free ones, in the order of p_slivers.
        k := 1;
        FOR g IN 0 .. n.capacity - 1 LOOP
            EXIT WHEN k > p.containers AND p.exclusives = 0;
            CONTINUE WHEN p.exclusives = 0 AND g = ANY(taken);
            slot_nodes := slot_nodes || p.node;
            slot_nos := slot_nos || g;
            slot_urns := slot_urns || p.urns[k];
            k := k + CASE WHEN p.exclusives = 0 THEN 1 ELSE 0 END;
        END LOOP;
        IF k <= p.containers THEN -- the check above makes this unreachable
            RAISE EXCEPTION 'node % has no free slot for %', p.node, p.urns[k] USING ERRCODE = 'GN001',
                DETAIL = json_build_object('busy', ARRAY[]::text[], 'changed', ARRAY[p.node])::text;
        END IF;
        node_name := p.node;
        used := CASE WHEN p_starts IS NOT NULL THEN n_used
                     WHEN p.exclusives > 0 THEN n.capacity ELSE (n_used + p.containers)::integer END;
        held_exclusively := CASE WHEN p_starts IS NOT NULL THEN n_held ELSE p.exclusives > 0 END;
        RETURN NEXT;
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
    -- The nodes are locked: no concurrent reservation changes what is booked on them.
    IF p_starts IS NOT NULL AND p_book_limit IS NOT NULL THEN
        SELECT x->>'node' AS node, b.booked INTO over
        FROM jsonb_array_elements(p_slivers) x
        CROSS JOIN LATERAL (SELECT coalesce(sum(v.expires_at - v.starts_at), interval '0') AS booked
                            FROM slivers v
                            WHERE v.node_name = x->>'node' AND v.starts_at IS NOT NULL AND v.expires_at > p_created_at
                              AND (v.created_by = p_actor OR (p_project <> '' AND split_part(v.slice_urn, '+', 2) = p_project))) b
        WHERE b.booked + ((x->>'expires_at')::timestamptz - p_starts) > p_book_limit
        LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'the booking limit per node is reached on node %', over.node USING ERRCODE = 'GN007',
                DETAIL = json_build_object('node', over.node, 'booked', extract(epoch FROM over.booked))::text;
        END IF;
    END IF;
    INSERT INTO slivers (urn, slice_urn, node_name, sliver_type, client_id, image_url, image_sha256,
            execute, install, users, node_xml, allocation_state, operational_state, expires_at, requested_end_at,
            created_by, created_at, interfaces, starts_at, run)
        SELECT s.urn, p_slice, s.node, s.type, s.client_id, s.image_url, s.image_sha256,
            s.execute_list, s.install_list, s.users, s.node_xml, 'geni_allocated', s.operational_state, s.expires_at,
            s.requested_end_at, p_actor, p_created_at, coalesce(s.interfaces, '[]'), p_starts, s.run
        FROM jsonb_to_recordset(p_slivers) AS s(urn text, node text, type text, client_id text,
            image_url text, image_sha256 text, execute_list jsonb, install_list jsonb, users jsonb, node_xml text,
            operational_state text, expires_at timestamptz, requested_end_at timestamptz, interfaces jsonb, run jsonb);
    -- Their windows come from the slivers (node_slots_check).
    INSERT INTO node_slots (node_name, slot_no, sliver_urn)
        SELECT * FROM unnest(slot_nodes, slot_nos, slot_urns);
END $$;
COMMENT ON FUNCTION geniam_allocate(text, text, timestamptz, boolean, text[], text[], jsonb, timestamptz, jsonb, timestamptz, interval, text) IS
    'The write of one Allocate in one statement (migrations/functions/geniam_allocate.sql, store/slivers.go).';
