//! Primary (per-window budget) and secondary (Retry-After) rate limits per client.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

/// Who a request is charged to: the token of its `Authorization` header, or
/// nobody. Tokens are never stored or logged in clear: the key holds a short
/// hash of the token (see [`ClientKey::for_token`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientKey(String);

impl ClientKey {
    pub fn anonymous() -> Self {
        ClientKey("anonymous".to_string())
    }

    /// The key a request with `Authorization: Bearer <token>` (or `token <token>`) gets.
    pub fn for_token(token: &str) -> Self {
        let digest = Sha256::digest(token.as_bytes());
        let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
        ClientKey(format!("token:{hex}"))
    }

    /// From the value of an `Authorization` header, if any.
    pub fn from_authorization(value: Option<&str>) -> Self {
        let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
            return Self::anonymous();
        };
        let is_scheme =
            |s: &str| s.eq_ignore_ascii_case("bearer") || s.eq_ignore_ascii_case("token");
        let token = match value.split_once(char::is_whitespace) {
            Some((scheme, rest)) if is_scheme(scheme) => rest.trim(),
            None if is_scheme(value) => "",
            _ => value,
        };
        if token.is_empty() {
            Self::anonymous()
        } else {
            Self::for_token(token)
        }
    }

    pub fn is_anonymous(&self) -> bool {
        self.0 == "anonymous"
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The values of the `X-RateLimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RateSnapshot {
    pub limit: u32,
    pub remaining: u32,
    pub used: u32,
    /// Epoch seconds at which the window ends (rounded up).
    pub reset: u64,
}

/// What the limiter decided about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Charged; go on.
    Allowed,
    /// The budget of the window is spent.
    Exhausted,
    /// A secondary limit is in force; wait this long. `tripped`: it started
    /// with this very request (otherwise the request ignored a `Retry-After`).
    Secondary {
        retry_after: Duration,
        tripped: bool,
    },
}

#[derive(Debug)]
struct Window {
    started: Instant,
    ends_epoch: u64,
    used: u32,
}

#[derive(Debug, Default)]
struct ClientState {
    window: Option<Window>,
    blocked_until: Option<Instant>,
}

#[derive(Debug)]
pub struct RateLimiter {
    window: Duration,
    limit_anonymous: u32,
    limit_token: u32,
    clients: HashMap<ClientKey, ClientState>,
}

fn ceil_epoch(t: SystemTime) -> u64 {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl RateLimiter {
    pub fn new(window: Duration, limit_anonymous: u32, limit_token: u32) -> Self {
        RateLimiter {
            window: window.max(Duration::from_millis(1)),
            limit_anonymous,
            limit_token,
            clients: HashMap::new(),
        }
    }

    pub fn limit_for(&self, key: &ClientKey) -> u32 {
        if key.is_anonymous() {
            self.limit_anonymous
        } else {
            self.limit_token
        }
    }

    fn current_window(window: Duration, state: &mut ClientState, now: Instant) -> &mut Window {
        let expired = state
            .window
            .as_ref()
            .is_none_or(|w| now.duration_since(w.started) >= window);
        if expired {
            state.window = None;
        }
        state.window.get_or_insert_with(|| Window {
            started: now,
            ends_epoch: ceil_epoch(SystemTime::now() + window),
            used: 0,
        })
    }

    /// Decide about a request arriving now and charge it if allowed.
    /// `trip` is asked, only when the request is neither blocked nor over
    /// budget, whether a new secondary limit starts with this request.
    pub fn admit(&mut self, key: &ClientKey, trip: impl FnOnce() -> Option<Duration>) -> Verdict {
        let now = Instant::now();
        let limit = self.limit_for(key);
        let window = self.window;
        let state = self.clients.entry(key.clone()).or_default();
        if let Some(until) = state.blocked_until {
            if now < until {
                return Verdict::Secondary {
                    retry_after: until - now,
                    tripped: false,
                };
            }
            state.blocked_until = None;
        }
        let w = Self::current_window(window, state, now);
        if w.used >= limit {
            return Verdict::Exhausted;
        }
        if let Some(retry_after) = trip() {
            state.blocked_until = Some(now + retry_after);
            return Verdict::Secondary {
                retry_after,
                tripped: true,
            };
        }
        w.used += 1;
        Verdict::Allowed
    }

    /// Give back one request (a free `304`).
    pub fn refund(&mut self, key: &ClientKey) {
        if let Some(w) = self.clients.get_mut(key).and_then(|s| s.window.as_mut()) {
            w.used = w.used.saturating_sub(1);
        }
    }

    /// Header values for this client now (opens a window if none is running,
    /// as GitHub reports a full budget with a reset one window ahead).
    pub fn snapshot(&mut self, key: &ClientKey) -> RateSnapshot {
        let limit = self.limit_for(key);
        let window = self.window;
        let state = self.clients.entry(key.clone()).or_default();
        let w = Self::current_window(window, state, Instant::now());
        let used = w.used.min(limit);
        RateSnapshot {
            limit,
            remaining: limit - used,
            used,
            reset: w.ends_epoch,
        }
    }

    /// Forget every window and secondary block.
    pub fn reset(&mut self) {
        self.clients.clear();
    }
}

/// `Retry-After` header value for a remaining wait.
pub fn retry_after_header(d: Duration) -> u64 {
    ceil_secs(d).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_schemes_share_a_key() {
        let a = ClientKey::from_authorization(Some("Bearer abc"));
        let b = ClientKey::from_authorization(Some("token abc"));
        assert_eq!(a, b);
        assert_eq!(a, ClientKey::for_token("abc"));
        assert!(ClientKey::from_authorization(None).is_anonymous());
        assert!(ClientKey::from_authorization(Some("Bearer  ")).is_anonymous());
        assert!(!a.as_str().contains("abc"));
    }

    #[test]
    fn budget_window_and_refund() {
        let mut r = RateLimiter::new(Duration::from_millis(200), 2, 5);
        let k = ClientKey::anonymous();
        assert_eq!(r.admit(&k, || None), Verdict::Allowed);
        assert_eq!(r.admit(&k, || None), Verdict::Allowed);
        assert_eq!(r.admit(&k, || None), Verdict::Exhausted);
        r.refund(&k);
        assert_eq!(r.snapshot(&k).remaining, 1);
        std::thread::sleep(Duration::from_millis(250));
        let s = r.snapshot(&k);
        assert_eq!((s.remaining, s.used, s.limit), (2, 0, 2));
        assert_eq!(r.snapshot(&ClientKey::for_token("t")).limit, 5);
    }

    #[test]
    fn secondary_blocks_until_retry_after() {
        let mut r = RateLimiter::new(Duration::from_secs(60), 10, 10);
        let k = ClientKey::anonymous();
        let trip = Some(Duration::from_millis(100));
        assert!(matches!(r.admit(&k, || trip), Verdict::Secondary { .. }));
        assert!(matches!(r.admit(&k, || None), Verdict::Secondary { .. }));
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(r.admit(&k, || None), Verdict::Allowed);
        assert_eq!(retry_after_header(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_header(Duration::from_millis(1500)), 2);
    }
}
