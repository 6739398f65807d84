//! Postgres: the schema, idempotent bulk writes, poll state and the shared rate budget.

mod budget;
pub mod cache;
pub mod credentials;
pub mod cycles;
mod events;
mod lock;
mod poll;
pub mod status;
mod tls;
pub mod work;

pub use budget::PgBudget;
pub use credentials::{CredentialSource, DbCredentials};
pub use events::{write_events, write_events_tx, EventInsert, PageWrite, PushEnrichment, Source};
pub use lock::{AdvisoryLock, EVENTS_FEED};
pub use poll::{CycleEnd, PollState};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts};
use std::str::FromStr;
use std::time::Duration;
use tokio_postgres::NoTls;

/// How the pool connects and how long anything may wait on it.
#[derive(Clone)]
pub struct PoolOptions {
    pub max_size: usize,
    /// TCP connect plus TLS and authentication (a `connect_timeout` in the URL wins).
    pub connect_timeout: Duration,
    /// Server-side `statement_timeout`, set on every connection at startup.
    pub statement_timeout: Duration,
    /// How long a checkout waits for a free connection when all are in use.
    pub wait_timeout: Duration,
    /// How long making a new connection may take (within a checkout).
    pub create_timeout: Duration,
    /// How long checking a pooled connection may take before it is replaced.
    pub recycle_timeout: Duration,
    /// Read again when the server refuses the credentials (a rotated secret); the URL's
    /// user and password are used until then.
    pub credentials: Option<std::sync::Arc<dyn CredentialSource>>,
}

impl PoolOptions {
    pub fn new(max_size: usize) -> Self {
        Self {
            max_size,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            wait_timeout: Duration::from_secs(10),
            create_timeout: Duration::from_secs(5),
            recycle_timeout: Duration::from_secs(5),
            credentials: None,
        }
    }
}

mod embedded {
    refinery::embed_migrations!("../migrations");
}

/// Key of the advisory lock taken while migrating, so concurrent cold starts apply each
/// migration once.
const MIGRATION_LOCK: i64 = 0x6768_6576_0001;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid DATABASE_URL: {0}")]
    Config(String),
    #[error("database connection: {}", pool_error_text(.0))]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database: {context}: {source}")]
    Db {
        context: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("migrations: {0}")]
    Migrate(#[from] refinery::Error),
    #[error("migrations: the migration lock (advisory lock {key:#x}) is still held by another session after {waited:?}; the migrations may be running elsewhere, try again later")]
    MigrationLockBusy { key: i64, waited: Duration },
}

/// A pool error with the server's own words when there are some ("password authentication
/// failed for user …", SQLSTATE 28P01).
fn pool_error_text(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(b) => match b.as_db_error() {
            Some(db) => format!(
                "{}: {} (SQLSTATE {})",
                db.severity(),
                db.message(),
                db.code().code()
            ),
            None => match std::error::Error::source(b) {
                Some(cause) => format!("{b}: {cause}"),
                None => b.to_string(),
            },
        },
        other => other.to_string(),
    }
}

impl StoreError {
    /// Connection loss and serialization failures can succeed when tried again.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Pool(_) | StoreError::MigrationLockBusy { .. } => true,
            StoreError::Db { source, .. } => {
                source.is_closed() || source.code().is_some_and(|c| c.code().starts_with("40"))
            }
            _ => false,
        }
    }
}

pub(crate) trait Ctx<T> {
    fn ctx(self, context: &'static str) -> Result<T, StoreError>;
}

impl<T> Ctx<T> for Result<T, tokio_postgres::Error> {
    fn ctx(self, context: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Db { context, source })
    }
}

/// A pool for `url` (a libpq-style URL or key=value string). TLS follows `sslmode` (in the
/// URL, else `PGSSLMODE`; unset = `disable`) and `PGSSLROOTCERT`, as libpq does: see
/// `store/tls.rs`. Connections are made lazily, checked on checkout (a connection a failover
/// or an idle timeout closed is replaced, not handed out) and every wait is bounded
/// ([`PoolOptions`]).
pub fn pool(url: &str, max_size: usize) -> Result<Pool, StoreError> {
    pool_with(url, &PoolOptions::new(max_size))
}

