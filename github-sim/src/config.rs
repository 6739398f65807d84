//! Simulator configuration: one plain struct with GitHub-like defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::faults::FaultRule;

/// What drives the release of events onto the public timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Clock {
    /// `initial` events at start, then `rate_per_sec` per second of wall time,
    /// plus whatever [`crate::Sim::release`] adds.
    #[default]
    Real,
    /// `initial` events at start; afterwards only [`crate::Sim::release`] adds events.
    Manual,
}

/// Everything the simulator can be told. `SimConfig::default()` behaves like
/// api.github.com for an unauthenticated client, with no events loaded.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// GH Archive files (NDJSON, gzip or plain), loaded in this order.
    pub files: Vec<PathBuf>,
    /// Address to listen on; port 0 picks a free one.
    pub bind: SocketAddr,
    /// Events released before the first request.
    pub initial: usize,
    /// Events released per second in [`Clock::Real`] mode (fractional allowed).
    pub rate_per_sec: f64,
    pub clock: Clock,
    /// Shuffle the release order within consecutive blocks of this many events
    /// (0 or 1: keep file order). GitHub's own ids are not monotonic.
    pub shuffle_block: usize,
    /// Seed for the shuffle.
    pub seed: u64,
    /// How many of the newest released events `/events` exposes (GitHub: 300).
    pub events_cap: usize,
    /// `X-Poll-Interval` in seconds.
    pub poll_interval_secs: u64,

    /// Length of a primary rate-limit window (GitHub: one hour).
    pub window: Duration,
    /// Requests per window without a token.
    pub limit_anonymous: u32,
    /// Requests per window with a token.
    pub limit_token: u32,
    /// Status when the primary limit is exhausted (GitHub: 403; 429 also seen).
    pub exhausted_status: u16,
    /// Whether a `304 Not Modified` costs one request of the budget. GitHub
    /// documents that conditional requests answered with 304 are free, hence
    /// the default `false`.
    pub conditional_costs: bool,

    /// Status of a secondary-limit answer (429 or 403).
    pub secondary_status: u16,
    /// `Retry-After` of a secondary-limit answer.
    pub secondary_retry_after: Duration,
    /// 1-based numbers of `/events` requests (counted over all clients) that
    /// trip a secondary limit.
    pub secondary_on_events_requests: Vec<u64>,

    /// Faults armed at start.
    pub faults: Vec<FaultRule>,
    /// Logins answered with 404 even when seen in the events.
    pub gone_users: Vec<String>,
    /// `owner/name`s answered with 404 even when seen in the events.
    pub gone_repos: Vec<String>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            files: Vec::new(),
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            initial: 300,
            rate_per_sec: 1.0,
            clock: Clock::Real,
            shuffle_block: 0,
            seed: 1,
            events_cap: 300,
            poll_interval_secs: 60,
            window: Duration::from_secs(3600),
            limit_anonymous: 60,
            limit_token: 5000,
            exhausted_status: 403,
            conditional_costs: false,
            secondary_status: 429,
            secondary_retry_after: Duration::from_secs(60),
            secondary_on_events_requests: Vec::new(),
            faults: Vec::new(),
            gone_users: Vec::new(),
            gone_repos: Vec::new(),
        }
    }
}
