-- geniam schema, version 2: provisioning.
--
-- The jobs table is the durable queue between the AM API and the node agents.
-- Jobs are written by triggers on slivers, in the same transaction as the
-- change that calls for them (Provision, an operational action, Shutdown,
-- Delete or expiry), so no crash can commit a change and lose its job.
-- Workers of any number of aggregate processes claim them with
-- FOR UPDATE SKIP LOCKED and hold a lease they renew while they work; a job
-- whose holder died is taken over when its lease runs out. Jobs of one sliver
-- run one at a time, in order. See docs/provisioning.md.

CREATE TABLE jobs (
    id          bigserial PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('provision', 'start', 'stop', 'restart', 'update_users', 'fetch_data', 'delete')),
    sliver_urn  text NOT NULL,
    slice_urn   text NOT NULL,
    node_name   text NOT NULL,
    args        jsonb NOT NULL DEFAULT '{}',
    state       text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    attempts    integer NOT NULL DEFAULT 0,
    next_run_at timestamptz NOT NULL DEFAULT now(),
    lease_owner text NOT NULL DEFAULT '',
    lease_until timestamptz,
    last_error  text NOT NULL DEFAULT '',
    result      text NOT NULL DEFAULT '',
    created_by  text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    started_at  timestamptz,
    finished_at timestamptz
);
CREATE INDEX jobs_pending ON jobs (next_run_at, id) WHERE state IN ('queued', 'running');
CREATE INDEX jobs_sliver ON jobs (sliver_urn, id);
COMMENT ON TABLE jobs IS 'Work for the node agents (durable queue). Pending work: SELECT * FROM jobs WHERE state IN (''queued'',''running'') ORDER BY id.';
COMMENT ON COLUMN jobs.kind IS 'provision (fetch + run), start, stop, restart, update_users, fetch_data (archive /data) or delete (archive /data, then remove everything on the node).';
COMMENT ON COLUMN jobs.args IS 'What the job needs that the sliver row may no longer hold (a deleted sliver''s client_id, whether it expired).';
COMMENT ON COLUMN jobs.state IS 'queued (waiting for next_run_at), running (leased), done, failed (gave up; see last_error) or cancelled (the sliver was deleted first).';
COMMENT ON COLUMN jobs.attempts IS 'How many times a worker has taken the job; also the fencing token of the current lease.';
COMMENT ON COLUMN jobs.next_run_at IS 'Earliest time a worker may take the job (exponential backoff after transient failures).';
COMMENT ON COLUMN jobs.lease_owner IS 'Worker holding the job (host:pid/random:n).';
COMMENT ON COLUMN jobs.lease_until IS 'The holder renews this while it works; past it, another worker takes the job over.';
COMMENT ON COLUMN jobs.last_error IS 'Error of the last attempt, as the agent said it.';

-- Which job a change of a sliver calls for. geniam.event is set by the
-- aggregate in each transaction (see 0001).
CREATE FUNCTION slivers_enqueue_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ev    text := coalesce(current_setting('geniam.event', true), '');
    actor text := coalesce(nullif(current_setting('geniam.actor', true), ''), 'psql:' || session_user);
    k     text;
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.allocation_state <> 'geni_provisioned' THEN
            RETURN OLD; -- nothing ever ran on a node
        END IF;
        -- Work not yet started is moot; running work finishes first (jobs of
        -- a sliver run in order), then the teardown.
        UPDATE jobs SET state = 'cancelled', finished_at = now(), last_error = 'the sliver was deleted'
            WHERE sliver_urn = OLD.urn AND state = 'queued';
        INSERT INTO jobs (kind, sliver_urn, slice_urn, node_name, args, created_by)
        VALUES ('delete', OLD.urn, OLD.slice_urn, OLD.node_name,
                jsonb_build_object('client_id', OLD.client_id, 'expired', ev = 'expire', 'event', ev), actor);
        RETURN OLD;
    END IF;
    IF OLD.allocation_state = 'geni_allocated' AND NEW.allocation_state = 'geni_provisioned' THEN
        k := 'provision';
    ELSIF NEW.allocation_state = 'geni_provisioned' THEN
        k := CASE ev WHEN 'geni_start' THEN 'start' WHEN 'geni_stop' THEN 'stop' WHEN 'geni_restart' THEN 'restart'
                     WHEN 'geni_update_users' THEN 'update_users' WHEN 'geniam_fetch_data' THEN 'fetch_data'
                     WHEN 'Shutdown' THEN 'stop' ELSE NULL END;
    END IF;
    IF k IS NOT NULL THEN
        INSERT INTO jobs (kind, sliver_urn, slice_urn, node_name, args, created_by)
        VALUES (k, NEW.urn, NEW.slice_urn, NEW.node_name, jsonb_build_object('event', ev), actor);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER slivers_enqueue_jobs AFTER UPDATE OR DELETE ON slivers
    FOR EACH ROW EXECUTE FUNCTION slivers_enqueue_jobs();

-- /data archives kept by the aggregate (on Delete, on expiry, and on
-- geniam_fetch_data), downloadable until retention ends.
CREATE TABLE sliver_archives (
    sliver_urn  text PRIMARY KEY,
    slice_urn   text NOT NULL,
    node_name   text NOT NULL,
    path        text NOT NULL,
    bytes       bigint NOT NULL,
    final       boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX sliver_archives_expires ON sliver_archives (expires_at);
COMMENT ON TABLE sliver_archives IS 'Tar files of slivers'' /data in the aggregate''s archive directory; the pruner removes them at expires_at.';
COMMENT ON COLUMN sliver_archives.final IS 'true: taken when the sliver was deleted or expired (the node''s copy is gone).';

-- Expiry warnings: one row per sliver, lead time and expiry; inserting it
-- is what makes exactly one aggregate process log the warning.
CREATE TABLE expiry_warnings (
    sliver_urn text NOT NULL,
    lead       text NOT NULL CHECK (lead IN ('24h', '1h')),
    expires_at timestamptz NOT NULL,
    slice_urn  text NOT NULL,
    node_name  text NOT NULL,
    created_by text NOT NULL,
    warned_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sliver_urn, lead, expires_at)
);
COMMENT ON TABLE expiry_warnings IS 'Warnings given 24 h and 1 h before a provisioned sliver expires (a Renew gives a new expiry, hence new warnings).';

-- What the aggregate last saw of each node agent.
CREATE TABLE agent_health (
    node_name          text PRIMARY KEY REFERENCES nodes(name),
    reachable          boolean NOT NULL,
    since              timestamptz NOT NULL DEFAULT now(),
    last_ok_at         timestamptz,
    last_error         text NOT NULL DEFAULT '',
    unknown_containers text[] NOT NULL DEFAULT '{}',
    checked_at         timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE agent_health IS 'Health polls of the node agents. An unreachable agent makes its node unavailable (nodes.unavailable_reason ''agent unreachable since ...'').';
COMMENT ON COLUMN agent_health.unknown_containers IS 'Sliver ids the agent runs that the aggregate has no sliver or job for: the operator decides (nothing is deleted automatically).';
