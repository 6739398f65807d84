//! The ingest Lambda's entry point: wiring only (see the crate's `lib.rs` for the handler).

use anyhow::Context;
use ghevents_core::app::App;
use ghevents_core::aws::{init_tracing, LambdaEnv};
use ghevents_core::clock::SystemClock;
use ghevents_core::config::Config;
use ghevents_ingest::{dispatch, Deps, Outbox, Stdout, OUTBOX_FLUSH_LIMIT};
use lambda_runtime::{service_fn, Error};
use std::sync::Arc;

/// Connections per container unless `DB_POOL_SIZE` says otherwise.
const POOL_SIZE: usize = 2;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let config = Config::from_env().context("reading configuration")?;
    init_tracing(config.log_format);
    let env = LambdaEnv::from_config(config)
        .await
        .context("reading secrets")?;
    // One small pool per container, kept across invocations; connections are checked on
    // checkout and the database secret is read again if Postgres refuses it (rotation).
    // Pending migrations are applied here, under an advisory lock, unless MIGRATE_ON_START=false.
    let app = App::start_with(
        env.config.clone(),
        Arc::new(SystemClock),
        POOL_SIZE,
        env.db_credentials.clone(),
    )
    .await
    .context("connecting to Postgres")?;
    let queue = env.push_queue();
    let (_keep_running, stop) = tokio::sync::watch::channel(false);
    let deps = Deps {
        cycle: app.ingestor(env.raw_store(), queue.clone(), stop),
        outbox: queue.map(|queue| Outbox {
            pool: app.pool.clone(),
            queue,
            limit: OUTBOX_FLUSH_LIMIT,
            requeue_after: ghevents_core::outbox::REQUEUE_AFTER,
        }),
        clock: app.clock.clone(),
        metrics: Arc::new(Stdout),
        function_name: env
            .config
            .function_name
            .clone()
            .unwrap_or_else(|| "ingest".into()),
    };
    let pool = app.pool.clone();
    lambda_runtime::run(service_fn(|event| dispatch(&deps, &pool, event))).await
}
