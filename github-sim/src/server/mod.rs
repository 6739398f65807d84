//! HTTP side: an accept loop that lets a handler drop its connection without answering,
//! and the router: the `/_sim` control endpoints (`control`) and the GitHub-like API
//! (`github`).

mod control;
mod github;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use axum::routing::{any, get, post};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tower_service::Service;

use crate::config::SimConfig;
use crate::faults::FaultBook;
use crate::rate::RateLimiter;
use crate::stats::{Stats, StatsBook};
use crate::synth::Directory;
use crate::timeline::{LoadReport, Timeline};

/// Everything the handlers share.
pub(crate) struct Shared {
    pub cfg: SimConfig,
    pub load: LoadReport,
    pub timeline: Mutex<Timeline>,
    pub rate: Mutex<RateLimiter>,
    pub faults: Mutex<FaultBook>,
    pub stats: Mutex<StatsBook>,
    pub dir: RwLock<Directory>,
    /// Events served with a lone surrogate from now on (`Fault::LoneSurrogate`).
    pub poisoned: Mutex<HashSet<Arc<str>>>,
    pub bound: SocketAddr,
    request_seq: AtomicU64,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub fn new(
        cfg: SimConfig,
        load: LoadReport,
        timeline: Timeline,
        dir: Directory,
        bound: SocketAddr,
    ) -> Self {
        let rate = RateLimiter::new(cfg.window, cfg.limit_anonymous, cfg.limit_token);
        let faults = FaultBook::new(cfg.faults.clone(), &cfg.secondary_on_events_requests);
        Shared {
            cfg,
            load,
            timeline: Mutex::new(timeline),
            rate: Mutex::new(rate),
            faults: Mutex::new(faults),
            stats: Mutex::new(StatsBook::default()),
            dir: RwLock::new(dir),
            poisoned: Mutex::new(HashSet::new()),
            bound,
            request_seq: AtomicU64::new(1),
        }
    }

    pub fn stats(&self) -> Stats {
        let mut out = Stats {
            loaded: self.load.loaded,
            skipped_lines: self.load.skipped,
            ..Stats::default()
        };
        {
            let mut t = lock(&self.timeline);
            out.released = t.refresh();
            out.released_ids = t.released_ids();
        }
        lock(&self.stats).fill(&mut out);
        let mut poisoned: Vec<String> =
            lock(&self.poisoned).iter().map(|s| s.to_string()).collect();
        poisoned.sort();
        out.poisoned_ids = poisoned;
        out
    }

    pub fn release(&self, n: usize) -> usize {
        lock(&self.timeline).release(n)
    }

    pub fn mark_gone(&self, users: &[String], repos: &[String]) {
        let mut d = self.dir.write().unwrap_or_else(PoisonError::into_inner);
        for u in users {
            d.mark_user_gone(u);
        }
        for r in repos {
            d.mark_repo_gone(r);
        }
    }
}

// ---------------------------------------------------------------------------
// accept loop

/// Per-connection data handed to handlers through request extensions.
#[derive(Clone)]
struct ConnInfo {
    remote: SocketAddr,
    kill: Arc<Notify>,
}

pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, remote) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                conns.spawn(connection(stream, remote, router.clone()));
            }
        }
    }
    conns.abort_all();
    while conns.join_next().await.is_some() {}
    tracing::info!("github-sim stopped");
}

async fn connection(stream: tokio::net::TcpStream, remote: SocketAddr, router: Router) {
    let kill = Arc::new(Notify::new());
    let info = ConnInfo {
        remote,
        kill: Arc::clone(&kill),
    };
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(info.clone());
        let mut router = router.clone();
        async move { router.call(req).await }
    });
    // No header-read timeout: idle keep-alive connections stay open between
    // polls, so client errors come only from the faults a test asked for.
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .serve_connection(TokioIo::new(stream), svc);
    tokio::select! {
        res = conn => {
            if let Err(e) = res {
                tracing::debug!(%remote, error = %e, "connection ended with error");
            }
        }
        _ = kill.notified() => {
            // Dropping the connection future closes the socket unanswered.
            tracing::debug!(%remote, "connection dropped by fault");
        }
    }
}

// ---------------------------------------------------------------------------
// routes

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let mut r = Router::new()
        .route("/_sim/health", get(control::ctl_health))
        .route(
            "/_sim/stats",
            get(control::ctl_stats).delete(control::ctl_reset_stats),
        )
        .route("/_sim/stats/reset", post(control::ctl_reset_stats))
        .route("/_sim/release", post(control::ctl_release))
        .route(
            "/_sim/faults",
            get(control::ctl_faults_list)
                .post(control::ctl_faults_add)
                .delete(control::ctl_faults_clear),
        )
        .route("/_sim/secondary", post(control::ctl_secondary))
        .route("/_sim/gone", post(control::ctl_gone))
        .route("/_sim/limits/reset", post(control::ctl_reset_limits));
    // The API answers every method (a method GitHub does not serve is a 404 that still
    // counts against the limits), with or without a trailing slash.
    for (path, handler) in [
        ("/events", any(github::events)),
        ("/rate_limit", any(github::rate_limit)),
        ("/users/{login}", any(github::user)),
        ("/repos/{owner}/{name}", any(github::repo)),
    ] {
        r = r
            .route(path, handler.clone())
            .route(&format!("{path}/"), handler);
    }
    r.fallback(github::other).with_state(shared)
}
