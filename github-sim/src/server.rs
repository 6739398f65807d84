//! HTTP side: the GitHub-like API, the `/_sim` control endpoints, and an accept
//! loop that lets a handler drop its connection without answering.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tower_service::Service;

use crate::config::SimConfig;
use crate::faults::{Fault, FaultBook, FaultRule};
use crate::rate::{retry_after_header, ClientKey, RateLimiter, RateSnapshot, Verdict};
use crate::stats::{PathKind, Stats, StatsBook, Violation, STATUS_CLOSED};
use crate::synth::{hex, Directory};
use crate::timeline::{Event, LoadReport, Timeline};

const DOCS_REST: &str = "https://docs.github.com/rest";
const DOCS_PAGINATION: &str = "https://docs.github.com/v3/#pagination";
const DOCS_RATE: &str =
    "https://docs.github.com/rest/overview/resources-in-the-rest-api#rate-limiting";
const DOCS_SECONDARY: &str =
    "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits";
/// What a poisoned event starts with: a field whose string is a lone high surrogate.
const LONE_SURROGATE_FIELD: &[u8] = br#"{"sim_note":"\ud83d","#;
const EXPOSE_HEADERS: &str = "ETag, Link, Location, Retry-After, X-GitHub-OTP, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Used, X-RateLimit-Resource, X-RateLimit-Reset, X-OAuth-Scopes, X-Accepted-OAuth-Scopes, X-Poll-Interval, X-GitHub-Media-Type, X-GitHub-SSO, X-GitHub-Request-Id, Deprecation, Sunset";

/// Everything the handlers share.
pub(crate) struct Shared {
    pub cfg: SimConfig,
    pub load: LoadReport,
    pub timeline: Mutex<Timeline>,
    pub rate: Mutex<RateLimiter>,
    pub faults: Mutex<FaultBook>,
    pub stats: Mutex<StatsBook>,
    pub dir: RwLock<Directory>,
    /// Events served with a lone surrogate from now on (`Fault::LoneSurrogate`).
    pub poisoned: Mutex<HashSet<Arc<str>>>,
    pub bound: SocketAddr,
    request_seq: AtomicU64,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub fn new(
        cfg: SimConfig,
        load: LoadReport,
        timeline: Timeline,
        dir: Directory,
        bound: SocketAddr,
    ) -> Self {
        let rate = RateLimiter::new(cfg.window, cfg.limit_anonymous, cfg.limit_token);
        let faults = FaultBook::new(cfg.faults.clone(), &cfg.secondary_on_events_requests);
        Shared {
            cfg,
            load,
            timeline: Mutex::new(timeline),
            rate: Mutex::new(rate),
            faults: Mutex::new(faults),
            stats: Mutex::new(StatsBook::default()),
            dir: RwLock::new(dir),
            poisoned: Mutex::new(HashSet::new()),
            bound,
            request_seq: AtomicU64::new(1),
        }
    }

    pub fn stats(&self) -> Stats {
        let mut out = Stats {
            loaded: self.load.loaded,
            skipped_lines: self.load.skipped,
            ..Stats::default()
        };
        {
            let mut t = lock(&self.timeline);
            out.released = t.refresh();
            out.released_ids = t.released_ids();
        }
        lock(&self.stats).fill(&mut out);
        let mut poisoned: Vec<String> =
            lock(&self.poisoned).iter().map(|s| s.to_string()).collect();
        poisoned.sort();
        out.poisoned_ids = poisoned;
        out
    }

    pub fn release(&self, n: usize) -> usize {
        lock(&self.timeline).release(n)
    }

    pub fn mark_gone(&self, users: &[String], repos: &[String]) {
        let mut d = self.dir.write().unwrap_or_else(PoisonError::into_inner);
        for u in users {
            d.mark_user_gone(u);
        }
        for r in repos {
            d.mark_repo_gone(r);
        }
    }
}

// ---------------------------------------------------------------------------
// accept loop

/// Per-connection data handed to handlers through request extensions.
#[derive(Clone)]
struct ConnInfo {
    remote: SocketAddr,
    kill: Arc<Notify>,
}

pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, remote) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                conns.spawn(connection(stream, remote, router.clone()));
            }
        }
    }
    conns.abort_all();
    while conns.join_next().await.is_some() {}
    tracing::info!("github-sim stopped");
}

