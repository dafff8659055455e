-- geniam schema, version 5: convergence and fault tolerance (issue 14).
--
-- aggregate_processes: every geni-am process that works the job queue has a
-- row here and, while it lives, holds the session-level advisory lock
-- (process_lock_space, lock_key) on a connection of its own. PostgreSQL
-- drops that lock the moment the process's connection dies (SIGKILL, crash,
-- power cut of the host is seen when TCP gives up), so another process takes
-- the dead one's running jobs over at once instead of waiting out their
-- leases. The lease and its fencing token (jobs.attempts) stay as they are:
-- a process that lost its lock but still runs can no longer write a job.
CREATE TABLE aggregate_processes (
    owner      text PRIMARY KEY,
    lock_key   serial NOT NULL UNIQUE,
    host       text NOT NULL DEFAULT '',
    pid        integer NOT NULL DEFAULT 0,
    started_at timestamptz NOT NULL DEFAULT now(),
    seen_at    timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE aggregate_processes IS 'geni-am processes working the job queue. Alive = holds pg_advisory_lock(1734700649, lock_key) (see pg_locks); jobs leased by a process that is not alive are taken over at once.';
COMMENT ON COLUMN aggregate_processes.owner IS 'Prefix of jobs.lease_owner of this process''s workers (host:pid/random).';

-- Containers of this aggregate found on an agent with no live sliver and no
-- teardown of a deleted one to explain them (a restored database, a row
-- deleted by hand before provisioning finished). Reported from first_seen;
-- after provisioning.stray_grace (0 = never) a teardown job archives /data
-- and removes them.
CREATE TABLE stray_containers (
    node_name   text NOT NULL REFERENCES nodes(name) ON DELETE CASCADE,
    agent_id    text NOT NULL,
    sliver_urn  text NOT NULL DEFAULT '',
    slice_urn   text NOT NULL DEFAULT '',
    state       text NOT NULL DEFAULT '',
    first_seen  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now(),
    removal_job bigint,
    PRIMARY KEY (node_name, agent_id)
);
COMMENT ON TABLE stray_containers IS 'Containers of this aggregate''s instance that the database never knew, as the health poll last saw them; removed (after an archive of /data) once older than provisioning.stray_grace, never when it is 0.';

-- Jobs that ran out of attempts on an unreachable agent (last_error starts
-- 'gave up after '): the health poll of each node looks for them to run
-- them again (store.RetryGaveUp).
CREATE INDEX jobs_gave_up ON jobs (node_name) WHERE state = 'failed' AND last_error LIKE 'gave up after %';

-- Disk pressure of each node's state filesystem, as its agent last said.
ALTER TABLE agent_health ADD COLUMN disk_free_bytes bigint;
ALTER TABLE agent_health ADD COLUMN disk_total_bytes bigint;
ALTER TABLE agent_health ADD COLUMN disk_pressure boolean NOT NULL DEFAULT false;

-- The aggregate's instance: a random name fixed for the life of this
-- database, put on every container the aggregate starts
-- (org.geniam.aggregate-instance), so that two aggregates sharing an agent
-- or an engine never see each other's containers.
INSERT INTO settings (key, value, updated_by)
VALUES ('aggregate_instance', 'am-' || substr(md5(random()::text || clock_timestamp()::text), 1, 16), 'migration 0005')
ON CONFLICT (key) DO NOTHING;
