//! Enrichment against real Postgres and github-sim serving `/users` and `/repos` synthesized
//! from the same GH Archive hour the push events come from. The simulator's stats are the
//! ground truth: requests per login and repository, statuses, violations.

use chrono::Utc;
use ghevents_core::app::App;
use ghevents_core::budget::Purpose;
use ghevents_core::clock::{Clock, ManualClock, SystemClock};
use ghevents_core::enrich::{EnrichOptions, Enricher};
use ghevents_core::github::{GithubError, RetryPolicy};
use ghevents_core::import::{import_file, Progress};
use ghevents_tests::data_dir;
use ghevents_tests::db::TestDb;
use github_sim::{Fault, FaultRule, PathKind, Sim, SimConfig};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const HOUR_2021: &str = "2021-07-21-first-200-of-hours-06-09.json.gz";

fn archive(name: &str) -> PathBuf {
    data_dir().join("gharchive").join(name)
}

async fn sim(file: &str, tweak: impl FnOnce(&mut SimConfig)) -> Sim {
    let mut c = SimConfig {
        files: vec![archive(file)],
        clock: github_sim::Clock::Manual,
        initial: 0,
        limit_anonymous: 1_000_000,
        ..SimConfig::default()
    };
    tweak(&mut c);
    Sim::start(c).await.expect("simulator starts")
}

fn app(db: &TestDb, sim: &Sim, clock: Arc<dyn Clock>, env: &[(&str, &str)]) -> App {
    let retry = RetryPolicy {
        max_retries: 2,
        min_delay: Duration::from_millis(2),
        max_delay: Duration::from_millis(10),
    };
    ghevents_tests::app(&sim.url(), &db.pool, clock, env, Some(retry))
}

fn enricher(app: &App, tweak: impl FnOnce(&mut EnrichOptions)) -> Enricher {
    let mut e = app.enricher();
    tweak(&mut e.options);
    e
}

async fn import(db: &TestDb, file: &str) {
    let s = import_file(
        &db.pool,
        &archive(file),
        2000,
        Arc::new(Progress::default()),
        Utc::now(),
    )
    .await
    .unwrap();
    assert_eq!(s.rejected_total(), 0);
}

async fn statuses(db: &TestDb) -> (i64, i64, i64, i64) {
    let q = |s: &str| format!("SELECT count(*) FROM push_events WHERE enrichment_status = '{s}'");
    (
        db.count(&q("pending")).await,
        db.count(&q("in_progress")).await,
        db.count(&q("completed")).await,
        db.count(&q("failed")).await,
    )
}

