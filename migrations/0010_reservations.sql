-- geniam schema: advance reservations (issue 19).
--
-- Every slot a sliver holds is held for a time window, node_slots.during:
-- [slivers.starts_at, expires_at) for a reservation (Allocate with
-- geni_start_time), (-infinity, expires_at) for any other sliver: it holds
-- its slot from before anyone can book until its expiry, so two immediate
-- slivers always overlap (as under the old primary key) and a reservation may
-- start once the immediate holder's expiry has passed. The
-- exclusion constraint node_slots_no_overlap replaces the primary key
-- (node_name, slot_no): no two rows of a slot overlap in time, so no two
-- bookings of a node's slots can ever overlap, whichever process writes
-- them. A reservation is an exclusive sliver: it holds every slot of its node
-- for its window. during is kept by triggers from the sliver (an insert by
-- hand needs no window; Renew and Provision move the end), so the constraint
-- also refuses extending a sliver into a later booking.
--
-- A slot row whose window has started counts as held ("used now") until the
-- reaper deletes it, even past its end: a slot is given to a new immediate
-- sliver only when no row of it has started and none overlaps the new
-- window. Only a reservation's start is a time; so whose clock says "now"
-- matters only for reservations (the database's).
-- See docs/architecture.md and docs/operator.md (Reservations).

-- btree_gist lets one GiST index compare text and integers with = beside a
-- range with &&. It ships with Debian's postgresql package and is a trusted
-- extension (PostgreSQL 13+): the owner of the database may create it.
CREATE EXTENSION IF NOT EXISTS btree_gist;

ALTER TABLE slivers ADD COLUMN starts_at timestamptz;
COMMENT ON COLUMN slivers.starts_at IS 'Start of a reservation (geni_start_time at Allocate); NULL: the sliver started when it was allocated. Its window is [starts_at, expires_at).';
CREATE INDEX slivers_reservations ON slivers (node_name, starts_at) WHERE starts_at IS NOT NULL;

-- The window a sliver holds its slots for: from its start (NULL: unbounded)
-- to its expiry. An end at or before the start still gives a
-- one-microsecond window: an empty range would overlap nothing and escape
-- the constraint.
CREATE FUNCTION geniam_sliver_window(p_starts timestamptz, p_expires timestamptz)
RETURNS tstzrange LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_starts IS NULL THEN tstzrange(NULL, p_expires)
                ELSE tstzrange(least(p_starts, p_expires - interval '1 microsecond'), p_expires) END
$$;

ALTER TABLE node_slots ADD COLUMN during tstzrange;
UPDATE node_slots t SET during = geniam_sliver_window(v.starts_at, v.expires_at)
    FROM slivers v WHERE v.urn = t.sliver_urn;
ALTER TABLE node_slots ALTER COLUMN during SET NOT NULL;
-- What a row written with the triggers off (session_replication_role =
-- replica: restores, planted test data) holds: the slot for all time.
ALTER TABLE node_slots ALTER COLUMN during SET DEFAULT tstzrange(NULL, NULL);
ALTER TABLE node_slots DROP CONSTRAINT node_slots_pkey;
ALTER TABLE node_slots ADD CONSTRAINT node_slots_no_overlap
    EXCLUDE USING gist (node_name WITH =, slot_no WITH =, during WITH &&);
COMMENT ON TABLE node_slots IS 'Who holds which slot of which node, and when (during). The exclusion constraint node_slots_no_overlap makes double booking impossible: no two rows of one slot overlap in time. A container sliver holds one slot, an exclusive sliver (and every reservation) every slot of its node. Rows vanish with their sliver.';
COMMENT ON COLUMN node_slots.during IS 'The window of the holding sliver: [starts_at, expires_at) for a reservation, (-infinity, expires_at) otherwise; set by triggers from the sliver.';

-- A slot row takes its sliver's window, whatever the writer said.
CREATE FUNCTION node_slots_set_window() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    SELECT geniam_sliver_window(v.starts_at, v.expires_at) INTO NEW.during
        FROM slivers v WHERE v.urn = NEW.sliver_urn;
    IF NEW.during IS NULL THEN
        NEW.during := tstzrange(now(), NULL); -- no such sliver: the foreign key refuses the row
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER node_slots_set_window BEFORE INSERT OR UPDATE OF sliver_urn ON node_slots
    FOR EACH ROW EXECUTE FUNCTION node_slots_set_window();

-- Renew and Provision move a sliver's end: its slots follow (and the
-- constraint refuses an end inside a later booking).
CREATE FUNCTION slivers_move_window() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE node_slots SET during = geniam_sliver_window(NEW.starts_at, NEW.expires_at)
        WHERE sliver_urn = NEW.urn;
    RETURN NULL;
