//! The enrich Lambda's handler, called directly with SQS events built from the messages the
//! ingest handler put on a LocalStack queue, against real Postgres and github-sim (users and
//! repositories synthesized from the same GH Archive hour). Every wait is bounded.

#[path = "aws_support.rs"]
mod aws_support;

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use aws_sdk_sqs::types::{Message, QueueAttributeName};
use aws_support::{localstack, Aws};
use chrono::{DateTime, TimeZone, Utc};
use ghevents_core::app::App;
use ghevents_core::aws::sqs::SqsQueue;
use ghevents_core::clock::{Clock, ManualClock, SystemClock};
use ghevents_core::enrich::Enricher;
use ghevents_core::outbox::{self, FlushReport};
use ghevents_core::queue::PushQueue;
use ghevents_enrich::{handler, Deps};
use ghevents_tests::db::TestDb;
use ghevents_tests::{data_dir, emf};
use github_sim::{Sim, SimConfig};
use lambda_runtime::{Context, LambdaEvent};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

struct Harness {
    db: TestDb,
    sim: Sim,
    aws: Aws,
    clock: ManualClock,
    queue_url: String,
    queue_arn: String,
    /// The metric lines the enrich handler printed.
    lines: Arc<Captured>,
}

#[derive(Default)]
struct Captured(std::sync::Mutex<Vec<String>>);

impl ghevents_core::metrics::MetricSink for Captured {
    fn emit(&self, line: &str) {
        self.0.lock().unwrap().push(line.to_owned());
    }
}

impl Captured {
    /// The lines printed since the last call, each checked as EMF.
    fn take(&self) -> Vec<serde_json::Value> {
        std::mem::take(&mut *self.0.lock().unwrap())
            .iter()
            .map(|l| emf::validate_line(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }
}

/// Metric `name` of an EMF document.
fn figure(doc: &serde_json::Value, name: &str) -> f64 {
    emf::metric(doc, name).unwrap_or_else(|| panic!("no {name} in {doc}"))
}

fn t0() -> DateTime<Utc> {
    Utc.timestamp_opt(Utc::now().timestamp(), 0).unwrap()
}

async fn harness(limit: u32, window: Duration) -> Harness {
    let aws = localstack().await;
    let db = TestDb::new().await;
    let sim = Sim::start(SimConfig {
        files: vec![data_dir().join("gharchive/2015-01-01-0.json.gz")],
        initial: 300,
        clock: github_sim::Clock::Manual,
        limit_anonymous: limit,
        window,
        ..SimConfig::default()
    })
    .await
    .expect("github-sim starts");
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
        sim,
        aws,
        clock: ManualClock::at(t0()),
        queue_url,
        queue_arn,
        lines: Arc::default(),
    }
}

impl Harness {
    fn app(&self) -> App {
        ghevents_tests::app(
            &self.sim.url(),
            &self.db.pool,
            Arc::new(self.clock.clone()),
            &[],
            None,
        )
    }

