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
use ghevents::app::App;
use ghevents::aws::sqs::SqsQueue;
use ghevents::clock::ManualClock;
use ghevents::enrich::Enricher;
use ghevents::raw::PushQueue;
use ghevents_enrich::{handler, Deps, SqsPostpone};
use ghevents_tests::data_dir;
use ghevents_tests::db::TestDb;
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

    fn deps(&self) -> Deps<Enricher, SqsPostpone> {
        let app = self.app();
        Deps {
            enricher: app.enricher(),
            postpone: SqsPostpone {
                client: self.aws.sqs.clone(),
                queue_url: None,
            },
            clock: Arc::new(self.clock.clone()),
        }
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

    async fn enrich(
        &self,
        deps: &Deps<Enricher, SqsPostpone>,
        messages: &[Message],
    ) -> SqsBatchResponse {
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
async fn a_spent_budget_mid_batch_sends_the_rest_back_until_the_reset() {
    // 24 requests per 12 s window: ingest spends 3 and keeps a reserve of 8, so enrichment
    // may send 13 requests: enough for the actors of a batch of 10 and a few repositories.
    let h = harness(24, Duration::from_secs(12)).await;
    let pushes = h.ingest().await;
    let messages = h.aws.receive(&h.queue_url, pushes.len(), WAIT).await;
    let batch: Vec<Message> = messages.into_iter().take(10).collect();
    let deps = h.deps();

    let r = h.enrich(&deps, &batch).await;

    let failed = failed_ids(&r);
    let completed = h
        .count("SELECT count(*) FROM push_events WHERE enrichment_status = 'completed'")
        .await;
    assert!(
        completed > 0,
        "some pushes were enriched before the budget ran out"
    );
    assert!(!failed.is_empty(), "the rest comes back");
    assert_eq!(
        completed as usize + failed.len(),
        batch.len(),
        "every message is either done or reported"
    );
    let batch_ids: BTreeSet<String> = batch
        .iter()
        .map(|m| m.message_id().unwrap().to_owned())
        .collect();
    assert!(failed.is_subset(&batch_ids));
    assert_eq!(
        h.count("SELECT count(*) FROM push_events WHERE enrichment_status = 'in_progress'")
            .await,
        0,
        "deferred work is pending again"
    );

    // The deferred messages were postponed to the budget's reset (seconds away here), not to
    // the queue's 120 s visibility timeout: they come back on their own.
    let back = h
        .aws
        .receive(&h.queue_url, failed.len(), Duration::from_secs(45))
        .await;
    let back_ids: BTreeSet<String> = back
        .iter()
        .filter_map(|m| m.message_id().map(str::to_owned))
        .collect();
    assert!(
        failed.is_subset(&back_ids),
        "deferred {failed:?}, back {back_ids:?}"
    );
}
