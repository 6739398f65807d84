//! The Prometheus endpoint of `ghevents run` (`--metrics-addr` / `METRICS_ADDR`, off unless
//! set): the figures the Lambda functions write as EMF (`ghevents_core::metrics`), recorded in the
//! `metrics` facade and served by `metrics-exporter-prometheus` at `http://ADDR/metrics`.
//! Counters add up every cycle and drain; gauges (rate remaining, feed lag, enrichment
//! backlog and its age, gaps of the last 24 h) hold the latest value.

use anyhow::{Context, Result};
use ghevents_core::clock::{sleep_or_stop, Clock};
use ghevents_core::metrics::{Figure, Kind};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How often the stored state (feed lag, backlog, gaps) is measured again.
pub const OBSERVE_EVERY: Duration = Duration::from_secs(5);

/// Installs the global recorder and starts serving `/metrics` on `addr` (on this runtime).
/// Fails naming the address when it cannot be bound.
pub fn install(addr: SocketAddr) -> Result<()> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .with_context(|| format!("serving Prometheus metrics on {addr} (METRICS_ADDR)"))?;
    tracing::info!(%addr, "Prometheus metrics at http://{addr}/metrics");
    Ok(())
}

/// Records figures: counters are increased by their value, gauges set to it.
pub fn record(figures: &[Figure]) {
    for f in figures {
        let name = f.prometheus_name();
        match f.kind {
            Kind::Counter => metrics::counter!(name).increment(f.value.max(0.0) as u64),
            Kind::Gauge => metrics::gauge!(name).set(f.value),
        }
    }
}

/// Measures the stored state every [`OBSERVE_EVERY`] until `stop`, and records it as gauges.
pub fn spawn_observer(
    pool: deadpool_postgres::Pool,
    clock: Arc<dyn Clock>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match ghevents_core::store::cycles::observe(&pool, clock.now()).await {
                Ok(o) => record(&o.figures()),
                Err(e) => {
                    tracing::warn!(error = %e, error_code = "observe_failed", "stored state not measured for /metrics")
                }
            }
            if sleep_or_stop(clock.as_ref(), OBSERVE_EVERY, &mut stop).await {
                return;
            }
        }
    })
}
