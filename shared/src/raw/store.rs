//! The raw-store port: where a fetched page's raw bytes go, and the reference each stored
//! row keeps to them.

use super::objects::{encode_page, page_key, ObjectWriter};
use crate::BoxError;
use chrono::{DateTime, Utc};
use serde_json::value::RawValue;

/// Why raw bytes were not stored or read.
#[derive(Debug, thiserror::Error)]
#[error("raw payload store: {context}: {source}")]
pub struct RawStoreError {
    /// The store or the step (`s3`, `gzip page …`).
    pub context: String,
    /// Trying again later can succeed (throttling, a 5xx, a network error).
    pub retryable: bool,
    #[source]
    pub source: BoxError,
}

impl RawStoreError {
    pub fn new(context: impl Into<String>, retryable: bool, source: impl Into<BoxError>) -> Self {
        Self {
            context: context.into(),
            retryable,
            source: source.into(),
        }
    }
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

/// Where the raw bytes of an event live.
#[derive(Debug, Clone, PartialEq)]
pub enum RawRef {
    /// Inline, as JSONB.
    Inline(String),
    /// Line `line` (0-based) of the gzip NDJSON object `key`.
    Object { key: String, line: i32 },
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
        let body = encode_page(page.events)
            .map_err(|e| RawStoreError::new(format!("gzip page {key}"), false, e))?;
        self.objects.put_object(&key, body).await?;
        Ok((0..page.events.len())
            .map(|line| RawRef::Object {
                key: key.clone(),
                line: i32::try_from(line).unwrap_or(i32::MAX),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw::{MemoryObjects, ObjectWriter};
    use chrono::TimeZone;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
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
    async fn a_raw_store_error_keeps_its_cause() {
        let objects = MemoryObjects::new();
        objects.fail_puts(true);
        let err = objects.put_object("k", Vec::new()).await.unwrap_err();
        let cause = std::error::Error::source(&err).expect("a source");
        assert_eq!(cause.to_string(), "store unavailable");
        assert_eq!(
            err.to_string(),
            "raw payload store: put k: store unavailable"
        );
    }
}
