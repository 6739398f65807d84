//! The rate budget: one per GitHub identity, shared by every process (ingest and enrichment,
//! any number of Lambdas). Before a request a process takes one unit; after the response the
//! budget is reconciled with GitHub's own headers.
//!
//! Every window ends: until GitHub has said when the current one resets, it ends an hour after
//! it began (GitHub's windows last an hour), so requests answered without rate headers can
//! never leave the budget spent for good. A request that never reached GitHub costs nothing.

use crate::github::{latest_wait_end, RateInfo, MAX_WAIT};
use chrono::{DateTime, Utc};
use std::time::Duration;

/// Who is asking: ingest may spend the whole budget; enrichment stops at ingest's reserve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Purpose {
    Ingest,
    Enrich,
}

/// Why no unit was granted, and when one may be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// The window's units are spent (for this purpose); the window resets at `until`.
    Exhausted { until: DateTime<Utc> },
    /// GitHub asked us to wait (secondary limit) until `until`.
    RetryAfter { until: DateTime<Utc> },
}

impl Denied {
    pub fn until(&self) -> DateTime<Utc> {
        match self {
            Denied::Exhausted { until } | Denied::RetryAfter { until } => *until,
        }
    }
}

/// What a response told us about the budget.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// Rate headers of an ordinary answer (any status other than the two below).
    Headers(RateInfo),
    /// The primary limit is spent (403/429 with remaining 0): nothing until reset.
    PrimaryExhausted(RateInfo),
    /// A secondary limit: nothing before `wait` from now.
    Secondary {
        rate: Option<RateInfo>,
        wait: Option<Duration>,
    },
    /// The request went out but no headers came back (timeout, connection closed, …).
    NoHeaders,
    /// The request never reached GitHub (DNS failure, connection refused, connect timeout):
    /// GitHub did not count it, so its unit is given back.
    NotSent,
}

#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    #[error("rate budget store: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// The port every GitHub request goes through.
#[async_trait::async_trait]
pub trait Budget: Send + Sync {
    /// Takes one unit for `purpose`, or says why not and until when.
    async fn acquire(
        &self,
        purpose: Purpose,
        now: DateTime<Utc>,
    ) -> Result<Result<(), Denied>, BudgetError>;
    /// Reconciles after a request that `acquire` allowed; returns the moment before which
    /// nothing may be sent when the observation blocks requests.
    async fn observe(
        &self,
        obs: Observation,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, BudgetError>;
}

/// The budget as last known: the logic every adapter applies, under its own lock.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct State {
    pub limit: i32,
    pub remaining: i32,
    pub used: i32,
    /// When the window resets. Provisional (an hour after `window_started_at`) until an answer
    /// of this window has been applied (`github_used` is `None` until then).
    pub reset_at: Option<DateTime<Utc>>,
    /// When the current window began as far as we know: our first unit of it.
    pub window_started_at: Option<DateTime<Utc>>,
    /// GitHub's `X-RateLimit-Used` of the newest answer applied in this window.
    pub github_used: Option<i32>,
    /// Units taken whose answers have not been reconciled yet.
    pub in_flight: i32,
    pub retry_after_until: Option<DateTime<Utc>>,
    pub secondary_strikes: i32,
    pub observed_at: DateTime<Utc>,
}

impl State {
    /// What we assume before GitHub has told us anything.
    pub fn unknown(limit: i32, now: DateTime<Utc>) -> Self {
        Self {
            limit,
            remaining: limit,
            used: 0,
            reset_at: None,
            window_started_at: None,
            github_used: None,
            in_flight: 0,
            retry_after_until: None,
            secondary_strikes: 0,
            observed_at: now,
        }
    }

    /// Units `purpose` may still take in this window.
    pub fn available(&self, purpose: Purpose, reserve_per_60: u32, now: DateTime<Utc>) -> i32 {
        let remaining = if self.window_over(now) {
            self.limit
        } else {
            self.remaining
        };
        let floor = match purpose {
            Purpose::Ingest => 0,
            Purpose::Enrich => enrich_floor(reserve_per_60, self.limit),
        };
        (remaining - floor).max(0)
    }

