//! A GH Archive stand-in: serves hour files under their archive names
//! (`/2015-01-01-0.json.gz`), with faults queued per file: 404, a file cut short, a
//! connection dropped mid-body, a slow or stalled body, a status code.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What one request for a file gets instead of the whole file.
#[derive(Debug, Clone)]
pub enum Fault {
    NotFound,
    Status(u16),
    /// 200 with only the first `n` bytes (a well-framed response of a file cut short).
    Truncate(usize),
    /// The full length announced, `n` bytes sent, then the connection dropped.
    Reset(usize),
    /// The whole file in `chunk`-byte pieces, `delay` apart.
    Slow {
        chunk: usize,
        delay: Duration,
    },
    /// `n` bytes, then nothing for `pause`, then the rest.
    Stall {
        n: usize,
        pause: Duration,
    },
}

#[derive(Default)]
struct Inner {
    files: HashMap<String, PathBuf>,
    faults: HashMap<String, VecDeque<Fault>>,
    requests: Vec<String>,
}

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Inner>>);

pub struct ArchiveServer {
    pub url: String,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl ArchiveServer {
    pub async fn start() -> Self {
        let shared = Shared::default();
        let app = Router::new()
            .route("/{name}", axum::routing::get(serve))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the archive stand-in");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url: format!("http://{addr}"),
            shared,
            task,
        }
    }

    /// Serves `path` as `name` (an archive file name, `2015-01-01-0.json.gz`).
    pub fn serve_file(&self, name: &str, path: PathBuf) {
        self.shared
            .0
            .lock()
            .unwrap()
            .files
            .insert(name.to_owned(), path);
    }

    /// The next request for `name` gets `fault` (queued after those already given).
    pub fn fault(&self, name: &str, fault: Fault) {
        self.shared
            .0
            .lock()
            .unwrap()
            .faults
            .entry(name.to_owned())
            .or_default()
            .push_back(fault);
    }

    /// Requests received, by file name.
    pub fn requests(&self, name: &str) -> usize {
        self.shared
            .0
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|r| *r == name)
            .count()
    }
}

impl Drop for ArchiveServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn gzip_response(len: usize, body: Body) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/gzip")
        .header(header::CONTENT_LENGTH, len)
        .body(body)
        .expect("response")
}

async fn serve(State(shared): State<Shared>, Path(name): Path<String>) -> Response {
    let (path, fault) = {
        let mut inner = shared.0.lock().unwrap();
        inner.requests.push(name.clone());
        let fault = inner.faults.get_mut(&name).and_then(VecDeque::pop_front);
        (inner.files.get(&name).cloned(), fault)
    };
    if let Some(Fault::NotFound) = fault {
        return StatusCode::NOT_FOUND.into_response();
    }
    if let Some(Fault::Status(code)) = fault {
        return StatusCode::from_u16(code)
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            .into_response();
    }
    let Some(path) = path else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let bytes = Bytes::from(tokio::fs::read(&path).await.expect("read served file"));
    let len = bytes.len();
    match fault {
        None => gzip_response(len, Body::from(bytes)),
        Some(Fault::Truncate(n)) => {
            gzip_response(n.min(len), Body::from(bytes.slice(..n.min(len))))
        }
        Some(Fault::Reset(n)) => {
            let head = bytes.slice(..n.min(len));
            let stream = futures::stream::iter(vec![
                Ok::<Bytes, std::io::Error>(head),
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "connection dropped by the stand-in",
                )),
            ]);
            gzip_response(len, Body::from_stream(stream))
        }
        Some(Fault::Slow { chunk, delay }) => {
            let chunks: Vec<Bytes> = (0..len)
                .step_by(chunk.max(1))
                .map(|i| bytes.slice(i..(i + chunk).min(len)))
                .collect();
            let stream = futures::stream::unfold(chunks.into_iter(), move |mut it| async move {
                let next = it.next()?;
                tokio::time::sleep(delay).await;
                Some((Ok::<Bytes, std::io::Error>(next), it))
            });
            gzip_response(len, Body::from_stream(stream))
        }
        Some(Fault::Stall { n, pause }) => {
            let n = n.min(len);
            let (head, tail) = (bytes.slice(..n), bytes.slice(n..));
            let stream = futures::stream::unfold(0u8, move |step| {
                let (head, tail) = (head.clone(), tail.clone());
                async move {
                    match step {
                        0 => Some((Ok::<Bytes, std::io::Error>(head), 1)),
                        1 => {
                            tokio::time::sleep(pause).await;
                            Some((Ok(tail), 2))
                        }
                        _ => None,
                    }
                }
            });
            gzip_response(len, Body::from_stream(stream))
        }
        Some(Fault::NotFound) | Some(Fault::Status(_)) => unreachable!("answered above"),
    }
}
