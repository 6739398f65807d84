//! Time as a parameter: the core never reads the wall clock directly, so tests can pause or
//! drive it.

use chrono::{DateTime, Utc};
use std::time::Duration;

/// A source of "now" and a way to wait.
#[async_trait::async_trait]
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
    async fn sleep(&self, d: Duration);
}

/// The wall clock: `Utc::now()`, and tokio's timer for waits. Time is always read afresh, so
/// it stays right across a frozen Lambda container or a suspended laptop.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

#[async_trait::async_trait]
impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
    async fn sleep(&self, d: Duration) {
        tokio::time::sleep(d).await
    }
}

/// Waits `d` on `clock`, or until `stop` is set. Returns `true` when stopped.
pub async fn sleep_or_stop(
    clock: &dyn Clock,
    d: Duration,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> bool {
    let stopped = tokio::select! {
        _ = clock.sleep(d) => false,
        _ = stop.wait_for(|s| *s) => true,
    };
    stopped || *stop.borrow()
}

#[cfg(any(test, feature = "mocks"))]
pub use fake::ManualClock;

#[cfg(any(test, feature = "mocks"))]
mod fake {
    use super::Clock;
    use chrono::{DateTime, Utc};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    /// A clock that only moves when told to; `sleep` advances it instantly.
    #[derive(Clone, Debug)]
    pub struct ManualClock(Arc<Mutex<DateTime<Utc>>>);

    impl ManualClock {
        pub fn at(t: DateTime<Utc>) -> Self {
            Self(Arc::new(Mutex::new(t)))
        }
        pub fn advance(&self, d: Duration) {
            let mut t = self.0.lock().expect("clock lock");
            *t += chrono::Duration::from_std(d).expect("duration in range");
        }
        pub fn set(&self, to: DateTime<Utc>) {
            *self.0.lock().expect("clock lock") = to;
        }
    }

    #[async_trait::async_trait]
    impl Clock for ManualClock {
        fn now(&self) -> DateTime<Utc> {
            *self.0.lock().expect("clock lock")
        }
        async fn sleep(&self, d: Duration) {
            self.advance(d);
            tokio::task::yield_now().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn manual_clock_moves_only_when_told() {
        let t0 = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .to_utc();
        let clock = ManualClock::at(t0);
        assert_eq!(clock.now(), t0);
        clock.sleep(Duration::from_secs(5)).await;
        assert_eq!((clock.now() - t0).num_seconds(), 5);
    }
}