/// [`pool`] with every option given. Without a [`crate::config::Config`] at hand, TLS follows
/// the process's `PGSSLMODE` / `PGSSLROOTCERT`, as libpq does; `crate::app::pool` passes the
/// configuration's instead.
pub fn pool_with(url: &str, options: &PoolOptions) -> Result<Pool, StoreError> {
    pool_with_env_options(url, options, &|k| {
        std::env::var(k).ok().filter(|v| !v.is_empty())
    })
}

/// [`pool`] with the environment (`PGSSLMODE`, `PGSSLROOTCERT`) given.
pub fn pool_with_env(
    url: &str,
    max_size: usize,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Pool, StoreError> {
    pool_with_env_options(url, &PoolOptions::new(max_size), env)
}

/// [`pool_with`] with the environment (`PGSSLMODE`, `PGSSLROOTCERT`) given.
pub fn pool_with_env_options(
    url: &str,
    options: &PoolOptions,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Pool, StoreError> {
    let (url, sslmode) = tls::take_sslmode(url);
    let mode = tls::resolve_mode(sslmode.as_deref(), env)?;
    let mut cfg =
        tokio_postgres::Config::from_str(&url).map_err(|e| StoreError::Config(e.to_string()))?;
    cfg.ssl_mode(mode.ssl_mode());
    if cfg.get_connect_timeout().is_none() {
        cfg.connect_timeout(options.connect_timeout);
    }
    // First, so that a statement_timeout the URL's `options` sets wins.
    let statement_timeout = format!(
        "-c statement_timeout={}",
        options.statement_timeout.as_millis()
    );
    let startup = match cfg.get_options() {
        Some(o) if !o.is_empty() => format!("{statement_timeout} {o}"),
        _ => statement_timeout,
    };
    cfg.options(&startup);
    let manager_config = ManagerConfig {
        // One round trip per checkout: a pooled connection that died (failover, idle
        // timeout) is dropped and replaced instead of failing the caller's first statement.
        recycling_method: RecyclingMethod::Verified,
    };
    let mgr = match (tls::connector(mode, env)?, options.credentials.clone()) {
        // sslmode=disable: tokio-postgres never starts TLS, so NoTls is all it needs.
        (None, None) => Manager::from_config(cfg, NoTls, manager_config),
        (Some(rustls), None) => Manager::from_config(cfg, rustls, manager_config),
        (None, Some(source)) => Manager::from_connect(
            cfg,
            credentials::RotatingConnect::new(NoTls, source),
            manager_config,
        ),
        (Some(rustls), Some(source)) => Manager::from_connect(
            cfg,
            credentials::RotatingConnect::new(rustls, source),
            manager_config,
        ),
    };
    Pool::builder(mgr)
        .max_size(options.max_size.max(1))
        .runtime(Runtime::Tokio1)
        .timeouts(Timeouts {
            wait: Some(options.wait_timeout),
            create: Some(options.create_timeout),
            recycle: Some(options.recycle_timeout),
        })
        .build()
        .map_err(|e| StoreError::Config(e.to_string()))
}

/// How migrations wait for others.
#[derive(Debug, Clone)]
pub struct MigrateOptions {
    /// How long to wait for the migration lock another session holds before giving up.
    pub lock_wait: Duration,
    /// Each statement's wait for a table lock (`lock_timeout`): a migration stuck behind a
    /// long transaction fails instead of blocking every writer queued behind it.
    pub lock_timeout: Duration,
}

impl Default for MigrateOptions {
    fn default() -> Self {
        Self {
            lock_wait: Duration::from_secs(30),
            lock_timeout: Duration::from_secs(10),
        }
    }
}

/// An index on a table that may be large, built with `CREATE INDEX CONCURRENTLY` so writes go
/// on meanwhile. That statement cannot run inside a transaction, and refinery runs every
/// migration in one, so such indexes are not migrations: they are listed in
/// [`ONLINE_INDEXES`] and built after the migrations (see `migrations/README.md`).
#[derive(Debug, Clone, Copy)]
pub struct OnlineIndex {
    pub name: &'static str,
    /// What follows the name: `ON table (columns) [WHERE …]`.
    pub definition: &'static str,
}

/// Indexes built after the migrations, in order, each once (idempotent).
pub const ONLINE_INDEXES: &[OnlineIndex] = &[];

/// Applies pending migrations, once, under an advisory lock, then builds the
/// [`ONLINE_INDEXES`] not built yet. Returns how many migrations were applied.
pub async fn migrate(pool: &Pool) -> Result<usize, StoreError> {
    migrate_with(pool, &MigrateOptions::default()).await
}

/// [`migrate`] with its waits given. Fails with [`StoreError::MigrationLockBusy`] when the
/// lock is not free within `lock_wait`.
pub async fn migrate_with(pool: &Pool, options: &MigrateOptions) -> Result<usize, StoreError> {
    let mut obj = pool.get().await?;
    let started = tokio::time::Instant::now();
    loop {
        let got: bool = obj
            .query_one("SELECT pg_try_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await
            .ctx("migration lock")?
            .get(0);
        if got {
            break;
        }
        let waited = started.elapsed();
        if waited >= options.lock_wait {
            tracing::warn!(
                lock = MIGRATION_LOCK,
                waited_ms = waited.as_millis() as u64,
                error_code = "migration_lock_busy",
                "migration lock still held elsewhere"
            );
            return Err(StoreError::MigrationLockBusy {
                key: MIGRATION_LOCK,
                waited,
            });
        }
        tokio::time::sleep((options.lock_wait - waited).min(Duration::from_millis(250))).await;
    }
    let client: &mut tokio_postgres::Client = &mut obj;
    let result = migrate_locked(client, options).await;
    let unlocked = client
        .batch_execute("RESET lock_timeout; RESET statement_timeout")
        .await
        .and(
            client
                .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
                .await,
        );
    if result.is_err() || unlocked.is_err() {
        // Closing the session releases the lock whatever state it is in.
        drop(deadpool_postgres::Object::take(obj));
    }
    let applied = result?;
    unlocked.ctx("advisory unlock")?;
    Ok(applied)
}

async fn migrate_locked(
    client: &mut tokio_postgres::Client,
    options: &MigrateOptions,
) -> Result<usize, StoreError> {
    // A migration may take longer than the pool's statement_timeout; it may not wait long
    // for a lock.
    client
        .batch_execute(&format!(
            "SET lock_timeout = {}; SET statement_timeout = 0",
            options.lock_timeout.as_millis()
        ))
        .await
        .ctx("migration timeouts")?;
    crate::failpoints::hit("migrate::mid");
    let report = embedded::migrations::runner().run_async(client).await?;
    for index in ONLINE_INDEXES {
        create_index_concurrently(client, index).await?;
    }
    Ok(report.applied_migrations().len())
}

/// Builds `index` with `CREATE INDEX CONCURRENTLY` unless it exists. A build that was
/// interrupted leaves an invalid index behind: it is dropped and built again.
pub async fn create_index_concurrently(
    client: &tokio_postgres::Client,
    index: &OnlineIndex,
) -> Result<(), StoreError> {
    let invalid = client
        .query_opt(
            "SELECT NOT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
             WHERE c.relname = $1 AND pg_table_is_visible(c.oid)",
            &[&index.name],
        )
        .await
        .ctx("index validity")?
        .is_some_and(|r| r.get::<_, bool>(0));
    if invalid {
        tracing::warn!(
            index = index.name,
            "dropping an index an interrupted build left invalid"
        );
        client
            .batch_execute(&format!("DROP INDEX CONCURRENTLY IF EXISTS {}", index.name))
            .await
            .ctx("drop invalid index")?;
    }
    client
        .batch_execute(&format!(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS {} {}",
            index.name, index.definition
        ))
        .await
        .ctx("create index concurrently")?;
    Ok(())
}
