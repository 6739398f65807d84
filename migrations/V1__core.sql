-- Every event ever seen, of every type, stored exactly once by its GitHub id.
CREATE TABLE github_events (
    event_id        BIGINT PRIMARY KEY,                 -- GitHub sends it as a JSON string
    event_type      TEXT,
    actor_id        BIGINT,
    actor_login     TEXT,
    repo_id         BIGINT,
    repo_name       TEXT,
    org_id          BIGINT,
    public          BOOLEAN,
    created_at      TIMESTAMPTZ,
    -- The raw event: inline JSONB (default store) or a line of a gzip NDJSON object in S3.
    raw             JSONB,
    raw_object_key  TEXT,
    raw_object_line INTEGER,
    ingested_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    source          TEXT NOT NULL CHECK (source IN ('api', 'archive')),
    parse_status    TEXT NOT NULL CHECK (parse_status IN ('parsed', 'skipped', 'failed')),
    parse_error     TEXT,
    CONSTRAINT github_events_raw_present CHECK (
        raw IS NOT NULL OR (raw_object_key IS NOT NULL AND raw_object_line IS NOT NULL)
    )
);
CREATE INDEX github_events_created_at_idx ON github_events (created_at);
CREATE INDEX github_events_type_created_at_idx ON github_events (event_type, created_at);
CREATE INDEX github_events_repo_idx ON github_events (repo_id, created_at);
CREATE INDEX github_events_actor_idx ON github_events (actor_id, created_at);
CREATE INDEX github_events_failed_idx ON github_events (event_id) WHERE parse_status = 'failed';

-- PushEvents in structured form. size, distinct_size and commit_count are NULL when the
-- payload does not carry them (GitHub removed them from the Events API on 2025-10-07).
CREATE TABLE push_events (
    push_id           BIGINT PRIMARY KEY,
    event_id          BIGINT NOT NULL UNIQUE REFERENCES github_events (event_id),
    repo_id           BIGINT NOT NULL,
    repo_name         TEXT NOT NULL,
    actor_id          BIGINT NOT NULL,
    actor_login       TEXT NOT NULL,
    ref               TEXT,
    head              TEXT,
    before            TEXT,
    size              INTEGER,
    distinct_size     INTEGER,
    commit_count      INTEGER,
    created_at        TIMESTAMPTZ NOT NULL,
    enrichment_status TEXT NOT NULL DEFAULT 'pending'
        CHECK (enrichment_status IN ('pending', 'in_progress', 'completed', 'failed')),
    attempts          INTEGER NOT NULL DEFAULT 0,
    next_attempt_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    locked_until      TIMESTAMPTZ,                      -- lease of an in_progress row
    last_error        TEXT,
    enriched_at       TIMESTAMPTZ,
    enqueued_at       TIMESTAMPTZ                       -- outbox: handed to the queue
);
CREATE INDEX push_events_repo_idx ON push_events (repo_id, created_at);
CREATE INDEX push_events_actor_idx ON push_events (actor_id, created_at);
CREATE INDEX push_events_created_at_idx ON push_events (created_at);
CREATE INDEX push_events_work_idx ON push_events (next_attempt_at)
    WHERE enrichment_status IN ('pending', 'in_progress');

-- Where polling of a feed stands, so any process continues where the last one stopped.
CREATE TABLE poll_state (
    feed               TEXT PRIMARY KEY,
    etag               TEXT,
    etag_updated_at    TIMESTAMPTZ,
    last_polled_at     TIMESTAMPTZ,
    poll_interval_secs INTEGER,
    next_poll_at       TIMESTAMPTZ,
    cycle_started_at   TIMESTAMPTZ,
    cycle_completed_at TIMESTAMPTZ,
    last_result        TEXT,
    last_summary       JSONB,
    last_error         TEXT
);

-- GitHub's rate limit as last observed, per identity (anonymous or a token's fingerprint,
-- never the token) and resource. It is also the budget every process draws from.
CREATE TABLE rate_limit_state (
    identity           TEXT NOT NULL,
    resource           TEXT NOT NULL DEFAULT 'core',
    limit_total        INTEGER NOT NULL,
    remaining          INTEGER NOT NULL,
    used               INTEGER NOT NULL DEFAULT 0,
    reset_at           TIMESTAMPTZ,
    observed_at        TIMESTAMPTZ NOT NULL,
    -- GitHub's own X-RateLimit-Used from the newest response applied: older answers
    -- arriving late never overwrite newer ones.
    github_used        INTEGER,
    in_flight          INTEGER NOT NULL DEFAULT 0,
    retry_after_until  TIMESTAMPTZ,                     -- secondary limit: nothing before
    secondary_strikes  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (identity, resource)
);
