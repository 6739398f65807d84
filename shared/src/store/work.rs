//! The enrichment work queue: push events move `pending → in_progress → completed | failed`.
//! An `in_progress` row carries a lease (`locked_until`); a worker that dies leaves rows that
//! another takes over once the lease has passed.
//!
//! The row is the truth; a queue message only says "look at this row". Whenever a row goes
//! back to `pending` (deferred, or a failed attempt) it also goes back to the outbox
//! (`enqueued_at` NULL), so the outbox sends a new message for its `next_attempt_at`.

use super::{Ctx, StoreError};
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq)]
pub struct WorkItem {
    pub push_id: i64,
    pub actor_id: i64,
    pub actor_login: String,
    pub repo_id: i64,
    pub repo_name: String,
    pub attempts: i32,
}

fn item(r: &tokio_postgres::Row) -> WorkItem {
    WorkItem {
        push_id: r.get(0),
        actor_id: r.get(1),
        actor_login: r.get(2),
        repo_id: r.get(3),
        repo_name: r.get(4),
        attempts: r.get(5),
    }
}

const RETURNING: &str =
    "RETURNING p.push_id, p.actor_id, p.actor_login, p.repo_id, p.repo_name, p.attempts";

/// Claims up to `limit` due rows (pending and due, or in progress with an expired lease).
pub async fn claim_due(
    pool: &Pool,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<WorkItem>, StoreError> {
    let sql = format!(
        "WITH c AS (
            SELECT push_id FROM push_events
            WHERE (enrichment_status = 'pending' AND next_attempt_at <= $1)
               OR (enrichment_status = 'in_progress' AND locked_until <= $1)
            ORDER BY next_attempt_at, push_id
            LIMIT $3
            FOR UPDATE SKIP LOCKED)
         UPDATE push_events p SET enrichment_status = 'in_progress', locked_until = $2
         FROM c WHERE p.push_id = c.push_id {RETURNING}"
    );
    let rows = pool
        .get()
        .await?
        .query(&sql, &[&now, &lease_until, &limit])
        .await
        .ctx("claim work")?;
    Ok(rows.iter().map(item).collect())
}

/// What became of the ids a caller asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    Claimed(WorkItem),
    /// Completed or failed already.
    Done,
    /// Another worker holds a live lease on it (or another transaction a lock).
    Busy,
    /// Pending, but not due before this time: nothing may be spent on it yet.
    NotDue(DateTime<Utc>),
    Unknown,
}

/// Claims those of these push ids that are due (a queue message asks for them; a message
/// can arrive before its row is due, e.g. a duplicate, or after the row was deferred again).
pub async fn claim_ids(
    pool: &Pool,
    ids: &[i64],
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> Result<HashMap<i64, Claim>, StoreError> {
    let client = pool.get().await?;
    let sql = format!(
        "WITH c AS (
            SELECT push_id FROM push_events
            WHERE push_id = ANY($1)
              AND ((enrichment_status = 'pending' AND next_attempt_at <= $2)
                   OR (enrichment_status = 'in_progress' AND locked_until <= $2))
            FOR UPDATE SKIP LOCKED)
         UPDATE push_events p SET enrichment_status = 'in_progress', locked_until = $3
         FROM c WHERE p.push_id = c.push_id {RETURNING}"
    );
    let claimed = client
        .query(&sql, &[&ids, &now, &lease_until])
        .await
        .ctx("claim ids")?;
    let mut out: HashMap<i64, Claim> = claimed
        .iter()
        .map(|r| (r.get(0), Claim::Claimed(item(r))))
        .collect();
    let rest: Vec<i64> = ids
        .iter()
        .copied()
        .filter(|id| !out.contains_key(id))
        .collect();
    if !rest.is_empty() {
        for r in client
            .query(
                "SELECT push_id, enrichment_status, next_attempt_at FROM push_events WHERE push_id = ANY($1)",
                &[&rest],
            )
            .await
            .ctx("read statuses")?
        {
            let status: &str = r.get(1);
            let due: DateTime<Utc> = r.get(2);
            let claim = match status {
                "completed" | "failed" => Claim::Done,
                "pending" if due > now => Claim::NotDue(due),
                _ => Claim::Busy,
            };
            out.insert(r.get(0), claim);
        }
    }
    for id in ids {
        out.entry(*id).or_insert(Claim::Unknown);
    }
    Ok(out)
}

pub async fn complete(pool: &Pool, ids: &[i64], now: DateTime<Utc>) -> Result<(), StoreError> {
    pool.get()
        .await?
        .execute(
            "UPDATE push_events SET enrichment_status = 'completed', enriched_at = $2, locked_until = NULL, last_error = NULL
             WHERE push_id = ANY($1)",
            &[&ids, &now],
        )
        .await
        .ctx("complete work")?;
    Ok(())
}

