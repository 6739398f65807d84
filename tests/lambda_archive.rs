//! The archive Lambda's handler, called directly: the schedule sends the due hours to a
//! LocalStack queue, and SQS events built from the messages received there import them from a
//! local GH Archive stand-in into real Postgres. Every wait is bounded.

#[path = "aws_support.rs"]
mod aws_support;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use aws_sdk_sqs::types::{Message, QueueAttributeName};
use aws_support::{localstack, Aws};
use chrono::{DateTime, TimeZone, Utc};
use ghevents_archive::{on_messages, on_schedule, Deps, MetricSink, START_MARGIN};
use ghevents_core::archive::{self, ArchiveOptions, Archiver, Hour, HttpOptions};
use ghevents_core::aws::hours::{message_body, SqsHours};
use ghevents_core::clock::ManualClock;
use ghevents_core::deadline::Deadline;
use ghevents_tests::archive_server::{ArchiveServer, Fault};
use ghevents_tests::db::TestDb;
use ghevents_tests::{data_dir, emf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Lines(Mutex<Vec<serde_json::Value>>);

/// Every line the handler prints must be a valid EMF document (the specification's structure:
/// the `_aws` block, each declared metric present at the top level, the dimensions).
impl MetricSink for Lines {
    fn emit(&self, line: &str) {
        let doc = emf::validate_line(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        self.0.lock().unwrap().push(doc);
    }
}

struct Harness {
    db: TestDb,
    aws: Aws,
    server: ArchiveServer,
    clock: ManualClock,
    queue_url: String,
    queue_arn: String,
    lines: Arc<Lines>,
}

fn h(s: &str) -> Hour {
    Hour::parse(s).unwrap()
}

/// Ten minutes after 2015-01-01 01:00-02:00 ended: hours 00 and 01 are due.
fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2015, 1, 1, 2, 10, 0).unwrap()
}

async fn harness() -> Harness {
    let aws = localstack().await;
    let db = TestDb::new().await;
    let server = ArchiveServer::start().await;
    for hour in ["2015-01-01-0.json.gz", "2015-01-01-1.json.gz"] {
        server.serve_file(hour, data_dir().join("gharchive").join(hour));
    }
    let queue_url = aws.queue().await;
    let queue_arn = aws
        .sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .expect("queue ARN");
    Harness {
        db,
        aws,
        server,
        clock: ManualClock::at(t0()),
        queue_url,
        queue_arn,
        lines: Arc::new(Lines::default()),
    }
}

impl Harness {
    fn deps(&self, deadline_margin: Duration) -> Deps<Archiver> {
        let options = ArchiveOptions {
            base_url: self.server.url.clone(),
            batch_size: 1000,
            deadline_margin,
            http: HttpOptions {
                retries: 1,
                min_delay: Duration::from_millis(10),
                max_delay: Duration::from_millis(50),
                read_timeout: Duration::from_secs(5),
                connect_timeout: Duration::from_secs(5),
            },
            ..ArchiveOptions::default()
        };
        let archiver = Archiver::new(
            self.db.pool.clone(),
            Arc::new(self.clock.clone()),
            None,
            options,
        )
        .unwrap();
        Deps {
            archive: archiver,
            queue: Arc::new(SqsHours {
                client: self.aws.sqs.clone(),
                queue_url: self.queue_url.clone(),
            }),
            clock: Arc::new(self.clock.clone()),
            metrics: self.lines.clone(),
            function_name: "ghevents-archive".into(),
            due_limit: 48,
            start_margin: START_MARGIN,
        }
    }

