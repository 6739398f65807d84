-- Actors and repositories fetched from the GitHub API, cached by GitHub id. Push events link
-- to them through push_events.actor_id / repo_id. Entries older than the cache TTL are
-- revalidated with their ETag; 404/410 answers are kept as 'gone' and never asked again.
CREATE TABLE actors (
    actor_id      BIGINT PRIMARY KEY,
    login         TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('ok', 'gone')),
    raw           JSONB,
    etag          TEXT,
    fetched_at    TIMESTAMPTZ NOT NULL,
    actor_type    TEXT,
    name          TEXT,
    company       TEXT,
    location      TEXT,
    followers     INTEGER,
    public_repos  INTEGER,
    created_at    TIMESTAMPTZ
);
-- GitHub matches logins and repository names case-insensitively.
CREATE INDEX actors_login_idx ON actors (lower(login));

CREATE TABLE repositories (
    repo_id          BIGINT PRIMARY KEY,
    full_name        TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('ok', 'gone')),
    raw              JSONB,
    etag             TEXT,
    fetched_at       TIMESTAMPTZ NOT NULL,
    owner_login      TEXT,
    language         TEXT,
    stargazers_count INTEGER,
    forks_count      INTEGER,
    open_issues_count INTEGER,
    default_branch   TEXT,
    is_fork          BOOLEAN,
    archived         BOOLEAN,
    created_at       TIMESTAMPTZ,
    pushed_at        TIMESTAMPTZ
);
CREATE INDEX repositories_full_name_idx ON repositories (lower(full_name));
CREATE INDEX repositories_language_idx ON repositories (language);

-- What an analyst queries: push events with their actor and repository.
CREATE VIEW push_events_enriched AS
SELECT p.*,
       a.actor_type, a.name AS actor_name, a.company AS actor_company, a.location AS actor_location,
       a.followers AS actor_followers, a.status AS actor_status,
       r.language AS repo_language, r.stargazers_count AS repo_stargazers, r.forks_count AS repo_forks,
       r.is_fork AS repo_is_fork, r.archived AS repo_archived, r.status AS repo_status
FROM push_events p
LEFT JOIN actors a ON a.actor_id = p.actor_id
LEFT JOIN repositories r ON r.repo_id = p.repo_id;

-- Who is fetching an actor or repository right now, so concurrent workers ask GitHub once.
-- A lease, not a lock held on a connection: a worker that dies lets it expire.
-- Keyed by what is requested (a login or owner/name, lower-cased: GitHub ignores case), which
-- several ids may share when a name was deleted and taken again.
CREATE TABLE enrichment_fetch_leases (
    kind         TEXT NOT NULL CHECK (kind IN ('actor', 'repo')),
    name         TEXT NOT NULL,
    locked_until TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (kind, name)
);
