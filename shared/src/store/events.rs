use super::{Ctx, StoreError};
use crate::event::{EventRow, Parsed, PushRow};
use crate::raw::RawRef;
use crate::sanitize;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use std::borrow::Cow;
use std::collections::HashSet;

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
    /// New events stored with what Postgres cannot hold replaced (`sanitized = true`).
    pub sanitized_new: u64,
    /// New events Postgres refused even so: stored with their original bytes only, parse
    /// status `failed` and Postgres's reason (also counted in `parse_failed_new`).
    pub refused_new: u64,
    /// Push ids stored by this write (new rows only): the work for enrichment.
    pub new_push_ids: Vec<i64>,
    /// Event ids of this batch already stored before it.
    pub duplicate_ids: Vec<i64>,
    /// [`PushEnrichment::CacheOnly`]: new push events completed from the cache, and those
    /// left `skipped`.
    pub push_cache_enriched: u64,
    pub push_not_enriched: u64,
}

impl PageWrite {
    fn merge(&mut self, o: PageWrite) {
        self.new_events += o.new_events;
        self.duplicates += o.duplicates;
        self.parse_failed_new += o.parse_failed_new;
        self.sanitized_new += o.sanitized_new;
        self.refused_new += o.refused_new;
        self.new_push_ids.extend(o.new_push_ids);
        self.duplicate_ids.extend(o.duplicate_ids);
        self.push_cache_enriched += o.push_cache_enriched;
        self.push_not_enriched += o.push_not_enriched;
    }
}

const INSERT_EVENTS: &str = "
INSERT INTO github_events (event_id, event_type, actor_id, actor_login, repo_id, repo_name, org_id,
    public, created_at, raw, raw_object_key, raw_object_line, source, parse_status, parse_error, ingested_at,
    sanitized, raw_original)
SELECT u.event_id, u.event_type, u.actor_id, u.actor_login, u.repo_id, u.repo_name, u.org_id,
    u.public, u.created_at, u.raw::jsonb, u.raw_key, u.raw_line, $15, u.parse_status, u.parse_error, $16,
    u.sanitized, u.raw_original
FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::bigint[], $6::text[], $7::bigint[],
    $8::bool[], $9::timestamptz[], $10::text[], $11::text[], $12::int[], $13::text[], $14::text[],
    $17::bool[], $18::bytea[])
    AS u(event_id, event_type, actor_id, actor_login, repo_id, repo_name, org_id,
         public, created_at, raw, raw_key, raw_line, parse_status, parse_error, sanitized, raw_original)
ON CONFLICT (event_id) DO NOTHING
RETURNING event_id";

/// `$16`: NULL, every new push event waits for enrichment (`pending`); else it is enriched
/// from the cache only, at insert: `completed` when both its actor and its repository were
/// fetched after `$16`, `skipped` otherwise (see [`PushEnrichment`]).
const INSERT_PUSHES: &str = "
INSERT INTO push_events (push_id, event_id, repo_id, repo_name, actor_id, actor_login, ref, head, before,
    size, distinct_size, commit_count, created_at, ref_type, next_attempt_at, enrichment_status, enriched_at)
SELECT v.*, CASE WHEN v.status = 'completed' THEN $14::timestamptz END
FROM (
    SELECT u.*, $14::timestamptz,
        CASE WHEN $16::timestamptz IS NULL THEN 'pending'
             WHEN EXISTS (SELECT 1 FROM actors a WHERE a.actor_id = u.actor_id AND a.fetched_at > $16::timestamptz)
              AND EXISTS (SELECT 1 FROM repositories r WHERE r.repo_id = u.repo_id AND r.fetched_at > $16::timestamptz)
             THEN 'completed'
             ELSE 'skipped' END AS status
    FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::bigint[], $6::text[], $7::text[],
        $8::text[], $9::text[], $10::int[], $11::int[], $12::int[], $13::timestamptz[], $15::text[])
        AS u(push_id, event_id, repo_id, repo_name, actor_id, actor_login, ref, head, before,
             size, distinct_size, commit_count, created_at, ref_type)
) v
ON CONFLICT DO NOTHING
RETURNING push_id, enrichment_status";

