//! The GitHub-like API: `/events`, `/users/{login}`, `/repos/{owner}/{name}` and
//! `/rate_limit`, behind the primary and secondary limits and the armed faults.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};

use super::{lock, ConnInfo, Shared};
use crate::faults::Fault;
use crate::rate::{retry_after_header, ClientKey, RateSnapshot, Verdict};
use crate::stats::{PathKind, Violation, STATUS_CLOSED};
use crate::synth::hex;
use crate::timeline::Event;

const DOCS_REST: &str = "https://docs.github.com/rest";
const DOCS_PAGINATION: &str = "https://docs.github.com/v3/#pagination";
const DOCS_RATE: &str =
    "https://docs.github.com/rest/overview/resources-in-the-rest-api#rate-limiting";
const DOCS_SECONDARY: &str =
    "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits";
/// What a poisoned event starts with: a field whose string is a lone high surrogate.
const LONE_SURROGATE_FIELD: &[u8] = br#"{"sim_note":"\ud83d","#;
const EXPOSE_HEADERS: &str = "ETag, Link, Location, Retry-After, X-GitHub-OTP, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Used, X-RateLimit-Resource, X-RateLimit-Reset, X-OAuth-Scopes, X-Accepted-OAuth-Scopes, X-Poll-Interval, X-GitHub-Media-Type, X-GitHub-SSO, X-GitHub-Request-Id, Deprecation, Sunset";

enum Route {
    Events,
    User(String),
    Repo(String, String),
    RateLimit,
    Other,
}

impl Route {
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

/// An HTTP date (IMF-fixdate); times outside what it can write are clamped to its range.
fn http_date(t: impl Into<SystemTime>) -> String {
    let last = UNIX_EPOCH + Duration::from_secs(253_402_300_799); // 9999-12-31T23:59:59Z
    httpdate::fmt_http_date(t.into().clamp(UNIX_EPOCH, last))
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

fn events_page(sh: &Shared, params: &[(String, String)], headers: &HeaderMap) -> Answer {
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
        (header::LAST_MODIFIED, http_date(last_change)),
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

/// The query of a request as name/value pairs, in order (none when it cannot be read).
type QueryPairs = Result<Query<Vec<(String, String)>>, QueryRejection>;

fn pairs(query: QueryPairs) -> Vec<(String, String)> {
    query.map(|Query(p)| p).unwrap_or_default()
}

/// GitHub's resources answer `GET` and `HEAD`; any other method finds nothing.
fn read_only(req: &Request, route: Route) -> Route {
    if req.method() == Method::GET || req.method() == Method::HEAD {
        route
    } else {
        Route::Other
    }
}

pub(super) async fn events(
    State(sh): State<Arc<Shared>>,
    query: QueryPairs,
    req: Request,
) -> Response {
    let route = read_only(&req, Route::Events);
    respond(sh, req, route, pairs(query)).await
}

pub(super) async fn rate_limit(State(sh): State<Arc<Shared>>, req: Request) -> Response {
    let route = read_only(&req, Route::RateLimit);
    respond(sh, req, route, Vec::new()).await
}

pub(super) async fn user(
    State(sh): State<Arc<Shared>>,
    login: Result<Path<String>, PathRejection>,
    req: Request,
) -> Response {
    let route = match login {
        Ok(Path(login)) => read_only(&req, Route::User(login)),
        // Not UTF-8 once decoded: no such login.
        Err(_) => Route::Other,
    };
    respond(sh, req, route, Vec::new()).await
}

pub(super) async fn repo(
    State(sh): State<Arc<Shared>>,
    names: Result<Path<(String, String)>, PathRejection>,
    req: Request,
) -> Response {
    let route = match names {
        Ok(Path((owner, name))) => read_only(&req, Route::Repo(owner, name)),
        Err(_) => Route::Other,
    };
    respond(sh, req, route, Vec::new()).await
}

/// Any other path: a 404, counted and rate limited like GitHub's.
pub(super) async fn other(State(sh): State<Arc<Shared>>, req: Request) -> Response {
    respond(sh, req, Route::Other, Vec::new()).await
}

/// One API request, whatever its route: limits, faults, the resource, conditional answers,
/// ground truth.
async fn respond(
    sh: Arc<Shared>,
    req: Request,
    route: Route,
    query: Vec<(String, String)>,
) -> Response {
    let arrived = Instant::now();
    let (parts, _body) = req.into_parts();
    let conn = parts.extensions.get::<ConnInfo>().cloned();
    let path = parts.uri.path().to_string();
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
            let first = events_page(&sh, &query, &parts.headers);
            if let Some(id) = first.served.first() {
                tracing::debug!(client = %key, event_id = %id, "fault: lone surrogate");
                lock(&sh.poisoned).insert(Arc::clone(id));
                events_page(&sh, &query, &parts.headers)
            } else {
                first
            }
        }
        Route::Events => events_page(&sh, &query, &parts.headers),
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
    fn etags_compare_weakly() {
        assert!(etag_matches(Some("W/\"abc\""), "\"abc\""));
        assert!(etag_matches(Some("\"x\", \"abc\""), "W/\"abc\""));
        assert!(etag_matches(Some("*"), "\"abc\""));
        assert!(!etag_matches(Some("\"abd\""), "\"abc\""));
        assert!(!etag_matches(None, "\"abc\""));
    }

    #[test]
    fn http_dates_are_imf_fixdates() {
        let t = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(
            http_date(UNIX_EPOCH - Duration::from_secs(5)),
            "Thu, 01 Jan 1970 00:00:00 GMT"
        );
    }
}
