//! `ghevents reparse`: rebuilds the structured rows from the stored raw payloads with the
//! current parser, so a parser change (a new column, a fixed field) reaches old events.
//!
//! Events are read in batches by ascending event id (keyset pagination: `event_id > last`,
//! never OFFSET). Each batch is one transaction: its push rows are upserted
//! (`ON CONFLICT (push_id) DO UPDATE` of the parsed columns only; enrichment status, attempts,
//! leases and the outbox mark are never touched), its events' parse status is brought up to
//! date, and the run's checkpoint (`reparse_runs`, keyed by the run's parameters) moves to the
//! batch's last id. A run that is killed continues after its last committed batch; a finished
//! run, asked again, starts over. Either way nothing is duplicated: push rows are keyed by
//! `push_id`.

use crate::clock::Clock;
use crate::event::{parse_event_str, Parsed, PushRow};
use crate::raw::ObjectReader;
use crate::store::{Ctx, StoreError};
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use flate2::read::MultiGzDecoder;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Example ids kept for events that could not be read.
const EXAMPLES: usize = 5;

#[derive(Debug, Clone)]
pub struct ReparseOptions {
    /// Only events of this type (`PushEvent`); all types when `None`.
    pub event_type: Option<String>,
    /// Only events created at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only events created before this time.
    pub until: Option<DateTime<Utc>>,
    /// Events per batch (one transaction each).
    pub batch_size: i64,
    /// A pause after each committed batch (to throttle a run on a busy database).
    pub pause: Duration,
}

impl Default for ReparseOptions {
    fn default() -> Self {
        Self {
            event_type: None,
            since: None,
            until: None,
            batch_size: 1000,
            pause: Duration::ZERO,
        }
    }
}

impl ReparseOptions {
    /// The checkpoint's key: a run with the same parameters continues this one.
    pub fn key(&self) -> String {
        let t = |d: Option<DateTime<Utc>>| d.map_or("-".to_owned(), |d| d.to_rfc3339());
        format!(
            "type={} since={} until={}",
            self.event_type.as_deref().unwrap_or("*"),
            t(self.since),
            t(self.until)
        )
    }
}

/// Events done so far, for a progress display.
#[derive(Debug, Default)]
pub struct ReparseProgress {
    pub events: AtomicU64,
}

/// Events that could not be read back, by reason.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Unreadable {
    pub count: u64,
    pub examples: Vec<i64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ReparseSummary {
    pub params: String,
    /// The checkpoint this run continued after (an earlier run with the same parameters was
    /// interrupted), if any.
    pub resumed_after: Option<i64>,
    pub batches: u64,
    /// Events read and parsed in this run.
    pub events: u64,
    /// Push rows written (inserted or updated).
    pub push_rows: u64,
    /// Of those, rows that did not exist before.
    pub push_rows_new: u64,
    /// Events whose parse status or reason changed.
    pub status_changed: u64,
    /// Events the current parser cannot read (their push row, if any, is left as it is).
    pub parse_failed: u64,
    /// Events whose raw payload could not be read, by reason.
    pub unreadable: BTreeMap<String, Unreadable>,
    pub seconds: f64,
    pub events_per_sec: f64,
}

impl ReparseSummary {
    pub fn unreadable_total(&self) -> u64 {
        self.unreadable.values().map(|u| u.count).sum()
    }

    fn unreadable(&mut self, reason: &str, event_id: i64) {
        let u = self.unreadable.entry(reason.to_owned()).or_default();
        u.count += 1;
        if u.examples.len() < EXAMPLES {
            u.examples.push(event_id);
        }
    }
}

const FILTER: &str = "($1::text IS NULL OR event_type = $1)
    AND ($2::timestamptz IS NULL OR created_at >= $2)
    AND ($3::timestamptz IS NULL OR created_at < $3)";

/// How many events the options select (for a progress bar's total).
pub async fn count_events(pool: &Pool, opts: &ReparseOptions) -> Result<u64, StoreError> {
    let n: i64 = pool
        .get()
        .await?
        .query_one(
            &format!("SELECT count(*) FROM github_events WHERE {FILTER}"),
            &[&opts.event_type, &opts.since, &opts.until],
        )
        .await
        .ctx("count events to reparse")?
        .get(0);
    Ok(u64::try_from(n).unwrap_or(0))
}

const UPSERT_PUSHES: &str = "
INSERT INTO push_events AS p (push_id, event_id, repo_id, repo_name, actor_id, actor_login, ref, head,
    before, size, distinct_size, commit_count, created_at, ref_type, next_attempt_at)
