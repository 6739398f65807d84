//! Where raw event bytes go: inline in Postgres (JSONB, the default) or out of line (one
//! object per fetched page, see the S3 adapter). The rows keep a [`RawRef`] either way.

use crate::store::RawRef;
use chrono::{DateTime, Utc};
use serde_json::value::RawValue;

#[derive(Debug, thiserror::Error)]
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
        Ok(page.events.iter().map(|e| RawRef::Inline(e.get().to_owned())).collect())
    }
}

/// The hand-off of new push ids to enrichment (an SQS queue in AWS).
#[async_trait::async_trait]
pub trait PushQueue: Send + Sync {
    async fn send(&self, push_ids: &[i64]) -> Result<(), RawStoreError>;
}
