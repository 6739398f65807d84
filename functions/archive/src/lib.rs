//! The archive Lambda: GH Archive hours, imported one per SQS message. One function, two
//! event sources (see [`dispatch`]):
//!
//! - **the hourly schedule** (EventBridge, some minutes past the hour): the hours that are
//!   due (`ghevents_core::archive::due_hours`: the last complete hour, plus `pending`/`failed`
//!   hours whose next attempt has come and `in_progress` ones whose lease ran out) go onto
//!   the hours queue, one message per hour, body `{"hour":"2015-01-01T00"}`;
//! - **an SQS batch from the hours queue**: each hour is imported
//!   (`Archiver::run_hour`, ending before the invocation's deadline), and the answer names
//!   only the messages that must come back (`ReportBatchItemFailures`).
//!
//! The hour's row in `archive_hours` is the truth, a message only a nudge: a second message
//! for a `done` hour is acked at once, and every hour that still needs work is due again in
//! its row, so the next schedule tick sends it whatever became of its message.
//!
//! | `run_hour` | message |
//! |---|---|
//! | `done`, `missing` | acked |
//! | `in_progress` (another invocation holds the lease) | acked: that one finishes it, or its lease runs out and the schedule sends the hour again |
//! | `pending`/`failed`, due again now (stopped before the deadline; the committed line offset is kept) | made visible again at once and reported failed: the next invocation resumes after the committed lines |
//! | `pending`/`failed`, due later (not published yet, a backoff) | acked: the schedule sends it when it is due |
//! | an error that a retry can cure (network, 5xx, a cut-short body, the database) | reported failed: back after the visibility timeout (and sent by the schedule once its backoff has passed, whichever comes first) |
//! | an error no retry cures | acked, logged; the row says `failed` with the error |
//! | a body that is not an hour | acked, logged |
//!
//! Every invocation prints one CloudWatch Embedded Metric Format line on stdout (namespace
//! `ghevents`, dimension `FunctionName`): see [`emf_line`].

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use chrono::{DateTime, Utc};
use ghevents_core::archive::{self, ArchiveError, Archiver, Hour, HourReport, HourStatus};
use ghevents_core::aws::hours::{hour_of, HourQueue};
use ghevents_core::clock::Clock;
use ghevents_core::deadline::Deadline;
use ghevents_core::metrics::{Emf, Unit, NAMESPACE};
use ghevents_core::store::StoreError;
use lambda_runtime::{Diagnostic, LambdaEvent};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// Hours one schedule tick enqueues at most (the oldest first; the rest go with later ticks).
pub const DUE_LIMIT: i64 = 48;

/// An hour of a batch is started only while this much of the invocation is left.
pub const START_MARGIN: Duration = Duration::from_secs(60);

