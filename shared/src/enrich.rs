//! Enrichment of push events with their actor (`/users/{login}`) and repository
//! (`/repos/{owner}/{repo}`), cached in Postgres, paid for from the budget shared with ingest
//! (enrichment never touches ingest's reserve).
//!
//! - A fresh cache entry (younger than the TTL) costs no request; a stale one is revalidated
//!   with its ETag, and a 304 refreshes it.
//! - 404/410 → `gone`: the push event completes, and the entry is never requested again.
//! - 5xx / timeouts are retried inside the call (the client's backoff), then count as a failed
//!   attempt of the push event; after `max_attempts` it is `failed` with its last error.
//! - Budget spent → no request; the work goes back to pending until the reset.
//! - One request per distinct actor or repository, even when many push events and several
//!   workers need it at once (a per-entity fetch lease; the others wait briefly for its
//!   result, and defer their push events if it takes too long).

use crate::budget::Purpose;
use crate::clock::{sleep_or_stop, Clock};
use crate::github::{Fetched, GithubClient, GithubError};
use crate::store::cache::{self, Kind};
use crate::store::work::{self, Claim, WorkItem};
use crate::store::StoreError;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use futures::StreamExt;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{info, warn};

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
}

#[derive(Debug, Clone, PartialEq)]
enum Entity {
    Ok,
    Gone,
    Failed(String),
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
}

pub struct Enricher {
    pub pool: Pool,
    pub github: Arc<GithubClient>,
    pub clock: Arc<dyn Clock>,
    pub options: EnrichOptions,
}

impl Enricher {
    /// The queue path: enriches these push ids (duplicates and unknown ids included).
    pub async fn process_push_ids(
        &self,
        ids: &[i64],
    ) -> Result<Vec<(i64, ItemOutcome)>, EnrichError> {
        let now = self.clock.now();
        let claims = work::claim_ids(&self.pool, ids, now, now + self.lease()).await?;
        crate::failpoints::hit("enrich::inside_lease");
        let mut out = Vec::with_capacity(ids.len());
        let mut items = Vec::new();
        for id in ids {
            match claims.get(id) {
                Some(Claim::Claimed(item)) => items.push(item.clone()),
                Some(Claim::Done) => out.push((*id, ItemOutcome::AlreadyDone)),
                Some(Claim::Busy) => out.push((
                    *id,
                    ItemOutcome::Failed {
                        retryable: true,
                        error: "being enriched by another worker".into(),
                    },
                )),
                Some(Claim::Unknown) | None => out.push((*id, ItemOutcome::UnknownPushId)),
            }
        }
        items.dedup_by_key(|i| i.push_id);
        out.extend(self.process(items).await?);
        Ok(out)
    }

    /// The Postgres path: claims due work in batches until none is due or the budget is spent.
    pub async fn drain(&self) -> Result<DrainSummary, EnrichError> {
        let mut s = DrainSummary::default();
        let before = self.github.requests_sent();
        loop {
            let now = self.clock.now();
            let items =
                work::claim_due(&self.pool, now, now + self.lease(), self.options.batch_size)
                    .await?;
            if items.is_empty() {
                break;
            }
            crate::failpoints::hit("enrich::inside_lease");
            s.batches += 1;
            for (_, outcome) in self.process(items).await? {
                match outcome {
                    ItemOutcome::Completed => s.completed += 1,
                    ItemOutcome::Gone => s.gone += 1,
                    ItemOutcome::Failed {
                        retryable: true, ..
                    } => s.failed_attempts += 1,
                    ItemOutcome::Failed {
                        retryable: false, ..
                    } => s.failed_final += 1,
                    ItemOutcome::Deferred { until } => {
                        s.deferred += 1;
                        s.deferred_until = Some(until);
                    }
                    ItemOutcome::AlreadyDone | ItemOutcome::UnknownPushId => {}
                }
            }
            if s.deferred_until.is_some() {
                break;
            }
        }
        s.requests = self.github.requests_sent() - before;
        info!(
            batches = s.batches,
            requests = s.requests,
            completed = s.completed,
            gone = s.gone,
            failed_attempts = s.failed_attempts,
            failed_final = s.failed_final,
            deferred = s.deferred,
            deferred_until = ?s.deferred_until,
            "enrichment drain"
        );
        Ok(s)
    }

