//! Enrichment of push events with their actor (`/users/{login}`) and repository
//! (`/repos/{owner}/{repo}`), cached in Postgres, paid for from the budget shared with ingest
//! (enrichment never touches ingest's reserve).
//!
//! - A fresh cache entry (younger than the TTL) costs no request; a stale one is revalidated
//!   with its ETag, and a 304 refreshes it.
//! - 404/410 for the login or repository name → asked again by id (`/user/{id}`,
//!   `/repositories/{id}`): a renamed account or repository keeps its id, and is stored with
//!   its new name. Only a 404/410 by id makes it `gone`: the push event completes, and the
//!   entry is trusted for the cache TTL like any other, then checked again (by id).
//! - 5xx / timeouts are retried inside the call (the client's backoff), then count as a failed
//!   attempt of the push event; after `max_attempts` it is `failed` with its last error.
//! - An answer that says nothing about the push event (401, a 403 or 429 that is not a rate
//!   limit: an expired token, a GitHub incident) pauses all enrichment, for every worker
//!   (a row in Postgres), from `pause_first` doubling to `pause_longest` until a request
//!   succeeds; the push events of the batch are deferred, their attempts unchanged.
//! - Budget spent → no request; the work goes back to pending until the reset.
//! - Every row that goes back to pending also goes back to the outbox (`enqueued_at` NULL):
//!   a queue message is only a nudge, and the outbox sends a new one when the row is due.
//! - One request per distinct actor or repository, even when many push events and several
//!   workers need it at once (a per-entity fetch lease; the others wait briefly for its
//!   result, and defer their push events if it takes too long).

use crate::budget::Purpose;
use crate::clock::{sleep_or_stop, Clock};
use crate::deadline::Deadline;
use crate::github::{self, Fetched, GithubClient, GithubError};
use crate::store::cache::{self, Kind};
use crate::store::work::{self, Claim, WorkItem};
use crate::store::StoreError;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use futures::StreamExt;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{debug, info, warn};

#[derive(Debug, Clone)]
pub struct EnrichOptions {
    pub cache_ttl: Duration,
    pub max_attempts: i32,
    /// How long a claimed row is ours before another worker may take it over.
    pub lease: Duration,
    pub batch_size: i64,
    /// Entities fetched at once by one worker.
    pub concurrency: usize,
    /// How long a worker waits for another one's fetch of the same entity before deferring.
    pub wait_for_other_fetch: Duration,
    /// The first pause of all enrichment after a failure that is not the push event's.
    pub pause_first: Duration,
    /// The longest such pause (they double while the failures go on).
    pub pause_longest: Duration,
    /// Under a deadline, the time that must be left to start on another name; the push
    /// events of names not started go back to pending. `None`: the GitHub client's deadline
    /// reserve plus its longest attempt.
    pub deadline_margin: Option<Duration>,
}

impl Default for EnrichOptions {
    fn default() -> Self {
        Self {
            cache_ttl: Duration::from_secs(86_400),
            max_attempts: 5,
            lease: Duration::from_secs(300),
            batch_size: 100,
            concurrency: 4,
            wait_for_other_fetch: Duration::from_secs(10),
            pause_first: Duration::from_secs(60),
            pause_longest: Duration::from_secs(900),
            deadline_margin: None,
        }
    }
}

/// What became of one push event.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ItemOutcome {
    /// Actor and repository are cached and current.
    Completed,
    /// Completed, with the actor or the repository gone (404/410).
    Gone,
    /// Completed or failed before: nothing done.
    AlreadyDone,
    /// No such push event.
    UnknownPushId,
    /// An attempt failed; `retryable` is false once the row is `failed` for good.
    Failed { retryable: bool, error: String },
    /// The budget is spent (or GitHub asked to wait): back to pending until `until`.
    Deferred { until: DateTime<Utc> },
    /// Not due before `at` (a message that came early, or twice): nothing spent; the row is
    /// back in the outbox for its time.
    NotDue { at: DateTime<Utc> },
    /// Another worker holds it; that worker completes it or puts it back in the outbox.
    Busy,
}