    fn window_over(&self, now: DateTime<Utc>) -> bool {
        self.reset_at.is_some_and(|r| r <= now)
    }

    /// Takes one unit, or says why not. Denials change nothing.
    pub fn acquire(
        &mut self,
        purpose: Purpose,
        reserve_per_60: u32,
        now: DateTime<Utc>,
    ) -> Result<(), Denied> {
        if let Some(until) = self.retry_after_until.filter(|u| *u > now) {
            return Err(Denied::RetryAfter { until });
        }
        if self.available(purpose, reserve_per_60, now) == 0 {
            let until = self.reset_at.unwrap_or(now + chrono::Duration::seconds(60));
            return Err(Denied::Exhausted { until });
        }
        if self.window_over(now) {
            // A new window: GitHub has refilled it.
            self.remaining = self.limit;
            self.used = 0;
            self.in_flight = 0;
            self.reset_at = None;
            self.github_used = None;
        }
        if self.reset_at.is_none() {
            // Its reset time comes with the next answer; until then (and if no answer ever
            // carries one) it ends an hour from now.
            self.window_started_at = Some(now);
            self.reset_at = Some(now.checked_add_signed(WINDOW).unwrap_or(now));
        }
        self.remaining -= 1;
        self.used += 1;
        self.in_flight += 1;
        Ok(())
    }

    /// Applies what a response said. GitHub's numbers win, except that an answer older than
    /// one already applied (same window, lower `used`) is ignored, and units other processes
    /// have taken but not yet reconciled stay subtracted.
    pub fn observe(&mut self, obs: Observation, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let unit_in_flight = self.in_flight > 0;
        self.in_flight = (self.in_flight - 1).max(0);
        self.observed_at = now;
        match obs {
            Observation::NoHeaders => None,
            Observation::NotSent => {
                // Unless a new window has refilled the budget since the unit was taken.
                if unit_in_flight {
                    self.remaining = (self.remaining + 1).min(self.limit);
                    self.used = (self.used - 1).max(0);
                }
                None
            }
            Observation::Headers(r) => {
                self.apply(&r, now);
                self.secondary_strikes = 0;
                None
            }
            Observation::PrimaryExhausted(r) => {
                self.apply(&r, now);
                self.remaining = 0;
                self.reset_at = Some(r.reset.clamp(now, latest_wait_end(now)));
                self.reset_at
            }
            Observation::Secondary { rate, wait } => {
                if let Some(r) = rate {
                    self.apply(&r, now);
                }
                self.secondary_strikes = self.secondary_strikes.saturating_add(1);
                let wait = wait
                    .unwrap_or_else(|| secondary_wait(self.secondary_strikes))
                    .min(MAX_WAIT);
                let until = chrono::Duration::from_std(wait)
                    .ok()
                    .and_then(|d| now.checked_add_signed(d))
                    .unwrap_or_else(|| latest_wait_end(now));
                self.retry_after_until =
                    Some(self.retry_after_until.map_or(until, |u| u.max(until)));
                self.retry_after_until
            }
        }
    }

    fn apply(&mut self, r: &RateInfo, now: DateTime<Utc>) {
        // A reset further away than any window is a broken header: at most an hour.
        let r = &RateInfo {
            reset: r.reset.min(latest_wait_end(now)),
            ..r.clone()
        };
        let used = r.used.unwrap_or(r.limit.saturating_sub(r.remaining));
        // No answer of this window applied yet: our reset time is only a guess, which the
        // first answer corrects.
        let provisional = self.github_used.is_none();
        let newer = match self.reset_at {
            None => true,
            Some(_) if provisional => true,
            Some(reset) if r.reset > reset => true,
            Some(reset) if r.reset == reset => self.github_used.is_none_or(|u| used >= u),
            Some(_) => false,
        };
        if !newer {
            return;
        }
        // Units taken here that GitHub has not counted yet: more taken than GitHub's `used`,
        // and still in flight (a 304 GitHub did not charge is neither).
        let same_window = provisional || self.reset_at == Some(r.reset);
        let unseen = if same_window {
            (self.used - used).clamp(0, self.in_flight)
        } else {
            self.in_flight
        };
        self.limit = r.limit;
        self.remaining = (r.remaining - unseen).max(0);
        self.used = used + unseen;
        self.github_used = Some(used);
        self.reset_at = Some(r.reset);
    }
}

