//! The Postgres pool and migrations under trouble: an exhausted pool, a connection killed
//! under it (failover), the migration lock held elsewhere, migrations skipped at start, and
//! a password rotated under a running process.

use ghevents::store::{self, PoolOptions, StoreError};
use ghevents_tests::db::TestDb;
use std::time::{Duration, Instant};

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    client
}

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
async fn a_connection_killed_between_two_operations_does_not_fail_the_second() {
    let db = TestDb::new().await;
    let pool = store::pool(&db.url, 1).unwrap();
    let pid: i32 = pool
        .get()
        .await
        .unwrap()
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);

    // A failover: the server side of the pooled connection goes away (the call returns once
    // the backend has exited).
    let admin = connect(&db.url).await;
    let killed: bool = admin
        .query_one("SELECT pg_terminate_backend($1, 5000)", &[&pid])
        .await
        .unwrap()
        .get(0);
    assert!(killed);

    let conn = pool.get().await.expect("checkout after the failover");
    let n: i64 = conn
        .query_one("SELECT count(*) FROM github_events", &[])
        .await
        .expect("the second operation runs on a live connection")
        .get(0);
    assert_eq!(n, 0);
    let new_pid: i32 = conn
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert_ne!(new_pid, pid);
}

/// A TCP hop in front of Postgres that can fail over: connections open at that moment lose
/// their server and get no answer again, without a FIN or a reset (the old primary's address
/// is gone); new connections reach the server as before.
struct FailoverProxy {
    port: u16,
    generation: tokio::sync::watch::Sender<u64>,
}

impl FailoverProxy {
    async fn start(upstream: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (generation, watch) = tokio::sync::watch::channel(0u64);
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut watch = watch.clone();
                let born = *watch.borrow();
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut a, mut b) = ([0u8; 8192], [0u8; 8192]);
                    loop {
                        tokio::select! {
                            n = client.read(&mut a) => match n {
                                Ok(0) | Err(_) => return,
                                Ok(n) => if server.write_all(&a[..n]).await.is_err() { return },
                            },
                            n = server.read(&mut b) => match n {
                                Ok(0) | Err(_) => return,
                                Ok(n) => if client.write_all(&b[..n]).await.is_err() { return },
                            },
                            _ = async {
                                while watch.changed().await.is_ok() {
                                    if *watch.borrow() > born {
                                        return;
                                    }
                                }
                                std::future::pending::<()>().await
                            } => break,
                        }
                    }
                    drop(server);
                    // Black hole: whatever the client sends is swallowed, nothing comes back.
                    while matches!(client.read(&mut a).await, Ok(n) if n > 0) {}
                });
            }
        });
        Self { port, generation }
    }

    fn fail_over(&self) {
        self.generation.send_modify(|g| *g += 1);
    }
}

#[tokio::test]
async fn a_connection_lost_in_a_failover_is_replaced_on_checkout() {
    let db = TestDb::new().await;
    let upstream = tokio::net::lookup_host("127.0.0.1:5432")
        .await
        .unwrap()
        .next()
        .unwrap();
    let proxy = FailoverProxy::start(upstream).await;
    let url = format!("postgres://postgres@127.0.0.1:{}/{}", proxy.port, db.name);
    let pool = store::pool(&url, 1).unwrap();
    let count = |pool: deadpool_postgres::Pool| async move {
        let conn = pool.get().await?;
        let n: i64 = conn
            .query_one("SELECT count(*) FROM github_events", &[])
            .await
            .map_err(|source| StoreError::Db {
                context: "count",
                source,
            })?
            .get(0);
        Ok::<i64, StoreError>(n)
    };
    assert_eq!(count(pool.clone()).await.unwrap(), 0);

    proxy.fail_over();

    let second = tokio::time::timeout(Duration::from_secs(20), count(pool.clone()))
        .await
        .expect("the second operation hung on the lost connection");
    assert_eq!(second.expect("the second operation succeeds"), 0);
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