async fn connection(stream: tokio::net::TcpStream, remote: SocketAddr, router: Router) {
    let kill = Arc::new(Notify::new());
    let info = ConnInfo {
        remote,
        kill: Arc::clone(&kill),
    };
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(info.clone());
        let mut router = router.clone();
        async move { router.call(req).await }
    });
    // No header-read timeout: idle keep-alive connections stay open between
    // polls, so client errors come only from the faults a test asked for.
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .serve_connection(TokioIo::new(stream), svc);
    tokio::select! {
        res = conn => {
            if let Err(e) = res {
                tracing::debug!(%remote, error = %e, "connection ended with error");
            }
        }
        _ = kill.notified() => {
            // Dropping the connection future closes the socket unanswered.
            tracing::debug!(%remote, "connection dropped by fault");
        }
    }
}

// ---------------------------------------------------------------------------
// routes

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/_sim/health", get(ctl_health))
        .route("/_sim/stats", get(ctl_stats).delete(ctl_reset_stats))
        .route("/_sim/stats/reset", post(ctl_reset_stats))
        .route("/_sim/release", post(ctl_release))
        .route(
            "/_sim/faults",
            get(ctl_faults_list)
                .post(ctl_faults_add)
                .delete(ctl_faults_clear),
        )
        .route("/_sim/secondary", post(ctl_secondary))
        .route("/_sim/gone", post(ctl_gone))
        .route("/_sim/limits/reset", post(ctl_reset_limits))
        .fallback(api)
        .with_state(shared)
}

/// Lenient JSON body: empty means defaults; curl's form content type is fine.
fn parse_body<T: for<'de> Deserialize<'de> + Default>(body: &Bytes) -> Result<T, Box<Response>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        Box::new(
            (
                StatusCode::BAD_REQUEST,
                Json(json!({"message": format!("bad control body: {e}")})),
            )
                .into_response(),
        )
    })
}

async fn ctl_health(State(sh): State<Arc<Shared>>) -> Response {
    let released = lock(&sh.timeline).refresh();
    let (users, repos) = {
        let d = sh.dir.read().unwrap_or_else(PoisonError::into_inner);
        (d.users_known(), d.repos_known())
    };
    Json(json!({
        "loaded": sh.load.loaded,
        "skipped_lines": sh.load.skipped,
        "released": released,
        "users": users,
        "repos": repos,
    }))
    .into_response()
}

async fn ctl_stats(State(sh): State<Arc<Shared>>) -> Response {
    Json(sh.stats()).into_response()
}

async fn ctl_reset_stats(State(sh): State<Arc<Shared>>) -> Response {
    lock(&sh.stats).reset();
    Json(json!({"ok": true})).into_response()
}

async fn ctl_reset_limits(State(sh): State<Arc<Shared>>) -> Response {
    lock(&sh.rate).reset();
    Json(json!({"ok": true})).into_response()
}

#[derive(Deserialize)]
#[serde(default)]
struct CountBody {
    count: u32,
}

impl Default for CountBody {
    fn default() -> Self {
        CountBody { count: 1 }
    }
}

async fn ctl_release(State(sh): State<Arc<Shared>>, body: Bytes) -> Response {
    match parse_body::<CountBody>(&body) {
        Ok(b) => {
            let released = sh.release(b.count as usize);
            Json(json!({"released": released})).into_response()
        }
        Err(r) => *r,
    }
}

async fn ctl_faults_list(State(sh): State<Arc<Shared>>) -> Response {
    Json(lock(&sh.faults).pending()).into_response()
}

async fn ctl_faults_add(State(sh): State<Arc<Shared>>, body: Bytes) -> Response {
    match serde_json::from_slice::<FaultRule>(&body) {
        Ok(rule) => {
            tracing::info!(prefix = %rule.path_prefix, count = rule.count, fault = %rule.fault, "fault armed");
            lock(&sh.faults).inject(rule);
            Json(json!({"ok": true})).into_response()
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Json(json!({"message": format!("bad fault rule: {e}")})),
        )
            .into_response(),
    }
}

