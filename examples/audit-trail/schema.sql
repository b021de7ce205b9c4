-- The audit trail: one row per watcher event, keyed by the event id, so that a
-- redelivered event is a no-op. sequence is bigint because the event's sequence is
-- an unsigned 32-bit number. The advisory lock serialises two instances creating the
-- schema at once.
SELECT pg_advisory_xact_lock(7523017718);

CREATE TABLE IF NOT EXISTS watcher_events (
    event_id    text PRIMARY KEY,
    source      text,
    kind        text,
    item_id     text,
    parent_id   text,
    state       text,
    status      text,
    sequence    bigint,
    observed_at timestamptz,
    created_at  timestamptz,
    event       jsonb NOT NULL
);

CREATE INDEX IF NOT EXISTS watcher_events_item_idx ON watcher_events (source, item_id, sequence);
CREATE INDEX IF NOT EXISTS watcher_events_parent_idx ON watcher_events (source, parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS watcher_events_observed_at_idx ON watcher_events (observed_at);
