//! What GitHub's response headers say: rate limit, pagination, poll interval, retry-after.

use chrono::{DateTime, TimeZone, Utc};
use http::HeaderMap;
use std::time::Duration;

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
    /// `None` unless limit, remaining and reset are all present and numeric.
    pub fn from_headers(h: &HeaderMap) -> Option<Self> {
        let num = |name: &str| h.get(name)?.to_str().ok()?.trim().parse::<i64>().ok();
        let limit = i32::try_from(num("x-ratelimit-limit")?).ok()?;
        let remaining = i32::try_from(num("x-ratelimit-remaining")?).ok()?;
        let reset = Utc.timestamp_opt(num("x-ratelimit-reset")?, 0).single()?;
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
            reset: now + chrono::Duration::hours(1),
            resource: "core".into(),
        }
    }
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

/// `X-Poll-Interval`, in seconds.
pub fn poll_interval(h: &HeaderMap) -> Option<Duration> {
    let secs: u64 = h
        .get("x-poll-interval")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs))
}

/// `Retry-After`, either delta-seconds or an HTTP date.
pub fn retry_after(h: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let v = h.get("retry-after")?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(v).ok()?.to_utc();
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
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
        let r = RateInfo::from_headers(&h).unwrap();
        assert_eq!((r.limit, r.remaining, r.used), (60, 58, None));
        assert_eq!(r.reset.timestamp(), 1587820042);
        assert_eq!(r.resource, "core");
        assert!(RateInfo::from_headers(&headers(&[("x-ratelimit-limit", "60")])).is_none());
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
}