#[derive(Debug, Clone, PartialEq)]
enum Entity {
    Ok,
    Gone,
    Failed(String),
    /// Can never be requested (a name outside GitHub's character set): fails for good.
    Refused(String),
    Deferred(DateTime<Utc>),
}

#[derive(Debug, thiserror::Error)]
pub enum EnrichError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl EnrichError {
    /// Whether trying the same work again later can succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            EnrichError::Store(e) => e.is_retryable(),
        }
    }
}

/// What a drain did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DrainSummary {
    pub batches: u64,
    pub requests: u64,
    pub completed: u64,
    pub gone: u64,
    pub failed_attempts: u64,
    pub failed_final: u64,
    pub deferred: u64,
    /// Set when the drain stopped because the budget is spent.
    pub deferred_until: Option<DateTime<Utc>>,
    /// Logins and repository names the cache answered without a request.
    pub cache_hits: u64,
}

impl DrainSummary {
    /// Counts one push event's outcome.
    pub fn add(&mut self, outcome: &ItemOutcome) {
        match outcome {
            ItemOutcome::Completed => self.completed += 1,
            ItemOutcome::Gone => self.gone += 1,
            ItemOutcome::Failed {
                retryable: true, ..
            } => self.failed_attempts += 1,
            ItemOutcome::Failed {
                retryable: false, ..
            } => self.failed_final += 1,
            ItemOutcome::Deferred { until } => {
                self.deferred += 1;
                self.deferred_until = Some(*until);
            }
            ItemOutcome::AlreadyDone
            | ItemOutcome::UnknownPushId
            | ItemOutcome::NotDue { .. }
            | ItemOutcome::Busy => {}
        }
    }
}

pub struct Enricher {
    pub pool: Pool,
    pub github: Arc<GithubClient>,
    pub clock: Arc<dyn Clock>,
    pub options: EnrichOptions,
    /// Names the cache answered without a request, since this enricher was made.
    pub cache_hits: Arc<AtomicU64>,
}

impl Enricher {
    /// The queue path: enriches these push ids (duplicates and unknown ids included).
    pub async fn process_push_ids(
        &self,
        ids: &[i64],
    ) -> Result<Vec<(i64, ItemOutcome)>, EnrichError> {
        self.process_push_ids_before(ids, Deadline::NONE).await
    }

    /// [`Enricher::process_push_ids`] that ends before `deadline`: what it has no time for
    /// is `Deferred` until now, its rows pending again.
    pub async fn process_push_ids_before(
        &self,
        ids: &[i64],
        deadline: Deadline,
    ) -> Result<Vec<(i64, ItemOutcome)>, EnrichError> {
        let now = self.clock.now();
        let claims = work::claim_ids(&self.pool, ids, now, now + self.lease()).await?;
        crate::failpoints::hit("enrich::inside_lease");
        let mut out = Vec::with_capacity(ids.len());
        let mut items = Vec::new();
        let mut early = Vec::new();
        for id in ids {
            match claims.get(id) {
                Some(Claim::Claimed(item)) => items.push(item.clone()),
                Some(Claim::Done) => out.push((*id, ItemOutcome::AlreadyDone)),
                Some(Claim::Busy) => out.push((*id, ItemOutcome::Busy)),
                Some(Claim::NotDue(at)) => {
                    early.push(*id);
                    out.push((*id, ItemOutcome::NotDue { at: *at }));
                }
                Some(Claim::Unknown) | None => out.push((*id, ItemOutcome::UnknownPushId)),
            }
        }
        if !early.is_empty() {
            work::back_to_outbox(&self.pool, &early, now).await?;
        }
        items.dedup_by_key(|i| i.push_id);
        out.extend(self.process(items, deadline).await?);
        Ok(out)
    }

