//! GH Archive import: files (gzip or plain NDJSON) are streamed line by line — never loaded
//! whole — through the same parser and store as the API path. Decoding and parsing run on a
//! blocking thread while earlier batches are written, [`WRITERS`] transactions at a time.

use crate::event::{parse_event_str, ParseError};
use crate::store::{self, EventInsert, RawRef, Source, StoreError};
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// How many first line numbers each rejection reason keeps.
const SAMPLE_LINES: usize = 5;

/// Batches written at the same time, each in its own transaction on its own connection. The
/// import is bound by Postgres (jsonb input, six indexes per table, the push_events foreign
/// key), not by this process: one transaction in flight keeps one backend busy, two keep a
/// second core busy too (README, "Performance"; a third brought nothing more on 2 cores).
pub const WRITERS: usize = 2;

/// Attempts per batch when Postgres answers with a retryable error (a deadlock between the
/// writers, a dropped connection): a batch's transaction is all or nothing and idempotent.
const BATCH_ATTEMPTS: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Rejections {
    pub count: u64,
    pub message: String,
    pub first_lines: Vec<u64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ImportSummary {
    pub file: String,
    pub lines: u64,
    pub blank_lines: u64,
    pub stored: u64,
    pub duplicates: u64,
    pub push_events: u64,
    /// Stored raw, but with parse status `failed`.
    pub parse_failed: u64,
    /// Not stored: no usable id. Keyed by reason code.
    pub rejected: BTreeMap<String, Rejections>,
}

impl ImportSummary {
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().map(|r| r.count).sum()
    }

    fn add(&mut self, w: store::PageWrite) {
        self.stored += w.new_events;
        self.duplicates += w.duplicates;
        self.push_events += w.new_push_ids.len() as u64;
        self.parse_failed += w.parse_failed_new;
    }

    fn reject(&mut self, line: u64, e: &ParseError) {
        let r = self.rejected.entry(e.code()).or_default();
        if r.count == 0 {
            r.message = e.to_string();
        }
        r.count += 1;
        if r.first_lines.len() < SAMPLE_LINES {
            r.first_lines.push(line);
        }
    }
}

/// Progress as the file is read: compressed bytes consumed so far.
#[derive(Debug, Default)]
pub struct Progress {
    pub bytes_read: AtomicU64,
    pub lines: AtomicU64,
}

struct Counting<R> {
    inner: R,
    progress: Arc<Progress>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress
            .bytes_read
            .fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

struct Batch {
    events: Vec<EventInsert>,
    rejects: Vec<(u64, ParseError)>,
    lines: u64,
    blank: u64,
}

/// Imports one file. Lines that cannot be stored are counted by reason; everything valid is
/// stored regardless. Importing the same file again stores nothing new.
pub async fn import_file(
    pool: &Pool,
    path: &Path,
    batch_size: usize,
    progress: Arc<Progress>,
    now: DateTime<Utc>,
) -> Result<ImportSummary, ImportError> {
    let io_err = |source| ImportError::Io {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(io_err)?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Batch>>(2);
    let gz = path.extension().is_some_and(|e| e == "gz");
    let reader_progress = progress.clone();
    let reader = tokio::task::spawn_blocking(move || {
        let counted = Counting {
            inner: file,
            progress: reader_progress.clone(),
        };
        let inner: Box<dyn Read> = if gz {
            Box::new(flate2::read::MultiGzDecoder::new(counted))
        } else {
            Box::new(counted)
        };
        let mut r = BufReader::with_capacity(1 << 20, inner);
        let mut line_no = 0u64;
        let mut buf = Vec::with_capacity(64 * 1024);
        loop {
            let mut batch = Batch {
                events: Vec::with_capacity(batch_size),
                rejects: Vec::new(),
                lines: 0,
                blank: 0,
            };
            let mut eof = false;
            while batch.events.len() < batch_size {
                buf.clear();
                // Split on '\n' only: JSON text may hold other line separators (U+2028).
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
                line_no += 1;
                batch.lines += 1;
                let text = match std::str::from_utf8(&buf) {
                    Ok(t) => t.trim_end_matches(['\n', '\r']),
                    Err(e) => {
                        batch
                            .rejects
                            .push((line_no, ParseError::InvalidJson(format!("not UTF-8: {e}"))));
                        continue;
                    }
                };
                if text.trim().is_empty() {
                    batch.blank += 1;
                    continue;
                }
                match parse_event_str(text) {
                    Ok(parsed) => batch.events.push(EventInsert {
                        parsed,
                        raw: RawRef::Inline(text.to_owned()),
                    }),
                    Err(e) => batch.rejects.push((line_no, e)),
                }
            }
            reader_progress.lines.store(line_no, Ordering::Relaxed);
            if tx.blocking_send(Ok(batch)).is_err() || eof {
                return;
            }
        }
    });

    let mut summary = ImportSummary {
        file: path.display().to_string(),
        ..Default::default()
    };
    let mut writes = tokio::task::JoinSet::new();
    while let Some(batch) = rx.recv().await {
        let batch = batch.map_err(io_err)?;
        summary.lines += batch.lines;
        summary.blank_lines += batch.blank;
        for (line, e) in &batch.rejects {
            summary.reject(*line, e);
        }
        if batch.events.is_empty() {
            continue;
        }
        if writes.len() >= WRITERS {
            if let Some(done) = writes.join_next().await {
                summary.add(joined(done)?);
            }
        }
        let mut events = batch.events;
        // Every transaction takes its ids in ascending order, so two writers waiting on each
        // other's uncommitted rows (the same id in both batches) cannot deadlock.
        events.sort_by_key(|e| e.parsed.event().event_id);
        let pool = pool.clone();
        writes.spawn(async move { write_batch(&pool, &events, now).await });
    }
    while let Some(done) = writes.join_next().await {
        summary.add(joined(done)?);
    }
    reader.await.map_err(|e| io_err(std::io::Error::other(e)))?;
    Ok(summary)
}

async fn write_batch(
    pool: &Pool,
    events: &[EventInsert],
    now: DateTime<Utc>,
) -> Result<store::PageWrite, StoreError> {
    let mut attempt = 1;
    crate::failpoints::hit("import::mid_batch");
    loop {
        match store::write_events(pool, events, Source::Archive, now).await {
            Err(e) if e.is_retryable() && attempt < BATCH_ATTEMPTS => {
                tracing::warn!(error = %e, attempt, "import batch rolled back; writing it again");
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// The result of a finished write; a panic in it goes on unwinding here.
fn joined(
    done: Result<Result<store::PageWrite, StoreError>, tokio::task::JoinError>,
) -> Result<store::PageWrite, ImportError> {
    match done {
        Ok(w) => Ok(w?),
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}
