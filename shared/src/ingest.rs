//! One poll cycle of the public events feed: fetch → store raw → parse PushEvents → store
//! push_events, one transaction per page, and a summary of what it did.
//!
//! Rules it keeps:
//! - `/events` is never polled before `next_poll_at` (GitHub's `X-Poll-Interval`, stretched
//!   when needed so the remaining budget lasts until the window resets);
//! - page 1 is conditional on the stored ETag; a 304 ends the cycle;
//! - pages follow `Link: rel="next"` up to the feed's cap, and stop at the first page holding
//!   an event already stored, unless the previous cycle did not complete (then a stored event
//!   proves nothing about the pages after it);
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
use crate::raw::{Page, PushQueue, RawStore, RawStoreError};
use crate::store::{self, AdvisoryLock, EventInsert, PgBudget, PollState, Source, StoreError};
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde::Serialize;
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

pub const EVENTS_FEED: &str = "events";

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
        let feed = EVENTS_FEED;
        let Some(lock) = AdvisoryLock::try_acquire(&self.pool, &format!("poll:{feed}")).await?
        else {
            info!(feed, "another process is polling this feed; nothing to do");
            return Ok(CycleSummary::new(Outcome::Busy));
        };
        let result = self.cycle_locked(feed, deadline).await;
        lock.release().await?;
        result
    }

    async fn cycle_locked(
        &self,
        feed: &str,
        deadline: Deadline,
    ) -> Result<CycleSummary, IngestError> {
        let margin = self
            .options
            .deadline_margin
            .unwrap_or_else(|| self.github.deadline_reserve() + self.github.attempt_timeout());
        let now = self.clock.now();
        let state = PollState::load(&self.pool, feed).await?;
        if let Some(due) = state.next_poll_at.filter(|d| *d > now) {
            let mut s = CycleSummary::new(Outcome::NotDue);
            s.resume_at = Some(due);
            s.next_poll_at = Some(due);
            info!(feed, resume_at = %due, "not due yet (X-Poll-Interval); no request sent");
            return Ok(s);
        }
        let resume_incomplete = state.previous_cycle_incomplete();
        if resume_incomplete {
            warn!(
                feed,
                "previous cycle did not complete: walking every page without the ETag"
            );
        }
        let requests_before = self.github.requests_sent();
        let mut summary = CycleSummary::new(Outcome::Completed);
        let mut poll_interval: Option<Duration> = state
            .poll_interval_secs
            .map(|s| Duration::from_secs(s.max(0) as u64));
        let mut new_etag: Option<String> = None;
        let mut completed = true;
        let mut error: Option<IngestError> = None;
        let cycle_label = now.format("%Y%m%dT%H%M%S%.3fZ").to_string();

        let mut this_cycle: std::collections::HashSet<i64> = std::collections::HashSet::new();
        let mut target = format!("/events?per_page={}", self.options.per_page);
        for page in 1..=self.options.max_pages {
            if page > 1 && *self.stop.borrow() {
                info!(
                    feed,
                    page, "stop requested: ending the cycle after the page in hand"
                );
                completed = false;
                break;
            }
            if !deadline.allows(margin) {
                info!(
                    feed,
                    page,
                    left_ms = deadline.remaining().unwrap_or_default().as_millis() as u64,
                    "deadline near: ending the cycle before this page"
                );
                summary.outcome = Outcome::DeadlineReached;
                completed = false;
                break;
            }
            let etag = if page == 1 && !resume_incomplete {
                state.etag.as_deref()
            } else {
                None
            };
            let fetched = match self
                .github
                .get_before(&target, etag, Purpose::Ingest, deadline)
                .await
            {
                Ok(f) => f,
                Err(GithubError::DeadlineReached { .. }) => {
                    info!(feed, page, "deadline near: request cut short, cycle ends");
                    summary.outcome = Outcome::DeadlineReached;
                    completed = false;
                    break;
                }
                Err(e) if e.wait_until().is_some() => {
                    summary.outcome = Outcome::RateLimited;
                    summary.resume_at = e.wait_until();
                    summary.error_code = Some(e.code().to_owned());
                    completed = false;
                    info!(feed, page, resume_at = ?summary.resume_at, reason = e.code(), "rate limited: cycle ends, nothing more sent");
                    break;
                }
                Err(e) => {
                    completed = false;
                    error = Some(e.into());
                    break;
                }
            };
            match fetched {
                Fetched::NotModified {
                    poll_interval: pi,
                    rate,
                } => {
                    summary.not_modified += 1;
                    summary.outcome = if page == 1 {
                        Outcome::NotModified
                    } else {
                        summary.outcome
                    };
                    poll_interval = pi.or(poll_interval);
                    note_rate(&mut summary, rate.as_ref());
                    break;
                }
                Fetched::Gone { status } => {
                    completed = false;
                    error = Some(IngestError::Github(GithubError::Client {
                        status,
                        path: target.clone(),
                        message: "the events feed is not there".into(),
                    }));
                    break;
                }
                Fetched::Ok {
                    body,
                    etag: page_etag,
                    next,
                    poll_interval: pi,
                    rate,
                } => {
                    poll_interval = pi.or(poll_interval);
                    note_rate(&mut summary, rate.as_ref());
                    let items: Vec<&RawValue> = match serde_json::from_slice(&body) {
                        Ok(items) => items,
                        Err(e) => {
                            completed = false;
                            error = Some(IngestError::MalformedPage {
                                feed: feed.into(),
                                page,
                                reason: e.to_string(),
                            });
                            break;
                        }
                    };
                    if page == 1 {
                        new_etag = page_etag;
                    }
                    summary.pages += 1;
                    summary.events_fetched += items.len() as u64;
                    if summary.pages == 1 {
                        // From here until the cycle completes, a crash leaves it incomplete.
                        PollState::mark_started(&self.pool, feed, self.clock.now()).await?;
                    }
                    let overlap = match self
                        .store_page(&items, page, &cycle_label, &mut summary)
                        .await
                    {
                        // The frontier is an event stored before this cycle. Events this cycle
                        // stored itself show up again on the next page when the feed moves on
                        // between two requests; they say nothing about older pages.
                        Ok(stored) => {
                            let frontier = stored
                                .duplicate_ids
                                .iter()
                                .any(|id| !this_cycle.contains(id));
                            this_cycle.extend(stored.page_ids);
                            frontier
                        }
                        Err(e) => {
                            completed = false;
                            error = Some(e);
                            break;
                        }
                    };
                    if items.is_empty() || (overlap && !resume_incomplete) {
                        break;
                    }
                    match next {
                        Some(n) => target = n,
                        None => break,
                    }
                }
            }
        }
        summary.requests = self.github.requests_sent() - requests_before;

        // When to poll next: never sooner than GitHub's interval, and the budget spread evenly
        // over what is left of its window. A cycle that fetched k pages (a 304 is free) waits
        // k shares of (time to reset) / (requests left + 1): the last request goes out before
        // the reset, and a feed busier than the budget is read in full pages rather than in
        // pages of mostly stored events at first and nothing at all near the reset.
        let now = self.clock.now();
        let interval = poll_interval.unwrap_or(self.options.default_poll_interval);
        let mut next_poll = now + chrono::Duration::from_std(interval).unwrap_or_default();
        if self.options.pace_to_budget {
            if let Ok(b) = self.budget.snapshot(now).await {
                let avail = b.available(Purpose::Ingest, 0, now);
                if let Some(reset) = b.reset_at.filter(|r| *r > now) {
                    let to_reset = reset - now;
                    let window = chrono::Duration::from_std(self.options.rate_window)
                        .unwrap_or(chrono::Duration::MAX);
                    let spread = if to_reset <= window {
                        // What this cycle spent: its pages (a 304 is free). Not `requests`,
                        // which also counts what enrichment sent meanwhile on the same client.
                        let spent = i32::try_from(summary.pages).unwrap_or(i32::MAX);
                        let share = to_reset / (avail.max(0) + 1);
                        share
                            .checked_mul(spent)
                            .map_or(to_reset, |d| d.min(to_reset))
                    } else {
                        // A reset further away than any window of GitHub's: only keep the last
                        // few requests from going at once.
                        let pages = i64::from(self.options.max_pages.max(1));
                        let cycles_left = (i64::from(avail) / pages).max(1);
                        let spread = to_reset / i32::try_from(cycles_left).unwrap_or(i32::MAX);
                        if avail < i32::try_from(pages * 2).unwrap_or(6) {
                            spread
                        } else {
                            chrono::Duration::zero()
                        }
                    };
                    next_poll = next_poll.max(now + spread);
                }
            }
        }
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
        let polled = summary.requests > 0;
        crate::failpoints::hit("ingest::before_record_end");
        PollState::record_end(
            &self.pool,
            feed,
            now,
            completed && error.is_none(),
            new_etag.as_deref(),
            polled,
            poll_interval.map(|d| d.as_secs() as i32),
            next_poll,
            outcome_str(summary.outcome),
            &result,
            summary.error.as_deref(),
        )
        .await?;
        info!(
            feed,
            outcome = outcome_str(summary.outcome),
            requests = summary.requests,
            not_modified = summary.not_modified,
            pages = summary.pages,
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
        let mut stop = self.stop.clone();
        let mut failures: u32 = 0;
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            let result = self.run_cycle().await;
            on_cycle(&result);
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
