//! The capture planner: when to poll the events feed next and how many pages to read, so that
//! every request returns as many new events as it can.
//!
//! Three things can bind, and the plan says which one did:
//! - the **budget**: the feed brings more events than the requests left until the reset can
//!   read. Every request then returns a full page of new events at best, and page 1 alone
//!   does it without overlap: pages 2 and 3 start with events page 1 already returned, because
//!   the feed moves between requests. So page 1 alone, spaced evenly over what is left of the
//!   window.
//! - **`X-Poll-Interval`**: more than a page arrives between two polls GitHub allows. Then
//!   pages 2 and 3 are worth their cost, and they are requested back to back.
//! - the **feed** itself: the budget could poll more often than a page fills. Then page 1
//!   alone, once about `fill` events have arrived (never later than `max_gap`).
//!
//! Until two polls have measured the feed's rate, and after a cycle that did not complete,
//! the plan keeps the older rules: walk up to `max_pages` to the first stored event.
//!
//! A rate measured by a walk that found no stored event is a lower bound: the feed fills a
//! page sooner than it says. Page 1 then goes out as soon as the interval and the budget
//! allow, and the page after an all-new page 1 only when the budget spares it easily (a
//! page past the bound may hold a handful of new events for a whole request).
//!
//! `X-Poll-Interval` and the events a page waits for count from the last poll's page 1, not
//! from the end of the cycle; the budget's share counts from now.
//!
//! `pages` are the pages expected to hold new events (requested without waiting for the one
//! before to be stored); `max_pages` bounds the walk, which goes past `pages` only while a
//! page is all new (what arrived did not fit) and only as far as the budget can spare beyond
//! what the plan's pace needs until the reset. When the budget binds it spares nothing: an
//! all-new page 1 then ends the cycle, as the events beyond it cost the same request as the
//! next poll's page 1 and would be partly the same events.
//!
//! Pure: no clock, no I/O.

use chrono::{DateTime, Utc};
use serde::Serialize;
use std::time::Duration;

/// New events per second the feed brought between two polls.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FeedRate {
    pub per_sec: f64,
    /// The walk found no stored event (every page it read was all new): the feed brought at
    /// least this much.
    pub at_least: bool,
}

/// The feed's rate after a poll: `new_events` arrived over `elapsed` (from the previous
/// poll's page 1 to this one's). `overlapped` = the walk reached an event stored before,
/// so everything that arrived was read. A lower bound never lowers an earlier estimate.
pub fn estimate_rate(
    previous: Option<FeedRate>,
    new_events: u64,
    elapsed: Duration,
    overlapped: bool,
) -> Option<FeedRate> {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        return previous;
    }
    let sample = new_events as f64 / secs;
    if overlapped {
        return Some(FeedRate {
            per_sec: sample,
            at_least: false,
        });
    }
    let per_sec = previous.map_or(sample, |p| p.per_sec.max(sample));
    Some(FeedRate {
        per_sec,
        at_least: true,
    })
}

#[derive(Debug, Clone)]
pub struct PlanInput {
    pub now: DateTime<Utc>,
    /// None until two polls have measured it.
    pub rate: Option<FeedRate>,
    /// GitHub's `X-Poll-Interval` (or the default before it said one).
    pub poll_interval: Duration,
    /// When the last poll's page 1 was answered (None: now). `X-Poll-Interval` and the
    /// events a page waits for count from there; the budget's share counts from `now`.
    pub last_poll_at: Option<DateTime<Utc>>,
    /// Requests ingest may still send before `reset_at`.
    pub budget_left: i32,
    /// When the budget's window resets; None or past = a fresh window.
    pub reset_at: Option<DateTime<Utc>>,
    /// The budget of a whole window and that window's length, when known: a feed that brings
    /// more than `limit` full pages in `window_len` binds the budget all window long.
    pub limit: Option<(i32, Duration)>,
    /// The longest window GitHub has (an hour): a reset announced further away is not paced
    /// on, only the last few requests are spread.
    pub window: Duration,
    /// The previous cycle started and did not complete.
    pub last_cycle_incomplete: bool,
    /// Pages the cycle that just ended read (a 304 is free). Until the rate is known, the
    /// next poll waits as many shares of the budget, as before the planner.
    pub pages_spent: u32,
    pub per_page: u32,
    /// The feed's cap in pages (3 × 100 = 300 events).
    pub max_pages: u32,
    /// New events a poll of page 1 alone aims at: a little under a page, so that a page
    /// rarely overflows into a request for the few events that did not fit.
    pub fill: u32,
    /// A poll paced on the feed waits no longer than this.
    pub max_gap: Duration,
}

