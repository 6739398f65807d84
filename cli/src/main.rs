//! `ghevents`: the operator and local binary. It wires configuration, logging and the
//! shared core; all behaviour lives in the `ghevents` library.

mod archive;
mod fanout;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use ghevents_core::app::App;
use ghevents_core::budget::Purpose;
use ghevents_core::clock::{Clock, SystemClock};
use ghevents_core::config::{Config, LogFormat, RawPayloadStore};
use ghevents_core::import::{import_file, ImportSummary, Progress};
use ghevents_core::ingest::{outcome_str, CycleSummary, IngestError};
use ghevents_core::raw::{ObjectReader, RawStore};
use ghevents_core::store;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

mod metrics;
mod progress;
mod reachability;
mod repair;

#[derive(Parser)]
#[command(
    name = "ghevents",
    version,
    about = "Ingest GitHub's public events into Postgres"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply pending database migrations (idempotent).
    Migrate {
        #[arg(long)]
        json: bool,
    },
    /// Poll GitHub's public events feed.
    Ingest {
        /// One poll cycle, then exit (0 on success, a 304 included).
        #[arg(long)]
        once: bool,
        /// With --once: the cycle's summary as one JSON document.
        #[arg(long, requires = "once")]
        json: bool,
    },
    /// The local main job: poll in a loop, honouring X-Poll-Interval and the rate budget, and
    /// enrich new push events beside it. Ctrl-C or SIGTERM finishes the page in hand and
    /// exits 0.
    Run {
        /// Poll only; leave enrichment to another worker.
        #[arg(long)]
        no_enrich: bool,
        /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9464); off unless set.
        #[arg(long, env = "METRICS_ADDR")]
        metrics_addr: Option<std::net::SocketAddr>,
    },
    /// Enrich pending push events with their actor and repository.
    Enrich {
        /// Drain what the budget allows, then exit.
        #[arg(long)]
        once: bool,
        /// With --once: the drain's summary as one JSON document.
        #[arg(long, requires = "once")]
        json: bool,
    },
    /// Import GH Archive files (.json.gz or NDJSON), streamed. Progress goes to stderr: a bar
    /// on a terminal, otherwise a line every PROGRESS_INTERVAL_SECS (10) seconds.
    Import {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Events per transaction.
        #[arg(long, default_value_t = 2000)]
        batch_size: usize,
        /// One JSON document with every file's summary.
        #[arg(long)]
        json: bool,
    },
    /// Put push events whose enrichment gave up back to pending: attempts 0, due now, back in
    /// the outbox; each row's previous status, attempts and error are kept in
    /// `enrichment_retries`. Without --failed, also rows left `in_progress` past their lease
    /// (a worker that died). Safe to repeat: retried rows no longer match.
    Retry {
        /// Only rows whose status is `failed`.
        #[arg(long)]
        failed: bool,
        /// Only push events created at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        #[arg(long)]
        json: bool,
    },
    /// Send ENRICH_QUEUE_URL every pending push id it never received (new or put back, e.g.
    /// by `retry`) and those whose message was sent longer than --lost-after ago without the
    /// row moving (lost). Safe to repeat: sent rows are marked and not sent again until they
    /// are judged lost. Exit 1 when the queue refused some, or an ingest cycle was running.
    Requeue {
        /// A pending row whose message went out this long ago is sent again (90s, 20m, 1h).
        #[arg(long, default_value = "20m", value_parser = ghevents_core::check::parse_duration)]
        lost_after: chrono::Duration,
        #[arg(long)]
        json: bool,
    },
    /// Rate budget, last poll, ETag age and rows per status.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Data-quality report; exit 1 when a check finds something wrong.
    Check {
        #[arg(long)]
        json: bool,
        /// Raw objects checked for existence (S3 mode), at most.
        #[arg(long, default_value_t = 100)]
        s3_sample: u32,
        /// A push event still pending this long after it was enqueued is stale (90s, 5m, 1h, 2d).
        #[arg(long, default_value = "1h", value_parser = ghevents_core::check::parse_duration)]
        stale_after: chrono::Duration,
        /// How long past its lease an in_progress row may stay.
        #[arg(long, default_value = "1m", value_parser = ghevents_core::check::parse_duration)]
        lease_grace: chrono::Duration,
    },
    /// Import one GH Archive hour now (whatever its backoff says); exit 1 unless it is done.
    Archive {
        /// The hour, UTC: 2015-01-01T00 (or 2015-01-01-0).
        #[arg(long)]
        hour: ghevents_core::archive::Hour,
        #[arg(long)]
        json: bool,
    },
    /// Import every GH Archive hour of a range that is not done yet; exit 1 naming each hour
    /// still not done and why.
    Backfill {
        /// The first hour, UTC: 2015-01-01T00.
        #[arg(long)]
        from: ghevents_core::archive::Hour,
        /// The last hour (included).
        #[arg(long)]
        to: ghevents_core::archive::Hour,
        /// Hours imported at the same time.
        #[arg(long, default_value_t = 2)]
        parallel: usize,
        /// Import nothing here: send one message per hour not done to this SQS queue (the
        /// archive function's hours queue, stack output HoursQueueUrl).
        #[arg(long)]
        queue: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// GH Archive hours: status, lines, stored, already present (polled) and the shares.
    Coverage {
        #[arg(long)]
        from: Option<ghevents_core::archive::Hour>,
        /// The last hour (included).
        #[arg(long)]
        to: Option<ghevents_core::archive::Hour>,
        #[arg(long)]
        json: bool,
    },
    /// Rebuild structured rows from the stored raw payloads with the current parser.
    Reparse {
        /// Only events of this type (e.g. PushEvent).
        #[arg(long = "type")]
        event_type: Option<String>,
        /// Only events created at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// Only events created before this time (RFC 3339).
        #[arg(long)]
        until: Option<chrono::DateTime<chrono::Utc>>,
        /// Events per transaction.
        #[arg(long, default_value_t = 1000)]
        batch_size: i64,
        /// Milliseconds to pause after each batch (throttles a run on a busy database).
        #[arg(long, default_value_t = 0)]
        pause_ms: u64,
        #[arg(long)]
        json: bool,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,refinery_core=warn,tokio_postgres=warn".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let _failpoints = ghevents_core::failpoints::setup();
    let cli = Cli::parse();
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ghevents: configuration: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(config.log_format);
    match run(cli, config).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ghevents: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, config: Config) -> Result<ExitCode> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    if let Command::Migrate { json } = cli.command {
        let pool = ghevents_core::app::pool(&config, &store::PoolOptions::new(2))?;
        let applied = store::migrate(&pool).await.context("applying migrations")?;
        if json {
            print_json(&serde_json::json!({ "migrations_applied": applied }))?;
        } else {
            println!("migrations applied: {applied}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let app = App::start(config, clock.clone(), 16)
        .await
        .context("starting")?;
    match cli.command {
        Command::Migrate { .. } => unreachable!("handled above"),
        Command::Ingest { once: true, json } => {
            let (_tx, stop) = tokio::sync::watch::channel(false);
            let ingestor = app.ingestor(raw_store(&app.config).await, None, stop);
            match ingestor.run_cycle().await {
                Ok(s) if json => {
                    print_json(&serde_json::to_value(&s)?)?;
                    Ok(ExitCode::SUCCESS)
                }
                Ok(s) => {
                    println!("{}", cycle_line(&s));
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    if json {
                        print_json(&serde_json::json!({
                            "outcome": "failed",
                            "error_code": e.code(),
                            "error": e.to_string(),
                            "retryable": e.is_retryable(),
                        }))?;
                    }
                    eprintln!("ghevents: ingest failed ({}): {e}", e.code());
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Ingest { once: false, .. } => run_loop(&app, false, None).await,
        Command::Run {
            no_enrich,
            metrics_addr,
        } => run_loop(&app, !no_enrich, metrics_addr).await,
        Command::Enrich { once: true, json } => {
            let s = app.enricher().drain().await?;
            if json {
                print_json(&serde_json::to_value(&s)?)?;
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "enrich: requests={} completed={} gone={} failed_attempts={} failed={} deferred={} deferred_until={}",
                s.requests,
                s.completed,
                s.gone,
                s.failed_attempts,
                s.failed_final,
                s.deferred,
                s.deferred_until.map_or("-".into(), |t| t.to_rfc3339())
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Enrich { once: false, .. } => {
            let stop = stop_on_signal()?;
            app.enricher().run_loop(stop).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Import {
            files,
            batch_size,
            json,
        } => import(&app, &files, batch_size.max(1), json).await,
        Command::Retry {
            failed,
            since,
            json,
        } => repair::retry(&app, failed, since, json).await,
        Command::Requeue { lost_after, json } => repair::requeue(&app, lost_after, json).await,
        Command::Status { json } => status(&app, json).await,
        Command::Archive { hour, json } => archive::archive_hour(&app, hour, json).await,
        Command::Backfill {
            from,
            to,
            queue: Some(queue),
            json,
            ..
        } => fanout::enqueue(&app, from, to, &queue, json).await,
        Command::Backfill {
            from,
            to,
            parallel,
            json,
            queue: None,
        } => archive::backfill(&app, from, to, parallel, json).await,
        Command::Coverage { from, to, json } => archive::coverage(&app, from, to, json).await,
        Command::Check {
            json,
            s3_sample,
            stale_after,
            lease_grace,
        } => {
            let opts = ghevents_core::check::CheckOptions {
                s3_sample,
                stale_after,
                lease_grace,
            };
            check(&app, &opts, json).await
        }
        Command::Reparse {
            event_type,
            since,
            until,
            batch_size,
            pause_ms,
            json,
        } => {
            let opts = ghevents_core::reparse::ReparseOptions {
                event_type,
                since,
                until,
                batch_size: batch_size.max(1),
                pause: Duration::from_millis(pause_ms),
            };
            reparse(&app, &opts, json).await
        }
    }
}

fn cycle_line(s: &CycleSummary) -> String {
    format!(
        "{}: requests={} not_modified={} pages={} fetched={} new={} duplicates={} new_push_events={} parse_failures={} rejected={} rate_remaining={} reset={} next_poll_at={}",
        outcome_str(s.outcome),
        s.requests,
        s.not_modified,
        s.pages,
        s.events_fetched,
        s.new_events,
        s.duplicates,
        s.new_push_events,
        s.parse_failures,
        s.rejected,
        s.rate_remaining.map_or("?".into(), |r| r.to_string()),
        s.rate_reset.map_or("?".into(), |r| r.to_rfc3339()),
        s.next_poll_at.map_or("?".into(), |r| r.to_rfc3339()),
    )
}

/// A stop signal set by the first Ctrl-C or SIGTERM (what `kill`, systemd and container
/// runtimes send); a second one exits at once. Until then the page in hand is finished and
/// what was claimed is released, so nothing waits for a lease to expire.
fn stop_on_signal() -> Result<tokio::sync::watch::Receiver<bool>> {
    let (tx, stop) = tokio::sync::watch::channel(false);
    let mut signals = Signals::new()?;
    tokio::spawn(async move {
        let first = signals.next().await;
        eprintln!("ghevents: {first}: stopping after the page in hand (again to abort)");
        let _ = tx.send(true);
        let second = signals.next().await;
        eprintln!("ghevents: {second}: aborting");
        std::process::exit(130);
    });
    Ok(stop)
}

/// Ctrl-C (SIGINT) and, on Unix, SIGTERM.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Self> {
        Ok(Self {
            #[cfg(unix)]
            term: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .context("installing the SIGTERM handler")?,
        })
    }

    /// Waits for the next one and names it.
    async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => "Ctrl-C",
                _ = self.term.recv() => "SIGTERM",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}

/// Where ingest keeps raw payloads: `RAW_PAYLOAD_STORE=s3` writes one object per page to
/// `RAW_PAYLOAD_BUCKET` (AWS, or any S3-compatible endpoint `AWS_ENDPOINT_URL` names); else
/// `None`, inline in Postgres. Push ids are not sent to a queue here: the local enrichment
/// worker picks pending rows from Postgres.
async fn raw_store(config: &Config) -> Option<Arc<dyn RawStore>> {
    match config.raw_payload_store {
        RawPayloadStore::Postgres => None,
        RawPayloadStore::S3 => {
            let sdk = ghevents_core::aws::sdk_config().await;
            ghevents_core::aws::raw_store(config, &sdk)
        }
    }
}

async fn run_loop(
    app: &App,
    enrich: bool,
    metrics_addr: Option<std::net::SocketAddr>,
) -> Result<ExitCode> {
    let stop = stop_on_signal()?;
    let observer = match metrics_addr {
        Some(addr) => {
            metrics::install(addr)?;
            Some(metrics::spawn_observer(
                app.pool.clone(),
                app.clock.clone(),
                stop.clone(),
            ))
        }
        None => None,
    };
    let export = metrics_addr.is_some();
    // Enrichment runs beside ingest, never in its way: its failures are logged, not fatal.
    let enricher = enrich.then(|| {
        let enricher = app.enricher();
        let stop = stop.clone();
        tokio::spawn(async move {
            enricher
                .run_loop_with(stop, |d| {
                    if export {
                        metrics::record(&ghevents_core::metrics::enrich_figures(d));
                    }
                })
                .await
        })
    });
    let ingestor = app.ingestor(raw_store(&app.config).await, None, stop);
    let url = app.config.github_api_url.clone();
    let mut reach = reachability::Reachability::default();
    let clock = app.clock.clone();
    ingestor
        .run_loop_with(|r: &Result<CycleSummary, IngestError>, next| {
            let unreachable = matches!(r, Err(e) if e.is_unreachable());
            match (reach.observe(unreachable, clock.now()), r) {
                (reachability::Change::WentDown, Err(e)) => tracing::warn!(
                    url = %url,
                    error = %reachability::error_chain(e),
                    retry_at = %next.to_rfc3339(),
                    error_code = "github_unreachable",
                    "GitHub is unreachable; polling tries again at retry_at (said once; a line follows when GitHub answers again)"
                ),
                (reachability::Change::CameBack { since }, _) => tracing::info!(
                    url = %url,
                    unreachable_since = %since.to_rfc3339(),
                    "GitHub answers again"
                ),
                _ => {}
            }
            match r {
                Ok(s) => println!("{}", cycle_line(s)),
                Err(_) if unreachable => {}
                Err(e) => eprintln!("ghevents: cycle failed ({}): {e}", e.code()),
            }
            if export {
                let failed = ghevents_core::ingest::CycleSummary::new(ghevents_core::ingest::Outcome::Failed);
                metrics::record(&ghevents_core::metrics::cycle_figures(
                    r.as_ref().unwrap_or(&failed),
                ));
            }
        })
        .await?;
    if let Some(task) = observer {
        task.await.context("metrics observer")?;
    }
    if let Some(task) = enricher {
        task.await?.context("enrichment loop")?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn import(app: &App, files: &[PathBuf], batch_size: usize, json: bool) -> Result<ExitCode> {
    let mut any_rejected = false;
    let mut summaries = Vec::new();
    for path in files {
        let total = std::fs::metadata(path)
            .with_context(|| format!("{}", path.display()))?
            .len();
        let progress = Arc::new(Progress::default());
        let (bytes, lines) = (progress.clone(), progress.clone());
        let meter = progress::Meter::start(progress::Spec {
            label: format!("import {}", path.display()),
            total: Some(total),
            unit: progress::Unit::Bytes,
            position: Arc::new(move || bytes.bytes_read.load(Ordering::Relaxed)),
            items: (
                "events",
                Arc::new(move || lines.lines.load(Ordering::Relaxed)),
            ),
        });
        let result = import_file(&app.pool, path, batch_size, progress, app.clock.now()).await;
        meter.finish();
        let summary = result.with_context(|| format!("importing {}", path.display()))?;
        if !json {
            print_import(&summary);
        }
        any_rejected |= summary.rejected_total() > 0;
        summaries.push(summary);
    }
    if json {
        print_json(&serde_json::json!({
            "files": summaries,
            "rejected": summaries.iter().map(ImportSummary::rejected_total).sum::<u64>(),
        }))?;
    }
    Ok(if any_rejected {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn print_import(s: &ImportSummary) {
    println!(
        "{}: lines={} stored={} duplicates={} push_events={} parse_failed={} rejected={} sanitized={} refused={}",
        s.file,
        s.lines,
        s.stored,
        s.duplicates,
        s.push_events,
        s.parse_failed,
        s.rejected_total(),
        s.sanitized,
        s.refused
    );
    for (code, r) in &s.rejected {
        let lines: Vec<String> = r.first_lines.iter().map(u64::to_string).collect();
        println!(
            "  rejected {code}: {} ({}), first lines: {}",
            r.count,
            r.message,
            lines.join(", ")
        );
    }
}

async fn status(app: &App, json: bool) -> Result<ExitCode> {
    let now = app.clock.now();
    let budget = app.budget.snapshot(now).await?;
    let reserve = app.budget.reserve_per_60();
    let polls = store::status::poll_states(&app.pool).await?;
    let counts = store::status::counts(&app.pool).await?;
    let observed = store::cycles::observe(&app.pool, now).await?;
    if json {
        let v = serde_json::json!({
            "now": now,
            "identity": app.budget.identity(),
            "budget": budget,
            "budget_split": {
                "ingest_available": budget.available(Purpose::Ingest, reserve, now),
                "enrich_available": budget.available(Purpose::Enrich, reserve, now),
                "ingest_reserve": ghevents_core::budget::enrich_floor(reserve, budget.limit),
            },
            "polls": polls,
            "counts": counts,
            "archive": archive::status_section(app).await?.0,
            "observed": observed,
        });
        print_json(&v)?;
        return Ok(ExitCode::SUCCESS);
    }
    let t =
        |d: Option<chrono::DateTime<chrono::Utc>>| d.map_or("never".to_owned(), |d| d.to_rfc3339());
    println!(
        "rate budget ({}): {}/{} remaining, used {}, resets {}",
        app.budget.identity(),
        budget.remaining,
        budget.limit,
        budget.used,
        t(budget.reset_at)
    );
    println!(
        "  split: ingest may use {}, enrichment {} (ingest reserve {}); in flight {}; secondary-limit wait until {}",
        budget.available(Purpose::Ingest, reserve, now),
        budget.available(Purpose::Enrich, reserve, now),
        ghevents_core::budget::enrich_floor(reserve, budget.limit),
        budget.in_flight,
        t(budget.retry_after_until)
    );
    if polls.is_empty() {
        println!("feed: never polled");
    }
    for p in &polls {
        let etag_age = p
            .etag_updated_at
            .map(|u| format!("{}s", (now - u).num_seconds()));
        println!(
            "feed {}: last poll {}, result {}, next poll {}, interval {}s, ETag {} (age {})",
            p.feed,
            t(p.last_polled_at),
            p.last_result.as_deref().unwrap_or("-"),
            t(p.next_poll_at),
            p.poll_interval_secs.map_or("?".into(), |s| s.to_string()),
            p.etag.as_deref().unwrap_or("none"),
            etag_age.as_deref().unwrap_or("-"),
        );
        if let Some(e) = &p.last_error {
            println!("  last error: {e}");
        }
    }
    println!(
        "events: {} {:?}",
        counts.events_total, counts.events_by_parse_status
    );
    println!(
        "push events: {} {:?}; not enqueued {}; oldest pending {}",
        counts.push_events_total,
        counts.push_events_by_enrichment_status,
        counts.push_events_not_enqueued,
        t(counts.oldest_pending_push_at)
    );
    let secs = |s: Option<i64>| s.map_or("-".to_owned(), |s| format!("{s}s"));
    println!(
        "freshness: newest event {}, feed lag {}; gaps suspected in the last 24 h: {}",
        t(observed.newest_event_at),
        secs(observed.feed_lag_secs),
        observed.gaps_24h
    );
    println!(
        "enrichment backlog: {} push events, oldest pending {} (age {})",
        observed.enrich_backlog,
        t(observed.oldest_pending_push_at),
        secs(observed.enrich_backlog_age_secs)
    );
    for line in archive::status_section(app).await?.1 {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The raw object store (S3) when `RAW_PAYLOAD_BUCKET` names one, for reading payloads back.
async fn object_reader(config: &Config) -> Option<ghevents_core::aws::s3::S3Objects> {
    let bucket = config.raw_payload_bucket.clone()?;
    let sdk = ghevents_core::aws::sdk_config().await;
    Some(ghevents_core::aws::s3::S3Objects {
        client: ghevents_core::aws::s3_client(&sdk),
        bucket,
    })
}

async fn check(
    app: &App,
    opts: &ghevents_core::check::CheckOptions,
    json: bool,
) -> Result<ExitCode> {
    let objects = object_reader(&app.config).await;
    let reader = objects.as_ref().map(|o| o as &dyn ObjectReader);
    let report = ghevents_core::check::run_checks(&app.pool, reader, opts, app.clock.now()).await?;
    if json {
        let v = serde_json::json!({
            "healthy": report.is_healthy(),
            "problems": report.problems(),
            "checked_at": report.checked_at,
            "checks": report.checks,
        });
        print_json(&v)?;
    } else {
        for c in &report.checks {
            let state = match (c.ok(), c.skipped) {
                (false, _) => "FAIL",
                (true, true) => "skip",
                (true, false) => "ok",
            };
            print!("{state:4} {}: {}", c.name, c.count);
            if !c.examples.is_empty() {
                print!(" (e.g. {})", c.examples.join(", "));
            }
            println!(" — {}", c.description);
            for (reason, r) in &c.by_reason {
                println!(
                    "       {reason}: {} (e.g. {})",
                    r.count,
                    r.examples.join(", ")
                );
            }
            if let Some(n) = &c.note {
                println!("       note: {n}");
            }
        }
        if report.is_healthy() {
            println!("healthy");
        } else {
            println!("unhealthy: {} problems", report.problems());
        }
    }
    Ok(if report.is_healthy() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn reparse(
    app: &App,
    opts: &ghevents_core::reparse::ReparseOptions,
    json: bool,
) -> Result<ExitCode> {
    use ghevents_core::reparse::{count_events, ReparseProgress};
    let progress = Arc::new(ReparseProgress::default());
    let total = count_events(&app.pool, opts).await?;
    let (pos, items) = (progress.clone(), progress.clone());
    let meter = progress::Meter::start(progress::Spec {
        label: "reparse".into(),
        total: Some(total),
        unit: progress::Unit::Items,
        position: Arc::new(move || pos.events.load(Ordering::Relaxed)),
        items: (
            "events",
            Arc::new(move || items.events.load(Ordering::Relaxed)),
        ),
    });
    // Without a bucket, events stored out of line are counted as unreadable and left as they are.
    let objects = object_reader(&app.config).await;
    let reader = objects.as_ref().map(|o| o as &dyn ObjectReader);
    let result =
        ghevents_core::reparse::reparse(&app.pool, reader, opts, &progress, app.clock.as_ref())
            .await;
    meter.finish();
    let s = result.context("reparsing")?;
    if json {
        print_json(&serde_json::to_value(&s)?)?;
    } else {
        println!(
            "reparse {}: events={} batches={} push_rows={} push_rows_new={} status_changed={} parse_failed={} unreadable={} resumed_after={} seconds={:.2} events_per_sec={:.0}",
            s.params,
            s.events,
            s.batches,
            s.push_rows,
            s.push_rows_new,
            s.status_changed,
            s.parse_failed,
            s.unreadable_total(),
            s.resumed_after.map_or("-".into(), |id| id.to_string()),
            s.seconds,
            s.events_per_sec,
        );
        for (reason, u) in &s.unreadable {
            let ids: Vec<String> = u.examples.iter().map(i64::to_string).collect();
            println!(
                "  unreadable, {reason}: {} (e.g. events {})",
                u.count,
                ids.join(", ")
            );
        }
    }
    Ok(if s.unreadable_total() > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// A command's result as one JSON document on stdout.
fn print_json(v: &serde_json::Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}
