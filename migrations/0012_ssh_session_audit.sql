-- SSH sessions in the audit trail (issue 15): the node agents report each
-- SSH session's start and end in their change feed, and the aggregate writes
-- one audit_log row for each (method 'SSH', log_id the session's id, shared by
-- its start and end). Every aggregate process long-polls every agent, so each
-- reads every event: this index lets them all insert the row and keeps one
-- (INSERT ... ON CONFLICT DO NOTHING in store.AuditSessions).

CREATE UNIQUE INDEX audit_log_ssh_once ON audit_log (log_id, at) WHERE method = 'SSH';
COMMENT ON INDEX audit_log_ssh_once IS 'One row per SSH session event (start or end), however many aggregate processes read it from the agent.';
COMMENT ON COLUMN audit_log.method IS 'AM API method, or the unknown method name / (unreadable) for calls refused before dispatch; GetData for /data and output downloads, Console for console views, SSH for SSH session starts and ends (options.event).';
