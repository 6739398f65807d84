//! Wiring shared by the CLI and the Lambda functions: one pool, one budget, one client.

use crate::budget::Budget;
use crate::clock::Clock;
use crate::config::Config;
use crate::enrich::{EnrichOptions, Enricher};
use crate::github::{identity_of, GithubClient, GithubConfig};
use crate::ingest::{IngestOptions, Ingestor};
use crate::queue::PushQueue;
use crate::raw::{InlineRaw, RawStore};
use crate::store::{self, CredentialSource, PgBudget, PoolOptions, StoreError};
use deadpool_postgres::Pool;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum WiringError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// The long-lived parts of a process.
pub struct App {
    pub config: Config,
    pub pool: Pool,
    pub budget: Arc<PgBudget>,
    pub github: Arc<GithubClient>,
    pub clock: Arc<dyn Clock>,
}

impl App {
    /// Connects (lazily) and applies pending migrations unless `MIGRATE_ON_START=false`.
    /// `pool_size` applies when `DB_POOL_SIZE` is unset.
    pub async fn start(
        config: Config,
        clock: Arc<dyn Clock>,
        pool_size: usize,
    ) -> Result<Self, WiringError> {
        Self::start_with(config, clock, pool_size, None).await
    }

    /// [`App::start`] with a source to read the database credentials from again when the
    /// server refuses them (a rotated secret).
    pub async fn start_with(
        config: Config,
        clock: Arc<dyn Clock>,
        pool_size: usize,
        credentials: Option<Arc<dyn CredentialSource>>,
    ) -> Result<Self, WiringError> {
        let options = PoolOptions {
            credentials,
            ..PoolOptions::new(config.db_pool_size.unwrap_or(pool_size))
        };
        let pool = pool(&config, &options)?;
        if config.migrate_on_start {
            store::migrate(&pool).await?;
        } else {
            tracing::info!("MIGRATE_ON_START=false: pending migrations are not applied here");
        }
        Self::with_pool(config, pool, clock)
    }

    pub fn with_pool(
        config: Config,
        pool: Pool,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, WiringError> {
        let gh = github_config(&config);
        Self::assemble(config, pool, clock, gh)
    }

    /// As [`App::with_pool`], with the GitHub client's settings given (timeouts, retries).
    pub fn assemble(
        config: Config,
        pool: Pool,
        clock: Arc<dyn Clock>,
        gh: GithubConfig,
    ) -> Result<Self, WiringError> {
        let budget = Arc::new(PgBudget::new(
            pool.clone(),
            identity_of(config.github_token.as_ref()),
            config.default_rate_limit(),
            config.ingest_reserve,
        ));
        let github = Arc::new(GithubClient::new(
            gh,
            budget.clone() as Arc<dyn Budget>,
            clock.clone(),
        )?);
        Ok(Self {
            config,
            pool,
            budget,
            github,
            clock,
        })
    }

    pub fn ingestor(
        &self,
        raw: Option<Arc<dyn RawStore>>,
        queue: Option<Arc<dyn PushQueue>>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Ingestor {
        Ingestor {
            stop,
            pool: self.pool.clone(),
            github: self.github.clone(),
            budget: self.budget.clone(),
            clock: self.clock.clone(),
            raw: raw.unwrap_or_else(|| Arc::new(InlineRaw)),
            queue,
            options: IngestOptions::default(),
        }
    }
}

impl App {
    pub fn enricher(&self) -> Enricher {
        Enricher {
            pool: self.pool.clone(),
            github: self.github.clone(),
            clock: self.clock.clone(),
            options: EnrichOptions {
                cache_ttl: self.config.enrich_cache_ttl,
                max_attempts: self.config.enrich_max_attempts,
                ..EnrichOptions::default()
            },
            cache_hits: Arc::default(),
        }
    }
}

/// The pool a configuration asks for: its database URL, and TLS as its `PGSSLMODE` /
/// `PGSSLROOTCERT` say.
pub fn pool(config: &Config, options: &PoolOptions) -> Result<Pool, WiringError> {
    Ok(store::pool_with_env_options(
        config.require_database_url()?,
        options,
        &|k| config.pg_env(k),
    )?)
}

/// The GitHub client settings a configuration asks for.
pub fn github_config(config: &Config) -> GithubConfig {
    GithubConfig {
        base_url: config.github_api_url.clone(),
        token: config.github_token.clone(),
        ..GithubConfig::default()
    }
}
