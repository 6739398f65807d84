//! Reading an event's raw bytes back, wherever they are stored.

use super::{line_of, ObjectReader, RawStoreError};
use crate::store::StoreError;
use deadpool_postgres::Pool;

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
