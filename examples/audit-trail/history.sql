-- The status history of one item and of the items nested in it.
-- $1 is the source name, $2 the item's id. The item's own transitions come first,
-- then each nested item's (payment_refund, payment_rfi, ...) in the order the nested
-- items first appeared; each item's transitions are in sequence order.
SELECT kind,
       item_id,
       parent_id,
       sequence,
       previous_status,
       status,
       state,
       observed_at,
       event_id
FROM (
    SELECT *, min(observed_at) OVER (PARTITION BY kind, parent_id, item_id) AS first_seen
    FROM audit_events
    WHERE source = $1 AND (item_id = $2 OR parent_id = $2)
) AS history
ORDER BY item_id <> $2, first_seen, kind, item_id, sequence;
