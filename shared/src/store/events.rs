use super::{Ctx, StoreError};
use crate::event::{EventRow, Parsed, PushRow};
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;

/// Where an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Api,
    Archive,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Api => "api",
            Source::Archive => "archive",
        }
    }
}

/// Where the raw bytes of an event live.
#[derive(Debug, Clone, PartialEq)]
pub enum RawRef {
    /// Inline, as JSONB.
    Inline(String),
    /// Line `line` (0-based) of the gzip NDJSON object `key`.
    Object { key: String, line: i32 },
}

/// One event to store: what the parser made of it and where its raw bytes are.
#[derive(Debug, Clone)]
pub struct EventInsert {
    pub parsed: Parsed,
    pub raw: RawRef,
}

/// What writing a page (or an import batch) did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PageWrite {
    pub new_events: u64,
    pub duplicates: u64,
    pub parse_failed_new: u64,
    /// Push ids stored by this write (new rows only): the work for enrichment.
    pub new_push_ids: Vec<i64>,
    /// Event ids of this batch already stored before it.
    pub duplicate_ids: Vec<i64>,
}

const INSERT_EVENTS: &str = "
INSERT INTO github_events (event_id, event_type, actor_id, actor_login, repo_id, repo_name, org_id,
    public, created_at, raw, raw_object_key, raw_object_line, source, parse_status, parse_error, ingested_at)
SELECT u.event_id, u.event_type, u.actor_id, u.actor_login, u.repo_id, u.repo_name, u.org_id,
    u.public, u.created_at, u.raw::jsonb, u.raw_key, u.raw_line, $15, u.parse_status, u.parse_error, $16
FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::bigint[], $6::text[], $7::bigint[],
    $8::bool[], $9::timestamptz[], $10::text[], $11::text[], $12::int[], $13::text[], $14::text[])
    AS u(event_id, event_type, actor_id, actor_login, repo_id, repo_name, org_id,
         public, created_at, raw, raw_key, raw_line, parse_status, parse_error)
ON CONFLICT (event_id) DO NOTHING
RETURNING event_id";

const INSERT_PUSHES: &str = "
INSERT INTO push_events (push_id, event_id, repo_id, repo_name, actor_id, actor_login, ref, head, before,
    size, distinct_size, commit_count, created_at, next_attempt_at)
SELECT u.* , $14::timestamptz
FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::bigint[], $6::text[], $7::text[],
    $8::text[], $9::text[], $10::int[], $11::int[], $12::int[], $13::timestamptz[])
    AS u(push_id, event_id, repo_id, repo_name, actor_id, actor_login, ref, head, before,
         size, distinct_size, commit_count, created_at)
ON CONFLICT DO NOTHING
RETURNING push_id";

/// Stores a batch in one transaction: every event once (by id), and the PushEvents among the
/// new ones in structured form. Running it again with the same events stores nothing.
pub async fn write_events(
    pool: &Pool,
    batch: &[EventInsert],
    source: Source,
    now: DateTime<Utc>,
) -> Result<PageWrite, StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await.ctx("begin")?;
    let out = write_events_tx(&tx, batch, source, now).await?;
    crate::failpoints::hit("store::before_commit");
    tx.commit().await.ctx("commit page")?;
    Ok(out)
}

