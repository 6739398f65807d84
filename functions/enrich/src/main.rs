//! The enrich Lambda's entry point: wiring only (see the crate's `lib.rs` for the handler).

use anyhow::Context;
use ghevents::app::App;
use ghevents::aws::{init_tracing, LambdaEnv};
use ghevents::clock::SystemClock;
use ghevents_enrich::{handler, Deps};
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
    let app = App::start(env.config.clone(), Arc::new(SystemClock), 4)
        .await
        .context("connecting to Postgres")?;
    let deps = Deps {
        enricher: app.enricher(),
        clock: app.clock.clone(),
    };
    lambda_runtime::run(service_fn(|event| handler(&deps, event))).await
}