/// The archive core as the handler uses it. [`Archiver`] in production.
#[async_trait::async_trait]
pub trait ArchiveHours: Send + Sync {
    /// The hours due at `now`, oldest first, at most `limit`.
    async fn due_hours(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<Hour>, StoreError>;
    /// Imports `hour` (honouring its backoff), ending before `deadline`.
    async fn run_hour(&self, hour: Hour, deadline: Deadline) -> Result<HourReport, ArchiveError>;
}

#[async_trait::async_trait]
impl ArchiveHours for Archiver {
    async fn due_hours(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<Hour>, StoreError> {
        archive::due_hours(&self.pool, now, limit).await
    }

    async fn run_hour(&self, hour: Hour, deadline: Deadline) -> Result<HourReport, ArchiveError> {
        Archiver::run_hour(self, hour, false, deadline).await
    }
}

/// Where the metric lines go: stdout in Lambda (CloudWatch reads them from the log stream).
pub trait MetricSink: Send + Sync {
    fn emit(&self, line: &str);
}

pub struct Stdout;

impl MetricSink for Stdout {
    fn emit(&self, line: &str) {
        println!("{line}");
    }
}

/// What the handler borrows; built once per container.
pub struct Deps<A> {
    pub archive: A,
    /// The hours queue: the schedule sends to it; a message to resume is released on it.
    pub queue: Arc<dyn HourQueue>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<dyn MetricSink>,
    /// `AWS_LAMBDA_FUNCTION_NAME`: the metric's dimension.
    pub function_name: String,
    pub due_limit: i64,
    pub start_margin: Duration,
}

/// What one invocation did: the metric line's numbers.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Hours sent to the queue (schedule).
    pub enqueued: u64,
    /// Hours the schedule could not send.
    pub enqueue_failed: u64,
    pub done: u64,
    pub missing: u64,
    /// Attempts that ended in an error.
    pub failed: u64,
    /// Hours stopped before the deadline, their message made visible again to resume.
    pub resumed: u64,
    /// Hours not due yet or held by another invocation: acked, nothing done.
    pub deferred: u64,
    /// Messages whose body is not an hour.
    pub poison: u64,
    /// Events this invocation stored.
    pub events_stored: u64,
    /// Lines read (all hours of the invocation).
    pub lines: u64,
    /// Of the hours done: their valid lines, and those polling had stored before.
    pub done_valid_lines: u64,
    pub done_already_present: u64,
}

impl Tally {
    /// The share of the done hours' events polling had stored (the feed's coverage), in
    /// percent; None when no hour was done.
    pub fn polled_percent(&self) -> Option<f64> {
        (self.done_valid_lines > 0)
            .then(|| 100.0 * self.done_already_present as f64 / self.done_valid_lines as f64)
    }
}

/// The schedule's answer, as `cargo lambda invoke` and the console show it.
#[derive(Debug, Serialize)]
pub struct ScheduleResponse {
    pub due: usize,
    pub enqueued: Vec<Hour>,
}

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("listing the due hours failed: {0}")]
    Due(#[source] StoreError),
    #[error("{failed} of {due} due hours not enqueued (first: {hour}: {message})")]
    Enqueue {
        due: usize,
        failed: usize,
        hour: Hour,
        message: String,
        retryable: bool,
    },
    #[error("unexpected payload: {0}")]
    Payload(String),
}

