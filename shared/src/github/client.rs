use super::headers::{self, RateInfo};
use crate::budget::{Budget, BudgetError, Denied, Observation, Purpose};
use crate::clock::Clock;
use crate::deadline::Deadline;
use backon::{ExponentialBuilder, Retryable};
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, warn};

/// Backoff for transient failures (5xx, timeouts, connection errors).
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_retries: usize,
    pub min_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 3,
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
        }
    }
}

#[derive(Clone)]
pub struct GithubConfig {
    pub base_url: String,
    pub token: Option<SecretString>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub max_body_bytes: usize,
    pub retry: RetryPolicy,
    /// Kept back from a deadline: no attempt nor backoff runs into it, so the caller has
    /// this long to release what it claimed and record where it stopped.
    pub deadline_reserve: Duration,
}

impl Default for GithubConfig {
    fn default() -> Self {
        Self {
            base_url: "https://api.github.com".into(),
            token: None,
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(20),
            max_body_bytes: 32 * 1024 * 1024,
            retry: RetryPolicy::default(),
            deadline_reserve: Duration::from_secs(10),
        }
    }
}

impl std::fmt::Debug for GithubConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubConfig")
            .field("base_url", &self.base_url)
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .field("connect_timeout", &self.connect_timeout)
            .field("read_timeout", &self.read_timeout)
            .finish_non_exhaustive()
    }
}

/// A successful exchange.
#[derive(Debug, Clone)]
pub enum Fetched {
    Ok {
        body: Bytes,
        etag: Option<String>,
        next: Option<String>,
        poll_interval: Option<Duration>,
        rate: Option<RateInfo>,
    },
    /// 304: what we hold is current.
    NotModified {
        poll_interval: Option<Duration>,
        rate: Option<RateInfo>,
    },
    /// 404 or 410: the user or repository is gone.
    Gone { status: u16 },
}

#[derive(Debug, thiserror::Error)]
pub enum GithubError {
    #[error("no request sent: the rate budget is spent until {}", .0.until())]
    BudgetDenied(Denied),
    #[error("primary rate limit reached (HTTP {status}); requests resume at {reset}")]
    PrimaryRateLimit { status: u16, reset: DateTime<Utc> },
    #[error("secondary rate limit (HTTP {status}); nothing is sent before {until}: {message}")]
    SecondaryRateLimit {
        status: u16,
        until: DateTime<Utc>,
        message: String,
    },
    #[error("GitHub answered HTTP {status} for {path} ({attempts} attempts): {message}")]
    Server {
        status: u16,
        path: String,
        attempts: usize,
        message: String,
    },
    #[error("request for {path} failed ({attempts} attempts): {source}")]
    Transport {
        path: String,
        attempts: usize,
        #[source]
        source: reqwest::Error,
    },
    #[error("GitHub answered HTTP {status} for {path}: {message}")]
    Client {
        status: u16,
        path: String,
        message: String,
    },
    #[error("response body for {path} is larger than {limit} bytes")]
    BodyTooLarge { path: String, limit: usize },
    #[error("refusing to follow {url}: not under {base}")]
    ForeignUrl { url: String, base: String },
    /// A login or repository name outside GitHub's character set: never requested.
    #[error("refusing to request {kind} {name:?}: not a valid GitHub name")]
    InvalidName { kind: &'static str, name: String },
    #[error(transparent)]
    Budget(#[from] BudgetError),
    #[error("not enough time left before the deadline to request {path}")]
    DeadlineReached { path: String },
}

impl GithubError {
    /// Whether trying again later can succeed.
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            GithubError::Client { .. }
                | GithubError::ForeignUrl { .. }
                | GithubError::BodyTooLarge { .. }
                | GithubError::InvalidName { .. }
        )
    }

    /// The moment before which no request should be sent, for rate-limit cases.
    pub fn wait_until(&self) -> Option<DateTime<Utc>> {
        match self {
            GithubError::BudgetDenied(d) => Some(d.until()),
            GithubError::PrimaryRateLimit { reset, .. } => Some(*reset),
            GithubError::SecondaryRateLimit { until, .. } => Some(*until),
            _ => None,
        }
    }

