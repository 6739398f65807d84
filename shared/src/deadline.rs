//! How long the work in hand may still run: a Lambda invocation's deadline, or none (the
//! CLI, which stops on a signal instead).
//!
//! Every wait that could outlive an invocation is derived from it: an ingest cycle starts a
//! page, and enrichment a name, only while [`Deadline::allows`] a margin; a GitHub attempt's
//! timeout and the backoff before a retry are capped by [`Deadline::cap`], keeping a reserve
//! back to release what was claimed and record the state.

use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// 2001-09-09T01:46:40Z: a deadline before it is not a wall-clock time.
pub const EARLIEST_REAL_DEADLINE_MS: u64 = 1_000_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Deadline(Option<Instant>);

impl Deadline {
    /// No deadline: every check passes.
    pub const NONE: Deadline = Deadline(None);

    pub fn at(instant: Instant) -> Self {
        Self(Some(instant))
    }

    /// `d` from now.
    pub fn after(d: Duration) -> Self {
        Self(Some(Instant::now() + d))
    }

    /// Lambda's `Context::deadline` (milliseconds since the Unix epoch). 0, what a context
    /// built without the runtime carries, means none; so does a value before
    /// [`EARLIEST_REAL_DEADLINE_MS`], which no real invocation sends (`cargo lambda watch`'s
    /// emulator sends a constant 600000, ten minutes after the epoch).
    pub fn from_epoch_millis(ms: u64) -> Self {
        Self::from_epoch_millis_at(ms, SystemTime::now(), Instant::now())
    }

    /// [`Deadline::from_epoch_millis`] with the two clocks' "now" given.
    pub fn from_epoch_millis_at(ms: u64, now: SystemTime, now_instant: Instant) -> Self {
        if ms < EARLIEST_REAL_DEADLINE_MS {
            if ms != 0 {
                tracing::warn!(
                    deadline_ms = ms,
                    "the invocation's deadline is not a wall-clock time; running without one"
                );
            }
            return Self::NONE;
        }
        let at = UNIX_EPOCH + Duration::from_millis(ms);
        let left = at.duration_since(now).unwrap_or_default();
        Self(Some(now_instant + left))
    }

    pub fn is_none(&self) -> bool {
        self.0.is_none()
    }

    /// Time left (zero once passed); `None` without a deadline.
    pub fn remaining(&self) -> Option<Duration> {
        self.0.map(|t| t.saturating_duration_since(Instant::now()))
    }

    /// Whether at least `need` is left (always true without a deadline).
    pub fn allows(&self, need: Duration) -> bool {
        self.remaining().is_none_or(|left| left >= need)
    }

    /// `d`, shortened so that `reserve` is still left after it.
    pub fn cap(&self, d: Duration, reserve: Duration) -> Duration {
        match self.remaining() {
            None => d,
            Some(left) => d.min(left.saturating_sub(reserve)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_that_is_not_a_wall_clock_time_is_no_deadline() {
        let (now, instant) = (SystemTime::now(), Instant::now());
        // What `cargo lambda watch` sends, and what a context built by hand carries.
        assert!(Deadline::from_epoch_millis_at(600_000, now, instant).is_none());
        assert!(Deadline::from_epoch_millis_at(0, now, instant).is_none());
        // A real one, a minute ahead.
        let real = now.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64 + 60_000;
        let d = Deadline::from_epoch_millis_at(real, now, instant);
        assert!(!d.is_none());
        assert!(!d.allows(Duration::from_secs(61)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_caps_waits_and_keeps_its_reserve() {
        let d = Deadline::after(Duration::from_secs(30));
        assert!(d.allows(Duration::from_secs(30)));
        assert!(!d.allows(Duration::from_secs(31)));
        assert_eq!(
            d.cap(Duration::from_secs(40), Duration::from_secs(10)),
            Duration::from_secs(20)
        );
        assert_eq!(
            d.cap(Duration::from_secs(5), Duration::from_secs(10)),
            Duration::from_secs(5)
        );
        tokio::time::advance(Duration::from_secs(35)).await;
        assert_eq!(d.remaining(), Some(Duration::ZERO));
        assert_eq!(
            d.cap(Duration::from_secs(5), Duration::from_secs(1)),
            Duration::ZERO
        );
        assert!(Deadline::NONE.allows(Duration::MAX));
        assert_eq!(
            Deadline::NONE.cap(Duration::from_secs(7), Duration::from_secs(1)),
            Duration::from_secs(7)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn lambda_milliseconds_become_an_instant_and_zero_means_none() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let at = Instant::now();
        let ms = 1_800_000_000_000 + 120_000;
        let d = Deadline::from_epoch_millis_at(ms, now, at);
        assert_eq!(d, Deadline::at(at + Duration::from_secs(120)));
        assert!(Deadline::from_epoch_millis_at(0, now, at).is_none());
        // Already passed: no time left, not a panic.
        let past = Deadline::from_epoch_millis_at(1_800_000_000_000 - 1_000, now, at);
        assert_eq!(past.remaining(), Some(Duration::ZERO));
    }
}
