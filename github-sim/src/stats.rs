//! Ground truth about what was released and what each client did.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::rate::ClientKey;

/// The kind of API path a request went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathKind {
    Events,
    Users,
    Repos,
    RateLimit,
    Other,
}

/// Status recorded for a request whose connection was dropped without an answer.
pub const STATUS_CLOSED: u16 = 0;

/// Why a request counted as a violation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// Sent while the primary budget was spent.
    Exhausted,
    /// Sent before a secondary limit's `Retry-After` elapsed.
    RetryAfter,
}

/// One client's record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClientStats {
    /// All API requests (control endpoints excluded).
    pub requests: u64,
    /// Requests by path kind, then by status (`0` = connection dropped).
    pub by_kind: BTreeMap<PathKind, BTreeMap<u16, u64>>,
    /// `violations_exhausted + violations_retry_after`.
    pub violations: u64,
    pub violations_exhausted: u64,
    pub violations_retry_after: u64,
    /// Milliseconds between consecutive `/events` requests, in order.
    pub poll_gaps_ms: Vec<u64>,
    pub min_poll_gap_ms: Option<u64>,
}

impl ClientStats {
    /// Requests of `kind` answered with `status`.
    pub fn count(&self, kind: PathKind, status: u16) -> u64 {
        self.by_kind
            .get(&kind)
            .and_then(|m| m.get(&status))
            .copied()
            .unwrap_or(0)
    }

    /// Requests of `kind`, whatever the answer.
    pub fn total(&self, kind: PathKind) -> u64 {
        self.by_kind.get(&kind).map_or(0, |m| m.values().sum())
    }
}

/// A snapshot of everything the simulator knows (`GET /_sim/stats`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Events loaded from the files.
    pub loaded: usize,
    /// Lines skipped (not an Events-API event).
    pub skipped_lines: usize,
    /// Events released so far.
    pub released: usize,
    /// Ids of released events, in release order (oldest first).
    pub released_ids: Vec<String>,
    /// Ids sent in complete `200` answers to `/events`, with how often.
    pub served_ids: BTreeMap<String, u64>,
    /// Per client: `anonymous` or `token:<hash>` (see [`ClientKey::for_token`]).
    pub clients: BTreeMap<String, ClientStats>,
    /// `/users/{login}` requests per login as requested.
    pub users: BTreeMap<String, u64>,
    /// `/repos/{owner}/{repo}` requests per `owner/repo` as requested.
    pub repos: BTreeMap<String, u64>,
    /// Ids of events served with a lone surrogate (`Fault::LoneSurrogate`), sorted.
    #[serde(default)]
    pub poisoned_ids: Vec<String>,
}

impl Stats {
    pub fn client(&self, key: &ClientKey) -> Option<&ClientStats> {
        self.clients.get(key.as_str())
    }

    pub fn anonymous(&self) -> Option<&ClientStats> {
        self.client(&ClientKey::anonymous())
    }

    /// Total violations over all clients.
    pub fn violations(&self) -> u64 {
        self.clients.values().map(|c| c.violations).sum()
    }
}

#[derive(Debug, Default)]
struct ClientBook {
    stats: ClientStats,
    last_poll: Option<Instant>,
}

/// The recorder behind [`Stats`].
#[derive(Debug, Default)]
pub struct StatsBook {
    clients: HashMap<ClientKey, ClientBook>,
    served: HashMap<Arc<str>, u64>,
    users: BTreeMap<String, u64>,
    repos: BTreeMap<String, u64>,
}

impl StatsBook {
    /// Note a request on arrival (poll gaps are measured between arrivals).
    pub fn arrival(&mut self, key: &ClientKey, kind: PathKind, at: Instant) {
        let c = self.clients.entry(key.clone()).or_default();
        c.stats.requests += 1;
        if kind == PathKind::Events {
            if let Some(prev) = c.last_poll {
                let gap = u64::try_from(at.duration_since(prev).as_millis()).unwrap_or(u64::MAX);
                c.stats.poll_gaps_ms.push(gap);
                c.stats.min_poll_gap_ms = Some(c.stats.min_poll_gap_ms.map_or(gap, |m| m.min(gap)));
            }
            c.last_poll = Some(at);
        }
    }

    pub fn violation(&mut self, key: &ClientKey, why: Violation) {
        let c = &mut self.clients.entry(key.clone()).or_default().stats;
        c.violations += 1;
        match why {
            Violation::Exhausted => c.violations_exhausted += 1,
            Violation::RetryAfter => c.violations_retry_after += 1,
        }
    }

    pub fn answered(&mut self, key: &ClientKey, kind: PathKind, status: u16) {
        let c = &mut self.clients.entry(key.clone()).or_default().stats;
        *c.by_kind
            .entry(kind)
            .or_default()
            .entry(status)
            .or_default() += 1;
    }

    pub fn user_requested(&mut self, login: &str) {
        *self.users.entry(login.to_string()).or_default() += 1;
    }

    pub fn repo_requested(&mut self, full_name: &str) {
        *self.repos.entry(full_name.to_string()).or_default() += 1;
    }

    pub fn served<'a>(&mut self, ids: impl IntoIterator<Item = &'a Arc<str>>) {
        for id in ids {
            *self.served.entry(Arc::clone(id)).or_default() += 1;
        }
    }

    pub fn reset(&mut self) {
        *self = StatsBook::default();
    }

    /// Fill the request-side fields of a snapshot.
    pub fn fill(&self, out: &mut Stats) {
        out.served_ids = self
            .served
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        out.clients = self
            .clients
            .iter()
            .map(|(k, c)| (k.to_string(), c.stats.clone()))
            .collect();
        out.users = self.users.clone();
        out.repos = self.repos.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn poll_gaps_and_counts() {
        let mut b = StatsBook::default();
        let k = ClientKey::anonymous();
        let t0 = Instant::now();
        b.arrival(&k, PathKind::Events, t0);
        b.arrival(&k, PathKind::Users, t0 + Duration::from_millis(5));
        b.arrival(&k, PathKind::Events, t0 + Duration::from_millis(40));
        b.arrival(&k, PathKind::Events, t0 + Duration::from_millis(50));
        b.answered(&k, PathKind::Events, 200);
        b.answered(&k, PathKind::Events, 304);
        b.violation(&k, Violation::Exhausted);
        let mut s = Stats::default();
        b.fill(&mut s);
        let c = s.anonymous().expect("client recorded");
        assert_eq!(c.poll_gaps_ms, vec![40, 10]);
        assert_eq!(c.min_poll_gap_ms, Some(10));
        assert_eq!(c.requests, 4);
        assert_eq!(c.total(PathKind::Events), 2);
        assert_eq!(c.count(PathKind::Events, 304), 1);
        assert_eq!((c.violations, c.violations_exhausted), (1, 1));
        let json = serde_json::to_string(&s).expect("serializes");
        let back: Stats = serde_json::from_str(&json).expect("round trip");
        assert_eq!(back, s);
    }
}
