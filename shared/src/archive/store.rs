//! `archive_hours`: the hours to import, their leases and what their import found.

use super::{Hour, HourReport, HourStatus};
use crate::import::Rejections;
use crate::store::StoreError;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

fn db(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> StoreError {
    move |source| StoreError::Db { context, source }
}

/// What the lines before `lines_committed` held (all of them once the hour is done).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    pub lines: u64,
    pub blank_lines: u64,
    pub stored: u64,
    pub already_present: u64,
    pub rejected: BTreeMap<String, Rejections>,
    pub push_events: u64,
    pub push_cache_enriched: u64,
    pub push_not_enriched: u64,
}

impl Counters {
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().map(|r| r.count).sum()
    }

    pub fn add(&mut self, o: &Counters) {
        self.lines += o.lines;
        self.blank_lines += o.blank_lines;
        self.stored += o.stored;
        self.already_present += o.already_present;
        self.push_events += o.push_events;
        self.push_cache_enriched += o.push_cache_enriched;
        self.push_not_enriched += o.push_not_enriched;
        for (code, r) in &o.rejected {
            let mine = self.rejected.entry(code.clone()).or_default();
            if mine.count == 0 {
                mine.message = r.message.clone();
            }
            mine.count += r.count;
            for l in &r.first_lines {
                if mine.first_lines.len() < 5 {
                    mine.first_lines.push(*l);
                }
            }
        }
    }
}

/// A claimed hour: where its import stands.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub attempts: i32,
    pub lines_committed: u64,
    pub counters: Counters,
    pub object_key: Option<String>,
}

const HOUR_COLUMNS: &str = "hour, status, attempts, next_attempt_at, claimed_until, lines, blank_lines,
    stored, already_present, rejected, rejections, push_events, push_cache_enriched, push_not_enriched,
    bytes, lines_committed, object_key, started_at, finished_at, last_error, reason, polled_share,
    stored_share";

fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn report_of(r: &tokio_postgres::Row) -> HourReport {
    let rejections: serde_json::Value = r.get("rejections");
    HourReport {
        hour: Hour::from_datetime(r.get("hour")),
        status: HourStatus::from_str_lossy(r.get("status")),
        attempts: r.get("attempts"),
        next_attempt_at: r.get("next_attempt_at"),
        claimed_until: r.get("claimed_until"),
        lines: u(r.get("lines")),
        blank_lines: u(r.get("blank_lines")),
        stored: u(r.get("stored")),
        already_present: u(r.get("already_present")),
        rejected: u(r.get("rejected")),
        rejections: serde_json::from_value(rejections).unwrap_or_default(),
        push_events: u(r.get("push_events")),
        push_cache_enriched: u(r.get("push_cache_enriched")),
        push_not_enriched: u(r.get("push_not_enriched")),
        bytes: u(r.get("bytes")),
        lines_committed: u(r.get("lines_committed")),
        object_key: r.get("object_key"),
        started_at: r.get("started_at"),
        finished_at: r.get("finished_at"),
        last_error: r.get("last_error"),
        reason: r.get("reason"),
        polled_share: r.get("polled_share"),
        stored_share: r.get("stored_share"),
        new_rows: 0,
    }
}

/// Creates `pending` rows for [from, to) that do not exist yet, each due from its hour's end;
/// returns how many were new.
pub async fn ensure_hours(pool: &Pool, from: Hour, to: Hour) -> Result<u64, StoreError> {
    if from >= to {
        return Ok(0);
    }
    let c = pool.get().await?;
    c.execute(
        "INSERT INTO archive_hours (hour, next_attempt_at)
         SELECT h, h + interval '1 hour' FROM generate_series($1::timestamptz, $2::timestamptz - interval '1 hour', interval '1 hour') AS h
         ON CONFLICT (hour) DO NOTHING",
        &[&from.start(), &to.start()],
    )
    .await
    .map_err(db("create archive hours"))
}

