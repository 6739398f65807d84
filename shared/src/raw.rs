//! Where raw event bytes go: inline in Postgres (JSONB, the default) or out of line (one
//! object per fetched page, see the S3 adapter). The rows keep a [`RawRef`] either way, and
//! [`read_raw`] reads an event back from either.
//!
//! Out of line, a page is one gzip NDJSON object (one event per line, each line the event's
//! bytes exactly as GitHub sent them, as in GH Archive) under a key partitioned by UTC date
//! and hour: `{prefix}events/YYYY/MM/DD/HH/{label}.json.gz`.

use crate::store::{RawRef, StoreError};
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

#[derive(Debug, Clone, thiserror::Error)]
#[error("raw payload store: {context}: {message}")]
pub struct RawStoreError {
    pub context: String,
    pub message: String,
    pub retryable: bool,
}

/// A fetched page, as GitHub sent it.
pub struct Page<'a> {
    pub events: &'a [&'a RawValue],
    pub fetched_at: DateTime<Utc>,
    /// Distinguishes pages fetched in the same second (e.g. the page number and a cycle id).
    pub label: String,
}

#[async_trait::async_trait]
pub trait RawStore: Send + Sync {
    /// Keeps the raw bytes of every event of the page; returns each event's reference, in order.
    async fn put_page(&self, page: &Page<'_>) -> Result<Vec<RawRef>, RawStoreError>;
}

/// The default store: each event's JSON goes into the row itself.
pub struct InlineRaw;

#[async_trait::async_trait]
impl RawStore for InlineRaw {
    async fn put_page(&self, page: &Page<'_>) -> Result<Vec<RawRef>, RawStoreError> {
        Ok(page
            .events
            .iter()
            .map(|e| RawRef::Inline(e.get().to_owned()))
            .collect())
    }
}

// ---------------------------------------------------------------------------------------
// Push queue
// ---------------------------------------------------------------------------------------

/// Why the queue did not take a push id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("push queue: {context}: {message}")]
pub struct QueueError {
    pub context: String,
    pub message: String,
    /// Sending the same id again later can succeed (throttling, a 5xx, a network error).
    pub retryable: bool,
}

/// What a [`PushQueue::send`] did: the ids the queue accepted and, for the rest, why not.
/// Only `sent` ids may be marked as enqueued.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendReport {
    pub sent: Vec<i64>,
    pub failed: Vec<(i64, QueueError)>,
}

impl SendReport {
    /// Every id failed for the same reason (e.g. the call itself failed).
    pub fn all_failed(ids: &[i64], error: &QueueError) -> Self {
        Self {
            sent: Vec::new(),
            failed: ids.iter().map(|&id| (id, error.clone())).collect(),
        }
    }

    pub fn merge(&mut self, other: SendReport) {
        self.sent.extend(other.sent);
        self.failed.extend(other.failed);
    }

    /// The first failure, for a log line or an error.
    pub fn first_error(&self) -> Option<&QueueError> {
        self.failed.first().map(|(_, e)| e)
    }
}

/// The hand-off of new push ids to enrichment (an SQS queue in AWS).
#[async_trait::async_trait]
pub trait PushQueue: Send + Sync {
    /// Sends each id once. A partial failure is not an error of the whole call: the report
    /// says which ids went out.
    async fn send(&self, push_ids: &[i64]) -> SendReport;

    /// Sends each id once, to be delivered after its delay (at most
    /// [`MAX_DELIVERY_DELAY`]). A queue without delivery delays delivers at once: a message
    /// for a row not yet due is acked by enrichment and the row goes back to the outbox.
    async fn send_delayed(&self, items: &[(i64, std::time::Duration)]) -> SendReport {
        let ids: Vec<i64> = items.iter().map(|(id, _)| *id).collect();
        self.send(&ids).await
    }
}

/// The longest delivery delay a queue message can have (SQS `DelaySeconds`: 15 minutes).
pub const MAX_DELIVERY_DELAY: std::time::Duration = std::time::Duration::from_secs(900);

/// An in-memory [`PushQueue`] for tests: keeps every id it accepted, in order, and can be
/// told to refuse everything or particular ids.
#[derive(Default)]
pub struct MemoryQueue {
    sent: Mutex<Vec<i64>>,
    refuse_all: AtomicBool,
    refuse: Mutex<Vec<i64>>,
    calls: AtomicUsize,
}

