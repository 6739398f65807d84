//! `github-sim`: a local stand-in for api.github.com, driven by GH Archive files.
//!
//! It serves the public timeline (`GET /events`), synthesized `GET /users/{login}`
//! and `GET /repos/{owner}/{repo}`, and `GET /rate_limit`, with GitHub's headers,
//! rate limits (primary and secondary), ETags and faults on demand, and records
//! ground truth about what it released and what each client did.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use github_sim::{Clock, Fault, FaultRule, Sim, SimConfig};
//! let sim = Sim::start(SimConfig {
//!     files: vec!["shared/data/gharchive/2015-01-01-0.json.gz".into()],
//!     initial: 100,
//!     clock: Clock::Manual,
//!     ..SimConfig::default()
//! })
//! .await?;
//! let url = sim.url(); // http://127.0.0.1:PORT
//! sim.release(30);
//! sim.inject(FaultRule::new("/events", 1, Fault::Status { code: 502 }));
//! let stats = sim.stats();
//! sim.shutdown().await;
//! # Ok(()) }
//! ```

mod config;
mod faults;
mod rate;
mod server;
mod stats;
mod synth;
mod timeline;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{Clock, SimConfig};
pub use faults::{Fault, FaultRule};
pub use rate::{ClientKey, RateSnapshot};
pub use stats::{ClientStats, PathKind, Stats, STATUS_CLOSED};
pub use timeline::{load_files, Event, LoadReport};

use server::{lock, Shared};

/// A running simulator. Dropping it stops the server too.
pub struct Sim {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Sim {
    /// Load the files, bind `config.bind` and start serving.
    pub async fn start(config: SimConfig) -> anyhow::Result<Sim> {
        let files = config.files.clone();
        let (mut events, report) =
            tokio::task::spawn_blocking(move || timeline::load_files(&files)).await??;
        timeline::shuffle_blocks(&mut events, config.shuffle_block, config.seed);
        let mut dir = synth::Directory::from_events(&events);
        for u in &config.gone_users {
            dir.mark_user_gone(u);
        }
        for r in &config.gone_repos {
            dir.mark_repo_gone(r);
        }
        let listener = TcpListener::bind(config.bind).await?;
        let addr = listener.local_addr()?;
        let timeline =
            timeline::Timeline::new(events, config.clock, config.initial, config.rate_per_sec);
        tracing::info!(
            %addr,
            loaded = report.loaded,
            skipped = report.skipped,
            users = dir.users_known(),
            repos = dir.repos_known(),
            "github-sim listening"
        );
        let shared = Arc::new(Shared::new(config, report, timeline, dir, addr));
        let (stop, stop_rx) = watch::channel(false);
        let router = server::router(Arc::clone(&shared));
        let task = tokio::spawn(server::serve(listener, router, stop_rx));
        Ok(Sim {
            shared,
            addr,
            stop,
            task: Some(task),
        })
    }

    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Events loaded from the files.
    pub fn loaded(&self) -> usize {
        self.shared.load.loaded
    }

    /// Events released so far (brought up to date with the clock).
    pub fn released(&self) -> usize {
        lock(&self.shared.timeline).refresh()
    }

    /// Release `n` more events now; returns the total released.
    pub fn release(&self, n: usize) -> usize {
        self.shared.release(n)
    }

    /// Ids of all loaded events in release order (released or not).
    pub fn release_order(&self) -> Vec<String> {
        lock(&self.shared.timeline)
            .events()
            .iter()
            .map(|e| e.id.to_string())
            .collect()
    }

    /// Arm a fault.
    pub fn inject(&self, rule: FaultRule) {
        lock(&self.shared.faults).inject(rule);
    }

    /// Disarm all faults and pending secondary triggers.
    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    /// Faults still armed.
    pub fn pending_faults(&self) -> Vec<FaultRule> {
        lock(&self.shared.faults).pending()
    }

    /// The next `k` API requests (any client) trip a secondary rate limit.
    pub fn trigger_secondary(&self, k: u32) {
        lock(&self.shared.faults).trigger_secondary(k);
    }

    /// Answer 404 for this login from now on.
    pub fn mark_user_gone(&self, login: &str) {
        self.shared.mark_gone(&[login.to_string()], &[]);
    }

    /// Answer 404 for this `owner/name` from now on.
    pub fn mark_repo_gone(&self, full_name: &str) {
        self.shared.mark_gone(&[], &[full_name.to_string()]);
    }

    /// Everything recorded so far.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Forget request stats (released ids stay: they are the timeline).
    pub fn reset_stats(&self) {
        lock(&self.shared.stats).reset();
    }

    /// Start every client's rate-limit window afresh and lift secondary blocks.
    pub fn reset_limits(&self) {
        lock(&self.shared.rate).reset();
    }

    /// Stop serving and wait for the server task; open connections are dropped.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