/// The hours that are due at `now`: the last complete hour (row created if absent) plus
/// `pending`/`failed` rows whose `next_attempt_at <= now` and `in_progress` rows whose lease
/// has run out, oldest first, at most `limit`.
pub async fn due_hours(
    pool: &Pool,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Hour>, StoreError> {
    let last = Hour::from_datetime(now).prev();
    ensure_hours(pool, last, last.next()).await?;
    let c = pool.get().await?;
    let rows = c
        .query(
            "SELECT hour FROM archive_hours
             WHERE (status IN ('pending', 'failed') AND next_attempt_at <= $1)
                OR (status = 'in_progress' AND claimed_until <= $1)
             ORDER BY hour LIMIT $2",
            &[&now, &limit],
        )
        .await
        .map_err(db("due archive hours"))?;
    Ok(rows.iter().map(|r| Hour::from_datetime(r.get(0))).collect())
}

/// Takes the hour's row for an import until `until`: a `pending` or `failed` row that is due
/// (any, with `force`), an `in_progress` row whose lease ran out, or (with `force`) a
/// `missing` one. `None`: someone else holds it, it is done, or not due.
pub async fn claim(
    pool: &Pool,
    hour: Hour,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
    force: bool,
) -> Result<Option<Claimed>, StoreError> {
    ensure_hours(pool, hour, hour.next()).await?;
    let c = pool.get().await?;
    let row = c
        .query_opt(
            "UPDATE archive_hours SET status = 'in_progress', attempts = attempts + 1,
                 claimed_until = $3, started_at = $2, updated_at = $2
             WHERE hour = $1 AND (
                 (status IN ('pending', 'failed') AND (next_attempt_at <= $2 OR $4))
                 OR (status = 'in_progress' AND claimed_until <= $2)
                 OR (status = 'missing' AND $4))
             RETURNING attempts, lines_committed, lines, blank_lines, stored, already_present,
                 rejections, push_events, push_cache_enriched, push_not_enriched, object_key",
            &[&hour.start(), &now, &until, &force],
        )
        .await
        .map_err(db("claim archive hour"))?;
    Ok(row.map(|r| {
        let rejections: serde_json::Value = r.get("rejections");
        Claimed {
            attempts: r.get("attempts"),
            lines_committed: u(r.get("lines_committed")),
            object_key: r.get("object_key"),
            counters: Counters {
                lines: u(r.get("lines")),
                blank_lines: u(r.get("blank_lines")),
                stored: u(r.get("stored")),
                already_present: u(r.get("already_present")),
                rejected: serde_json::from_value(rejections).unwrap_or_default(),
                push_events: u(r.get("push_events")),
                push_cache_enriched: u(r.get("push_cache_enriched")),
                push_not_enriched: u(r.get("push_not_enriched")),
            },
        }
    }))
}

/// Records the committed prefix (its counters and where it ends) and extends the lease.
pub async fn save_progress(
    pool: &Pool,
    hour: Hour,
    lines_committed: u64,
    c: &Counters,
    bytes: u64,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<(), StoreError> {
    let rejections = serde_json::to_value(&c.rejected).unwrap_or_default();
    pool.get()
        .await?
        .execute(
            "UPDATE archive_hours SET lines_committed = $2, lines = $3, blank_lines = $4, stored = $5,
                 already_present = $6, rejected = $7, rejections = $8, push_events = $9,
                 push_cache_enriched = $10, push_not_enriched = $11, bytes = greatest(bytes, $12),
                 claimed_until = $13, updated_at = $14
             WHERE hour = $1",
            &[
                &hour.start(),
                &i(lines_committed),
                &i(c.lines),
                &i(c.blank_lines),
                &i(c.stored),
                &i(c.already_present),
                &i(c.rejected_total()),
                &rejections,
                &i(c.push_events),
                &i(c.push_cache_enriched),
                &i(c.push_not_enriched),
                &i(bytes),
                &until,
                &now,
            ],
        )
        .await
        .map_err(db("save archive progress"))?;
    Ok(())
}

/// Records that the hour's file is stored under `key` (S3 mode), or that it must be copied
/// again (`None`).
pub async fn set_object(pool: &Pool, hour: Hour, key: Option<&str>) -> Result<(), StoreError> {
    pool.get()
        .await?
        .execute(
            "UPDATE archive_hours SET object_key = $2 WHERE hour = $1",
            &[&hour.start(), &key],
        )
        .await
        .map_err(db("record archive object"))?;
    Ok(())
}

/// How an attempt ended.
pub enum End<'a> {
    Done {
        reason: Option<String>,
    },
    /// Back to `pending`, due at `at`.
    Pending {
        at: DateTime<Utc>,
        reason: String,
    },
    Missing {
        reason: String,
    },
    Failed {
        at: DateTime<Utc>,
        error: &'a str,
        reason: String,
    },
}

/// Ends the attempt: releases the lease and records the outcome.
pub async fn finish(
    pool: &Pool,
    hour: Hour,
    end: End<'_>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let (status, at, error, reason): (&str, Option<DateTime<Utc>>, Option<&str>, Option<String>) =
        match end {
            End::Done { reason } => ("done", None, None, reason),
            End::Pending { at, reason } => ("pending", Some(at), None, Some(reason)),
            End::Missing { reason } => ("missing", None, None, Some(reason)),
            End::Failed { at, error, reason } => ("failed", Some(at), Some(error), Some(reason)),
        };
    pool.get()
        .await?
        .execute(
            "UPDATE archive_hours SET status = $2, next_attempt_at = coalesce($3, next_attempt_at),
                 claimed_until = NULL, updated_at = $6,
                 last_error = CASE WHEN $2 = 'done' THEN NULL ELSE coalesce($4, last_error) END,
                 reason = $5,
                 finished_at = CASE WHEN $2 IN ('done', 'missing') THEN $6 ELSE finished_at END,
                 polled_share = CASE WHEN $2 = 'done' AND stored + already_present > 0
                     THEN already_present::float8 / (stored + already_present) END,
                 stored_share = CASE WHEN $2 = 'done' AND lines - blank_lines - rejected > 0
                     THEN (stored + already_present)::float8 / (lines - blank_lines - rejected) END
             WHERE hour = $1",
            &[&hour.start(), &status, &at, &error, &reason, &now],
        )
        .await
        .map_err(db("finish archive hour"))?;
    Ok(())
}

/// The hour's row, if it has one.
pub async fn report(pool: &Pool, hour: Hour) -> Result<Option<HourReport>, StoreError> {
    let row = pool
        .get()
        .await?
        .query_opt(
            &format!("SELECT {HOUR_COLUMNS} FROM archive_hours WHERE hour = $1"),
            &[&hour.start()],
        )
        .await
        .map_err(db("read archive hour"))?;
    Ok(row.as_ref().map(report_of))
}

/// The hours of [from, to) that have a row (either bound open), oldest first, at most `limit`.
pub async fn coverage(
    pool: &Pool,
    from: Option<Hour>,
    to: Option<Hour>,
    limit: i64,
) -> Result<Vec<HourReport>, StoreError> {
    let rows = pool
        .get()
        .await?
        .query(
            &format!(
                "SELECT {HOUR_COLUMNS} FROM archive_hours
                 WHERE ($1::timestamptz IS NULL OR hour >= $1) AND ($2::timestamptz IS NULL OR hour < $2)
                 ORDER BY hour LIMIT $3"
            ),
            &[&from.map(Hour::start), &to.map(Hour::start), &limit],
        )
        .await
        .map_err(db("archive coverage"))?;
    Ok(rows.iter().map(report_of).collect())
}

/// The newest `n` hours with a row, newest first.
pub async fn recent(pool: &Pool, n: i64) -> Result<Vec<HourReport>, StoreError> {
    let rows = pool
        .get()
        .await?
        .query(
            &format!("SELECT {HOUR_COLUMNS} FROM archive_hours ORDER BY hour DESC LIMIT $1"),
            &[&n],
        )
        .await
        .map_err(db("recent archive hours"))?;
    Ok(rows.iter().map(report_of).collect())
}

/// Totals over every hour, for `ghevents status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    pub hours_by_status: BTreeMap<String, i64>,
    /// Archive push events the enrichment policy left unenriched (`skipped`).
    pub push_not_enriched_by_policy: i64,
}

pub async fn totals(pool: &Pool) -> Result<Totals, StoreError> {
    let c = pool.get().await?;
    let mut t = Totals::default();
    for s in ["pending", "in_progress", "done", "missing", "failed"] {
        t.hours_by_status.insert(s.to_owned(), 0);
    }
    for r in c
        .query("SELECT status, count(*) FROM archive_hours GROUP BY 1", &[])
        .await
        .map_err(db("count archive hours"))?
    {
        t.hours_by_status.insert(r.get(0), r.get(1));
    }
    t.push_not_enriched_by_policy = c
        .query_one(
            "SELECT count(*) FROM push_events WHERE enrichment_status = 'skipped'",
            &[],
        )
        .await
        .map_err(db("count skipped push events"))?
        .get(0);
    Ok(t)
}
