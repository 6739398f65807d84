-- The outbox holds new push events and those put back after a deferral or a failed attempt;
-- a flush sends the ones due soonest first.
CREATE INDEX IF NOT EXISTS push_events_outbox_due_idx ON push_events (next_attempt_at, push_id)
    WHERE enqueued_at IS NULL AND enrichment_status IN ('pending', 'in_progress');
-- The sweep finds push events still waiting long after their message was sent.
CREATE INDEX IF NOT EXISTS push_events_enqueued_idx ON push_events (enqueued_at)
    WHERE enqueued_at IS NOT NULL AND enrichment_status IN ('pending', 'in_progress');
-- Replaced by push_events_outbox_due_idx.
DROP INDEX IF EXISTS push_events_outbox_idx;

-- A pause of all enrichment, seen by every worker: set when GitHub answers in a way that says
-- nothing about the push event at hand (401, a 403 or 429 that is not a rate limit: an expired
-- token, an incident). One row at most; `strikes` doubles the next pause until a request
-- succeeds again.
CREATE TABLE IF NOT EXISTS enrichment_pause (
    singleton  BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    until      TIMESTAMPTZ NOT NULL,
    strikes    INTEGER NOT NULL,
    reason     TEXT,
    updated_at TIMESTAMPTZ NOT NULL
);
