-- geniam schema, version 1.
--
-- Read with psql: \d+ nodes, \d+ slivers, SELECT * FROM slivers_by_node; see docs/psql.md.
-- Double booking is impossible at the database level: every live sliver holds
-- rows in node_slots, whose primary key (node_name, slot_no) admits one holder
-- per slot, and a trigger keeps slot_no below the node's capacity.

CREATE TABLE nodes (
    name               text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]*$'),
    component_urn      text NOT NULL UNIQUE,
    agent_url          text NOT NULL DEFAULT '',
    hardware_type      text NOT NULL DEFAULT 'docker-host',
    sliver_types       text[] NOT NULL DEFAULT ARRAY['container']
                       CHECK (sliver_types <@ ARRAY['container', 'exclusive'] AND cardinality(sliver_types) > 0),
    capacity           integer NOT NULL DEFAULT 1 CHECK (capacity >= 1),
    available          boolean NOT NULL DEFAULT true,
    unavailable_reason text NOT NULL DEFAULT '',
    drained            boolean NOT NULL DEFAULT false,
    retired            boolean NOT NULL DEFAULT false,
    country            text NOT NULL DEFAULT '',
    latitude           double precision,
    longitude          double precision,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE nodes IS 'The testbed nodes this aggregate offers. Insert a row to add a node; it is advertised at the next ListResources.';
COMMENT ON COLUMN nodes.name IS 'Short unique name, e.g. node1; the last part of component_urn.';
COMMENT ON COLUMN nodes.component_urn IS 'urn:publicid:IDN+<am authority>+node+<name>: the component_id of the node in RSpecs.';
COMMENT ON COLUMN nodes.agent_url IS 'https://host:port of the node agent that runs the containers.';
COMMENT ON COLUMN nodes.hardware_type IS 'hardware_type advertised in the RSpec.';
COMMENT ON COLUMN nodes.sliver_types IS 'Sliver types the node offers: container (shared, up to capacity slivers) and/or exclusive (the whole node).';
COMMENT ON COLUMN nodes.capacity IS 'How many container slivers the node holds at once (its number of slots). An exclusive sliver takes every slot.';
COMMENT ON COLUMN nodes.available IS 'false: health checks or the operator say the node must take no new slivers; say why in unavailable_reason.';
COMMENT ON COLUMN nodes.unavailable_reason IS 'Why the node is unavailable, shown to experimenters whose request needs it.';
COMMENT ON COLUMN nodes.drained IS 'true: the operator drains the node: its slivers keep running but it takes no new ones.';
COMMENT ON COLUMN nodes.retired IS 'true: the node is gone from the advertisement (keep the row for history).';
COMMENT ON COLUMN nodes.country IS 'ISO 3166 country code of the node, advertised in <location>; empty if unknown.';
COMMENT ON COLUMN nodes.latitude IS 'Latitude advertised in <location>, NULL if unknown.';
COMMENT ON COLUMN nodes.longitude IS 'Longitude advertised in <location>, NULL if unknown.';
COMMENT ON COLUMN nodes.updated_at IS 'Last change of the row (set by a trigger).';

-- Lowering capacity below a slot in use would overbook the node.
CREATE FUNCTION nodes_check_capacity() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM node_slots WHERE node_name = NEW.name AND slot_no >= NEW.capacity) THEN
        RAISE EXCEPTION 'node % has slivers in slots at or above %: drain it and wait for them to end before lowering its capacity',
            NEW.name, NEW.capacity USING ERRCODE = 'check_violation';
    END IF;
    -- An exclusive sliver holds every slot; a new slot would not be its.
    IF NEW.capacity > OLD.capacity AND EXISTS (SELECT 1 FROM slivers WHERE node_name = NEW.name AND sliver_type = 'exclusive') THEN
        RAISE EXCEPTION 'node % is held by an exclusive sliver: change its capacity once that sliver has ended', NEW.name
            USING ERRCODE = 'check_violation';
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END $$;