async fn ctl_faults_clear(State(sh): State<Arc<Shared>>) -> Response {
    lock(&sh.faults).clear();
    Json(json!({"ok": true})).into_response()
}

async fn ctl_secondary(State(sh): State<Arc<Shared>>, body: Bytes) -> Response {
    match parse_body::<CountBody>(&body) {
        Ok(b) => {
            lock(&sh.faults).trigger_secondary(b.count);
            Json(json!({"ok": true})).into_response()
        }
        Err(r) => *r,
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct GoneBody {
    users: Vec<String>,
    repos: Vec<String>,
}

async fn ctl_gone(State(sh): State<Arc<Shared>>, body: Bytes) -> Response {
    match parse_body::<GoneBody>(&body) {
        Ok(b) => {
            sh.mark_gone(&b.users, &b.repos);
            Json(json!({"ok": true})).into_response()
        }
        Err(r) => *r,
    }
}

// ---------------------------------------------------------------------------
// the API

enum Route {
    Events,
    User(String),
    Repo(String, String),
    RateLimit,
    Other,
}

impl Route {
    fn parse(method: &Method, path: &str) -> Route {
        if method != Method::GET && method != Method::HEAD {
            return Route::Other;
        }
        let trimmed = path.trim_end_matches('/');
        let segs: Vec<&str> = trimmed.split('/').skip(1).collect();
        match segs.as_slice() {
            ["events"] => Route::Events,
            ["rate_limit"] => Route::RateLimit,
            ["users", login] if !login.is_empty() => Route::User(percent_decode(login)),
            ["repos", owner, name] if !owner.is_empty() && !name.is_empty() => {
                Route::Repo(percent_decode(owner), percent_decode(name))
            }
            _ => Route::Other,
        }
    }

    fn kind(&self) -> PathKind {
        match self {
            Route::Events => PathKind::Events,
            Route::User(_) => PathKind::Users,
            Route::Repo(..) => PathKind::Repos,
            Route::RateLimit => PathKind::RateLimit,
            Route::Other => PathKind::Other,
        }
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let h = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(v) = h {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A response being built: status, body and the resource-specific headers.
struct Answer {
    status: StatusCode,
    body: Bytes,
    headers: Vec<(HeaderName, String)>,
    etag: Option<String>,
    /// Ids of the events in the body (for ground truth).
    served: Vec<Arc<str>>,
    /// None of GitHub's headers (a proxy's answer): no `X-RateLimit-*`, no `Retry-After`.
    bare: bool,
}

impl Answer {
    /// A flat JSON object of string fields, in GitHub's field order.
    fn fields(status: StatusCode, fields: &[(&str, &str)]) -> Self {
        let mut obj = String::from("{");
        for (i, (k, v)) in fields.iter().enumerate() {
            if i > 0 {
                obj.push(',');
            }
            obj.push_str(&serde_json::Value::from(*k).to_string());
            obj.push(':');
            obj.push_str(&serde_json::Value::from(*v).to_string());
        }
        obj.push('}');
        Self::bytes(status, Bytes::from(obj))
    }

    fn bytes(status: StatusCode, body: Bytes) -> Self {
        Answer {
            status,
            body,
            headers: Vec::new(),
            etag: None,
            served: Vec::new(),
            bare: false,
        }
    }

    fn not_found() -> Self {
        Self::fields(
            StatusCode::NOT_FOUND,
            &[
                ("message", "Not Found"),
                ("documentation_url", DOCS_REST),
                ("status", "404"),
            ],
        )
    }
}

fn http_date(t: DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

fn etag_matches(if_none_match: Option<&str>, etag: &str) -> bool {
    let Some(inm) = if_none_match else {
        return false;
    };
    let bare = |t: &str| t.trim().trim_start_matches("W/").to_string();
    let want = bare(etag);
    inm.split(',').any(|t| {
        let t = t.trim();
        t == "*" || bare(t) == want
    })
}

fn query_params(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

fn cache_control(key: &ClientKey) -> &'static str {
    if key.is_anonymous() {
        "public, max-age=60, s-maxage=60"
    } else {
        "private, max-age=60, s-maxage=60"
    }
}

fn vary(key: &ClientKey) -> &'static str {
    if key.is_anonymous() {
        "Accept, Accept-Encoding, Accept, X-Requested-With"
    } else {
        "Accept, Authorization, Cookie, X-GitHub-OTP, Accept-Encoding, Accept, X-Requested-With"
    }
}

fn base_url(sh: &Shared, headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b".-:[]_".contains(&c))
        })
        .map(str::to_string)
        .unwrap_or_else(|| sh.bound.to_string());
    format!("http://{host}")
}

fn events_page(sh: &Shared, query: Option<&str>, headers: &HeaderMap) -> Answer {
    let params = query_params(query);
    let get = |name: &str| {
        params
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let per_page_given = get("per_page").is_some();
    let per_page = get("per_page")
        .and_then(|v| v.trim().parse::<i64>().ok())
        .map_or(30, |v| v.clamp(1, 100)) as usize;
    let page = get("page")
        .and_then(|v| v.trim().parse::<i64>().ok())
        .map_or(1, |v| v.max(1));
    let page = usize::try_from(page).unwrap_or(usize::MAX);
    let cap = sh.cfg.events_cap;
    let start = (page - 1).saturating_mul(per_page);
    if start >= cap {
        return Answer::fields(
            StatusCode::UNPROCESSABLE_ENTITY,
            &[
                (
                    "message",
                    "In order to keep the API fast for everyone, pagination is limited for this resource.",
                ),
                ("documentation_url", DOCS_PAGINATION),
                ("status", "422"),
            ],
        );
    }
    let (events, visible, last_change): (Vec<Event>, usize, SystemTime) = {
        let mut t = lock(&sh.timeline);
        t.refresh();
        let visible = t.released().min(cap);
        let evs = t
            .newest(visible)
            .skip(start)
            .take(per_page)
            .cloned()
            .collect();
        (evs, visible, t.last_change())
    };

    let poisoned = lock(&sh.poisoned);
    let len = events.iter().map(|e| e.raw.len() + 1).sum::<usize>() + 2 + 32 * poisoned.len();
    let mut body = BytesMut::with_capacity(len);
    body.extend_from_slice(b"[");
    let mut hasher = Sha256::new();
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            body.extend_from_slice(b",");
            hasher.update(b",");
        }
        if poisoned.contains(&e.id) && e.raw.first() == Some(&b'{') {
            body.extend_from_slice(LONE_SURROGATE_FIELD);
            body.extend_from_slice(&e.raw[1..]);
        } else {
            body.extend_from_slice(&e.raw);
        }
        hasher.update(e.id.as_bytes());
    }
    drop(poisoned);
    body.extend_from_slice(b"]");
    let etag = format!("W/\"{}\"", &hex(&hasher.finalize())[..32]);

    let last_page = visible.div_ceil(per_page).max(1);
    let base = base_url(sh, headers);
    let link = |p: usize, rel: &str| {
        if per_page_given {
            format!("<{base}/events?per_page={per_page}&page={p}>; rel=\"{rel}\"")
        } else {
            format!("<{base}/events?page={p}>; rel=\"{rel}\"")
        }
    };
    let mut links = Vec::new();
    if page > 1 {
        links.push(link(page - 1, "prev"));
    }
    if page < last_page {
        links.push(link(page + 1, "next"));
        links.push(link(last_page, "last"));
    }
    if page > 1 {
        links.push(link(1, "first"));
    }

    let mut headers_out = vec![
        (
            header::LAST_MODIFIED,
            http_date(DateTime::<Utc>::from(last_change)),
        ),
        (
            HeaderName::from_static("x-poll-interval"),
            sh.cfg.poll_interval_secs.to_string(),
        ),
    ];
    if !links.is_empty() {
        headers_out.push((header::LINK, links.join(", ")));
    }
    Answer {
        status: StatusCode::OK,
        body: body.freeze(),
        headers: headers_out,
        etag: Some(etag),
        served: events.iter().map(|e| Arc::clone(&e.id)).collect(),
        bare: false,
    }
}

fn resource_answer(res: Option<crate::synth::Resource>) -> Answer {
    match res {
        Some(r) => Answer {
            status: StatusCode::OK,
            body: r.body,
            headers: vec![(header::LAST_MODIFIED, http_date(r.last_modified))],
            etag: Some(r.etag),
            served: Vec::new(),
            bare: false,
        },
        None => Answer::not_found(),
    }
}

fn fault_answer(status: StatusCode) -> Answer {
    let code = status.as_u16();
    let message = match code {
        500 | 502 => "Server Error".to_string(),
        503 => "Service Unavailable".to_string(),
        401 => "Bad credentials".to_string(),
        504 => "We couldn't respond to your request in time. Sorry about that. Please try resubmitting your request and contact us if the problem persists.".to_string(),
        other => StatusCode::from_u16(other)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error")
            .to_string(),
    };
    Answer::fields(status, &[("message", &message)])
}

fn status_or(code: u16, fallback: StatusCode) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(fallback)
}