    /// The SQS event Lambda would deliver for these messages.
    fn event(&self, messages: &[Message]) -> SqsEvent {
        let records: Vec<serde_json::Value> = messages
            .iter()
            .map(|m| {
                serde_json::json!({
                    "messageId": m.message_id(),
                    "receiptHandle": m.receipt_handle(),
                    "body": m.body(),
                    "eventSource": "aws:sqs",
                    "eventSourceARN": self.queue_arn,
                    "awsRegion": "us-east-1",
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({ "Records": records })).unwrap()
    }

    async fn receive(&self, expected: usize) -> Vec<Message> {
        self.aws.receive(&self.queue_url, expected, WAIT).await
    }

    async fn count(&self, sql: &str) -> i64 {
        self.db
            .pool
            .get()
            .await
            .unwrap()
            .query_one(sql, &[])
            .await
            .unwrap()
            .get(0)
    }

    async fn status(&self, hour: &str) -> String {
        let hour = h(hour);
        self.db
            .pool
            .get()
            .await
            .unwrap()
            .query_one(
                "SELECT status FROM archive_hours WHERE hour = $1",
                &[&hour.start()],
            )
            .await
            .unwrap()
            .get(0)
    }
}

fn failures(r: &SqsBatchResponse) -> Vec<String> {
    r.batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect()
}

fn id_for<'a>(messages: &'a [Message], hour: &str) -> &'a str {
    let body = message_body(h(hour));
    messages
        .iter()
        .find(|m| m.body() == Some(body.as_str()))
        .and_then(|m| m.message_id())
        .unwrap_or_else(|| panic!("no message for {hour}"))
}

#[tokio::test]
async fn the_schedule_queues_due_hours_and_each_message_imports_its_hour_once() {
    let t = harness().await;
    let deps = t.deps(Duration::from_secs(20));
    // GH Archive answers 503 to both attempts at hour 01 the first time.
    t.server.fault("2015-01-01-1.json.gz", Fault::Status(503));
    t.server.fault("2015-01-01-1.json.gz", Fault::Status(503));
    archive::ensure_hours(&t.db.pool, h("2015-01-01T00"), h("2015-01-01T01"))
        .await
        .unwrap();

    // The schedule: both hours are due (00 from its row, 01 as the last complete hour).
    let sent = on_schedule(&deps).await.unwrap();
    assert_eq!(sent.enqueued, vec![h("2015-01-01T00"), h("2015-01-01T01")]);
    let messages = t.receive(2).await;
    assert_eq!(messages.len(), 2, "one message per due hour");

    // The batch: hour 00 is imported, hour 01 fails retryably and only its message returns.
    let r = on_messages(&deps, t.event(&messages), Deadline::NONE).await;
    assert_eq!(failures(&r), vec![id_for(&messages, "2015-01-01T01")]);
    assert_eq!(t.status("2015-01-01T00").await, "done");
    assert_eq!(t.status("2015-01-01T01").await, "failed");
    assert_eq!(t.count("SELECT count(*) FROM github_events").await, 7702);

    // The message comes back once its backoff has passed: hour 01 is imported; a duplicate
    // message for hour 00 in the same batch stores nothing.
    t.clock.advance(Duration::from_secs(300));
    let r = on_messages(&deps, t.event(&messages), Deadline::NONE).await;
    assert!(failures(&r).is_empty(), "{:?}", failures(&r));
    assert_eq!(t.status("2015-01-01T01").await, "done");
    assert_eq!(
        t.count("SELECT count(*) FROM github_events").await,
        7702 + 7427
    );
    assert_eq!(
        t.count("SELECT count(DISTINCT event_id) FROM github_events")
            .await,
        7702 + 7427
    );

    let metrics = t.lines.0.lock().unwrap().clone();
    assert_eq!(metrics.len(), 3, "one metric line per invocation");
    assert_eq!(metrics[0]["ArchiveHoursEnqueued"], 2);
    assert_eq!(
        (
            &metrics[1]["ArchiveHoursDone"],
            &metrics[1]["ArchiveHoursFailed"],
            &metrics[1]["ArchiveEventsStored"]
        ),
        (
            &serde_json::json!(1),
            &serde_json::json!(1),
            &serde_json::json!(7702)
        )
    );
    assert_eq!(metrics[2]["ArchiveHoursDone"], 2);
    assert_eq!(metrics[2]["ArchiveEventsStored"], 7427);
}

#[tokio::test]
async fn an_hour_stopped_by_the_deadline_is_made_visible_again_and_resumed() {
    let t = harness().await;
    archive::ensure_hours(&t.db.pool, h("2015-01-01T00"), h("2015-01-01T01"))
        .await
        .unwrap();
    let queue = SqsHours {
        client: t.aws.sqs.clone(),
        queue_url: t.queue_url.clone(),
    };
    use ghevents_core::aws::hours::HourQueue;
    let report = queue.send_hours(&[h("2015-01-01T00")]).await;
    assert_eq!(report.sent.len(), 1, "{:?}", report.failed);
    let messages = t.receive(1).await;
    assert_eq!(messages.len(), 1);

    // 90 s left: enough to start the hour (60 s), not for the archiver's 100 s margin, so it
    // stops before its first batch and leaves the hour pending.
    let short = t.deps(Duration::from_secs(100));
    let r = on_messages(
        &short,
        t.event(&messages),
        Deadline::after(Duration::from_secs(90)),
    )
    .await;
    assert_eq!(failures(&r), vec![messages[0].message_id().unwrap()]);
    assert_eq!(t.status("2015-01-01T00").await, "pending");

    // The queue's visibility timeout is 120 s; the message is back well before that.
    let again = t.receive(1).await;
    assert_eq!(
        again.len(),
        1,
        "the released message is visible again at once"
    );
    assert_eq!(again[0].body(), messages[0].body());

    let deps = t.deps(Duration::from_secs(20));
    let r = on_messages(&deps, t.event(&again), Deadline::NONE).await;
    assert!(failures(&r).is_empty());
    assert_eq!(t.status("2015-01-01T00").await, "done");
    assert_eq!(t.count("SELECT count(*) FROM github_events").await, 7702);
    assert_eq!(
        t.lines.0.lock().unwrap()[0]["ArchiveHoursResumed"],
        1,
        "the stopped hour is counted as resumed"
    );
}
