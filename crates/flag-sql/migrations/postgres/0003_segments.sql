-- Segments: named audiences of an environment, written and versioned like flags, in the same
-- revision sequence (every segment write bumps its environment's revision in its transaction).
-- The audit log learns what kind of thing each row is about. Only adds, so a release without
-- segments still runs on a database with them.
CREATE TABLE segments (
    environment TEXT   NOT NULL REFERENCES environments (name),
    key         TEXT   NOT NULL,
    definition  TEXT   NOT NULL, -- the segment's JSON, version and updatedAt included
    version     BIGINT NOT NULL,
    updated_at  TEXT   NOT NULL, -- RFC 3339
    PRIMARY KEY (environment, key)
);

ALTER TABLE audit_log ADD COLUMN kind TEXT NOT NULL DEFAULT 'flag';
