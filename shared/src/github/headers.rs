//! What GitHub's response headers say: rate limit, pagination, poll interval, retry-after.
//!
//! Headers come from the network: every wait derived from them is at most [`MAX_WAIT`] from
//! now (a longer one is logged with the raw value and capped), and nothing here panics or
//! overflows, whatever the value.

use chrono::{DateTime, TimeZone, Utc};
use http::HeaderMap;
use std::time::Duration;
use tracing::warn;

/// The longest wait a header may impose. GitHub's rate windows last an hour, so a longer wait
/// is a broken header, and honouring it would stop every process for as long as it says.
pub const MAX_WAIT: Duration = Duration::from_secs(3600);

/// The latest moment a header may make us wait for.
pub fn latest_wait_end(now: DateTime<Utc>) -> DateTime<Utc> {
    chrono::Duration::from_std(MAX_WAIT)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(now)
}

fn capped(header: &'static str, raw: &str, wait: Duration) -> Duration {
    if wait > MAX_WAIT {
        warn!(
            header,
            raw,
            max_secs = MAX_WAIT.as_secs(),
            "header asks for a wait longer than the cap; capped"
        );
        MAX_WAIT
    } else {
        wait
    }
}

/// A number of seconds: digits (saturating when too long for a u64) or a finite, non-negative
/// decimal such as `1e13`.
fn seconds(raw: &str) -> Option<Duration> {
    if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Duration::from_secs(raw.parse().unwrap_or(u64::MAX)));
    }
    let f: f64 = raw.parse().ok()?;
    (f.is_finite() && f >= 0.0).then(|| Duration::try_from_secs_f64(f).unwrap_or(Duration::MAX))
}

fn unreadable(header: &'static str, raw: &str) {
    warn!(header, raw, "unreadable header ignored");
}

/// The `X-RateLimit-*` headers of one response.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RateInfo {
    pub limit: i32,
    pub remaining: i32,
    pub used: Option<i32>,
    pub reset: DateTime<Utc>,
    pub resource: String,
}

impl RateInfo {
    /// `None` unless limit, remaining and reset are all present and numeric. A reset more than
    /// [`MAX_WAIT`] after `now` is taken as `now + MAX_WAIT`.
    pub fn from_headers(h: &HeaderMap, now: DateTime<Utc>) -> Option<Self> {
        let num = |name: &str| h.get(name)?.to_str().ok()?.trim().parse::<i64>().ok();
        let limit = i32::try_from(num("x-ratelimit-limit")?).ok()?;
        let remaining = i32::try_from(num("x-ratelimit-remaining")?).ok()?;
        let reset = reset_time(h.get("x-ratelimit-reset")?.to_str().ok()?.trim(), now)?;
        let used = num("x-ratelimit-used").and_then(|u| i32::try_from(u).ok());
        let resource = h
            .get("x-ratelimit-resource")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("core")
            .to_owned();
        Some(Self {
            limit,
            remaining,
            used,
            reset,
            resource,
        })
    }
}

impl RateInfo {
    /// For a 403/429 that says `X-RateLimit-Remaining: 0` without a reset time.
    pub fn exhausted_without_reset(h: &HeaderMap, now: DateTime<Utc>) -> Self {
        let limit = h
            .get("x-ratelimit-limit")
            .and_then(|v| v.to_str().ok()?.trim().parse().ok())
            .unwrap_or(60);
        Self {
            limit,
            remaining: 0,
            used: Some(limit),
            reset: latest_wait_end(now),
            resource: "core".into(),
        }
    }
}

/// `X-RateLimit-Reset` (epoch seconds), at most [`MAX_WAIT`] after `now`.
fn reset_time(raw: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let secs = match raw.parse::<i64>() {
        Ok(s) => s,
        Err(_) if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) => i64::MAX,
        Err(_) => {
            unreadable("x-ratelimit-reset", raw);
            return None;
        }
    };
    let latest = latest_wait_end(now);
    if secs > latest.timestamp() {
        warn!(
            header = "x-ratelimit-reset",
            raw,
            max_secs = MAX_WAIT.as_secs(),
            "rate limit reset further away than the cap; capped"
        );
        return Some(latest);
    }
    Utc.timestamp_opt(secs, 0).single()
}

/// Whether `X-RateLimit-Remaining` is present and zero.
pub fn remaining_is_zero(h: &HeaderMap) -> bool {
    h.get("x-ratelimit-remaining")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        == Some("0")
}

/// The `rel="next"` target of a `Link` header.
pub fn link_next(h: &HeaderMap) -> Option<String> {
    let link = h.get("link")?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let mut pieces = part.split(';');
        let url = pieces.next()?.trim().strip_prefix('<')?.strip_suffix('>')?;
        pieces
            .any(|p| {
                let p = p.trim();
                p == "rel=\"next\"" || p == "rel=next"
            })
            .then(|| url.to_owned())
    })
}