    /// The Postgres path: claims due work in batches until none is due or the budget is spent.
    pub async fn drain(&self) -> Result<DrainSummary, EnrichError> {
        self.drain_until(None).await
    }

    /// [`Enricher::drain`] that claims no further batch once `stop` is set.
    pub async fn drain_until(
        &self,
        stop: Option<&tokio::sync::watch::Receiver<bool>>,
    ) -> Result<DrainSummary, EnrichError> {
        let mut s = DrainSummary::default();
        let before = self.github.requests_sent();
        let hits_before = self.cache_hits();
        loop {
            if stop.is_some_and(|s| *s.borrow()) {
                break;
            }
            let now = self.clock.now();
            let items =
                work::claim_due(&self.pool, now, now + self.lease(), self.options.batch_size)
                    .await?;
            if items.is_empty() {
                break;
            }
            crate::failpoints::hit("enrich::inside_lease");
            s.batches += 1;
            for (_, outcome) in self.process(items, Deadline::NONE).await? {
                s.add(&outcome);
            }
            if s.deferred_until.is_some() {
                break;
            }
        }
        s.requests = self.github.requests_sent() - before;
        s.cache_hits = self.cache_hits() - hits_before;
        // A drain that found nothing to do is not news (the loop wakes every few seconds).
        if s.batches == 0 && s.requests == 0 {
            debug!(deferred_until = ?s.deferred_until, "enrichment drain: nothing due");
            return Ok(s);
        }
        info!(
            batches = s.batches,
            requests = s.requests,
            completed = s.completed,
            gone = s.gone,
            failed_attempts = s.failed_attempts,
            failed_final = s.failed_final,
            deferred = s.deferred,
            deferred_until = ?s.deferred_until,
            cache_hits = s.cache_hits,
            "enrichment drain"
        );
        Ok(s)
    }

    /// Drains, then waits for the next row to fall due (or the budget to reset), until `stop`.
    pub async fn run_loop(
        &self,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), EnrichError> {
        self.run_loop_with(stop, |_| {}).await
    }