CREATE TABLE slices (
    urn                   text PRIMARY KEY,
    credential_expires_at timestamptz,
    shut_down             boolean NOT NULL DEFAULT false,
    shut_down_by          text NOT NULL DEFAULT '',
    shut_down_at          timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE slices IS 'Slices that have had slivers here (or were shut down here).';
COMMENT ON COLUMN slices.credential_expires_at IS 'Expiry of the last slice credential used on this slice; no sliver outlives it.';
COMMENT ON COLUMN slices.shut_down IS 'true after Shutdown: every further call on the slice is refused (FORBIDDEN) until an operator sets it back to false.';
COMMENT ON COLUMN slices.shut_down_by IS 'User URN that called Shutdown.';

CREATE TABLE slivers (
    urn               text PRIMARY KEY,
    slice_urn         text NOT NULL REFERENCES slices(urn),
    node_name         text NOT NULL REFERENCES nodes(name),
    sliver_type       text NOT NULL CHECK (sliver_type IN ('container', 'exclusive')),
    client_id         text NOT NULL,
    image_url         text NOT NULL DEFAULT '',
    image_sha256      text NOT NULL DEFAULT '',
    image_id          text NOT NULL DEFAULT '',
    execute           jsonb NOT NULL DEFAULT '[]',
    install           jsonb NOT NULL DEFAULT '[]',
    users             jsonb NOT NULL DEFAULT '[]',
    node_xml          text NOT NULL DEFAULT '',
    allocation_state  text NOT NULL CHECK (allocation_state IN ('geni_allocated', 'geni_provisioned')),
    operational_state text NOT NULL,
    expires_at        timestamptz NOT NULL,
    requested_end_at  timestamptz,
    error             text NOT NULL DEFAULT '',
    resource_status   text NOT NULL DEFAULT '',
    exit_code         integer,
    log_url           text NOT NULL DEFAULT '',
    data_url          text NOT NULL DEFAULT '',
    created_by        text NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (slice_urn, client_id),
    UNIQUE (urn, node_name)
);
CREATE INDEX slivers_slice ON slivers (slice_urn);
CREATE INDEX slivers_node ON slivers (node_name);
CREATE INDEX slivers_expires ON slivers (expires_at);
COMMENT ON TABLE slivers IS 'Live slivers (geni_allocated or geni_provisioned). A deleted or expired sliver is removed from here; sliver_history keeps its story.';
COMMENT ON COLUMN slivers.client_id IS 'client_id of the request node; unique within the slice.';
COMMENT ON COLUMN slivers.image_url IS 'URL of the docker save tar the container runs.';
COMMENT ON COLUMN slivers.image_sha256 IS 'sha256 (hex) the image tar must have.';
COMMENT ON COLUMN slivers.execute IS 'services/execute commands as [{"shell":..,"command":..}].';
COMMENT ON COLUMN slivers.install IS 'services/install archives as [{"url":..,"path":..}].';
COMMENT ON COLUMN slivers.users IS 'geni_users: [{"urn":..,"keys":[..]}] whose SSH keys are installed.';
COMMENT ON COLUMN slivers.node_xml IS 'The request <node> element, echoed in the manifest.';
COMMENT ON COLUMN slivers.allocation_state IS 'geni_allocated (held, short expiry) or geni_provisioned.';
COMMENT ON COLUMN slivers.operational_state IS 'geni_operational_status: geni_pending_allocation, geni_notready, geni_configuring, geni_ready, geni_stopping, geni_failed ...';
COMMENT ON COLUMN slivers.expires_at IS 'When the reaper deletes the sliver and frees its slots.';
COMMENT ON COLUMN slivers.requested_end_at IS 'geni_end_time asked at Allocate; Provision honours it within policy.';
COMMENT ON COLUMN slivers.error IS 'geni_error shown by Status.';
COMMENT ON COLUMN slivers.created_by IS 'User URN that allocated the sliver.';

CREATE TABLE node_slots (
    node_name  text NOT NULL REFERENCES nodes(name),
    slot_no    integer NOT NULL CHECK (slot_no >= 0),
    sliver_urn text NOT NULL,
    PRIMARY KEY (node_name, slot_no),
    FOREIGN KEY (sliver_urn, node_name) REFERENCES slivers (urn, node_name) ON DELETE CASCADE
);
CREATE INDEX node_slots_sliver ON node_slots (sliver_urn);
COMMENT ON TABLE node_slots IS 'Who holds which slot of which node. The primary key makes double booking impossible: a container sliver holds one slot, an exclusive sliver every slot of its node. Rows vanish with their sliver.';

-- A slot must exist on its node. FOR SHARE pins capacity until commit, so a
-- concurrent capacity change cannot slip under a new slot.
CREATE FUNCTION node_slots_check() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE cap integer;
BEGIN
    SELECT capacity INTO cap FROM nodes WHERE name = NEW.node_name FOR SHARE;
    IF cap IS NULL OR NEW.slot_no >= cap THEN
        RAISE EXCEPTION 'slot % does not exist on node % (capacity %)', NEW.slot_no, NEW.node_name, cap
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER node_slots_check BEFORE INSERT OR UPDATE ON node_slots
    FOR EACH ROW EXECUTE FUNCTION node_slots_check();

CREATE TRIGGER nodes_check_capacity BEFORE UPDATE ON nodes
    FOR EACH ROW EXECUTE FUNCTION nodes_check_capacity();

-- At commit, every live sliver holds exactly its slots: one for a container,
-- all of its node for an exclusive sliver. A sliver without its slots would
-- be a booking the primary key of node_slots cannot protect.
CREATE FUNCTION slivers_check_slots() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    sliver text;
    v      record;
    held   integer;
    want   integer;
BEGIN
    IF TG_TABLE_NAME = 'slivers' THEN
        sliver := NEW.urn;
    ELSE
        sliver := OLD.sliver_urn;
    END IF;
    SELECT s.sliver_type, n.capacity, s.node_name INTO v FROM slivers s JOIN nodes n ON n.name = s.node_name WHERE s.urn = sliver;
    IF NOT FOUND THEN
        RETURN NULL; -- the sliver is gone, and its slots with it
    END IF;
    SELECT count(*) INTO held FROM node_slots WHERE sliver_urn = sliver;
    want := CASE WHEN v.sliver_type = 'exclusive' THEN v.capacity ELSE 1 END;
    IF held <> want THEN
        RAISE EXCEPTION 'sliver % (%) on node % holds % slots; it must hold %', sliver, v.sliver_type, v.node_name, held, want
            USING ERRCODE = 'check_violation', HINT = 'delete the sliver instead of its slots';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER slivers_hold_their_slots AFTER INSERT OR UPDATE OF node_name, sliver_type ON slivers
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slivers_check_slots();
CREATE CONSTRAINT TRIGGER node_slots_stay_held AFTER DELETE OR UPDATE ON node_slots
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slivers_check_slots();

-- Every change of a sliver, by the aggregate or by hand.
CREATE TABLE sliver_history (
    id                bigserial PRIMARY KEY,
    at                timestamptz NOT NULL DEFAULT clock_timestamp(),
    sliver_urn        text NOT NULL,
    slice_urn         text NOT NULL,
    node_name         text NOT NULL,
    event             text NOT NULL,
    actor             text NOT NULL,
    allocation_state  text NOT NULL,
    operational_state text NOT NULL,
    expires_at        timestamptz,
    error             text NOT NULL DEFAULT ''
);
CREATE INDEX sliver_history_sliver ON sliver_history (sliver_urn, id);
CREATE INDEX sliver_history_slice ON sliver_history (slice_urn, id);
COMMENT ON TABLE sliver_history IS 'One row per change of a sliver: state, expiry, error. Written by a trigger, so edits made with psql are recorded too.';
COMMENT ON COLUMN sliver_history.event IS 'What happened: the AM API method (Allocate, Provision, Renew, geni_start ...), expire, or sql:INSERT/UPDATE/DELETE for a manual edit.';
COMMENT ON COLUMN sliver_history.actor IS 'User URN of the caller, reaper, or psql:<database role> for a manual edit.';
COMMENT ON COLUMN sliver_history.allocation_state IS 'State after the change; geni_unallocated when the sliver was deleted.';

-- The aggregate sets geniam.event and geniam.actor with set_config(..., true)
-- in each transaction; a manual edit falls back to sql:<op> by psql:<role>.
CREATE FUNCTION slivers_record_history() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ev    text := coalesce(nullif(current_setting('geniam.event', true), ''), 'sql:' || TG_OP);
    actor text := coalesce(nullif(current_setting('geniam.actor', true), ''), 'psql:' || session_user);
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO sliver_history (sliver_urn, slice_urn, node_name, event, actor, allocation_state, operational_state, expires_at, error)
        VALUES (OLD.urn, OLD.slice_urn, OLD.node_name, ev, actor, 'geni_unallocated', OLD.operational_state, OLD.expires_at, OLD.error);
        RETURN OLD;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.allocation_state = OLD.allocation_state AND NEW.operational_state = OLD.operational_state
       AND NEW.expires_at = OLD.expires_at AND NEW.error = OLD.error AND NEW.users = OLD.users THEN
        RETURN NEW;
    END IF;
    INSERT INTO sliver_history (sliver_urn, slice_urn, node_name, event, actor, allocation_state, operational_state, expires_at, error)
    VALUES (NEW.urn, NEW.slice_urn, NEW.node_name, ev, actor, NEW.allocation_state, NEW.operational_state, NEW.expires_at, NEW.error);
    RETURN NEW;
END $$;
CREATE TRIGGER slivers_record_history AFTER INSERT OR UPDATE OR DELETE ON slivers
    FOR EACH ROW EXECUTE FUNCTION slivers_record_history();

CREATE FUNCTION touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END $$;
CREATE TRIGGER slivers_touch BEFORE UPDATE ON slivers FOR EACH ROW EXECUTE FUNCTION touch_updated_at();
CREATE TRIGGER slices_touch BEFORE UPDATE ON slices FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

-- The inventory version: bumped in the same transaction as any change to
-- nodes, so a reader sees the version and the node rows from one snapshot.
-- Sliver changes do not bump it (that would make this row a global lock on
-- every Allocate); usage is read with the nodes and is part of the
-- advertisement cache key instead.
CREATE TABLE inventory_version (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version   bigint NOT NULL,
    changed_at timestamptz NOT NULL
);
INSERT INTO inventory_version VALUES (true, 1, now());
COMMENT ON TABLE inventory_version IS 'Counter bumped by every change to nodes; the aggregate re-renders its advertisement when it moves.';

CREATE FUNCTION bump_inventory_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE inventory_version SET version = version + 1, changed_at = now();
    RETURN NULL;
END $$;
CREATE TRIGGER nodes_bump_inventory AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON nodes
    FOR EACH STATEMENT EXECUTE FUNCTION bump_inventory_version();

-- Views an operator reads.

CREATE VIEW node_usage AS
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
LEFT JOIN node_slots s ON s.node_name = n.name
LEFT JOIN slivers v ON v.urn = s.sliver_urn
GROUP BY n.name
ORDER BY n.name;
COMMENT ON VIEW node_usage IS 'Free capacity per node: slots used and free, and whether it takes new slivers (and why not).';

CREATE VIEW slivers_by_node AS
SELECT v.node_name, v.urn AS sliver_urn, v.slice_urn, v.client_id, v.sliver_type,
       v.allocation_state, v.operational_state, v.expires_at, v.created_by, v.image_url,
       array_agg(s.slot_no ORDER BY s.slot_no) AS slots
FROM slivers v
LEFT JOIN node_slots s ON s.sliver_urn = v.urn
GROUP BY v.urn
ORDER BY v.node_name, v.created_at;
COMMENT ON VIEW slivers_by_node IS 'What runs on each node: WHERE node_name = ''node1''.';

CREATE VIEW expiring_today AS
SELECT v.expires_at, v.urn AS sliver_urn, v.slice_urn, v.node_name, v.allocation_state, v.created_by
FROM slivers v
WHERE v.expires_at < date_trunc('day', now()) + interval '1 day'
ORDER BY v.expires_at;
COMMENT ON VIEW expiring_today IS 'Slivers whose expiry falls before midnight (server time zone), soonest first.';
