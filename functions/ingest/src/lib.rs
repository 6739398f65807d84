//! The ingest Lambda: one invocation (an EventBridge schedule tick) = the outbox flush, then
//! one ingest cycle.
//!
//! - Outbox first: push ids committed by an earlier invocation but never handed to the queue
//!   (it crashed or the queue failed after the commit), and those enrichment put back for a
//!   later attempt, are sent when due (with a delivery delay); rows whose message was lost
//!   long ago are sent again (see `ghevents_core::outbox`).
//! - Then one [`Ingestor::run_cycle_before`] the invocation's deadline (`Context::deadline`).
//!   `NotDue`, `Busy`, `RateLimited` and `DeadlineReached` are successful
//!   invocations that did nothing; a failed cycle is an error whose diagnostic type says
//!   `Retryable` or `NonRetryable`. Either way the next schedule tick continues where the
//!   cycle stopped (stored pages are kept).
//! - A one-off invocation with the payload `{"ghevents": "migrate"}` applies pending
//!   migrations and does nothing else (see [`dispatch`]); with `MIGRATE_ON_START=false` that
//!   is the only place the functions migrate.
//! - Every invocation of the schedule prints one CloudWatch Embedded Metric Format line on
//!   stdout (namespace `ghevents`, dimension `FunctionName`): the cycle's figures
//!   (`IngestCycleSuccess`, `EventsFetched`, `NewEvents`, `Duplicates`, `Pages`,
//!   `NotModified`, `GapSuspected`, `RateRemaining`, `IngestCycleDuration`) and what the
//!   database says now (`FeedLagSeconds`, `EnrichBacklog`, `EnrichBacklogAgeSeconds`), with
//!   details as properties (`outcome`, `OutboxSent`, `IngestRequests`, `GapsLast24h`, …); see
//!   [`emf_line`] and `ghevents_core::metrics`.

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use ghevents_core::clock::Clock;
use ghevents_core::deadline::Deadline;
use ghevents_core::ingest::{outcome_str, CycleSummary, IngestError, Ingestor, Outcome};
use ghevents_core::metrics::{cycle_figures, Emf, Observed, NAMESPACE};
pub use ghevents_core::metrics::{MetricSink, Stdout};
use ghevents_core::outbox::{self, FlushReport};
use ghevents_core::queue::PushQueue;
use ghevents_core::store::{self, StoreError};
use lambda_runtime::{Diagnostic, LambdaEvent};
use serde::Serialize;
use std::sync::Arc;
use tracing::{info, warn};

/// Un-enqueued push ids sent per invocation at most (the rest wait for the next one).
pub const OUTBOX_FLUSH_LIMIT: usize = 1000;

/// One ingest cycle, ended before `deadline`. [`Ingestor`] in production; tests may stand
/// in anything.
#[async_trait::async_trait]
pub trait IngestCycle: Send + Sync {
    async fn run_cycle(&self, deadline: Deadline) -> Result<CycleSummary, IngestError>;

    /// Freshness, enrichment backlog and recent gaps as stored (for the metric line); None
    /// when they cannot be read.
    async fn observe(&self, _now: DateTime<Utc>) -> Option<Observed> {
        None
    }
}

#[async_trait::async_trait]
impl IngestCycle for Ingestor {
    async fn run_cycle(&self, deadline: Deadline) -> Result<CycleSummary, IngestError> {
        Ingestor::run_cycle_before(self, deadline).await
    }

    async fn observe(&self, now: DateTime<Utc>) -> Option<Observed> {
        match store::cycles::observe(&self.pool, now).await {
            Ok(o) => Some(o),
            Err(e) => {
                warn!(error = %e, error_code = "observe_failed", "stored state not measured for the metric line");
                None
            }
        }
    }
}

/// The outbox to flush before each cycle: only when a queue is configured.
pub struct Outbox {
    pub pool: Pool,
    pub queue: Arc<dyn PushQueue>,
    pub limit: usize,
    /// A row still waiting this long after its message was sent is sent again
    /// ([`outbox::REQUEUE_AFTER`]: more than the queue's visibility timeout).
    pub requeue_after: std::time::Duration,
}

/// What the handler borrows; built once per container.
pub struct Deps<C> {
    pub cycle: C,
    pub outbox: Option<Outbox>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<dyn MetricSink>,
    /// `AWS_LAMBDA_FUNCTION_NAME`: the metric's dimension.
    pub function_name: String,
}