/// How long a GitHub rate window lasts; a window whose reset is unknown ends this long after
/// it began.
pub const WINDOW: chrono::Duration = chrono::Duration::hours(1);

/// An in-memory budget: the same logic as the Postgres one, for unit tests.
#[cfg(test)]
pub struct MemoryBudget {
    state: std::sync::Mutex<State>,
    reserve_per_60: u32,
}

#[cfg(test)]
impl MemoryBudget {
    pub fn new(limit: i32, reserve_per_60: u32, now: DateTime<Utc>) -> Self {
        Self {
            state: std::sync::Mutex::new(State::unknown(limit, now)),
            reserve_per_60,
        }
    }
    pub fn snapshot(&self) -> State {
        self.state.lock().expect("budget lock").clone()
    }
}

#[cfg(test)]
#[async_trait::async_trait]
impl Budget for MemoryBudget {
    async fn acquire(
        &self,
        purpose: Purpose,
        now: DateTime<Utc>,
    ) -> Result<Result<(), Denied>, BudgetError> {
        Ok(self
            .state
            .lock()
            .expect("budget lock")
            .acquire(purpose, self.reserve_per_60, now))
    }
    async fn observe(
        &self,
        obs: Observation,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, BudgetError> {
        Ok(self.state.lock().expect("budget lock").observe(obs, now))
    }
}

/// How much of a window ingest keeps for itself: `INGEST_RESERVE` is given per 60 requests
/// (GitHub's anonymous hour) and scaled to the observed limit.
pub fn enrich_floor(reserve_per_60: u32, limit: i32) -> i32 {
    if limit <= 0 {
        return 0;
    }
    let scaled = (i64::from(reserve_per_60) * i64::from(limit) + 59) / 60;
    i32::try_from(scaled.min(i64::from(limit))).unwrap_or(limit)
}

/// How long to stay away after the n-th secondary limit in a row without `Retry-After`:
/// 60 s, then doubling, capped at an hour (GitHub's guidance).
pub fn secondary_wait(strikes: i32) -> Duration {
    let exp = strikes.clamp(1, 7) - 1;
    Duration::from_secs((60u64 << exp).min(3600))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
    }

    fn rate(limit: i32, remaining: i32, used: Option<i32>, reset: DateTime<Utc>) -> RateInfo {
        RateInfo {
            limit,
            remaining,
            used,
            reset,
            resource: "core".into(),
        }
    }

    #[test]
    fn enrichment_stops_at_the_ingest_reserve_and_ingest_goes_on() {
        let mut s = State::unknown(60, t(0));
        s.observe(Observation::Headers(rate(60, 60, Some(0), t(3600))), t(0));
        let mut enrich = 0;
        while s.acquire(Purpose::Enrich, 20, t(1)).is_ok() {
            enrich += 1;
        }
        assert_eq!(enrich, 40);
        assert_eq!(
            s.acquire(Purpose::Enrich, 20, t(1)),
            Err(Denied::Exhausted { until: t(3600) })
        );
        let mut ingest = 0;
        while s.acquire(Purpose::Ingest, 20, t(1)).is_ok() {
            ingest += 1;
        }
        assert_eq!(ingest, 20);
        // After reset the window refills.
        assert!(s.acquire(Purpose::Enrich, 20, t(3600)).is_ok());
        assert_eq!(s.remaining, 59);
    }

