//! The actor and repository cache.

use super::{Ctx, StoreError};
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Actor,
    Repo,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Actor => "actor",
            Kind::Repo => "repo",
        }
    }
    fn table(self) -> &'static str {
        match self {
            Kind::Actor => "actors",
            Kind::Repo => "repositories",
        }
    }
    fn id_col(self) -> &'static str {
        match self {
            Kind::Actor => "actor_id",
            Kind::Repo => "repo_id",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub gone: bool,
    pub etag: Option<String>,
    pub fetched_at: DateTime<Utc>,
}

pub async fn get(pool: &Pool, kind: Kind, id: i64) -> Result<Option<Entry>, StoreError> {
    let sql = format!(
        "SELECT status, etag, fetched_at FROM {} WHERE {} = $1",
        kind.table(),
        kind.id_col()
    );
    let row = pool
        .get()
        .await?
        .query_opt(&sql, &[&id])
        .await
        .ctx("read cache")?;
    Ok(row.map(|r| Entry {
        gone: r.get::<_, &str>(0) == "gone",
        etag: r.get(1),
        fetched_at: r.get(2),
    }))
}

fn text(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::to_owned)
}
fn int(v: &Value, k: &str) -> Option<i32> {
    v.get(k)
        .and_then(Value::as_i64)
        .and_then(|n| i32::try_from(n).ok())
}
fn time(v: &Value, k: &str) -> Option<DateTime<Utc>> {
    v.get(k)
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.to_utc())
}

/// Stores a 200 answer: the raw JSON and the fields analysts query.
pub async fn put_ok(
    pool: &Pool,
    kind: Kind,
    id: i64,
    name: &str,
    raw: &Value,
    etag: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    // jsonb and text columns refuse NUL: an answer holding one is cached with U+FFFD instead.
    let clean = crate::sanitize::json_value(raw);
    if matches!(clean, std::borrow::Cow::Owned(_)) {
        tracing::warn!(
            kind = kind.as_str(),
            id,
            error_code = "answer_sanitized",
            "NUL in the answer cached as U+FFFD"
        );
    }
    let raw: &Value = &clean;
    let name = &*crate::sanitize::text(name);
    let c = pool.get().await?;
    match kind {
        Kind::Actor => c
            .execute(
                "INSERT INTO actors (actor_id, login, status, raw, etag, fetched_at, actor_type, name, company, location,
                    followers, public_repos, created_at)
                 VALUES ($1, $2, 'ok', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                 ON CONFLICT (actor_id) DO UPDATE SET login = EXCLUDED.login, status = 'ok', raw = EXCLUDED.raw,
                    etag = EXCLUDED.etag, fetched_at = EXCLUDED.fetched_at, actor_type = EXCLUDED.actor_type,
                    name = EXCLUDED.name, company = EXCLUDED.company, location = EXCLUDED.location,
                    followers = EXCLUDED.followers, public_repos = EXCLUDED.public_repos, created_at = EXCLUDED.created_at",
                &[
                    &id,
                    &text(raw, "login").unwrap_or_else(|| name.to_owned()),
                    raw,
                    &etag,
                    &now,
                    &text(raw, "type"),
                    &text(raw, "name"),
                    &text(raw, "company"),
                    &text(raw, "location"),
                    &int(raw, "followers"),
                    &int(raw, "public_repos"),
                    &time(raw, "created_at"),
                ],
            )
            .await
            .ctx("store actor")?,
        Kind::Repo => c
            .execute(
                "INSERT INTO repositories (repo_id, full_name, status, raw, etag, fetched_at, owner_login, language,
                    stargazers_count, forks_count, open_issues_count, default_branch, is_fork, archived, created_at, pushed_at)
                 VALUES ($1, $2, 'ok', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
                 ON CONFLICT (repo_id) DO UPDATE SET full_name = EXCLUDED.full_name, status = 'ok', raw = EXCLUDED.raw,
                    etag = EXCLUDED.etag, fetched_at = EXCLUDED.fetched_at, owner_login = EXCLUDED.owner_login,
                    language = EXCLUDED.language, stargazers_count = EXCLUDED.stargazers_count,
                    forks_count = EXCLUDED.forks_count, open_issues_count = EXCLUDED.open_issues_count,
                    default_branch = EXCLUDED.default_branch, is_fork = EXCLUDED.is_fork, archived = EXCLUDED.archived,
                    created_at = EXCLUDED.created_at, pushed_at = EXCLUDED.pushed_at",
                &[
                    &id,
                    &text(raw, "full_name").unwrap_or_else(|| name.to_owned()),
                    raw,
                    &etag,
                    &now,
                    &raw.get("owner").and_then(|o| text(o, "login")),
                    &text(raw, "language"),
                    &int(raw, "stargazers_count"),
                    &int(raw, "forks_count"),
                    &int(raw, "open_issues_count"),
                    &text(raw, "default_branch"),
                    &raw.get("fork").and_then(Value::as_bool),
                    &raw.get("archived").and_then(Value::as_bool),
                    &time(raw, "created_at"),
                    &time(raw, "pushed_at"),
                ],
            )
            .await
            .ctx("store repository")?,
    };
    Ok(())
}

