//! GH Archive hours: what polling `/events` missed, completed from the hourly files.
//!
//! An hour's file is streamed (HTTP body → gzip → lines → batches, never held whole) through
//! the parser and store that polling uses, with `source = 'archive'`: an event polled earlier
//! is left as it is and counted as already present, so once an hour is `done`,
//! `already_present / valid lines` is the share of it polling had caught (its coverage).
//!
//! - Each hour has a row in `archive_hours` ([`store`]); an import claims it with a lease, so
//!   a crashed worker's hour becomes claimable again.
//! - Batches are written [`crate::import::WRITERS`] at a time; the committed prefix of the
//!   file (`lines_committed`) and its counters are saved as it grows. A later attempt starts
//!   reading there; the unique keys make reading a line twice harmless anyway.
//! - A body cut short (a truncated gzip stream, a connection reset) never makes the hour
//!   `done`: what was committed stays, the hour is `failed` with its reason and backoff.
//! - 404: `pending` again later, until `missing_after` past the hour's end: `missing`.
//! - S3 mode: the hour's file is first copied whole to `{prefix}archive/YYYY/MM/DD/HH.json.gz`,
//!   then imported by reading that object, so every row points to a line of an object that
//!   exists (see README, "Coverage and backfill").
//! - Archive push events are enriched from the cache only unless `ENRICH_ARCHIVE=true`; the
//!   others are `skipped`, never queued ([`ArchiveOptions::enrich_archive`]).

pub mod hour;
pub mod source;
pub mod store;

pub use hour::{Hour, HourParseError};
pub use source::{BodyReader, ByteChunks, HourObjects, HttpOptions};
pub use store::{coverage, due_hours, ensure_hours, recent, totals, Counters, Totals};

use crate::clock::Clock;
use crate::config::Config;
use crate::deadline::Deadline;
use crate::import::{self, Progress, RawMode, Rejection, WRITERS};
use crate::raw::RawStoreError;
use crate::store::{write_events_tx, EventInsert, PushEnrichment, Source, StoreError};
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Where an hour's import stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HourStatus {
    Pending,
    InProgress,
    Done,
    Missing,
    Failed,
}

impl HourStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HourStatus::Pending => "pending",
            HourStatus::InProgress => "in_progress",
            HourStatus::Done => "done",
            HourStatus::Missing => "missing",
            HourStatus::Failed => "failed",
        }
    }

    fn from_str_lossy(s: &str) -> Self {
        match s {
            "in_progress" => HourStatus::InProgress,
            "done" => HourStatus::Done,
            "missing" => HourStatus::Missing,
            "failed" => HourStatus::Failed,
            _ => HourStatus::Pending,
        }
    }

    /// Nothing more to do for the hour.
    pub fn is_final(self) -> bool {
        matches!(self, HourStatus::Done | HourStatus::Missing)
    }
}

impl std::fmt::Display for HourStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An hour's row: its state and what its lines held.
#[derive(Debug, Clone, Serialize)]
pub struct HourReport {
    pub hour: Hour,
    pub status: HourStatus,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub claimed_until: Option<DateTime<Utc>>,
    pub lines: u64,
    pub blank_lines: u64,
    /// Valid lines whose event is held from the archive.
    pub stored: u64,
    /// Valid lines whose event polling had stored before.
    pub already_present: u64,
    pub rejected: u64,
    pub rejections: BTreeMap<String, import::Rejections>,
    /// New push events among `stored`.
    pub push_events: u64,
    pub push_cache_enriched: u64,
    /// Push events left unenriched by the enrichment policy.
    pub push_not_enriched: u64,
    /// Compressed bytes read.
    pub bytes: u64,
    pub lines_committed: u64,
    pub object_key: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub reason: Option<String>,
    /// `already_present / valid lines`, once done.
    pub polled_share: Option<f64>,
    /// `(stored + already_present) / valid lines`, once done.
    pub stored_share: Option<f64>,
    /// Rows this call inserted (0 when it did not import).
    pub new_rows: u64,
}