/// What becomes of the new push events of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushEnrichment {
    /// `pending`: enrichment requests them (polling, `ghevents import`, `ENRICH_ARCHIVE`).
    Queue,
    /// Enriched from the cache only, in the same statement that stores them: `completed`
    /// when the actor and the repository were both fetched after `fresh_after`, else
    /// `skipped`. No request is ever made for them (archive hours by default).
    CacheOnly { fresh_after: DateTime<Utc> },
}

/// The last resort for an event Postgres refuses after sanitising: its id, where its bytes
/// are (the exact original bytes inline, or its line in the object store) and why.
const INSERT_REFUSED: &str = "
INSERT INTO github_events (event_id, raw_object_key, raw_object_line, raw_original, source,
    parse_status, parse_error, ingested_at, sanitized)
VALUES ($1, $2, $3, $4, $5, 'failed', $6, $7, true)
ON CONFLICT (event_id) DO NOTHING
RETURNING event_id";

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
    let out = write_events_tx(&tx, batch, source, now, PushEnrichment::Queue).await?;
    crate::failpoints::hit("store::before_commit");
    tx.commit().await.ctx("commit page")?;
    Ok(out)
}

/// One event as it goes into the columns: whatever Postgres cannot hold replaced.
struct Row<'a> {
    event: Cow<'a, EventRow>,
    /// The structured PushEvent, for a parsed one.
    push: Option<Cow<'a, PushRow>>,
    status: &'static str,
    error: Option<String>,
    raw: Option<Cow<'a, str>>,
    key: Option<&'a str>,
    line: Option<i32>,
    /// The exact bytes GitHub sent, kept when the inline copy had to be changed.
    original: Option<&'a [u8]>,
    sanitized: bool,
    failed: bool,
}

impl<'a> Row<'a> {
    fn of(e: &'a EventInsert) -> Self {
        let (event, push, status, error) = match &e.parsed {
            Parsed::Push(ev, p) => (ev, Some(p), "parsed", None),
            Parsed::Other(ev) => (ev, None, "skipped", None),
            Parsed::Failed(ev, err) => (ev, None, "failed", Some(err.to_string())),
        };
        let event = clean_event(event);
        let push = push.map(clean_push);
        let error = error.map(|s| sanitize::text(&s).into_owned());
        let mut sanitized = event.sanitized
            || matches!(event, Cow::Owned(_))
            || matches!(push, Some(Cow::Owned(_)));
        let (raw, key, line, original) = match &e.raw {
            RawRef::Inline(text) => {
                let clean = sanitize::json_text(text);
                let original = match clean {
                    Cow::Owned(_) => {
                        sanitized = true;
                        Some(text.as_bytes())
                    }
                    Cow::Borrowed(_) => None,
                };
                (Some(clean), None, None, original)
            }
            RawRef::Object { key, line } => (None, Some(key.as_str()), Some(*line), None),
        };
        Row {
            event,
            push,
            status,
            error,
            raw,
            key,
            line,
            original,
            sanitized,
            failed: status == "failed",
        }
    }
}

fn clean_event(e: &EventRow) -> Cow<'_, EventRow> {
    let dirty = [&e.event_type, &e.actor_login, &e.repo_name]
        .iter()
        .any(|s| s.as_deref().is_some_and(|s| s.contains('\0')));
    if !dirty {
        return Cow::Borrowed(e);
    }
    let mut e = e.clone();
    for s in [&mut e.event_type, &mut e.actor_login, &mut e.repo_name]
        .into_iter()
        .flatten()
    {
        sanitize::text_in_place(s);
    }
    e.sanitized = true;
    Cow::Owned(e)
}