    /// A stable code for log fields and summaries.
    pub fn code(&self) -> &'static str {
        match self {
            GithubError::BudgetDenied(_) => "budget_denied",
            GithubError::PrimaryRateLimit { .. } => "primary_rate_limit",
            GithubError::SecondaryRateLimit { .. } => "secondary_rate_limit",
            GithubError::Server { .. } => "github_5xx",
            GithubError::Transport { .. } => "transport",
            GithubError::Client { .. } => "github_4xx",
            GithubError::BodyTooLarge { .. } => "body_too_large",
            GithubError::ForeignUrl { .. } => "foreign_url",
            GithubError::InvalidName { .. } => "invalid_name",
            GithubError::Budget(_) => "budget_store",
            GithubError::DeadlineReached { .. } => "deadline_reached",
        }
    }

    /// Whether no connection could be made at all (no network, DNS, a refused or timed-out
    /// connect): GitHub never saw the request.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, GithubError::Transport { source, .. } if source.is_connect())
    }

    fn is_transient(&self) -> bool {
        matches!(
            self,
            GithubError::Server { .. } | GithubError::Transport { .. }
        )
    }
}

pub struct GithubClient {
    http: reqwest::Client,
    base: String,
    auth: Option<HeaderValue>,
    budget: Arc<dyn Budget>,
    clock: Arc<dyn Clock>,
    retry: RetryPolicy,
    max_body: usize,
    sent: AtomicU64,
    attempt_timeout: Duration,
    deadline_reserve: Duration,
}

/// No attempt is started with less time than this for it.
const MIN_ATTEMPT: Duration = Duration::from_secs(1);

impl GithubClient {
    pub fn new(
        cfg: GithubConfig,
        budget: Arc<dyn Budget>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, reqwest::Error> {
        let mut default_headers = HeaderMap::new();
        default_headers.insert(
            http::header::ACCEPT,
            HeaderValue::from_static("application/vnd.github+json"),
        );
        default_headers.insert(
            "x-github-api-version",
            HeaderValue::from_static("2022-11-28"),
        );
        let http = reqwest::Client::builder()
            .user_agent(concat!("ghevents/", env!("CARGO_PKG_VERSION")))
            .default_headers(default_headers)
            .connect_timeout(cfg.connect_timeout)
            .read_timeout(cfg.read_timeout)
            .timeout(cfg.read_timeout * 2)
            .build()?;
        let auth = cfg.token.as_ref().and_then(|t| {
            let mut v = HeaderValue::from_str(&format!("Bearer {}", t.expose_secret())).ok()?;
            v.set_sensitive(true);
            Some(v)
        });
        Ok(Self {
            http,
            base: cfg.base_url.trim_end_matches('/').to_owned(),
            auth,
            budget,
            clock,
            retry: cfg.retry,
            max_body: cfg.max_body_bytes,
            sent: AtomicU64::new(0),
            attempt_timeout: cfg.read_timeout * 2,
            deadline_reserve: cfg.deadline_reserve,
        })
    }

    /// The longest one attempt may take (connection, headers and body).
    pub fn attempt_timeout(&self) -> Duration {
        self.attempt_timeout
    }

    /// What a deadline keeps back for the caller (see [`GithubConfig::deadline_reserve`]).
    pub fn deadline_reserve(&self) -> Duration {
        self.deadline_reserve
    }

    /// Requests sent so far by this client (retries included).
    pub fn requests_sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// GETs `target` (a path such as `/events?per_page=100`, or an absolute URL under the base
    /// URL taken from a `Link` header), conditionally when `etag` is given.
    pub async fn get(
        &self,
        target: &str,
        etag: Option<&str>,
        purpose: Purpose,
    ) -> Result<Fetched, GithubError> {
        self.get_before(target, etag, purpose, Deadline::NONE).await
    }

    /// [`GithubClient::get`], finished before `deadline` less the reserve: each attempt's
    /// timeout is capped to what is left, a retry only waits when an attempt still fits after
    /// its backoff, and [`GithubError::DeadlineReached`] says the time ran out (the budget
    /// unit of a cut attempt is settled like any request that got no headers).
    pub async fn get_before(
        &self,
        target: &str,
        etag: Option<&str>,
        purpose: Purpose,
        deadline: Deadline,
    ) -> Result<Fetched, GithubError> {
        let url = if target.starts_with("http://") || target.starts_with("https://") {
            if !target.starts_with(&format!("{}/", self.base)) {
                return Err(GithubError::ForeignUrl {
                    url: target.to_owned(),
                    base: self.base.clone(),
                });
            }
            target.to_owned()
        } else {
            format!("{}{}", self.base, target)
        };
        let attempts = AtomicUsize::new(0);
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.retry.min_delay)
            .with_max_delay(self.retry.max_delay)
            .with_max_times(self.retry.max_retries)
            .with_jitter();
        let out_of_time = AtomicBool::new(false);
        let result = (|| async {
            let n = attempts.fetch_add(1, Ordering::SeqCst) + 1;
            self.attempt(&url, etag, purpose, n, deadline).await
        })
        .retry(backoff)
        .when(GithubError::is_transient)
        .adjust(|_, wait| {
            let wait = wait?;
            if deadline.allows(wait + MIN_ATTEMPT + self.deadline_reserve) {
                Some(wait)
            } else {
                out_of_time.store(true, Ordering::SeqCst);
                None
            }
        })
        .notify(|e, wait| {
            // No connection at all is said once by whoever runs the cycles, not per attempt.
            if e.is_unreachable() {
                debug!(error_code = e.code(), error = %e, retry_in_ms = wait.as_millis() as u64, "GitHub unreachable; retrying");
            } else {
                warn!(error_code = e.code(), error = %e, retry_in_ms = wait.as_millis() as u64, "GitHub request failed; retrying");
            }
        })
        .await;
        match result {
            Err(e) if e.is_transient() && out_of_time.load(Ordering::SeqCst) => {
                warn!(error_code = e.code(), error = %e, "GitHub request failed; no time left to retry before the deadline");
                Err(GithubError::DeadlineReached {
                    path: path_of(&url),
                })
            }
            other => other,
        }
    }

