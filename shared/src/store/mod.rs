//! Postgres: the schema, idempotent bulk writes, poll state and the shared rate budget.

mod budget;
pub mod cache;
mod events;
mod lock;
mod poll;
pub mod status;
mod tls;
pub mod work;

pub use budget::PgBudget;
pub use events::{write_events, write_events_tx, EventInsert, PageWrite, RawRef, Source};
pub use lock::AdvisoryLock;
pub use poll::PollState;

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
    #[error("database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database: {context}: {source}")]
    Db {
        context: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("migrations: {0}")]
    Migrate(#[from] refinery::Error),
}

impl StoreError {
    /// Connection loss and serialization failures can succeed when tried again.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Pool(_) => true,
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

/// [`pool`] with every option given.
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

fn pool_with_env_options(
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
    let mgr = match tls::connector(mode, env)? {
        // sslmode=disable: tokio-postgres never starts TLS, so NoTls is all it needs.
        None => Manager::from_config(cfg, NoTls, manager_config),
        Some(rustls) => Manager::from_config(cfg, rustls, manager_config),
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

/// Applies pending migrations, once, under an advisory lock. Returns how many were applied.
pub async fn migrate(pool: &Pool) -> Result<usize, StoreError> {
    let mut obj = pool.get().await?;
    let client: &mut tokio_postgres::Client = &mut obj;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .ctx("advisory lock")?;
    let report = embedded::migrations::runner().run_async(client).await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await
        .ctx("advisory unlock")?;
    Ok(report?.applied_migrations().len())
}