SELECT u.*, $15::timestamptz
FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::bigint[], $6::text[], $7::text[],
    $8::text[], $9::text[], $10::int[], $11::int[], $12::int[], $13::timestamptz[], $14::text[])
    AS u(push_id, event_id, repo_id, repo_name, actor_id, actor_login, ref, head, before,
         size, distinct_size, commit_count, created_at, ref_type)
ON CONFLICT (push_id) DO UPDATE SET
    repo_id = EXCLUDED.repo_id, repo_name = EXCLUDED.repo_name,
    actor_id = EXCLUDED.actor_id, actor_login = EXCLUDED.actor_login,
    ref = EXCLUDED.ref, head = EXCLUDED.head, before = EXCLUDED.before,
    size = EXCLUDED.size, distinct_size = EXCLUDED.distinct_size,
    commit_count = EXCLUDED.commit_count, created_at = EXCLUDED.created_at,
    ref_type = EXCLUDED.ref_type
-- A push id another event already holds stays that event's.
WHERE p.event_id = EXCLUDED.event_id
RETURNING (xmax = 0)";

/// Only the parse outcome changes; an event Postgres refused keeps the reason its raw
/// payload is not inline.
const UPDATE_STATUS: &str = "
UPDATE github_events g SET parse_status = u.status, parse_error = u.error
FROM UNNEST($1::bigint[], $2::text[], $3::text[]) AS u(event_id, status, error)
WHERE g.event_id = u.event_id
  AND (g.parse_status IS DISTINCT FROM u.status OR g.parse_error IS DISTINCT FROM u.error)
  AND (g.parse_error IS NULL OR g.parse_error NOT LIKE 'refused by Postgres%')";

/// Runs (or continues) a reparse. `objects` reads payloads stored out of line; without it
/// those events are counted as unreadable and left as they are.
pub async fn reparse(
    pool: &Pool,
    objects: Option<&dyn ObjectReader>,
    opts: &ReparseOptions,
    progress: &ReparseProgress,
    clock: &dyn Clock,
) -> Result<ReparseSummary, StoreError> {
    let started = Instant::now();
    let key = opts.key();
    let mut summary = ReparseSummary {
        params: key.clone(),
        ..Default::default()
    };
    let mut last = start_run(pool, &key, clock.now()).await?;
    if last > 0 {
        summary.resumed_after = Some(last);
        tracing::info!(params = %key, after_event_id = last, "continuing an interrupted reparse");
    }
    loop {
        let rows = read_batch(pool, opts, last).await?;
        let Some(batch_last) = rows.last().map(|r| r.event_id) else {
            break;
        };
        let batch = parse_batch(&rows, objects, &mut summary).await;
        write_batch(
            pool,
            &key,
            &batch,
            batch_last,
            rows.len(),
            clock.now(),
            &mut summary,
        )
        .await?;
        last = batch_last;
        summary.batches += 1;
        summary.events += rows.len() as u64;
        progress
            .events
            .fetch_add(rows.len() as u64, Ordering::Relaxed);
        tracing::debug!(
            after_event_id = last,
            events = rows.len(),
            "reparse batch committed"
        );
        if !opts.pause.is_zero() {
            tokio::time::sleep(opts.pause).await;
        }
    }
    finish_run(pool, &key, clock.now()).await?;
    summary.seconds = started.elapsed().as_secs_f64();
    summary.events_per_sec = if summary.seconds > 0.0 {
        summary.events as f64 / summary.seconds
    } else {
        0.0
    };
    Ok(summary)
}

/// Registers the run and returns the event id it continues after: an unfinished run with
/// these parameters continues; a finished one starts over (0).
async fn start_run(pool: &Pool, key: &str, now: DateTime<Utc>) -> Result<i64, StoreError> {
    let row = pool
        .get()
        .await?
        .query_one(
            "INSERT INTO reparse_runs (params, started_at, updated_at) VALUES ($1, $2, $2)
             ON CONFLICT (params) DO UPDATE SET
                 last_event_id = CASE WHEN reparse_runs.finished_at IS NULL
                                      THEN reparse_runs.last_event_id ELSE 0 END,
                 events = CASE WHEN reparse_runs.finished_at IS NULL
                               THEN reparse_runs.events ELSE 0 END,
                 started_at = CASE WHEN reparse_runs.finished_at IS NULL
                                   THEN reparse_runs.started_at ELSE $2 END,
                 updated_at = $2, finished_at = NULL
             RETURNING last_event_id",
            &[&key, &now],
        )
        .await
        .ctx("start reparse run")?;
    Ok(row.get(0))
}

