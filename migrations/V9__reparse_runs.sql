-- Where a `ghevents reparse` run stands, keyed by its parameters (type and time window): each
-- batch commits its rows and the last event id it covered together, so a run that was killed
-- continues after that id. A finished run starts over when asked again.
CREATE TABLE reparse_runs (
    params        TEXT PRIMARY KEY,
    last_event_id BIGINT NOT NULL DEFAULT 0,
    events        BIGINT NOT NULL DEFAULT 0,
    started_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL,
    finished_at   TIMESTAMPTZ
);
