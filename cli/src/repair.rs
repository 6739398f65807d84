//! `ghevents retry` and `ghevents requeue`: the operator's repairs of the enrichment queue.

use anyhow::{Context, Result};
use ghevents_core::app::App;
use ghevents_core::repair::{self, RequeueReport, RetryOptions, RetryReport, RetryScope};
use std::process::ExitCode;

pub async fn retry(
    app: &App,
    failed_only: bool,
    since: Option<chrono::DateTime<chrono::Utc>>,
    json: bool,
) -> Result<ExitCode> {
    let opts = RetryOptions {
        scope: if failed_only {
            RetryScope::Failed
        } else {
            RetryScope::FailedAndExpired
        },
        since,
    };
    let report = repair::retry(&app.pool, &opts, app.clock.now())
        .await
        .context("putting push events back to pending")?;
    if json {
        let v = serde_json::json!({
            "scope": opts.scope,
            "since": opts.since,
            "report": report,
            "queue": app.config.enrich_queue_url.is_some(),
        });
        crate::print_json(&v)?;
    } else {
        print_retry(&report, app.config.enrich_queue_url.is_some());
    }
    Ok(ExitCode::SUCCESS)
}

fn print_retry(r: &RetryReport, queue: bool) {
    let by: Vec<String> = r
        .by_previous_status
        .iter()
        .map(|(s, n)| format!("{s}={n}"))
        .collect();
    println!(
        "retry: {} push events back to pending ({})",
        r.retried,
        if by.is_empty() {
            "none matched".to_owned()
        } else {
            by.join(" ")
        }
    );
    if r.retried == 0 {
        return;
    }
    let ids: Vec<String> = r.examples.iter().map(i64::to_string).collect();
    println!("  e.g. push ids {}", ids.join(", "));
    for (error, n) in &r.top_errors {
        println!("  previous error ({n}): {error}");
    }
    println!("  previous state kept in enrichment_retries");
    if queue {
        println!("  they wait in the outbox: the next ingest invocation sends them, or `ghevents requeue` now");
    } else {
        println!("  the enrichment worker (`ghevents run` or `ghevents enrich`) takes them now");
    }
}

pub async fn requeue(app: &App, after: chrono::Duration, json: bool) -> Result<ExitCode> {
    let Some(queue_url) = app.config.enrich_queue_url.clone() else {
        anyhow::bail!(
            "ENRICH_QUEUE_URL is not set: requeue sends push ids to that SQS queue (without one, the enrichment worker reads pending rows from Postgres and nothing needs requeueing)"
        );
    };
    let sdk = ghevents_core::aws::sdk_config().await;
    let queue = ghevents_core::aws::sqs::SqsQueue {
        client: ghevents_core::aws::sqs_client(&sdk),
        queue_url: queue_url.clone(),
    };
    let after = after
        .to_std()
        .context("--lost-after must not be negative")?;
    let report = repair::requeue(&app.pool, &queue, app.clock.now(), after)
        .await
        .context("sending the outbox")?;
    if json {
        let v = serde_json::json!({
            "queue_url": queue_url,
            "lost_after_secs": after.as_secs(),
            "report": report,
        });
        crate::print_json(&v)?;
    } else {
        print_requeue(&report, &queue_url);
    }
    Ok(if report.error.is_some() || !report.ran {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn print_requeue(r: &RequeueReport, queue_url: &str) {
    if !r.ran {
        println!("requeue: an ingest cycle is running and sends the outbox itself; nothing sent here, try again in a minute");
        return;
    }
    println!(
        "requeue: sent {} push ids to {queue_url} in {} batches ({} judged lost and sent again); outbox {} before, {} after",
        r.sent, r.batches, r.lost_put_back, r.outbox_before, r.outbox_after
    );
    if let Some(e) = &r.error {
        println!(
            "  stopped: {} refused: {e}; run again once the queue takes messages",
            r.failed
        );
    } else if r.outbox_after > 0 {
        println!(
            "  {} left in the outbox are due later than a delivery delay reaches; a later flush sends them",
            r.outbox_after
        );
    }
}
