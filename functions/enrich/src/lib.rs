//! The enrich Lambda: an SQS batch of `{"push_id": N}` messages → the enrichment service →
//! an `SqsBatchResponse` naming only the messages that must come back.
//!
//! The push event's row is the truth and a message only a nudge: whatever happens to a push
//! event, its message is acked, and a row that must be tried again is put back in the outbox
//! (`enqueued_at` NULL, `next_attempt_at` its due time), which sends a new message for that
//! time (see `ghevents_core::outbox`). A message never waits on the queue for a budget or a lease,
//! so no push event is lost to `maxReceiveCount` or to the retention period.
//!
//! | outcome | message |
//! |---|---|
//! | `Completed`, `Gone`, `AlreadyDone` (a duplicate delivery) | acked |
//! | `UnknownPushId`, a body that is not `{"push_id": N}` | acked, logged |
//! | `Failed { retryable: false }` (the row is `failed` for good) | acked, logged |
//! | `Failed { retryable: true }` (pending again, back in the outbox) | acked |
//! | `Deferred { until }` (budget spent, pause, another worker's fetch) | acked; row back in the outbox |
//! | `NotDue { at }` (the message came early: nothing spent) | acked; row back in the outbox |
//! | `Busy` (another worker holds the row) | acked: that worker finishes it or puts it back |
//!
//! Every invocation prints one CloudWatch Embedded Metric Format line on stdout (namespace
//! `ghevents`, dimension `FunctionName`): what became of the batch (`EnrichCompleted`,
//! `EnrichGone`, `EnrichFailed`, `EnrichFailedAttempts`, `EnrichDeferred`), what it cost
//! (`EnrichRequests`, `EnrichCacheHits`), and the backlog left (`EnrichBacklog`,
//! `EnrichBacklogAgeSeconds`), with details as properties (`EnrichFailedAttempts`,
//! `EnrichPoisonMessages`, `EnrichBatchFailed`); see [`emf_line`].
//!
//! An error of the whole service (the database is down) fails the invocation: Lambda then
//! returns every message of the batch to the queue. Should they reach the dead-letter queue,
//! the rows are still `pending` and the outbox's sweep sends them again.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use chrono::{DateTime, Utc};
use ghevents_core::aws::sqs::push_id_of;
use ghevents_core::clock::Clock;
use ghevents_core::deadline::Deadline;
use ghevents_core::enrich::{DrainSummary, EnrichError, Enricher, ItemOutcome};
use ghevents_core::metrics::{enrich_figures, Emf, MetricSink, Observed, Unit, NAMESPACE};
use lambda_runtime::{Diagnostic, LambdaEvent};
use std::collections::HashMap;
use std::sync::Arc;
use tracing::{info, warn};

/// The enrichment service. [`Enricher`] in production.
#[async_trait::async_trait]
pub trait EnrichPushes: Send + Sync {
    /// Ends before `deadline`; what it had no time for comes back `Deferred`.
    async fn process_push_ids(
        &self,
        ids: &[i64],
        deadline: Deadline,
    ) -> Result<Vec<(i64, ItemOutcome)>, EnrichError>;

    /// GitHub requests sent and names answered from the cache so far (the handler reports
    /// the difference over its batch).
    fn sent_and_cache_hits(&self) -> (u64, u64) {
        (0, 0)
    }

    /// The enrichment backlog as stored (for the metric line); None when unreadable.
    async fn observe(&self, _now: DateTime<Utc>) -> Option<Observed> {
        None
    }
}

#[async_trait::async_trait]
impl EnrichPushes for Enricher {
    async fn process_push_ids(
        &self,
        ids: &[i64],
        deadline: Deadline,
    ) -> Result<Vec<(i64, ItemOutcome)>, EnrichError> {
        Enricher::process_push_ids_before(self, ids, deadline).await
    }

    fn sent_and_cache_hits(&self) -> (u64, u64) {
        (self.github.requests_sent(), self.cache_hits())
    }

    async fn observe(&self, now: DateTime<Utc>) -> Option<Observed> {
        match ghevents_core::store::cycles::observe(&self.pool, now).await {
            Ok(o) => Some(o),
            Err(e) => {
                warn!(error = %e, error_code = "observe_failed", "backlog not measured for the metric line");
                None
            }
        }
    }
}

pub struct Deps<E> {
    pub enricher: E,
    pub clock: Arc<dyn Clock>,
    /// Where the invocation's metric line goes ([`ghevents_core::metrics::Stdout`] in Lambda).
    pub metrics: Arc<dyn MetricSink>,
    /// `AWS_LAMBDA_FUNCTION_NAME`: the metrics' dimension.
    pub function_name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("enrichment failed for the whole batch ({count} push ids): {source}")]
    Enrich {
        count: usize,
        #[source]
        source: EnrichError,
    },
}

impl HandlerError {
    pub fn is_retryable(&self) -> bool {
        match self {
            HandlerError::Enrich { source, .. } => source.is_retryable(),
        }
    }
}

impl From<HandlerError> for Diagnostic {
    fn from(e: HandlerError) -> Self {
        let error_type = if e.is_retryable() {
            "Retryable"
        } else {
            "NonRetryable"
        };
        Diagnostic {
            error_type: error_type.into(),
            error_message: e.to_string(),
        }
    }
}