impl HandlerError {
    pub fn is_retryable(&self) -> bool {
        match self {
            HandlerError::Due(e) => e.is_retryable(),
            HandlerError::Enqueue { retryable, .. } => *retryable,
            HandlerError::Payload(_) => false,
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

/// Every invocation: an event with `Records` is an SQS batch ([`on_messages`]); anything
/// else must be the schedule's event ([`on_schedule`]).
pub async fn dispatch<A: ArchiveHours>(
    deps: &Deps<A>,
    event: LambdaEvent<serde_json::Value>,
) -> Result<serde_json::Value, HandlerError> {
    let (payload, context) = event.into_parts();
    let deadline = Deadline::from_epoch_millis(context.deadline);
    let to_value = |v: Result<serde_json::Value, serde_json::Error>| {
        v.map_err(|e| HandlerError::Payload(e.to_string()))
    };
    if payload.get("Records").is_some() {
        let batch: SqsEvent = serde_json::from_value(payload)
            .map_err(|e| HandlerError::Payload(format!("an SQS event that does not parse: {e}")))?;
        info!(request_id = %context.request_id, messages = batch.records.len(), "archive invocation (hours queue)");
        let response = on_messages(deps, batch, deadline).await;
        return to_value(serde_json::to_value(&response));
    }
    let scheduled: EventBridgeEvent = serde_json::from_value(payload).map_err(|e| {
        HandlerError::Payload(format!(
            "neither an SQS event of the hours queue nor a scheduled event: {e}"
        ))
    })?;
    info!(request_id = %context.request_id, scheduled_at = ?scheduled.time, "archive invocation (schedule)");
    let response = on_schedule(deps).await?;
    to_value(serde_json::to_value(&response))
}

/// The schedule: sends every due hour (at most `due_limit`) to the hours queue.
pub async fn on_schedule<A: ArchiveHours>(
    deps: &Deps<A>,
) -> Result<ScheduleResponse, HandlerError> {
    let now = deps.clock.now();
    let due = deps
        .archive
        .due_hours(now, deps.due_limit)
        .await
        .map_err(|e| {
            warn!(error = %e, error_code = "archive_due_failed", "due hours not listed");
            HandlerError::Due(e)
        })?;
    let report = if due.is_empty() {
        Default::default()
    } else {
        deps.queue.send_hours(&due).await
    };
    let tally = Tally {
        enqueued: report.sent.len() as u64,
        enqueue_failed: report.failed.len() as u64,
        ..Tally::default()
    };
    deps.metrics
        .emit(&emf_line(&deps.function_name, deps.clock.now(), &tally));
    info!(
        due = due.len(),
        enqueued = report.sent.len(),
        failed = report.failed.len(),
        first = ?due.first(),
        last = ?due.last(),
        "archive hours enqueued"
    );
    if let Some((hour, e)) = report.failed.first() {
        // The hours stay due in their rows: the next tick sends them again.
        return Err(HandlerError::Enqueue {
            due: due.len(),
            failed: report.failed.len(),
            hour: *hour,
            message: e.to_string(),
            retryable: e.retryable,
        });
    }
    Ok(ScheduleResponse {
        due: due.len(),
        enqueued: report.sent,
    })
}

/// An SQS batch: each hour in turn, while the deadline leaves `start_margin`.
pub async fn on_messages<A: ArchiveHours>(
    deps: &Deps<A>,
    event: SqsEvent,
    deadline: Deadline,
) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    let mut tally = Tally::default();
    for r in event.records {
        let Some(message_id) = r.message_id.clone() else {
            // NOTE: acked, not retried: a record without a message id cannot be reported as
            // failed anyway; Lambda always sets it.
            warn!(
                error_code = "sqs_record_without_id",
                "SQS record without a message id skipped"
            );
            continue;
        };
        let hour = match hour_of(r.body.as_deref().unwrap_or("")) {
            Ok(h) => h,
            Err(e) => {
                // NOTE: acked, not retried: a body that is not an hour never becomes one;
                // retrying it would only carry it to the dead-letter queue.
                tally.poison += 1;
                let body = r.body.as_deref().unwrap_or("");
                warn!(message_id = %message_id, error = %e, body_start = %body.chars().take(80).collect::<String>(), error_code = "poison_message", "acked without processing");
                continue;
            }
        };
        let release = |why: &'static str| {
            let handle = r.receipt_handle.clone();
            let queue = deps.queue.clone();
            let message_id = message_id.clone();
            async move {
                let Some(handle) = handle else { return };
                if let Err(e) = queue.release(&handle).await {
                    // It comes back after the visibility timeout instead.
                    warn!(message_id = %message_id, %hour, error = %e, why, error_code = "sqs_release_failed", "message not made visible again");
                }
            }
        };
        if !deadline.allows(deps.start_margin) {
            tally.resumed += 1;
            info!(message_id = %message_id, %hour, "no time left to start this hour; the message comes back");
            release("not started").await;
            response.add_failure(message_id);
            continue;
        }
        match deps.archive.run_hour(hour, deadline).await {
            Ok(report) => {
                tally.lines += report.lines;
                tally.events_stored += report.new_rows;
                match report.status {
                    HourStatus::Done => {
                        tally.done += 1;
                        tally.done_valid_lines += report.stored + report.already_present;
                        tally.done_already_present += report.already_present;
                    }
                    HourStatus::Missing => tally.missing += 1,
                    HourStatus::InProgress => {
                        // NOTE: acked: another invocation holds the hour; if it dies, its lease
                        // runs out and the schedule sends the hour again.
                        tally.deferred += 1;
                        info!(message_id = %message_id, %hour, reason = ?report.reason, "hour held elsewhere; acked");
                    }
                    HourStatus::Pending | HourStatus::Failed
                        if report.next_attempt_at <= deps.clock.now() =>
                    {
                        // Stopped before the deadline: the committed lines are kept, and the
                        // next invocation goes on after them.
                        tally.resumed += 1;
                        info!(message_id = %message_id, %hour, lines_committed = report.lines_committed, "hour not finished before the deadline; the message comes back to resume it");
                        release("resume").await;
                        response.add_failure(message_id);
                    }
                    HourStatus::Pending | HourStatus::Failed => {
                        // NOTE: acked: the hour is due later (not published yet, or a
                        // backoff); the schedule sends it when it is due.
                        tally.deferred += 1;
                        info!(message_id = %message_id, %hour, status = %report.status, due = %report.next_attempt_at, reason = ?report.reason, "hour not due yet; acked");
                    }
                }
            }
            Err(e) if e.is_retryable() => {
                tally.failed += 1;
                warn!(message_id = %message_id, %hour, error = %e, error_code = "archive_hour_failed", retryable = true, "hour failed; the message comes back");
                response.add_failure(message_id);
            }
            Err(e) => {
                // NOTE: acked, not retried now: the row says `failed` with the error and its
                // backoff; the schedule sends it again when that has passed.
                tally.failed += 1;
                warn!(message_id = %message_id, %hour, error = %e, error_code = "archive_hour_failed", retryable = false, "hour failed; acked");
            }
        }
    }
    deps.metrics
        .emit(&emf_line(&deps.function_name, deps.clock.now(), &tally));
    info!(
        done = tally.done,
        missing = tally.missing,
        failed = tally.failed,
        resumed = tally.resumed,
        deferred = tally.deferred,
        poison = tally.poison,
        events_stored = tally.events_stored,
        "archive batch"
    );
    response
}

/// One CloudWatch Embedded Metric Format line: namespace `ghevents`, dimension
/// `FunctionName`, the counts as metrics (`ArchiveHoursEnqueued`, `ArchiveHoursDone`,
/// `ArchiveHoursMissing`, `ArchiveHoursFailed`, `ArchiveHoursResumed`,
/// `ArchiveEventsStored`, and `ArchivePolledPercent` when an hour was done: the share of the
/// done hours' events polling had stored) and the rest as properties.
pub fn emf_line(function_name: &str, at: DateTime<Utc>, t: &Tally) -> String {
    let mut emf = Emf::new(NAMESPACE).dimension("FunctionName", function_name);
    for (name, value) in [
        ("ArchiveHoursEnqueued", t.enqueued),
        ("ArchiveHoursDone", t.done),
        ("ArchiveHoursMissing", t.missing),
        ("ArchiveHoursFailed", t.failed),
        ("ArchiveHoursResumed", t.resumed),
        ("ArchiveEventsStored", t.events_stored),
    ] {
        emf.metric(name, Unit::Count, value as f64);
    }
    if let Some(p) = t.polled_percent() {
        emf.metric("ArchivePolledPercent", Unit::Percent, p);
    }
    emf.property("enqueue_failed", t.enqueue_failed)
        .property("deferred", t.deferred)
        .property("poison", t.poison)
        .property("lines", t.lines);
    emf.to_line(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use ghevents_core::aws::hours::{message_body, HourSendReport};
    use ghevents_core::clock::ManualClock;
    use ghevents_core::queue::QueueError;
    use std::collections::{HashMap, VecDeque};
    use std::sync::Mutex;

    fn hour(s: &str) -> Hour {
        Hour::parse(s).unwrap()
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 30, 18, 7, 0).unwrap()
    }

    fn report(h: Hour, status: HourStatus, next_attempt_at: DateTime<Utc>) -> HourReport {
        HourReport {
            hour: h,
            status,
            attempts: 1,
            next_attempt_at,
            claimed_until: None,
            lines: 100,
            blank_lines: 0,
            stored: 90,
            already_present: 10,
            rejected: 0,
            rejections: Default::default(),
            push_events: 40,
            push_cache_enriched: 0,
            push_not_enriched: 40,
            bytes: 5000,
            lines_committed: 100,
            object_key: None,
            started_at: None,
            finished_at: None,
            last_error: None,
            reason: None,
            polled_share: None,
            stored_share: None,
            new_rows: 90,
        }
    }

    fn http_error(retryable: bool) -> ArchiveError {
        ArchiveError::Http {
            url: "https://data.gharchive.org/2015-01-01-0.json.gz".into(),
            message: "503 Service Unavailable".into(),
            retryable,
        }
    }

    /// Scripted answers per hour; records every call.
    #[derive(Default)]
    struct FakeArchive {
        due: Vec<Hour>,
        answers: Mutex<HashMap<Hour, VecDeque<Result<HourReport, ArchiveError>>>>,
        runs: Mutex<Vec<Hour>>,
        due_limits: Mutex<Vec<i64>>,
    }

    impl FakeArchive {
        fn answer(self, h: Hour, r: Result<HourReport, ArchiveError>) -> Self {
            self.answers
                .lock()
                .unwrap()
                .entry(h)
                .or_default()
                .push_back(r);
            self
        }
    }

    #[async_trait::async_trait]
    impl ArchiveHours for FakeArchive {
        async fn due_hours(
            &self,
            _now: DateTime<Utc>,
            limit: i64,
        ) -> Result<Vec<Hour>, StoreError> {
            self.due_limits.lock().unwrap().push(limit);
            Ok(self.due.iter().take(limit as usize).copied().collect())
        }

        async fn run_hour(
            &self,
            hour: Hour,
            _deadline: Deadline,
        ) -> Result<HourReport, ArchiveError> {
            self.runs.lock().unwrap().push(hour);
            self.answers
                .lock()
                .unwrap()
                .get_mut(&hour)
                .and_then(|q| q.pop_front())
                .unwrap_or_else(|| panic!("no answer scripted for {hour}"))
        }
    }

    #[derive(Default)]
    struct FakeQueue {
        sent: Mutex<Vec<Hour>>,
        released: Mutex<Vec<String>>,
        refuse: Option<QueueError>,
    }

    #[async_trait::async_trait]
    impl HourQueue for FakeQueue {
        async fn send_hours(&self, hours: &[Hour]) -> HourSendReport {
            match &self.refuse {
                Some(e) => HourSendReport {
                    sent: Vec::new(),
                    failed: hours.iter().map(|h| (*h, e.clone())).collect(),
                },
                None => {
                    self.sent.lock().unwrap().extend_from_slice(hours);
                    HourSendReport {
                        sent: hours.to_vec(),
                        failed: Vec::new(),
                    }
                }
            }
        }

        async fn release(&self, receipt_handle: &str) -> Result<(), QueueError> {
            self.released.lock().unwrap().push(receipt_handle.into());
            Ok(())
        }
    }

    #[derive(Default)]
    struct Lines(Mutex<Vec<String>>);

    impl MetricSink for Lines {
        fn emit(&self, line: &str) {
            self.0.lock().unwrap().push(line.into());
        }
    }

    struct Setup {
        deps: Deps<FakeArchive>,
        queue: Arc<FakeQueue>,
        lines: Arc<Lines>,
    }

    fn setup(archive: FakeArchive, queue: FakeQueue) -> Setup {
        let queue = Arc::new(queue);
        let lines = Arc::new(Lines::default());
        Setup {
            deps: Deps {
                archive,
                queue: queue.clone(),
                clock: Arc::new(ManualClock::at(now())),
                metrics: lines.clone(),
                function_name: "ghevents-archive".into(),
                due_limit: 3,
                start_margin: START_MARGIN,
            },
            queue,
            lines,
        }
    }

    impl Setup {
        /// The one metric line the invocation printed.
        fn metric(&self) -> serde_json::Value {
            let lines = self.lines.0.lock().unwrap();
            assert_eq!(lines.len(), 1, "one metric line per invocation: {lines:?}");
            serde_json::from_str(&lines[0]).unwrap()
        }
    }

    fn sqs_event(bodies: &[&str]) -> SqsEvent {
        let records: Vec<serde_json::Value> = bodies
            .iter()
            .enumerate()
            .map(|(i, b)| {
                serde_json::json!({
                    "messageId": format!("m{i}"),
                    "receiptHandle": format!("rh{i}"),
                    "body": b,
                    "eventSource": "aws:sqs",
                    "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:hours",
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({ "Records": records })).unwrap()
    }

    fn failures(r: &SqsBatchResponse) -> Vec<String> {
        r.batch_item_failures
            .iter()
            .map(|f| f.item_identifier.clone())
            .collect()
    }

    #[tokio::test]
    async fn the_schedule_enqueues_the_due_hours_up_to_the_limit() {
        let due = [
            "2026-11-30T10",
            "2026-11-30T11",
            "2026-11-30T12",
            "2026-11-30T17",
        ];
        let s = setup(
            FakeArchive {
                due: due.iter().map(|h| hour(h)).collect(),
                ..Default::default()
            },
            FakeQueue::default(),
        );
        let r = on_schedule(&s.deps).await.unwrap();
        assert_eq!(r.due, 3);
        let want: Vec<Hour> = due[..3].iter().map(|h| hour(h)).collect();
        assert_eq!(*s.queue.sent.lock().unwrap(), want);
        assert_eq!(r.enqueued, want);
        assert_eq!(*s.deps.archive.due_limits.lock().unwrap(), vec![3]);
        let m = s.metric();
        assert_eq!(m["ArchiveHoursEnqueued"], 3);
        assert_eq!(m["ArchiveHoursDone"], 0);
    }

    #[tokio::test]
    async fn a_schedule_whose_sends_fail_is_a_retryable_error_that_names_the_hour() {
        let s = setup(
            FakeArchive {
                due: vec![hour("2026-11-30T17")],
                ..Default::default()
            },
            FakeQueue {
                refuse: Some(QueueError::new(
                    "SendMessageBatch q",
                    true,
                    "ServiceUnavailable",
                )),
                ..Default::default()
            },
        );
        let e = on_schedule(&s.deps).await.unwrap_err();
        assert!(e.is_retryable());
        let d: Diagnostic = e.into();
        assert_eq!(d.error_type, "Retryable");
        assert!(
            d.error_message.contains("2026-11-30T17") && d.error_message.contains("1 of 1"),
            "{}",
            d.error_message
        );
        assert_eq!(s.metric()["enqueue_failed"], 1);
    }

    #[tokio::test]
    async fn each_message_runs_its_hour_and_only_retryable_failures_come_back() {
        let (done, missing, flaky, broken) = (
            hour("2015-01-01T00"),
            hour("2015-01-01T01"),
            hour("2015-01-01T02"),
            hour("2015-01-01T03"),
        );
        let archive = FakeArchive::default()
            .answer(done, Ok(report(done, HourStatus::Done, now())))
            .answer(
                missing,
                Ok(HourReport {
                    new_rows: 0,
                    lines: 0,
                    ..report(missing, HourStatus::Missing, now())
                }),
            )
            .answer(flaky, Err(http_error(true)))
            .answer(broken, Err(http_error(false)));
        let s = setup(archive, FakeQueue::default());
        let bodies: Vec<String> = [done, missing, flaky, broken]
            .iter()
            .map(|h| message_body(*h))
            .collect();
        let bodies: Vec<&str> = bodies.iter().map(String::as_str).collect();
        let r = on_messages(&s.deps, sqs_event(&bodies), Deadline::NONE).await;
        assert_eq!(
            failures(&r),
            vec!["m2"],
            "only the retryable failure returns"
        );
        assert_eq!(
            *s.deps.archive.runs.lock().unwrap(),
            vec![done, missing, flaky, broken]
        );
        assert!(s.queue.released.lock().unwrap().is_empty());
        let m = s.metric();
        assert_eq!(
            (
                &m["ArchiveHoursDone"],
                &m["ArchiveHoursMissing"],
                &m["ArchiveHoursFailed"],
                &m["ArchiveEventsStored"]
            ),
            (
                &serde_json::json!(1),
                &serde_json::json!(1),
                &serde_json::json!(2),
                &serde_json::json!(90)
            )
        );
    }

    #[tokio::test]
    async fn an_hour_stopped_before_the_deadline_comes_back_at_once_to_resume() {
        let h = hour("2015-01-01T00");
        let stopped = HourReport {
            lines_committed: 120_000,
            reason: Some("stopped before the deadline; resumes after line 120000".into()),
            ..report(h, HourStatus::Pending, now())
        };
        let s = setup(
            FakeArchive::default().answer(h, Ok(stopped)),
            FakeQueue::default(),
        );
        let r = on_messages(&s.deps, sqs_event(&[&message_body(h)]), Deadline::NONE).await;
        assert_eq!(failures(&r), vec!["m0"]);
        assert_eq!(*s.queue.released.lock().unwrap(), vec!["rh0"]);
        let m = s.metric();
        assert_eq!(m["ArchiveHoursResumed"], 1);
        assert_eq!(m["ArchiveHoursDone"], 0);
    }

    #[tokio::test]
    async fn hours_not_due_or_held_elsewhere_are_acked_for_the_schedule_to_send_again() {
        let (later, held, backoff) = (
            hour("2026-11-30T17"),
            hour("2026-11-30T16"),
            hour("2026-11-30T15"),
        );
        let in_ten = now() + chrono::Duration::minutes(10);
        let archive = FakeArchive::default()
            .answer(later, Ok(report(later, HourStatus::Pending, in_ten)))
            .answer(held, Ok(report(held, HourStatus::InProgress, now())))
            .answer(backoff, Ok(report(backoff, HourStatus::Failed, in_ten)));
        let s = setup(archive, FakeQueue::default());
        let bodies: Vec<String> = [later, held, backoff]
            .iter()
            .map(|h| message_body(*h))
            .collect();
        let bodies: Vec<&str> = bodies.iter().map(String::as_str).collect();
        let r = on_messages(&s.deps, sqs_event(&bodies), Deadline::NONE).await;
        assert!(failures(&r).is_empty(), "{:?}", failures(&r));
        assert!(s.queue.released.lock().unwrap().is_empty());
        assert_eq!(s.metric()["deferred"], 3);
    }

    #[tokio::test]
    async fn poison_bodies_are_acked_without_running_anything() {
        let s = setup(FakeArchive::default(), FakeQueue::default());
        let r = on_messages(
            &s.deps,
            sqs_event(&["", r#"{"push_id":7}"#, r#"{"hour":"2015-13-01T00"}"#]),
            Deadline::NONE,
        )
        .await;
        assert!(failures(&r).is_empty());
        assert!(s.deps.archive.runs.lock().unwrap().is_empty());
        assert_eq!(s.metric()["poison"], 3);
    }

    #[tokio::test]
    async fn hours_without_time_left_to_start_are_not_started_and_come_back_at_once() {
        let h = hour("2015-01-01T00");
        let s = setup(FakeArchive::default(), FakeQueue::default());
        let r = on_messages(
            &s.deps,
            sqs_event(&[&message_body(h)]),
            Deadline::after(Duration::from_secs(5)),
        )
        .await;
        assert_eq!(failures(&r), vec!["m0"]);
        assert!(s.deps.archive.runs.lock().unwrap().is_empty());
        assert_eq!(*s.queue.released.lock().unwrap(), vec!["rh0"]);
    }

    #[tokio::test]
    async fn dispatch_tells_an_sqs_batch_from_the_schedule_and_refuses_anything_else() {
        let h = hour("2015-01-01T00");
        let archive = FakeArchive {
            due: vec![hour("2026-11-30T17")],
            ..Default::default()
        }
        .answer(h, Ok(report(h, HourStatus::Done, now())));
        let s = setup(archive, FakeQueue::default());
        let ev = |v: serde_json::Value| LambdaEvent::new(v, lambda_runtime::Context::default());

        let sqs: serde_json::Value =
            serde_json::from_str(include_str!("../events/sqs.json")).unwrap();
        let out = dispatch(&s.deps, ev(sqs)).await.unwrap();
        assert_eq!(out, serde_json::json!({ "batchItemFailures": [] }));
        assert_eq!(*s.deps.archive.runs.lock().unwrap(), vec![h]);

        let tick: serde_json::Value =
            serde_json::from_str(include_str!("../events/scheduled.json")).unwrap();
        let out = dispatch(&s.deps, ev(tick)).await.unwrap();
        assert_eq!(out["enqueued"], serde_json::json!(["2026-11-30T17"]));
        assert_eq!(*s.queue.sent.lock().unwrap(), vec![hour("2026-11-30T17")]);

        let e = dispatch(&s.deps, ev(serde_json::json!({"hello": 1})))
            .await
            .unwrap_err();
        assert!(!e.is_retryable());
        assert!(e.to_string().contains("neither"), "{e}");
    }

    #[test]
    fn emf_names_the_namespace_metrics_and_dimension_the_alarms_read() {
        let t = Tally {
            done: 2,
            failed: 1,
            events_stored: 1234,
            ..Tally::default()
        };
        let line = emf_line("ghevents-archive", now(), &t);
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let m = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(m["Namespace"], "ghevents");
        assert_eq!(m["Dimensions"], serde_json::json!([["FunctionName"]]));
        let names: Vec<&str> = m["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["Name"].as_str().unwrap())
            .collect();
        for n in &names {
            assert!(v.get(*n).is_some(), "metric {n} has a value");
        }
        assert!(names.contains(&"ArchiveHoursFailed") && names.contains(&"ArchiveEventsStored"));
        assert_eq!(v["ArchiveHoursDone"], 2);
        assert_eq!(v["ArchiveHoursFailed"], 1);
        assert_eq!(v["ArchiveEventsStored"], 1234);
        assert_eq!(v["_aws"]["Timestamp"], now().timestamp_millis());
        assert!(
            v.get("ArchivePolledPercent").is_none() && !names.contains(&"ArchivePolledPercent"),
            "no coverage without its figures: {v}"
        );
    }

    #[test]
    fn the_done_hours_coverage_is_a_percent_metric() {
        let t = Tally {
            done: 2,
            done_valid_lines: 8000,
            done_already_present: 200,
            ..Tally::default()
        };
        let v: serde_json::Value = serde_json::from_str(&emf_line("a", now(), &t)).unwrap();
        assert_eq!(v["ArchivePolledPercent"], 2.5);
        let declared = v["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["Name"] == "ArchivePolledPercent")
            .cloned();
        assert_eq!(
            declared,
            Some(serde_json::json!({ "Name": "ArchivePolledPercent", "Unit": "Percent" }))
        );
    }
}