/// `X-Poll-Interval`, in seconds, at most [`MAX_WAIT`].
pub fn poll_interval(h: &HeaderMap) -> Option<Duration> {
    let v = h.get("x-poll-interval")?.to_str().ok()?.trim();
    match seconds(v) {
        Some(d) => Some(capped("x-poll-interval", v, d)),
        None => {
            unreadable("x-poll-interval", v);
            None
        }
    }
}

/// `Retry-After`, either delta-seconds or an HTTP date, at most [`MAX_WAIT`]; `None` when it
/// is neither (a negative number, text).
pub fn retry_after(h: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let v = h.get("retry-after")?.to_str().ok()?.trim();
    let wait = match seconds(v) {
        Some(d) => d,
        None => match DateTime::parse_from_rfc2822(v) {
            // Both dates are within chrono's range: their difference cannot overflow.
            Ok(at) => (at.to_utc() - now).to_std().unwrap_or(Duration::ZERO),
            Err(_) => {
                unreadable("retry-after", v);
                return None;
            }
        },
    };
    Some(capped("retry-after", v, wait))
}

pub fn etag(h: &HeaderMap) -> Option<String> {
    h.get("etag")?.to_str().ok().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn reads_github_link_header_next() {
        // As recorded from GET /events (2020).
        let h = headers(&[(
            "link",
            "<https://api.github.com/events?page=2>; rel=\"next\", <https://api.github.com/events?page=10>; rel=\"last\"",
        )]);
        assert_eq!(
            link_next(&h).as_deref(),
            Some("https://api.github.com/events?page=2")
        );
        let last_only = headers(&[(
            "link",
            "<https://api.github.com/events?page=1>; rel=\"prev\"",
        )]);
        assert_eq!(link_next(&last_only), None);
    }

    #[test]
    fn reads_rate_headers_with_and_without_used() {
        let h = headers(&[
            ("x-ratelimit-limit", "60"),
            ("x-ratelimit-remaining", "58"),
            ("x-ratelimit-reset", "1587820042"),
        ]);
        let now = Utc.timestamp_opt(1587820000, 0).unwrap();
        let r = RateInfo::from_headers(&h, now).unwrap();
        assert_eq!((r.limit, r.remaining, r.used), (60, 58, None));
        assert_eq!(r.reset.timestamp(), 1587820042);
        assert_eq!(r.resource, "core");
        assert!(RateInfo::from_headers(&headers(&[("x-ratelimit-limit", "60")]), now).is_none());
    }

    #[test]
    fn retry_after_accepts_seconds_and_dates() {
        let now = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
        assert_eq!(
            retry_after(&headers(&[("retry-after", "30")]), now),
            Some(Duration::from_secs(30))
        );
        let date = (now + chrono::Duration::seconds(90)).to_rfc2822();
        assert_eq!(
            retry_after(&headers(&[("retry-after", &date)]), now),
            Some(Duration::from_secs(90))
        );
    }

    #[test]
    fn retry_after_never_asks_for_more_than_an_hour() {
        let now = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
        let hour = Some(Duration::from_secs(3600));
        for huge in [
            "10000000000000",
            "1e13",
            "1000000000",
            "99999999999999999999999",
        ] {
            assert_eq!(
                retry_after(&headers(&[("retry-after", huge)]), now),
                hour,
                "{huge}"
            );
        }
        let far = "Fri, 01 Jan 2100 00:00:00 GMT";
        assert_eq!(retry_after(&headers(&[("retry-after", far)]), now), hour);
        assert_eq!(retry_after(&headers(&[("retry-after", "3600")]), now), hour);
    }

    #[test]
    fn retry_after_that_is_not_a_wait_is_ignored() {
        let now = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
        for bad in ["-5", "soon", "", "NaN", "inf", "-1e13"] {
            assert_eq!(
                retry_after(&headers(&[("retry-after", bad)]), now),
                None,
                "{bad}"
            );
        }
        let past = (now - chrono::Duration::seconds(90)).to_rfc2822();
        assert_eq!(
            retry_after(&headers(&[("retry-after", &past)]), now),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn poll_interval_is_capped_at_an_hour() {
        for (raw, want) in [
            ("60", Some(60)),
            ("3600", Some(3600)),
            ("3601", Some(3600)),
            ("4294967296", Some(3600)),
            ("99999999999999999999999", Some(3600)),
            ("-1", None),
            ("sixty", None),
        ] {
            assert_eq!(
                poll_interval(&headers(&[("x-poll-interval", raw)])),
                want.map(Duration::from_secs),
                "{raw}"
            );
        }
    }

    #[test]
    fn a_rate_reset_years_ahead_is_an_hour_ahead() {
        let now = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
        for far in [
            "4102444800",
            "10000000000000",
            "9223372036854775807",
            "99999999999999999999",
        ] {
            let h = headers(&[
                ("x-ratelimit-limit", "60"),
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", far),
            ]);
            let r = RateInfo::from_headers(&h, now).expect(far);
            assert_eq!(r.reset, now + chrono::Duration::hours(1), "{far}");
        }
        let h = headers(&[
            ("x-ratelimit-limit", "60"),
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "-99999999999999999"),
        ]);
        assert!(RateInfo::from_headers(&h, now).is_none());
    }
}