    async fn attempt(
        &self,
        url: &str,
        etag: Option<&str>,
        purpose: Purpose,
        attempt: usize,
        deadline: Deadline,
    ) -> Result<Fetched, GithubError> {
        let path = path_of(url);
        let timeout = deadline.cap(self.attempt_timeout, self.deadline_reserve);
        if timeout < MIN_ATTEMPT {
            return Err(GithubError::DeadlineReached { path });
        }
        // Cut by the deadline rather than by the configured timeout.
        let cut = |e: &reqwest::Error| e.is_timeout() && timeout < self.attempt_timeout;
        if let Err(denied) = self.budget.acquire(purpose, self.clock.now()).await? {
            return Err(GithubError::BudgetDenied(denied));
        }
        let mut req = self.http.get(url).timeout(timeout);
        if let Some(auth) = &self.auth {
            req = req.header(http::header::AUTHORIZATION, auth.clone());
        }
        if let Some(tag) = etag {
            req = req.header(http::header::IF_NONE_MATCH, tag);
        }
        self.sent.fetch_add(1, Ordering::Relaxed);
        debug!(path = %path, conditional = etag.is_some(), ?purpose, attempt, "GitHub request");
        let resp = match req.send().await {
            Ok(r) => r,
            Err(source) => {
                // A request that never reached GitHub was not counted there: its unit comes
                // back. One that may have been sent (a timeout after connecting) stays spent.
                let obs = if source.is_connect() || source.is_builder() {
                    Observation::NotSent
                } else {
                    Observation::NoHeaders
                };
                self.budget.observe(obs, self.clock.now()).await?;
                if cut(&source) {
                    return Err(GithubError::DeadlineReached { path });
                }
                return Err(GithubError::Transport {
                    path,
                    attempts: attempt,
                    source,
                });
            }
        };
        let status = resp.status();
        let h = resp.headers().clone();
        let now = self.clock.now();
        let rate = RateInfo::from_headers(&h, now);
        let body = match read_capped(resp, self.max_body).await {
            Ok(b) => b,
            Err(ReadError::TooLarge) => {
                self.observe_ordinary(rate.clone(), now).await?;
                return Err(GithubError::BodyTooLarge {
                    path,
                    limit: self.max_body,
                });
            }
            Err(ReadError::Http(source)) => {
                self.observe_ordinary(rate.clone(), now).await?;
                if cut(&source) {
                    return Err(GithubError::DeadlineReached { path });
                }
                return Err(GithubError::Transport {
                    path,
                    attempts: attempt,
                    source,
                });
            }
        };
        if status == StatusCode::FORBIDDEN || status == StatusCode::TOO_MANY_REQUESTS {
            let message = message_of(&body);
            let wait = headers::retry_after(&h, now);
            if wait.is_none() && headers::remaining_is_zero(&h) {
                // Older answers carry no reset: GitHub's window is an hour.
                let r = rate
                    .clone()
                    .unwrap_or_else(|| RateInfo::exhausted_without_reset(&h, now));
                let reset = r.reset;
                self.budget
                    .observe(Observation::PrimaryExhausted(r), now)
                    .await?;
                warn!(status = status.as_u16(), resume_at = %reset, error_code = "primary_rate_limit", "GitHub rate limit reached");
                return Err(GithubError::PrimaryRateLimit {
                    status: status.as_u16(),
                    reset,
                });
            }
            if wait.is_some()
                || message
                    .to_ascii_lowercase()
                    .contains("secondary rate limit")
            {
                let blocked = self
                    .budget
                    .observe(
                        Observation::Secondary {
                            rate: rate.clone(),
                            wait,
                        },
                        now,
                    )
                    .await?;
                let until = blocked.unwrap_or_else(|| now + chrono::Duration::seconds(60));
                warn!(status = status.as_u16(), resume_at = %until, error_code = "secondary_rate_limit", "GitHub secondary rate limit");
                return Err(GithubError::SecondaryRateLimit {
                    status: status.as_u16(),
                    until,
                    message,
                });
            }
        }
        self.observe_ordinary(rate.clone(), now).await?;
        let poll_interval = headers::poll_interval(&h);
        match status.as_u16() {
            200..=299 => Ok(Fetched::Ok {
                body,
                etag: headers::etag(&h),
                next: headers::link_next(&h),
                poll_interval,
                rate,
            }),
            304 => Ok(Fetched::NotModified {
                poll_interval,
                rate,
            }),
            404 | 410 => Ok(Fetched::Gone {
                status: status.as_u16(),
            }),
            s @ 500..=599 => Err(GithubError::Server {
                status: s,
                path,
                attempts: attempt,
                message: message_of(&body),
            }),
            s => Err(GithubError::Client {
                status: s,
                path,
                message: message_of(&body),
            }),
        }
    }

