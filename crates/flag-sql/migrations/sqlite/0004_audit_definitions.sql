-- The audit log keeps each write's definitions, before and after, so the audit API can show what
-- changed. Only adds: rows written before this migration keep NULL in both (the API shows null),
-- and a release without these columns still runs on a database with them.
ALTER TABLE audit_log ADD COLUMN before_definition TEXT;
ALTER TABLE audit_log ADD COLUMN after_definition TEXT;

-- The audit API pages through one environment newest first, with or without a key.
CREATE INDEX audit_log_by_environment ON audit_log (environment, id);