    /// One scheduled ingest invocation: 300 events stored, their pushes on the queue.
    async fn ingest(&self) -> Vec<i64> {
        let app = self.app();
        let queue: Arc<dyn PushQueue> = Arc::new(SqsQueue {
            client: self.aws.sqs.clone(),
            queue_url: self.queue_url.clone(),
        });
        let (_tx, stop) = tokio::sync::watch::channel(false);
        let deps = ghevents_ingest::Deps {
            cycle: app.ingestor(None, Some(queue.clone()), stop),
            outbox: Some(ghevents_ingest::Outbox {
                pool: self.db.pool.clone(),
                queue,
                limit: 1000,
                requeue_after: outbox::REQUEUE_AFTER,
            }),
            clock: Arc::new(self.clock.clone()),
            metrics: Arc::new(Discard),
            function_name: "ingest".into(),
        };
        let event: EventBridgeEvent =
            serde_json::from_str(include_str!("../functions/ingest/events/scheduled.json"))
                .unwrap();
        let r = tokio::time::timeout(
            WAIT,
            ghevents_ingest::handler(&deps, LambdaEvent::new(event, Context::default())),
        )
        .await
        .expect("ingest returns")
        .unwrap();
        assert_eq!(r.summary.new_events, 300);
        let c = self.db.pool.get().await.unwrap();
        c.query("SELECT push_id FROM push_events ORDER BY push_id", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    fn deps(&self) -> Deps<Enricher> {
        self.deps_at(Arc::new(self.clock.clone()))
    }

    /// The handler's dependencies with another clock (real time, for SQS delivery delays).
    fn deps_at(&self, clock: Arc<dyn Clock>) -> Deps<Enricher> {
        let app = ghevents_tests::app(&self.sim.url(), &self.db.pool, clock.clone(), &[], None);
        Deps {
            enricher: app.enricher(),
            clock,
            metrics: self.lines.clone(),
            function_name: "ghevents-test-enrich".into(),
        }
    }

    /// The outbox flush an ingest invocation runs first (the sweep, then the due rows).
    async fn flush(&self, queue_url: &str, now: DateTime<Utc>) -> FlushReport {
        let queue = SqsQueue {
            client: self.aws.sqs.clone(),
            queue_url: queue_url.to_owned(),
        };
        outbox::flush_when_idle(&self.db.pool, &queue, now, 1000, outbox::REQUEUE_AFTER)
            .await
            .unwrap()
            .expect("no ingest cycle holds the feed")
    }

    /// What the event source mapping does after an invocation: deletes the messages the
    /// handler did not report as failed (the others come back after their visibility).
    async fn delete_acked(&self, queue_url: &str, messages: &[Message], r: &SqsBatchResponse) {
        let failed = failed_ids(r);
        for m in messages {
            if !failed.contains(m.message_id().unwrap()) {
                self.aws
                    .sqs
                    .delete_message()
                    .queue_url(queue_url)
                    .receipt_handle(m.receipt_handle().unwrap())
                    .send()
                    .await
                    .unwrap();
            }
        }
    }

    /// The first message(s) to arrive (within [`WAIT`]), at once.
    async fn receive_first(&self, queue_url: &str) -> Vec<Message> {
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::time::Instant::now() < deadline {
            let out = tokio::time::timeout(
                Duration::from_secs(10),
                self.aws
                    .sqs
                    .receive_message()
                    .queue_url(queue_url)
                    .max_number_of_messages(10)
                    .wait_time_seconds(1)
                    .send(),
            )
            .await
            .expect("ReceiveMessage answers within 10 s")
            .unwrap();
            if !out.messages().is_empty() {
                return out.messages().to_vec();
            }
        }
        Vec::new()
    }

    async fn row(&self, push_id: i64) -> (String, i32, Option<DateTime<Utc>>, DateTime<Utc>) {
        let r = self
            .db
            .pool
            .get()
            .await
            .unwrap()
            .query_one(
                "SELECT enrichment_status, attempts, enqueued_at, next_attempt_at FROM push_events WHERE push_id = $1",
                &[&push_id],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1), r.get(2), r.get(3))
    }

    async fn sql(&self, sql: &str, push_id: i64) {
        self.db
            .pool
            .get()
            .await
            .unwrap()
            .execute(sql, &[&push_id])
            .await
            .unwrap();
    }

    /// An SQS event as Lambda delivers it, from received messages.
    fn event(&self, messages: &[Message]) -> LambdaEvent<SqsEvent> {
        let records: Vec<serde_json::Value> = messages
            .iter()
            .map(|m| {
                serde_json::json!({
                    "messageId": m.message_id(),
                    "receiptHandle": m.receipt_handle(),
                    "body": m.body(),
                    "attributes": {},
                    "messageAttributes": {},
                    "eventSource": "aws:sqs",
                    "eventSourceARN": self.queue_arn,
                    "awsRegion": "us-east-1",
                })
            })
            .collect();
        LambdaEvent::new(
            serde_json::from_value(serde_json::json!({ "Records": records })).unwrap(),
            Context::default(),
        )
    }

    async fn enrich(&self, deps: &Deps<Enricher>, messages: &[Message]) -> SqsBatchResponse {
        tokio::time::timeout(WAIT, handler(deps, self.event(messages)))
            .await
            .expect("enrich returns")
            .unwrap()
    }

    async fn count(&self, sql: &str) -> i64 {
        self.db.count(sql).await
    }

    /// `/users` and `/repos` requests github-sim answered so far.
    fn entity_requests(&self) -> u64 {
        let s = self.sim.stats();
        s.users.values().sum::<u64>() + s.repos.values().sum::<u64>()
    }
}

struct Discard;

impl ghevents_ingest::MetricSink for Discard {
    fn emit(&self, _line: &str) {}
}

fn message(id: &str, body: &str) -> Message {
    Message::builder()
        .message_id(id)
        .receipt_handle(format!("rh-{id}"))
        .body(body)
        .build()
}

fn failed_ids(r: &SqsBatchResponse) -> BTreeSet<String> {
    r.batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect()
}

#[tokio::test]
async fn records_received_from_the_queue_complete_their_push_events_once() {
    let h = harness(5000, Duration::from_secs(3600)).await;
    let pushes = h.ingest().await;
    let messages = h.aws.receive(&h.queue_url, pushes.len(), WAIT).await;
    assert_eq!(messages.len(), pushes.len());
    let deps = h.deps();

    // Batches of 10, as the event source mapping delivers them.
    for batch in messages.chunks(10) {
        let r = h.enrich(&deps, batch).await;
        assert!(
            r.batch_item_failures.is_empty(),
            "{:?}",
            r.batch_item_failures
        );
    }

    // One valid metric line per invocation; together they count every push once, the
    // requests GitHub saw, and an empty backlog at the end.
    let lines = h.lines.take();
    assert_eq!(lines.len(), messages.chunks(10).count());
    let sum = |name: &str| lines.iter().map(|d| figure(d, name)).sum::<f64>();
    assert_eq!(
        sum("EnrichCompleted") + sum("EnrichGone"),
        pushes.len() as f64
    );
    assert_eq!(sum("EnrichDeferred") + sum("EnrichFailed"), 0.0);
    assert_eq!(sum("EnrichRequests"), h.entity_requests() as f64);
    assert!(
        sum("EnrichCacheHits") > 0.0,
        "actors and repositories recur within the hour"
    );
    let last = lines.last().unwrap();
    assert_eq!(last["FunctionName"], "ghevents-test-enrich");
    assert_eq!(figure(last, "EnrichBacklog"), 0.0);
    assert!(
        emf::metric(last, "EnrichBacklogAgeSeconds").is_none(),
        "no age without a backlog"
    );

    assert_eq!(
        h.count("SELECT count(*) FROM push_events WHERE enrichment_status = 'completed'")
            .await,
        pushes.len() as i64
    );
    assert!(h.count("SELECT count(*) FROM actors").await > 0);
    assert!(h.count("SELECT count(*) FROM repositories").await > 0);

    // The same batch delivered again (SQS is at least once): acked, and GitHub not asked again.
    let before = h.entity_requests();
    let again = h.enrich(&deps, &messages[..10]).await;
    assert!(again.batch_item_failures.is_empty());
    let lines = h.lines.take();
    assert_eq!(
        (
            figure(&lines[0], "EnrichRequests"),
            figure(&lines[0], "EnrichCompleted")
        ),
        (0.0, 0.0),
        "a duplicate delivery does nothing and says so"
    );
    assert_eq!(
        h.entity_requests(),
        before,
        "no double work for a duplicate delivery"
    );
    // A batch holding the same message twice: the same.
    let twice = [messages[0].clone(), messages[0].clone()];
    assert!(h.enrich(&deps, &twice).await.batch_item_failures.is_empty());
    assert_eq!(h.entity_requests(), before);
}

#[tokio::test]
async fn poison_messages_and_unknown_push_ids_are_acked() {
    let h = harness(5000, Duration::from_secs(3600)).await;
    let pushes = h.ingest().await;
    let deps = h.deps();
    let batch = [
        message("good", &format!(r#"{{"push_id":{}}}"#, pushes[0])),
        message("not-json", "push 42 please"),
        message("no-push-id", r#"{"event_id": 42}"#),
        message("wrong-type", r#"{"push_id": "42"}"#),
        message("unknown", r#"{"push_id": 1}"#),
    ];

    let r = h.enrich(&deps, &batch).await;

    assert!(
        r.batch_item_failures.is_empty(),
        "poison and unknown ids are acked: {:?}",
        r.batch_item_failures
    );
    let c = h.db.pool.get().await.unwrap();
    let status: String = c
        .query_one(
            "SELECT enrichment_status FROM push_events WHERE push_id = $1",
            &[&pushes[0]],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        status, "completed",
        "the good message of the batch is processed"
    );
    assert_eq!(
        h.count("SELECT count(*) FROM push_events WHERE enrichment_status = 'completed'")
            .await,
        1
    );
}

#[tokio::test]
async fn a_spent_budget_mid_batch_acks_the_rest_and_the_outbox_sends_it_back_for_the_reset() {
    // 24 requests per 12 s window: ingest spends 3 and keeps a reserve of 8, so enrichment
    // may send 13 requests: enough for the actors of a batch of 10 and a few repositories.
    let h = harness(24, Duration::from_secs(12)).await;
    let pushes = h.ingest().await;
    let messages = h.aws.receive(&h.queue_url, pushes.len(), WAIT).await;
    let batch: Vec<Message> = messages.into_iter().take(10).collect();
    let deps = h.deps();

    let r = h.enrich(&deps, &batch).await;

    assert!(
        r.batch_item_failures.is_empty(),
        "deferred messages are acked, not left on the queue: {:?}",
        r.batch_item_failures
    );
    let completed = h
        .count("SELECT count(*) FROM push_events WHERE enrichment_status = 'completed'")
        .await;
    assert!(
        completed > 0,
        "some pushes were enriched before the budget ran out"
    );
    let c = h.db.pool.get().await.unwrap();
    let requeued: Vec<i64> = c
        .query(
            "SELECT push_id FROM push_events WHERE enrichment_status = 'pending' AND enqueued_at IS NULL",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!requeued.is_empty(), "the rest is back in the outbox");
    let lines = h.lines.take();
    assert_eq!(
        (
            figure(&lines[0], "EnrichCompleted") + figure(&lines[0], "EnrichGone"),
            figure(&lines[0], "EnrichDeferred")
        ),
        (completed as f64, requeued.len() as f64),
        "the metric line counts the deferred pushes: {}",
        lines[0]
    );
    assert!(figure(&lines[0], "EnrichBacklog") >= requeued.len() as f64);
    assert_eq!(
        completed as usize + requeued.len(),
        batch.len(),
        "every push of the batch is either done or back in the outbox"
    );
    assert_eq!(
        h.count("SELECT count(*) FROM push_events WHERE enrichment_status = 'in_progress'")
            .await,
        0,
        "deferred work is pending again"
    );

    // The next flush sends them with a delivery delay up to the budget's reset (seconds away
    // here): they come back on their own.
    let flushed = h.flush(&h.queue_url, h.clock.now()).await;
    assert_eq!(flushed.sent, requeued.len() as u64);
    let back = h
        .aws
        .receive(&h.queue_url, requeued.len(), Duration::from_secs(45))
        .await;
    let back_ids = Aws::push_ids(&back);
    assert!(
        requeued.iter().all(|id| back_ids.contains_key(id)),
        "requeued {requeued:?}, back {back_ids:?}"
    );
}

/// A queue whose messages go to a dead-letter queue after `max_receives` receives.
async fn queue_with_dlq(aws: &Aws, max_receives: u32) -> (String, String) {
    let dlq = aws.queue().await;
    let dlq_arn = aws
        .sqs
        .get_queue_attributes()
        .queue_url(&dlq)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .expect("DLQ ARN");
    let name = aws_support::unique("ghevents-test");
    let url = aws
        .sqs
        .create_queue()
        .queue_name(&name)
        .attributes(QueueAttributeName::VisibilityTimeout, "120")
        .attributes(
            QueueAttributeName::RedrivePolicy,
            serde_json::json!({ "deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receives.to_string() })
                .to_string(),
        )
        .send()
        .await
        .unwrap()
        .queue_url
        .expect("queue url");
    (url, dlq)
}

#[tokio::test]
async fn a_push_deferred_more_often_than_max_receive_count_completes_once_the_budget_returns() {
    let h = harness(5000, Duration::from_secs(3600)).await;
    let pushes = h.ingest().await;
    let push = pushes[0];
    // Its own queue, with a dead-letter queue after 2 receives; the push's message is there.
    let (queue_url, dlq) = queue_with_dlq(&h.aws, 2).await;
    let queue = SqsQueue {
        client: h.aws.sqs.clone(),
        queue_url: queue_url.clone(),
    };
    assert_eq!(queue.send(&[push]).await.sent, vec![push]);
    // Real time: SQS delays are real.
    let deps = h.deps_at(Arc::new(SystemClock));
    let pool = &h.db.pool;
    let pause = move |secs: i64| async move {
        pool.get()
            .await
            .unwrap()
            .execute(
                "UPDATE rate_limit_state SET retry_after_until = $1",
                &[&(Utc::now() + chrono::Duration::seconds(secs))],
            )
            .await
            .unwrap();
    };

    // GitHub asks to wait, again and again: 4 deliveries, each deferred.
    for round in 0..4 {
        let got = h.receive_first(&queue_url).await;
        assert_eq!(
            Aws::push_ids(&got).get(&push),
            Some(&1),
            "round {round}: the push's message is delivered"
        );
        pause(3).await;
        let r = h.enrich(&deps, &got).await;
        h.delete_acked(&queue_url, &got, &r).await;
        let (status, attempts, _, _) = h.row(push).await;
        assert_eq!((status.as_str(), attempts), ("pending", 0), "round {round}");
        h.flush(&queue_url, Utc::now()).await;
    }
    assert_eq!(
        h.entity_requests(),
        0,
        "nothing sent while GitHub said wait"
    );

    // The wait is over: the next delivery completes it.
    let got = h.receive_first(&queue_url).await;
    pause(-1).await;
    assert_eq!(Aws::push_ids(&got).get(&push), Some(&1));
    let r = h.enrich(&deps, &got).await;
    assert!(r.batch_item_failures.is_empty());
    h.delete_acked(&queue_url, &got, &r).await;
    assert_eq!(h.row(push).await.0, "completed");
    assert!(
        h.aws
            .receive(&dlq, 1, Duration::from_secs(2))
            .await
            .is_empty(),
        "nothing reached the dead-letter queue"
    );
}

#[tokio::test]
async fn a_push_whose_message_was_lost_is_sent_again_by_the_sweep() {
    let h = harness(5000, Duration::from_secs(3600)).await;
    let pushes = h.ingest().await;
    let messages = h.aws.receive(&h.queue_url, pushes.len(), WAIT).await;
    let push = pushes[0];
    // Its message is lost (dead-letter queue, retention); the other pushes are done.
    let lost: Vec<Message> = messages
        .iter()
        .filter(|m| ghevents_core::aws::sqs::push_id_of(m.body().unwrap()) == Some(push))
        .cloned()
        .collect();
    assert_eq!(lost.len(), 1);
    h.delete_acked(&h.queue_url, &lost, &SqsBatchResponse::default())
        .await;
    h.sql(
        "UPDATE push_events SET enrichment_status = 'completed' WHERE push_id <> $1",
        push,
    )
    .await;

    // Within the queue's visibility timeout and margin it is left alone.
    h.clock.advance(Duration::from_secs(600));
    assert_eq!(h.flush(&h.queue_url, h.clock.now()).await.sent, 0);
    assert!(h.row(push).await.2.is_some());

    // Long after, it is sent again, and completes.
    h.clock.advance(outbox::REQUEUE_AFTER);
    assert_eq!(h.flush(&h.queue_url, h.clock.now()).await.sent, 1);
    let again = h.aws.receive(&h.queue_url, 1, WAIT).await;
    assert_eq!(Aws::push_ids(&again).get(&push), Some(&1));
    let r = h.enrich(&h.deps(), &again).await;
    assert!(r.batch_item_failures.is_empty());
    assert_eq!(h.row(push).await.0, "completed");
}

#[tokio::test]
async fn a_push_leased_by_a_worker_that_died_is_sent_again_once_its_lease_ends() {
    let h = harness(5000, Duration::from_secs(3600)).await;
    let pushes = h.ingest().await;
    let messages = h.aws.receive(&h.queue_url, pushes.len(), WAIT).await;
    let push = pushes[0];
    h.sql(
        "UPDATE push_events SET enrichment_status = 'completed' WHERE push_id <> $1",
        push,
    )
    .await;
    // A worker took the row and died inside its lease; the message that came back met the
    // live lease and was acked as busy: nothing in the queue names this push any more.
    let lease_end = h.clock.now() + chrono::Duration::seconds(300);
    h.db.pool
        .get()
        .await
        .unwrap()
        .execute(
            "UPDATE push_events SET enrichment_status = 'in_progress', locked_until = $2 WHERE push_id = $1",
            &[&push, &lease_end],
        )
        .await
        .unwrap();
    h.delete_acked(&h.queue_url, &messages, &SqsBatchResponse::default())
        .await;

    // While the lease lasts, the row is left to its holder.
    h.clock.advance(Duration::from_secs(200));
    assert_eq!(h.flush(&h.queue_url, h.clock.now()).await.sent, 0);

    // Once it has run out, the sweep sends it again (long before REQUEUE_AFTER), and it completes.
    h.clock.advance(Duration::from_secs(101));
    assert!(Duration::from_secs(301) < outbox::REQUEUE_AFTER);
    assert_eq!(h.flush(&h.queue_url, h.clock.now()).await.sent, 1);
    let again = h.aws.receive(&h.queue_url, 1, WAIT).await;
    assert_eq!(Aws::push_ids(&again).get(&push), Some(&1));
    let r = h.enrich(&h.deps(), &again).await;
    assert!(r.batch_item_failures.is_empty());
    assert_eq!(h.row(push).await.0, "completed");
}

#[tokio::test]
async fn a_message_for_a_push_not_yet_due_spends_nothing_and_leaves_it_to_the_outbox() {
    let h = harness(5000, Duration::from_secs(3600)).await;
    let pushes = h.ingest().await;
    let messages = h.aws.receive(&h.queue_url, pushes.len(), WAIT).await;
    let push = pushes[0];
    let early: Vec<Message> = messages
        .iter()
        .filter(|m| ghevents_core::aws::sqs::push_id_of(m.body().unwrap()) == Some(push))
        .cloned()
        .collect();
    let due = h.clock.now() + chrono::Duration::hours(1);
    h.db.pool
        .get()
        .await
        .unwrap()
        .execute(
            "UPDATE push_events SET next_attempt_at = $2 WHERE push_id = $1",
            &[&push, &due],
        )
        .await
        .unwrap();
    h.sql(
        "UPDATE push_events SET enrichment_status = 'completed' WHERE push_id <> $1",
        push,
    )
    .await;

    let r = h.enrich(&h.deps(), &early).await;

    assert!(r.batch_item_failures.is_empty(), "acked");
    assert_eq!(h.entity_requests(), 0, "no request for a push not yet due");
    let (status, attempts, enqueued_at, next) = h.row(push).await;
    assert_eq!(
        (status.as_str(), attempts, enqueued_at, next),
        ("pending", 0, None, due)
    );
    // The outbox keeps it until it is due within SQS's 15-minute delivery delay.
    assert_eq!(h.flush(&h.queue_url, h.clock.now()).await.sent, 0);
    h.clock.advance(Duration::from_secs(3600 - 60));
    assert_eq!(h.flush(&h.queue_url, h.clock.now()).await.sent, 1);
    assert!(h.row(push).await.2.is_some());
}