impl MemoryQueue {
    pub fn new() -> Self {
        Self::default()
    }
    /// Every id accepted so far, in order (duplicates included).
    pub fn sent(&self) -> Vec<i64> {
        self.sent.lock().expect("queue lock").clone()
    }
    /// How many times `send` was called.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
    /// From now on refuse every id (`true`) or accept again (`false`).
    pub fn refuse_all(&self, refuse: bool) {
        self.refuse_all.store(refuse, Ordering::SeqCst);
    }
    /// Refuse these ids from now on.
    pub fn refuse_ids(&self, ids: &[i64]) {
        self.refuse
            .lock()
            .expect("queue lock")
            .extend_from_slice(ids);
    }
}

#[async_trait::async_trait]
impl PushQueue for MemoryQueue {
    async fn send(&self, push_ids: &[i64]) -> SendReport {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let refused = QueueError {
            context: "memory queue".into(),
            message: "refused".into(),
            retryable: true,
        };
        if self.refuse_all.load(Ordering::SeqCst) {
            return SendReport::all_failed(push_ids, &refused);
        }
        let refuse = self.refuse.lock().expect("queue lock").clone();
        let mut report = SendReport::default();
        let mut sent = self.sent.lock().expect("queue lock");
        for &id in push_ids {
            if refuse.contains(&id) {
                report.failed.push((id, refused.clone()));
            } else {
                sent.push(id);
                report.sent.push(id);
            }
        }
        report
    }
}

// ---------------------------------------------------------------------------------------
// Objects: one gzip NDJSON object per page
// ---------------------------------------------------------------------------------------

/// Reads whole objects (S3 `GetObject`, or the in-memory fake).
#[async_trait::async_trait]
pub trait ObjectReader: Send + Sync {
    async fn get_object(&self, key: &str) -> Result<Vec<u8>, RawStoreError>;
}

/// Writes whole objects. One call is one PUT.
#[async_trait::async_trait]
pub trait ObjectWriter: Send + Sync {
    async fn put_object(&self, key: &str, body: Vec<u8>) -> Result<(), RawStoreError>;
}

/// A [`RawStore`] writing each page as one gzip NDJSON object through `objects`.
pub struct ObjectRaw<W> {
    pub objects: W,
    /// Key prefix, e.g. `raw/` (empty or ending in `/`).
    pub prefix: String,
}

impl<W> ObjectRaw<W> {
    pub fn new(objects: W, prefix: impl Into<String>) -> Self {
        Self {
            objects,
            prefix: prefix.into(),
        }
    }
}

#[async_trait::async_trait]
impl<W: ObjectWriter> RawStore for ObjectRaw<W> {
    async fn put_page(&self, page: &Page<'_>) -> Result<Vec<RawRef>, RawStoreError> {
        if page.events.is_empty() {
            // Nothing to keep: no empty object.
            return Ok(Vec::new());
        }
        let key = page_key(&self.prefix, page.fetched_at, &page.label);
        let body = encode_page(page.events).map_err(|e| RawStoreError {
            context: format!("gzip page {key}"),
            message: e.to_string(),
            retryable: false,
        })?;
        self.objects.put_object(&key, body).await?;
        Ok((0..page.events.len())
            .map(|line| RawRef::Object {
                key: key.clone(),
                line: i32::try_from(line).unwrap_or(i32::MAX),
            })
            .collect())
    }
}

/// The key of a page's object: `{prefix}events/YYYY/MM/DD/HH/{label}.json.gz` (UTC).
/// Deterministic, so storing the same page of the same cycle again overwrites one object.
pub fn page_key(prefix: &str, fetched_at: DateTime<Utc>, label: &str) -> String {
    format!(
        "{prefix}events/{}/{label}.json.gz",
        fetched_at.format("%Y/%m/%d/%H")
    )
}

/// Gzip NDJSON: each event's original bytes, one per line. The bytes of a JSON value never
/// contain a raw newline (inside strings it is escaped), so lines and events correspond.
pub fn encode_page(events: &[&RawValue]) -> std::io::Result<Vec<u8>> {
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
    for e in events {
        gz.write_all(e.get().as_bytes())?;
        gz.write_all(b"\n")?;
    }
    gz.finish()
}

/// Line `line` (0-based, without its newline) of a gzip NDJSON object (one gzip member or
/// several concatenated, as a file may be).
pub fn line_of(gz: &[u8], line: usize) -> std::io::Result<Option<Vec<u8>>> {
    let mut reader = BufReader::new(MultiGzDecoder::new(gz));
    let mut buf = Vec::new();
    for _ in 0..=line {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            return Ok(None);
        }
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    }
    Ok(Some(buf))
}

