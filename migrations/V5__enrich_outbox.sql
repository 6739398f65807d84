-- The outbox holds new push events and those put back after a deferral or a failed attempt;
-- a flush sends the ones due soonest first.
CREATE INDEX IF NOT EXISTS push_events_outbox_due_idx ON push_events (next_attempt_at, push_id)
    WHERE enqueued_at IS NULL AND enrichment_status IN ('pending', 'in_progress');
-- The sweep finds push events still waiting long after their message was sent.
CREATE INDEX IF NOT EXISTS push_events_enqueued_idx ON push_events (enqueued_at)
    WHERE enqueued_at IS NOT NULL AND enrichment_status IN ('pending', 'in_progress');
-- Replaced by push_events_outbox_due_idx.
DROP INDEX IF EXISTS push_events_outbox_idx;