async fn finish_run(pool: &Pool, key: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
    pool.get()
        .await?
        .execute(
            "UPDATE reparse_runs SET finished_at = $2, updated_at = $2 WHERE params = $1",
            &[&key, &now],
        )
        .await
        .ctx("finish reparse run")?;
    Ok(())
}

/// One stored event as a batch reads it: where its raw payload is.
struct StoredEvent {
    event_id: i64,
    inline: Option<String>,
    object_key: Option<String>,
    object_line: Option<i32>,
    /// The exact bytes GitHub sent, kept for a sanitized or refused event.
    original: Option<Vec<u8>>,
}

/// The next batch after `last`, by ascending event id.
async fn read_batch(
    pool: &Pool,
    opts: &ReparseOptions,
    last: i64,
) -> Result<Vec<StoredEvent>, StoreError> {
    let rows = pool
        .get()
        .await?
        .query(
            &format!(
                "SELECT event_id, raw::text, raw_object_key, raw_object_line, raw_original
                 FROM github_events WHERE event_id > $4 AND {FILTER}
                 ORDER BY event_id LIMIT $5"
            ),
            &[
                &opts.event_type,
                &opts.since,
                &opts.until,
                &last,
                &opts.batch_size.max(1),
            ],
        )
        .await
        .ctx("read events to reparse")?;
    Ok(rows
        .iter()
        .map(|r| StoredEvent {
            event_id: r.get(0),
            inline: r.get(1),
            object_key: r.get(2),
            object_line: r.get(3),
            original: r.get(4),
        })
        .collect())
}

/// What the current parser makes of a batch: push rows by push id, and every readable
/// event's parse status.
#[derive(Default)]
struct ParsedBatch {
    pushes: BTreeMap<i64, PushRow>,
    ids: Vec<i64>,
    statuses: Vec<&'static str>,
    errors: Vec<Option<String>>,
}

async fn parse_batch(
    rows: &[StoredEvent],
    objects: Option<&dyn ObjectReader>,
    summary: &mut ReparseSummary,
) -> ParsedBatch {
    let mut payloads = Payloads {
        objects,
        cache: HashMap::new(),
    };
    let mut batch = ParsedBatch::default();
    for row in rows {
        let text = match payloads.text(row).await {
            Ok(text) => text,
            Err(reason) => {
                summary.unreadable(reason, row.event_id);
                continue;
            }
        };
        let (status, error) = match parse_event_str(&text) {
            Ok(Parsed::Push(_, p)) => {
                // One row per push id; the lowest event id wins, as in a first import.
                batch.pushes.entry(p.push_id).or_insert(p);
                ("parsed", None)
            }
            Ok(Parsed::Other(_)) => ("skipped", None),
            Ok(Parsed::Failed(_, e)) => {
                summary.parse_failed += 1;
                ("failed", Some(e.to_string()))
            }
            Err(e) => {
                summary.parse_failed += 1;
                ("failed", Some(e.to_string()))
            }
        };
        batch.ids.push(row.event_id);
        batch.statuses.push(status);
        batch.errors.push(error);
    }
    batch
}

/// Reads raw payloads back, each S3 object once per batch.
struct Payloads<'a> {
    objects: Option<&'a dyn ObjectReader>,
    cache: HashMap<String, Result<Vec<Vec<u8>>, String>>,
}

impl Payloads<'_> {
    /// The event's raw JSON, or why it cannot be read.
    async fn text(&mut self, row: &StoredEvent) -> Result<String, &'static str> {
        if let Some(bytes) = &row.original {
            return Ok(String::from_utf8_lossy(bytes).into_owned());
        }
        if let Some(text) = &row.inline {
            return Ok(text.clone());
        }
        let (Some(key), Some(line)) = (&row.object_key, row.object_line) else {
            return Err("no raw payload");
        };
        let reader = self.objects.ok_or("no object store client")?;
        if !self.cache.contains_key(key) {
            let lines = match reader.get_object(key).await {
                Ok(gz) => all_lines(&gz).map_err(|e| format!("decode: {e}")),
                Err(e) => Err(e.to_string()),
            };
            self.cache.insert(key.clone(), lines);
        }
        match &self.cache[key] {
            Err(e) => {
                tracing::warn!(event_id = row.event_id, key = %key, error = %e, "raw object unreadable");
                Err("object unreadable")
            }
            Ok(lines) => usize::try_from(line)
                .ok()
                .and_then(|i| lines.get(i))
                .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
                .ok_or("object line missing"),
        }
    }
}