impl HourReport {
    /// Lines that hold an event.
    pub fn valid(&self) -> u64 {
        self.lines
            .saturating_sub(self.blank_lines)
            .saturating_sub(self.rejected)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("GET {url}: {message}")]
    Http {
        url: String,
        message: String,
        retryable: bool,
    },
    /// The file could not be read to its end: a truncated gzip stream, a connection lost.
    #[error("reading {url}: {message}")]
    Body { url: String, message: String },
    #[error("{0}")]
    Object(RawStoreError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("HTTP client: {0}")]
    Client(String),
}

impl ArchiveError {
    /// Whether another attempt can succeed (a connection, a 5xx, a truncated download).
    pub fn is_retryable(&self) -> bool {
        match self {
            ArchiveError::Http { retryable, .. } => *retryable,
            ArchiveError::Body { .. } => true,
            ArchiveError::Object(e) => e.retryable,
            ArchiveError::Store(e) => e.is_retryable(),
            ArchiveError::Client(_) => false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ArchiveOptions {
    /// GH Archive's base URL, without a trailing slash.
    pub base_url: String,
    /// Events per transaction.
    pub batch_size: usize,
    /// How long a claimed hour is ours without news (extended with every committed batch).
    pub lease: Duration,
    /// After the hour's end, how long a 404 means "not published yet".
    pub missing_after: Duration,
    /// Next try of an hour GH Archive does not have yet.
    pub not_found_retry: Duration,
    /// Backoff after a failed attempt: doubles from `failure_backoff` up to `failure_backoff_max`.
    pub failure_backoff: Duration,
    pub failure_backoff_max: Duration,
    /// Under a deadline, the time that must be left to write another batch.
    pub deadline_margin: Duration,
    /// `ENRICH_ARCHIVE`: archive push events wait for enrichment as polled ones do (queued,
    /// paid from the budget). Off: enriched from fresh cache entries only, else `skipped`.
    pub enrich_archive: bool,
    /// How old a cache entry may be to enrich an archive push event.
    pub cache_ttl: Duration,
    /// S3 mode: the prefix of the hour objects.
    pub object_prefix: String,
    pub http: HttpOptions,
}

impl ArchiveOptions {
    pub fn from_config(c: &Config) -> Self {
        Self {
            base_url: c.gharchive_url.trim_end_matches('/').to_owned(),
            missing_after: c.archive_missing_after,
            enrich_archive: c.enrich_archive,
            cache_ttl: c.enrich_cache_ttl,
            object_prefix: c.raw_payload_prefix.clone(),
            ..Self::default()
        }
    }
}

impl Default for ArchiveOptions {
    fn default() -> Self {
        Self {
            base_url: "https://data.gharchive.org".into(),
            batch_size: 1000,
            lease: Duration::from_secs(900),
            missing_after: Duration::from_secs(48 * 3600),
            not_found_retry: Duration::from_secs(600),
            failure_backoff: Duration::from_secs(60),
            failure_backoff_max: Duration::from_secs(3600),
            deadline_margin: Duration::from_secs(20),
            enrich_archive: false,
            cache_ttl: Duration::from_secs(86_400),
            object_prefix: "raw/".into(),
            http: HttpOptions::default(),
        }
    }
}

/// Everything an hour's import needs; built once per process.
pub struct Archiver {
    pub pool: Pool,
    pub clock: Arc<dyn Clock>,
    /// S3 mode: where hour files are kept and read from.
    pub objects: Option<Arc<dyn HourObjects>>,
    pub options: ArchiveOptions,
    http: reqwest::Client,
    /// Events written by this archiver so far (all hours), for progress displays.
    pub events_written: Arc<AtomicU64>,
    /// Set: attempts stop between batches as at a deadline (a signal), none starts.
    stop: Option<tokio::sync::watch::Receiver<bool>>,
}

/// How an attempt ended, short of an error.
enum Outcome {
    Done { new_rows: u64 },
    NotFound { url: String },
    Stopped { line: u64 },
}

/// What one batch's transaction did.
struct BatchWrite {
    counters: Counters,
    new_rows: u64,
}

impl Archiver {
    pub fn new(
        pool: Pool,
        clock: Arc<dyn Clock>,
        objects: Option<Arc<dyn HourObjects>>,
        options: ArchiveOptions,
    ) -> Result<Self, ArchiveError> {
        let http = source::http_client(&options.http)
            .map_err(|e| ArchiveError::Client(source::error_chain(&e)))?;
        Ok(Self {
            pool,
            clock,
            objects,
            options,
            http,
            events_written: Arc::new(AtomicU64::new(0)),
            stop: None,
        })
    }

    /// Attempts stop between batches once `stop` is true (saving their offset and leaving
    /// their hour claimable), and none starts.
    pub fn with_stop(mut self, stop: tokio::sync::watch::Receiver<bool>) -> Self {
        self.stop = Some(stop);
        self
    }

    fn stopping(&self) -> bool {
        self.stop.as_ref().is_some_and(|s| *s.borrow())
    }

    /// The URL of the hour's file.
    pub fn url(&self, hour: Hour) -> String {
        format!("{}/{}", self.options.base_url, hour.file_name())
    }

    /// Imports one hour: claims its row (a `done` hour, one another worker holds, or — without
    /// `force` — one not due yet is left as it is and reported), reads the file from where
    /// the last attempt stopped, and records the outcome.
    ///
    /// `force`: ignore the row's backoff, and try a `missing` hour again (commands run by
    /// hand). `Ok` always carries the row's status: `done` or `missing` when nothing is left
    /// to do; `pending` (not published yet, or stopped before the deadline), `in_progress`
    /// (someone else's) or `failed` with its reason otherwise. `Err` is an attempt that
    /// failed; the row says `failed` with the error and when to try again, and
    /// [`ArchiveError::is_retryable`] says whether that makes sense.
    pub async fn run_hour(
        &self,
        hour: Hour,
        force: bool,
        deadline: Deadline,
    ) -> Result<HourReport, ArchiveError> {
        let now = self.clock.now();
        let until = now + chrono_dur(self.options.lease);
        if self.stopping() {
            store::ensure_hours(&self.pool, hour, hour.next()).await?;
            let mut r = store::report(&self.pool, hour)
                .await?
                .ok_or_else(|| ArchiveError::Client(format!("no row for hour {hour}")))?;
            r.reason = Some("not started: stopping".into());
            return Ok(r);
        }
        let Some(claimed) = store::claim(&self.pool, hour, now, until, force).await? else {
            let mut r = store::report(&self.pool, hour)
                .await?
                .ok_or_else(|| ArchiveError::Client(format!("no row for hour {hour}")))?;
            match r.status {
                HourStatus::InProgress => {
                    r.reason = Some(format!(
                        "being imported elsewhere (lease until {})",
                        r.claimed_until.map_or("?".into(), |t| t.to_rfc3339())
                    ))
                }
                HourStatus::Pending | HourStatus::Failed => {
                    let why = r.reason.take().unwrap_or_default();
                    r.reason = Some(format!(
                        "not due before {}{}{why}",
                        r.next_attempt_at.to_rfc3339(),
                        if why.is_empty() { "" } else { ": " }
                    ))
                }
                _ => {}
            }
            return Ok(r);
        };
        tracing::info!(%hour, attempt = claimed.attempts, resume_at_line = claimed.lines_committed, "archive hour claimed");
        let outcome = self.import(hour, &claimed, deadline).await;
        let now = self.clock.now();
        match outcome {
            Ok(o) => {
                let (end, new_rows) = self.end_of(hour, &claimed, o, now).await?;
                store::finish(&self.pool, hour, end, now).await?;
                let mut r = store::report(&self.pool, hour)
                    .await?
                    .ok_or_else(|| ArchiveError::Client(format!("no row for hour {hour}")))?;
                r.new_rows = new_rows;
                tracing::info!(%hour, status = %r.status, lines = r.lines, stored = r.stored, already_present = r.already_present, rejected = r.rejected, new_rows, "archive hour attempt ended");
                Ok(r)
            }
            Err(e) => {
                let backoff = self
                    .options
                    .failure_backoff
                    .saturating_mul(1 << claimed.attempts.clamp(1, 16).saturating_sub(1))
                    .min(self.options.failure_backoff_max);
                let error = e.to_string();
                let committed = store::report(&self.pool, hour)
                    .await
                    .ok()
                    .flatten()
                    .map_or(0, |r| r.lines_committed);
                let kept = if committed == 0 {
                    "nothing written yet".to_owned()
                } else {
                    format!("lines 1-{committed} are written, the next attempt resumes after them")
                };
                let end = store::End::Failed {
                    at: now + chrono_dur(backoff),
                    error: &error,
                    reason: format!("attempt {} failed ({kept}): {error}", claimed.attempts),
                };
                if let Err(fe) = store::finish(&self.pool, hour, end, now).await {
                    tracing::warn!(%hour, error = %fe, "could not record the failed attempt; the lease will expire");
                }
                tracing::warn!(%hour, error = %e, retryable = e.is_retryable(), error_code = "archive_hour_failed", "archive hour attempt failed");
                Err(e)
            }
        }
    }

    /// The row's new state after an attempt that ended without an error.
    async fn end_of(
        &self,
        hour: Hour,
        claimed: &store::Claimed,
        outcome: Outcome,
        now: DateTime<Utc>,
    ) -> Result<(store::End<'static>, u64), ArchiveError> {
        Ok(match outcome {
            Outcome::Done { new_rows } => {
                let reason = store::report(&self.pool, hour)
                    .await?
                    .and_then(|r| rejection_reason(&r));
                (store::End::Done { reason }, new_rows)
            }
            Outcome::NotFound { url } => {
                let missing_at = hour.end() + chrono_dur(self.options.missing_after);
                if now >= missing_at {
                    let reason = format!(
                        "not published: {url} answered 404 at attempt {}, {}h after the hour's end",
                        claimed.attempts,
                        (now - hour.end()).num_hours()
                    );
                    (store::End::Missing { reason }, 0)
                } else {
                    let reason = format!(
                        "not published yet: {url} answered 404; missing from {} on",
                        missing_at.to_rfc3339()
                    );
                    let at = now + chrono_dur(self.options.not_found_retry);
                    (store::End::Pending { at, reason }, 0)
                }
            }
            Outcome::Stopped { line } => {
                let why = if self.stopping() {
                    "stopped on request"
                } else {
                    "stopped before the deadline"
                };
                let reason = format!("{why}; resumes after line {line}");
                (store::End::Pending { at: now, reason }, 0)
            }
        })
    }

    /// Opens the hour's bytes: from GH Archive, or (S3 mode) from its stored copy, made first.
    async fn open(
        &self,
        hour: Hour,
        claimed: &store::Claimed,
        deadline: Deadline,
    ) -> Result<Result<(ByteChunks, RawMode), String>, ArchiveError> {
        let url = self.url(hour);
        let Some(objects) = &self.objects else {
            return Ok(
                match source::fetch(&self.http, &url, &self.options.http, deadline).await? {
                    source::Fetch::NotFound => Err(url),
                    source::Fetch::Body(b) => Ok((b, RawMode::Inline)),
                },
            );
        };
        let key = hour.object_key(&self.options.object_prefix);
        if claimed.object_key.as_deref() != Some(key.as_str()) {
            let body = match source::fetch(&self.http, &url, &self.options.http, deadline).await? {
                source::Fetch::NotFound => return Ok(Err(url)),
                source::Fetch::Body(b) => b,
            };
            let bytes = objects
                .put_stream(&key, body)
                .await
                .map_err(ArchiveError::Object)?;
            tracing::info!(%hour, key, bytes, "archive hour copied to the object store");
            store::set_object(&self.pool, hour, Some(&key)).await?;
        }
        let body = objects
            .get_stream(&key)
            .await
            .map_err(ArchiveError::Object)?;
        Ok(Ok((body, RawMode::Object(key))))
    }

    async fn import(
        &self,
        hour: Hour,
        claimed: &store::Claimed,
        deadline: Deadline,
    ) -> Result<Outcome, ArchiveError> {
        let (body, raw_mode) = match self.open(hour, claimed, deadline).await? {
            Ok(b) => b,
            Err(url) => return Ok(Outcome::NotFound { url }),
        };
        let from_object = matches!(raw_mode, RawMode::Object(_));
        let url = self.url(hour);
        let progress = Arc::new(Progress::default());
        let (reader, mut rx) = import::spawn_reader(
            BodyReader::new(body),
            true,
            raw_mode,
            claimed.lines_committed,
            self.options.batch_size.max(1),
            progress.clone(),
        );
        let mut prefix = Prefix {
            counters: claimed.counters.clone(),
            line: claimed.lines_committed,
            next: 0,
            done: BTreeMap::new(),
        };
        let mut writes = tokio::task::JoinSet::new();
        let mut seq = 0u64;
        let mut new_rows = 0u64;
        let mut failure: Option<ArchiveError> = None;
        let mut stopped = false;
        let now = self.clock.now();
        let fresh_after = now - chrono_dur(self.options.cache_ttl);
        loop {
            // Waiting for the next batch (a slow server) ends in time for the deadline too.
            let next = match deadline.remaining() {
                None => rx.recv().await,
                Some(left) => {
                    let wait = left.saturating_sub(self.options.deadline_margin);
                    match tokio::time::timeout(wait, rx.recv()).await {
                        Ok(next) => next,
                        Err(_) => {
                            stopped = true;
                            break;
                        }
                    }
                }
            };
            let batch = match next {
                None => break,
                Some(Ok(b)) => b,
                Some(Err(e)) => {
                    failure = Some(ArchiveError::Body {
                        url: if from_object {
                            format!("the stored copy of {url}")
                        } else {
                            url.clone()
                        },
                        message: format!(
                            "after line {}: {e}",
                            progress.lines.load(Ordering::Relaxed)
                        ),
                    });
                    break;
                }
            };
            if !deadline.allows(self.options.deadline_margin) || self.stopping() {
                stopped = true;
                break;
            }
            let mut c = Counters {
                lines: batch.lines,
                blank_lines: batch.blank,
                ..Counters::default()
            };
            for (line, e) in &batch.rejects {
                reject(&mut c, *line, e);
            }
            let s = seq;
            seq += 1;
            if batch.events.is_empty() {
                prefix.done.insert(s, (batch.end_line, c));
            } else {
                while writes.len() >= WRITERS {
                    let Some(done) = writes.join_next().await else {
                        break;
                    };
                    match joined::<(u64, u64, BatchWrite)>(done) {
                        Ok((s, end, w)) => {
                            new_rows += w.new_rows;
                            prefix.done.insert(s, (end, w.counters));
                        }
                        Err(e) => failure = failure.or(Some(e)),
                    }
                }
                if failure.is_some() {
                    break;
                }
                let mut events = batch.events;
                events.sort_by_key(|e| e.parsed.event().event_id);
                let pool = self.pool.clone();
                let enrich_archive = self.options.enrich_archive;
                let end = batch.end_line;
                let written = self.events_written.clone();
                writes.spawn(async move {
                    let w = write_batch(&pool, &events, now, enrich_archive, fresh_after).await;
                    if w.is_ok() {
                        written.fetch_add(events.len() as u64, Ordering::Relaxed);
                    }
                    w.map(|mut w| {
                        w.counters.add(&c);
                        (s, end, w)
                    })
                });
            }
            if prefix.advance() {
                self.save(hour, &prefix, &progress).await?;
            }
        }
        drop(rx);
        while let Some(done) = writes.join_next().await {
            match joined::<(u64, u64, BatchWrite)>(done) {
                Ok((s, end, w)) => {
                    new_rows += w.new_rows;
                    prefix.done.insert(s, (end, w.counters));
                }
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        prefix.advance();
        self.save(hour, &prefix, &progress).await?;
        if failure.is_none() && !stopped {
            // It has sent its last batch. After a stop or a failure it may still be waiting
            // for a silent server (up to the read timeout): it is left to end on its own.
            let _ = reader.await;
        }
        if let Some(e) = failure {
            if from_object && matches!(e, ArchiveError::Body { .. }) {
                // The stored copy is not a whole file: copy it again next time. The lines
                // written from it are the same lines of the whole file.
                store::set_object(&self.pool, hour, None).await?;
            }
            return Err(e);
        }
        if stopped {
            return Ok(Outcome::Stopped { line: prefix.line });
        }
        Ok(Outcome::Done { new_rows })
    }

    async fn save(
        &self,
        hour: Hour,
        prefix: &Prefix,
        progress: &Progress,
    ) -> Result<(), StoreError> {
        let now = self.clock.now();
        store::save_progress(
            &self.pool,
            hour,
            prefix.line,
            &prefix.counters,
            progress.bytes_read.load(Ordering::Relaxed),
            now,
            now + chrono_dur(self.options.lease),
        )
        .await
    }
}

/// The part of the file whose batches are all committed, and the batches committed beyond it.
struct Prefix {
    counters: Counters,
    line: u64,
    next: u64,
    done: BTreeMap<u64, (u64, Counters)>,
}

impl Prefix {
    /// Takes in the batches that now follow the prefix; whether it grew.
    fn advance(&mut self) -> bool {
        let mut grew = false;
        while let Some((end, c)) = self.done.remove(&self.next) {
            self.counters.add(&c);
            self.line = end;
            self.next += 1;
            grew = true;
        }
        grew
    }
}

fn reject(c: &mut Counters, line: u64, e: &Rejection) {
    let r = c.rejected.entry(e.code()).or_default();
    if r.count == 0 {
        r.message = e.to_string();
    }
    r.count += 1;
    if r.first_lines.len() < 5 {
        r.first_lines.push(line);
    }
}

/// "3086 of 3086 lines rejected: missing_id 3086 (…)": what a done hour could not store.
fn rejection_reason(r: &HourReport) -> Option<String> {
    if r.rejected == 0 {
        return None;
    }
    let parts: Vec<String> = r
        .rejections
        .iter()
        .map(|(code, x)| format!("{code} {} ({})", x.count, x.message))
        .collect();
    Some(format!(
        "{} of {} lines rejected: {}",
        r.rejected,
        r.lines,
        parts.join("; ")
    ))
}

fn chrono_dur(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::days(3650))
}

/// The result of a finished write; a panic in it goes on unwinding here.
fn joined<T>(
    done: Result<Result<T, StoreError>, tokio::task::JoinError>,
) -> Result<T, ArchiveError> {
    match done {
        Ok(w) => Ok(w?),
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

const BATCH_ATTEMPTS: u32 = 3;

/// One batch in one transaction: the events (`source = 'archive'`, existing ids untouched),
/// which of the existing ones polling had stored, and the enrichment policy applied to the
/// new push events before anyone can see them pending.
async fn write_batch(
    pool: &Pool,
    events: &[EventInsert],
    now: DateTime<Utc>,
    enrich_archive: bool,
    fresh_after: DateTime<Utc>,
) -> Result<BatchWrite, StoreError> {
    let mut attempt = 1;
    loop {
        match write_batch_once(pool, events, now, enrich_archive, fresh_after).await {
            Err(e) if e.is_retryable() && attempt < BATCH_ATTEMPTS => {
                tracing::warn!(error = %e, attempt, "archive batch rolled back; writing it again");
                attempt += 1;
            }
            other => return other,
        }
    }
}

async fn write_batch_once(
    pool: &Pool,
    events: &[EventInsert],
    now: DateTime<Utc>,
    enrich_archive: bool,
    fresh_after: DateTime<Utc>,
) -> Result<BatchWrite, StoreError> {
    let db = |context| move |source| StoreError::Db { context, source };
    let mut client = pool.get().await?;
    let tx = client.transaction().await.map_err(db("begin"))?;
    // By default the policy is applied as the push rows are inserted (one write per row).
    let pushes = if enrich_archive {
        PushEnrichment::Queue
    } else {
        PushEnrichment::CacheOnly { fresh_after }
    };
    let w = write_events_tx(&tx, events, Source::Archive, now, pushes).await?;
    let polled: i64 = if w.duplicate_ids.is_empty() {
        0
    } else {
        tx.query_one(
            "SELECT count(*) FROM github_events WHERE event_id = ANY($1) AND source = 'api'",
            &[&w.duplicate_ids],
        )
        .await
        .map_err(db("count polled duplicates"))?
        .get(0)
    };
    let polled = u64::try_from(polled).unwrap_or(0);
    let c = Counters {
        stored: w.new_events + w.duplicates.saturating_sub(polled),
        already_present: polled,
        push_events: w.new_push_ids.len() as u64,
        push_cache_enriched: w.push_cache_enriched,
        push_not_enriched: w.push_not_enriched,
        ..Counters::default()
    };
    tx.commit().await.map_err(db("commit archive batch"))?;
    Ok(BatchWrite {
        counters: c,
        new_rows: w.new_events,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, crate::config::ConfigError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(&move |k| m.get(k).cloned())
    }

    #[test]
    fn options_follow_the_configuration() {
        let o = ArchiveOptions::from_config(&config(&[]).unwrap());
        assert_eq!(o.base_url, "https://data.gharchive.org");
        assert_eq!(o.missing_after, Duration::from_secs(48 * 3600));
        assert!(!o.enrich_archive);
        let o = ArchiveOptions::from_config(
            &config(&[
                ("GHARCHIVE_URL", "http://127.0.0.1:9/"),
                ("ARCHIVE_MISSING_AFTER", "2d"),
                ("ENRICH_ARCHIVE", "true"),
                ("RAW_PAYLOAD_PREFIX", "p/"),
            ])
            .unwrap(),
        );
        assert_eq!(o.base_url, "http://127.0.0.1:9");
        assert_eq!(o.missing_after, Duration::from_secs(2 * 86_400));
        assert!(o.enrich_archive);
        assert_eq!(o.object_prefix, "p/");
    }

    #[test]
    fn bad_archive_settings_name_their_variable() {
        let e = config(&[("ARCHIVE_MISSING_AFTER", "soon")]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("ARCHIVE_MISSING_AFTER=\"soon\" is invalid"),
            "{e}"
        );
        let e = config(&[("GHARCHIVE_URL", "data.gharchive.org")]).unwrap_err();
        assert!(e.to_string().starts_with("GHARCHIVE_URL="), "{e}");
        let e = config(&[("ENRICH_ARCHIVE", "maybe")]).unwrap_err();
        assert!(e.to_string().starts_with("ENRICH_ARCHIVE="), "{e}");
    }

    #[test]
    fn the_prefix_takes_in_batches_only_in_order() {
        let mut p = Prefix {
            counters: Counters::default(),
            line: 100,
            next: 0,
            done: BTreeMap::new(),
        };
        let c = |stored| Counters {
            lines: stored,
            stored,
            ..Counters::default()
        };
        p.done.insert(1, (300, c(200)));
        assert!(!p.advance(), "batch 0 is not committed yet");
        assert_eq!(p.line, 100);
        p.done.insert(0, (200, c(100)));
        assert!(p.advance());
        assert_eq!((p.line, p.next, p.counters.stored), (300, 2, 300));
    }
}
