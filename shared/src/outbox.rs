//! The outbox of push ids waiting to be handed to the enrichment queue.
//!
//! The row is the truth, a queue message only a nudge: a push event waits for enrichment as
//! long as its row is `pending`, whatever became of its messages.
//!
//! - A new push event is committed with `enqueued_at` NULL. Right after the commit the ingest
//!   cycle sends its ids to the [`PushQueue`] and marks the ones the queue took
//!   ([`mark_enqueued`]).
//! - Enrichment puts every row it sends back to `pending` (deferred for the budget, for
//!   another worker's fetch, or after a failed attempt) back in the outbox too: `enqueued_at`
//!   NULL, `next_attempt_at` its due time. Its message is acked.
//! - [`flush`] sends the rows of the outbox that are due within [`MAX_DELIVERY_DELAY`], each
//!   with a delivery delay until its `next_attempt_at`, so a message arrives when its row is
//!   due; rows due later wait for a later flush.
//! - [`requeue_stale`] puts back in the outbox rows still waiting long after their message
//!   was sent (lost: dead-letter queue, retention, a crash between a receive and the row's
//!   update), so they are sent again.
//!
//! [`flush_when_idle`] (both, run at the start of every ingest invocation) is what makes every
//! committed push id reach the queue at least once per attempt it needs.
//!
//! Only when a queue is configured: locally the Postgres worker picks pending rows directly.

use crate::queue::{PushQueue, QueueError, MAX_DELIVERY_DELAY};
use crate::store::{AdvisoryLock, Ctx, StoreError, EVENTS_FEED};
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use std::time::Duration;
use tracing::{info, warn};

/// SQS takes at most 10 messages per `SendMessageBatch`.
pub const BATCH: usize = 10;

/// How long after its message was sent a row still waiting is sent again: the enrich queue's
/// visibility timeout (720 s: a message received by an invocation that died comes back after
/// it) plus a margin. Sending again too early only costs a duplicate message (acked).
pub const REQUEUE_AFTER: Duration = Duration::from_secs(1200);

/// What a [`flush`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Ids sent and marked.
    pub sent: u64,
    /// Ids the queue refused in the last batch tried (the flush stops at the first refusal).
    pub failed: u64,
    /// `SendMessageBatch` calls made.
    pub batches: u32,
    /// Why the first refused id was refused.
    pub error: Option<QueueError>,
    /// Rows [`requeue_stale`] put back in the outbox first ([`flush_when_idle`] only).
    pub requeued: u64,
}

/// Push events waiting for enrichment with no message on the queue (new, or put back).
pub async fn pending(pool: &Pool) -> Result<i64, StoreError> {
    let client = pool.get().await?;
    let row = client
        .query_one(
            "SELECT count(*) FROM push_events
             WHERE enqueued_at IS NULL AND enrichment_status IN ('pending', 'in_progress')",
            &[],
        )
        .await
        .ctx("count outbox")?;
    Ok(row.get(0))
}

/// Marks `push_ids` as handed to the queue at `now`. Returns how many rows changed (rows
/// already marked keep their first time).
pub async fn mark_enqueued(
    pool: &Pool,
    push_ids: &[i64],
    now: DateTime<Utc>,
) -> Result<u64, StoreError> {
    if push_ids.is_empty() {
        return Ok(0);
    }
    let client = pool.get().await?;
    client
        .execute(
            "UPDATE push_events SET enqueued_at = $2 WHERE push_id = ANY($1) AND enqueued_at IS NULL",
            &[&push_ids, &now],
        )
        .await
        .ctx("mark push ids enqueued")
}

/// Puts back in the outbox (`enqueued_at` NULL) the rows still waiting for enrichment whose
/// message went out more than `requeue_after` before they were due (or before `now`, when
/// they were due earlier): that message is lost. Also the rows whose lease has run out: the
/// worker that held it died, and a message that met the live lease was acked as busy.
/// Returns how many rows.
pub async fn requeue_stale(
    pool: &Pool,
    now: DateTime<Utc>,
    requeue_after: Duration,
) -> Result<u64, StoreError> {
    let after = chrono::Duration::from_std(requeue_after).unwrap_or(chrono::Duration::hours(1));
    let client = pool.get().await?;
    let n = client
        .execute(
            "UPDATE push_events SET enqueued_at = NULL
             WHERE enqueued_at IS NOT NULL
               AND ((enrichment_status = 'pending' AND greatest(enqueued_at, next_attempt_at) < $1)
                    OR (enrichment_status = 'in_progress' AND locked_until <= $2))",
            &[&(now - after), &now],
        )
        .await
        .ctx("requeue stale outbox rows")?;
    if n > 0 {
        warn!(
            rows = n,
            error_code = "enrich_message_lost",
            "push events still waiting long after their message was sent; sending them again"
        );
    }
    Ok(n)
}