    #[test]
    fn a_late_answer_never_overwrites_a_newer_one() {
        let mut s = State::unknown(60, t(0));
        s.acquire(Purpose::Ingest, 0, t(0)).unwrap();
        s.acquire(Purpose::Ingest, 0, t(0)).unwrap();
        s.observe(Observation::Headers(rate(60, 58, Some(2), t(3600))), t(1));
        s.observe(Observation::Headers(rate(60, 59, Some(1), t(3600))), t(1));
        assert_eq!((s.remaining, s.used, s.in_flight), (58, 2, 0));
    }

    #[test]
    fn units_in_flight_stay_subtracted_until_their_answer() {
        let mut s = State::unknown(60, t(0));
        for _ in 0..3 {
            s.acquire(Purpose::Ingest, 0, t(0)).unwrap();
        }
        // GitHub has seen only the first request so far.
        s.observe(Observation::Headers(rate(60, 59, Some(1), t(3600))), t(1));
        assert_eq!(s.remaining, 57);
    }

    #[test]
    fn a_free_304_gives_the_unit_back() {
        let mut s = State::unknown(60, t(0));
        s.observe(Observation::Headers(rate(60, 50, Some(10), t(3600))), t(0));
        s.acquire(Purpose::Ingest, 0, t(1)).unwrap();
        assert_eq!(s.remaining, 49);
        s.observe(Observation::Headers(rate(60, 50, Some(10), t(3600))), t(2));
        assert_eq!(s.remaining, 50);
    }

    #[test]
    fn primary_limit_blocks_until_reset() {
        let mut s = State::unknown(60, t(0));
        s.acquire(Purpose::Ingest, 0, t(0)).unwrap();
        let until = s.observe(
            Observation::PrimaryExhausted(rate(60, 0, Some(60), t(900))),
            t(1),
        );
        assert_eq!(until, Some(t(900)));
        assert_eq!(
            s.acquire(Purpose::Ingest, 0, t(899)),
            Err(Denied::Exhausted { until: t(900) })
        );
        assert!(s.acquire(Purpose::Ingest, 0, t(900)).is_ok());
    }

    #[test]
    fn secondary_limit_honours_retry_after_then_backs_off() {
        let mut s = State::unknown(60, t(0));
        s.acquire(Purpose::Ingest, 0, t(0)).unwrap();
        let until = s.observe(
            Observation::Secondary {
                rate: None,
                wait: Some(Duration::from_secs(30)),
            },
            t(0),
        );
        assert_eq!(until, Some(t(30)));
        assert_eq!(
            s.acquire(Purpose::Ingest, 0, t(29)),
            Err(Denied::RetryAfter { until: t(30) })
        );
        s.acquire(Purpose::Ingest, 0, t(30)).unwrap();
        // Second strike without Retry-After: 120 s.
        assert_eq!(
            s.observe(
                Observation::Secondary {
                    rate: None,
                    wait: None
                },
                t(30)
            ),
            Some(t(150))
        );
        s.acquire(Purpose::Ingest, 0, t(150)).unwrap();
        s.observe(Observation::Headers(rate(60, 57, Some(3), t(3600))), t(151));
        assert_eq!(s.secondary_strikes, 0);
    }

    /// Requests answered without rate headers (a proxy's 5xx, a reset connection) after a
    /// window rolled over: the window still ends an hour after it began.
    #[test]
    fn a_window_without_any_rate_headers_still_ends_an_hour_after_it_began() {
        let mut s = State::unknown(60, t(0));
        s.acquire(Purpose::Ingest, 0, t(0)).unwrap();
        s.observe(Observation::Headers(rate(60, 59, Some(1), t(3600))), t(1));
        // The window rolls over at t(3600); from then on nothing comes back with headers.
        let mut taken = 0;
        while s.acquire(Purpose::Ingest, 0, t(3600)).is_ok() {
            s.observe(Observation::NoHeaders, t(3601));
            taken += 1;
        }
        assert_eq!(taken, 60);
        assert_eq!(
            s.acquire(Purpose::Ingest, 0, t(3700)),
            Err(Denied::Exhausted { until: t(7200) })
        );
        // An hour after the window began, a new one starts.
        assert!(s.acquire(Purpose::Ingest, 0, t(7200)).is_ok());
        assert_eq!(s.remaining, 59);
    }

