//! `ghevents backfill --from H --to H --queue URL`: the range's hours onto the archive
//! function's hours queue instead of importing them here.

use anyhow::Result;
use ghevents_core::app::App;
use ghevents_core::archive::{self, Hour, HourReport};
use ghevents_core::aws::hours::{HourQueue, SqsHours};
use std::process::ExitCode;

/// Creates the `pending` rows of [from, to] that do not exist, then sends one message per hour
/// that is not done (or known missing), in batches of 10. Safe to repeat: done hours are never
/// sent, and a second message for an hour still waiting is acked once the hour is done.
pub async fn enqueue(
    app: &App,
    from: Hour,
    to: Hour,
    queue_url: &str,
    json: bool,
) -> Result<ExitCode> {
    anyhow::ensure!(from <= to, "--from {from} is after --to {to}");
    anyhow::ensure!(
        queue_url.starts_with("https://") || queue_url.starts_with("http://"),
        "--queue {queue_url:?} is not a queue URL (expected https://sqs.REGION.amazonaws.com/ACCOUNT/NAME)"
    );
    let end = to.next();
    let created = archive::ensure_hours(&app.pool, from, end).await?;
    let rows = archive::coverage(&app.pool, Some(from), Some(end), i64::MAX).await?;
    let (finished, todo): (Vec<HourReport>, Vec<HourReport>) =
        rows.into_iter().partition(|r| r.status.is_final());
    let hours: Vec<Hour> = todo.iter().map(|r| r.hour).collect();
    if !json {
        println!(
            "backfill {from}..{to}: {} hours ({created} new rows), {} done or missing, sending {} to {queue_url}",
            finished.len() + hours.len(),
            finished.len(),
            hours.len()
        );
    }
    let sdk = ghevents_core::aws::sdk_config().await;
    let queue = SqsHours {
        client: ghevents_core::aws::sqs_client(&sdk),
        queue_url: queue_url.to_owned(),
    };
    let report = queue.send_hours(&hours).await;
    if json {
        let v = serde_json::json!({
            "from": from,
            "to": to,
            "queue_url": queue_url,
            "new_rows": created,
            "finished": finished.len(),
            "sent": report.sent,
            "failed": report.failed.iter().map(|(h, e)| serde_json::json!({"hour": h, "error": e.to_string(), "retryable": e.retryable})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for (a, b, n) in runs(&report.sent) {
            if n == 1 {
                println!("sent {a}");
            } else {
                println!("sent {a}..{b} ({n} hours)");
            }
        }
        for (h, e) in &report.failed {
            println!("not sent {h}: {e}");
        }
        println!(
            "backfill {from}..{to}: {} hours sent, {} not sent",
            report.sent.len(),
            report.failed.len()
        );
    }
    if let Some(e) = report.first_error() {
        eprintln!(
            "ghevents: {} hour(s) not sent ({}); run the same command again",
            report.failed.len(),
            e
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Consecutive hours as (first, last, count).
fn runs(hours: &[Hour]) -> Vec<(Hour, Hour, usize)> {
    let mut out: Vec<(Hour, Hour, usize)> = Vec::new();
    for &h in hours {
        match out.last_mut() {
            Some((_, last, n)) if last.next() == h => {
                *last = h;
                *n += 1;
            }
            _ => out.push((h, h, 1)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_hours_print_as_ranges() {
        let h = |s: &str| Hour::parse(s).unwrap();
        let hours = [
            h("2015-01-01T22"),
            h("2015-01-01T23"),
            h("2015-01-02T00"),
            h("2015-01-02T05"),
        ];
        assert_eq!(
            runs(&hours),
            vec![
                (h("2015-01-01T22"), h("2015-01-02T00"), 3),
                (h("2015-01-02T05"), h("2015-01-02T05"), 1)
            ]
        );
        assert!(runs(&[]).is_empty());
    }
}