/// Records a 404/410: the entry is `gone` and is never requested again.
pub async fn put_gone(
    pool: &Pool,
    kind: Kind,
    id: i64,
    name: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let name_col = match kind {
        Kind::Actor => "login",
        Kind::Repo => "full_name",
    };
    let sql = format!(
        "INSERT INTO {t} ({idc}, {name_col}, status, fetched_at) VALUES ($1, $2, 'gone', $3)
         ON CONFLICT ({idc}) DO UPDATE SET status = 'gone', fetched_at = EXCLUDED.fetched_at",
        t = kind.table(),
        idc = kind.id_col()
    );
    pool.get()
        .await?
        .execute(&sql, &[&id, &name, &now])
        .await
        .ctx("store gone")?;
    Ok(())
}

/// A 304: what we hold is current.
pub async fn touch(pool: &Pool, kind: Kind, id: i64, now: DateTime<Utc>) -> Result<(), StoreError> {
    let sql = format!(
        "UPDATE {} SET fetched_at = $2 WHERE {} = $1",
        kind.table(),
        kind.id_col()
    );
    pool.get()
        .await?
        .execute(&sql, &[&id, &now])
        .await
        .ctx("refresh cache entry")?;
    Ok(())
}

/// Takes the fetch lease of a login or repository name until `until`, if nobody holds a
/// live one.
pub async fn take_fetch_lease(
    pool: &Pool,
    kind: Kind,
    name: &str,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let row = pool
        .get()
        .await?
        .query_opt(
            "INSERT INTO enrichment_fetch_leases (kind, name, locked_until) VALUES ($1, lower($2), $4)
             ON CONFLICT (kind, name) DO UPDATE SET locked_until = EXCLUDED.locked_until
             WHERE enrichment_fetch_leases.locked_until <= $3
             RETURNING 1",
            &[&kind.as_str(), &name, &now, &until],
        )
        .await
        .ctx("take fetch lease")?;
    Ok(row.is_some())
}

pub async fn release_fetch_lease(pool: &Pool, kind: Kind, name: &str) -> Result<(), StoreError> {
    pool.get()
        .await?
        .execute(
            "DELETE FROM enrichment_fetch_leases WHERE kind = $1 AND name = lower($2)",
            &[&kind.as_str(), &name],
        )
        .await
        .ctx("release fetch lease")?;
    Ok(())
}

/// The id a login or repository name was last answered with, if that answer is newer than
/// `fresh_since` and not gone.
pub async fn fresh_id_for_name(
    pool: &Pool,
    kind: Kind,
    name: &str,
    fresh_since: DateTime<Utc>,
) -> Result<Option<i64>, StoreError> {
    let name_col = match kind {
        Kind::Actor => "login",
        Kind::Repo => "full_name",
    };
    let sql = format!(
        "SELECT {idc} FROM {t} WHERE lower({name_col}) = lower($1) AND status = 'ok' AND fetched_at > $2
         ORDER BY fetched_at DESC LIMIT 1",
        idc = kind.id_col(),
        t = kind.table()
    );
    Ok(pool
        .get()
        .await?
        .query_opt(&sql, &[&name, &fresh_since])
        .await
        .ctx("read cache by name")?
        .map(|r| r.get(0)))
}