pub async fn handler<E: EnrichPushes>(
    deps: &Deps<E>,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, HandlerError> {
    // Every wait of this invocation ends before the function's timeout.
    let deadline = Deadline::from_epoch_millis(event.context.deadline);
    let records = event.payload.records;
    let mut response = SqsBatchResponse::default();
    // (message id, push id) of each usable message.
    let mut work: Vec<(String, i64)> = Vec::with_capacity(records.len());
    let mut poison = 0usize;
    for r in records {
        let Some(message_id) = r.message_id.clone() else {
            // NOTE: acked, not retried: a record without a message id cannot be reported as
            // failed anyway; Lambda always sets it.
            warn!(
                error_code = "sqs_record_without_id",
                "SQS record without a message id skipped"
            );
            continue;
        };
        match r.body.as_deref().and_then(push_id_of) {
            Some(push_id) => work.push((message_id, push_id)),
            None => {
                // NOTE: acked, not retried: a body that is not {"push_id": N} will never
                // become one, and retrying it would only move it to the dead-letter queue
                // after several useless invocations.
                poison += 1;
                let body = r.body.as_deref().unwrap_or("");
                warn!(message_id = %message_id, body_len = body.len(), body_start = %body.chars().take(80).collect::<String>(), error_code = "poison_message", "message is not {{\"push_id\": N}}; acked without processing");
            }
        }
    }

    let mut ids: Vec<i64> = work.iter().map(|w| w.1).collect();
    ids.sort_unstable();
    ids.dedup();
    let (sent_before, hits_before) = deps.enricher.sent_and_cache_hits();
    let result = if ids.is_empty() {
        Ok(Vec::new())
    } else {
        deps.enricher.process_push_ids(&ids, deadline).await
    };
    let mut batch = DrainSummary::default();
    for (_, outcome) in result.iter().flatten() {
        batch.add(outcome);
    }
    let (sent, hits) = deps.enricher.sent_and_cache_hits();
    batch.requests = sent.saturating_sub(sent_before);
    batch.cache_hits = hits.saturating_sub(hits_before);
    let now = deps.clock.now();
    let observed = deps.enricher.observe(now).await;
    deps.metrics.emit(&emf_line(
        &deps.function_name,
        now,
        &batch,
        poison as u64,
        result.is_err(),
        observed.as_ref(),
    ));
    let outcomes: HashMap<i64, ItemOutcome> = match result {
        Ok(v) => v.into_iter().collect(),
        Err(source) => {
            warn!(error = %source, count = ids.len(), error_code = "enrich_batch_failed", "enrichment failed for the whole batch");
            return Err(HandlerError::Enrich {
                count: ids.len(),
                source,
            });
        }
    };

    let (mut acked, mut retry, mut requeued) = (0usize, 0usize, 0usize);
    for (message_id, push_id) in work {
        match outcomes.get(&push_id) {
            Some(
                ItemOutcome::Completed
                | ItemOutcome::Gone
                | ItemOutcome::AlreadyDone
                | ItemOutcome::Busy,
            ) => acked += 1,
            Some(ItemOutcome::UnknownPushId) => {
                // NOTE: acked, not retried: no push event has this id (the row was never
                // committed, or the message is stray); retrying cannot create it.
                acked += 1;
                warn!(message_id = %message_id, push_id, error_code = "unknown_push_id", "no such push event; acked");
            }
            Some(ItemOutcome::Failed {
                retryable: false,
                error,
            }) => {
                // NOTE: acked, not retried: the push event is marked failed for good (its
                // attempts are spent); the row keeps the error.
                acked += 1;
                warn!(message_id = %message_id, push_id, error = %error, error_code = "enrich_failed_final", "enrichment failed for good; acked");
            }
            Some(ItemOutcome::Failed {
                retryable: true,
                error,
            }) => {
                // NOTE: acked: the row is pending again and back in the outbox, which sends a
                // new message when it is due.
                requeued += 1;
                info!(message_id = %message_id, push_id, error = %error, "enrichment attempt failed; the outbox sends it again when due");
            }
            Some(ItemOutcome::Deferred { until }) => {
                requeued += 1;
                info!(message_id = %message_id, push_id, until = %until, "enrichment deferred; the outbox sends it again when due");
            }
            Some(ItemOutcome::NotDue { at }) => {
                requeued += 1;
                info!(message_id = %message_id, push_id, due = %at, "message before its push event is due; the outbox sends it again then");
            }
            None => {
                retry += 1;
                warn!(message_id = %message_id, push_id, error_code = "enrich_no_outcome", "no outcome for this push id; the message comes back");
                response.add_failure(message_id);
            }
        }
    }
    info!(
        push_ids = ids.len(),
        acked, poison, retry, requeued, "enrich batch"
    );
    Ok(response)
}

/// One CloudWatch Embedded Metric Format line: namespace `ghevents`, dimension
/// `FunctionName`, the batch's figures, the stored backlog when `observed` is given, and as
/// properties `EnrichPoisonMessages` and `EnrichBatchFailed` (1 when the whole batch failed
/// and comes back).
pub fn emf_line(
    function_name: &str,
    at: DateTime<Utc>,
    batch: &DrainSummary,
    poison: u64,
    batch_failed: bool,
    observed: Option<&Observed>,
) -> String {
    let mut emf = Emf::new(NAMESPACE).dimension("FunctionName", function_name);
    emf.figures(&enrich_figures(batch))
        .property("EnrichPoisonMessages", poison)
        .property("EnrichBatchFailed", u8::from(batch_failed));
    if let Some(o) = observed {
        emf.metric("EnrichBacklog", Unit::Count, o.enrich_backlog as f64);
        if let Some(age) = o.enrich_backlog_age_secs {
            emf.metric("EnrichBacklogAgeSeconds", Unit::Seconds, age as f64);
        }
    }
    if let Some(until) = batch.deferred_until {
        emf.property("deferred_until", until);
    }
    emf.to_line(at)
}
