-- Change webhooks (rule 15 of the repository port): the audit log, written in each write's own
-- transaction, is the outbox; these tables only add each receiver's place in it. Only adds: a
-- release without webhooks runs on a database with them, and nothing existing changes.

-- A receiver (named by a hash of its URL: a chat webhook's URL is its secret) and the last audit
-- row committed before it was followed (earlier writes are never sent), with who delivers to it
-- and until when (Unix ms), so of several instances one does.
CREATE TABLE webhook_receivers (
    receiver   TEXT   PRIMARY KEY,
    since      BIGINT NOT NULL,
    holder     TEXT,
    held_until BIGINT NOT NULL DEFAULT 0
);

-- Per receiver and environment, the last audit row delivered.
CREATE TABLE webhook_cursors (
    receiver    TEXT   NOT NULL,
    environment TEXT   NOT NULL,
    delivered   BIGINT NOT NULL,
    PRIMARY KEY (receiver, environment)
);
