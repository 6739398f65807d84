//! The ingest Lambda's handler, called directly with a scheduled event, against real
//! Postgres, LocalStack (S3, SQS) and github-sim serving a real GH Archive hour. Both raw
//! stores run the same tests. Time is a manual clock; every wait on AWS is bounded.

#[path = "aws_support.rs"]
mod aws_support;

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_support::{localstack, sdk_for, Aws};
use chrono::{DateTime, TimeZone, Utc};
use ghevents_core::app::App;
use ghevents_core::aws::s3::S3Objects;
use ghevents_core::aws::sqs::SqsQueue;
use ghevents_core::clock::{Clock, ManualClock};
use ghevents_core::ingest::{Ingestor, Outcome};
use ghevents_core::queue::{MemoryQueue, PushQueue};
use ghevents_core::raw::{read_raw, ObjectRaw, ObjectReader, RawStore};
use ghevents_ingest::{handler, Deps, HandlerError, MetricSink, Outbox, Response};
use ghevents_tests::db::TestDb;
use ghevents_tests::{data_dir, emf};
use github_sim::{Sim, SimConfig};
use lambda_runtime::{Context, Diagnostic, LambdaEvent};
use std::collections::HashMap;
use std::io::BufRead;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const HOUR: &str = "gharchive/2015-01-01-0.json.gz";
const WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Store {
    Postgres,
    S3,
}

#[derive(Default)]
struct Captured(Mutex<Vec<String>>);

impl MetricSink for Captured {
    fn emit(&self, line: &str) {
        self.0.lock().unwrap().push(line.to_owned());
    }
}

struct Harness {
    db: TestDb,
    sim: Sim,
    aws: Aws,
    clock: ManualClock,
    bucket: Option<String>,
    queue_url: String,
    metrics: Arc<Captured>,
    _stop: tokio::sync::watch::Sender<bool>,
    stop: tokio::sync::watch::Receiver<bool>,
}

fn t0() -> DateTime<Utc> {
    Utc.timestamp_opt(Utc::now().timestamp(), 0).unwrap()
}

