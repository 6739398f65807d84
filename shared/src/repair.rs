//! Operator repairs of the enrichment work queue: put push events whose enrichment gave up
//! (or whose worker died) back to `pending` ([`retry`]), and hand the enrichment queue what
//! the database believes it never received ([`requeue`]).
//!
//! Both are safe to repeat: a retried row is `pending` and no longer matches, and a row the
//! queue took is marked `enqueued_at` and is not sent again until [`outbox::requeue_stale`]
//! judges its message lost.

use crate::outbox::{self, FlushReport};
use crate::queue::PushQueue;
use crate::store::{Ctx, StoreError};
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;
use tracing::info;

/// Rows reset per statement, so one statement never runs into `statement_timeout`.
const RETRY_BATCH: i64 = 5000;

/// How many example push ids a report keeps.
const EXAMPLES: usize = 5;

/// Which rows [`retry`] puts back to `pending`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryScope {
    /// `failed` rows only (their attempts are used up).
    Failed,
    /// `failed` rows and `in_progress` rows whose lease has run out (the worker died).
    FailedAndExpired,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryOptions {
    pub scope: RetryScope,
    /// Only push events created at or after this time.
    pub since: Option<DateTime<Utc>>,
}

/// What a [`retry`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RetryReport {
    /// Rows put back to `pending`, by the status they had.
    pub by_previous_status: BTreeMap<String, u64>,
    pub retried: u64,
    /// The most frequent previous errors (first line, at most 120 characters) and their counts.
    pub top_errors: Vec<(String, u64)>,
    pub examples: Vec<i64>,
    pub retried_at: DateTime<Utc>,
}

/// Puts the rows `opts` selects back to `pending`, due now, with `attempts` 0, no lease and
/// back in the outbox (`enqueued_at` NULL: the next flush, or [`requeue`], sends them).
/// Each row's previous status, attempts and error go to `enrichment_retries` in the same
/// statement. Rows another transaction holds are skipped (they are being worked on).
pub async fn retry(
    pool: &Pool,
    opts: &RetryOptions,
    now: DateTime<Utc>,
) -> Result<RetryReport, StoreError> {
    let with_expired = opts.scope == RetryScope::FailedAndExpired;
    let mut report = RetryReport {
        retried_at: now,
        ..RetryReport::default()
    };
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let client = pool.get().await?;
    loop {
        let rows = client
            .query(
                "WITH picked AS (
                    SELECT push_id, enrichment_status, attempts, last_error, next_attempt_at, locked_until
                    FROM push_events
                    WHERE (enrichment_status = 'failed'
                           OR ($2 AND enrichment_status = 'in_progress' AND locked_until <= $1))
                      AND ($3::timestamptz IS NULL OR created_at >= $3)
                    ORDER BY push_id
                    LIMIT $4
                    FOR UPDATE SKIP LOCKED),
                 history AS (
                    INSERT INTO enrichment_retries
                        (push_id, retried_at, previous_status, attempts, last_error, next_attempt_at, locked_until)
                    SELECT push_id, $1, enrichment_status, attempts, last_error, next_attempt_at, locked_until
                    FROM picked)
                 UPDATE push_events p
                 SET enrichment_status = 'pending', attempts = 0, next_attempt_at = $1,
                     locked_until = NULL, last_error = NULL, enqueued_at = NULL
                 FROM picked
                 WHERE p.push_id = picked.push_id
                 RETURNING p.push_id, picked.enrichment_status, picked.last_error",
                &[&now, &with_expired, &opts.since, &RETRY_BATCH],
            )
            .await
            .ctx("put failed push events back to pending")?;
        for r in &rows {
            let id: i64 = r.get(0);
            let status: String = r.get(1);
            let error: Option<String> = r.get(2);
            *report.by_previous_status.entry(status).or_default() += 1;
            *errors.entry(error_key(error.as_deref())).or_default() += 1;
            if report.examples.len() < EXAMPLES {
                report.examples.push(id);
            }
        }
        report.retried += rows.len() as u64;
        if (rows.len() as i64) < RETRY_BATCH {
            break;
        }
    }
    let mut top: Vec<(String, u64)> = errors.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    top.truncate(EXAMPLES);
    report.top_errors = top;
    if report.retried > 0 {
        info!(
            retried = report.retried,
            by_previous_status = ?report.by_previous_status,
            "push events put back to pending"
        );
    }
    Ok(report)
}

/// An error's first line, shortened, as a key to count by ("-" for none).
fn error_key(error: Option<&str>) -> String {
    let Some(e) = error else {
        return "-".to_owned();
    };
    let line = e.lines().next().unwrap_or("").trim();
    match line.char_indices().nth(120) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line.to_owned(),
    }
}

/// What a [`requeue`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RequeueReport {
    /// False when an ingest cycle held the feed's lock: it sends the outbox itself, and
    /// nothing was done here.
    pub ran: bool,
    /// Rows whose message was judged lost and put back in the outbox.
    pub lost_put_back: u64,
    /// Rows in the outbox before sending (lost ones included).
    pub outbox_before: i64,
    /// Push ids the queue took.
    pub sent: u64,
    /// Push ids refused in the batch where sending stopped.
    pub failed: u64,
    pub batches: u32,
    pub error: Option<String>,
    /// Still in the outbox: refused, or due later than a delivery delay can reach (sent by a
    /// later flush).
    pub outbox_after: i64,
}

/// Sends the enrichment queue every pending push id it never received or whose message was
/// lost: [`outbox::flush_when_idle`] (which runs [`outbox::requeue_stale`] with
/// `requeue_after`, then [`outbox::flush`]) with no limit.
pub async fn requeue(
    pool: &Pool,
    queue: &dyn PushQueue,
    now: DateTime<Utc>,
    requeue_after: Duration,
) -> Result<RequeueReport, StoreError> {
    let before = outbox::pending(pool).await?;
    let flushed = outbox::flush_when_idle(pool, queue, now, usize::MAX, requeue_after).await?;
    let after = outbox::pending(pool).await?;
    let mut report = RequeueReport {
        ran: flushed.is_some(),
        outbox_before: before,
        outbox_after: after,
        ..RequeueReport::default()
    };
    if let Some(FlushReport {
        sent,
        failed,
        batches,
        error,
        requeued,
    }) = flushed
    {
        report.lost_put_back = requeued;
        report.outbox_before += requeued as i64;
        report.sent = sent;
        report.failed = failed;
        report.batches = batches;
        report.error = error.map(|e| e.to_string());
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::error_key;

    #[test]
    fn error_keys_are_first_lines_shortened() {
        assert_eq!(error_key(None), "-");
        assert_eq!(error_key(Some("HTTP 502\nbody")), "HTTP 502");
        let long = "x".repeat(200);
        let key = error_key(Some(&long));
        assert_eq!(key.chars().count(), 121);
        assert!(key.ends_with('…'));
    }
}