END $$;
CREATE TRIGGER slivers_move_window AFTER UPDATE OF expires_at, starts_at ON slivers
    FOR EACH ROW WHEN (OLD.expires_at IS DISTINCT FROM NEW.expires_at OR OLD.starts_at IS DISTINCT FROM NEW.starts_at)
    EXECUTE FUNCTION slivers_move_window();

-- A reservation provisioned before its start is set up at its start: its
-- provision job waits until then (the job queue polls every second).
CREATE FUNCTION jobs_wait_for_start() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.kind = 'provision' THEN
        NEW.next_run_at := greatest(NEW.next_run_at, (SELECT v.starts_at FROM slivers v WHERE v.urn = NEW.sliver_urn));
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER jobs_wait_for_start BEFORE INSERT ON jobs FOR EACH ROW EXECUTE FUNCTION jobs_wait_for_start();

-- Usage means usage now: a reservation that has not started holds no slot yet.
CREATE OR REPLACE VIEW node_usage AS
SELECT n.name AS node_name,
       n.capacity,
       count(s.slot_no)::integer AS slots_used,
       (n.capacity - count(s.slot_no))::integer AS slots_free,
       bool_or(v.sliver_type = 'exclusive') IS TRUE AS held_exclusively,
       n.available AND NOT n.drained AND NOT n.retired AS takes_new_slivers,
       CASE WHEN n.retired THEN 'retired'
            WHEN n.drained THEN 'drained'
            WHEN NOT n.available THEN 'unavailable: ' || n.unavailable_reason
            ELSE '' END AS why_not
FROM nodes n
LEFT JOIN node_slots s ON s.node_name = n.name AND (lower_inf(s.during) OR lower(s.during) <= now())
LEFT JOIN slivers v ON v.urn = s.sliver_urn
GROUP BY n.name
ORDER BY n.name;

CREATE VIEW node_calendar AS
SELECT v.node_name, coalesce(v.starts_at, v.created_at) AS starts_at, v.expires_at AS ends_at,
       v.starts_at IS NOT NULL AS reservation, v.sliver_type, v.urn AS sliver_urn, v.slice_urn,
       v.created_by, v.allocation_state, v.operational_state
FROM slivers v
WHERE v.sliver_type = 'exclusive' OR v.starts_at IS NOT NULL
ORDER BY v.node_name, 2;
COMMENT ON VIEW node_calendar IS 'Who has booked each node when: reservations and exclusive slivers, WHERE node_name = ''node1''.';

