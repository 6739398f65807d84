//! Whether GitHub answers, across the cycles of `ghevents run`: the first cycle that cannot
//! connect is said once (a WARN with the URL, the error and the next try), the cycles after it
//! quietly, and the first one that connects again once more.

use chrono::{DateTime, Utc};

/// What changed with this cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Unreachable now, reachable (or unknown) before: say it.
    WentDown,
    /// Unreachable before and now: already said.
    StillDown,
    /// Reachable again after being unreachable since that time: say it.
    CameBack { since: DateTime<Utc> },
    /// Reachable, as before.
    Up,
}

#[derive(Debug, Default)]
pub struct Reachability {
    down_since: Option<DateTime<Utc>>,
}

impl Reachability {
    /// Records a cycle's result: `unreachable` when no connection could be made. A cycle that
    /// failed for another reason (a 5xx, the database) did reach GitHub, or says nothing
    /// about it: only `unreachable == false` after a success or an answer ends the outage.
    pub fn observe(&mut self, unreachable: bool, now: DateTime<Utc>) -> Change {
        match (self.down_since, unreachable) {
            (None, true) => {
                self.down_since = Some(now);
                Change::WentDown
            }
            (Some(_), true) => Change::StillDown,
            (Some(since), false) => {
                self.down_since = None;
                Change::CameBack { since }
            }
            (None, false) => Change::Up,
        }
    }
}

/// An error and its causes on one line, each cause only when the text so far does not hold
/// it already ("error sending request for url (…): client error (Connect): tcp connect
/// error: Connection refused (os error 111)").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let s = c.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn an_outage_is_said_once_when_it_starts_and_once_when_it_ends() {
        let t = |s: i64| Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap();
        let mut r = Reachability::default();
        assert_eq!(r.observe(false, t(0)), Change::Up);
        assert_eq!(r.observe(true, t(60)), Change::WentDown);
        assert_eq!(r.observe(true, t(120)), Change::StillDown);
        assert_eq!(r.observe(true, t(180)), Change::StillDown);
        assert_eq!(r.observe(false, t(240)), Change::CameBack { since: t(60) });
        assert_eq!(r.observe(false, t(300)), Change::Up);
        assert_eq!(r.observe(true, t(360)), Change::WentDown);
    }
}
