//! GH Archive import: files (gzip or plain NDJSON) are streamed line by line — never loaded
//! whole — through the same parser and store as the API path. Decoding and parsing run on a
//! blocking thread while earlier batches are written, [`WRITERS`] transactions at a time.
//!
//! Memory is bounded whatever the file holds: a line longer than [`MAX_LINE_BYTES`] is
//! skipped as it is read (never buffered) and rejected as `line_too_long`, and a batch is
//! sent once it holds `batch_size` events or [`MAX_BATCH_BYTES`] of them. At most
//! `WRITERS + 3` batches exist at a time (being filled, two queued, `WRITERS` being written).
//! No line is ever a reason to stop: it is stored, or rejected with its reason.

use crate::event::{parse_event_str, ParseError};
use crate::raw::RawRef;
use crate::store::{self, EventInsert, Source, StoreError};
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

/// The longest line read (16 MiB). GitHub's events are far smaller (a large PullRequestEvent
/// is tens of kB); a longer line is not an event we can use, and buffering it could exhaust
/// memory, so it is skipped and rejected as `line_too_long`.
pub const MAX_LINE_BYTES: usize = 16 << 20;

/// A batch is sent once its events' raw text reaches this size (16 MiB), even before
/// `batch_size` events.
pub const MAX_BATCH_BYTES: usize = 16 << 20;

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

#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
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
    /// Stored with a `\u0000` or lone surrogate escape replaced by U+FFFD (`sanitized`).
    pub sanitized: u64,
    /// Refused by Postgres even so: stored with their exact bytes, parse status `failed`
    /// (counted in `parse_failed` too).
    pub refused: u64,
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
        self.sanitized += w.sanitized_new;
        self.refused += w.refused_new;
    }

    fn reject(&mut self, line: u64, e: &Rejection) {
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

/// Why a line was not stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error("not UTF-8: {0}")]
    NotUtf8(String),
    #[error("line of {bytes} bytes is longer than the {limit} bytes read")]
    TooLong { bytes: u64, limit: usize },
}

impl Rejection {
    /// A short, stable reason for summaries.
    pub fn code(&self) -> String {
        match self {
            Rejection::Parse(e) => e.code(),
            Rejection::NotUtf8(_) => "not_utf8".into(),
            Rejection::TooLong { .. } => "line_too_long".into(),
        }
    }
}

/// What [`read_line`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// The end of the input.
    Eof,
    /// A line, in the buffer, without its `\n` (the last line may lack one).
    Read,
    /// A line longer than the limit: skipped, the buffer left empty.
    TooLong { bytes: u64 },
}

/// Reads one `\n`-terminated line into `buf` (cleared first), holding at most `limit` bytes
/// of it: the rest of a longer line is read and dropped, never buffered.
pub fn read_line<R: BufRead + ?Sized>(
    r: &mut R,
    buf: &mut Vec<u8>,
    limit: usize,
) -> std::io::Result<Line> {
    buf.clear();
    let mut total = 0u64;
    let mut too_long = false;
    loop {
        let chunk = match r.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok(match (total, too_long) {
                (0, _) => Line::Eof,
                (bytes, true) => Line::TooLong { bytes },
                _ => Line::Read,
            });
        }
        let (part, end) = match chunk.iter().position(|&c| c == b'\n') {
            Some(n) => (n, true),
            None => (chunk.len(), false),
        };
        if !too_long {
            if buf.len() + part > limit {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(&chunk[..part]);
            }
        }
        total += part as u64;
        r.consume(part + usize::from(end));
        if end {
            return Ok(if too_long {
                Line::TooLong { bytes: total }
            } else {
                Line::Read
            });
        }
    }
}

/// Lines read from an input, parsed, ready to write.
pub(crate) struct Batch {
    pub(crate) events: Vec<EventInsert>,
    pub(crate) rejects: Vec<(u64, Rejection)>,
    pub(crate) lines: u64,
    pub(crate) blank: u64,
    /// Lines of the input read once this batch is done (1-based number of its last line).
    pub(crate) end_line: u64,
}

/// How a line reader refers to each event's raw bytes.
#[derive(Debug, Clone)]
pub(crate) enum RawMode {
    /// The line's text, stored inline.
    Inline,
    /// Line n (0-based) of this object, which holds the input's bytes as they are.
    Object(String),
}

