-- geniam schema, version 3: the audit trail and operator settings.
--
-- One row of audit_log per AM API call, written by the aggregate after the
-- reply (asynchronously: a slow database never holds a call up). A deployment
-- (Provision) also records which image digest went to which node, so that
-- "who ran what where, when" survives the deletion of the slivers.

CREATE TABLE audit_log (
    id                bigserial PRIMARY KEY,
    at                timestamptz NOT NULL,
    log_id            text NOT NULL,
    method            text NOT NULL,
    remote_addr       text NOT NULL DEFAULT '',
    caller_urn        text NOT NULL DEFAULT '',
    user_urn          text NOT NULL DEFAULT '',
    speaks_for        boolean NOT NULL DEFAULT false,
    slice_urn         text NOT NULL DEFAULT '',
    sliver_urns       text[] NOT NULL DEFAULT '{}',
    credential_digest text NOT NULL DEFAULT '',
    credential_issuer text NOT NULL DEFAULT '',
    options           jsonb NOT NULL DEFAULT '{}',
    geni_code         integer NOT NULL,
    code_name         text NOT NULL,
    output            text NOT NULL DEFAULT '',
    duration_ms       double precision NOT NULL,
    deployed          jsonb NOT NULL DEFAULT '[]'
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_slice ON audit_log (slice_urn, at) WHERE slice_urn <> '';
CREATE INDEX audit_log_user ON audit_log (user_urn, at);
CREATE INDEX audit_log_caller ON audit_log (caller_urn, at);
CREATE INDEX audit_log_log_id ON audit_log (log_id);
COMMENT ON TABLE audit_log IS 'One row per AM API call: who (caller, user, credential), what (method, slice, slivers, options), the outcome (geni_code, output) and the log id quoted in error replies.';
COMMENT ON COLUMN audit_log.at IS 'When the call arrived.';
COMMENT ON COLUMN audit_log.log_id IS 'Id of the call in the aggregate log; every error reply quotes it as "(log id ...)".';
COMMENT ON COLUMN audit_log.method IS 'AM API method, or the unknown method name / (unreadable) for calls refused before dispatch.';
COMMENT ON COLUMN audit_log.caller_urn IS 'URN of the TLS client certificate (the tool, under speaks-for).';
COMMENT ON COLUMN audit_log.user_urn IS 'Effective user the credentials authorized: the spoken-for user under speaks-for, else the caller. Empty when authorization was not reached.';
COMMENT ON COLUMN audit_log.speaks_for IS 'true when caller_urn spoke for user_urn (geni_speaking_for).';
COMMENT ON COLUMN audit_log.slice_urn IS 'Slice the call acted on (resolved from sliver URNs when only those were given).';
COMMENT ON COLUMN audit_log.sliver_urns IS 'Sliver URNs named by the call or created/changed by it.';
COMMENT ON COLUMN audit_log.credential_digest IS 'sha256 (hex) of the credential that granted the call.';
COMMENT ON COLUMN audit_log.credential_issuer IS 'URN of the signer of that credential.';
COMMENT ON COLUMN audit_log.options IS 'The call''s options, with SSH keys and secrets replaced by a count or "(redacted)".';
COMMENT ON COLUMN audit_log.geni_code IS 'geni_code of the reply (0 = SUCCESS); a negative XML-RPC fault code when the call could not be read.';
COMMENT ON COLUMN audit_log.output IS 'The reply''s output text (the error message, with its log id).';
COMMENT ON COLUMN audit_log.deployed IS 'For Provision: [{"sliver_urn","node","client_id","image_url","image_sha256"}] of the slivers deployed.';

-- Who deployed which image digest to which node, one row per sliver deployed.
CREATE VIEW deployments AS
SELECT a.at,
       a.user_urn,
       a.caller_urn,
       a.slice_urn,
       d->>'node'         AS node_name,
       d->>'sliver_urn'   AS sliver_urn,
       d->>'client_id'    AS client_id,
       d->>'image_sha256' AS image_sha256,
       d->>'image_url'    AS image_url,
       a.log_id
FROM audit_log a, jsonb_array_elements(a.deployed) d
WHERE a.geni_code = 0
ORDER BY a.at, a.id;
COMMENT ON VIEW deployments IS 'Who deployed which image (sha256) to which node and when: one row per sliver provisioned, kept after the sliver is gone.';

-- Settings shared by every aggregate process on this database.
CREATE TABLE settings (
    key        text PRIMARY KEY,
    value      text NOT NULL,
    updated_by text NOT NULL DEFAULT '',
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE settings IS 'Runtime switches shared by all aggregate processes, e.g. maintenance (the message refusing new Allocates; absent or empty: off). Set with geni-am admin.';
