//! One poll cycle of the public events feed: fetch → store raw → parse PushEvents → store
//! push_events, one transaction per page, and a summary of what it did.
//!
//! Rules it keeps:
//! - `/events` is never polled before `next_poll_at`, which the capture planner
//!   (`crate::plan`) sets: never sooner than GitHub's `X-Poll-Interval`, page 1 alone when the
//!   budget binds, several pages back to back only when the interval does;
//! - page 1 is conditional on the stored ETag; a 304 ends the cycle;
//! - pages follow `Link: rel="next"` up to the plan's bound, and stop at the first page
//!   holding an event already stored, unless the previous cycle did not complete (then a
//!   stored event proves nothing about the pages after it);
//! - the ETag is kept only when the whole cycle completed;
//! - one cycle per feed at a time across processes (advisory lock);
//! - under a deadline (a Lambda invocation), a page is only started while the margin is left,
//!   and a request cut by the deadline ends the cycle as `deadline_reached` (incomplete, its
//!   stored pages kept, the next cycle walks on).

use crate::budget::Purpose;
use crate::clock::{sleep_or_stop, Clock};
use crate::deadline::Deadline;
use crate::event::{parse_event, Parsed};
use crate::github::{Fetched, GithubClient, GithubError};
use crate::plan::{self, Binds, FeedRate, Plan, PlanInput};
use crate::queue::PushQueue;
use crate::raw::{Page, RawStore, RawStoreError};
use crate::store::{
    self, AdvisoryLock, CycleEnd, EventInsert, PgBudget, PollState, Source, StoreError, EVENTS_FEED,
};
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde::Serialize;
use serde_json::value::RawValue;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, info, warn};

#[derive(Debug, Clone)]
pub struct IngestOptions {
    pub per_page: u32,
    /// GitHub shows at most 300 events: 3 pages of 100.
    pub max_pages: u32,
    /// Used until GitHub has sent an `X-Poll-Interval`.
    pub default_poll_interval: Duration,
    /// Spread the remaining budget until the window resets (never polls sooner than
    /// `X-Poll-Interval` either way).
    pub pace_to_budget: bool,
    /// The longest rate-limit window GitHub has (an hour): a reset announced further away is
    /// not paced on, only the last few requests are spread.
    pub rate_window: Duration,
    /// New events a poll of page 1 alone aims at (a little under a page; see `crate::plan`).
    pub fill: u32,
    /// A poll paced on a quiet feed waits no longer than this.
    pub max_poll_gap: Duration,
    /// Under a deadline, the time that must be left to start a page. `None`: the GitHub
    /// client's deadline reserve plus its longest attempt (10 s + 40 s by default).
    pub deadline_margin: Option<Duration>,
}

impl Default for IngestOptions {
    fn default() -> Self {
        Self {
            per_page: 100,
            max_pages: 3,
            default_poll_interval: Duration::from_secs(60),
            pace_to_budget: true,
            rate_window: Duration::from_secs(3600),
            fill: 90,
            max_poll_gap: Duration::from_secs(300),
            deadline_margin: None,
        }
    }
}

/// How a cycle ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Pages fetched and stored.
    Completed,
    /// 304 on page 1: nothing new.
    NotModified,
    /// `next_poll_at` not reached: no request sent.
    NotDue,
    /// Another process is polling this feed right now.
    Busy,
    /// The budget (or GitHub) said wait: the cycle ended cleanly before or after some pages.
    RateLimited,
    /// A page could not be fetched or stored; pages before it are kept.
    Failed,
    /// The invocation's deadline came too close: the cycle ended, incomplete, after the pages
    /// it stored.
    DeadlineReached,
}