fn clean_push(p: &PushRow) -> Cow<'_, PushRow> {
    let dirty = [&p.git_ref, &p.head, &p.before]
        .iter()
        .any(|s| s.as_deref().is_some_and(|s| s.contains('\0')))
        || p.repo_name.contains('\0')
        || p.actor_login.contains('\0');
    if !dirty {
        return Cow::Borrowed(p);
    }
    let mut p = p.clone();
    sanitize::text_in_place(&mut p.repo_name);
    sanitize::text_in_place(&mut p.actor_login);
    for s in [&mut p.git_ref, &mut p.head, &mut p.before]
        .into_iter()
        .flatten()
    {
        sanitize::text_in_place(s);
    }
    Cow::Owned(p)
}

/// Postgres refused a value (SQLSTATE class 22, data exception: an escape jsonb does not
/// take, a number beyond `numeric`) or hit one of its limits on it (class 54: nesting
/// deeper than its stack, a value over 1 GB). Writing the same value again fails again.
fn refused_value(e: &StoreError) -> bool {
    match e {
        StoreError::Db { source, .. } => source
            .code()
            .is_some_and(|c| c.code().starts_with("22") || c.code().starts_with("54")),
        _ => false,
    }
}

/// [`write_events`] inside a caller's transaction. When Postgres refuses an event of the
/// batch (see [`refused_value`]), the batch is split in halves, each written in its own
/// savepoint, down to the refused event: every other event is stored as usual, and the
/// refused one with its id, its original bytes, parse status `failed` and Postgres's reason.
/// A batch is never lost for one event.
pub async fn write_events_tx(
    tx: &tokio_postgres::Transaction<'_>,
    batch: &[EventInsert],
    source: Source,
    now: DateTime<Utc>,
    pushes: PushEnrichment,
) -> Result<PageWrite, StoreError> {
    let rows: Vec<Row<'_>> = batch.iter().map(Row::of).collect();
    let mut total = PageWrite::default();
    // Parts still to write, the first on top: the batch's order (ascending ids for the
    // import's writers) is kept.
    let mut parts: Vec<&[Row<'_>]> = vec![&rows];
    while let Some(part) = parts.pop() {
        if part.is_empty() {
            continue;
        }
        tx.batch_execute("SAVEPOINT part").await.ctx("savepoint")?;
        match insert_rows(tx, part, source, now, pushes).await {
            Ok(w) => {
                tx.batch_execute("RELEASE SAVEPOINT part")
                    .await
                    .ctx("release savepoint")?;
                total.merge(w);
            }
            Err(e) if refused_value(&e) => {
                tx.batch_execute("ROLLBACK TO SAVEPOINT part")
                    .await
                    .ctx("roll back to savepoint")?;
                if let [row] = part {
                    total.merge(write_refused(tx, row, &e, source, now).await?);
                } else {
                    tracing::debug!(error = %e, events = part.len(), "a part holds an event Postgres refuses; halving it");
                    let (a, b) = part.split_at(part.len() / 2);
                    parts.push(b);
                    parts.push(a);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(total)
}

/// The last-resort row of an event Postgres refused with `e`.
async fn write_refused(
    tx: &tokio_postgres::Transaction<'_>,
    row: &Row<'_>,
    e: &StoreError,
    source: Source,
    now: DateTime<Utc>,
) -> Result<PageWrite, StoreError> {
    let event_id = row.event.event_id;
    let reason = match e {
        StoreError::Db { source, .. } => source
            .as_db_error()
            .map_or_else(|| source.to_string(), |d| d.message().to_owned()),
        other => other.to_string(),
    };
    let reason = sanitize::text(&format!("refused by Postgres: {reason}")).into_owned();
    // NOTE: kept, not retried: the same bytes are refused every time. The exact bytes stay
    // (inline here, or in the object store) for a later fix to read them again.
    tracing::warn!(event_id, reason = %reason, error_code = "event_refused",
        "event stored with its original bytes only");
    let original: Option<&[u8]> = match (row.key, row.original) {
        (Some(_), _) => None,
        (None, Some(o)) => Some(o),
        (None, None) => row.raw.as_deref().map(str::as_bytes),
    };
    let inserted = tx
        .query_opt(
            INSERT_REFUSED,
            &[
                &event_id,
                &row.key,
                &row.line,
                &original,
                &source.as_str(),
                &reason,
                &now,
            ],
        )
        .await
        .ctx("insert refused event")?;
    let mut w = PageWrite::default();
    if inserted.is_some() {
        w.new_events = 1;
        w.parse_failed_new = 1;
        w.refused_new = 1;
    } else {
        w.duplicates = 1;
        w.duplicate_ids.push(event_id);
    }
    Ok(w)
}

/// The events, then the PushEvents among the new ones, in bulk.
async fn insert_rows(
    tx: &tokio_postgres::Transaction<'_>,
    rows: &[Row<'_>],
    source: Source,
    now: DateTime<Utc>,
    pushes_enrichment: PushEnrichment,
) -> Result<PageWrite, StoreError> {
    let n = rows.len();
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
    let mut errors: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut sanitized = Vec::with_capacity(n);
    let mut originals: Vec<Option<&[u8]>> = Vec::with_capacity(n);
    for r in rows {
        let row: &EventRow = &r.event;
        ids.push(row.event_id);
        types.push(row.event_type.as_deref());
        actor_ids.push(row.actor_id);
        actor_logins.push(row.actor_login.as_deref());
        repo_ids.push(row.repo_id);
        repo_names.push(row.repo_name.as_deref());
        org_ids.push(row.org_id);
        publics.push(row.public);
        created.push(row.created_at);
        raws.push(r.raw.as_deref());
        keys.push(r.key);
        lines.push(r.line);
        statuses.push(r.status);
        errors.push(r.error.as_deref());
        sanitized.push(r.sanitized);
        originals.push(r.original);
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
                &sanitized,
                &originals,
            ],
        )
        .await
        .ctx("insert github_events")?;
    let new_ids: HashSet<i64> = inserted.iter().map(|r| r.get(0)).collect();

    let pushes: Vec<&PushRow> = rows
        .iter()
        .filter(|r| new_ids.contains(&r.event.event_id))
        .filter_map(|r| r.push.as_deref())
        .collect();
    let mut new_push_ids = Vec::new();
    let (mut cache_enriched, mut not_enriched) = (0, 0);
    let fresh_after = match pushes_enrichment {
        PushEnrichment::Queue => None,
        PushEnrichment::CacheOnly { fresh_after } => Some(fresh_after),
    };
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
        let ref_types: Vec<Option<&str>> = pushes.iter().map(|p| p.ref_type()).collect();
        let stored = tx
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
                    &ref_types,
                    &fresh_after,
                ],
            )
            .await
            .ctx("insert push_events")?;
        new_push_ids = stored.iter().map(|r| r.get(0)).collect();
        if fresh_after.is_some() {
            cache_enriched = stored
                .iter()
                .filter(|r| r.get::<_, &str>(1) == "completed")
                .count() as u64;
            not_enriched = stored.len() as u64 - cache_enriched;
        }
    }
    let is_new = |r: &&Row<'_>| new_ids.contains(&r.event.event_id);
    let parse_failed_new = rows.iter().filter(is_new).filter(|r| r.failed).count() as u64;
    let sanitized_new = rows.iter().filter(is_new).filter(|r| r.sanitized).count() as u64;
    for r in rows.iter().filter(is_new).filter(|r| r.sanitized) {
        tracing::info!(
            event_id = r.event.event_id,
            error_code = "event_sanitized",
            "stored with a NUL or lone surrogate escape replaced by U+FFFD"
        );
    }
    let duplicate_ids: Vec<i64> = ids
        .iter()
        .copied()
        .filter(|id| !new_ids.contains(id))
        .collect();
    Ok(PageWrite {
        new_events: new_ids.len() as u64,
        duplicates: duplicate_ids.len() as u64,
        parse_failed_new,
        sanitized_new,
        refused_new: 0,
        new_push_ids,
        duplicate_ids,
        push_cache_enriched: cache_enriched,
        push_not_enriched: not_enriched,
    })
}
