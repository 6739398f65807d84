//! The Postgres pool and migrations under trouble: an exhausted pool, a connection killed
//! under it (failover), the migration lock held elsewhere, migrations skipped at start, and
//! a password rotated under a running process.

use ghevents_core::app::App;
use ghevents_core::clock::SystemClock;
use ghevents_core::config::Config;
use ghevents_core::store::{
    self, CredentialSource, DbCredentials, MigrateOptions, PoolOptions, StoreError,
};
use ghevents_tests::db::TestDb;
use secrecy::SecretString;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The key `store::migrate` locks.
const MIGRATION_LOCK: i64 = 0x6768_6576_0001;

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

#[tokio::test]
async fn migrate_gives_up_after_a_bounded_wait_while_another_session_holds_the_lock() {
    let db = TestDb::new_empty().await;
    // Another process is migrating (or died holding the lock in a stuck session).
    let other = connect(&db.url).await;
    other
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .unwrap();

    let started = Instant::now();
    let result = tokio::time::timeout(
        Duration::from_secs(20),
        store::migrate_with(
            &db.pool,
            &MigrateOptions {
                lock_wait: Duration::from_secs(2),
                ..MigrateOptions::default()
            },
        ),
    )
    .await
    .expect("migrate gave up by itself instead of hanging");

    let err = result.expect_err("the lock is held elsewhere");
    assert!(matches!(err, StoreError::MigrationLockBusy { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("migration lock"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(err.is_retryable());

    // Once the other session lets go, migrations run.
    other
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await
        .unwrap();
    let applied = store::migrate(&db.pool).await.unwrap();
    assert!(applied >= 3, "{applied}");
    assert_eq!(store::migrate(&db.pool).await.unwrap(), 0);
}

#[tokio::test]
async fn migrations_run_with_a_lock_timeout_and_leave_the_session_as_it_was() {
    let db = TestDb::new_empty().await;
    let pool = store::pool(&db.url, 1).unwrap();
    store::migrate(&pool).await.unwrap();
    let conn = pool.get().await.unwrap();
    let (lock_timeout, statement_timeout): (String, String) = {
        let r = conn
            .query_one(
                "SELECT current_setting('lock_timeout'), current_setting('statement_timeout')",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(
        (lock_timeout.as_str(), statement_timeout.as_str()),
        ("0", "30s")
    );
    let locked: i64 = conn
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(locked, 0, "the migration lock is released");
}

fn config(pairs: &[(&str, &str)]) -> Config {
    let m: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_lookup(&move |k| m.get(k).cloned()).unwrap()
}

async fn has_schema(db: &TestDb) -> bool {
    connect(&db.url)
        .await
        .query_one("SELECT to_regclass('github_events') IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn migrate_on_start_false_leaves_migrations_to_the_migrate_step() {
    let db = TestDb::new_empty().await;
    let off = config(&[("DATABASE_URL", &db.url), ("MIGRATE_ON_START", "false")]);
    let app = App::start(off, Arc::new(SystemClock), 2).await.unwrap();
    assert!(
        !has_schema(&db).await,
        "MIGRATE_ON_START=false applied migrations"
    );
    app.pool.close();

    let on = config(&[("DATABASE_URL", &db.url), ("DB_POOL_SIZE", "3")]);
    let app = App::start(on, Arc::new(SystemClock), 2).await.unwrap();
    assert!(has_schema(&db).await);
    assert_eq!(app.pool.status().max_size, 3, "DB_POOL_SIZE");
}

/// A cycle the migrate invocation must not run.
struct NoCycle;

#[async_trait::async_trait]
impl ghevents_ingest::IngestCycle for NoCycle {
    async fn run_cycle(
        &self,
        _deadline: ghevents_core::deadline::Deadline,
    ) -> Result<ghevents_core::ingest::CycleSummary, ghevents_core::ingest::IngestError> {
        panic!("a migrate invocation runs no ingest cycle");
    }
}

struct NoMetrics;

impl ghevents_ingest::MetricSink for NoMetrics {
    fn emit(&self, _line: &str) {}
}

#[tokio::test]
async fn the_migrate_payload_applies_migrations_and_returns_their_count() {
    let db = TestDb::new_empty().await;
    let deps = ghevents_ingest::Deps {
        cycle: NoCycle,
        outbox: None,
        clock: Arc::new(SystemClock),
        metrics: Arc::new(NoMetrics),
        function_name: "ingest".into(),
    };
    let invoke = |payload: serde_json::Value| {
        ghevents_ingest::dispatch(
            &deps,
            &db.pool,
            lambda_runtime::LambdaEvent::new(payload, lambda_runtime::Context::default()),
        )
    };

    let out = invoke(serde_json::json!({"ghevents": "migrate"}))
        .await
        .unwrap();
    assert_eq!(out["outcome"], "migrated");
    assert!(out["applied"].as_u64().unwrap() >= 3, "{out}");
    assert!(has_schema(&db).await);
    let again = invoke(serde_json::json!({"ghevents": "migrate"}))
        .await
        .unwrap();
    assert_eq!(again["applied"], 0);

    let err = invoke(serde_json::json!({"ghevents": "vacuum"}))
        .await
        .unwrap_err();
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("vacuum"), "{err}");
}

#[tokio::test]
async fn online_indexes_are_built_concurrently_once_and_rebuilt_when_left_invalid() {
    let db = TestDb::new().await;
    let conn = db.pool.get().await.unwrap();
    let index = store::OnlineIndex {
        name: "push_events_test_online_idx",
        definition: "ON push_events (repo_name)",
    };
    let valid = || async {
        connect(&db.url)
            .await
            .query_opt(
                "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = $1",
                &[&index.name],
            )
            .await
            .unwrap()
            .map(|r| r.get::<_, bool>(0))
    };
    store::create_index_concurrently(&conn, &index)
        .await
        .unwrap();
    store::create_index_concurrently(&conn, &index)
        .await
        .unwrap();
    assert_eq!(valid().await, Some(true));

    // What an interrupted CONCURRENTLY build leaves behind.
    connect(&db.url)
        .await
        .execute(
            "UPDATE pg_index SET indisvalid = false WHERE indexrelid = $1::text::regclass",
            &[&index.name],
        )
        .await
        .unwrap();
    assert_eq!(valid().await, Some(false));
    store::create_index_concurrently(&conn, &index)
        .await
        .unwrap();
    assert_eq!(valid().await, Some(true));
}

// ---------------------------------------------------------------------------------------
// Secret rotation. The shared test server trusts every local connection, so a refused
// password cannot happen there: these tests start a throwaway cluster that asks for
// scram-sha-256 passwords (initdb/pg_ctl, as scripts/postgres.sh does).

struct PasswordCluster {
    dir: tempfile::TempDir,
    port: u16,
}

fn pg_bindir() -> std::path::PathBuf {
    if let Some(d) = std::env::var_os("GHEVENTS_PG_BINDIR") {
        return d.into();
    }
    let mut dirs: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries under /usr/lib/postgresql (or set GHEVENTS_PG_BINDIR)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop()
        .expect("an initdb under /usr/lib/postgresql/*/bin")
}

/// Runs a server program, as the `postgres` OS user when we are root (the server refuses
/// to run as root).
fn pg_cmd(program: &std::path::Path) -> std::process::Command {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc_geteuid() } == 0;
    if root {
        let mut c = std::process::Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        std::process::Command::new(program)
    }
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl PasswordCluster {
    fn start() -> Self {
        let bin = pg_bindir();
        let dir = tempfile::tempdir().unwrap();
        let run = |c: &mut std::process::Command| {
            let out = c.output().expect("running a PostgreSQL program");
            assert!(
                out.status.success(),
                "{c:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(std::process::Command::new("chmod")
            .arg("777")
            .arg(dir.path()));
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, "superpw\n").unwrap();
        run(std::process::Command::new("chmod").arg("644").arg(&pwfile));
        let data = dir.path().join("data");
        run(pg_cmd(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=scram-sha-256", "--pwfile"])
            .arg(&pwfile));
        let port = free_port();
        run(pg_cmd(&bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.path().join("log"))
            .arg("-o")
            .arg(format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1",
                dir.path().display()
            ))
            .args(["-w", "start"]));
        Self { dir, port }
    }

    fn url(&self, user: &str, password: &str) -> String {
        format!(
            "postgres://{user}:{password}@127.0.0.1:{}/postgres",
            self.port
        )
    }
}

impl Drop for PasswordCluster {
    fn drop(&mut self) {
        let _ = pg_cmd(&pg_bindir().join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

/// A secret store the test rotates.
struct FakeSecret {
    password: Mutex<String>,
    reads: Mutex<u32>,
}

#[async_trait::async_trait]
impl CredentialSource for FakeSecret {
    async fn current(&self) -> Result<DbCredentials, String> {
        *self.reads.lock().unwrap() += 1;
        Ok(DbCredentials {
            user: "app".into(),
            password: SecretString::from(self.password.lock().unwrap().clone()),
        })
    }
}

#[tokio::test]
async fn a_rotated_password_is_read_again_and_the_next_operation_succeeds() {
    let cluster = PasswordCluster::start();
    let admin = connect(&cluster.url("postgres", "superpw")).await;
    admin
        .batch_execute("CREATE ROLE app LOGIN PASSWORD 'first-password'")
        .await
        .unwrap();
    let secret = Arc::new(FakeSecret {
        password: Mutex::new("first-password".into()),
        reads: Mutex::new(0),
    });
    // The URL holds the password read at cold start.
    let pool = store::pool_with(
        &cluster.url("app", "first-password"),
        &PoolOptions {
            credentials: Some(secret.clone()),
            ..PoolOptions::new(1)
        },
    )
    .unwrap();
    let one = |pool: deadpool_postgres::Pool| async move {
        let conn = pool.get().await?;
        let n: i32 = conn
            .query_one("SELECT 1", &[])
            .await
            .map_err(|source| StoreError::Db {
                context: "select",
                source,
            })?
            .get(0);
        Ok::<i32, StoreError>(n)
    };
    assert_eq!(one(pool.clone()).await.unwrap(), 1);
    assert_eq!(*secret.reads.lock().unwrap(), 0, "read only when refused");

    // The rotation: new password on the server and in the secret; the open connection dies
    // (a failover, or a recycled connection), so the next operation needs a new one.
    admin
        .batch_execute(
            "ALTER ROLE app PASSWORD 'second-password';
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'app'",
        )
        .await
        .unwrap();
    *secret.password.lock().unwrap() = "second-password".into();
    tokio::time::sleep(Duration::from_millis(200)).await;

    assert_eq!(
        one(pool.clone())
            .await
            .expect("the next operation succeeds"),
        1
    );
    assert_eq!(*secret.reads.lock().unwrap(), 1);
    // And the one after it uses the new password without reading it again.
    admin
        .batch_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'app'",
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(one(pool.clone()).await.unwrap(), 1);
    assert_eq!(*secret.reads.lock().unwrap(), 1);
}

#[tokio::test]
async fn without_a_credential_source_a_refused_password_is_an_error() {
    let cluster = PasswordCluster::start();
    let pool = store::pool(&cluster.url("postgres", "wrong"), 1).unwrap();
    let err = StoreError::from(pool.get().await.expect_err("refused"));
    assert!(err.to_string().contains("password"), "{err}");
}