#[derive(Debug, Clone, Serialize)]
pub struct CycleSummary {
    pub outcome: Outcome,
    pub requests: u64,
    pub not_modified: u64,
    pub pages: u32,
    pub events_fetched: u64,
    pub new_events: u64,
    pub duplicates: u64,
    pub new_push_events: u64,
    pub parse_failures: u64,
    /// Items of a page without a usable id (nothing to store them under).
    pub rejected: u64,
    pub rate_limit: Option<i32>,
    pub rate_remaining: Option<i32>,
    pub rate_reset: Option<DateTime<Utc>>,
    pub next_poll_at: Option<DateTime<Utc>>,
    /// For `RateLimited` and `NotDue`: when a request may go out again.
    pub resume_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    pub error_code: Option<String>,
    /// What bound this cycle's plan, and the pages it expected to hold new events.
    pub binds: Option<Binds>,
    pub planned_pages: u32,
    /// The feed's rate after this cycle (see `crate::plan`).
    pub feed_rate: Option<FeedRate>,
    /// The walk completed, read its last page and met no event stored before this cycle,
    /// after an earlier cycle had read the feed: events older than its last page may have
    /// left the feed unseen (recorded in `poll_cycles`).
    pub gap_suspected: bool,
    /// The newest `created_at` among the events this cycle fetched.
    pub newest_created_at: Option<DateTime<Utc>>,
    /// Wall time the cycle took, lock and plan included.
    pub duration_ms: u64,
    /// Push ids stored by this cycle, handed to the queue when there is one.
    #[serde(skip)]
    pub new_push_ids: Vec<i64>,
}

