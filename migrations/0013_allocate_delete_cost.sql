-- geniam schema: less work per Allocate and Delete (issue 21), every
-- guarantee kept. Each trigger call and each index an insert maintains costs
-- the database CPU on every sliver; these ones bought nothing.
--
-- * slivers_slice duplicated the unique index (slice_urn, client_id), which
--   serves every lookup by slice as well.
-- * node_slots' foreign key to nodes: the slot's (sliver_urn, node_name) must
--   be a sliver's (the other foreign key), whose node_name references nodes,
--   and node_slots_check refuses a slot on a node that does not exist.
-- * slivers_enqueue_jobs ran on every update and delete only to find, for a
--   sliver that was never provisioned, that no job is called for: WHEN
--   clauses now say so before PL/pgSQL is entered (the function is as 0002
--   defined it).
-- * node_slots_set_window is folded into node_slots_check (one trigger, one
--   lookup per slot row, in migrations/functions/node_slots.sql), which also
--   gives a slot its sliver's window on every update, not only of
--   sliver_urn.
-- * geniam_sliver_window is STABLE (migrations/functions/node_slots.sql):
--   declared IMMUTABLE around timestamptz - interval (STABLE), it could not be
--   inlined and ran as a separate SQL function call per slot.
-- geniam_allocate, node_slots_check and slivers_check_slots now live in
-- migrations/functions/ (see migrations.go).

DROP INDEX slivers_slice;

ALTER TABLE node_slots DROP CONSTRAINT node_slots_node_name_fkey;

DROP TRIGGER slivers_enqueue_jobs ON slivers;
CREATE TRIGGER slivers_enqueue_jobs AFTER UPDATE ON slivers
    FOR EACH ROW WHEN (NEW.allocation_state = 'geni_provisioned') EXECUTE FUNCTION slivers_enqueue_jobs();
CREATE TRIGGER slivers_enqueue_teardown AFTER DELETE ON slivers
    FOR EACH ROW WHEN (OLD.allocation_state = 'geni_provisioned') EXECUTE FUNCTION slivers_enqueue_jobs();

DROP TRIGGER node_slots_set_window ON node_slots;
DROP FUNCTION node_slots_set_window();