/// Sends up to `limit` push ids of the outbox that are due within [`MAX_DELIVERY_DELAY`],
/// earliest due first, in batches of [`BATCH`], each with a delivery delay until its
/// `next_attempt_at`, and marks each id the queue took. Each batch is selected
/// `FOR UPDATE SKIP LOCKED` and marked in the same transaction, so two flushes running at
/// once never send the same rows. Stops at the first batch with a refusal (the rest wait for
/// the next flush). Rows whose enrichment is already over (completed or failed) are not sent.
pub async fn flush(
    pool: &Pool,
    queue: &dyn PushQueue,
    now: DateTime<Utc>,
    limit: usize,
) -> Result<FlushReport, StoreError> {
    let mut report = FlushReport::default();
    while (report.sent as usize) < limit {
        let take = i64::try_from(BATCH.min(limit - report.sent as usize)).unwrap_or(10);
        let mut client = pool.get().await?;
        let tx = client.transaction().await.ctx("begin outbox flush")?;
        let horizon = now
            + chrono::Duration::from_std(MAX_DELIVERY_DELAY).unwrap_or(chrono::Duration::zero());
        let items: Vec<(i64, Duration)> = tx
            .query(
                "SELECT push_id, next_attempt_at FROM push_events
                 WHERE enqueued_at IS NULL AND enrichment_status IN ('pending', 'in_progress')
                   AND next_attempt_at <= $2
                 ORDER BY next_attempt_at, push_id
                 LIMIT $1
                 FOR UPDATE SKIP LOCKED",
                &[&take, &horizon],
            )
            .await
            .ctx("select outbox batch")?
            .iter()
            .map(|r| {
                let due: DateTime<Utc> = r.get(1);
                (r.get(0), (due - now).to_std().unwrap_or_default())
            })
            .collect();
        if items.is_empty() {
            tx.commit().await.ctx("end outbox flush")?;
            break;
        }
        let sent = queue.send_delayed(&items).await;
        crate::failpoints::hit("outbox::after_send");
        report.batches += 1;
        if !sent.sent.is_empty() {
            tx.execute(
                "UPDATE push_events SET enqueued_at = $2 WHERE push_id = ANY($1)",
                &[&sent.sent, &now],
            )
            .await
            .ctx("mark outbox batch")?;
        }
        tx.commit().await.ctx("commit outbox batch")?;
        report.sent += sent.sent.len() as u64;
        if let Some(e) = sent.first_error() {
            report.failed = sent.failed.len() as u64;
            report.error = Some(e.clone());
            warn!(failed = report.failed, sent = report.sent, error = %e, error_code = "outbox_send_failed", "outbox flush stopped at a refused batch");
            break;
        }
    }
    if report.sent > 0 {
        info!(
            sent = report.sent,
            batches = report.batches,
            "outbox: sent push ids left over or put back"
        );
    }
    Ok(report)
}

/// [`requeue_stale`] then [`flush`], unless an ingest cycle is running right now (it holds
/// the feed's cycle lock): that cycle is about to send the rows it just committed, and
/// flushing them too would only send them twice. Returns `None` when it did not flush.
pub async fn flush_when_idle(
    pool: &Pool,
    queue: &dyn PushQueue,
    now: DateTime<Utc>,
    limit: usize,
    requeue_after: Duration,
) -> Result<Option<FlushReport>, StoreError> {
    let Some(lock) = AdvisoryLock::try_feed(pool, EVENTS_FEED).await? else {
        info!("an ingest cycle is running; the outbox is left to it and the next invocation");
        return Ok(None);
    };
    let result = match requeue_stale(pool, now, requeue_after).await {
        Ok(requeued) => flush(pool, queue, now, limit)
            .await
            .map(|r| FlushReport { requeued, ..r }),
        Err(e) => Err(e),
    };
    if let Err(e) = lock.release().await {
        // The lock's session was closed, which releases it; the flush's result stands.
        warn!(error = %e, "feed lock not released cleanly after an outbox flush");
    }
    result.map(Some)
}