#[tokio::test]
async fn every_push_event_of_the_2015_hour_completes_with_one_request_per_distinct_actor_and_repo()
{
    let db = TestDb::new().await;
    import(&db, "2015-01-01-0.json.gz").await;
    let sim = sim("2015-01-01-0.json.gz", |_| {}).await;
    let app = app(&db, &sim, Arc::new(SystemClock), &[]);

    let s = enricher(&app, |_| {}).drain().await.unwrap();

    assert_eq!(statuses(&db).await, (0, 0, 4280, 0));
    // GitHub matches names case-insensitively: 2,556 repository spellings are 2,555
    // repositories; two names were deleted and created again within the hour (2,558 ids).
    let actors = db
        .count("SELECT count(DISTINCT lower(actor_login)) FROM push_events")
        .await;
    let repos = db
        .count("SELECT count(DISTINCT lower(repo_name)) FROM push_events")
        .await;
    assert_eq!(
        db.count("SELECT count(DISTINCT actor_id) FROM push_events")
            .await,
        2327
    );
    assert_eq!(
        db.count("SELECT count(DISTINCT repo_name) FROM push_events")
            .await,
        2556
    );
    assert_eq!(
        db.count("SELECT count(DISTINCT repo_id) FROM push_events")
            .await,
        2558
    );
    assert_eq!((actors, repos), (2327, 2555));
    let stats = sim.stats();
    let lower = |m: &std::collections::BTreeMap<String, u64>| {
        let mut out = std::collections::BTreeMap::<String, u64>::new();
        for (k, n) in m {
            *out.entry(k.to_lowercase()).or_default() += n;
        }
        out
    };
    let (users, repos_asked) = (lower(&stats.users), lower(&stats.repos));
    assert_eq!(users.len() as i64, actors, "every distinct actor requested");
    assert_eq!(
        repos_asked.len() as i64,
        repos,
        "every distinct repository requested"
    );
    let twice: Vec<_> = users
        .iter()
        .chain(repos_asked.iter())
        .filter(|(_, &n)| n != 1)
        .collect();
    assert!(twice.is_empty(), "each exactly once, but: {twice:?}");
    // An id not found under its name (404, or the name now leads to another id) is asked for
    // by id once: github-sim answers those paths with 404, so they are the gone entries.
    let gone = db
        .count(
            "SELECT (SELECT count(*) FROM actors WHERE status = 'gone')
                  + (SELECT count(*) FROM repositories WHERE status = 'gone')",
        )
        .await;
    assert!(gone >= 2, "the two repository names taken again: {gone}");
    assert_eq!(
        stats.anonymous().unwrap().total(PathKind::Other) as i64,
        gone,
        "one request by id per id not found under its name"
    );
    assert_eq!(s.requests as i64, actors + repos + gone);
    assert_eq!(db.count("SELECT count(*) FROM actors WHERE status = 'ok' AND login IS NOT NULL AND raw IS NOT NULL").await, actors);
    assert_eq!(
        db.count("SELECT count(*) FROM repositories WHERE status = 'ok' AND language IS NOT DISTINCT FROM raw->>'language'").await,
        repos,
        "one id per repository answered"
    );
    assert_eq!(
        db.count("SELECT count(DISTINCT repo_id) FROM push_events WHERE repo_id NOT IN (SELECT repo_id FROM repositories)").await,
        0,
        "every repository id of a push has its entry"
    );
    assert_eq!(db.count("SELECT count(*) FROM push_events_enriched WHERE actor_status IS NULL OR repo_status IS NULL").await, 0);
}

#[tokio::test]
async fn within_the_ttl_nothing_is_requested_and_with_ttl_zero_every_request_is_conditional() {
    let db = TestDb::new().await;
    import(&db, HOUR_2021).await;
    let sim = sim(HOUR_2021, |_| {}).await;
    let app = app(&db, &sim, Arc::new(SystemClock), &[]);
    let first = enricher(&app, |_| {}).drain().await.unwrap();
    assert!(first.requests > 0);
    let entities = first.requests;

    // The same push events again (as if re-queued): the cache answers.
    let pushes = db.count("SELECT count(*) FROM push_events").await;
    db.pool
        .get()
        .await
        .unwrap()
        .execute("UPDATE push_events SET enrichment_status = 'pending'", &[])
        .await
        .unwrap();
    let second = enricher(&app, |_| {}).drain().await.unwrap();
    assert_eq!((second.requests, second.completed as i64), (0, pushes));

    // TTL 0: every entry is revalidated with its ETag; the 304s refresh fetched_at.
    let before: chrono::DateTime<Utc> = db
        .pool
        .get()
        .await
        .unwrap()
        .query_one("SELECT max(fetched_at) FROM actors", &[])
        .await
        .unwrap()
        .get(0);
    db.pool
        .get()
        .await
        .unwrap()
        .execute("UPDATE push_events SET enrichment_status = 'pending'", &[])
        .await
        .unwrap();
    sim.reset_stats();
    let third = enricher(&app, |o| o.cache_ttl = Duration::ZERO)
        .drain()
        .await
        .unwrap();
    // Each entity at least once (more when it recurs in a later batch: TTL 0 never trusts it).
    assert!(
        third.requests >= entities,
        "{} < {entities}",
        third.requests
    );
    let c = sim.stats().anonymous().cloned().unwrap();
    assert_eq!(
        c.count(PathKind::Users, 304) + c.count(PathKind::Repos, 304),
        third.requests,
        "all conditional, all 304"
    );
    assert_eq!(
        c.count(PathKind::Users, 200) + c.count(PathKind::Repos, 200),
        0
    );
    let stale = db
        .count(&format!(
            "SELECT count(*) FROM actors WHERE fetched_at <= '{}'",
            before.to_rfc3339()
        ))
        .await;
    assert_eq!(stale, 0, "every 304 refreshed fetched_at");
    assert_eq!(statuses(&db).await.2, pushes);
}

