-- geniam schema, version 7 (issue 16): what an experimenter needs to work in
-- a container and to see it after the end.
--
-- * Where to log in: the node agent's SSH server (host, port, user = the
--   sliver id), as the agent reports it; the manifest's <login>.
-- * How the container runs (<geniam:run>: restart policy, time limit,
--   environment, argv).
-- * The start command's last output lines, as the agent last reported them
--   (bounded by the agent: log_tail_lines / log_tail_bytes).
-- * ended_slivers: a sliver that was deleted or expired, kept (with why it
--   ended, its exit code, its output tail and its /data URL) for as long as
--   its archive (provisioning.archive_retention; the provisioner prunes),
--   so that Status and Describe of the slice can still show it (option
--   geniam_ended: the AM API's own tests want an empty slice after Delete).

ALTER TABLE slivers
    ADD COLUMN login_host  text NOT NULL DEFAULT '',
    ADD COLUMN login_port  integer NOT NULL DEFAULT 0,
    ADD COLUMN login_user  text NOT NULL DEFAULT '',
    ADD COLUMN stdout_tail text NOT NULL DEFAULT '',
    ADD COLUMN stderr_tail text NOT NULL DEFAULT '',
    ADD COLUMN run         jsonb;
COMMENT ON COLUMN slivers.run IS '<geniam:run> as granted: {"restart", "max_retries", "time_limit" (s), "env" [KEY=value], "args" [argv]}; NULL when the request had none.';
COMMENT ON COLUMN slivers.login_host IS 'SSH host of the node agent''s login server ('''' until the container runs).';
COMMENT ON COLUMN slivers.login_user IS 'SSH user name on login_host:login_port (the agent''s sliver id).';
COMMENT ON COLUMN slivers.stdout_tail IS 'Last lines of the container''s stdout, as its agent last reported them.';

CREATE TABLE ended_slivers (
    sliver_urn        text PRIMARY KEY,
    slice_urn         text NOT NULL,
    node_name         text NOT NULL,
    client_id         text NOT NULL DEFAULT '',
    sliver_type       text NOT NULL DEFAULT '',
    image_url         text NOT NULL DEFAULT '',
    image_sha256      text NOT NULL DEFAULT '',
    was_provisioned   boolean NOT NULL,
    operational_state text NOT NULL,
    ended_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    why               text NOT NULL,
    actor             text NOT NULL,
    expires_at        timestamptz NOT NULL,
    error             text NOT NULL DEFAULT '',
    exit_code         integer,
    data_url          text NOT NULL DEFAULT '',
    log_url           text NOT NULL DEFAULT '',
    stdout_tail       text NOT NULL DEFAULT '',
    stderr_tail       text NOT NULL DEFAULT ''
);
CREATE INDEX ended_slivers_slice ON ended_slivers (slice_urn);
CREATE INDEX ended_slivers_ended ON ended_slivers (ended_at);
COMMENT ON TABLE ended_slivers IS 'Deleted or expired slivers, listed as geni_unallocated by Status and Describe of their slice (option geniam_ended) for the archive retention. Written by a trigger on DELETE FROM slivers.';
COMMENT ON COLUMN ended_slivers.why IS 'What ended it: Delete, expire, Shutdown, sql:DELETE (by hand), ...';

CREATE FUNCTION slivers_record_end() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ev    text := coalesce(nullif(current_setting('geniam.event', true), ''), 'sql:DELETE');
    actor text := coalesce(nullif(current_setting('geniam.actor', true), ''), 'psql:' || session_user);
BEGIN
    INSERT INTO ended_slivers (sliver_urn, slice_urn, node_name, client_id, sliver_type, image_url, image_sha256,
        was_provisioned, operational_state, why, actor, expires_at, error, exit_code, data_url, log_url, stdout_tail, stderr_tail)
    VALUES (OLD.urn, OLD.slice_urn, OLD.node_name, OLD.client_id, OLD.sliver_type, OLD.image_url, OLD.image_sha256,
        OLD.allocation_state = 'geni_provisioned', OLD.operational_state, ev, actor, OLD.expires_at, OLD.error, OLD.exit_code,
        OLD.data_url, OLD.log_url, OLD.stdout_tail, OLD.stderr_tail)
    ON CONFLICT (sliver_urn) DO UPDATE SET ended_at = EXCLUDED.ended_at, why = EXCLUDED.why, actor = EXCLUDED.actor,
        operational_state = EXCLUDED.operational_state, error = EXCLUDED.error, exit_code = EXCLUDED.exit_code,
        stdout_tail = EXCLUDED.stdout_tail, stderr_tail = EXCLUDED.stderr_tail;
    RETURN OLD;
END $$;
CREATE TRIGGER slivers_record_end AFTER DELETE ON slivers
    FOR EACH ROW EXECUTE FUNCTION slivers_record_end();
