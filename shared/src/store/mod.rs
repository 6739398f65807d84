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
pub use poll::{CycleEnd, PollState};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::str::FromStr;
use tokio_postgres::NoTls;

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
/// `store/tls.rs`. Connections are made lazily and replaced when found broken.
pub fn pool(url: &str, max_size: usize) -> Result<Pool, StoreError> {
    pool_with_env(url, max_size, &|k| {
        std::env::var(k).ok().filter(|v| !v.is_empty())
    })
}

/// [`pool`] with the environment (`PGSSLMODE`, `PGSSLROOTCERT`) given.
pub fn pool_with_env(
    url: &str,
    max_size: usize,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Pool, StoreError> {
    let (url, sslmode) = tls::take_sslmode(url);
    let mode = tls::resolve_mode(sslmode.as_deref(), env)?;
    let mut cfg =
        tokio_postgres::Config::from_str(&url).map_err(|e| StoreError::Config(e.to_string()))?;
    cfg.ssl_mode(mode.ssl_mode());
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let mgr = match tls::connector(mode, env)? {
        // sslmode=disable: tokio-postgres never starts TLS, so NoTls is all it needs.
        None => Manager::from_config(cfg, NoTls, manager_config),
        Some(rustls) => Manager::from_config(cfg, rustls, manager_config),
    };
    Pool::builder(mgr)
        .max_size(max_size)
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