/// [`write_events`] inside a caller's transaction.
pub async fn write_events_tx(
    tx: &tokio_postgres::Transaction<'_>,
    batch: &[EventInsert],
    source: Source,
    now: DateTime<Utc>,
) -> Result<PageWrite, StoreError> {
    let n = batch.len();
    let mut ids = Vec::with_capacity(n);
    let mut types = Vec::with_capacity(n);
    let mut actor_ids = Vec::with_capacity(n);
    let mut actor_logins = Vec::with_capacity(n);
    let mut repo_ids = Vec::with_capacity(n);
    let mut repo_names = Vec::with_capacity(n);
    let mut org_ids = Vec::with_capacity(n);
    let mut publics = Vec::with_capacity(n);
    let mut created = Vec::with_capacity(n);
    let mut raws: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut keys: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut lines: Vec<Option<i32>> = Vec::with_capacity(n);
    let mut statuses = Vec::with_capacity(n);
    let mut errors = Vec::with_capacity(n);
    let mut sanitized: Vec<(usize, String)> = Vec::new();
    for (i, e) in batch.iter().enumerate() {
        let row: &EventRow = e.parsed.event();
        ids.push(row.event_id);
        types.push(row.event_type.as_deref());
        actor_ids.push(row.actor_id);
        actor_logins.push(row.actor_login.as_deref());
        repo_ids.push(row.repo_id);
        repo_names.push(row.repo_name.as_deref());
        org_ids.push(row.org_id);
        publics.push(row.public);
        created.push(row.created_at);
        let (status, error) = match &e.parsed {
            Parsed::Push(..) => ("parsed", None),
            Parsed::Other(_) => ("skipped", None),
            Parsed::Failed(_, err) => ("failed", Some(err.to_string())),
        };
        statuses.push(status);
        errors.push(error);
        match &e.raw {
            RawRef::Inline(text) => {
                // JSONB cannot hold U+0000; such (rare) events keep a readable copy.
                if text.contains("\\u0000") {
                    sanitized.push((i, text.replace("\\u0000", "\\uFFFD")));
                }
                raws.push(Some(text.as_str()));
                keys.push(None);
                lines.push(None);
            }
            RawRef::Object { key, line } => {
                raws.push(None);
                keys.push(Some(key.as_str()));
                lines.push(Some(*line));
            }
        }
    }
    for (i, text) in &sanitized {
        raws[*i] = Some(text.as_str());
    }
    let inserted = tx
        .query(
            INSERT_EVENTS,
            &[
                &ids,
                &types,
                &actor_ids,
                &actor_logins,
                &repo_ids,
                &repo_names,
                &org_ids,
                &publics,
                &created,
                &raws,
                &keys,
                &lines,
                &statuses,
                &errors,
                &source.as_str(),
                &now,
            ],
        )
        .await
        .ctx("insert github_events")?;
    let new_ids: std::collections::HashSet<i64> = inserted.iter().map(|r| r.get(0)).collect();

    let pushes: Vec<&PushRow> = batch
        .iter()
        .filter_map(|e| match &e.parsed {
            Parsed::Push(ev, p) if new_ids.contains(&ev.event_id) => Some(p),
            _ => None,
        })
        .collect();
    let mut new_push_ids = Vec::new();
    if !pushes.is_empty() {
        let col = |f: fn(&PushRow) -> i64| pushes.iter().map(|p| f(p)).collect::<Vec<_>>();
        let push_ids = col(|p| p.push_id);
        let event_ids = col(|p| p.event_id);
        let repo_ids = col(|p| p.repo_id);
        let actor_ids = col(|p| p.actor_id);
        let repo_names: Vec<&str> = pushes.iter().map(|p| p.repo_name.as_str()).collect();
        let actor_logins: Vec<&str> = pushes.iter().map(|p| p.actor_login.as_str()).collect();
        let refs: Vec<Option<&str>> = pushes.iter().map(|p| p.git_ref.as_deref()).collect();
        let heads: Vec<Option<&str>> = pushes.iter().map(|p| p.head.as_deref()).collect();
        let befores: Vec<Option<&str>> = pushes.iter().map(|p| p.before.as_deref()).collect();
        let sizes: Vec<Option<i32>> = pushes.iter().map(|p| p.size).collect();
        let distinct: Vec<Option<i32>> = pushes.iter().map(|p| p.distinct_size).collect();
        let counts: Vec<Option<i32>> = pushes.iter().map(|p| p.commit_count).collect();
        let created: Vec<DateTime<Utc>> = pushes.iter().map(|p| p.created_at).collect();
        let rows = tx
            .query(
                INSERT_PUSHES,
                &[
                    &push_ids,
                    &event_ids,
                    &repo_ids,
                    &repo_names,
                    &actor_ids,
                    &actor_logins,
                    &refs,
                    &heads,
                    &befores,
                    &sizes,
                    &distinct,
                    &counts,
                    &created,
                    &now,
                ],
            )
            .await
            .ctx("insert push_events")?;
        new_push_ids = rows.iter().map(|r| r.get(0)).collect();
    }
    let parse_failed_new = batch
        .iter()
        .filter(|e| {
            matches!(e.parsed, Parsed::Failed(..)) && new_ids.contains(&e.parsed.event().event_id)
        })
        .count() as u64;
    let duplicate_ids: Vec<i64> = ids
        .iter()
        .copied()
        .filter(|id| !new_ids.contains(id))
        .collect();
    Ok(PageWrite {
        new_events: new_ids.len() as u64,
        duplicates: duplicate_ids.len() as u64,
        parse_failed_new,
        new_push_ids,
        duplicate_ids,
    })
}
