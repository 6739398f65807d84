//! `ghevents archive`, `backfill` and `coverage`, and the archive lines of `status`.

use anyhow::{Context, Result};
use futures::StreamExt;
use ghevents_core::app::App;
use ghevents_core::archive::{self, ArchiveOptions, Archiver, Hour, HourObjects, HourReport};
use ghevents_core::config::RawPayloadStore;
use ghevents_core::deadline::Deadline;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// The archiver for this configuration: hour files copied to the raw bucket in S3 mode.
pub async fn archiver(app: &App) -> Result<Archiver> {
    let objects: Option<Arc<dyn HourObjects>> =
        if app.config.raw_payload_store == RawPayloadStore::S3 {
            let sdk = ghevents_core::aws::sdk_config().await;
            ghevents_core::aws::hour_objects(&app.config, &sdk)
        } else {
            None
        };
    Ok(Archiver::new(
        app.pool.clone(),
        app.clock.clone(),
        objects,
        ArchiveOptions::from_config(&app.config),
    )?)
}

fn pct(x: Option<f64>) -> String {
    x.map_or("-".into(), |x| format!("{:.1}%", x * 100.0))
}

/// One line per hour, then its reason and error if any.
pub fn hour_lines(r: &HourReport) -> Vec<String> {
    let mut out = vec![format!(
        "{} {}: lines={} stored={} already_present={} rejected={} polled_share={} stored_share={} push_events={} push_not_enriched={} bytes={} attempts={}{}",
        r.hour,
        r.status,
        r.lines,
        r.stored,
        r.already_present,
        r.rejected,
        pct(r.polled_share),
        pct(r.stored_share),
        r.push_events,
        r.push_not_enriched,
        r.bytes,
        r.attempts,
        if r.new_rows > 0 { format!(" new_rows={}", r.new_rows) } else { String::new() },
    )];
    if let Some(reason) = &r.reason {
        out.push(format!("  reason: {reason}"));
    }
    if let (Some(e), false) = (&r.last_error, r.status.is_final()) {
        if r.reason.as_deref().is_none_or(|x| !x.contains(e.as_str())) {
            out.push(format!("  last error: {e}"));
        }
    }
    out
}

/// `ghevents archive --hour H`: one hour, now, whatever its backoff says.
pub async fn archive_hour(app: &App, hour: Hour, json: bool) -> Result<ExitCode> {
    let archiver = archiver(app).await?;
    let (report, error) = run_one(&archiver, hour).await?;
    if json {
        let v = serde_json::json!({ "hour": report, "error": error });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for l in hour_lines(&report) {
            println!("{l}");
        }
    }
    Ok(exit_for(std::slice::from_ref(&report)))
}

/// Runs the hour; an attempt that failed is reported by its row (which says why).
async fn run_one(archiver: &Archiver, hour: Hour) -> Result<(HourReport, Option<String>)> {
    match archiver.run_hour(hour, true, Deadline::NONE).await {
        Ok(r) => Ok((r, None)),
        Err(e) => {
            let r = archive::store::report(&archiver.pool, hour)
                .await?
                .with_context(|| format!("{hour}: {e}"))?;
            Ok((r, Some(e.to_string())))
        }
    }
}

/// Success only when every hour is done (or known missing).
fn exit_for(reports: &[HourReport]) -> ExitCode {
    let not_done: Vec<&HourReport> = reports.iter().filter(|r| !r.status.is_final()).collect();
    if not_done.is_empty() {
        return ExitCode::SUCCESS;
    }
    eprintln!("ghevents: {} hour(s) not done:", not_done.len());
    for r in not_done {
        eprintln!(
            "  {} {}: {}",
            r.hour,
            r.status,
            r.reason
                .as_deref()
                .or(r.last_error.as_deref())
                .unwrap_or("no reason recorded")
        );
    }
    ExitCode::FAILURE
}