    #[test]
    fn a_budget_that_never_saw_github_still_has_windows() {
        let mut s = State::unknown(60, t(0));
        for _ in 0..60 {
            s.acquire(Purpose::Ingest, 0, t(10)).unwrap();
            s.observe(Observation::NoHeaders, t(11));
        }
        assert_eq!(
            s.acquire(Purpose::Ingest, 0, t(20)),
            Err(Denied::Exhausted { until: t(3610) })
        );
        for later in [t(100_000), t(1_000_000)] {
            let mut again = s.clone();
            assert!(again.acquire(Purpose::Ingest, 0, later).is_ok(), "{later}");
        }
        assert!(s.acquire(Purpose::Ingest, 0, t(3610)).is_ok());
    }

    #[test]
    fn github_headers_correct_a_provisional_reset() {
        let mut s = State::unknown(60, t(0));
        s.acquire(Purpose::Ingest, 0, t(100)).unwrap();
        // GitHub's window started a little earlier than ours (another client's request).
        s.observe(
            Observation::Headers(rate(60, 50, Some(10), t(3000))),
            t(101),
        );
        assert_eq!((s.reset_at, s.remaining, s.used), (Some(t(3000)), 50, 10));
        s.acquire(Purpose::Ingest, 0, t(200)).unwrap();
        // An older answer of the same window is still ignored.
        s.observe(Observation::Headers(rate(60, 52, Some(8), t(3000))), t(201));
        assert_eq!((s.remaining, s.used), (49, 11));
    }

    #[test]
    fn a_request_that_never_reached_github_gives_its_unit_back() {
        let mut s = State::unknown(2, t(0));
        for _ in 0..10 {
            s.acquire(Purpose::Ingest, 0, t(1)).unwrap();
            s.observe(Observation::NotSent, t(1));
        }
        assert_eq!((s.remaining, s.used, s.in_flight), (2, 0, 0));
        // A unit the window rollover already wiped is not given back twice.
        s.acquire(Purpose::Ingest, 0, t(2)).unwrap();
        s.acquire(Purpose::Ingest, 0, t(5000)).unwrap();
        s.observe(Observation::NotSent, t(5001));
        s.observe(Observation::NotSent, t(5001));
        assert_eq!((s.remaining, s.used, s.in_flight), (2, 0, 0));
    }

    #[test]
    fn absurd_waits_are_capped_at_an_hour() {
        let mut s = State::unknown(60, t(0));
        s.acquire(Purpose::Ingest, 0, t(0)).unwrap();
        let until = s.observe(
            Observation::Secondary {
                rate: None,
                wait: Some(Duration::from_secs(10_000_000_000_000)),
            },
            t(0),
        );
        assert_eq!(until, Some(t(3600)));
        s.acquire(Purpose::Ingest, 0, t(3600)).unwrap();
        let far = Utc.timestamp_opt(4_000_000_000, 0).unwrap();
        let until = s.observe(
            Observation::PrimaryExhausted(rate(60, 0, Some(60), far)),
            t(3600),
        );
        assert_eq!(until, Some(t(7200)));
    }

    #[test]
    fn reserve_scales_with_the_limit() {
        assert_eq!(enrich_floor(20, 60), 20);
        assert_eq!(enrich_floor(20, 5000), 1667);
        assert_eq!(enrich_floor(0, 60), 0);
        assert_eq!(enrich_floor(90, 60), 60);
    }

    #[test]
    fn secondary_waits_grow_from_a_minute() {
        assert_eq!(secondary_wait(1), Duration::from_secs(60));
        assert_eq!(secondary_wait(2), Duration::from_secs(120));
        assert_eq!(secondary_wait(3), Duration::from_secs(240));
        assert_eq!(secondary_wait(50), Duration::from_secs(3600));
    }
}
