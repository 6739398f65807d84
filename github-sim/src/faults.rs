//! Faults on demand and the moments at which secondary limits trip.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What goes wrong with one response.
///
/// JSON form (control endpoint): `{"kind":"status","code":502}`,
/// `{"kind":"bare","code":502}`, `{"kind":"retry_after","code":429,"secs":1000000000}`,
/// `{"kind":"poll_interval","secs":10000000000000}`, `{"kind":"lone_surrogate"}`,
/// `{"kind":"truncated"}`, `{"kind":"slow","ms":3000}`, `{"kind":"close"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Answer with this status and a GitHub-like error body.
    Status { code: u16 },
    /// This status with none of GitHub's headers (no `X-RateLimit-*`, no `Retry-After`), as a
    /// proxy or load balancer in front of GitHub answers. The request is still charged.
    Bare { code: u16 },
    /// This status (default 429) with `Retry-After: secs`, whatever its size.
    RetryAfter {
        #[serde(default = "too_many")]
        code: u16,
        secs: u64,
    },
    /// A normal answer whose `X-Poll-Interval` is `secs`, whatever its size.
    PollInterval { secs: u64 },
    /// A normal `/events` answer whose first event gets a string holding a lone surrogate
    /// escape (`"\ud83d"`, valid JSON text that no UTF-8 string can hold). The event stays
    /// poisoned: every later page carrying it carries the same string.
    LoneSurrogate,
    /// The normal status and headers, with the body cut in half.
    Truncated,
    /// Wait this long, then answer normally.
    Slow { ms: u64 },
    /// Drop the connection without answering.
    Close,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Status { code } => write!(f, "status={code}"),
            Fault::Bare { code } => write!(f, "bare={code}"),
            Fault::RetryAfter { code, secs } => write!(f, "retry_after={secs}@{code}"),
            Fault::PollInterval { secs } => write!(f, "poll_interval={secs}"),
            Fault::LoneSurrogate => f.write_str("lone_surrogate"),
            Fault::Truncated => f.write_str("truncated"),
            Fault::Slow { ms } => write!(f, "slow={ms}"),
            Fault::Close => f.write_str("close"),
        }
    }
}

impl FromStr for Fault {
    type Err = String;

    /// `status=502`, `bare=502`, `retry_after=SECS` or `retry_after=SECS@CODE`,
    /// `poll_interval=SECS`, `lone_surrogate`, `truncated`, `slow=3000`, `close`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, arg) = match s.split_once('=') {
            Some((n, a)) => (n.trim(), Some(a.trim())),
            None => (s.trim(), None),
        };
        let num = |what: &str| -> Result<u64, String> {
            arg.ok_or_else(|| format!("{name} needs ={what}"))?
                .parse::<u64>()
                .map_err(|e| format!("{name}: {e}"))
        };
        let code = |n: u64| match u16::try_from(n) {
            Ok(code) if (100..=599).contains(&code) => Ok(code),
            _ => Err(format!("status {n} out of range")),
        };
        match name {
            "status" => Ok(Fault::Status {
                code: code(num("CODE")?)?,
            }),
            "bare" => Ok(Fault::Bare {
                code: code(num("CODE")?)?,
            }),
            "retry_after" => {
                let a = arg.ok_or("retry_after needs =SECS or =SECS@CODE")?;
                let (secs, status) = a.split_once('@').unwrap_or((a, "429"));
                let secs = secs
                    .trim()
                    .parse::<u64>()
                    .map_err(|e| format!("retry_after: {e}"))?;
                let status = status
                    .trim()
                    .parse::<u64>()
                    .map_err(|e| format!("retry_after: {e}"))?;
                Ok(Fault::RetryAfter {
                    code: code(status)?,
                    secs,
                })
            }
            "poll_interval" => Ok(Fault::PollInterval {
                secs: num("SECS")?,
            }),
            "lone_surrogate" => Ok(Fault::LoneSurrogate),
            "truncated" => Ok(Fault::Truncated),
            "slow" => Ok(Fault::Slow { ms: num("MS")? }),
            "close" => Ok(Fault::Close),
            other => Err(format!(
                "unknown fault {other:?} (status=N, bare=N, retry_after=SECS[@N], poll_interval=SECS, lone_surrogate, truncated, slow=MS, close)"
            )),
        }
    }
}

/// "Let `skip` matching requests pass, then give the next `count` ones `fault`."
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultRule {
    /// Matches request paths starting with this (e.g. `/events`, `/users/`).
    #[serde(default = "root")]
    pub path_prefix: String,
    #[serde(default = "one")]
    pub count: u32,
    #[serde(default)]
    pub skip: u32,
    pub fault: Fault,
}

fn root() -> String {
    "/".to_string()
}

fn one() -> u32 {
    1
}

fn too_many() -> u16 {
    429
}

impl FaultRule {
    pub fn new(path_prefix: impl Into<String>, count: u32, fault: Fault) -> Self {
        FaultRule {
            path_prefix: path_prefix.into(),
            count,
            skip: 0,
            fault,
        }
    }

    /// Let `skip` matching requests through first.
    pub fn after(mut self, skip: u32) -> Self {
        self.skip = skip;
        self
    }
}

impl FromStr for FaultRule {
    type Err = String;

