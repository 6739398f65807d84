//! The history of poll cycles (`poll_cycles`, migration V11) and what the stored state says
//! about freshness, enrichment backlog and suspected gaps ([`observe`]).

use super::{Ctx, StoreError};
use crate::ingest::{outcome_str, CycleSummary};
use crate::metrics::Observed;
use chrono::{DateTime, Duration, Utc};
use deadpool_postgres::Pool;

/// Rows older than this are deleted as new ones arrive.
pub const KEEP: Duration = Duration::days(30);

/// The window `status` and `check` count suspected gaps over.
pub const GAP_WINDOW: Duration = Duration::hours(24);

/// Records a cycle that sent at least one request (others did nothing worth keeping), and
/// deletes rows older than [`KEEP`].
pub async fn record(
    pool: &Pool,
    feed: &str,
    started_at: DateTime<Utc>,
    ended_at: DateTime<Utc>,
    s: &CycleSummary,
) -> Result<(), StoreError> {
    if s.requests == 0 {
        return Ok(());
    }
    let n = |v: u64| i32::try_from(v).unwrap_or(i32::MAX);
    let c = pool.get().await?;
    c.execute(
        "INSERT INTO poll_cycles (feed, started_at, ended_at, outcome, requests, pages,
                                  not_modified, new_events, duplicates, gap_suspected,
                                  newest_created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        &[
            &feed,
            &started_at,
            &ended_at,
            &outcome_str(s.outcome),
            &n(s.requests),
            &n(u64::from(s.pages)),
            &n(s.not_modified),
            &n(s.new_events),
            &n(s.duplicates),
            &s.gap_suspected,
            &s.newest_created_at,
        ],
    )
    .await
    .ctx("record poll cycle")?;
    c.execute(
        "DELETE FROM poll_cycles WHERE ended_at < $1",
        &[&(ended_at - KEEP)],
    )
    .await
    .ctx("trim poll cycles")?;
    Ok(())
}

/// Cycles that suspected a gap and ended at or after `since`: how many, and the first few
/// (`feed <feed> cycle ended <time>`, newest first).
pub async fn gaps_since(
    pool: &Pool,
    since: DateTime<Utc>,
    examples: usize,
) -> Result<(i64, Vec<String>), StoreError> {
    let c = pool.get().await?;
    let rows = c
        .query(
            "SELECT feed, ended_at, count(*) OVER () FROM poll_cycles
             WHERE gap_suspected AND ended_at >= $1
             ORDER BY ended_at DESC LIMIT $2",
            &[&since, &(examples.max(1) as i64)],
        )
        .await
        .ctx("count suspected gaps")?;
    let count = rows.first().map_or(0, |r| r.get::<_, i64>(2));
    let ex = rows
        .iter()
        .take(examples)
        .map(|r| {
            format!(
                "feed {} cycle ended {}",
                r.get::<_, String>(0),
                r.get::<_, DateTime<Utc>>(1).format("%Y-%m-%dT%H:%M:%SZ")
            )
        })
        .collect();
    Ok((count, ex))
}

/// Freshness, enrichment backlog and the gaps of the last [`GAP_WINDOW`], as of `now`. Three
/// index-backed queries: the newest event (`github_events_created_at_idx`), the pending push
/// events (`push_events_work_idx`), the recent gaps (`poll_cycles_gaps_idx`).
pub async fn observe(pool: &Pool, now: DateTime<Utc>) -> Result<Observed, StoreError> {
    let c = pool.get().await?;
    let newest: Option<DateTime<Utc>> = c
        .query_one("SELECT max(created_at) FROM github_events", &[])
        .await
        .ctx("newest event")?
        .get(0);
    let backlog = c
        .query_one(
            "SELECT count(*), min(created_at) FROM push_events
             WHERE enrichment_status IN ('pending', 'in_progress')",
            &[],
        )
        .await
        .ctx("enrichment backlog")?;
    let gaps: i64 = c
        .query_one(
            "SELECT count(*) FROM poll_cycles WHERE gap_suspected AND ended_at >= $1",
            &[&(now - GAP_WINDOW)],
        )
        .await
        .ctx("recent gaps")?
        .get(0);
    Ok(Observed::new(
        now,
        newest,
        backlog.get(0),
        backlog.get(1),
        gaps,
    ))
}