/// An in-memory object store, for tests: counts PUTs and can be told to fail them.
#[derive(Default)]
pub struct MemoryObjects {
    objects: Mutex<BTreeMap<String, Vec<u8>>>,
    puts: AtomicUsize,
    fail_puts: AtomicBool,
}

impl MemoryObjects {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn keys(&self) -> Vec<String> {
        self.objects
            .lock()
            .expect("objects lock")
            .keys()
            .cloned()
            .collect()
    }
    pub fn puts(&self) -> usize {
        self.puts.load(Ordering::SeqCst)
    }
    /// From now on every PUT fails (`true`) or succeeds (`false`).
    pub fn fail_puts(&self, fail: bool) {
        self.fail_puts.store(fail, Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl ObjectWriter for MemoryObjects {
    async fn put_object(&self, key: &str, body: Vec<u8>) -> Result<(), RawStoreError> {
        if self.fail_puts.load(Ordering::SeqCst) {
            return Err(RawStoreError {
                context: format!("put {key}"),
                message: "store unavailable".into(),
                retryable: true,
            });
        }
        self.puts.fetch_add(1, Ordering::SeqCst);
        self.objects
            .lock()
            .expect("objects lock")
            .insert(key.to_owned(), body);
        Ok(())
    }
}

#[async_trait::async_trait]
impl ObjectReader for MemoryObjects {
    async fn get_object(&self, key: &str) -> Result<Vec<u8>, RawStoreError> {
        self.objects
            .lock()
            .expect("objects lock")
            .get(key)
            .cloned()
            .ok_or_else(|| RawStoreError {
                context: format!("get {key}"),
                message: "no such key".into(),
                retryable: false,
            })
    }
}

// `Arc<T>` stands wherever an object store is expected, so tests keep a handle on the fake.
#[async_trait::async_trait]
impl<T: ObjectWriter + ?Sized> ObjectWriter for std::sync::Arc<T> {
    async fn put_object(&self, key: &str, body: Vec<u8>) -> Result<(), RawStoreError> {
        (**self).put_object(key, body).await
    }
}

#[async_trait::async_trait]
impl<T: ObjectReader + ?Sized> ObjectReader for std::sync::Arc<T> {
    async fn get_object(&self, key: &str) -> Result<Vec<u8>, RawStoreError> {
        (**self).get_object(key).await
    }
}

// ---------------------------------------------------------------------------------------
// Reading back
// ---------------------------------------------------------------------------------------

#[derive(Debug, thiserror::Error)]
pub enum ReadRawError {
    #[error("event {0} is not stored")]
    NotFound(i64),
    #[error("event {event_id} is stored in object {key}, but no object reader was given")]
    NoReader { event_id: i64, key: String },
    #[error("event {event_id}: object {key} has no line {line}")]
    MissingLine {
        event_id: i64,
        key: String,
        line: i32,
    },
    #[error("event {event_id}: object {key}: {source}")]
    Decode {
        event_id: i64,
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Object(#[from] RawStoreError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The raw bytes of a stored event, whichever store holds them: inline, the JSONB's text
/// (Postgres normalizes JSONB, so these are equal as JSON, not byte for byte), or the exact
/// bytes for an event that had to be sanitized; in an object, the line exactly as GitHub
/// sent it.
pub async fn read_raw(
    pool: &Pool,
    objects: Option<&dyn ObjectReader>,
    event_id: i64,
) -> Result<Vec<u8>, ReadRawError> {
    let client = pool.get().await.map_err(StoreError::from)?;
    let row = client
        .query_opt("SELECT raw::text, raw_object_key, raw_object_line, raw_original FROM github_events WHERE event_id = $1", &[&event_id])
        .await
        .map_err(|source| StoreError::Db { context: "read raw event", source })?
        .ok_or(ReadRawError::NotFound(event_id))?;
    drop(client);
    let (inline, key, line): (Option<String>, Option<String>, Option<i32>) =
        (row.get(0), row.get(1), row.get(2));
    // A sanitized event keeps the bytes GitHub sent beside its readable copy.
    if let Some(original) = row.get::<_, Option<Vec<u8>>>(3) {
        return Ok(original);
    }
    match (inline, key, line) {
        (Some(text), _, _) => Ok(text.into_bytes()),
        (None, Some(key), Some(line)) => {
            let reader = objects.ok_or_else(|| ReadRawError::NoReader {
                event_id,
                key: key.clone(),
            })?;
            let gz = reader.get_object(&key).await?;
            let index = usize::try_from(line).map_err(|_| ReadRawError::MissingLine {
                event_id,
                key: key.clone(),
                line,
            })?;
            match line_of(&gz, index) {
                Ok(Some(bytes)) => Ok(bytes),
                Ok(None) => Err(ReadRawError::MissingLine {
                    event_id,
                    key,
                    line,
                }),
                Err(source) => Err(ReadRawError::Decode {
                    event_id,
                    key,
                    source,
                }),
            }
        }
        // The table's CHECK constraint rules this out.
        _ => Err(ReadRawError::NotFound(event_id)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    #[test]
    fn keys_are_partitioned_by_utc_date_and_hour() {
        let t = Utc.with_ymd_and_hms(2026, 11, 27, 17, 5, 9).unwrap();
        assert_eq!(
            page_key("raw/", t, "20261127T170509.000Z-p2"),
            "raw/events/2026/11/27/17/20261127T170509.000Z-p2.json.gz"
        );
        assert_eq!(page_key("", t, "x"), "events/2026/11/27/17/x.json.gz");
    }

    #[test]
    fn a_page_round_trips_line_by_line_byte_for_byte() {
        // Odd spacing, escapes and non-ASCII survive: nothing is re-serialized.
        let texts = [
            r#"{"id":"1", "a" :[1,2] }"#,
            r#"{"id":"2","s":"line\nbreak \u00e9 é"}"#,
            r#"{"id":"3"}"#,
        ];
        let owned: Vec<Box<RawValue>> = texts.iter().map(|t| raw(t)).collect();
        let events: Vec<&RawValue> = owned.iter().map(|b| b.as_ref()).collect();
        let gz = encode_page(&events).unwrap();
        for (i, t) in texts.iter().enumerate() {
            assert_eq!(line_of(&gz, i).unwrap().unwrap(), t.as_bytes());
        }
        assert_eq!(line_of(&gz, 3).unwrap(), None);
    }

    #[tokio::test]
    async fn one_put_per_page_and_every_event_refers_to_its_line() {
        let store = ObjectRaw::new(std::sync::Arc::new(MemoryObjects::new()), "raw/");
        let owned: Vec<Box<RawValue>> =
            (0..5).map(|i| raw(&format!(r#"{{"id":"{i}"}}"#))).collect();
        let events: Vec<&RawValue> = owned.iter().map(|b| b.as_ref()).collect();
        let t = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        let refs = store
            .put_page(&Page {
                events: &events,
                fetched_at: t,
                label: "c-p1".into(),
            })
            .await
            .unwrap();
        assert_eq!(store.objects.puts(), 1);
        let key = "raw/events/2026/01/02/03/c-p1.json.gz".to_owned();
        assert_eq!(store.objects.keys(), vec![key.clone()]);
        assert_eq!(
            refs,
            (0..5)
                .map(|line| RawRef::Object {
                    key: key.clone(),
                    line
                })
                .collect::<Vec<_>>()
        );

        let empty = store
            .put_page(&Page {
                events: &[],
                fetched_at: t,
                label: "c-p2".into(),
            })
            .await
            .unwrap();
        assert!(empty.is_empty());
        assert_eq!(store.objects.puts(), 1, "an empty page writes no object");
    }

    #[tokio::test]
    async fn a_failing_put_is_an_error_of_the_page() {
        let objects = std::sync::Arc::new(MemoryObjects::new());
        objects.fail_puts(true);
        let store = ObjectRaw::new(objects, "raw/");
        let one = raw(r#"{"id":"1"}"#);
        let events = [one.as_ref()];
        let err = store
            .put_page(&Page {
                events: &events,
                fetched_at: Utc::now(),
                label: "l".into(),
            })
            .await
            .unwrap_err();
        assert!(err.retryable, "{err}");
    }

    #[tokio::test]
    async fn the_memory_queue_reports_which_ids_it_took() {
        let q = MemoryQueue::new();
        q.refuse_ids(&[2]);
        let r = q.send(&[1, 2, 3]).await;
        assert_eq!(r.sent, vec![1, 3]);
        assert_eq!(
            r.failed.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            vec![2]
        );
        q.refuse_all(true);
        assert_eq!(q.send(&[4]).await.sent, Vec::<i64>::new());
        assert_eq!(q.sent(), vec![1, 3]);
        assert_eq!(q.calls(), 2);
    }
}