    /// `PREFIX:COUNT:FAULT`, e.g. `/events:2:status=502` or `/users/:1:close`.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.rsplitn(3, ':');
        let (Some(fault), Some(count), Some(prefix)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("{s:?}: expected PREFIX:COUNT:FAULT"));
        };
        let count = count
            .parse::<u32>()
            .map_err(|e| format!("{s:?}: count: {e}"))?;
        Ok(FaultRule::new(prefix, count, fault.parse()?))
    }
}

/// Armed faults and secondary-limit triggers.
#[derive(Debug, Default)]
pub struct FaultBook {
    rules: Vec<FaultRule>,
    secondary_next: u32,
    secondary_on_events: BTreeSet<u64>,
    events_seen: u64,
}

impl FaultBook {
    pub fn new(rules: Vec<FaultRule>, secondary_on_events: &[u64]) -> Self {
        FaultBook {
            rules,
            secondary_next: 0,
            secondary_on_events: secondary_on_events.iter().copied().collect(),
            events_seen: 0,
        }
    }

    pub fn inject(&mut self, rule: FaultRule) {
        self.rules.push(rule);
    }

    pub fn clear(&mut self) {
        self.rules.clear();
        self.secondary_next = 0;
    }

    pub fn pending(&self) -> Vec<FaultRule> {
        self.rules.clone()
    }

    /// The next `k` API requests (any client, any path) trip a secondary limit.
    pub fn trigger_secondary(&mut self, k: u32) {
        self.secondary_next = self.secondary_next.saturating_add(k);
    }

    /// Count an arriving `/events` request; true when its number was chosen
    /// to trip a secondary limit.
    pub fn events_arrival(&mut self) -> bool {
        self.events_seen += 1;
        self.secondary_on_events.remove(&self.events_seen)
    }

    /// Consume one of the "next K requests" secondary triggers, if any is armed.
    pub fn take_secondary(&mut self) -> bool {
        if self.secondary_next > 0 {
            self.secondary_next -= 1;
            true
        } else {
            false
        }
    }

    /// The fault for a request to `path`, consuming one use of the first matching rule.
    pub fn take(&mut self, path: &str) -> Option<Fault> {
        let idx = self
            .rules
            .iter()
            .position(|r| path.starts_with(&r.path_prefix))?;
        let rule = &mut self.rules[idx];
        if rule.skip > 0 {
            rule.skip -= 1;
            return None;
        }
        let fault = rule.fault;
        rule.count = rule.count.saturating_sub(1);
        if rule.count == 0 {
            self.rules.remove(idx);
        }
        Some(fault)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rules() {
        let r: FaultRule = "/events:2:status=502".parse().expect("valid");
        assert_eq!(r, FaultRule::new("/events", 2, Fault::Status { code: 502 }));
        assert_eq!(
            "/users/:1:slow=10".parse::<FaultRule>().map(|r| r.fault),
            Ok(Fault::Slow { ms: 10 })
        );
        assert!("close".parse::<FaultRule>().is_err());
        assert!("/x:1:status=99".parse::<FaultRule>().is_err());
        let json = serde_json::to_string(&Fault::Slow { ms: 5 }).expect("serializes");
        assert_eq!(json, r#"{"kind":"slow","ms":5}"#);
        assert_eq!("bare=502".parse(), Ok(Fault::Bare { code: 502 }));
        assert_eq!(
            "retry_after=10000000000000".parse(),
            Ok(Fault::RetryAfter {
                code: 429,
                secs: 10_000_000_000_000
            })
        );
        assert_eq!(
            "retry_after=5@503".parse(),
            Ok(Fault::RetryAfter { code: 503, secs: 5 })
        );
        assert_eq!(
            "poll_interval=1000000000".parse(),
            Ok(Fault::PollInterval {
                secs: 1_000_000_000
            })
        );
        assert_eq!("lone_surrogate".parse(), Ok(Fault::LoneSurrogate));
        assert!("bare=99".parse::<Fault>().is_err());
        let back: Fault =
            serde_json::from_str(r#"{"kind":"retry_after","secs":7}"#).expect("default code");
        assert_eq!(back, Fault::RetryAfter { code: 429, secs: 7 });
        for f in [
            Fault::Bare { code: 429 },
            Fault::RetryAfter { code: 403, secs: 1 },
            Fault::PollInterval { secs: 2 },
            Fault::LoneSurrogate,
        ] {
            assert_eq!(f.to_string().parse(), Ok(f));
        }
    }

    #[test]
    fn rules_are_consumed_in_order() {
        let mut b = FaultBook::default();
        b.inject(FaultRule::new("/events", 2, Fault::Close).after(1));
        assert_eq!(b.take("/users/x"), None);
        assert_eq!(b.take("/events"), None);
        assert_eq!(b.take("/events"), Some(Fault::Close));
        assert_eq!(b.take("/events"), Some(Fault::Close));
        assert_eq!(b.take("/events"), None);
        assert!(b.pending().is_empty());
    }

    #[test]
    fn secondary_triggers() {
        let mut b = FaultBook::new(vec![], &[2]);
        assert!(!b.events_arrival());
        assert!(b.events_arrival());
        assert!(!b.events_arrival());
        assert!(!b.take_secondary());
        b.trigger_secondary(1);
        assert!(b.take_secondary());
        assert!(!b.take_secondary());
    }
}
