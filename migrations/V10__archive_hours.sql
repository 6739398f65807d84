-- GH Archive hours: one row per UTC hour, the state of its import and what it found.
--
-- An hour's valid lines are, once it is `done`, exactly `stored + already_present`:
--   stored          lines whose event is held with source 'archive' (written by this hour's
--                   import, in this attempt or an earlier one),
--   already_present lines whose event polling had stored before (source 'api'), untouched.
-- So `already_present / (stored + already_present)` is the share of the hour polling had
-- caught: the coverage of the /events feed.
CREATE TABLE archive_hours (
    hour             TIMESTAMPTZ PRIMARY KEY CHECK (date_trunc('hour', hour) = hour),
    status           TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'in_progress', 'done', 'missing', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Lease of an in_progress row: once it has passed, the worker is presumed dead and the
    -- hour is claimable again.
    claimed_until    TIMESTAMPTZ,
    -- Counters of the lines up to lines_committed (all of them once done).
    lines            BIGINT NOT NULL DEFAULT 0,
    blank_lines      BIGINT NOT NULL DEFAULT 0,
    stored           BIGINT NOT NULL DEFAULT 0,
    already_present  BIGINT NOT NULL DEFAULT 0,
    rejected         BIGINT NOT NULL DEFAULT 0,
    -- {reason code: {count, message, first_lines}}
    rejections       JSONB NOT NULL DEFAULT '{}',
    push_events      BIGINT NOT NULL DEFAULT 0,
    -- Archive push events enriched from the cache at import, and those left unenriched by
    -- the enrichment policy (enrichment_status 'skipped').
    push_cache_enriched BIGINT NOT NULL DEFAULT 0,
    push_not_enriched   BIGINT NOT NULL DEFAULT 0,
    -- Compressed bytes of the hour's file (as downloaded).
    bytes            BIGINT NOT NULL DEFAULT 0,
    -- Where a resumed import starts reading: every line before it is written.
    lines_committed  BIGINT NOT NULL DEFAULT 0,
    -- S3 mode: the stored copy of the hour's file the rows point to.
    object_key       TEXT,
    started_at       TIMESTAMPTZ,
    finished_at      TIMESTAMPTZ,
    last_error       TEXT,
    -- Why the row is as it is (not published yet, missing, lines rejected, stopped early).
    reason           TEXT,
    -- already_present / valid lines, and (stored + already_present) / valid lines; set when done.
    polled_share     DOUBLE PRECISION,
    stored_share     DOUBLE PRECISION,
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX archive_hours_due_idx ON archive_hours (next_attempt_at)
    WHERE status IN ('pending', 'failed', 'in_progress');

-- Archive push events are enriched from the cache only unless ENRICH_ARCHIVE=true (an hour
-- holds tens of thousands of them; the rate budget is 60 requests an hour unauthenticated):
-- those the cache cannot complete are 'skipped', never queued nor picked by a worker.
-- The new check is weaker than the old one: added NOT VALID, no scan of a large table.
ALTER TABLE push_events DROP CONSTRAINT IF EXISTS push_events_enrichment_status_check;
ALTER TABLE push_events ADD CONSTRAINT push_events_enrichment_status_check
    CHECK (enrichment_status IN ('pending', 'in_progress', 'completed', 'failed', 'skipped')) NOT VALID;
