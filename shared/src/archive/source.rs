//! Where an hour's bytes come from: GH Archive over HTTP (retried only while nothing of the
//! body was read), an object store holding a copy, and the bridge from an async body to the
//! blocking line reader.

use super::ArchiveError;
use crate::deadline::Deadline;
use crate::raw::RawStoreError;
use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use std::io::Read;
use std::time::Duration;

/// A body, chunk by chunk.
pub type ByteChunks = BoxStream<'static, std::io::Result<Bytes>>;

/// An object store that keeps whole hour files (S3 mode): written from a stream, read back
/// as one.
#[async_trait::async_trait]
pub trait HourObjects: Send + Sync {
    /// Stores `body` under `key` (replacing what was there) and returns its size. The object
    /// exists only once the whole body is stored: a failed copy leaves nothing new behind.
    async fn put_stream(&self, key: &str, body: ByteChunks) -> Result<u64, RawStoreError>;
    /// The object's bytes as they were stored.
    async fn get_stream(&self, key: &str) -> Result<ByteChunks, RawStoreError>;
}

/// How GH Archive answered for an hour.
pub enum Fetch {
    Body(ByteChunks),
    /// 404 (or 403, what a bucket without the object answers): not published, or never.
    NotFound,
}

#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Attempts after the first for a request that failed before any of its body was read.
    pub retries: usize,
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// How long a read may wait for the next bytes of a body (a stalled server).
    pub read_timeout: Duration,
    pub connect_timeout: Duration,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            retries: 3,
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(20),
            read_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// A client for GH Archive: no transparent decompression (the file's gzip bytes are what is
/// read, and in S3 mode kept), bounded waits.
pub fn http_client(o: &HttpOptions) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .no_gzip()
        .connect_timeout(o.connect_timeout)
        .read_timeout(o.read_timeout)
        .user_agent(concat!("ghevents/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// GETs `url`. A connection failure, a timeout, 429 or a 5xx before the body is retried
/// (with backoff, within the deadline); what happens once the body streams is the caller's
/// (the committed lines stay and a later attempt goes on).
pub async fn fetch(
    client: &reqwest::Client,
    url: &str,
    o: &HttpOptions,
    deadline: Deadline,
) -> Result<Fetch, ArchiveError> {
    let backoff = ExponentialBuilder::default()
        .with_min_delay(o.min_delay)
        .with_max_delay(o.max_delay)
        .with_max_times(o.retries)
        .with_jitter();
    let once = || async {
        let resp = client
            .get(url)
            .send()
            .await
            .map_err(|e| ArchiveError::Http {
                url: url.to_owned(),
                message: error_chain(&e),
                retryable: true,
            })?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::FORBIDDEN {
            return Ok(Fetch::NotFound);
        }
        if !status.is_success() {
            return Err(ArchiveError::Http {
                url: url.to_owned(),
                message: format!("HTTP {status}"),
                retryable: status.is_server_error()
                    || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                    || status == reqwest::StatusCode::REQUEST_TIMEOUT,
            });
        }
        let body = resp
            .bytes_stream()
            .map(|r| r.map_err(|e| std::io::Error::other(error_chain(&e))))
            .boxed();
        Ok(Fetch::Body(body))
    };
    once.retry(backoff)
        .when(ArchiveError::is_retryable)
        .adjust(|_, wait| {
            let wait = wait?;
            deadline.allows(wait + Duration::from_secs(5)).then_some(wait)
        })
        .notify(|e, wait| {
            tracing::warn!(url, error = %e, retry_in_ms = wait.as_millis() as u64, "GH Archive request failed; retrying")
        })
        .await
}

/// An error with its causes ("error decoding response body: connection reset by peer").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cause = c.source();
    }
    s
}

/// A blocking reader over an async body: a task pumps the chunks through a small channel
/// (a few chunks in memory at most), the reader's thread waits for them.
pub struct BodyReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    chunk: Bytes,
    done: bool,
}

impl BodyReader {
    /// Starts pumping `body`; call from within a Tokio runtime, read from a blocking thread.
    pub fn new(mut body: ByteChunks) -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tokio::spawn(async move {
            while let Some(item) = body.next().await {
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    return;
                }
            }
        });
        Self {
            rx,
            chunk: Bytes::new(),
            done: false,
        }
    }
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            if self.done {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.chunk = b,
                Some(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                None => {
                    self.done = true;
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}