impl CycleSummary {
    /// An empty summary with this outcome.
    pub fn new(outcome: Outcome) -> Self {
        Self {
            outcome,
            requests: 0,
            not_modified: 0,
            pages: 0,
            events_fetched: 0,
            new_events: 0,
            duplicates: 0,
            new_push_events: 0,
            parse_failures: 0,
            rejected: 0,
            rate_limit: None,
            rate_remaining: None,
            rate_reset: None,
            next_poll_at: None,
            resume_at: None,
            error: None,
            error_code: None,
            binds: None,
            planned_pages: 0,
            feed_rate: None,
            gap_suspected: false,
            newest_created_at: None,
            duration_ms: 0,
            new_push_ids: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Github(#[from] GithubError),
    #[error("page {page} of {feed} is not a JSON array of events ({reason}); nothing from it was stored")]
    MalformedPage {
        feed: String,
        page: u32,
        reason: String,
    },
    #[error(transparent)]
    Raw(#[from] RawStoreError),
}

impl IngestError {
    /// Whether a later cycle can do better than this one did.
    pub fn is_retryable(&self) -> bool {
        match self {
            IngestError::Store(s) => s.is_retryable(),
            IngestError::Github(g) => g.is_retryable(),
            // GitHub sent a broken page; the next poll gets a new one.
            IngestError::MalformedPage { .. } => true,
            IngestError::Raw(r) => r.retryable,
        }
    }

    /// Whether GitHub could not be reached at all (see [`GithubError::is_unreachable`]).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, IngestError::Github(g) if g.is_unreachable())
    }

    pub fn code(&self) -> &'static str {
        match self {
            IngestError::Store(_) => "store",
            IngestError::Github(e) => e.code(),
            IngestError::MalformedPage { .. } => "malformed_page",
            IngestError::Raw(_) => "raw_store",
        }
    }
}

pub struct Ingestor {
    /// Set to stop after the page in hand (Ctrl-C, Lambda shutdown).
    pub stop: tokio::sync::watch::Receiver<bool>,
    pub pool: Pool,
    pub github: Arc<GithubClient>,
    pub budget: Arc<PgBudget>,
    pub clock: Arc<dyn Clock>,
    pub raw: Arc<dyn RawStore>,
    pub queue: Option<Arc<dyn PushQueue>>,
    pub options: IngestOptions,
}

impl Ingestor {
    /// Runs one cycle. Rate limits and "not due yet" are successful outcomes; a failed page
    /// is an error (the summary is recorded in `poll_state` either way).
    pub async fn run_cycle(&self) -> Result<CycleSummary, IngestError> {
        self.run_cycle_before(Deadline::NONE).await
    }

    /// [`Ingestor::run_cycle`] that ends before `deadline` (see [`IngestOptions::deadline_margin`]).
    pub async fn run_cycle_before(&self, deadline: Deadline) -> Result<CycleSummary, IngestError> {
        let started = std::time::Instant::now();
        let feed = EVENTS_FEED;
        let Some(lock) = AdvisoryLock::try_feed(&self.pool, feed).await? else {
            info!(feed, "another process is polling this feed; nothing to do");
            return Ok(CycleSummary::new(Outcome::Busy));
        };
        let result = self.cycle_locked(feed, deadline).await;
        lock.release().await?;
        result.map(|mut s| {
            s.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            s
        })
    }

    /// One cycle: plan → fetch and store → record.
    async fn cycle_locked(
        &self,
        feed: &str,
        deadline: Deadline,
    ) -> Result<CycleSummary, IngestError> {
        let now = self.clock.now();
        let state = PollState::load(&self.pool, feed).await?;
        if let Some(due) = state.next_poll_at.filter(|d| *d > now) {
            let mut s = CycleSummary::new(Outcome::NotDue);
            s.resume_at = Some(due);
            s.next_poll_at = Some(due);
            info!(feed, resume_at = %due, "not due yet (X-Poll-Interval); no request sent");
            return Ok(s);
        }
        let incomplete = state.previous_cycle_incomplete();
        if incomplete {
            warn!(
                feed,
                "previous cycle did not complete: walking every page without the ETag"
            );
        }
        let plan = self
            .plan(
                state.feed_rate,
                state.poll_interval_secs,
                incomplete,
                0,
                true,
                None,
            )
            .await;
        let walk = self.walk(feed, &state, &plan, incomplete, deadline).await?;
        self.record(feed, &state, walk, now).await
    }

    /// The plan from the feed's measured rate, the budget left and `X-Poll-Interval`.
    async fn plan(
        &self,
        rate: Option<FeedRate>,
        poll_interval_secs: Option<i32>,
        incomplete: bool,
        pages_spent: u32,
        fresh_window_is_long: bool,
        last_poll_at: Option<DateTime<Utc>>,
    ) -> Plan {
        let now = self.clock.now();
        let (budget_left, reset_at, limit) = if self.options.pace_to_budget {
            match self.budget.snapshot(now).await {
                Ok(b) => {
                    let reset = b.reset_at.filter(|r| *r > now);
                    // A window no answer has described yet: until page 1's headers say when
                    // it resets, its pages are planned as if it lasted the longest window.
                    let reset = match reset {
                        None if fresh_window_is_long => {
                            chrono::Duration::from_std(self.options.rate_window)
                                .ok()
                                .and_then(|w| now.checked_add_signed(w))
                        }
                        r => r,
                    };
                    // A whole window: its limit and its length (the longest one until the
                    // window's start and end are known).
                    let len = match (b.reset_at, b.window_started_at) {
                        (Some(r), Some(s)) if r > s => (r - s).to_std().ok(),
                        _ => None,
                    }
                    .unwrap_or(self.options.rate_window);
                    (
                        b.available(Purpose::Ingest, 0, now),
                        reset,
                        Some((b.limit, len)),
                    )
                }
                Err(e) => {
                    // Without the budget the plan cannot pace on it; the budget itself still
                    // refuses what it does not have.
                    warn!(error = %e, "budget unreadable: planning as if it were ample");
                    (i32::MAX, None, None)
                }
            }
        } else {
            (i32::MAX, None, None)
        };
        plan::plan(&PlanInput {
            now,
            rate,
            poll_interval: poll_interval_secs.map_or(self.options.default_poll_interval, |s| {
                Duration::from_secs(s.max(0) as u64)
            }),
            last_poll_at,
            budget_left,
            reset_at,
            limit,
            window: self.options.rate_window,
            last_cycle_incomplete: incomplete,
            pages_spent,
            per_page: self.options.per_page,
            max_pages: self.options.max_pages,
            fill: self.options.fill,
            max_gap: self.options.max_poll_gap,
        })
    }

    /// Fetches, then stores, pages as the plan says: page 1 (conditional on the ETag unless the
    /// last cycle did not complete), then the pages the plan expects to hold new events, each
    /// requested as soon as the page before it gives its `Link`; then, while a page holds no
    /// event stored before this cycle (or the last cycle did not complete), the next one, up
    /// to the plan's bound. No request waits for a page to be stored; the pages are stored in
    /// order once the last is in hand.
    async fn walk(
        &self,
        feed: &str,
        state: &PollState,
        plan: &Plan,
        incomplete: bool,
        deadline: Deadline,
    ) -> Result<Walk, IngestError> {
        let margin = self
            .options
            .deadline_margin
            .unwrap_or_else(|| self.github.deadline_reserve() + self.github.attempt_timeout());
        let started = self.clock.now();
        let requests_before = self.github.requests_sent();
        let cycle_label = started.format("%Y%m%dT%H%M%S%.3fZ").to_string();
        let bound = plan.max_pages.clamp(1, self.options.max_pages.max(1));
        let mut w = Walk {
            summary: CycleSummary::new(Outcome::Completed),
            poll_interval: state
                .poll_interval_secs
                .map(|s| Duration::from_secs(s.max(0) as u64)),
            new_etag: None,
            completed: true,
            error: None,
            overlapped: false,
            page1_at: None,
        };
        w.summary.binds = Some(plan.binds);
        w.summary.planned_pages = plan.pages;

        // Pages are all requested before any is stored, each as soon as the one before it
        // has given its `Link`: the feed moves on between two requests, and every event it
        // brings meanwhile pushes one that the page before returned onto the next page.
        let mut fetched: Vec<(u32, bytes::Bytes)> = Vec::new();
        let mut fetched_ids: HashSet<i64> = HashSet::new();
        let mut target = format!("/events?per_page={}", self.options.per_page);
        for page in 1..=bound {
            if page > 1 && *self.stop.borrow() {
                info!(
                    feed,
                    page, "stop requested: ending the cycle after the page in hand"
                );
                w.completed = false;
                break;
            }
            if !deadline.allows(margin) {
                info!(
                    feed,
                    page,
                    left_ms = deadline.remaining().unwrap_or_default().as_millis() as u64,
                    "deadline near: ending the cycle before this page"
                );
                w.summary.outcome = Outcome::DeadlineReached;
                w.completed = false;
                break;
            }
            let etag = if page == 1 && !incomplete {
                state.etag.as_deref()
            } else {
                None
            };
            let answer = self
                .github
                .get_before(&target, etag, Purpose::Ingest, deadline)
                .await;
            let Some((body, next)) = w.accept(feed, page, &target, answer) else {
                break;
            };
            let items: Vec<&RawValue> = match serde_json::from_slice(&body) {
                Ok(items) => items,
                Err(e) => {
                    w.fail(IngestError::MalformedPage {
                        feed: feed.into(),
                        page,
                        reason: e.to_string(),
                    });
                    break;
                }
            };
            w.summary.pages += 1;
            w.summary.events_fetched += items.len() as u64;
            if page == 1 {
                w.page1_at = Some(self.clock.now());
            }
            let ids = event_ids(&items);
            let next = next.filter(|_| !items.is_empty() && page < bound);
            // The next page: when the plan expects it to hold new events, when the last
            // cycle did not complete, or when this page holds no event stored before (a
            // look-up, not a whole page's store).
            let go_on = match next {
                None => false,
                Some(_) if page < plan.pages || incomplete => true,
                Some(_) => !self.holds_stored_event(&ids, &fetched_ids).await,
            };
            fetched_ids.extend(ids);
            drop(items);
            fetched.push((page, body));
            match next.filter(|_| go_on) {
                Some(n) => target = n,
                None => break,
            }
        }

        // The frontier is an event stored before this cycle. Events this cycle stored itself
        // show up again on the next page when the feed moves on between two requests; they
        // say nothing about older pages.
        if let Some(at) = w.page1_at {
            // From here until the cycle completes, a crash leaves it incomplete. (Written once
            // the pages are in hand: nothing is stored before, and no request waits for it.)
            PollState::mark_started(&self.pool, feed, at).await?;
        }
        let mut this_cycle: HashSet<i64> = HashSet::new();
        for (page, body) in &fetched {
            // Parsed once already: the same bytes parse again.
            let items: Vec<&RawValue> = serde_json::from_slice(body).unwrap_or_default();
            match self
                .store_page(&items, *page, &cycle_label, &mut w.summary)
                .await
            {
                Ok(stored) => {
                    w.overlapped |= stored
                        .duplicate_ids
                        .iter()
                        .any(|id| !this_cycle.contains(id));
                    this_cycle.extend(stored.page_ids);
                }
                Err(e) => {
                    // The pages after it are dropped: the next cycle walks again.
                    w.fail(e);
                    break;
                }
            }
        }
        w.summary.requests = self.github.requests_sent() - requests_before;
        Ok(w)
    }

    /// The rate the walk measured, the plan for the next poll, and the cycle's end in
    /// `poll_state`.
    async fn record(
        &self,
        feed: &str,
        state: &PollState,
        w: Walk,
        started: DateTime<Utc>,
    ) -> Result<CycleSummary, IngestError> {
        let Walk {
            mut summary,
            poll_interval,
            new_etag,
            completed,
            error,
            overlapped,
            page1_at,
        } = w;
        let completed = completed && error.is_none();
        // Read to its last page without meeting what an earlier cycle stored: what lay beyond
        // that page is lost unless another source (GH Archive) brings it.
        summary.gap_suspected =
            completed && !overlapped && summary.new_events > 0 && state.cycle_started_at.is_some();
        // New events over the time since the last page 1 that was read (a 304 measures
        // nothing: the next page 1 counts from the page its ETag names).
        let rate = match (page1_at, state.cycle_started_at) {
            (Some(now1), Some(before)) if now1 > before => plan::estimate_rate(
                state.feed_rate,
                summary.new_events,
                (now1 - before).to_std().unwrap_or_default(),
                overlapped && completed,
            ),
            _ => state.feed_rate,
        };
        summary.feed_rate = rate;
        let now = self.clock.now();
        let interval_secs = poll_interval.map(|d| d.as_secs() as i32);
        // Incomplete as `poll_state` will say: this cycle read page 1 and did not complete, or
        // the one before did not and this one did not make up for it.
        let incomplete = !completed && (page1_at.is_some() || state.previous_cycle_incomplete());
        let next = self
            .plan(
                rate,
                interval_secs.or(state.poll_interval_secs),
                incomplete,
                summary.pages,
                false,
                page1_at,
            )
            .await;
        let mut next_poll = next.next_poll_at;
        if let Some(resume) = summary.resume_at.filter(|r| *r > next_poll) {
            next_poll = resume;
        }
        summary.next_poll_at = Some(next_poll);
        if let Some(e) = &error {
            summary.outcome = Outcome::Failed;
            summary.error = Some(e.to_string());
            summary.error_code = Some(e.code().to_owned());
        }
        let result = serde_json::to_value(&summary).unwrap_or_default();
        crate::failpoints::hit("ingest::before_record_end");
        PollState::record_end(
            &self.pool,
            feed,
            &CycleEnd {
                at: now,
                completed,
                etag: new_etag.as_deref(),
                polled: summary.requests > 0,
                poll_interval_secs: interval_secs,
                next_poll_at: next_poll,
                result: outcome_str(summary.outcome),
                summary: &result,
                error: summary.error.as_deref(),
                feed_rate: rate,
            },
        )
        .await?;
        if let Err(e) = crate::store::cycles::record(&self.pool, feed, started, now, &summary).await
        {
            // History only: the cycle itself is recorded in poll_state.
            warn!(feed, error = %e, error_code = "poll_cycle_unrecorded", "poll cycle history not written");
        }
        if summary.gap_suspected {
            warn!(
                feed,
                pages = summary.pages,
                new_events = summary.new_events,
                error_code = "gap_suspected",
                "the walk read its last page without meeting a stored event: older events may have been missed"
            );
        }
        info!(
            feed,
            outcome = outcome_str(summary.outcome),
            requests = summary.requests,
            not_modified = summary.not_modified,
            pages = summary.pages,
            planned_pages = summary.planned_pages,
            binds = summary.binds.map(Binds::as_str),
            feed_rate_per_s = rate.map(|r| r.per_sec),
            feed_rate_at_least = rate.map(|r| r.at_least),
            next_binds = next.binds.as_str(),
            events_fetched = summary.events_fetched,
            new_events = summary.new_events,
            duplicates = summary.duplicates,
            new_push_events = summary.new_push_events,
            parse_failures = summary.parse_failures,
            rejected = summary.rejected,
            rate_remaining = ?summary.rate_remaining,
            rate_reset = ?summary.rate_reset,
            next_poll_at = %next_poll,
            "ingest cycle"
        );
        match error {
            // Unreachable: the caller, which sees the cycles in a row, says so once.
            Some(e) if e.is_unreachable() => {
                debug!(feed, error_code = e.code(), error = %e, "ingest cycle failed: GitHub unreachable");
                Err(e)
            }
            Some(e) => {
                warn!(feed, error_code = e.code(), error = %e, "ingest cycle failed; stored pages are kept");
                Err(e)
            }
            None => Ok(summary),
        }
    }

    /// Polls until `stop` is set: one cycle, then a wait until the next poll is due (GitHub's
    /// `X-Poll-Interval`, the budget's reset, or a back-off after a failure). `on_cycle` sees
    /// every cycle's result.
    pub async fn run_loop(
        &self,
        mut on_cycle: impl FnMut(&Result<CycleSummary, IngestError>),
    ) -> Result<(), StoreError> {
        self.run_loop_with(|r, _| on_cycle(r)).await
    }

    /// [`Ingestor::run_loop`] that also tells `on_cycle` when the next cycle starts.
    pub async fn run_loop_with(
        &self,
        mut on_cycle: impl FnMut(&Result<CycleSummary, IngestError>, DateTime<Utc>),
    ) -> Result<(), StoreError> {
        let mut stop = self.stop.clone();
        let mut failures: u32 = 0;
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            let result = self.run_cycle().await;
            let now = self.clock.now();
            let wake = match &result {
                Ok(s) => {
                    failures = 0;
                    s.next_poll_at.or(s.resume_at)
                }
                Err(_) => {
                    // A failed cycle never ends the loop: the database or the network may be
                    // back in a moment (a restart, a failover, a blip). The stored state says
                    // when to poll; when even it cannot be read, back off.
                    failures = failures.saturating_add(1);
                    let backoff = now + chrono::Duration::seconds(failure_backoff_secs(failures));
                    match PollState::load(&self.pool, EVENTS_FEED).await {
                        Ok(state) => Some(state.next_poll_at.map_or(backoff, |t| t.max(now))),
                        Err(e) => {
                            warn!(error = %e, error_code = "poll_state_unreadable", retry_at = %backoff, "cannot read the poll state; trying again later");
                            Some(backoff)
                        }
                    }
                }
            }
            .unwrap_or(
                now + chrono::Duration::from_std(self.options.default_poll_interval)
                    .unwrap_or_default(),
            );
            on_cycle(&result, wake.max(now + chrono::Duration::seconds(1)));
            // At least a second between cycles, whatever the state says.
            let wait = (wake - now)
                .to_std()
                .unwrap_or_default()
                .max(Duration::from_secs(1));
            if sleep_or_stop(self.clock.as_ref(), wait, &mut stop).await {
                return Ok(());
            }
        }
    }

    /// Whether the page holds an event stored before this cycle (a failed look-up says yes:
    /// the walk ends at this page, as it ends at any page it cannot tell is all new).
    async fn holds_stored_event(&self, ids: &[i64], this_cycle: &HashSet<i64>) -> bool {
        let found = async {
            let client = self.pool.get().await.ok()?;
            client
                .query(
                    "SELECT event_id FROM github_events WHERE event_id = ANY($1)",
                    &[&ids],
                )
                .await
                .ok()
        }
        .await;
        match found {
            Some(rows) => rows
                .iter()
                .any(|r| !this_cycle.contains(&r.get::<_, i64>(0))),
            None => true,
        }
    }

    /// Stores one page in one transaction; says which of its events were stored already.
    async fn store_page(
        &self,
        items: &[&RawValue],
        page: u32,
        cycle_label: &str,
        summary: &mut CycleSummary,
    ) -> Result<StoredPage, IngestError> {
        let now = self.clock.now();
        let refs = self
            .raw
            .put_page(&Page {
                events: items,
                fetched_at: now,
                label: format!("{cycle_label}-p{page}"),
            })
            .await?;
        crate::failpoints::hit("ingest::after_s3_put");
        let mut batch = Vec::with_capacity(items.len());
        let mut rejected: BTreeMap<String, u64> = BTreeMap::new();
        for (item, raw) in items.iter().zip(refs) {
            match parse_event(item) {
                Ok(parsed) => batch.push(EventInsert { parsed, raw }),
                Err(e) => *rejected.entry(e.to_string()).or_default() += 1,
            }
        }
        for (reason, n) in &rejected {
            warn!(page, reason = %reason, count = n, "events without a usable id were rejected");
            summary.rejected += n;
        }
        let newest = batch
            .iter()
            .filter_map(|e| e.parsed.event().created_at)
            .max();
        summary.newest_created_at = summary.newest_created_at.max(newest);
        let write = store::write_events(&self.pool, &batch, Source::Api, now).await?;
        crate::failpoints::hit("ingest::after_commit");
        summary.new_events += write.new_events;
        summary.duplicates += write.duplicates;
        summary.parse_failures += write.parse_failed_new;
        summary.new_push_events += write.new_push_ids.len() as u64;
        for e in batch
            .iter()
            .filter(|e| matches!(e.parsed, Parsed::Failed(..)))
        {
            if let Parsed::Failed(row, err) = &e.parsed {
                warn!(event_id = row.event_id, reason = %err, error_code = "parse_failed", "stored raw with parse status failed");
            }
        }
        if let Some(q) = &self.queue {
            if !write.new_push_ids.is_empty() {
                // Sent after the commit; ids the queue did not take stay un-enqueued and the
                // outbox flush of a later invocation sends them (crate::outbox).
                let sent = q.send(&write.new_push_ids).await;
                crate::failpoints::hit("ingest::after_sqs_send");
                if let Some(e) = sent.first_error() {
                    warn!(error = %e, count = sent.failed.len(), error_code = "enqueue_failed", "push ids left in the outbox");
                }
                if let Err(e) =
                    crate::outbox::mark_enqueued(&self.pool, &sent.sent, self.clock.now()).await
                {
                    // Sent but not marked: the next flush sends them again (enrichment
                    // recognizes a push it already did).
                    warn!(error = %e, count = sent.sent.len(), error_code = "enqueue_mark_failed", "sent push ids not marked");
                }
            }
        }
        summary.new_push_ids.extend_from_slice(&write.new_push_ids);
        Ok(StoredPage {
            page_ids: batch.iter().map(|e| e.parsed.event().event_id).collect(),
            duplicate_ids: write.duplicate_ids,
        })
    }
}

/// What a walk did, for `record`.
struct Walk {
    summary: CycleSummary,
    poll_interval: Option<Duration>,
    /// Page 1's ETag, kept only when the cycle completes.
    new_etag: Option<String>,
    /// False when the walk ended before the pages it needed (stop, rate limit, failure).
    completed: bool,
    error: Option<IngestError>,
    /// The walk reached an event stored before this cycle.
    overlapped: bool,
    /// When page 1 (a 200) arrived.
    page1_at: Option<DateTime<Utc>>,
}

impl Walk {
    fn fail(&mut self, e: IngestError) {
        self.completed = false;
        self.error = Some(e);
    }

