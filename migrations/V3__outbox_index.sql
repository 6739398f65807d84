-- The outbox sweep reads push events committed but never handed to the queue, oldest first.
CREATE INDEX push_events_outbox_idx ON push_events (created_at, push_id) WHERE enqueued_at IS NULL;