/// The invocation's result, as `cargo lambda invoke` and the console show it.
#[derive(Debug, Serialize)]
pub struct Response {
    pub outcome: &'static str,
    /// Push ids the outbox flush sent (left over by earlier invocations).
    pub outbox_sent: u64,
    pub summary: CycleSummary,
}

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("ingest cycle failed ({code}): {source}")]
    Cycle {
        code: &'static str,
        retryable: bool,
        #[source]
        source: IngestError,
    },
    #[error("migrations failed: {0}")]
    Migrate(#[source] StoreError),
    #[error("unexpected payload: {0}")]
    Payload(String),
}

impl HandlerError {
    pub fn is_retryable(&self) -> bool {
        match self {
            HandlerError::Cycle { retryable, .. } => *retryable,
            HandlerError::Migrate(e) => e.is_retryable(),
            HandlerError::Payload(_) => false,
        }
    }
}

/// Whether the next invocation can do better than this one did.
pub fn cycle_error_retryable(e: &IngestError) -> bool {
    e.is_retryable()
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

/// Every invocation of the function: `{"ghevents": "migrate"}` applies pending migrations on
/// `pool` and answers `{"outcome": "migrated", "applied": N}`; anything else must be the
/// schedule's event and goes to [`handler`].
pub async fn dispatch<C: IngestCycle>(
    deps: &Deps<C>,
    pool: &Pool,
    event: LambdaEvent<serde_json::Value>,
) -> Result<serde_json::Value, HandlerError> {
    let (payload, context) = event.into_parts();
    if let Some(command) = payload.get("ghevents") {
        return match command.as_str() {
            Some("migrate") => {
                info!(request_id = %context.request_id, "migrate invocation");
                let applied = store::migrate(pool).await.map_err(|e| {
                    warn!(error = %e, error_code = "migrate_failed", "migrations failed");
                    HandlerError::Migrate(e)
                })?;
                info!(applied, "migrations applied");
                Ok(serde_json::json!({ "outcome": "migrated", "applied": applied }))
            }
            // NOTE: not retried: an unknown command stays unknown.
            _ => Err(HandlerError::Payload(format!(
                "unknown command {command} (expected \"migrate\")"
            ))),
        };
    }
    let scheduled: EventBridgeEvent = serde_json::from_value(payload).map_err(|e| {
        HandlerError::Payload(format!(
            "neither a scheduled event nor {{\"ghevents\": \"migrate\"}}: {e}"
        ))
    })?;
    let response = handler(deps, LambdaEvent::new(scheduled, context)).await?;
    serde_json::to_value(&response).map_err(|e| HandlerError::Payload(e.to_string()))
}

pub async fn handler<C: IngestCycle>(
    deps: &Deps<C>,
    event: LambdaEvent<EventBridgeEvent>,
) -> Result<Response, HandlerError> {
    let scheduled_at = event.payload.time;
    // Every wait of this invocation ends before the function's timeout.
    let deadline = Deadline::from_epoch_millis(event.context.deadline);
    info!(request_id = %event.context.request_id, scheduled_at = ?scheduled_at, source = %event.payload.source, "ingest invocation");

    let flushed = match &deps.outbox {
        Some(o) => {
            match outbox::flush_when_idle(
                &o.pool,
                o.queue.as_ref(),
                deps.clock.now(),
                o.limit,
                o.requeue_after,
            )
            .await
            {
                Ok(report) => report.unwrap_or_default(),
                Err(e) => {
                    // The cycle still runs: its rows wait in the outbox like the others.
                    warn!(error = %e, error_code = "outbox_flush_failed", "outbox not flushed");
                    FlushReport::default()
                }
            }
        }
        None => FlushReport::default(),
    };

    let result = deps.cycle.run_cycle(deadline).await;
    let now = deps.clock.now();
    let observed = deps.cycle.observe(now).await;
    let failed = result.as_ref().err().map(|e| {
        let mut s = CycleSummary::new(Outcome::Failed);
        s.error_code = Some(e.code().to_owned());
        s
    });
    let summary = result.as_ref().ok().or(failed.as_ref());
    if let Some(s) = summary {
        deps.metrics.emit(&emf_line(
            &deps.function_name,
            now,
            s,
            flushed.sent,
            observed.as_ref(),
        ));
    }
    match result {
        Ok(summary) => Ok(Response {
            outcome: outcome_str(summary.outcome),
            outbox_sent: flushed.sent,
            summary,
        }),
        Err(source) => {
            let retryable = cycle_error_retryable(&source);
            warn!(error = %source, error_code = source.code(), retryable, "ingest invocation failed");
            Err(HandlerError::Cycle {
                code: source.code(),
                retryable,
                source,
            })
        }
    }
}

pub use ghevents_core::metrics::counts_as_success;

/// One CloudWatch Embedded Metric Format line: namespace `ghevents`, dimension
/// `FunctionName`, the cycle's figures (`IngestCycleSuccess` is 1, or 0 for a cycle that did
/// not poll; a failed cycle has the property `IngestCycleFailed` 1), the stored state's
/// figures when `observed` is given, and `outcome`, `OutboxSent`, `error_code` as properties.
pub fn emf_line(
    function_name: &str,
    at: DateTime<Utc>,
    s: &CycleSummary,
    outbox_sent: u64,
    observed: Option<&Observed>,
) -> String {
    let mut emf = Emf::new(NAMESPACE).dimension("FunctionName", function_name);
    emf.figures(&cycle_figures(s))
        .property("OutboxSent", outbox_sent)
        .property("outcome", outcome_str(s.outcome));
    if let Some(o) = observed {
        emf.figures(&o.figures());
    }
    if let Some(code) = &s.error_code {
        emf.property("error_code", code);
    }
    emf.to_line(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    pub(crate) fn summary(outcome: Outcome) -> CycleSummary {
        CycleSummary {
            requests: 2,
            pages: 2,
            events_fetched: 200,
            new_events: 150,
            duplicates: 50,
            new_push_events: 40,
            ..CycleSummary::new(outcome)
        }
    }

    #[test]
    fn emf_names_the_namespace_metric_and_dimension_the_alarm_reads() {
        let at = Utc.with_ymd_and_hms(2026, 11, 27, 17, 0, 0).unwrap();
        let line = emf_line("ghevents-ingest", at, &summary(Outcome::Completed), 3, None);
        assert!(!line.contains('\n'), "one line");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["_aws"]["Timestamp"], at.timestamp_millis());
        let m = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(m["Namespace"], "ghevents");
        assert_eq!(m["Dimensions"], serde_json::json!([["FunctionName"]]));
        assert_eq!(
            m["Metrics"][0],
            serde_json::json!({"Name": "IngestCycleSuccess", "Unit": "Count"})
        );
        assert_eq!(v["FunctionName"], "ghevents-ingest");
        assert_eq!(v["IngestCycleSuccess"], 1);
        assert_eq!(
            (v["NewEvents"].as_u64(), v["OutboxSent"].as_u64()),
            (Some(150), Some(3))
        );
        assert_eq!(v["outcome"], "completed");
    }

    #[test]
    fn only_cycles_that_polled_count_as_success() {
        let at = Utc::now();
        for (outcome, value) in [
            (Outcome::Completed, 1),
            (Outcome::NotModified, 1),
            (Outcome::NotDue, 0),
            (Outcome::Busy, 0),
            (Outcome::RateLimited, 0),
        ] {
            let v: serde_json::Value =
                serde_json::from_str(&emf_line("f", at, &summary(outcome), 0, None)).unwrap();
            assert_eq!(v["IngestCycleSuccess"], value, "{outcome:?}");
        }
    }

    #[test]
    fn diagnostics_say_whether_a_retry_makes_sense() {
        let retryable = HandlerError::Cycle {
            code: "malformed_page",
            retryable: true,
            source: IngestError::MalformedPage {
                feed: "events".into(),
                page: 1,
                reason: "eof".into(),
            },
        };
        let d: Diagnostic = retryable.into();
        assert_eq!(d.error_type, "Retryable");
        assert!(
            d.error_message.contains("malformed_page"),
            "{}",
            d.error_message
        );
        let gone = IngestError::Raw(ghevents_core::raw::RawStoreError::new(
            "PutObject",
            false,
            "NoSuchBucket",
        ));
        assert!(!cycle_error_retryable(&gone));
        let d: Diagnostic = HandlerError::Cycle {
            code: gone.code(),
            retryable: false,
            source: gone,
        }
        .into();
        assert_eq!(d.error_type, "NonRetryable");
    }
}