    /// A page's body and its `Link: rel="next"`, or None when the walk ends here (a 304, a
    /// rate limit, a failure: noted in the walk).
    fn accept(
        &mut self,
        feed: &str,
        page: u32,
        target: &str,
        fetched: Result<Fetched, GithubError>,
    ) -> Option<(bytes::Bytes, Option<String>)> {
        let fetched = match fetched {
            Ok(f) => f,
            Err(GithubError::DeadlineReached { .. }) => {
                info!(feed, page, "deadline near: request cut short, cycle ends");
                self.summary.outcome = Outcome::DeadlineReached;
                self.completed = false;
                return None;
            }
            Err(e) if e.wait_until().is_some() => {
                let s = &mut self.summary;
                s.outcome = Outcome::RateLimited;
                s.resume_at = e.wait_until();
                s.error_code = Some(e.code().to_owned());
                self.completed = false;
                info!(feed, page, resume_at = ?s.resume_at, reason = e.code(), "rate limited: cycle ends, nothing more sent");
                return None;
            }
            Err(e) => {
                self.fail(e.into());
                return None;
            }
        };
        match fetched {
            Fetched::NotModified {
                poll_interval,
                rate,
            } => {
                self.summary.not_modified += 1;
                if page == 1 {
                    self.summary.outcome = Outcome::NotModified;
                }
                self.poll_interval = poll_interval.or(self.poll_interval);
                note_rate(&mut self.summary, rate.as_ref());
                None
            }
            Fetched::Gone { status } => {
                self.fail(IngestError::Github(GithubError::Client {
                    status,
                    path: target.to_owned(),
                    message: "the events feed is not there".into(),
                }));
                None
            }
            Fetched::Ok {
                body,
                etag,
                next,
                poll_interval,
                rate,
            } => {
                self.poll_interval = poll_interval.or(self.poll_interval);
                note_rate(&mut self.summary, rate.as_ref());
                if page == 1 {
                    self.new_etag = etag;
                }
                Some((body, next))
            }
        }
    }
}

/// The ids of a page's events (those without a usable id left out).
fn event_ids(items: &[&RawValue]) -> Vec<i64> {
    #[derive(serde::Deserialize)]
    struct Id {
        id: serde_json::Value,
    }
    items
        .iter()
        .filter_map(|i| serde_json::from_str::<Id>(i.get()).ok())
        .filter_map(|i| match i.id {
            serde_json::Value::String(s) => s.parse().ok(),
            v => v.as_i64(),
        })
        .collect()
}

/// The event ids of a stored page, and those of them that were stored already.
struct StoredPage {
    page_ids: Vec<i64>,
    duplicate_ids: Vec<i64>,
}

fn note_rate(s: &mut CycleSummary, rate: Option<&crate::github::RateInfo>) {
    if let Some(r) = rate {
        s.rate_limit = Some(r.limit);
        s.rate_remaining = Some(r.remaining);
        s.rate_reset = Some(r.reset);
    }
}

pub fn outcome_str(o: Outcome) -> &'static str {
    match o {
        Outcome::Completed => "completed",
        Outcome::NotModified => "not_modified",
        Outcome::NotDue => "not_due",
        Outcome::Busy => "busy",
        Outcome::RateLimited => "rate_limited",
        Outcome::Failed => "failed",
        Outcome::DeadlineReached => "deadline_reached",
    }
}

/// Seconds to wait after the n-th failed cycle in a row when the stored state cannot say:
/// 5 s, doubling, at most 5 minutes.
fn failure_backoff_secs(failures: u32) -> i64 {
    (5i64 << failures.clamp(1, 7).saturating_sub(1)).min(300)
}