    /// [`Enricher::run_loop`] that shows `on_drain` every drain's summary.
    pub async fn run_loop_with(
        &self,
        mut stop: tokio::sync::watch::Receiver<bool>,
        mut on_drain: impl FnMut(&DrainSummary),
    ) -> Result<(), EnrichError> {
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            let summary = match self.drain_until(Some(&stop)).await {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, error_code = "enrich_store", "enrichment drain failed; retrying later");
                    DrainSummary::default()
                }
            };
            on_drain(&summary);
            let now = self.clock.now();
            let next = match work::next_due(&self.pool).await {
                Ok(n) => n,
                Err(e) => {
                    warn!(error = %e, "reading the next due row failed");
                    None
                }
            };
            // New rows arrive from ingest at any time: look again within a few seconds.
            let soon = now + chrono::Duration::seconds(5);
            let wake = summary
                .deferred_until
                .or(next)
                .map_or(soon, |t| t.min(soon).max(now));
            let wait = (wake - now)
                .to_std()
                .unwrap_or_default()
                .max(Duration::from_millis(200));
            if sleep_or_stop(self.clock.as_ref(), wait, &mut stop).await {
                return Ok(());
            }
        }
    }

    /// Names the cache answered without a request so far (see [`DrainSummary::cache_hits`]).
    pub fn cache_hits(&self) -> u64 {
        self.cache_hits.load(Ordering::Relaxed)
    }

    fn lease(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.options.lease).unwrap_or(chrono::Duration::minutes(5))
    }

    async fn process(
        &self,
        items: Vec<WorkItem>,
        deadline: Deadline,
    ) -> Result<Vec<(i64, ItemOutcome)>, EnrichError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let margin = self
            .options
            .deadline_margin
            .unwrap_or_else(|| self.github.deadline_reserve() + self.github.attempt_timeout());
        // One request per login / repository name (GitHub ignores their case); several ids can
        // share one (a name deleted and taken again), and the answer's id says which it is.
        let mut by_name: BTreeMap<(Kind, String), (String, BTreeSet<i64>)> = BTreeMap::new();
        // Requests go out push event by push event, its actor then its repository, so a budget
        // that runs out mid-batch has completed whole push events rather than fetched every
        // actor and no repository.
        let mut order: Vec<(Kind, String)> = Vec::new();
        for i in &items {
            for (kind, name, id) in [
                (Kind::Actor, &i.actor_login, i.actor_id),
                (Kind::Repo, &i.repo_name, i.repo_id),
            ] {
                let key = (kind, name.to_lowercase());
                if !by_name.contains_key(&key) {
                    order.push(key.clone());
                }
                by_name
                    .entry(key)
                    .or_insert_with(|| (name.clone(), BTreeSet::new()))
                    .1
                    .insert(id);
            }
        }
        let wanted: Vec<_> = order
            .into_iter()
            .filter_map(|k| by_name.remove(&k).map(|v| (k, v)))
            .collect();
        // While enrichment is paused nothing is sent; once the budget (or a pause) says wait,
        // nothing more is sent in this batch.
        let started = self.clock.now();
        let pause = work::current_pause(&self.pool).await?;
        let deferred: Mutex<Option<DateTime<Utc>>> =
            Mutex::new(pause.map(|p| p.until).filter(|u| *u > started));
        let answered = AtomicBool::new(false);
        let per_name: Vec<Vec<((Kind, i64), Entity)>> = futures::stream::iter(wanted)
            .map(|((kind, _), (name, ids))| {
                let (deferred, answered) = (&deferred, &answered);
                async move {
                    if let Some(until) = *deferred.lock().expect("lock") {
                        return Ok(ids
                            .iter()
                            .map(|id| ((kind, *id), Entity::Deferred(until)))
                            .collect());
                    }
                    if !deadline.allows(margin) {
                        // No time for it in this invocation: pending again, due at once.
                        let now = self.clock.now();
                        return Ok(ids
                            .iter()
                            .map(|id| ((kind, *id), Entity::Deferred(now)))
                            .collect());
                    }
                    let found = self.ensure(kind, &name, &ids, answered, deadline).await?;
                    for e in found.values() {
                        if let Entity::Deferred(until) = e {
                            let mut d = deferred.lock().expect("lock");
                            *d = Some(d.map_or(*until, |u| u.max(*until)));
                        }
                    }
                    Ok::<_, EnrichError>(found.into_iter().map(|(id, e)| ((kind, id), e)).collect())
                }
            })
            .buffer_unordered(self.options.concurrency.max(1))
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        let results: HashMap<(Kind, i64), Entity> = per_name.into_iter().flatten().collect();

        let now = self.clock.now();
        if pause.is_some() && answered.load(Ordering::Relaxed) {
            // GitHub answered again after a pause: the next one starts short.
            work::clear_pause(&self.pool, now).await?;
        }
        let mut out = Vec::with_capacity(items.len());
        let (mut done, mut gone) = (Vec::new(), Vec::new());
        let mut defer: BTreeMap<DateTime<Utc>, Vec<i64>> = BTreeMap::new();
        for i in &items {
            let a = &results[&(Kind::Actor, i.actor_id)];
            let r = &results[&(Kind::Repo, i.repo_id)];
            match (a, r) {
                (Entity::Refused(e), _) | (_, Entity::Refused(e)) => {
                    // NOTE: failed for good, not retried: no later attempt can request this name.
                    work::fail_attempt(&self.pool, i.push_id, e, now, 1).await?;
                    warn!(push_id = i.push_id, error = %e, error_code = "invalid_name", "enrichment refused");
                    out.push((
                        i.push_id,
                        ItemOutcome::Failed {
                            retryable: false,
                            error: e.clone(),
                        },
                    ));
                }
                (Entity::Deferred(u), _) | (_, Entity::Deferred(u)) => {
                    defer.entry(*u).or_default().push(i.push_id)
                }
                (Entity::Failed(e), _) | (_, Entity::Failed(e)) => {
                    let retry_at = now + backoff(i.attempts + 1);
                    let failed = work::fail_attempt(
                        &self.pool,
                        i.push_id,
                        e,
                        retry_at,
                        self.options.max_attempts,
                    )
                    .await?;
                    if failed {
                        warn!(push_id = i.push_id, error = %e, error_code = "enrich_failed", "enrichment failed for good");
                    }
                    out.push((
                        i.push_id,
                        ItemOutcome::Failed {
                            retryable: !failed,
                            error: e.clone(),
                        },
                    ));
                }
                (Entity::Gone, _) | (_, Entity::Gone) => gone.push(i.push_id),
                (Entity::Ok, Entity::Ok) => done.push(i.push_id),
            }
        }
        crate::failpoints::hit("enrich::before_complete");
        let finished: Vec<i64> = done.iter().chain(&gone).copied().collect();
        if !finished.is_empty() {
            work::complete(&self.pool, &finished, now).await?;
        }
        for (until, ids) in &defer {
            work::defer(&self.pool, ids, *until).await?;
            out.extend(
                ids.iter()
                    .map(|id| (*id, ItemOutcome::Deferred { until: *until })),
            );
        }
        out.extend(done.into_iter().map(|id| (id, ItemOutcome::Completed)));
        out.extend(gone.into_iter().map(|id| (id, ItemOutcome::Gone)));
        Ok(out)
    }

    /// Makes the cache entries of one login or repository name current (for every id seen
    /// under it), with one request for the name, and one per id the name no longer leads to.
    async fn ensure(
        &self,
        kind: Kind,
        name: &str,
        ids: &BTreeSet<i64>,
        answered: &AtomicBool,
        deadline: Deadline,
    ) -> Result<HashMap<i64, Entity>, EnrichError> {
        let started = tokio::time::Instant::now();
        loop {
            if let Some(all) = all_settled(self.cached(kind, name, ids).await?) {
                self.cache_hits.fetch_add(1, Ordering::Relaxed);
                return Ok(all);
            }
            let now = self.clock.now();
            // The lease outlives a request with all its retries.
            let until = now + chrono::Duration::minutes(5);
            if cache::take_fetch_lease(&self.pool, kind, name, now, until).await? {
                crate::failpoints::hit("enrich::inside_fetch_lease");
                let result = self.fetch_leased(kind, name, ids, answered, deadline).await;
                cache::release_fetch_lease(&self.pool, kind, name).await?;
                return result;
            }
            // Another worker is fetching it: its answer will be in the cache shortly.
            if started.elapsed() >= self.options.wait_for_other_fetch {
                let later = Entity::Deferred(now + chrono::Duration::seconds(30));
                return Ok(ids.iter().map(|id| (*id, later.clone())).collect());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// What the cache says about each id seen under a name.
    async fn cached(
        &self,
        kind: Kind,
        name: &str,
        ids: &BTreeSet<i64>,
    ) -> Result<HashMap<i64, Cached>, EnrichError> {
        let now = self.clock.now();
        let ttl =
            chrono::Duration::from_std(self.options.cache_ttl).unwrap_or(chrono::Duration::MAX);
        let fresh_since = now
            .checked_sub_signed(ttl)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let mut out = HashMap::with_capacity(ids.len());
        let mut unknown = Vec::new();
        for id in ids {
            let c = match cache::get(&self.pool, kind, *id).await? {
                Some(e) if e.fetched_at > fresh_since => {
                    Cached::Settled(if e.gone { Entity::Gone } else { Entity::Ok })
                }
                // Gone as far as we know, but not for ever: asked again, by id.
                Some(e) if e.gone => Cached::ById,
                Some(_) => Cached::ByName,
                None => {
                    unknown.push(*id);
                    continue;
                }
            };
            out.insert(*id, c);
        }
        if !unknown.is_empty() {
            // The name was answered recently for another id: ours was renamed or deleted.
            let taken = cache::fresh_id_for_name(&self.pool, kind, name, fresh_since)
                .await?
                .is_some();
            for id in unknown {
                out.insert(id, if taken { Cached::ById } else { Cached::ByName });
            }
        }
        Ok(out)
    }

    async fn fetch_leased(
        &self,
        kind: Kind,
        name: &str,
        ids: &BTreeSet<i64>,
        answered: &AtomicBool,
        deadline: Deadline,
    ) -> Result<HashMap<i64, Entity>, EnrichError> {
        let mut out = HashMap::with_capacity(ids.len());
        let mut by_name = BTreeSet::new();
        let mut by_id = Vec::new();
        for (id, c) in self.cached(kind, name, ids).await? {
            match c {
                Cached::Settled(e) => {
                    out.insert(id, e);
                }
                Cached::ByName => {
                    by_name.insert(id);
                }
                Cached::ById => by_id.push(id),
            }
        }
        if !by_name.is_empty() {
            let (found, lost) = self
                .fetch_by_name(kind, name, &by_name, answered, deadline)
                .await?;
            out.extend(found);
            by_id.extend(lost);
        }
        by_id.sort_unstable();
        for id in by_id {
            // Once GitHub or the budget says wait, nothing more is sent.
            let wait = out.values().find_map(|e| match e {
                Entity::Deferred(u) => Some(*u),
                _ => None,
            });
            let e = match wait {
                Some(u) => Entity::Deferred(u),
                None => self.fetch_by_id(kind, id, name, answered, deadline).await?,
            };
            out.insert(id, e);
        }
        Ok(out)
    }

    /// Asks for a login or repository name. Returns what it settled, and the ids it did not
    /// find under that name (404, or the name now leads to another id): those are asked for
    /// by id, since a renamed account or repository keeps its id.
    async fn fetch_by_name(
        &self,
        kind: Kind,
        name: &str,
        ids: &BTreeSet<i64>,
        answered: &AtomicBool,
        deadline: Deadline,
    ) -> Result<(HashMap<i64, Entity>, Vec<i64>), EnrichError> {
        let mut held = Vec::new();
        for id in ids {
            if let Some(e) = cache::get(&self.pool, kind, *id).await? {
                held.push((*id, e));
            }
        }
        let path = match kind {
            Kind::Actor => github::user_path(name),
            Kind::Repo => github::repo_path(name),
        };
        let path = match path {
            Ok(p) => p,
            Err(e) => {
                let refused = ids
                    .iter()
                    .map(|id| (*id, Entity::Refused(e.to_string())))
                    .collect();
                return Ok((refused, Vec::new()));
            }
        };
        // Revalidate what we hold (the newest entry that is not gone).
        let etag = held
            .iter()
            .filter(|(_, e)| !e.gone)
            .max_by_key(|(_, e)| e.fetched_at)
            .and_then(|(_, e)| e.etag.as_deref());
        let (answer, now) = self.ask(&path, etag, answered, deadline).await;
        let all =
            |e: Entity| -> HashMap<i64, Entity> { ids.iter().map(|id| (*id, e.clone())).collect() };
        let mut lost = Vec::new();
        let found = match answer {
            Ok(Fetched::Ok { body, etag, .. }) => {
                // A lone surrogate escape is read as U+FFFD (serde_json refuses it in a string).
                match serde_json::from_slice::<serde_json::Value>(&crate::sanitize::json_bytes(
                    &body,
                )) {
                    Ok(v) if v.get("id").and_then(|x| x.as_i64()).is_none() => {
                        // Not an answer about any id: nothing is cached under ours.
                        all(Entity::Failed(format!("{path}: answer without an id")))
                    }
                    Ok(v) => {
                        let answered = v.get("id").and_then(|x| x.as_i64());
                        if let Some(owner) = answered.filter(|a| !ids.contains(a)) {
                            // The answer is about whoever holds the name now: keep it for them.
                            cache::put_ok(&self.pool, kind, owner, name, &v, etag.as_deref(), now)
                                .await?;
                        }
                        let mut out = HashMap::with_capacity(ids.len());
                        for id in ids {
                            if answered.is_none_or(|a| a == *id) {
                                cache::put_ok(
                                    &self.pool,
                                    kind,
                                    *id,
                                    name,
                                    &v,
                                    etag.as_deref(),
                                    now,
                                )
                                .await?;
                                out.insert(*id, Entity::Ok);
                            } else {
                                // The name now belongs to another account or repository.
                                lost.push(*id);
                            }
                        }
                        out
                    }
                    Err(e) => all(Entity::Failed(format!("{path}: invalid JSON: {e}"))),
                }
            }
            Ok(Fetched::NotModified { .. }) => {
                let mut out = HashMap::with_capacity(ids.len());
                for id in ids {
                    match held.iter().find(|(h, _)| h == id) {
                        Some((_, e)) if e.gone => lost.push(*id),
                        Some(_) => {
                            cache::touch(&self.pool, kind, *id, now).await?;
                            out.insert(*id, Entity::Ok);
                        }
                        None => {
                            out.insert(
                                *id,
                                Entity::Failed(format!("{path}: 304 for an entry not held")),
                            );
                        }
                    }
                }
                out
            }
            Ok(Fetched::Gone { .. }) => {
                // Not found under this name: renamed, or deleted. The id tells.
                lost.extend(ids.iter().copied());
                HashMap::new()
            }
            Err(e) => all(self.failure(&path, e, now).await?),
        };
        Ok((found, lost))
    }

    /// One request for enrichment; notes in `answered` that GitHub answered at all (which
    /// ends a pause of all enrichment). Returns the answer and when it came.
    async fn ask(
        &self,
        path: &str,
        etag: Option<&str>,
        answered: &AtomicBool,
        deadline: Deadline,
    ) -> (Result<Fetched, GithubError>, DateTime<Utc>) {
        let answer = self
            .github
            .get_before(path, etag, Purpose::Enrich, deadline)
            .await;
        if answer.is_ok() {
            answered.store(true, Ordering::Relaxed);
        }
        (answer, self.clock.now())
    }

    /// Asks for one account or repository by its id (`/user/{id}`, `/repositories/{id}`),
    /// which answers with its current login or full name; a 404 there means it is gone.
    async fn fetch_by_id(
        &self,
        kind: Kind,
        id: i64,
        name: &str,
        answered: &AtomicBool,
        deadline: Deadline,
    ) -> Result<Entity, EnrichError> {
        let path = match kind {
            Kind::Actor => format!("/user/{id}"),
            Kind::Repo => format!("/repositories/{id}"),
        };
        let (answer, now) = self.ask(&path, None, answered, deadline).await;
        Ok(match answer {
            Ok(Fetched::Ok { body, etag, .. }) => {
                match serde_json::from_slice::<serde_json::Value>(&body) {
                    Ok(v) => match v.get("id").and_then(|x| x.as_i64()) {
                        Some(other) if other != id => {
                            Entity::Failed(format!("{path}: answered for id {other}"))
                        }
                        _ => {
                            // Stored under its current name (the answer's), found by id.
                            cache::put_ok(&self.pool, kind, id, name, &v, etag.as_deref(), now)
                                .await?;
                            info!(kind = kind.as_str(), id, old_name = %name, "found under a new name by its id");
                            Entity::Ok
                        }
                    },
                    Err(e) => Entity::Failed(format!("{path}: invalid JSON: {e}")),
                }
            }
            Ok(Fetched::NotModified { .. }) => {
                Entity::Failed(format!("{path}: 304 to an unconditional request"))
            }
            Ok(Fetched::Gone { .. }) => {
                cache::put_gone(&self.pool, kind, id, name, now).await?;
                Entity::Gone
            }
            Err(e) => self.failure(&path, e, now).await?,
        })
    }

    /// What a failed request means for the entities asked for: wait (a rate limit, or a pause
    /// of all enrichment for a failure that is not theirs), or a failed attempt.
    async fn failure(
        &self,
        path: &str,
        e: GithubError,
        now: DateTime<Utc>,
    ) -> Result<Entity, EnrichError> {
        Ok(match e.wait_until() {
            Some(until) => Entity::Deferred(until),
            // Cut short by the deadline: not an attempt of the push event's.
            None if matches!(e, GithubError::DeadlineReached { .. }) => Entity::Deferred(now),
            None if is_global(&e) => {
                let until = work::pause(
                    &self.pool,
                    now,
                    self.options.pause_first,
                    self.options.pause_longest,
                    &e.to_string(),
                )
                .await?;
                if e.is_unreachable() {
                    info!(path = %path, error_code = e.code(), error = %e, resume_at = %until, "no connection to GitHub; enrichment paused");
                } else {
                    warn!(path = %path, error_code = e.code(), error = %e, resume_at = %until, "GitHub refused a request for no reason of this push event; enrichment paused");
                }
                Entity::Deferred(until)
            }
            None => {
                if !matches!(
                    e,
                    GithubError::Server { .. } | GithubError::Transport { .. }
                ) {
                    warn!(path = %path, error_code = e.code(), error = %e, "enrichment request failed");
                }
                Entity::Failed(e.to_string())
            }
        })
    }
}

/// What the cache says about one id seen under a name.
enum Cached {
    /// Fresh (or gone within the TTL): no request.
    Settled(Entity),
    /// Ask for the name (unknown, or stale: revalidated with its ETag).
    ByName,
    /// Ask for the id: gone beyond the TTL, or the name now belongs to another id.
    ById,
}

/// `Some` when the cache answers for every id.
fn all_settled(cached: HashMap<i64, Cached>) -> Option<HashMap<i64, Entity>> {
    cached
        .into_iter()
        .map(|(id, c)| match c {
            Cached::Settled(e) => Some((id, e)),
            Cached::ByName | Cached::ById => None,
        })
        .collect()
}

/// Whether a failed request says nothing about the entity asked for, only about us or GitHub:
/// 401 (a bad or expired token), a 403 or 429 that the client did not recognize as a rate
/// limit, or no connection at all (no network). Such a failure pauses all enrichment instead
/// of counting an attempt.
pub fn is_global(e: &GithubError) -> bool {
    e.is_unreachable()
        || matches!(
            e,
            GithubError::Client {
                status: 401 | 403 | 429,
                ..
            }
        )
}

/// Wait before attempt `n + 1` of a push event: a minute, doubling, at most an hour.
fn backoff(attempt: i32) -> chrono::Duration {
    let exp = attempt.clamp(1, 7) - 1;
    chrono::Duration::minutes((1i64 << exp).min(60))
}

#[cfg(test)]
mod tests {
    use super::{backoff, is_global};
    use crate::github::GithubError;

    #[test]
    fn only_failures_that_are_not_the_entitys_pause_enrichment() {
        let client = |status| GithubError::Client {
            status,
            path: "/users/a".into(),
            message: String::new(),
        };
        for status in [401, 403, 429] {
            assert!(is_global(&client(status)), "{status}");
        }
        for status in [400, 422, 451] {
            assert!(!is_global(&client(status)), "{status}");
        }
        let server = GithubError::Server {
            status: 502,
            path: "/users/a".into(),
            attempts: 3,
            message: String::new(),
        };
        assert!(!is_global(&server));
    }

    #[test]
    fn attempts_back_off_from_a_minute_to_an_hour() {
        let mins: Vec<i64> = (1..=8).map(|a| backoff(a).num_minutes()).collect();
        assert_eq!(mins, vec![1, 2, 4, 8, 16, 32, 60, 60]);
    }
}