    async fn observe_ordinary(
        &self,
        rate: Option<RateInfo>,
        now: DateTime<Utc>,
    ) -> Result<(), GithubError> {
        let obs = match rate {
            Some(r) => Observation::Headers(r),
            None => Observation::NoHeaders,
        };
        self.budget.observe(obs, now).await?;
        Ok(())
    }
}

enum ReadError {
    TooLarge,
    Http(reqwest::Error),
}

async fn read_capped(resp: reqwest::Response, cap: usize) -> Result<Bytes, ReadError> {
    if resp.content_length().is_some_and(|n| n as usize > cap) {
        return Err(ReadError::TooLarge);
    }
    let mut buf = BytesMut::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(ReadError::Http)?;
        if buf.len() + chunk.len() > cap {
            return Err(ReadError::TooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// GitHub's `message` field, or the start of the body.
fn message_of(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Msg {
        message: String,
    }
    match serde_json::from_slice::<Msg>(body) {
        Ok(m) => m.message,
        Err(_) => String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
    }
}

fn path_of(url: &str) -> String {
    match url
        .find("://")
        .and_then(|i| url[i + 3..].find('/').map(|j| i + 3 + j))
    {
        Some(start) => url[start..].to_owned(),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::MemoryBudget;
    use crate::clock::SystemClock;

    fn fast_retry() -> RetryPolicy {
        RetryPolicy {
            max_retries: 3,
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
        }
    }

    #[tokio::test]
    async fn a_refused_connection_costs_no_budget_unit() {
        // A port nobody listens on: every connection is refused.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let budget = Arc::new(MemoryBudget::new(2, 0, Utc::now()));
        let cfg = GithubConfig {
            base_url: format!("http://127.0.0.1:{port}"),
            retry: fast_retry(),
            ..GithubConfig::default()
        };
        let client = GithubClient::new(cfg, budget.clone(), Arc::new(SystemClock)).unwrap();
        for _ in 0..3 {
            let e = client
                .get("/events", None, Purpose::Ingest)
                .await
                .unwrap_err();
            assert!(
                matches!(e, GithubError::Transport { attempts: 4, .. }),
                "{e}"
            );
        }
        let s = budget.snapshot();
        assert_eq!((s.remaining, s.used, s.in_flight), (2, 0, 0));
    }
}