struct Ctx<'a> {
    sh: &'a Shared,
    key: &'a ClientKey,
    request_id: String,
}

impl Ctx<'_> {
    /// Turn an answer into a response with GitHub's common headers.
    fn finish(
        &self,
        answer: Answer,
        rate: RateSnapshot,
        extra: &[(HeaderName, String)],
    ) -> Response {
        let mut resp = Response::new(Body::from(answer.body));
        *resp.status_mut() = answer.status;
        let h = resp.headers_mut();
        let mut put = |name: HeaderName, value: &str| {
            if let Ok(v) = HeaderValue::from_str(value) {
                h.insert(name, v);
            }
        };
        if answer.status != StatusCode::NOT_MODIFIED {
            put(header::CONTENT_TYPE, "application/json; charset=utf-8");
        }
        if answer.status.is_success() || answer.status == StatusCode::NOT_MODIFIED {
            put(header::CACHE_CONTROL, cache_control(self.key));
        }
        put(header::VARY, vary(self.key));
        if let Some(etag) = &answer.etag {
            put(header::ETAG, etag);
        }
        for (name, value) in answer.headers.iter().chain(extra) {
            put(name.clone(), value);
        }
        if answer.bare {
            return resp;
        }
        put(
            HeaderName::from_static("x-github-media-type"),
            "github.v3; format=json",
        );
        put(
            HeaderName::from_static("x-github-api-version-selected"),
            "2022-11-28",
        );
        put(
            HeaderName::from_static("x-ratelimit-limit"),
            &rate.limit.to_string(),
        );
        put(
            HeaderName::from_static("x-ratelimit-remaining"),
            &rate.remaining.to_string(),
        );
        put(
            HeaderName::from_static("x-ratelimit-reset"),
            &rate.reset.to_string(),
        );
        put(
            HeaderName::from_static("x-ratelimit-used"),
            &rate.used.to_string(),
        );
        put(HeaderName::from_static("x-ratelimit-resource"), "core");
        put(header::ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSE_HEADERS);
        put(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*");
        put(
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=31536000; includeSubdomains; preload",
        );
        put(header::X_FRAME_OPTIONS, "deny");
        put(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
        put(header::X_XSS_PROTECTION, "0");
        put(
            header::REFERRER_POLICY,
            "origin-when-cross-origin, strict-origin-when-cross-origin",
        );
        put(header::CONTENT_SECURITY_POLICY, "default-src 'none'");
        put(header::SERVER, "github.com");
        put(
            HeaderName::from_static("x-github-request-id"),
            &self.request_id,
        );
        resp
    }

    fn rate(&self) -> RateSnapshot {
        lock(&self.sh.rate).snapshot(self.key)
    }

    fn record(&self, kind: PathKind, status: u16) {
        lock(&self.sh.stats).answered(self.key, kind, status);
    }
}

async fn api(State(sh): State<Arc<Shared>>, req: Request) -> Response {
    let arrived = Instant::now();
    let (parts, _body) = req.into_parts();
    let conn = parts.extensions.get::<ConnInfo>().cloned();
    let path = parts.uri.path().to_string();
    let route = Route::parse(&parts.method, &path);
    let kind = route.kind();
    let key = ClientKey::from_authorization(
        parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    );
    let seq = sh.request_seq.fetch_add(1, Ordering::Relaxed);
    let ctx = Ctx {
        sh: &sh,
        key: &key,
        request_id: format!("51D0:{:04X}:{seq:06X}", std::process::id() & 0xffff),
    };
    let remote_ip = conn
        .as_ref()
        .map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |c| c.remote.ip());

    if let Route::RateLimit = route {
        // GET /rate_limit is free, as on GitHub.
        let r = ctx.rate();
        let core = format!(
            r#"{{"limit":{},"remaining":{},"reset":{},"used":{},"resource":"core"}}"#,
            r.limit, r.remaining, r.reset, r.used
        );
        let body = format!(r#"{{"resources":{{"core":{core}}},"rate":{core}}}"#);
        let answer = Answer::bytes(StatusCode::OK, Bytes::from(body));
        lock(&sh.stats).arrival(&key, kind, arrived);
        ctx.record(kind, 200);
        return ctx.finish(answer, r, &[]);
    }

    lock(&sh.stats).arrival(&key, kind, arrived);

    // Primary and secondary limits.
    let verdict = {
        let mut rate = lock(&sh.rate);
        let mut faults = lock(&sh.faults);
        let numbered = kind == PathKind::Events && faults.events_arrival();
        let retry = sh.cfg.secondary_retry_after;
        rate.admit(&key, || {
            (numbered || faults.take_secondary()).then_some(retry)
        })
    };
    match verdict {
        Verdict::Allowed => {}
        Verdict::Exhausted => {
            lock(&sh.stats).violation(&key, Violation::Exhausted);
            let message = if key.is_anonymous() {
                format!("API rate limit exceeded for {remote_ip}. (But here's the good news: Authenticated requests get a higher rate limit. Check out the documentation for more details.)")
            } else {
                let user_id = u64::from_str_radix(key.as_str().trim_start_matches("token:"), 16)
                    .unwrap_or(0)
                    % 100_000_000;
                format!("API rate limit exceeded for user ID {user_id}.")
            };
            let status = status_or(sh.cfg.exhausted_status, StatusCode::FORBIDDEN);
            let answer = Answer::fields(
                status,
                &[("message", &message), ("documentation_url", DOCS_RATE)],
            );
            ctx.record(kind, status.as_u16());
            tracing::debug!(client = %key, path = %path, status = status.as_u16(), "rate limit exhausted");
            return ctx.finish(answer, ctx.rate(), &[]);
        }
        Verdict::Secondary {
            retry_after,
            tripped,
        } => {
            if !tripped {
                lock(&sh.stats).violation(&key, Violation::RetryAfter);
            }
            let status = status_or(sh.cfg.secondary_status, StatusCode::TOO_MANY_REQUESTS);
            let answer = Answer::fields(
                status,
                &[
                    (
                        "message",
                        "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
                    ),
                    ("documentation_url", DOCS_SECONDARY),
                ],
            );
            ctx.record(kind, status.as_u16());
            tracing::debug!(client = %key, path = %path, tripped, "secondary rate limit");
            let extra = [(
                header::RETRY_AFTER,
                retry_after_header(retry_after).to_string(),
            )];
            return ctx.finish(answer, ctx.rate(), &extra);
        }
    }

    // Faults.
    let fault = lock(&sh.faults).take(&path);
    let mut truncate = false;
    let mut extra: Vec<(HeaderName, String)> = Vec::new();
    let mut poison = false;
    match fault {
        None => {}
        Some(Fault::Bare { code }) => {
            let status = status_or(code, StatusCode::BAD_GATEWAY);
            ctx.record(kind, status.as_u16());
            tracing::debug!(client = %key, path = %path, status = code, "fault: bare status");
            let mut answer = fault_answer(status);
            answer.bare = true;
            return ctx.finish(answer, ctx.rate(), &[]);
        }
        Some(Fault::RetryAfter { code, secs }) => {
            let status = status_or(code, StatusCode::TOO_MANY_REQUESTS);
            ctx.record(kind, status.as_u16());
            tracing::debug!(client = %key, path = %path, status = code, secs, "fault: retry-after");
            let answer = Answer::fields(
                status,
                &[
                    (
                        "message",
                        "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
                    ),
                    ("documentation_url", DOCS_SECONDARY),
                ],
            );
            return ctx.finish(
                answer,
                ctx.rate(),
                &[(header::RETRY_AFTER, secs.to_string())],
            );
        }
        Some(Fault::PollInterval { secs }) => {
            extra.push((HeaderName::from_static("x-poll-interval"), secs.to_string()));
        }
        Some(Fault::LoneSurrogate) => poison = true,
        Some(Fault::Status { code }) => {
            let status = status_or(code, StatusCode::INTERNAL_SERVER_ERROR);
            ctx.record(kind, status.as_u16());
            tracing::debug!(client = %key, path = %path, status = code, "fault: status");
            return ctx.finish(fault_answer(status), ctx.rate(), &[]);
        }
        Some(Fault::Close) => {
            ctx.record(kind, STATUS_CLOSED);
            tracing::debug!(client = %key, path = %path, "fault: close");
            if let Some(c) = conn {
                c.kill.notify_one();
                return std::future::pending::<Response>().await;
            }
            // Not served by our accept loop: the nearest thing is a gateway error.
            return ctx.finish(fault_answer(StatusCode::BAD_GATEWAY), ctx.rate(), &[]);
        }
        Some(Fault::Slow { ms }) => {
            tracing::debug!(client = %key, path = %path, ms, "fault: slow");
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        Some(Fault::Truncated) => truncate = true,
    }

    let mut answer = match &route {
        Route::Events if poison => {
            let first = events_page(&sh, parts.uri.query(), &parts.headers);
            if let Some(id) = first.served.first() {
                tracing::debug!(client = %key, event_id = %id, "fault: lone surrogate");
                lock(&sh.poisoned).insert(Arc::clone(id));
                events_page(&sh, parts.uri.query(), &parts.headers)
            } else {
                first
            }
        }
        Route::Events => events_page(&sh, parts.uri.query(), &parts.headers),
        Route::User(login) => {
            lock(&sh.stats).user_requested(login);
            let res = sh
                .dir
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .user(login);
            resource_answer(res)
        }
        Route::Repo(owner, name) => {
            lock(&sh.stats).repo_requested(&format!("{owner}/{name}"));
            let res = sh
                .dir
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .repo(owner, name);
            resource_answer(res)
        }
        Route::RateLimit | Route::Other => Answer::not_found(),
    };

    // Conditional requests.
    if answer.status == StatusCode::OK {
        let inm = parts
            .headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok());
        if let Some(etag) = &answer.etag {
            if etag_matches(inm, etag) {
                answer.status = StatusCode::NOT_MODIFIED;
                answer.body = Bytes::new();
                answer.served.clear();
                if !sh.cfg.conditional_costs {
                    lock(&sh.rate).refund(&key);
                }
            }
        }
    }
    if truncate && !answer.body.is_empty() {
        answer.body = answer.body.slice(..answer.body.len() / 2);
        answer.served.clear();
    }
    if parts.method == Method::HEAD {
        answer.served.clear();
    }
    {
        let mut stats = lock(&sh.stats);
        stats.answered(&key, kind, answer.status.as_u16());
        if answer.status == StatusCode::OK && !answer.served.is_empty() {
            stats.served(answer.served.iter());
        }
    }
    tracing::debug!(client = %key, path = %path, status = answer.status.as_u16(), truncated = truncate, "answered");
    ctx.finish(answer, ctx.rate(), &extra)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_bot_logins() {
        assert_eq!(percent_decode("shipit%5Bbot%5D"), "shipit[bot]");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[test]
    fn etags_compare_weakly() {
        assert!(etag_matches(Some("W/\"abc\""), "\"abc\""));
        assert!(etag_matches(Some("\"x\", \"abc\""), "W/\"abc\""));
        assert!(etag_matches(Some("*"), "\"abc\""));
        assert!(!etag_matches(Some("\"abd\""), "\"abc\""));
        assert!(!etag_matches(None, "\"abc\""));
    }

    #[test]
    fn routes() {
        assert!(matches!(
            Route::parse(&Method::GET, "/events"),
            Route::Events
        ));
        assert!(matches!(Route::parse(&Method::GET, "/users/a"), Route::User(l) if l == "a"));
        assert!(
            matches!(Route::parse(&Method::GET, "/repos/a/b"), Route::Repo(o, n) if o == "a" && n == "b")
        );
        assert!(matches!(
            Route::parse(&Method::GET, "/repos/a"),
            Route::Other
        ));
        assert!(matches!(
            Route::parse(&Method::POST, "/events"),
            Route::Other
        ));
    }
}
