//! `github-sim` binary: serve GH Archive files as api.github.com would.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use github_sim::{Clock, FaultRule, Sim, SimConfig};

/// A local stand-in for api.github.com driven by GH Archive files.
#[derive(Debug, Parser)]
#[command(name = "github-sim", version)]
struct Args {
    /// GH Archive file (NDJSON, gzip or plain); repeat to load several in order.
    #[arg(long = "file", required = true)]
    files: Vec<PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port to listen on (0: any free port).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Events released at start.
    #[arg(long, default_value_t = 300)]
    initial: usize,
    /// Events released per second afterwards (fractional allowed).
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
    /// Release only through POST /_sim/release, never by time.
    #[arg(long)]
    manual: bool,
    /// Shuffle the release order within blocks of this many events (0/1: off).
    #[arg(long, default_value_t = 0)]
    shuffle_block: usize,
    /// Seed of the shuffle.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Newest events visible on /events.
    #[arg(long, default_value_t = 300)]
    events_cap: usize,
    /// Length of a rate-limit window in seconds (fractional allowed).
    #[arg(long, default_value_t = 3600.0)]
    window_secs: f64,
    /// Requests per window without a token.
    #[arg(long, default_value_t = 60)]
    limit_anon: u32,
    /// Requests per window with a token.
    #[arg(long, default_value_t = 5000)]
    limit_token: u32,
    /// Status when the budget is spent (403 or 429).
    #[arg(long, default_value_t = 403)]
    exhausted_status: u16,
    /// Whether a 304 answer costs one request of the budget.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    conditional_costs: bool,
    /// X-Poll-Interval in seconds.
    #[arg(long, default_value_t = 60)]
    poll_interval: u64,
    /// Status of secondary-limit answers (429 or 403).
    #[arg(long, default_value_t = 429)]
    secondary_status: u16,
    /// Retry-After of secondary-limit answers, in seconds.
    #[arg(long, default_value_t = 60)]
    secondary_retry_after: u64,
    /// The Nth request to /events (all clients) trips a secondary limit; repeatable.
    #[arg(long = "secondary-at")]
    secondary_at: Vec<u64>,
    /// Fault armed at start, PREFIX:COUNT:FAULT with FAULT one of status=N, bare=N,
    /// retry_after=SECS[@N], poll_interval=SECS, lone_surrogate, truncated, slow=MS, close
    /// (e.g. /events:2:status=502); repeatable.
    #[arg(long = "fault")]
    faults: Vec<FaultRule>,
    /// Login answered with 404; repeatable.
    #[arg(long = "gone-user")]
    gone_users: Vec<String>,
    /// owner/name answered with 404; repeatable.
    #[arg(long = "gone-repo")]
    gone_repos: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "github_sim=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let a = Args::parse();
    if !(a.window_secs.is_finite() && a.window_secs > 0.0) {
        anyhow::bail!("--window-secs must be a positive number");
    }
    let config = SimConfig {
        files: a.files,
        bind: SocketAddr::new(a.host, a.port),
        initial: a.initial,
        rate_per_sec: a.rate,
        clock: if a.manual { Clock::Manual } else { Clock::Real },
        shuffle_block: a.shuffle_block,
        seed: a.seed,
        events_cap: a.events_cap,
        poll_interval_secs: a.poll_interval,
        window: Duration::from_secs_f64(a.window_secs),
        limit_anonymous: a.limit_anon,
        limit_token: a.limit_token,
        exhausted_status: a.exhausted_status,
        conditional_costs: a.conditional_costs,
        secondary_status: a.secondary_status,
        secondary_retry_after: Duration::from_secs(a.secondary_retry_after),
        secondary_on_events_requests: a.secondary_at,
        faults: a.faults,
        gone_users: a.gone_users,
        gone_repos: a.gone_repos,
    };
    let sim = Sim::start(config).await?;
    println!("{}", sim.url());
    eprintln!(
        "github-sim: {} events loaded, {} released; control endpoints under {}/_sim/",
        sim.loaded(),
        sim.released(),
        sim.url()
    );
    tokio::signal::ctrl_c().await?;
    sim.shutdown().await;
    Ok(())
}
