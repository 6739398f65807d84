-- What `ghevents retry` put back to pending: one row per push event and retry, with the state
-- it had (status, attempts, last error), so resetting a row never loses why it had failed.
-- Append-only; a new table, so its index is created here.
CREATE TABLE enrichment_retries (
    retry_id        BIGSERIAL PRIMARY KEY,
    push_id         BIGINT NOT NULL,
    retried_at      TIMESTAMPTZ NOT NULL,
    previous_status TEXT NOT NULL,
    attempts        INTEGER NOT NULL,
    last_error      TEXT,
    next_attempt_at TIMESTAMPTZ,
    locked_until    TIMESTAMPTZ
);
CREATE INDEX enrichment_retries_push_idx ON enrichment_retries (push_id, retried_at);
