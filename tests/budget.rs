//! The rate budget as every process shares it: in Postgres, with no header ever coming back.

use chrono::{DateTime, TimeZone, Utc};
use ghevents::budget::{Budget, Denied, Observation, Purpose};
use ghevents::github::RateInfo;
use ghevents::store::PgBudget;
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