#[tokio::test]
async fn enrichment_stops_at_its_share_of_60_and_ingest_keeps_its_reserve() {
    let db = TestDb::new().await;
    import(&db, HOUR_2021).await;
    let sim = sim(HOUR_2021, |c| {
        c.limit_anonymous = 60;
        c.window = Duration::from_secs(4);
        c.initial = 300;
    })
    .await;
    let app = app(
        &db,
        &sim,
        Arc::new(SystemClock),
        &[("INGEST_RESERVE", "20")],
    );

    let s = enricher(&app, |_| {}).drain().await.unwrap();
    assert_eq!(s.requests, 40, "enrichment spends 60 - 20");
    // Requests go out push event by push event (its actor, then its repository): the 40
    // requests complete push events instead of fetching 40 actors and no repository.
    assert!(
        s.completed >= 15,
        "40 requests completed only {} push events: {s:?}",
        s.completed
    );
    let until = s.deferred_until.expect("deferred until the reset");
    assert!(statuses(&db).await.0 > 0, "work left pending");
    // Exhausted for enrichment: a second drain sends nothing.
    assert_eq!(enricher(&app, |_| {}).drain().await.unwrap().requests, 0);

    // Ingest still has its 20 in the same window, then nothing.
    for i in 0..20 {
        assert!(
            app.github
                .get("/events?per_page=100", None, Purpose::Ingest)
                .await
                .is_ok(),
            "ingest request {i}"
        );
    }
    let denied = app
        .github
        .get("/events?per_page=100", None, Purpose::Ingest)
        .await;
    assert!(
        matches!(denied, Err(GithubError::BudgetDenied(_))),
        "{denied:?}"
    );
    let c = sim.stats().anonymous().cloned().unwrap();
    assert_eq!((c.requests, c.violations), (60, 0));

    // After the reset enrichment resumes.
    let wait = (until - Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(1100);
    tokio::time::sleep(wait).await;
    let resumed = enricher(&app, |_| {}).drain().await.unwrap();
    assert!(
        resumed.requests > 0 && resumed.requests <= 40,
        "{resumed:?}"
    );
    assert_eq!(sim.stats().violations(), 0);
}

#[tokio::test]
async fn three_workers_at_once_fetch_each_entity_once_and_never_overdraw() {
    let db = TestDb::new().await;
    import(&db, HOUR_2021).await;
    let sim = sim(HOUR_2021, |c| c.limit_anonymous = 5000).await;
    let apps: Vec<App> = (0..3)
        .map(|_| app(&db, &sim, Arc::new(SystemClock), &[]))
        .collect();
    let workers: Vec<Enricher> = apps
        .iter()
        .map(|a| enricher(a, |o| o.batch_size = 25))
        .collect();

    let results = futures::future::join_all(workers.iter().map(|w| w.drain())).await;

    let total: u64 = results.into_iter().map(|r| r.unwrap().requests).sum();
    let pushes = db.count("SELECT count(*) FROM push_events").await;
    assert_eq!(statuses(&db).await, (0, 0, pushes, 0));
    let stats = sim.stats();
    assert!(
        stats
            .users
            .values()
            .chain(stats.repos.values())
            .all(|&n| n == 1),
        "no entity fetched twice"
    );
    assert_eq!(total as usize, stats.users.len() + stats.repos.len());
    assert_eq!(stats.violations(), 0);
    // The shared budget agrees with GitHub's count.
    let used: i32 = db
        .pool
        .get()
        .await
        .unwrap()
        .query_one("SELECT used FROM rate_limit_state", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(used as u64, total);
}

#[tokio::test]
async fn three_workers_on_a_small_budget_never_overdraw_it() {
    let db = TestDb::new().await;
    import(&db, HOUR_2021).await;
    let sim = sim(HOUR_2021, |c| {
        c.limit_anonymous = 90;
        c.window = Duration::from_secs(3600);
    })
    .await;
    let apps: Vec<App> = (0..3)
        .map(|_| {
            app(
                &db,
                &sim,
                Arc::new(SystemClock),
                &[("INGEST_RESERVE", "20")],
            )
        })
        .collect();
    let workers: Vec<Enricher> = apps
        .iter()
        .map(|a| enricher(a, |o| o.batch_size = 10))
        .collect();

    let results = futures::future::join_all(workers.iter().map(|w| w.drain())).await;

    let total: u64 = results.into_iter().map(|r| r.unwrap().requests).sum();
    let c = sim.stats().anonymous().cloned().unwrap();
    assert_eq!(c.requests, total);
    assert_eq!(total, 60, "90 less ingest's scaled reserve of 30");
    assert_eq!(
        (
            c.violations,
            c.count(PathKind::Users, 403) + c.count(PathKind::Repos, 403)
        ),
        (0, 0)
    );
}

#[tokio::test]
async fn gone_users_and_repos_complete_the_push_event_and_are_checked_again_only_by_id() {
    let db = TestDb::new().await;
    import(&db, HOUR_2021).await;
    let c = db.pool.get().await.unwrap();
    let row = c
        .query_one(
            "SELECT actor_login, repo_name FROM push_events ORDER BY push_id LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    let (login, repo): (String, String) = (row.get(0), row.get(1));
    let sim = sim(HOUR_2021, |c| {
        c.gone_users = vec![login.clone()];
        c.gone_repos = vec![repo.clone()];
    })
    .await;
    let app = app(&db, &sim, Arc::new(SystemClock), &[]);

    enricher(&app, |_| {}).drain().await.unwrap();

    let pushes = db.count("SELECT count(*) FROM push_events").await;
    assert_eq!(
        statuses(&db).await,
        (0, 0, pushes, 0),
        "gone entities complete their push events"
    );
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM actors WHERE login = '{login}' AND status = 'gone'"
        ))
        .await,
        1
    );
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM repositories WHERE full_name = '{repo}' AND status = 'gone'"
        ))
        .await,
        1
    );
    assert_eq!(
        db.count("SELECT sum(attempts) FROM push_events").await,
        0,
        "no retry"
    );

    c.execute("UPDATE push_events SET enrichment_status = 'pending'", &[])
        .await
        .unwrap();
    enricher(&app, |o| o.cache_ttl = Duration::ZERO)
        .drain()
        .await
        .unwrap();
    let stats = sim.stats();
    assert_eq!(
        (stats.users[&login], stats.repos[&repo]),
        (1, 1),
        "not by name again: a gone entry past its TTL is checked by id"
    );
    assert_eq!(
        stats.anonymous().unwrap().count(PathKind::Other, 404),
        4,
        "/user/{{id}} and /repositories/{{id}}, after each name's 404 and once past the TTL"
    );
}

