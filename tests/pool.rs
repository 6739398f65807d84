//! The Postgres pool and migrations under trouble: an exhausted pool, a connection killed
//! under it (failover), the migration lock held elsewhere, migrations skipped at start, and
//! a password rotated under a running process.

use ghevents::store::{self, PoolOptions, StoreError};
use ghevents_tests::db::TestDb;
use std::time::{Duration, Instant};

#[tokio::test]
async fn a_checkout_from_an_exhausted_pool_fails_within_the_wait_timeout() {
    let db = TestDb::new_empty().await;
    let pool = store::pool(&db.url, 1).unwrap();
    let held = pool.get().await.expect("first checkout");

    let started = Instant::now();
    let second = tokio::time::timeout(Duration::from_secs(20), pool.get()).await;

    let second = second.expect("the checkout gave up by itself instead of hanging");
    assert!(second.is_err(), "no connection was free");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_secs(12),
        "waited {waited:?}, the pool's wait timeout is 10 s"
    );
    let err = StoreError::from(second.unwrap_err());
    assert!(err.is_retryable(), "{err}");
    drop(held);
}

#[tokio::test]
async fn statements_are_cut_at_the_statement_timeout() {
    let db = TestDb::new_empty().await;
    let pool = store::pool_with(
        &db.url,
        &PoolOptions {
            statement_timeout: Duration::from_millis(300),
            ..PoolOptions::new(1)
        },
    )
    .unwrap();
    let conn = pool.get().await.unwrap();
    let e = conn
        .execute("SELECT pg_sleep(5)", &[])
        .await
        .expect_err("cut by statement_timeout");
    assert_eq!(
        e.code(),
        Some(&tokio_postgres::error::SqlState::QUERY_CANCELED)
    );
    let shown: String = conn
        .query_one("SHOW statement_timeout", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(shown, "300ms");
}