    /// Drains, then waits for the next row to fall due (or the budget to reset), until `stop`.
    pub async fn run_loop(
        &self,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), EnrichError> {
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            let summary = match self.drain().await {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, error_code = "enrich_store", "enrichment drain failed; retrying later");
                    DrainSummary::default()
                }
            };
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

    fn lease(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.options.lease).unwrap_or(chrono::Duration::minutes(5))
    }

    async fn process(&self, items: Vec<WorkItem>) -> Result<Vec<(i64, ItemOutcome)>, EnrichError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        // One request per login / repository name (GitHub ignores their case); several ids can
        // share one (a name deleted and taken again), and the answer's id says which it is.
        let mut wanted: BTreeMap<(Kind, String), (String, BTreeSet<i64>)> = BTreeMap::new();
        for i in &items {
            for (kind, name, id) in [
                (Kind::Actor, &i.actor_login, i.actor_id),
                (Kind::Repo, &i.repo_name, i.repo_id),
            ] {
                wanted
                    .entry((kind, name.to_lowercase()))
                    .or_insert_with(|| (name.clone(), BTreeSet::new()))
                    .1
                    .insert(id);
            }
        }
        // Once the budget says wait, nothing more is sent in this batch.
        let deferred: Mutex<Option<DateTime<Utc>>> = Mutex::new(None);
        let per_name: Vec<Vec<((Kind, i64), Entity)>> = futures::stream::iter(wanted)
            .map(|((kind, _), (name, ids))| {
                let deferred = &deferred;
                async move {
                    if let Some(until) = *deferred.lock().expect("lock") {
                        return Ok(ids
                            .iter()
                            .map(|id| ((kind, *id), Entity::Deferred(until)))
                            .collect());
                    }
                    let found = self.ensure(kind, &name, &ids).await?;
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
        let mut out = Vec::with_capacity(items.len());
        let (mut done, mut gone) = (Vec::new(), Vec::new());
        let mut defer: BTreeMap<DateTime<Utc>, Vec<i64>> = BTreeMap::new();
        for i in &items {
            let a = &results[&(Kind::Actor, i.actor_id)];
            let r = &results[&(Kind::Repo, i.repo_id)];
            match (a, r) {
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
    /// under it), with at most one request.
    async fn ensure(
        &self,
        kind: Kind,
        name: &str,
        ids: &BTreeSet<i64>,
    ) -> Result<HashMap<i64, Entity>, EnrichError> {
        let started = tokio::time::Instant::now();
        loop {
            if let Some(all) = self.settled(kind, name, ids).await? {
                return Ok(all);
            }
            let now = self.clock.now();
            // The lease outlives a request with all its retries.
            let until = now + chrono::Duration::minutes(5);
            if cache::take_fetch_lease(&self.pool, kind, name, now, until).await? {
                crate::failpoints::hit("enrich::inside_fetch_lease");
                let result = self.fetch_leased(kind, name, ids).await;
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

    /// `Some` when the cache already answers for every id: fresh, gone for good, or gone
    /// because the name was recently answered with another id.
    async fn settled(
        &self,
        kind: Kind,
        name: &str,
        ids: &BTreeSet<i64>,
    ) -> Result<Option<HashMap<i64, Entity>>, EnrichError> {
        let now = self.clock.now();
        let ttl =
            chrono::Duration::from_std(self.options.cache_ttl).unwrap_or(chrono::Duration::MAX);
        let fresh_since = now
            .checked_sub_signed(ttl)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let mut out = HashMap::with_capacity(ids.len());
        let mut unknown = Vec::new();
        for id in ids {
            match cache::get(&self.pool, kind, *id).await? {
                Some(e) if e.gone => {
                    out.insert(*id, Entity::Gone);
                }
                Some(e) if e.fetched_at > fresh_since => {
                    out.insert(*id, Entity::Ok);
                }
                Some(_) => return Ok(None),
                None => unknown.push(*id),
            }
        }
        if !unknown.is_empty() {
            match cache::fresh_id_for_name(&self.pool, kind, name, fresh_since).await? {
                Some(owner) if !unknown.contains(&owner) => {
                    for id in unknown {
                        cache::put_gone(&self.pool, kind, id, name, now).await?;
                        out.insert(id, Entity::Gone);
                    }
                }
                _ => return Ok(None),
            }
        }
        Ok(Some(out))
    }

    async fn fetch_leased(
        &self,
        kind: Kind,
        name: &str,
        ids: &BTreeSet<i64>,
    ) -> Result<HashMap<i64, Entity>, EnrichError> {
        if let Some(all) = self.settled(kind, name, ids).await? {
            return Ok(all);
        }
        let mut held = Vec::new();
        for id in ids {
            if let Some(e) = cache::get(&self.pool, kind, *id).await? {
                held.push((*id, e));
            }
        }
        let path = match kind {
            Kind::Actor => format!("/users/{name}"),
            Kind::Repo => format!("/repos/{name}"),
        };
        // Revalidate what we hold (the newest entry that is not gone).
        let etag = held
            .iter()
            .filter(|(_, e)| !e.gone)
            .max_by_key(|(_, e)| e.fetched_at)
            .and_then(|(_, e)| e.etag.as_deref());
        let answer = self.github.get(&path, etag, Purpose::Enrich).await;
        let now = self.clock.now();
        let all =
            |e: Entity| -> HashMap<i64, Entity> { ids.iter().map(|id| (*id, e.clone())).collect() };
        Ok(match answer {
            Ok(Fetched::Ok { body, etag, .. }) => {
                match serde_json::from_slice::<serde_json::Value>(&body) {
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
                                // The name now belongs to another account or repository: ours is gone.
                                cache::put_gone(&self.pool, kind, *id, name, now).await?;
                                out.insert(*id, Entity::Gone);
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
                    let e = match held.iter().find(|(h, _)| h == id) {
                        Some((_, e)) if e.gone => Entity::Gone,
                        Some(_) => {
                            cache::touch(&self.pool, kind, *id, now).await?;
                            Entity::Ok
                        }
                        None => Entity::Failed(format!("{path}: 304 for an entry not held")),
                    };
                    out.insert(*id, e);
                }
                out
            }
            Ok(Fetched::Gone { .. }) => {
                for id in ids {
                    cache::put_gone(&self.pool, kind, *id, name, now).await?;
                }
                all(Entity::Gone)
            }
            Err(e) => match e.wait_until() {
                Some(until) => all(Entity::Deferred(until)),
                None => {
                    if !matches!(
                        e,
                        GithubError::Server { .. } | GithubError::Transport { .. }
                    ) {
                        warn!(path = %path, error_code = e.code(), error = %e, "enrichment request failed");
                    }
                    all(Entity::Failed(e.to_string()))
                }
            },
        })
    }
}

/// Wait before attempt `n + 1` of a push event: a minute, doubling, at most an hour.
fn backoff(attempt: i32) -> chrono::Duration {
    let exp = attempt.clamp(1, 7) - 1;
    chrono::Duration::minutes((1i64 << exp).min(60))
}

#[cfg(test)]
mod tests {
    use super::backoff;

    #[test]
    fn attempts_back_off_from_a_minute_to_an_hour() {
        let mins: Vec<i64> = (1..=8).map(|a| backoff(a).num_minutes()).collect();
        assert_eq!(mins, vec![1, 2, 4, 8, 16, 32, 60, 60]);
    }
}
