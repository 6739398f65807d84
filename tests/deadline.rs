//! The functions end before their Lambda deadline (`Context::deadline`) however slowly GitHub
//! answers, and leave nothing claimed behind: no row or fetch lease, no budget unit in flight,
//! the ingest cycle recorded as not completed.

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_lambda_events::event::sqs::SqsEvent;
use ghevents_core::app::{github_config, App};
use ghevents_core::clock::{Clock, ManualClock};
use ghevents_core::config::Config;
use ghevents_core::ingest::Outcome;
use ghevents_core::store::PollState;
use ghevents_core::store::EVENTS_FEED;
use ghevents_tests::data_dir;
use ghevents_tests::db::TestDb;
use github_sim::{Fault, FaultRule, Sim, SimConfig};
use lambda_runtime::{Context, LambdaEvent};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What the functions get from Lambda: a deadline `secs` from now.
fn context_with_deadline(secs: u64) -> Context {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let mut ctx = Context::default();
    ctx.deadline = (now + Duration::from_secs(secs)).as_millis() as u64;
    ctx
}

async fn setup() -> (TestDb, Sim, ManualClock) {
    let db = TestDb::new().await;
    let sim = Sim::start(SimConfig {
        files: vec![data_dir().join("gharchive/2015-01-01-0.json.gz")],
        initial: 300,
        clock: github_sim::Clock::Manual,
        ..SimConfig::default()
    })
    .await
    .expect("github-sim starts");
    let clock = ManualClock::at(chrono::Utc::now());
    (db, sim, clock)
}

/// Production timeouts (20 s reads, 40 s attempts), a 2 s reserve before the deadline.
fn app(sim: &Sim, db: &TestDb, clock: &ManualClock) -> App {
    let url = sim.url();
    let config =
        Config::from_lookup(&move |k| (k == "GITHUB_API_URL").then(|| url.clone())).unwrap();
    let mut gh = github_config(&config);
    gh.deadline_reserve = Duration::from_secs(2);
    App::assemble(config, db.pool.clone(), Arc::new(clock.clone()), gh).unwrap()
}

struct Discard;

impl ghevents_ingest::MetricSink for Discard {
    fn emit(&self, _line: &str) {}
}

fn ingest_deps(
    app: &App,
    clock: &ManualClock,
) -> ghevents_ingest::Deps<ghevents_core::ingest::Ingestor> {
    let (_tx, stop) = tokio::sync::watch::channel(false);
    let mut cycle = app.ingestor(None, None, stop);
    cycle.options.deadline_margin = Some(Duration::from_secs(1));
    ghevents_ingest::Deps {
        cycle,
        outbox: None,
        clock: Arc::new(clock.clone()),
        metrics: Arc::new(Discard),
        function_name: "ingest".into(),
    }
}

fn scheduled(ctx: Context) -> LambdaEvent<EventBridgeEvent> {
    let payload: EventBridgeEvent =
        serde_json::from_str(include_str!("../functions/ingest/events/scheduled.json")).unwrap();
    LambdaEvent::new(payload, ctx)
}

async fn in_flight(db: &TestDb) -> i64 {
    db.count("SELECT coalesce(sum(in_flight), 0)::bigint FROM rate_limit_state")
        .await
}

#[tokio::test]
async fn a_slow_github_ends_the_ingest_invocation_before_its_deadline_with_nothing_in_flight() {
    let (db, sim, clock) = setup().await;
    // Page 1 answers at once, page 2 takes a minute.
    sim.inject(FaultRule::new("/events", 1, Fault::Slow { ms: 60_000 }).after(1));
    let app = app(&sim, &db, &clock);
    let deps = ingest_deps(&app, &clock);

    let started = Instant::now();
    let response = tokio::time::timeout(
        Duration::from_secs(8),
        ghevents_ingest::handler(&deps, scheduled(context_with_deadline(8))),
    )
    .await
    .expect("the handler returns before the invocation's deadline")
    .expect("running out of time is not a failed invocation");

    assert!(started.elapsed() < Duration::from_secs(8));
    assert_eq!(response.summary.outcome, Outcome::DeadlineReached);
    assert_eq!(response.summary.pages, 1, "page 1 is stored");
    assert_eq!(db.count("SELECT count(*) FROM github_events").await, 100);
    let state = PollState::load(&db.pool, EVENTS_FEED).await.unwrap();
    assert!(
        state.previous_cycle_incomplete(),
        "the cycle is recorded as not completed"
    );
    assert_eq!(state.last_result.as_deref(), Some("deadline_reached"));
    assert_eq!(
        in_flight(&db).await,
        0,
        "the cut request's budget unit is settled"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")
            .await,
        0,
        "the feed lock is released"
    );
}