/// What decided the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Binds {
    /// The rate is not measured yet: the older rules (walk to the first stored event).
    Unknown,
    /// The previous cycle did not complete: walk every page to the first stored event.
    Incomplete,
    /// Nothing left until the reset.
    Exhausted,
    /// More events arrive than the budget can read: page 1 alone, spread over the window.
    Budget,
    /// More than a page arrives per `X-Poll-Interval`: several pages back to back.
    Interval,
    /// The budget could poll more often than a page fills: page 1 alone once it is full.
    Feed,
}

impl Binds {
    pub fn as_str(self) -> &'static str {
        match self {
            Binds::Unknown => "unknown",
            Binds::Incomplete => "incomplete",
            Binds::Exhausted => "exhausted",
            Binds::Budget => "budget",
            Binds::Interval => "interval",
            Binds::Feed => "feed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Plan {
    /// Never sooner than `X-Poll-Interval` after the last poll's page 1, nor than the budget's
    /// share after `now`.
    pub next_poll_at: DateTime<Utc>,
    /// Pages expected to hold new events: requested back to back.
    pub pages: u32,
    /// The walk's bound: beyond `pages` only while a page is all new.
    pub max_pages: u32,
    pub binds: Binds,
}

/// The plan for the next cycle.
pub fn plan(input: &PlanInput) -> Plan {
    let p = Planner::new(input);
    if p.left == 0 {
        return p.exhausted();
    }
    match input.rate {
        Some(r) if !input.last_cycle_incomplete && r.per_sec.is_finite() => p.measured(r),
        _ => p.unmeasured(),
    }
}

/// The figures every branch of [`plan`] derives from its input.
struct Planner<'a> {
    input: &'a PlanInput,
    max_pages: u32,
    per_page: f64,
    /// New events page 1 alone aims at (≤ `per_page`).
    fill: f64,
    /// `X-Poll-Interval`, seconds.
    interval: f64,
    /// Requests left until the reset (≥ 0).
    left: i32,
    /// Time until the reset, when one is ahead.
    to_reset: Option<Duration>,
    /// Where `X-Poll-Interval` and the feed's arrivals count from: the last page 1.
    since: DateTime<Utc>,
    /// Seconds between two requests when what is left is spread evenly until the reset (the
    /// last one goes out before it); None when the budget is ample.
    spacing: Option<f64>,
    /// The rate is a lower bound (the last walk found no stored event).
    lower_bound: bool,
    /// Requests of a whole window, 0 when unknown.
    window_limit: f64,
}

impl<'a> Planner<'a> {
    fn new(input: &'a PlanInput) -> Self {
        let max_pages = input.max_pages.max(1);
        let left = input.budget_left.max(0);
        let to_reset = input
            .reset_at
            .filter(|r| *r > input.now)
            .map(|r| (r - input.now).to_std().unwrap_or_default());
        let spacing = match to_reset {
            Some(d) if d <= input.window => Some(d.as_secs_f64() / f64::from(left + 1)),
            Some(d) if left < 2 * i32::try_from(max_pages).unwrap_or(3) => {
                Some(d.as_secs_f64() / f64::from(left + 1))
            }
            _ => None,
        };
        Planner {
            input,
            max_pages,
            per_page: f64::from(input.per_page.max(1)),
            fill: f64::from(input.fill.clamp(1, input.per_page.max(1))),
            interval: input.poll_interval.as_secs_f64(),
            left,
            to_reset,
            // The budget's share counts from now; X-Poll-Interval and the feed's arrivals
            // count from the last page 1 (the time this cycle took after it is not added to
            // the wait).
            since: input
                .last_poll_at
                .filter(|t| *t <= input.now)
                .unwrap_or(input.now),
            spacing,
            lower_bound: input.rate.is_some_and(|r| r.at_least),
            window_limit: input
                .limit
                .map_or(0.0, |(limit, _)| f64::from(limit.max(0))),
        }
    }