/// One transaction: the batch's push rows upserted, parse statuses brought up to date, and
/// the run's checkpoint moved to `batch_last`.
async fn write_batch(
    pool: &Pool,
    key: &str,
    batch: &ParsedBatch,
    batch_last: i64,
    events: usize,
    now: DateTime<Utc>,
    summary: &mut ReparseSummary,
) -> Result<(), StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await.ctx("begin reparse batch")?;
    if !batch.pushes.is_empty() {
        let p: Vec<&PushRow> = batch.pushes.values().collect();
        let col = |f: fn(&PushRow) -> i64| p.iter().map(|x| f(x)).collect::<Vec<_>>();
        let strs = |f: for<'a> fn(&'a PushRow) -> Option<&'a str>| {
            p.iter().map(|x| f(x)).collect::<Vec<_>>()
        };
        let ints = |f: fn(&PushRow) -> Option<i32>| p.iter().map(|x| f(x)).collect::<Vec<_>>();
        let written = tx
            .query(
                UPSERT_PUSHES,
                &[
                    &col(|x| x.push_id),
                    &col(|x| x.event_id),
                    &col(|x| x.repo_id),
                    &strs(|x| Some(x.repo_name.as_str())),
                    &col(|x| x.actor_id),
                    &strs(|x| Some(x.actor_login.as_str())),
                    &strs(|x| x.git_ref.as_deref()),
                    &strs(|x| x.head.as_deref()),
                    &strs(|x| x.before.as_deref()),
                    &ints(|x| x.size),
                    &ints(|x| x.distinct_size),
                    &ints(|x| x.commit_count),
                    &p.iter().map(|x| x.created_at).collect::<Vec<_>>(),
                    &strs(|x| x.ref_type()),
                    &now,
                ],
            )
            .await
            .ctx("upsert push_events")?;
        summary.push_rows += written.len() as u64;
        summary.push_rows_new += written.iter().filter(|r| r.get::<_, bool>(0)).count() as u64;
    }
    if !batch.ids.is_empty() {
        summary.status_changed += tx
            .execute(UPDATE_STATUS, &[&batch.ids, &batch.statuses, &batch.errors])
            .await
            .ctx("update parse status")?;
    }
    tx.execute(
        "UPDATE reparse_runs SET last_event_id = $2, events = events + $3, updated_at = $4
         WHERE params = $1",
        &[&key, &batch_last, &(events as i64), &now],
    )
    .await
    .ctx("move reparse checkpoint")?;
    tx.commit().await.ctx("commit reparse batch")?;
    Ok(())
}

/// Every line of a gzip NDJSON object, without its `\n`.
fn all_lines(gz: &[u8]) -> std::io::Result<Vec<Vec<u8>>> {
    let mut r = BufReader::new(MultiGzDecoder::new(gz));
    let mut out = Vec::new();
    loop {
        let mut buf = Vec::new();
        if r.read_until(b'\n', &mut buf)? == 0 {
            return Ok(out);
        }
        if buf.last() == Some(&b'\n') {
            buf.pop();
        }
        out.push(buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_checkpoint_key_names_every_parameter() {
        let all = ReparseOptions::default();
        assert_eq!(all.key(), "type=* since=- until=-");
        let some = ReparseOptions {
            event_type: Some("PushEvent".into()),
            since: Some(Utc.with_ymd_and_hms(2015, 1, 1, 0, 0, 0).unwrap()),
            ..Default::default()
        };
        assert_eq!(
            some.key(),
            "type=PushEvent since=2015-01-01T00:00:00+00:00 until=-"
        );
    }

    #[test]
    fn object_lines_match_line_of() {
        let texts: Vec<Box<serde_json::value::RawValue>> = ["{\"id\":\"1\"}", "{\"id\":\"2\"}"]
            .iter()
            .map(|t| serde_json::value::RawValue::from_string((*t).to_owned()).unwrap())
            .collect();
        let refs: Vec<&serde_json::value::RawValue> = texts.iter().map(|b| b.as_ref()).collect();
        let gz = crate::raw::encode_page(&refs).unwrap();
        let lines = all_lines(&gz).unwrap();
        assert_eq!(lines.len(), 2);
        for (i, l) in lines.iter().enumerate() {
            assert_eq!(Some(l.clone()), crate::raw::line_of(&gz, i).unwrap());
        }
    }
}
