//! The ingest Lambda's entry point: wiring only (see the crate's `lib.rs` for the handler).

use anyhow::Context;
use ghevents::app::App;
use ghevents::aws::{init_tracing, LambdaEnv};
use ghevents::clock::SystemClock;
use ghevents_ingest::{handler, Deps, Outbox, Stdout, OUTBOX_FLUSH_LIMIT};
use lambda_runtime::{service_fn, Error};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    let env = LambdaEnv::load()
        .await
        .context("reading configuration and secrets")?;
    // One small pool per container, kept across invocations; broken connections are replaced.
    // Pending migrations are applied here, once, under an advisory lock.
    let app = App::start(env.config.clone(), Arc::new(SystemClock), 3)
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
            requeue_after: ghevents::outbox::REQUEUE_AFTER,
        }),
        clock: app.clock.clone(),
        metrics: Arc::new(Stdout),
        function_name: std::env::var("AWS_LAMBDA_FUNCTION_NAME")
            .unwrap_or_else(|_| "ingest".into()),
    };
    lambda_runtime::run(service_fn(|event| handler(&deps, event))).await
}