    /// `budget_secs` after now, and no sooner than `feed_secs` (or `X-Poll-Interval`) after
    /// the last page 1.
    fn at(&self, budget_secs: f64, feed_secs: f64) -> DateTime<Utc> {
        (self.input.now + span(budget_secs)).max(self.since + span(feed_secs.max(self.interval)))
    }

    /// The budget's share of `pages` requests, seconds.
    fn budget_gap(&self, pages: u32) -> f64 {
        self.spacing.map_or(0.0, |s| s * f64::from(pages))
    }

    /// What the budget can spare beyond `need` requests a second until the reset. Past a
    /// lower bound's all-new page 1 the next page may hold a handful of new events for a
    /// whole request: it is read only when the budget spares it easily (a quarter beyond the
    /// pace and a quarter of a window), not with the few requests left over by rounding or at
    /// the end of a window.
    fn spare(&self, need: f64) -> u32 {
        match (self.to_reset, self.spacing) {
            (Some(d), Some(_)) => {
                let need = (d.as_secs_f64() * need).ceil();
                let spare = (f64::from(self.left) - need).max(0.0);
                if self.lower_bound && spare < (need / 4.0).max(self.window_limit / 4.0) {
                    0
                } else {
                    spare as u32
                }
            }
            _ => self.max_pages,
        }
    }

    /// The walk's bound: `pages`, and as many more as the budget spares, up to the feed's cap.
    fn walk(&self, pages: u32, spare: u32) -> u32 {
        pages.saturating_add(spare).clamp(pages, self.max_pages)
    }

    /// Nothing left: only the reset gives requests back.
    fn exhausted(&self) -> Plan {
        let next = self.to_reset.map_or(self.interval, |d| d.as_secs_f64());
        Plan {
            next_poll_at: self.at(next, 0.0),
            pages: 1,
            max_pages: self.max_pages,
            binds: Binds::Exhausted,
        }
    }

    /// No usable rate, or the last cycle did not complete: the older rules.
    fn unmeasured(&self) -> Plan {
        let incomplete = self.input.last_cycle_incomplete;
        Plan {
            next_poll_at: self.at(self.budget_gap(self.input.pages_spent), 0.0),
            pages: if incomplete { self.max_pages } else { 1 },
            max_pages: self.max_pages,
            binds: if incomplete {
                Binds::Incomplete
            } else {
                Binds::Unknown
            },
        }
    }

    fn measured(&self, rate: FeedRate) -> Plan {
        let per_sec = rate.per_sec.max(0.0);
        if self.binds_every_window(per_sec) {
            // Page 1 alone, and only once a full page has arrived. Requests this leaves
            // (X-Poll-Interval and the cycles' own time keep some from going out) stay with
            // enrichment rather than buy pages that start with events page 1 returned.
            let full_page = if per_sec > 0.0 {
                self.per_page / per_sec
            } else {
                0.0
            };
            return Plan {
                next_poll_at: self.at(self.budget_gap(1), full_page),
                pages: 1,
                max_pages: 1,
                binds: Binds::Budget,
            };
        }
        // Seconds for `fill` events to arrive.
        let max_gap = self.input.max_gap.as_secs_f64();
        let fills_in = if per_sec > 0.0 {
            (self.fill / per_sec).min(max_gap)
        } else {
            max_gap
        };
        if fills_in >= self.interval {
            self.page_one(rate, fills_in)
        } else {
            self.several_pages(per_sec)
        }
    }

    /// The budget cannot read this feed, window after window: more than `limit` requests'
    /// worth of full pages arrive in a window (counting no more than `max_pages` a poll and
    /// a poll per interval).
    fn binds_every_window(&self, per_sec: f64) -> bool {
        self.input.limit.is_some_and(|(limit, len)| {
            let len = len.as_secs_f64();
            let usable = (per_sec * len / self.per_page)
                .min(len / self.interval.max(1e-3) * f64::from(self.max_pages));
            limit > 0 && usable > f64::from(limit)
        })
    }

