//! The rate budget as every process shares it: in Postgres, with no header ever coming back.

use chrono::{DateTime, TimeZone, Utc};
use ghevents_core::budget::{Budget, Denied, Observation, Purpose};
use ghevents_core::github::RateInfo;
use ghevents_core::store::PgBudget;
use ghevents_tests::db::TestDb;

fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
}

#[tokio::test]
async fn a_shared_window_without_rate_headers_ends_an_hour_after_it_began() {
    let db = TestDb::new().await;
    let budget = PgBudget::new(db.pool.clone(), "anonymous".into(), 60, 0);
    budget
        .acquire(Purpose::Ingest, t(0))
        .await
        .unwrap()
        .unwrap();
    let rate = RateInfo {
        limit: 60,
        remaining: 59,
        used: Some(1),
        reset: t(3600),
        resource: "core".into(),
    };
    budget
        .observe(Observation::Headers(rate), t(1))
        .await
        .unwrap();

    // After the rollover every request fails on the way back (a proxy's 502 without headers).
    let mut taken = 0;
    while budget
        .acquire(Purpose::Ingest, t(3600))
        .await
        .unwrap()
        .is_ok()
    {
        budget
            .observe(Observation::NoHeaders, t(3601))
            .await
            .unwrap();
        taken += 1;
        assert!(taken <= 60, "more units than the window holds");
    }
    assert_eq!(taken, 60);
    assert_eq!(
        budget.acquire(Purpose::Ingest, t(3700)).await.unwrap(),
        Err(Denied::Exhausted { until: t(7200) })
    );
    assert!(budget
        .acquire(Purpose::Ingest, t(7200))
        .await
        .unwrap()
        .is_ok());
    let s = budget.snapshot(t(7200)).await.unwrap();
    assert_eq!((s.remaining, s.in_flight), (59, 1));
}

#[tokio::test]
async fn requests_that_never_reached_github_cost_the_shared_budget_nothing() {
    let db = TestDb::new().await;
    let budget = PgBudget::new(db.pool.clone(), "anonymous".into(), 3, 0);
    for i in 0..20 {
        budget
            .acquire(Purpose::Ingest, t(i))
            .await
            .unwrap()
            .unwrap();
        budget.observe(Observation::NotSent, t(i)).await.unwrap();
    }
    let s = budget.snapshot(t(30)).await.unwrap();
    assert_eq!((s.remaining, s.used, s.in_flight), (3, 0, 0));
}

/// Headers no GitHub would send: every wait they imply is at most an hour, and nothing panics.
#[tokio::test]
async fn absurd_rate_headers_make_no_process_wait_more_than_an_hour() {
    use ghevents_core::clock::ManualClock;
    use ghevents_core::github::{Fetched, GithubError};
    use ghevents_tests::replay::{ReplayServer, Reply};
    use std::sync::Arc;
    use std::time::Duration;

    let db = TestDb::new().await;
    let clock = ManualClock::at(t(0));
    let gh = ReplayServer::start(Arc::new(clock.clone())).await;
    let app = ghevents_tests::app(&gh.url, &db.pool, Arc::new(clock.clone()), &[], None);
    let hour = t(3600);

    // A secondary limit asking for 10^13 seconds (chrono cannot even represent the moment).
    gh.push(
        "/events",
        Reply::new(403)
            .header("retry-after", "10000000000000")
            .body(r#"{"message":"You have exceeded a secondary rate limit"}"#),
    );
    let e = app
        .github
        .get("/events", None, Purpose::Ingest)
        .await
        .unwrap_err();
    assert!(
        matches!(e, GithubError::SecondaryRateLimit { until, .. } if until == hour),
        "{e}"
    );

    // A primary limit whose reset is decades away.
    clock.set(hour);
    gh.push(
        "/events",
        Reply::new(403)
            .header("x-ratelimit-limit", "60")
            .header("x-ratelimit-remaining", "0")
            .header("x-ratelimit-reset", "4102444800")
            .body(r#"{"message":"API rate limit exceeded"}"#),
    );
    let e = app
        .github
        .get("/events", None, Purpose::Ingest)
        .await
        .unwrap_err();
    assert_eq!(e.wait_until(), Some(t(7200)), "{e}");

    // An ordinary answer with a poll interval of 2^32 seconds and a reset 10^9 seconds away.
    clock.set(t(7200));
    gh.push(
        "/events",
        Reply::new(200)
            .header("x-ratelimit-limit", "60")
            .header("x-ratelimit-remaining", "59")
            .header(
                "x-ratelimit-reset",
                (t(7200).timestamp() + 1_000_000_000).to_string(),
            )
            .header("x-poll-interval", "4294967296")
            .body("[]"),
    );
    match app
        .github
        .get("/events", None, Purpose::Ingest)
        .await
        .unwrap()
    {
        Fetched::Ok {
            poll_interval,
            rate,
            ..
        } => {
            assert_eq!(poll_interval, Some(Duration::from_secs(3600)));
            assert_eq!(rate.unwrap().reset, t(10_800));
        }
        other => panic!("{other:?}"),
    }
    let s = app.budget.snapshot(t(7200)).await.unwrap();
    assert_eq!(s.reset_at, Some(t(10_800)));
}