/// Back to pending until `until`, without counting an attempt (the budget said wait), and
/// back to the outbox.
pub async fn defer(pool: &Pool, ids: &[i64], until: DateTime<Utc>) -> Result<(), StoreError> {
    pool.get()
        .await?
        .execute(
            "UPDATE push_events SET enrichment_status = 'pending', next_attempt_at = $2, locked_until = NULL,
                enqueued_at = NULL
             WHERE push_id = ANY($1) AND enrichment_status = 'in_progress'",
            &[&ids, &until],
        )
        .await
        .ctx("defer work")?;
    Ok(())
}

/// Counts a failed attempt: pending again at `retry_at` (and back to the outbox), or `failed`
/// once `max_attempts` is reached. Returns whether the row is now `failed`.
pub async fn fail_attempt(
    pool: &Pool,
    id: i64,
    error: &str,
    retry_at: DateTime<Utc>,
    max_attempts: i32,
) -> Result<bool, StoreError> {
    let row = pool
        .get()
        .await?
        .query_opt(
            "UPDATE push_events SET attempts = attempts + 1, last_error = $2, locked_until = NULL,
                enrichment_status = CASE WHEN attempts + 1 >= $4 THEN 'failed' ELSE 'pending' END,
                next_attempt_at = $3, enqueued_at = NULL
             WHERE push_id = $1 AND enrichment_status = 'in_progress'
             RETURNING enrichment_status",
            &[&id, &error, &retry_at, &max_attempts],
        )
        .await
        .ctx("record failed attempt")?;
    Ok(row.is_some_and(|r| r.get::<_, &str>(0) == "failed"))
}

/// Puts pending rows that are not due yet back to the outbox: a message arrived for them too
/// early (or twice), and is acked; the outbox sends one for their time.
pub async fn back_to_outbox(
    pool: &Pool,
    ids: &[i64],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    pool.get()
        .await?
        .execute(
            "UPDATE push_events SET enqueued_at = NULL
             WHERE push_id = ANY($1) AND enrichment_status = 'pending' AND next_attempt_at > $2",
            &[&ids, &now],
        )
        .await
        .ctx("put work back to the outbox")?;
    Ok(())
}

/// When the next pending row falls due, if any.
pub async fn next_due(pool: &Pool) -> Result<Option<DateTime<Utc>>, StoreError> {
    Ok(pool
        .get()
        .await?
        .query_one(
            "SELECT min(CASE WHEN enrichment_status = 'pending' THEN next_attempt_at ELSE locked_until END)
             FROM push_events WHERE enrichment_status IN ('pending', 'in_progress')",
            &[],
        )
        .await
        .ctx("next due")?
        .get(0))
}

/// The pause of all enrichment (see [`pause`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pause {
    pub until: DateTime<Utc>,
    /// Pauses in a row without a successful request in between.
    pub strikes: i32,
}

/// The current pause of all enrichment, if one was ever set and not cleared.
pub async fn current_pause(pool: &Pool) -> Result<Option<Pause>, StoreError> {
    Ok(pool
        .get()
        .await?
        .query_opt("SELECT until, strikes FROM enrichment_pause", &[])
        .await
        .ctx("read enrichment pause")?
        .map(|r| Pause {
            until: r.get(0),
            strikes: r.get(1),
        }))
}

/// Pauses all enrichment: until `now + first · 2^strikes` (at most `now + longest`), counting
/// a strike only when the last pause had ended (several workers failing at once count once).
/// Returns the end of the pause.
pub async fn pause(
    pool: &Pool,
    now: DateTime<Utc>,
    first: std::time::Duration,
    longest: std::time::Duration,
    reason: &str,
) -> Result<DateTime<Utc>, StoreError> {
    let first = first.as_secs_f64();
    let longest = longest.as_secs_f64().max(first);
    Ok(pool
        .get()
        .await?
        .query_one(
            "INSERT INTO enrichment_pause AS p (until, strikes, reason, updated_at)
             VALUES ($1::timestamptz + make_interval(secs => $2::float8), 1, $4::text, $1)
             ON CONFLICT (singleton) DO UPDATE SET
                strikes = CASE WHEN p.until > $1 THEN p.strikes ELSE p.strikes + 1 END,
                until = greatest(p.until, $1 + make_interval(secs =>
                    least($2 * power(2, least(CASE WHEN p.until > $1 THEN p.strikes - 1 ELSE p.strikes END, 30)), $3::float8))),
                reason = EXCLUDED.reason, updated_at = $1
             RETURNING until",
            &[&now, &first, &longest, &reason],
        )
        .await
        .ctx("pause enrichment")?
        .get(0))
}

/// A request succeeded after a pause: the next pause starts short again.
pub async fn clear_pause(pool: &Pool, now: DateTime<Utc>) -> Result<(), StoreError> {
    pool.get()
        .await?
        .execute("DELETE FROM enrichment_pause WHERE until <= $1", &[&now])
        .await
        .ctx("clear enrichment pause")?;
    Ok(())
}