    /// A page fills no faster than GitHub lets us poll: page 1 alone, when it is full or when
    /// the budget's share allows, whichever is later.
    fn page_one(&self, rate: FeedRate, fills_in: f64) -> Plan {
        let budget = self.budget_gap(1);
        // A lower bound fills a page later than the feed does: waiting for it would keep the
        // polls late and the bound where it is. Page 1 as soon as allowed instead; the next
        // poll measures more.
        let fills_in = if rate.at_least {
            self.interval.min(fills_in)
        } else {
            fills_in
        };
        let (gap, binds) = if budget > fills_in {
            (budget, Binds::Budget)
        } else {
            (fills_in, Binds::Feed)
        };
        let gap = gap.max(self.interval);
        let spare = if binds == Binds::Budget {
            0
        } else {
            self.spare(1.0 / gap)
        };
        Plan {
            next_poll_at: self.at(budget, fills_in),
            pages: 1,
            max_pages: self.walk(1, spare),
            binds,
        }
    }

    /// More than a page arrives per interval: the pages that hold it, as far as the budget
    /// lets every interval have them.
    fn several_pages(&self, per_sec: f64) -> Plan {
        let wanted =
            ((per_sec * self.interval / self.per_page).ceil() as u32).clamp(1, self.max_pages);
        let affordable = match self.spacing {
            // (A hair of tolerance: 1 / (1/3) is not always 3 in floating point.)
            Some(s) if s > 0.0 => (self.interval / s + 1e-9).floor().max(1.0) as u32,
            _ => self.max_pages,
        };
        if wanted <= affordable {
            let gap = self.interval.max(self.budget_gap(wanted));
            return Plan {
                next_poll_at: self.at(self.budget_gap(wanted), 0.0),
                pages: wanted,
                max_pages: self.walk(wanted, self.spare(f64::from(wanted) / gap)),
                binds: Binds::Interval,
            };
        }
        // Both bind, the budget more: as many pages as it affords per interval, nothing spare.
        let pages = affordable.min(self.max_pages);
        Plan {
            next_poll_at: self.at(self.budget_gap(pages), 0.0),
            pages,
            max_pages: pages,
            binds: Binds::Budget,
        }
    }
}