/// `ghevents backfill --from H --to H`: every hour of the range (both ends included) that is
/// not done, `parallel` at a time; a second run skips the done ones.
pub async fn backfill(
    app: &App,
    from: Hour,
    to: Hour,
    parallel: usize,
    json: bool,
) -> Result<ExitCode> {
    anyhow::ensure!(from <= to, "--from {from} is after --to {to}");
    let end = to.next();
    archive::ensure_hours(&app.pool, from, end).await?;
    let rows = archive::coverage(&app.pool, Some(from), Some(end), i64::MAX).await?;
    let (done, todo): (Vec<HourReport>, Vec<HourReport>) = rows
        .into_iter()
        .partition(|r| r.status == archive::HourStatus::Done);
    // The first Ctrl-C or SIGTERM stops the hours in hand between batches (their offsets
    // saved, their rows claimable at once) and starts no other.
    let archiver = Arc::new(archiver(app).await?.with_stop(crate::stop_on_signal()?));
    let total = todo.len() as u64;
    if !json {
        println!(
            "backfill {from}..{to}: {} hours, {} done already, {total} to import, {parallel} at a time",
            done.len() + todo.len(),
            done.len()
        );
    }
    let bar = (!json && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "backfill [{bar:30}] {pos}/{len} hours, {msg}, ETA {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar
    });
    let ticker = bar.clone().map(|bar| {
        let written = archiver.events_written.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            loop {
                let n = written.load(Ordering::Relaxed);
                let rate = n as f64 / started.elapsed().as_secs_f64().max(0.001);
                bar.set_message(format!("{n} events, {rate:.0} events/s"));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    });
    let mut results: Vec<(HourReport, Option<String>)> = Vec::new();
    let mut runs = futures::stream::iter(todo.into_iter().map(|r| {
        let archiver = archiver.clone();
        async move { (r.hour, run_one(&archiver, r.hour).await) }
    }))
    .buffer_unordered(parallel.max(1));
    while let Some((hour, result)) = runs.next().await {
        let (report, error) = result.with_context(|| format!("archiving {hour}"))?;
        match &bar {
            Some(bar) => {
                bar.inc(1);
                if !report.status.is_final() {
                    bar.println(format!("{hour} {}", report.status));
                }
            }
            None if !json => {
                for l in hour_lines(&report) {
                    println!("{l}");
                }
            }
            None => {}
        }
        results.push((report, error));
    }
    if let Some(t) = ticker {
        t.abort();
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    results.sort_by_key(|(r, _)| r.hour);
    let reports: Vec<HourReport> = results.iter().map(|(r, _)| r.clone()).collect();
    if json {
        let v = serde_json::json!({
            "from": from,
            "to": to,
            "done_before": done.len(),
            "hours": results.iter().map(|(r, e)| serde_json::json!({"report": r, "error": e})).collect::<Vec<_>>(),
            "not_done": reports.iter().filter(|r| !r.status.is_final()).map(|r| r.hour).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let sum = |f: fn(&HourReport) -> u64| reports.iter().map(f).sum::<u64>();
        println!(
            "backfill {from}..{to}: imported {} hours: lines={} stored={} already_present={} rejected={}",
            reports.len(),
            sum(|r| r.lines),
            sum(|r| r.stored),
            sum(|r| r.already_present),
            sum(|r| r.rejected),
        );
    }
    Ok(exit_for(&reports))
}

/// `ghevents coverage`: the hours with a row, in [from, to] (both optional).
pub async fn coverage(
    app: &App,
    from: Option<Hour>,
    to: Option<Hour>,
    json: bool,
) -> Result<ExitCode> {
    let rows = archive::coverage(&app.pool, from, to.map(Hour::next), i64::MAX).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!("no archive hours recorded (ghevents backfill --from H --to H)");
    }
    println!(
        "{:<14} {:<11} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "hour", "status", "lines", "stored", "present", "rejected", "polled", "stored%"
    );
    for r in &rows {
        println!(
            "{:<14} {:<11} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
            r.hour.to_string(),
            r.status.as_str(),
            r.lines,
            r.stored,
            r.already_present,
            r.rejected,
            pct(r.polled_share),
            pct(r.stored_share)
        );
        if !r.status.is_final() || r.rejected > 0 {
            if let Some(reason) = &r.reason {
                println!("  {reason}");
            }
        }
    }
    let done: Vec<&HourReport> = rows
        .iter()
        .filter(|r| r.status == archive::HourStatus::Done)
        .collect();
    let valid: u64 = done.iter().map(|r| r.valid()).sum();
    let polled: u64 = done.iter().map(|r| r.already_present).sum();
    if valid > 0 {
        println!(
            "{} hours done: {valid} events, {polled} polled before the archive ({:.1}%)",
            done.len(),
            polled as f64 * 100.0 / valid as f64
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The archive part of `ghevents status`: JSON, and lines.
pub async fn status_section(app: &App) -> Result<(serde_json::Value, Vec<String>)> {
    let totals = archive::totals(&app.pool).await?;
    let recent = archive::recent(&app.pool, 5).await?;
    let json = serde_json::json!({ "totals": totals, "recent_hours": recent });
    let mut lines = vec![format!(
        "archive hours: {:?}; archive push events not enriched by policy: {}",
        totals.hours_by_status, totals.push_not_enriched_by_policy
    )];
    for r in &recent {
        lines.push(format!(
            "  {} {}: lines={} stored={} already_present={} rejected={} polled_share={}{}",
            r.hour,
            r.status,
            r.lines,
            r.stored,
            r.already_present,
            r.rejected,
            pct(r.polled_share),
            r.reason
                .as_deref()
                .map_or(String::new(), |x| format!(" ({x})"))
        ));
    }
    Ok((json, lines))
}