#[tokio::test]
async fn a_worker_killed_mid_batch_is_taken_over_after_the_lease_and_each_row_finishes_once() {
    let db = TestDb::new().await;
    import(&db, HOUR_2021).await;
    let sim = sim(HOUR_2021, |_| {}).await;
    // Slow answers, so the worker is surely mid-batch when it is killed.
    sim.inject(FaultRule::new("/users/", 1000, Fault::Slow { ms: 50 }));
    let clock = ManualClock::at(Utc::now());
    let app = app(&db, &sim, Arc::new(clock.clone()), &[]);

    let doomed = enricher(&app, |o| o.batch_size = 1000);
    let task = tokio::spawn(async move { doomed.drain().await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    task.abort();
    let _ = task.await;
    let (_, in_progress, completed, _) = statuses(&db).await;
    assert!(in_progress > 0, "the killed worker left leased rows");
    assert_eq!(completed, 0);

    // Within the lease nobody takes them; after it, another worker finishes them.
    sim.clear_faults();
    let other = enricher(&app, |_| {});
    assert_eq!(other.drain().await.unwrap().completed, 0);
    clock.advance(Duration::from_secs(301));
    let s = other.drain().await.unwrap();
    let pushes = db.count("SELECT count(*) FROM push_events").await;
    assert_eq!(s.completed as i64, pushes);
    assert_eq!(statuses(&db).await, (0, 0, pushes, 0));
    // Entities fetched before the kill are not fetched again; at most the few in flight (4
    // at a time, users and repositories alike) were.
    let stats = sim.stats();
    let twice = stats.users.values().filter(|&&n| n > 1).count()
        + stats.repos.values().filter(|&&n| n > 1).count();
    assert!(twice <= 4, "{twice} users and repositories fetched twice");
    assert!(stats
        .users
        .values()
        .chain(stats.repos.values())
        .all(|&n| n <= 2));
}

#[tokio::test]
async fn failed_attempts_back_off_and_end_in_failed_with_the_last_error() {
    let db = TestDb::new().await;
    import(&db, HOUR_2021).await;
    let sim = sim(HOUR_2021, |_| {}).await;
    sim.inject(FaultRule::new(
        "/repos/",
        100_000,
        Fault::Status { code: 502 },
    ));
    let clock = ManualClock::at(Utc::now());
    let app = app(&db, &sim, Arc::new(clock.clone()), &[]);
    let worker = enricher(&app, |o| o.max_attempts = 2);

    let first = worker.drain().await.unwrap();
    let pushes = db.count("SELECT count(*) FROM push_events").await;
    assert_eq!(first.failed_attempts as i64, pushes);
    assert_eq!(statuses(&db).await.0, pushes, "pending again, later");
    assert_eq!(
        worker.drain().await.unwrap().requests,
        0,
        "not before next_attempt_at"
    );

    clock.advance(Duration::from_secs(61));
    let second = worker.drain().await.unwrap();
    assert_eq!(second.failed_final as i64, pushes);
    assert_eq!(statuses(&db).await, (0, 0, 0, pushes));
    assert_eq!(
        db.count(
            "SELECT count(*) FROM push_events WHERE attempts = 2 AND last_error LIKE '%HTTP 502%'"
        )
        .await,
        pushes
    );
}

#[tokio::test]
async fn ingest_keeps_working_while_every_enrichment_request_fails() {
    let db = TestDb::new().await;
    let sim = sim(HOUR_2021, |c| {
        c.initial = 100;
        c.poll_interval_secs = 1;
    })
    .await;
    sim.inject(FaultRule::new(
        "/users/",
        100_000,
        Fault::Status { code: 500 },
    ));
    sim.inject(FaultRule::new(
        "/repos/",
        100_000,
        Fault::Status { code: 500 },
    ));
    let app = app(&db, &sim, Arc::new(SystemClock), &[]);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let worker = enricher(&app, |_| {});
    let enrich_loop = tokio::spawn(async move { worker.run_loop(stop).await });

    let (_tx, ingest_stop) = tokio::sync::watch::channel(false);
    let ingestor = app.ingestor(None, None, ingest_stop);
    let first = ingestor.run_cycle().await.unwrap();
    assert_eq!(first.new_events, 100);
    // Wait (bounded) until enrichment has failed at least once.
    let failing =
        "SELECT count(*) FROM push_events WHERE attempts >= 1 AND last_error LIKE '%HTTP 500%'";
    tokio::time::timeout(Duration::from_secs(20), async {
        while db.count(failing).await == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("enrichment attempted and failed");
    sim.release(100);
    let second = ingestor.run_cycle().await.unwrap();
    assert_eq!(
        second.new_events, 100,
        "ingest goes on while enrichment fails"
    );

    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), enrich_loop)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(db.count("SELECT count(*) FROM github_events").await, 200);
    assert!(
        db.count(
            "SELECT count(*) FROM push_events WHERE attempts >= 1 AND last_error LIKE '%HTTP 500%'"
        )
        .await
            > 0
    );
    assert_eq!(
        db.count("SELECT count(*) FROM push_events WHERE enrichment_status = 'completed'")
            .await,
        0
    );
}

#[tokio::test]
async fn a_github_wide_401_pauses_enrichment_without_spending_attempts_and_it_resumes_after() {
    let db = TestDb::new().await;
    import(&db, HOUR_2021).await;
    let sim = sim(HOUR_2021, |_| {}).await;
    // An expired token, or an incident: every /users and /repos request answers 401.
    sim.inject(FaultRule::new(
        "/users/",
        100_000,
        Fault::Status { code: 401 },
    ));
    sim.inject(FaultRule::new(
        "/repos/",
        100_000,
        Fault::Status { code: 401 },
    ));
    let clock = ManualClock::at(Utc::now());
    let app = app(&db, &sim, Arc::new(clock.clone()), &[]);
    let worker = enricher(&app, |o| o.max_attempts = 2);
    let pushes = db.count("SELECT count(*) FROM push_events").await;

    // For a while (past several pauses), every drain runs into the 401s.
    let mut unauthorized = 0;
    for round in 0..4 {
        let s = worker.drain().await.unwrap();
        assert_eq!(
            (s.failed_attempts, s.failed_final, s.completed),
            (0, 0, 0),
            "round {round}: {s:?}"
        );
        let until = s.deferred_until.expect("paused");
        assert!(until > clock.now(), "round {round}");
        assert_eq!(statuses(&db).await, (pushes, 0, 0, 0), "round {round}");
        assert_eq!(
            db.count("SELECT coalesce(sum(attempts), 0) FROM push_events")
                .await,
            0,
            "round {round}: no attempt spent"
        );
        // Paused: nothing is sent before the pause ends.
        let c = sim.stats().anonymous().cloned().unwrap();
        let now_401 = c.count(PathKind::Users, 401) + c.count(PathKind::Repos, 401);
        assert!(now_401 > unauthorized, "round {round}: GitHub was asked");
        unauthorized = now_401;
        assert_eq!(worker.drain().await.unwrap().requests, 0, "round {round}");
        clock.advance((until - clock.now()).to_std().unwrap() + Duration::from_secs(1));
    }
    assert!(
        unauthorized <= 4 * 4,
        "a few probes per pause, not one per push: {unauthorized}"
    );

    // GitHub answers again: everything completes.
    sim.clear_faults();
    let s = worker.drain().await.unwrap();
    assert_eq!(s.completed as i64, pushes, "{s:?}");
    assert_eq!(statuses(&db).await, (0, 0, pushes, 0));
    assert_eq!(
        db.count("SELECT coalesce(sum(attempts), 0) FROM push_events")
            .await,
        0
    );
}

/// A stand-in for GitHub answering only the given paths (everything else 404), counting
/// requests per path. Returns its base URL.
async fn fake_github(
    routes: Vec<(&str, u16, serde_json::Value)>,
) -> (
    String,
    Arc<std::sync::Mutex<std::collections::BTreeMap<String, u64>>>,
) {
    use axum::http::{StatusCode, Uri};
    let routes: Arc<std::collections::HashMap<String, (u16, serde_json::Value)>> = Arc::new(
        routes
            .into_iter()
            .map(|(p, s, b)| (p.to_owned(), (s, b)))
            .collect(),
    );
    let seen = Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::new()));
    let counted = seen.clone();
    let app = axum::Router::new().fallback(move |uri: Uri| {
        let (routes, seen) = (routes.clone(), counted.clone());
        async move {
            *seen
                .lock()
                .unwrap()
                .entry(uri.path().to_owned())
                .or_insert(0) += 1;
            let (status, body) = routes
                .get(uri.path())
                .cloned()
                .unwrap_or((404, serde_json::json!({ "message": "Not Found" })));
            (
                StatusCode::from_u16(status).unwrap(),
                [("content-type", "application/json")],
                body.to_string(),
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

#[tokio::test]
async fn a_renamed_actor_or_repo_is_found_by_id_and_only_a_deleted_one_is_gone_until_the_ttl() {
    let db = TestDb::new().await;
    let c = db.pool.get().await.unwrap();
    c.batch_execute(
        "INSERT INTO github_events (event_id, event_type, source, parse_status, raw)
           SELECT n, 'PushEvent', 'api', 'parsed', '{}'::jsonb FROM generate_series(1, 3) n;
         INSERT INTO push_events (push_id, event_id, actor_id, actor_login, repo_id, repo_name, created_at) VALUES
           (11, 1, 101, 'old-name', 201, 'octo/tools', now()),
           (12, 2, 102, 'deleted-user', 201, 'octo/tools', now()),
           (13, 3, 101, 'old-name', 202, 'octo/old-repo', now());",
    )
    .await
    .unwrap();
    let (url, requests) = fake_github(vec![
        (
            "/user/101",
            200,
            serde_json::json!({ "id": 101, "login": "new-name", "type": "User" }),
        ),
        (
            "/repos/octo/tools",
            200,
            serde_json::json!({ "id": 201, "full_name": "octo/tools", "owner": { "login": "octo" } }),
        ),
        (
            "/repositories/202",
            200,
            serde_json::json!({ "id": 202, "full_name": "octo/new-repo", "owner": { "login": "octo" } }),
        ),
    ])
    .await;
    let clock = ManualClock::at(Utc::now());
    let retry = RetryPolicy {
        max_retries: 0,
        min_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(1),
    };
    let app = ghevents_tests::app(&url, &db.pool, Arc::new(clock.clone()), &[], Some(retry));
    let worker = enricher(&app, |_| {});
    let asked = |path: &str| requests.lock().unwrap().get(path).copied().unwrap_or(0);

    let s = worker.drain().await.unwrap();

    assert_eq!((s.completed, s.gone, s.failed_attempts), (2, 1, 0), "{s:?}");
    assert_eq!(statuses(&db).await, (0, 0, 3, 0));
    let actor = |id: i64| {
        let c = &c;
        async move {
            let r = c
                .query_one(
                    "SELECT login, status FROM actors WHERE actor_id = $1",
                    &[&id],
                )
                .await
                .unwrap();
            (r.get::<_, String>(0), r.get::<_, String>(1))
        }
    };
    assert_eq!(
        actor(101).await,
        ("new-name".into(), "ok".into()),
        "renamed, not gone"
    );
    assert_eq!(actor(102).await.1, "gone", "deleted");
    let repo: (String, String) = c
        .query_one(
            "SELECT full_name, status FROM repositories WHERE repo_id = 202",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(repo, ("octo/new-repo".into(), "ok".into()));
    for (path, n) in [
        ("/users/old-name", 1),
        ("/user/101", 1),
        ("/users/deleted-user", 1),
        ("/user/102", 1),
        ("/repos/octo/old-repo", 1),
        ("/repositories/202", 1),
        ("/repos/octo/tools", 1),
    ] {
        assert_eq!(asked(path), n, "{path}");
    }

    // Within the TTL the gone entry is trusted; after it, it is checked again (by id).
    c.execute(
        "UPDATE push_events SET enrichment_status = 'pending' WHERE push_id = 12",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(worker.drain().await.unwrap().requests, 0);
    assert_eq!(asked("/user/102"), 1);
    clock.advance(Duration::from_secs(86_400 + 1));
    c.execute(
        "UPDATE push_events SET enrichment_status = 'pending' WHERE push_id = 12",
        &[],
    )
    .await
    .unwrap();
    let again = worker.drain().await.unwrap();
    assert_eq!(again.gone, 1, "{again:?}");
    assert_eq!(asked("/user/102"), 2, "the gone entry was re-checked");
}
