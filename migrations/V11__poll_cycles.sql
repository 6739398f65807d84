-- One row per poll cycle that sent a request: what it read and whether it suspects a gap (it
-- read its last page without meeting an event stored before it, so older events may have left
-- the feed unseen). `ghevents status` and `ghevents check` count the gaps of the last 24 hours
-- from here; rows older than 30 days are deleted as new ones arrive.
CREATE TABLE poll_cycles (
    id                BIGSERIAL PRIMARY KEY,
    feed              TEXT NOT NULL,
    started_at        TIMESTAMPTZ NOT NULL,
    ended_at          TIMESTAMPTZ NOT NULL,
    outcome           TEXT NOT NULL,
    requests          INTEGER NOT NULL,
    pages             INTEGER NOT NULL,
    not_modified      INTEGER NOT NULL,
    new_events        INTEGER NOT NULL,
    duplicates        INTEGER NOT NULL,
    gap_suspected     BOOLEAN NOT NULL,
    newest_created_at TIMESTAMPTZ
);
CREATE INDEX poll_cycles_ended_at_idx ON poll_cycles (ended_at);
CREATE INDEX poll_cycles_gaps_idx ON poll_cycles (ended_at) WHERE gap_suspected;
