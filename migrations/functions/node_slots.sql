-- The window a slot is held for, and the check of every slot row written.

-- The window a sliver holds its slots for: from its start (NULL: unbounded)
-- to its expiry. An end at or before the start still gives a
-- one-microsecond window: an empty range would overlap nothing and escape
-- the constraint node_slots_no_overlap. STABLE, as timestamptz - interval is:
-- so it is inlined where it is called.
CREATE OR REPLACE FUNCTION geniam_sliver_window(p_starts timestamptz, p_expires timestamptz)
RETURNS tstzrange LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN p_starts IS NULL THEN tstzrange(NULL, p_expires)
                ELSE tstzrange(least(p_starts, p_expires - interval '1 microsecond'), p_expires) END
$$;

-- Every slot row written (trigger node_slots_check, BEFORE INSERT OR
-- UPDATE): the slot must exist on its node, and FOR SHARE pins the node's
-- capacity until commit, so a concurrent capacity change cannot slip under a
-- new slot; and the row takes its sliver's window, whatever the writer said
-- (Renew and Provision move it through slivers_move_window).
CREATE OR REPLACE FUNCTION node_slots_check() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    cap integer;
    win tstzrange;
BEGIN
    SELECT c.capacity, (SELECT geniam_sliver_window(v.starts_at, v.expires_at) FROM slivers v WHERE v.urn = NEW.sliver_urn)
        INTO cap, win FROM nodes c WHERE c.name = NEW.node_name FOR SHARE OF c;
    IF cap IS NULL OR NEW.slot_no >= cap THEN
        RAISE EXCEPTION 'slot % does not exist on node % (capacity %)', NEW.slot_no, NEW.node_name, cap
            USING ERRCODE = 'check_violation';
    END IF;
    -- No such sliver: the foreign key refuses the row.
    NEW.during := coalesce(win, tstzrange(now(), NULL));
    RETURN NEW;
END $$;

-- At commit, every live sliver holds exactly its slots: one for a container,
-- all of its node for an exclusive sliver. A sliver without its slots would
-- be a booking node_slots_no_overlap cannot protect. Deferred constraint
-- triggers slivers_hold_their_slots (on slivers) and node_slots_stay_held (on
-- node_slots), from 0001; one query per call.
CREATE OR REPLACE FUNCTION slivers_check_slots() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    sliver text;
    v      record;
    want   integer;
BEGIN
    IF TG_TABLE_NAME = 'slivers' THEN
        sliver := NEW.urn;
    ELSE
        sliver := OLD.sliver_urn;
    END IF;
    SELECT s.sliver_type, n.capacity, s.node_name, (SELECT count(*) FROM node_slots t WHERE t.sliver_urn = sliver) AS held
        INTO v FROM slivers s JOIN nodes n ON n.name = s.node_name WHERE s.urn = sliver;
    IF NOT FOUND THEN
        RETURN NULL; -- the sliver is gone, and its slots with it
    END IF;
    want := CASE WHEN v.sliver_type = 'exclusive' THEN v.capacity ELSE 1 END;
    IF v.held <> want THEN
        RAISE EXCEPTION 'sliver % (%) on node % holds % slots; it must hold %', sliver, v.sliver_type, v.node_name, v.held, want
            USING ERRCODE = 'check_violation', HINT = 'delete the sliver instead of its slots';
    END IF;
    RETURN NULL;
END $$;
