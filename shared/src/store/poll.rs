use super::{Ctx, StoreError};
use crate::plan::FeedRate;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;

/// Where polling of a feed stands.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct PollState {
    pub feed: String,
    pub etag: Option<String>,
    pub etag_updated_at: Option<DateTime<Utc>>,
    pub last_polled_at: Option<DateTime<Utc>>,
    pub poll_interval_secs: Option<i32>,
    pub next_poll_at: Option<DateTime<Utc>>,
    pub cycle_started_at: Option<DateTime<Utc>>,
    pub cycle_completed_at: Option<DateTime<Utc>>,
    pub last_result: Option<String>,
    pub last_summary: Option<serde_json::Value>,
    pub last_error: Option<String>,
    /// The feed's rate as the last polls measured it (see `crate::plan`).
    pub feed_rate: Option<FeedRate>,
}

/// How a cycle ended, for `PollState::record_end`.
#[derive(Debug, Clone)]
pub struct CycleEnd<'a> {
    pub at: DateTime<Utc>,
    /// Every page the cycle needed was stored: only then is the new ETag kept and the cycle
    /// marked complete.
    pub completed: bool,
    pub etag: Option<&'a str>,
    /// A request went out (`last_polled_at` moves).
    pub polled: bool,
    pub poll_interval_secs: Option<i32>,
    pub next_poll_at: DateTime<Utc>,
    pub result: &'a str,
    pub summary: &'a serde_json::Value,
    pub error: Option<&'a str>,
    /// None keeps the rate stored.
    pub feed_rate: Option<FeedRate>,
}

impl PollState {
    /// A cycle started and never finished (the process died, or a page failed): the next
    /// one must not trust the ETag nor stop at the first overlap.
    pub fn previous_cycle_incomplete(&self) -> bool {
        match (self.cycle_started_at, self.cycle_completed_at) {
            (Some(_), None) => true,
            (Some(s), Some(c)) => s > c,
            _ => false,
        }
    }

    pub async fn load(pool: &Pool, feed: &str) -> Result<Self, StoreError> {
        let client = pool.get().await?;
        let row = client
            .query_opt(
                "SELECT etag, etag_updated_at, last_polled_at, poll_interval_secs, next_poll_at,
                        cycle_started_at, cycle_completed_at, last_result, last_summary, last_error,
                        feed_rate_per_s, feed_rate_at_least
                 FROM poll_state WHERE feed = $1",
                &[&feed],
            )
            .await
            .ctx("load poll_state")?;
        Ok(match row {
            None => PollState {
                feed: feed.to_owned(),
                ..Default::default()
            },
            Some(r) => PollState {
                feed: feed.to_owned(),
                etag: r.get(0),
                etag_updated_at: r.get(1),
                last_polled_at: r.get(2),
                poll_interval_secs: r.get(3),
                next_poll_at: r.get(4),
                cycle_started_at: r.get(5),
                cycle_completed_at: r.get(6),
                last_result: r.get(7),
                last_summary: r.get(8),
                last_error: r.get(9),
                feed_rate: r.get::<_, Option<f64>>(10).map(|per_sec| FeedRate {
                    per_sec,
                    at_least: r.get::<_, Option<bool>>(11).unwrap_or(false),
                }),
            },
        })
    }

    pub async fn mark_started(
        pool: &Pool,
        feed: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let client = pool.get().await?;
        client
            .execute(
                "INSERT INTO poll_state (feed, cycle_started_at) VALUES ($1, $2)
                 ON CONFLICT (feed) DO UPDATE SET cycle_started_at = EXCLUDED.cycle_started_at",
                &[&feed, &now],
            )
            .await
            .ctx("mark cycle started")?;
        Ok(())
    }

    /// Records the end of a cycle.
    pub async fn record_end(pool: &Pool, feed: &str, end: &CycleEnd<'_>) -> Result<(), StoreError> {
        let client = pool.get().await?;
        client
            .execute(
                "INSERT INTO poll_state (feed) VALUES ($1) ON CONFLICT (feed) DO NOTHING",
                &[&feed],
            )
            .await
            .ctx("poll_state row")?;
        client
            .execute(
                "UPDATE poll_state SET
                    etag = CASE WHEN $2 AND $3::text IS NOT NULL THEN $3 ELSE etag END,
                    etag_updated_at = CASE WHEN $2 AND $3::text IS NOT NULL THEN $4 ELSE etag_updated_at END,
                    cycle_completed_at = CASE WHEN $2 THEN $4 ELSE cycle_completed_at END,
                    last_polled_at = CASE WHEN $5 THEN $4 ELSE last_polled_at END,
                    poll_interval_secs = COALESCE($6, poll_interval_secs),
                    next_poll_at = $7,
                    last_result = $8,
                    last_summary = $9,
                    last_error = $10,
                    feed_rate_per_s = COALESCE($11, feed_rate_per_s),
                    feed_rate_at_least = COALESCE($12, feed_rate_at_least)
                 WHERE feed = $1",
                &[
                    &feed,
                    &end.completed,
                    &end.etag,
                    &end.at,
                    &end.polled,
                    &end.poll_interval_secs,
                    &end.next_poll_at,
                    &end.result,
                    end.summary,
                    &end.error,
                    &end.feed_rate.map(|r| r.per_sec),
                    &end.feed_rate.map(|r| r.at_least),
                ],
            )
            .await
            .ctx("record cycle end")?;
        Ok(())
    }
}
