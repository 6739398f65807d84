//! The archive Lambda's entry point: wiring only (see the crate's `lib.rs` for the handler).

use anyhow::Context;
use ghevents_archive::{dispatch, Deps, Stdout, DUE_LIMIT, START_MARGIN};
use ghevents_core::app::App;
use ghevents_core::archive::{ArchiveOptions, Archiver};
use ghevents_core::aws::hours::SqsHours;
use ghevents_core::aws::{init_tracing, LambdaEnv};
use ghevents_core::clock::SystemClock;
use ghevents_core::config::Config;
use lambda_runtime::{service_fn, Error};
use std::sync::Arc;

/// Connections per container unless `DB_POOL_SIZE` says otherwise.
const POOL_SIZE: usize = 2;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let config = Config::from_env().context("reading configuration")?;
    init_tracing(config.log_format);
    let queue_url = config
        .archive_queue_url
        .clone()
        .context("ARCHIVE_QUEUE_URL is not set (the hours queue's URL)")?;
    let env = LambdaEnv::from_config(config)
        .await
        .context("reading secrets")?;
    // One small pool per container, kept across invocations (see functions/ingest).
    let app = App::start_with(
        env.config.clone(),
        Arc::new(SystemClock),
        POOL_SIZE,
        env.db_credentials.clone(),
    )
    .await
    .context("connecting to Postgres")?;
    // S3 mode: each hour's file is copied to the raw bucket and imported from that copy.
    let objects = ghevents_core::aws::hour_objects(&env.config, &env.sdk);
    let archiver = Archiver::new(
        app.pool.clone(),
        app.clock.clone(),
        objects,
        ArchiveOptions::from_config(&env.config),
    )
    .context("building the archive client")?;
    let deps = Deps {
        archive: archiver,
        queue: Arc::new(SqsHours {
            client: ghevents_core::aws::sqs_client(&env.sdk),
            queue_url,
        }),
        clock: app.clock.clone(),
        metrics: Arc::new(Stdout),
        function_name: env
            .config
            .function_name
            .clone()
            .unwrap_or_else(|| "archive".into()),
        due_limit: DUE_LIMIT,
        start_margin: START_MARGIN,
    };
    lambda_runtime::run(service_fn(|event| dispatch(&deps, event))).await
}
