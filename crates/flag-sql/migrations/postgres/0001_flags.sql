-- Environments, their flags and the audit log. The revision bump, the flag write and the audit row
-- of one write always commit together (one transaction in SqlRepository).
CREATE TABLE environments (
    name     TEXT PRIMARY KEY,
    revision BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE flags (
    environment TEXT   NOT NULL REFERENCES environments (name),
    key         TEXT   NOT NULL,
    definition  TEXT   NOT NULL, -- the flag's JSON, version and updatedAt included
    version     BIGINT NOT NULL,
    updated_at  TEXT   NOT NULL, -- RFC 3339
    PRIMARY KEY (environment, key)
);

CREATE TABLE audit_log (
    id          BIGSERIAL PRIMARY KEY,
    environment TEXT   NOT NULL,
    key         TEXT   NOT NULL,
    action      TEXT   NOT NULL, -- create | update | delete
    old_version BIGINT,
    new_version BIGINT,
    revision    BIGINT NOT NULL,
    at          TEXT   NOT NULL, -- RFC 3339
    actor       TEXT   NOT NULL
);

CREATE INDEX audit_log_by_flag ON audit_log (environment, key, id);