/// Seconds as a chrono duration, within [0, 1 h].
fn span(secs: f64) -> chrono::Duration {
    chrono::Duration::from_std(Duration::from_secs_f64(secs.clamp(0.0, 3600.0)))
        .unwrap_or_else(|_| chrono::Duration::seconds(3600))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
    }

    fn secs(s: f64) -> DateTime<Utc> {
        t0() + chrono::Duration::milliseconds((s * 1000.0).round() as i64)
    }

    fn rate(per_sec: f64) -> Option<FeedRate> {
        Some(FeedRate {
            per_sec,
            at_least: false,
        })
    }

    /// Anonymous: 60 requests a minute window, X-Poll-Interval 1 s, a fresh window.
    fn anonymous(r: Option<FeedRate>) -> PlanInput {
        PlanInput {
            now: t0(),
            rate: r,
            poll_interval: Duration::from_secs(1),
            last_poll_at: None,
            budget_left: 59,
            reset_at: Some(secs(60.0)),
            limit: Some((60, Duration::from_secs(60))),
            window: Duration::from_secs(3600),
            last_cycle_incomplete: false,
            pages_spent: 1,
            per_page: 100,
            max_pages: 3,
            fill: 95,
            max_gap: Duration::from_secs(300),
        }
    }

    /// A token: 4990 requests left in the hour, X-Poll-Interval 60 s.
    fn token(r: Option<FeedRate>) -> PlanInput {
        PlanInput {
            poll_interval: Duration::from_secs(60),
            budget_left: 4990,
            reset_at: Some(secs(3600.0)),
            limit: Some((5000, Duration::from_secs(3600))),
            ..anonymous(r)
        }
    }

    struct Case {
        name: &'static str,
        input: PlanInput,
        next_in_secs: f64,
        pages: u32,
        max_pages: u32,
        binds: Binds,
    }

    #[test]
    fn the_table() {
        let cases = [
            Case {
                // 120 events/s, 60 requests a minute: 7,200 events, room for 6,000.
                name: "budget binds: page 1 alone, spread, no page beyond it",
                input: anonymous(rate(120.0)),
                next_in_secs: 1.0,
                pages: 1,
                max_pages: 1,
                binds: Binds::Budget,
            },
            Case {
                name: "budget binds with 30 left for 60 s: every 1.94 s, page 1 alone",
                input: PlanInput {
                    budget_left: 30,
                    ..anonymous(rate(300.0))
                },
                next_in_secs: 60.0 / 31.0,
                pages: 1,
                max_pages: 1,
                binds: Binds::Budget,
            },
            Case {
                name: "a lower bound that already binds the budget binds it",
                input: anonymous(Some(FeedRate {
                    per_sec: 110.0,
                    at_least: true,
                })),
                next_in_secs: 1.0,
                pages: 1,
                max_pages: 1,
                binds: Binds::Budget,
            },
            Case {
                // 120 events/s, but 20 left for the last 10 s: the window's leftovers buy
                // full pages of page 1, never a page 2 that starts with page 1's events.
                name: "budget binds window after window: leftovers do not buy page 2",
                input: PlanInput {
                    budget_left: 20,
                    reset_at: Some(secs(10.0)),
                    ..anonymous(rate(120.0))
                },
                next_in_secs: 1.0,
                pages: 1,
                max_pages: 1,
                binds: Binds::Budget,
            },
            Case {
                // 3 events/s: 180 a minute; GitHub allows a poll a minute; the token affords 3.
                name: "interval binds: two pages back to back, a third if page 2 is all new",
                input: token(rate(3.0)),
                next_in_secs: 60.0,
                pages: 2,
                max_pages: 3,
                binds: Binds::Interval,
            },
            Case {
                name: "interval binds beyond the feed's cap: three pages",
                input: token(rate(300.0)),
                next_in_secs: 60.0,
                pages: 3,
                max_pages: 3,
                binds: Binds::Interval,
            },
            Case {
                // 300 events/s, X-Poll-Interval 60 s, 60 requests an hour: one a minute.
                name: "interval and budget both bind: what the budget affords, nothing spare",
                input: PlanInput {
                    budget_left: 59,
                    reset_at: Some(secs(3600.0)),
                    ..token(rate(300.0))
                },
                next_in_secs: 60.0,
                pages: 1,
                max_pages: 1,
                binds: Binds::Budget,
            },
            Case {
                name: "both bind, two pages affordable per interval",
                input: PlanInput {
                    budget_left: 119,
                    reset_at: Some(secs(3600.0)),
                    ..token(rate(300.0))
                },
                next_in_secs: 60.0,
                pages: 2,
                max_pages: 2,
                binds: Binds::Budget,
            },
            Case {
                // 50 events/s: a page in 1.9 s; the budget could poll every second.
                name: "feed binds: page 1 alone once ~95 events arrived, spare for overflow",
                input: anonymous(rate(50.0)),
                next_in_secs: 1.9,
                pages: 1,
                max_pages: 3,
                binds: Binds::Feed,
            },
            Case {
                name: "quiet feed with a token: page 1 alone when a page is due",
                input: token(rate(0.5)),
                next_in_secs: 190.0,
                pages: 1,
                max_pages: 3,
                binds: Binds::Feed,
            },
            Case {
                // 84 events/s at least, measured by a walk that found no stored event. The
                // bound's page would fill in 1.07 s; the feed fills it sooner.
                name: "a lower bound under the budget's pace: page 1 as soon as allowed, alone",
                input: PlanInput {
                    budget_left: 59,
                    reset_at: Some(secs(60.0)),
                    ..anonymous(Some(FeedRate {
                        per_sec: 84.0,
                        at_least: true,
                    }))
                },
                next_in_secs: 1.0,
                pages: 1,
                max_pages: 1,
                binds: Binds::Feed,
            },
            Case {
                name: "a lower bound with an ample budget: page 2 if page 1 is all new",
                input: token(Some(FeedRate {
                    per_sec: 1.0,
                    at_least: true,
                })),
                next_in_secs: 60.0,
                pages: 1,
                max_pages: 3,
                binds: Binds::Feed,
            },
            Case {
                // 59 left for 55 s at a poll a second: 4 over the pace, under a quarter of it.
                name: "a lower bound, the budget a little ahead of the pace: no page 2",
                input: PlanInput {
                    budget_left: 59,
                    reset_at: Some(secs(55.0)),
                    ..anonymous(Some(FeedRate {
                        per_sec: 99.0,
                        at_least: true,
                    }))
                },
                next_in_secs: 1.0,
                pages: 1,
                max_pages: 1,
                binds: Binds::Interval,
            },
            Case {
                name: "the same with a measured rate: the leftovers read an overflow",
                input: PlanInput {
                    budget_left: 59,
                    reset_at: Some(secs(55.0)),
                    ..anonymous(rate(99.0))
                },
                next_in_secs: 1.0,
                pages: 1,
                max_pages: 3,
                binds: Binds::Interval,
            },
            Case {
                // The cycle took 0.4 s after its page 1: the wait is not 0.4 s longer.
                name: "X-Poll-Interval counts from the last page 1",
                input: PlanInput {
                    last_poll_at: Some(secs(-0.4)),
                    ..token(rate(300.0))
                },
                next_in_secs: 59.6,
                pages: 3,
                max_pages: 3,
                binds: Binds::Interval,
            },
            Case {
                name: "so do the events a page waits for",
                input: PlanInput {
                    last_poll_at: Some(secs(-0.2)),
                    ..anonymous(rate(50.0))
                },
                next_in_secs: 1.7,
                pages: 1,
                max_pages: 3,
                binds: Binds::Feed,
            },
            Case {
                // 30 left for 60 s: a share is 1.94 s from now, whenever page 1 was.
                name: "the budget's share counts from now",
                input: PlanInput {
                    budget_left: 30,
                    last_poll_at: Some(secs(-0.5)),
                    ..anonymous(rate(300.0))
                },
                next_in_secs: 60.0 / 31.0,
                pages: 1,
                max_pages: 1,
                binds: Binds::Budget,
            },
            Case {
                name: "a feed that brought nothing waits max_gap",
                input: token(rate(0.0)),
                next_in_secs: 300.0,
                pages: 1,
                max_pages: 3,
                binds: Binds::Feed,
            },
            Case {
                name: "unknown rate: the older rules, a share of the budget per page read",
                input: PlanInput {
                    pages_spent: 3,
                    ..anonymous(None)
                },
                next_in_secs: 3.0,
                pages: 1,
                max_pages: 3,
                binds: Binds::Unknown,
            },
            Case {
                name: "unknown rate, ample budget: X-Poll-Interval",
                input: token(None),
                next_in_secs: 60.0,
                pages: 1,
                max_pages: 3,
                binds: Binds::Unknown,
            },
            Case {
                name: "incomplete last cycle: every page, whatever the rate says",
                input: PlanInput {
                    last_cycle_incomplete: true,
                    pages_spent: 3,
                    ..anonymous(rate(120.0))
                },
                next_in_secs: 3.0,
                pages: 3,
                max_pages: 3,
                binds: Binds::Incomplete,
            },
            Case {
                // 2 s to the reset, 1 left: it goes out in a second, page 1 alone.
                name: "reset imminent, one left: page 1 alone",
                input: PlanInput {
                    budget_left: 1,
                    reset_at: Some(secs(2.0)),
                    ..anonymous(rate(120.0))
                },
                next_in_secs: 1.0,
                pages: 1,
                max_pages: 1,
                binds: Binds::Budget,
            },
            Case {
                name: "exhausted: the reset",
                input: PlanInput {
                    budget_left: 0,
                    reset_at: Some(secs(42.0)),
                    ..anonymous(rate(120.0))
                },
                next_in_secs: 42.0,
                pages: 1,
                max_pages: 3,
                binds: Binds::Exhausted,
            },
            Case {
                name: "exhausted, reset sooner than X-Poll-Interval: the interval",
                input: PlanInput {
                    budget_left: 0,
                    reset_at: Some(secs(0.5)),
                    ..anonymous(rate(120.0))
                },
                next_in_secs: 1.0,
                pages: 1,
                max_pages: 3,
                binds: Binds::Exhausted,
            },
            Case {
                name: "a reset beyond any window with plenty left: not paced on",
                input: PlanInput {
                    reset_at: Some(secs(200_000.0)),
                    ..anonymous(None)
                },
                next_in_secs: 1.0,
                pages: 1,
                max_pages: 3,
                binds: Binds::Unknown,
            },
        ];
        let mut failures = Vec::new();
        for c in &cases {
            let p = plan(&c.input);
            let got = (
                (p.next_poll_at - t0()).num_milliseconds(),
                p.pages,
                p.max_pages,
                p.binds,
            );
            let want = (
                (c.next_in_secs * 1000.0).round() as i64,
                c.pages,
                c.max_pages,
                c.binds,
            );
            if got != want {
                failures.push(format!("{}: got {got:?}, want {want:?}", c.name));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn never_sooner_than_the_interval_nor_more_than_the_budget() {
        for (per_sec, at_least) in [0.0, 0.1, 1.0, 10.0, 50.0, 99.0, 120.0, 300.0, 5000.0]
            .into_iter()
            .flat_map(|r| [(r, false), (r, true)])
        {
            for left in [1, 2, 5, 30, 59, 4990] {
                for reset in [0.5, 2.0, 60.0, 3600.0] {
                    for interval in [1, 2, 60] {
                        let input = PlanInput {
                            budget_left: left,
                            reset_at: Some(secs(reset)),
                            poll_interval: Duration::from_secs(interval),
                            ..anonymous(Some(FeedRate { per_sec, at_least }))
                        };
                        let p = plan(&input);
                        let gap = (p.next_poll_at - t0()).to_std().unwrap().as_secs_f64();
                        assert!(gap >= interval as f64, "{input:?} → {p:?}");
                        // From an earlier page 1: never sooner than the interval after it.
                        let earlier = plan(&PlanInput {
                            last_poll_at: Some(secs(-0.3)),
                            ..input.clone()
                        });
                        let since = (earlier.next_poll_at - secs(-0.3)).to_std().unwrap();
                        assert!(
                            since.as_secs_f64() >= interval as f64,
                            "{input:?} → {earlier:?}"
                        );
                        assert!(earlier.next_poll_at <= p.next_poll_at);
                        assert!(p.pages >= 1 && p.pages <= p.max_pages && p.max_pages <= 3);
                        // Polls of `pages` every `gap` before the reset fit in what is left.
                        // (next_poll_at is whole nanoseconds: a hair of tolerance.)
                        let polls = (reset / gap - 1e-6).floor().max(0.0);
                        assert!(
                            polls * f64::from(p.pages) <= f64::from(left),
                            "{input:?} → {p:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_rate_is_what_arrived_over_the_time_between_polls() {
        let r = estimate_rate(None, 100, Duration::from_secs(2), true).unwrap();
        assert_eq!((r.per_sec, r.at_least), (50.0, false));
        // All new: at least that much, and never below what was measured before.
        let low = estimate_rate(rate(120.0), 100, Duration::from_secs(1), false).unwrap();
        assert_eq!((low.per_sec, low.at_least), (120.0, true));
        let high = estimate_rate(rate(50.0), 300, Duration::from_secs(2), false).unwrap();
        assert_eq!((high.per_sec, high.at_least), (150.0, true));
        // An overlap measures it exactly, also downwards.
        let down = estimate_rate(rate(120.0), 10, Duration::from_secs(2), true).unwrap();
        assert_eq!((down.per_sec, down.at_least), (5.0, false));
        assert_eq!(estimate_rate(rate(7.0), 5, Duration::ZERO, true), rate(7.0));
    }
}