async fn harness(store: Store) -> Harness {
    let aws = localstack().await;
    let db = TestDb::new().await;
    let sim = Sim::start(SimConfig {
        files: vec![data_dir().join(HOUR)],
        initial: 300,
        clock: github_sim::Clock::Manual,
        ..SimConfig::default()
    })
    .await
    .expect("github-sim starts");
    let bucket = match store {
        Store::S3 => Some(aws.bucket().await),
        Store::Postgres => None,
    };
    let queue_url = aws.queue().await;
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    Harness {
        db,
        sim,
        clock: ManualClock::at(t0()),
        bucket,
        queue_url,
        aws,
        metrics: Arc::default(),
        _stop: stop_tx,
        stop,
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

    fn raw_store(&self) -> Option<Arc<dyn RawStore>> {
        self.bucket
            .as_ref()
            .map(|b| self.s3_raw_store(&self.aws.s3, b))
    }

    fn s3_raw_store(&self, client: &aws_sdk_s3::Client, bucket: &str) -> Arc<dyn RawStore> {
        Arc::new(ObjectRaw::new(
            S3Objects {
                client: client.clone(),
                bucket: bucket.to_owned(),
            },
            "raw/",
        ))
    }

    fn sqs(&self, queue_url: &str) -> Arc<dyn PushQueue> {
        Arc::new(SqsQueue {
            client: self.aws.sqs.clone(),
            queue_url: queue_url.to_owned(),
        })
    }

    /// The handler's dependencies as `main` builds them, with the given raw store and queue.
    fn deps_with(
        &self,
        raw: Option<Arc<dyn RawStore>>,
        queue: Option<Arc<dyn PushQueue>>,
    ) -> Deps<Ingestor> {
        let app = self.app();
        Deps {
            cycle: app.ingestor(raw, queue.clone(), self.stop.clone()),
            outbox: queue.map(|queue| Outbox {
                pool: self.db.pool.clone(),
                queue,
                limit: 1000,
                requeue_after: ghevents_core::outbox::REQUEUE_AFTER,
            }),
            clock: Arc::new(self.clock.clone()),
            metrics: self.metrics.clone(),
            function_name: "ghevents-test-ingest".into(),
        }
    }

    fn deps(&self) -> Deps<Ingestor> {
        self.deps_with(self.raw_store(), Some(self.sqs(&self.queue_url)))
    }

    fn objects(&self) -> Option<S3Objects> {
        self.bucket.as_ref().map(|b| S3Objects {
            client: self.aws.s3.clone(),
            bucket: b.clone(),
        })
    }

    async fn count(&self, sql: &str) -> i64 {
        self.db.count(sql).await
    }

    async fn push_ids(&self) -> Vec<i64> {
        let c = self.db.pool.get().await.unwrap();
        c.query("SELECT push_id FROM push_events ORDER BY push_id", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    fn later(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }

    /// To the poll the last cycle planned (after a failure the planner may wait longer than
    /// a minute), and at least a minute on.
    async fn until_next_poll(&self) {
        self.later(61);
        let due = self.db.next_poll_at().await;
        self.clock.set(due.max(self.clock.now()));
    }
}

fn scheduled() -> LambdaEvent<EventBridgeEvent> {
    let payload: EventBridgeEvent =
        serde_json::from_str(include_str!("../functions/ingest/events/scheduled.json")).unwrap();
    LambdaEvent::new(payload, Context::default())
}

async fn invoke(deps: &Deps<Ingestor>) -> Result<Response, HandlerError> {
    tokio::time::timeout(WAIT, handler(deps, scheduled()))
        .await
        .expect("the handler returns within 30 s")
}

/// Every line of the GH Archive hour by event id: the bytes GitHub (and github-sim) sent.
fn archive_lines() -> HashMap<i64, Vec<u8>> {
    let file = std::fs::File::open(data_dir().join(HOUR)).unwrap();
    let reader = std::io::BufReader::new(flate2::read::GzDecoder::new(file));
    let mut out = HashMap::new();
    for line in reader.split(b'\n') {
        let line = line.unwrap();
        #[derive(serde::Deserialize)]
        struct Id {
            id: String,
        }
        if let Ok(Id { id }) = serde_json::from_slice::<Id>(&line) {
            out.insert(id.parse().unwrap(), line);
        }
    }
    out
}

async fn a_scheduled_invocation_stores_three_pages_and_queues_each_new_push_once(store: Store) {
    let h = harness(store).await;
    let deps = h.deps();

    let r = invoke(&deps).await.unwrap();

    assert_eq!(r.summary.outcome, Outcome::Completed);
    assert_eq!((r.summary.pages, r.summary.new_events), (3, 300));
    assert_eq!(h.count("SELECT count(*) FROM github_events").await, 300);
    let pushes = h.push_ids().await;
    assert!(
        pushes.len() > 50,
        "the hour has push events: {}",
        pushes.len()
    );
    match store {
        Store::S3 => {
            let bucket = h.bucket.as_deref().unwrap();
            let keys = h.aws.keys(bucket).await;
            assert_eq!(keys.len(), 3, "one object per page: {keys:?}");
            for k in &keys {
                assert!(
                    k.starts_with("raw/events/") && k.ends_with(".json.gz"),
                    "{k}"
                );
            }
            assert_eq!(h.count("SELECT count(*) FROM github_events WHERE raw IS NULL AND raw_object_key IS NOT NULL").await, 300);
            let c = h.db.pool.get().await.unwrap();
            for r in c.query("SELECT raw_object_key, count(*), min(raw_object_line), max(raw_object_line) FROM github_events GROUP BY 1", &[]).await.unwrap() {
                let key: String = r.get(0);
                assert!(keys.contains(&key), "rows refer to stored objects: {key}");
                assert_eq!((r.get::<_, i64>(1), r.get::<_, i32>(2), r.get::<_, i32>(3)), (100, 0, 99), "lines 0..99 of {key}");
            }
        }
        Store::Postgres => {
            assert_eq!(h.count("SELECT count(*) FROM github_events WHERE raw IS NOT NULL AND raw_object_key IS NULL").await, 300);
        }
    }

    // One message per new push id, and each id marked as enqueued.
    let messages = h.aws.receive(&h.queue_url, pushes.len(), WAIT).await;
    let got = Aws::push_ids(&messages);
    assert_eq!(messages.len(), pushes.len(), "one message per push id");
    let mut sent: Vec<i64> = got.keys().copied().collect();
    sent.sort();
    assert_eq!(sent, pushes);
    assert_eq!(
        h.count("SELECT count(*) FROM push_events WHERE enqueued_at IS NULL")
            .await,
        0
    );

    // One metric line, valid EMF, with the figures the dashboard and the alarms read.
    let lines = h.metrics.0.lock().unwrap().clone();
    assert_eq!(lines.len(), 1);
    let emf = emf::validate_line(&lines[0]).unwrap_or_else(|e| panic!("{e}: {}", lines[0]));
    assert_eq!(emf["_aws"]["CloudWatchMetrics"][0]["Namespace"], "ghevents");
    assert_eq!(emf["FunctionName"], "ghevents-test-ingest");
    let m = |name: &str| emf::metric(&emf, name).unwrap_or_else(|| panic!("no {name}: {emf}"));
    assert_eq!(m("IngestCycleSuccess"), 1.0);
    assert_eq!(
        (
            m("NewEvents"),
            m("Duplicates"),
            m("Pages"),
            m("NotModified")
        ),
        (300.0, 0.0, 3.0, 0.0)
    );
    assert_eq!(
        m("GapSuspected"),
        0.0,
        "the first cycle has nothing to miss"
    );
    assert_eq!(m("EnrichBacklog"), pushes.len() as f64);
    assert!(m("RateRemaining") >= 0.0);
    assert!(m("FeedLagSeconds") >= 0.0);
    assert!(m("EnrichBacklogAgeSeconds") >= 0.0);
    assert!(m("IngestCycleDuration") >= 0.0);

    // The next tick before X-Poll-Interval: a successful invocation that sends nothing.
    let r = invoke(&deps).await.unwrap();
    assert_eq!(
        (r.summary.outcome, r.summary.requests, r.outbox_sent),
        (Outcome::NotDue, 0, 0)
    );
    assert!(
        h.aws
            .receive(&h.queue_url, 0, Duration::from_secs(2))
            .await
            .is_empty(),
        "nothing sent twice"
    );
}

#[tokio::test]
async fn postgres_store_a_scheduled_invocation_stores_three_pages_and_queues_each_new_push_once() {
    a_scheduled_invocation_stores_three_pages_and_queues_each_new_push_once(Store::Postgres).await;
}

#[tokio::test]
async fn s3_store_a_scheduled_invocation_stores_three_pages_and_queues_each_new_push_once() {
    a_scheduled_invocation_stores_three_pages_and_queues_each_new_push_once(Store::S3).await;
}

async fn every_stored_event_reads_back_as_github_sent_it(store: Store) {
    let h = harness(store).await;
    invoke(&h.deps()).await.unwrap();
    let original = archive_lines();
    let objects = h.objects();
    let reader = objects.as_ref().map(|o| o as &dyn ObjectReader);

    let ids: Vec<i64> = {
        let c = h.db.pool.get().await.unwrap();
        c.query("SELECT event_id FROM github_events", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    assert_eq!(ids.len(), 300);
    for id in ids {
        let back = read_raw(&h.db.pool, reader, id).await.unwrap();
        let sent = &original[&id];
        match store {
            // Out of line: the very bytes.
            Store::S3 => assert_eq!(back, *sent, "event {id} differs from its GH Archive line"),
            // JSONB keeps the value, not the formatting.
            Store::Postgres => assert_eq!(
                serde_json::from_slice::<serde_json::Value>(&back).unwrap(),
                serde_json::from_slice::<serde_json::Value>(sent).unwrap(),
                "event {id}"
            ),
        }
    }
}

#[tokio::test]
async fn postgres_store_every_stored_event_reads_back_as_github_sent_it() {
    every_stored_event_reads_back_as_github_sent_it(Store::Postgres).await;
}

#[tokio::test]
async fn s3_store_every_stored_event_reads_back_byte_for_byte() {
    every_stored_event_reads_back_as_github_sent_it(Store::S3).await;
}

#[tokio::test]
async fn s3_unavailable_commits_nothing_and_the_next_invocation_stores_the_pages() {
    let h = harness(Store::S3).await;
    let queue = h.sqs(&h.queue_url);

    // A bucket that does not exist: a client error, not worth retrying as such.
    let missing = aws_support::unique("ghevents-missing");
    let deps = h.deps_with(
        Some(h.s3_raw_store(&h.aws.s3, &missing)),
        Some(queue.clone()),
    );
    let err = invoke(&deps).await.unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("PutObject s3://{missing}/raw/events/")),
        "{err}"
    );
    let d: Diagnostic = err.into();
    assert_eq!(d.error_type, "NonRetryable");

    // An endpoint nobody listens on: a connection failure, worth retrying.
    let closed = sdk_for("http://127.0.0.1:9").await;
    h.until_next_poll().await;
    let deps = h.deps_with(
        Some(h.s3_raw_store(
            &ghevents_core::aws::s3_client(&closed),
            h.bucket.as_deref().unwrap(),
        )),
        Some(queue.clone()),
    );
    let d: Diagnostic = invoke(&deps).await.unwrap_err().into();
    assert_eq!(d.error_type, "Retryable", "{}", d.error_message);

    assert_eq!(
        h.count("SELECT count(*) FROM github_events").await,
        0,
        "no page without its raw object"
    );
    assert_eq!(h.count("SELECT count(*) FROM push_events").await, 0);
    let lines = h.metrics.0.lock().unwrap().clone();
    assert_eq!(lines.len(), 2, "one metric line per failed invocation too");
    for line in &lines {
        let emf = emf::validate_line(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(
            (
                emf::metric(&emf, "IngestCycleSuccess"),
                emf["IngestCycleFailed"].as_f64()
            ),
            (Some(0.0), Some(1.0)),
            "no success for a failed cycle: {line}"
        );
        assert_eq!(emf["error_code"], "raw_store");
    }

    // S3 is back: the next tick stores every page, once, and queues the pushes.
    h.until_next_poll().await;
    let r = invoke(&h.deps()).await.unwrap();
    assert_eq!(
        (r.summary.outcome, r.summary.pages, r.summary.new_events),
        (Outcome::Completed, 3, 300)
    );
    assert_eq!(h.aws.keys(h.bucket.as_deref().unwrap()).await.len(), 3);
    let pushes = h.push_ids().await;
    let messages = h.aws.receive(&h.queue_url, pushes.len(), WAIT).await;
    assert_eq!(messages.len(), pushes.len());
    assert!(Aws::push_ids(&messages).values().all(|&n| n == 1));
}

#[tokio::test]
async fn a_queue_failure_after_the_commit_is_made_good_by_the_next_flush_exactly_once() {
    let h = harness(Store::Postgres).await;

    // The queue URL names no queue: the pages commit, the sends fail.
    let broken = h.deps_with(None, Some(h.sqs(&h.aws.missing_queue_url())));
    let r = invoke(&broken).await.unwrap();
    assert_eq!(
        (r.summary.outcome, r.summary.new_events),
        (Outcome::Completed, 300),
        "a queue failure does not fail ingestion"
    );
    let pushes = h.push_ids().await;
    assert!(!pushes.is_empty());
    assert_eq!(
        h.count("SELECT count(*) FROM push_events WHERE enqueued_at IS NULL")
            .await,
        pushes.len() as i64
    );
    // A broken queue fails the flush too, and the rows stay.
    assert_eq!(invoke(&broken).await.unwrap().outbox_sent, 0);
    assert_eq!(
        h.count("SELECT count(*) FROM push_events WHERE enqueued_at IS NULL")
            .await,
        pushes.len() as i64
    );

    // The next invocation with a working queue sends every row once, before its cycle.
    let deps = h.deps();
    let r = invoke(&deps).await.unwrap();
    assert_eq!(r.outbox_sent, pushes.len() as u64);
    assert_eq!(r.summary.outcome, Outcome::NotDue);
    let r = invoke(&deps).await.unwrap();
    assert_eq!(r.outbox_sent, 0, "nothing left to flush");

    let messages = h.aws.receive(&h.queue_url, pushes.len(), WAIT).await;
    let got = Aws::push_ids(&messages);
    assert_eq!(messages.len(), pushes.len(), "each push id exactly once");
    let mut ids: Vec<i64> = got.keys().copied().collect();
    ids.sort();
    assert_eq!(ids, pushes);
    assert_eq!(
        h.count("SELECT count(*) FROM push_events WHERE enqueued_at IS NULL")
            .await,
        0
    );
}

#[tokio::test]
async fn a_crash_between_commit_and_send_loses_no_push_id() {
    let h = harness(Store::S3).await;

    // The pages commit and the process dies before sending: modelled by a cycle without a
    // queue, then dropping everything it had.
    {
        let app = h.app();
        let ingestor = app.ingestor(h.raw_store(), None, h.stop.clone());
        let s = ingestor.run_cycle().await.unwrap();
        assert_eq!(s.new_events, 300);
    }
    let pushes = h.push_ids().await;
    assert_eq!(
        h.count("SELECT count(*) FROM push_events WHERE enqueued_at IS NULL")
            .await,
        pushes.len() as i64
    );

    // A fresh container: its first invocation flushes the outbox.
    h.later(61);
    let deps = h.deps();
    let r = invoke(&deps).await.unwrap();
    assert_eq!(r.outbox_sent, pushes.len() as u64);
    h.later(61);
    invoke(&deps).await.unwrap();

    let messages = h.aws.receive(&h.queue_url, pushes.len(), WAIT).await;
    let got = Aws::push_ids(&messages);
    assert_eq!(
        messages.len(),
        pushes.len(),
        "every push id reaches SQS exactly once"
    );
    assert_eq!(got.len(), pushes.len());
    assert_eq!(
        h.count("SELECT count(*) FROM push_events WHERE enqueued_at IS NULL")
            .await,
        0
    );
}

#[tokio::test]
async fn only_ids_the_queue_took_are_marked_and_the_rest_go_out_with_the_next_flush() {
    let h = harness(Store::Postgres).await;
    // Ingest without a queue, then refuse a few ids.
    let app = h.app();
    app.ingestor(None, None, h.stop.clone())
        .run_cycle()
        .await
        .unwrap();
    let pushes = h.push_ids().await;
    let refused: Vec<i64> = pushes.iter().step_by(7).copied().collect();
    let queue = Arc::new(MemoryQueue::new());
    queue.refuse_ids(&refused);

    let first = ghevents_core::outbox::flush(&h.db.pool, queue.as_ref(), h.clock.now(), 10_000)
        .await
        .unwrap();

    assert!(first.sent > 0 && first.failed > 0, "{first:?}");
    let c = h.db.pool.get().await.unwrap();
    let marked: Vec<i64> = c
        .query(
            "SELECT push_id FROM push_events WHERE enqueued_at IS NOT NULL ORDER BY push_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut sent = queue.sent();
    sent.sort();
    assert_eq!(marked, sent, "exactly the ids the queue took are marked");
    assert!(refused.iter().all(|id| !marked.contains(id)));

    // Accepted again: the following flushes send the rest, each once.
    let queue2 = MemoryQueue::new();
    let mut total = first.sent;
    loop {
        let r = ghevents_core::outbox::flush(&h.db.pool, &queue2, h.clock.now(), 10_000)
            .await
            .unwrap();
        total += r.sent;
        if r.sent == 0 {
            break;
        }
    }
    assert_eq!(total, pushes.len() as u64);
    let mut all = queue.sent();
    all.extend(queue2.sent());
    all.sort();
    assert_eq!(all, pushes, "every id sent once over both queues");
}

#[tokio::test]
async fn two_flushes_at_once_never_send_the_same_row() {
    let h = harness(Store::Postgres).await;
    h.app()
        .ingestor(None, None, h.stop.clone())
        .run_cycle()
        .await
        .unwrap();
    let pushes = h.push_ids().await;
    let (a, b) = (MemoryQueue::new(), MemoryQueue::new());

    let (ra, rb) = tokio::join!(
        ghevents_core::outbox::flush(&h.db.pool, &a, h.clock.now(), 10_000),
        ghevents_core::outbox::flush(&h.db.pool, &b, h.clock.now(), 10_000),
    );

    assert_eq!(ra.unwrap().sent + rb.unwrap().sent, pushes.len() as u64);
    let mut all = a.sent();
    all.extend(b.sent());
    all.sort();
    assert_eq!(all, pushes, "each row sent by exactly one flush");
    assert!(a.calls() <= pushes.len().div_ceil(10) + 1, "batches of 10");
}

#[tokio::test]
async fn the_outbox_is_left_to_a_cycle_that_is_running() {
    let h = harness(Store::Postgres).await;
    let app = h.app();
    let ingestor = app.ingestor(None, None, h.stop.clone());
    ingestor.run_cycle().await.unwrap();
    let pushes = h.push_ids().await;
    let queue = MemoryQueue::new();

    // Another process holds the feed's cycle lock (the ingest cycle's own: it sees Busy).
    let holder = h.db.pool.get().await.unwrap();
    holder
        .execute(
            "SELECT pg_advisory_lock(hashtextextended('ghevents:poll:events', 0))",
            &[],
        )
        .await
        .unwrap();
    h.later(61);
    assert_eq!(
        ingestor.run_cycle().await.unwrap().outcome,
        Outcome::Busy,
        "the same lock as the cycle's"
    );
    let skipped = ghevents_core::outbox::flush_when_idle(
        &h.db.pool,
        &queue,
        h.clock.now(),
        1000,
        ghevents_core::outbox::REQUEUE_AFTER,
    )
    .await
    .unwrap();
    assert_eq!(skipped, None);
    assert_eq!(queue.calls(), 0);

    holder
        .execute(
            "SELECT pg_advisory_unlock(hashtextextended('ghevents:poll:events', 0))",
            &[],
        )
        .await
        .unwrap();
    let r = ghevents_core::outbox::flush_when_idle(
        &h.db.pool,
        &queue,
        h.clock.now(),
        1000,
        ghevents_core::outbox::REQUEUE_AFTER,
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(r.sent, pushes.len() as u64);
    // The flush let go of the lock: the next cycle runs.
    assert_ne!(ingestor.run_cycle().await.unwrap().outcome, Outcome::Busy);
}
