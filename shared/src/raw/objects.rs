//! Objects: one gzip NDJSON object per page (the codec), and the object-store port the S3
//! adapter and the in-memory fake implement.

use super::RawStoreError;
use chrono::{DateTime, Utc};
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use serde_json::value::RawValue;
use std::io::{BufRead, BufReader, Write};

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

#[cfg(any(test, feature = "mocks"))]
pub use fake::MemoryObjects;

#[cfg(any(test, feature = "mocks"))]
mod fake {
    use super::{ObjectReader, ObjectWriter, RawStoreError};
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Mutex;

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
                return Err(RawStoreError::new(
                    format!("put {key}"),
                    true,
                    "store unavailable",
                ));
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
                .ok_or_else(|| RawStoreError::new(format!("get {key}"), false, "no such key"))
        }
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
}