-- geniam_allocate as in 0009, with windows: p_starts is the start of a
-- reservation (NULL: not one); each planned sliver holds its slots for
-- [p_starts, expires_at). A node takes the plan when, besides 0009's
-- checks, for a reservation no row of it overlaps the window, and for an
-- immediate allocation no row ahead overlaps the window (a started row is
-- held until the reaper deletes it, as before). p_book_limit (NULL: none)
-- caps, per node, how much of the node's time the reservations of p_actor, or
-- of the slices of project p_project ('' none: the slice's authority has no
-- project part), may hold that have not ended: beyond it GN007 with DETAIL
-- {"node", "booked" (seconds booked already)}.
DROP FUNCTION geniam_allocate(text, text, timestamptz, boolean, text[], text[], jsonb, timestamptz, jsonb);
CREATE FUNCTION geniam_allocate(
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
    n_ahead   integer;
    n_overlap integer;
    cur       timestamptz;
    over      record;
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
                    array_agg(DISTINCT x->>'type') AS types,
                    tstzrange(p_starts, max((x->>'expires_at')::timestamptz)) AS win
             FROM jsonb_array_elements(p_slivers) x GROUP BY 1 ORDER BY 1
    LOOP
        SELECT c.capacity, c.available AND NOT c.drained AS takes, c.sliver_types INTO n
            FROM nodes c WHERE c.name = p.node AND NOT c.retired FOR UPDATE OF c SKIP LOCKED;
        IF NOT FOUND THEN
            busy := busy || p.node;
            CONTINUE;
        END IF;
        -- Windows (0010): a row that has started is held (until the reaper
        -- deletes it); an immediate plan may not overlap a booking ahead, a
        -- reservation may overlap nothing. Now is the database's clock,
        -- after the lock.
        cur := clock_timestamp();
        SELECT count(*) FILTER (WHERE lower_inf(t.during) OR lower(t.during) <= cur),
               count(*) FILTER (WHERE lower(t.during) > cur AND t.during && p.win),
               count(*) FILTER (WHERE t.during && p.win)
            INTO n_used, n_ahead, n_overlap FROM node_slots t WHERE t.node_name = p.node;
        n_held := EXISTS (SELECT 1 FROM slivers v WHERE v.node_name = p.node AND v.sliver_type = 'exclusive'
                          AND (v.starts_at IS NULL OR v.starts_at <= cur));
        IF NOT (n.takes AND p.types <@ n.sliver_types
                AND CASE WHEN p_starts IS NOT NULL THEN p.exclusives = 1 AND p.containers = 0 AND n_overlap = 0
                         WHEN n_held OR n_ahead > 0 THEN false
                         WHEN p.exclusives > 0 THEN p.exclusives = 1 AND p.containers = 0 AND n_used = 0
                         ELSE n_used + p.containers <= n.capacity END) THEN
            changed := changed || p.node;
            CONTINUE;
        END IF;
        placed := placed || p.node;
        used_now := used_now || CASE WHEN p_starts IS NOT NULL THEN n_used
                                     WHEN p.exclusives > 0 THEN n.capacity ELSE (n_used + p.containers)::integer END;
        held_now := held_now || CASE WHEN p_starts IS NOT NULL THEN n_held ELSE p.exclusives > 0 END;
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
    FOR s IN SELECT * FROM jsonb_to_recordset(p_slivers) AS x(urn text, node text, type text, client_id text,
            image_url text, image_sha256 text, execute_list jsonb, install_list jsonb, users jsonb, node_xml text,
            operational_state text, expires_at timestamptz, requested_end_at timestamptz, interfaces jsonb)
    LOOP
        INSERT INTO slivers (urn, slice_urn, node_name, sliver_type, client_id, image_url, image_sha256,
                execute, install, users, node_xml, allocation_state, operational_state, expires_at, requested_end_at,
                created_by, created_at, interfaces, starts_at)
        VALUES (s.urn, p_slice, s.node, s.type, s.client_id, s.image_url, s.image_sha256,
                s.execute_list, s.install_list, s.users, s.node_xml, 'geni_allocated', s.operational_state, s.expires_at,
                s.requested_end_at, p_actor, p_created_at, coalesce(s.interfaces, '[]'), p_starts);
        IF s.type = 'exclusive' THEN
            INSERT INTO node_slots (node_name, slot_no, sliver_urn)
                SELECT s.node, g, s.urn FROM generate_series(0, (SELECT c.capacity FROM nodes c WHERE c.name = s.node) - 1) g;
        ELSE
            SELECT g INTO free FROM generate_series(0, (SELECT c.capacity FROM nodes c WHERE c.name = s.node) - 1) g
                WHERE NOT EXISTS (SELECT 1 FROM node_slots t WHERE t.node_name = s.node AND t.slot_no = g
                                  AND (lower_inf(t.during) OR lower(t.during) <= cur OR t.during && tstzrange(p_starts, s.expires_at)))
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
COMMENT ON FUNCTION geniam_allocate(text, text, timestamptz, boolean, text[], text[], jsonb, timestamptz, jsonb, timestamptz, interval, text) IS
    'The write of one Allocate in one statement, with reservation windows (see migrations/0010_reservations.sql and store/slivers.go).';


-- geniam_delete as in 0009, returning starts_at too (store.sliverColumns).
DROP FUNCTION geniam_delete(text, text, text[], boolean);
CREATE FUNCTION geniam_delete(p_actor text, p_slice text, p_urns text[], p_operator boolean)
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
    'One Delete in one statement (see migrations/0009_allocate_delete_functions.sql and store/slivers.go).';
