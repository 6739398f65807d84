//! A GitHub stand-in that answers from a script: recorded exchanges (with their real headers)
//! or crafted replies, in order, per path. It records every request it receives, with the
//! time of the clock the test drives.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use chrono::{DateTime, Utc};
use ghevents_core::clock::Clock;
use http::HeaderMap;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub delay: Option<Duration>,
}

impl Reply {
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            delay: None,
        }
    }
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name.to_owned(), value.into()));
        self
    }
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }
    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = Some(d);
        self
    }
    pub fn header_value(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Exchange `index` of a PyGithub recording (`{status, response_headers: [[k, v]],
    /// response_body}`), as GitHub sent it (transfer headers dropped: the body is re-sent plain).
    pub fn pygithub(path: &Path, index: usize) -> Self {
        let text =
            std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let v: Value = serde_json::from_str(&text).expect("recording is JSON");
        let ex = &v[index];
        let mut r = Reply::new(ex["status"].as_u64().expect("status") as u16);
        for pair in ex["response_headers"].as_array().expect("headers") {
            let (k, val) = (pair[0].as_str().unwrap(), pair[1].as_str().unwrap());
            if ![
                "content-encoding",
                "transfer-encoding",
                "content-length",
                "status",
                "connection",
            ]
            .contains(&k.to_ascii_lowercase().as_str())
            {
                r.headers.push((k.to_owned(), val.to_owned()));
            }
        }
        if !ex["response_body"].is_null() {
            r.body = serde_json::to_vec(&ex["response_body"]).unwrap();
        }
        r
    }
}

#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub at: DateTime<Utc>,
}

struct Inner {
    script: HashMap<String, VecDeque<Reply>>,
    received: Vec<Received>,
    unexpected: Vec<String>,
}

#[derive(Clone)]
struct Shared {
    inner: Arc<Mutex<Inner>>,
    clock: Arc<dyn Clock>,
    url: Arc<String>,
}

pub struct ReplayServer {
    shared: Shared,
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl ReplayServer {
    pub async fn start(clock: Arc<dyn Clock>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shared = Shared {
            inner: Arc::new(Mutex::new(Inner {
                script: HashMap::new(),
                received: Vec::new(),
                unexpected: Vec::new(),
            })),
            clock,
            url: Arc::new(url.clone()),
        };
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { shared, url, task }
    }

    /// Queues `reply` for the next request to `path` (the path without its query).
    pub fn push(&self, path: &str, reply: Reply) {
        self.shared
            .inner
            .lock()
            .unwrap()
            .script
            .entry(path.to_owned())
            .or_default()
            .push_back(reply);
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.inner.lock().unwrap().received.clone()
    }

    pub fn received_on(&self, path: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// Requests no reply was scripted for.
    pub fn unexpected(&self) -> Vec<String> {
        self.shared.inner.lock().unwrap().unexpected.clone()
    }

    pub fn pending(&self, path: &str) -> usize {
        self.shared
            .inner
            .lock()
            .unwrap()
            .script
            .get(path)
            .map_or(0, VecDeque::len)
    }
}

impl Drop for ReplayServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(State(s): State<Shared>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let reply = {
        let mut inner = s.inner.lock().unwrap();
        inner.received.push(Received {
            path: path.clone(),
            query: query.clone(),
            headers: req.headers().clone(),
            at: s.clock.now(),
        });
        let next = inner.script.get_mut(&path).and_then(VecDeque::pop_front);
        if next.is_none() {
            inner
                .unexpected
                .push(format!("{path}?{}", query.unwrap_or_default()));
        }
        next
    };
    let reply = reply.unwrap_or_else(|| Reply::new(500).body(r#"{"message":"no scripted reply"}"#));
    if let Some(d) = reply.delay {
        tokio::time::sleep(d).await;
    }
    let mut resp = Response::builder().status(reply.status);
    for (k, v) in &reply.headers {
        // Links point at api.github.com in recordings: point them here.
        resp = resp.header(k, v.replace("https://api.github.com", &s.url));
    }
    resp.body(Body::from(reply.body)).expect("response")
}
