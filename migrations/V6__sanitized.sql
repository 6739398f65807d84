-- Events whose JSON held what Postgres cannot store (a \u0000 escape, a UTF-16 surrogate
-- escape without its other half) are stored with U+FFFD in its place and `sanitized` set.
-- Inline, `raw_original` keeps the exact bytes GitHub sent (out of line, the object store
-- has them). An event Postgres refuses even so (a number beyond numeric, nesting deeper
-- than its stack) is stored with its id, `raw_original` (or its object line) and
-- parse_status 'failed', its reason in parse_error: the rest of its page is stored as usual.
ALTER TABLE github_events
    ADD COLUMN sanitized    BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN raw_original BYTEA;
-- The new check is weaker than the old one, so every existing row already passes it: it is
-- added NOT VALID (no scan of a table that may be large, no long lock); new rows are checked.
ALTER TABLE github_events DROP CONSTRAINT github_events_raw_present;
ALTER TABLE github_events ADD CONSTRAINT github_events_raw_present CHECK (
    raw IS NOT NULL OR raw_original IS NOT NULL
    OR (raw_object_key IS NOT NULL AND raw_object_line IS NOT NULL)
) NOT VALID;