/// Reads `input` (gzip-compressed when `gz`) on a blocking thread, `\n`-separated line by
/// line, and sends parsed batches (at most two queued). The first `skip` lines are read and
/// dropped (a resumed import: they are written already). A read error (a truncated gzip
/// stream, a connection lost mid-body) is sent as the last item.
pub(crate) fn spawn_reader<R: Read + Send + 'static>(
    input: R,
    gz: bool,
    raw: RawMode,
    skip: u64,
    batch_size: usize,
    progress: Arc<Progress>,
) -> (
    tokio::task::JoinHandle<()>,
    tokio::sync::mpsc::Receiver<std::io::Result<Batch>>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Batch>>(2);
    let reader = tokio::task::spawn_blocking(move || {
        let counted = Counting {
            inner: input,
            progress: progress.clone(),
        };
        let inner: Box<dyn Read> = if gz {
            Box::new(flate2::read::MultiGzDecoder::new(counted))
        } else {
            Box::new(counted)
        };
        let mut r = BufReader::with_capacity(1 << 20, inner);
        let mut line_no = 0u64;
        let mut buf = Vec::with_capacity(64 * 1024);
        while line_no < skip {
            match read_line(&mut r, &mut buf, MAX_LINE_BYTES) {
                Ok(Line::Eof) => break,
                Ok(_) => line_no += 1,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
        loop {
            let mut batch = Batch {
                events: Vec::with_capacity(batch_size),
                rejects: Vec::new(),
                lines: 0,
                blank: 0,
                end_line: line_no,
            };
            let mut eof = false;
            let mut batch_bytes = 0usize;
            while batch.events.len() < batch_size && batch_bytes < MAX_BATCH_BYTES {
                // Split on '\n' only: JSON text may hold other line separators (U+2028).
                match read_line(&mut r, &mut buf, MAX_LINE_BYTES) {
                    Ok(Line::Eof) => {
                        eof = true;
                        break;
                    }
                    Ok(Line::Read) => {
                        line_no += 1;
                        batch.lines += 1;
                    }
                    Ok(Line::TooLong { bytes }) => {
                        line_no += 1;
                        batch.lines += 1;
                        let limit = MAX_LINE_BYTES;
                        batch
                            .rejects
                            .push((line_no, Rejection::TooLong { bytes, limit }));
                        continue;
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
                let text = match std::str::from_utf8(&buf) {
                    Ok(t) => t.trim_end_matches('\r'),
                    Err(e) => {
                        batch
                            .rejects
                            .push((line_no, Rejection::NotUtf8(e.to_string())));
                        continue;
                    }
                };
                if text.trim().is_empty() {
                    batch.blank += 1;
                    continue;
                }
                match parse_event_str(text) {
                    Ok(parsed) => {
                        batch_bytes += text.len();
                        let raw = match &raw {
                            RawMode::Inline => RawRef::Inline(text.to_owned()),
                            RawMode::Object(key) => RawRef::Object {
                                key: key.clone(),
                                line: i32::try_from(line_no - 1).unwrap_or(i32::MAX),
                            },
                        };
                        batch.events.push(EventInsert { parsed, raw })
                    }
                    Err(e) => batch.rejects.push((line_no, e.into())),
                }
            }
            batch.end_line = line_no;
            progress.lines.store(line_no, Ordering::Relaxed);
            if tx.blocking_send(Ok(batch)).is_err() || eof {
                return;
            }
        }
    });
    (reader, rx)
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
    let gz = path.extension().is_some_and(|e| e == "gz");
    let (reader, mut rx) = spawn_reader(file, gz, RawMode::Inline, 0, batch_size, progress);

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn lines(input: &[u8], limit: usize) -> Vec<(Line, Vec<u8>)> {
        let mut r = BufReader::with_capacity(16, Cursor::new(input.to_vec()));
        let mut buf = Vec::new();
        let mut out = Vec::new();
        loop {
            let l = read_line(&mut r, &mut buf, limit).unwrap();
            if l == Line::Eof {
                return out;
            }
            out.push((l, buf.clone()));
        }
    }

    #[test]
    fn lines_split_on_newline_only_and_the_last_needs_none() {
        let got = lines("a\n\nb\u{2028}c\r\nlast".as_bytes(), 100);
        let want: Vec<(Line, Vec<u8>)> = vec![
            (Line::Read, b"a".to_vec()),
            (Line::Read, b"".to_vec()),
            (Line::Read, "b\u{2028}c\r".as_bytes().to_vec()),
            (Line::Read, b"last".to_vec()),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn a_line_over_the_limit_is_skipped_and_the_next_one_read() {
        let mut input = vec![b'x'; 100];
        input.extend_from_slice(b"\nok\n");
        input.extend_from_slice(&[b'y'; 41]);
        let got = lines(&input, 40);
        assert_eq!(
            got,
            vec![
                (Line::TooLong { bytes: 100 }, Vec::new()),
                (Line::Read, b"ok".to_vec()),
                (Line::TooLong { bytes: 41 }, Vec::new()),
            ]
        );
        // Exactly at the limit is a line.
        assert_eq!(lines(&[b'z'; 40], 40), vec![(Line::Read, vec![b'z'; 40])]);
    }

    #[test]
    fn a_50_mb_line_never_takes_more_than_the_limit_in_memory() {
        let limit = 1 << 20;
        let mut input = vec![b'a'; 50 << 20];
        input.push(b'\n');
        let mut r = BufReader::with_capacity(64 << 10, Cursor::new(input));
        let mut buf = Vec::new();
        assert_eq!(
            read_line(&mut r, &mut buf, limit).unwrap(),
            Line::TooLong { bytes: 50 << 20 }
        );
        assert!(buf.capacity() <= 2 * limit, "{}", buf.capacity());
        assert_eq!(read_line(&mut r, &mut buf, limit).unwrap(), Line::Eof);
    }
}