#[tokio::test]
async fn too_little_time_left_sends_no_request_at_all() {
    let (db, sim, clock) = setup().await;
    let app = app(&sim, &db, &clock);
    let mut deps = ingest_deps(&app, &clock);
    deps.cycle.options.deadline_margin = None; // production: 2 s reserve + a 40 s attempt

    let response = ghevents_ingest::handler(&deps, scheduled(context_with_deadline(30)))
        .await
        .unwrap();

    assert_eq!(response.summary.outcome, Outcome::DeadlineReached);
    assert_eq!(response.summary.requests, 0);
    assert!(sim.stats().served_ids.is_empty());
    assert_eq!(db.count("SELECT count(*) FROM github_events").await, 0);
}

#[tokio::test]
async fn an_enrich_batch_out_of_time_leaves_its_rows_pending_and_nothing_leased() {
    let (db, sim, clock) = setup().await;
    let app = app(&sim, &db, &clock);
    // Push events to enrich, as ingest stores them.
    let r = ghevents_ingest::handler(&ingest_deps(&app, &clock), scheduled(Context::default()))
        .await
        .unwrap();
    assert!(r.summary.new_push_events >= 10);
    let ids: Vec<i64> = db
        .pool
        .get()
        .await
        .unwrap()
        .query(
            "SELECT push_id FROM push_events ORDER BY push_id LIMIT 10",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    // Every /users/ answer takes a minute.
    sim.inject(FaultRule::new("/users/", 1000, Fault::Slow { ms: 60_000 }));
    let mut enricher = app.enricher();
    enricher.options.deadline_margin = Some(Duration::from_secs(3));
    let deps = ghevents_enrich::Deps {
        enricher,
        clock: Arc::new(clock.clone()),
        metrics: Arc::new(ghevents_core::metrics::Stdout),
        function_name: "enrich".into(),
    };
    let records: Vec<serde_json::Value> = ids
        .iter()
        .map(|id| {
            serde_json::json!({
                "messageId": format!("m{id}"),
                "receiptHandle": format!("rh{id}"),
                "body": format!("{{\"push_id\": {id}}}"),
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:enrich",
            })
        })
        .collect();
    let event: SqsEvent =
        serde_json::from_value(serde_json::json!({ "Records": records })).unwrap();

    let started = Instant::now();
    let response = tokio::time::timeout(
        Duration::from_secs(8),
        ghevents_enrich::handler(&deps, LambdaEvent::new(event, context_with_deadline(8))),
    )
    .await
    .expect("the handler returns before the invocation's deadline")
    .unwrap();

    assert!(started.elapsed() < Duration::from_secs(8));
    let live_leases = format!(
        "SELECT count(*) FROM push_events WHERE enrichment_status = 'in_progress' AND locked_until > '{}'",
        clock.now().to_rfc3339()
    );
    assert_eq!(db.count(&live_leases).await, 0, "no row keeps a live lease");
    let pending = db
        .count(&format!(
            "SELECT count(*) FROM push_events WHERE enrichment_status = 'pending' AND attempts = 0 AND push_id IN ({})",
            ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
        ))
        .await;
    assert_eq!(
        pending,
        ids.len() as i64,
        "unprocessed rows are pending, no attempt counted"
    );
    assert!(
        response.batch_item_failures.is_empty(),
        "every message is acked: the rows are back in the outbox"
    );
    let back_in_outbox = db
        .count(&format!(
            "SELECT count(*) FROM push_events WHERE enqueued_at IS NULL AND next_attempt_at <= '{}' AND push_id IN ({})",
            (clock.now() + chrono::Duration::seconds(1)).to_rfc3339(),
            ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
        ))
        .await;
    assert_eq!(
        back_in_outbox,
        ids.len() as i64,
        "the outbox sends them again at once"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM enrichment_fetch_leases")
            .await,
        0
    );
    assert_eq!(in_flight(&db).await, 0);
}
