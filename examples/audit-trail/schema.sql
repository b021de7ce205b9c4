-- The audit trail, created by `audit-trail setup` as the owner role. The writer
-- role that `audit-trail` runs as is granted INSERT and SELECT only (in Go, after
-- this script), so the database refuses it UPDATE, DELETE and TRUNCATE; the
-- triggers below refuse them to every role, the owner included, until the owner
-- disables them on purpose. The advisory lock serialises two setups at once.
SELECT pg_advisory_xact_lock(7523017718);

-- One row per watcher event, in a hash chain per source (see README "Proof").
-- NOT NULL follows the event contract: these fields are always present.
CREATE TABLE IF NOT EXISTS audit_events (
    stream_seq   bigint      PRIMARY KEY,          -- JetStream stream sequence
    subject      text        NOT NULL,
    published_at timestamptz NOT NULL,             -- JetStream's timestamp of the message
    received_at  timestamptz NOT NULL,             -- when audit-trail received it
    event_id     text        NOT NULL UNIQUE,
    source       text        NOT NULL,
    provider     text        NOT NULL,
    kind         text        NOT NULL,
    item_id      text        NOT NULL,
    parent_id    text,
    state        text        NOT NULL,
    status       text        NOT NULL,
    previous_status text,
    sequence     bigint      NOT NULL CHECK (sequence >= 1),
    observed_at  timestamptz NOT NULL,
    created_at   timestamptz,
    event        jsonb       NOT NULL,             -- the document, for queries
    body         bytea       NOT NULL,             -- the message exactly as received, hashed
    chain_pos    bigint      NOT NULL CHECK (chain_pos >= 1),
    prev_hash    bytea       NOT NULL CHECK (length(prev_hash) = 32),
    hash         bytea       NOT NULL CHECK (length(hash) = 32),
    UNIQUE (source, chain_pos)
);

CREATE INDEX IF NOT EXISTS audit_events_item_idx ON audit_events (source, item_id, sequence);
CREATE INDEX IF NOT EXISTS audit_events_parent_idx ON audit_events (source, parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS audit_events_observed_at_idx ON audit_events (observed_at);

-- Stream messages that are not stored as events, with the reason: not a watcher
-- event, refused by the database (a NUL in a JSON string, a missing field), or a
-- second copy of an event already stored. Nothing the stream delivers is dropped.
CREATE TABLE IF NOT EXISTS audit_dead_letters (
    stream_seq   bigint      PRIMARY KEY,
    subject      text        NOT NULL,
    published_at timestamptz NOT NULL,
    received_at  timestamptz NOT NULL,
    event_id     text,
    reason       text        NOT NULL,
    body         bytea       NOT NULL
);

CREATE OR REPLACE FUNCTION audit_trail_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit-trail: % on % refused: the table is append-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE OR REPLACE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_trail_refuse_change();
CREATE OR REPLACE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_trail_refuse_change();
CREATE OR REPLACE TRIGGER audit_dead_letters_append_only BEFORE UPDATE OR DELETE ON audit_dead_letters
    FOR EACH ROW EXECUTE FUNCTION audit_trail_refuse_change();
CREATE OR REPLACE TRIGGER audit_dead_letters_no_truncate BEFORE TRUNCATE ON audit_dead_letters
    FOR EACH STATEMENT EXECUTE FUNCTION audit_trail_refuse_change();

REVOKE ALL ON audit_events, audit_dead_letters FROM PUBLIC;
