//! The enrich Lambda: an SQS batch of `{"push_id": N}` messages → the enrichment service →
//! an `SqsBatchResponse` naming only the messages that must come back.
//!
//! | outcome | message |
//! |---|---|
//! | `Completed`, `Gone`, `AlreadyDone` (a duplicate delivery) | acked |
//! | `UnknownPushId`, a body that is not `{"push_id": N}` | acked, logged |
//! | `Failed { retryable: false }` (the row is `failed` for good) | acked, logged |
//! | `Failed { retryable: true }` | batch item failure: back after the visibility timeout |
//! | `Deferred { until }` (budget spent) | batch item failure, visible again at `until` (≤ 12 h) |
//!
//! An error of the whole service (the database is down) fails the invocation: Lambda then
//! returns every message of the batch to the queue.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use chrono::{DateTime, Utc};
use ghevents::aws::sqs::{push_id_of, queue_url_from_arn, SqsQueue, MAX_VISIBILITY};
use ghevents::clock::Clock;
use ghevents::deadline::Deadline;
use ghevents::enrich::{EnrichError, Enricher, ItemOutcome};
use ghevents::raw::QueueError;
use lambda_runtime::{Diagnostic, LambdaEvent};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
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
}

/// Postpones a received message: it becomes visible again after `delay`.
#[async_trait::async_trait]
pub trait Postpone: Send + Sync {
    async fn postpone(
        &self,
        queue_arn: &str,
        receipt_handle: &str,
        delay: Duration,
    ) -> Result<(), QueueError>;
}

/// [`Postpone`] with SQS `ChangeMessageVisibility`. The queue is the one the message came
/// from (its ARN is in the event), unless `queue_url` is given.
pub struct SqsPostpone {
    pub client: aws_sdk_sqs::Client,
    pub queue_url: Option<String>,
}

#[async_trait::async_trait]
impl Postpone for SqsPostpone {
    async fn postpone(
        &self,
        queue_arn: &str,
        receipt_handle: &str,
        delay: Duration,
    ) -> Result<(), QueueError> {
        let queue_url = self
            .queue_url
            .clone()
            .or_else(|| queue_url_from_arn(queue_arn))
            .ok_or_else(|| QueueError {
                context: "ChangeMessageVisibility".into(),
                message: format!("no queue URL for {queue_arn:?}"),
                retryable: false,
            })?;
        SqsQueue {
            client: self.client.clone(),
            queue_url,
        }
        .change_visibility(receipt_handle, delay)
        .await
    }
}

pub struct Deps<E, P> {
    pub enricher: E,
    pub postpone: P,
    pub clock: Arc<dyn Clock>,
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

/// How long until `until`, capped at SQS's 12 hours (never negative).
pub fn delay_until(until: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (until - now)
        .to_std()
        .unwrap_or_default()
        .min(MAX_VISIBILITY)
}

pub async fn handler<E: EnrichPushes, P: Postpone>(
    deps: &Deps<E, P>,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, HandlerError> {
    // Every wait of this invocation ends before the function's timeout.
    let deadline = Deadline::from_epoch_millis(event.context.deadline);
    let records = event.payload.records;
    let mut response = SqsBatchResponse::default();
    // (message id, push id, receipt handle, queue ARN) of each usable message.
    let mut work: Vec<(String, i64, Option<String>, Option<String>)> =
        Vec::with_capacity(records.len());
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
            Some(push_id) => work.push((message_id, push_id, r.receipt_handle, r.event_source_arn)),
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
    let outcomes: HashMap<i64, ItemOutcome> = if ids.is_empty() {
        HashMap::new()
    } else {
        match deps.enricher.process_push_ids(&ids, deadline).await {
            Ok(v) => v.into_iter().collect(),
            Err(source) => {
                warn!(error = %source, count = ids.len(), error_code = "enrich_batch_failed", "enrichment failed for the whole batch");
                return Err(HandlerError::Enrich {
                    count: ids.len(),
                    source,
                });
            }
        }
    };

    let now = deps.clock.now();
    let (mut acked, mut retry, mut deferred) = (0usize, 0usize, 0usize);
    for (message_id, push_id, receipt, arn) in work {
        match outcomes.get(&push_id) {
            Some(ItemOutcome::Completed | ItemOutcome::Gone | ItemOutcome::AlreadyDone) => {
                acked += 1
            }
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
                retry += 1;
                info!(message_id = %message_id, push_id, error = %error, "enrichment attempt failed; the message comes back");
                response.add_failure(message_id);
            }
            Some(ItemOutcome::Deferred { until }) => {
                deferred += 1;
                let delay = delay_until(*until, now);
                match (receipt.as_deref(), arn.as_deref()) {
                    (Some(receipt), Some(arn)) => {
                        if let Err(e) = deps.postpone.postpone(arn, receipt, delay).await {
                            // Still reported as failed: it comes back after the queue's
                            // visibility timeout instead.
                            warn!(message_id = %message_id, push_id, error = %e, error_code = "postpone_failed", "could not postpone the message");
                        }
                    }
                    _ => {
                        warn!(message_id = %message_id, push_id, error_code = "postpone_failed", "no receipt handle or queue ARN to postpone with")
                    }
                }
                response.add_failure(message_id);
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
        acked, poison, retry, deferred, "enrich batch"
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn deferral_delays_are_capped_at_twelve_hours_and_never_negative() {
        let now = Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap();
        assert_eq!(
            delay_until(now + chrono::Duration::seconds(90), now),
            Duration::from_secs(90)
        );
        assert_eq!(
            delay_until(now + chrono::Duration::days(2), now),
            Duration::from_secs(12 * 3600)
        );
        assert_eq!(
            delay_until(now - chrono::Duration::seconds(5), now),
            Duration::ZERO
        );
    }
}
