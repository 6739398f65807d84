//! Data-quality checks for operators (`ghevents check`): each check is one query over what is
//! stored, and the [`CheckReport`] says how many rows are wrong and which. Nothing is changed.

use crate::raw::ObjectReader;
use crate::store::{Ctx, StoreError};
use chrono::{DateTime, Duration, Utc};
use deadpool_postgres::Pool;
use serde::Serialize;
use std::collections::BTreeMap;

/// Example ids kept per check (and per reason).
pub const EXAMPLES: usize = 5;

/// Thresholds of the checks.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Raw objects checked for existence, at most (S3 mode).
    pub s3_sample: u32,
    /// A pending push event enqueued longer ago than this is stale.
    pub stale_after: Duration,
    /// An `in_progress` lease expired longer ago than this is abandoned.
    pub lease_grace: Duration,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            s3_sample: 100,
            stale_after: Duration::hours(1),
            lease_grace: Duration::minutes(1),
        }
    }
}

/// Rows sharing one reason.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReasonCount {
    pub count: i64,
    pub examples: Vec<String>,
}

/// One check's result. `count` is how many rows (or objects, or cycles) are wrong; 0 is good.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub description: &'static str,
    pub count: i64,
    pub examples: Vec<String>,
    /// The same rows by reason, when the check has reasons.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub by_reason: BTreeMap<String, ReasonCount>,
    /// The check did not run (or could not see everything); why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub skipped: bool,
}

impl Check {
    fn new(name: &'static str, description: &'static str) -> Self {
        Self {
            name,
            description,
            count: 0,
            examples: Vec::new(),
            by_reason: BTreeMap::new(),
            note: None,
            skipped: false,
        }
    }

    pub fn ok(&self) -> bool {
        self.count == 0
    }
}

/// Every check's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckReport {
    pub checked_at: DateTime<Utc>,
    pub checks: Vec<Check>,
}

impl CheckReport {
    /// No check found anything wrong (a skipped check counts as healthy: its note says why).
    pub fn is_healthy(&self) -> bool {
        self.checks.iter().all(Check::ok)
    }

    /// Rows found wrong, over every check.
    pub fn problems(&self) -> i64 {
        self.checks.iter().map(|c| c.count).sum()
    }

    pub fn get(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }
}

/// Reads `5m`, `90s`, `1h`, `2d` or a number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: i64 = num
        .parse()
        .map_err(|_| format!("`{s}`: expected a number with s, m, h or d"))?;
    let secs = match unit {
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        _ => None,
    }
    .ok_or_else(|| format!("`{s}`: expected a number with s, m, h or d"))?;
    Duration::try_seconds(secs).ok_or_else(|| format!("`{s}`: too long"))
}

/// Runs every check. `objects` reads the raw object store; without it the object check is
/// skipped with a note. `now` is the clock's time (leases and staleness are measured from it).
pub async fn run_checks(
    pool: &Pool,
    objects: Option<&dyn ObjectReader>,
    opts: &CheckOptions,
    now: DateTime<Utc>,
) -> Result<CheckReport, StoreError> {
    let c = pool.get().await?;
    let mut checks = Vec::new();

    // Postgres enforces this with the foreign key; a restore without constraints, a
    // replica set to `session_replication_role = replica` or a hand-made fix can still
    // break it, and enrichment then works on a push it cannot trace back.
    let mut k = Check::new(
        "push_without_raw",
        "push events whose event_id has no github_events row",
    );
    let r = c
        .query_one(
            "SELECT count(*), (array_agg(p.push_id ORDER BY p.push_id))[1:$1]
             FROM push_events p
             WHERE NOT EXISTS (SELECT 1 FROM github_events g WHERE g.event_id = p.event_id)",
            &[&(EXAMPLES as i32)],
        )
        .await
        .ctx("check push_without_raw")?;
    k.count = r.get(0);
    k.examples = ids(r.get(1), "push ");
    checks.push(k);

    let mut k = Check::new(
        "raw_push_without_push_row",
        "raw PushEvents without a push_events row, by parse status or reason",
    );
    for r in c
        .query(
            "SELECT coalesce(g.parse_error, g.parse_status), count(*),
                    (array_agg(g.event_id ORDER BY g.event_id))[1:$1]
             FROM github_events g
             WHERE g.event_type = 'PushEvent'
               AND NOT EXISTS (SELECT 1 FROM push_events p WHERE p.event_id = g.event_id)
             GROUP BY 1 ORDER BY 2 DESC, 1",
            &[&(EXAMPLES as i32)],
        )
        .await
        .ctx("check raw_push_without_push_row")?
    {
        let reason: String = r.get(0);
        let count: i64 = r.get(1);
        let examples = ids(r.get(2), "event ");
        k.count += count;
        for e in &examples {
            if k.examples.len() < EXAMPLES {
                k.examples.push(e.clone());
            }
        }
        k.by_reason.insert(reason, ReasonCount { count, examples });
    }
    checks.push(k);

    let mut k = Check::new(
        "raw_object_missing",
        "raw object references whose object cannot be read (sampled)",
    );
    let keys: Vec<String> = c
        .query(
            "SELECT k FROM (SELECT DISTINCT raw_object_key AS k FROM github_events
                            WHERE raw_object_key IS NOT NULL) keys
             ORDER BY random() LIMIT $1",
            &[&i64::from(opts.s3_sample)],
        )
        .await
        .ctx("sample raw object keys")?
        .iter()
        .map(|r| r.get(0))
        .collect();
    match (objects, keys.is_empty()) {
        (_, true) => k.note = Some("no event refers to a raw object".into()),
        (None, false) => {
            k.skipped = true;
            k.note = Some(format!(
                "skipped: events refer to raw objects, but no object store is configured (RAW_PAYLOAD_BUCKET); {} keys not checked",
                keys.len()
            ));
        }
        (Some(reader), false) => {
            for key in &keys {
                if let Err(e) = reader.get_object(key).await {
                    k.count += 1;
                    if k.examples.len() < EXAMPLES {
                        k.examples.push(key.clone());
                    }
                    let reason = if e.retryable {
                        "unreachable (may pass on retry)"
                    } else {
                        "not found"
                    };
                    let r = k.by_reason.entry(reason.into()).or_default();
                    r.count += 1;
                    if r.examples.len() < EXAMPLES {
                        r.examples.push(key.clone());
                    }
                }
            }
            k.note = Some(format!("{} distinct objects checked", keys.len()));
        }
    }
    checks.push(k);

    let mut k = Check::new(
        "expired_leases",
        "push events in_progress whose lease ended longer ago than the grace",
    );
    let r = c
        .query_one(
            "SELECT count(*), (array_agg(push_id ORDER BY locked_until, push_id))[1:$1]
             FROM push_events
             WHERE enrichment_status = 'in_progress'
               AND (locked_until IS NULL OR locked_until < $2)",
            &[&(EXAMPLES as i32), &(now - opts.lease_grace)],
        )
        .await
        .ctx("check expired_leases")?;
    k.count = r.get(0);
    k.examples = ids(r.get(1), "push ");
    k.note = Some(format!("grace {}s", opts.lease_grace.num_seconds()));
    checks.push(k);

    let mut k = Check::new(
        "stale_pending",
        "push events still pending long after they were enqueued",
    );
    let r = c
        .query_one(
            "SELECT count(*), (array_agg(push_id ORDER BY enqueued_at, push_id))[1:$1]
             FROM push_events
             WHERE enrichment_status = 'pending' AND enqueued_at < $2",
            &[&(EXAMPLES as i32), &(now - opts.stale_after)],
        )
        .await
        .ctx("check stale_pending")?;
    k.count = r.get(0);
    k.examples = ids(r.get(1), "push ");
    k.note = Some(format!(
        "enqueued more than {}s ago",
        opts.stale_after.num_seconds()
    ));
    checks.push(k);

    drop(c);
    checks.push(gap_check(pool, now).await?);
    checks.push(archive_hour_check(pool).await?);
    Ok(CheckReport {
        checked_at: now,
        checks,
    })
}

/// Poll cycles of the last 24 hours that read their last page without meeting an event
/// stored before them: older events may have left the feed unseen. The same count as
/// `ghevents status` and the `GapsLast24h` metric (`poll_cycles`, kept 30 days).
async fn gap_check(pool: &Pool, now: DateTime<Utc>) -> Result<Check, StoreError> {
    let mut k = Check::new(
        "suspected_gaps",
        "poll cycles of the last 24 h that read their last page without meeting a stored event",
    );
    let window = crate::store::cycles::GAP_WINDOW;
    let (count, examples) = crate::store::cycles::gaps_since(pool, now - window, EXAMPLES).await?;
    k.count = count;
    k.examples = examples;
    k.note = Some(format!(
        "cycles ended since {}",
        (now - window).format("%Y-%m-%dT%H:%M:%SZ")
    ));
    Ok(k)
}

/// Done archive hours holding fewer events than their file had: for each, the events stored
/// whose `created_at` falls in the hour, against the hour's valid lines (`stored +
/// already_present`). GH Archive files hold the events created in their hour, so a deficit
/// means events were deleted or lost since the import (a file that repeats an event would
/// also count, once per repetition).
async fn archive_hour_check(pool: &Pool) -> Result<Check, StoreError> {
    let mut k = Check::new(
        "archive_hour_counts",
        "done archive hours with fewer events stored than their file's valid lines",
    );
    let rows = pool
        .get()
        .await?
        .query(
            "SELECT h.hour, h.stored + h.already_present AS expected,
                    (SELECT count(*) FROM github_events g
                     WHERE g.created_at >= h.hour AND g.created_at < h.hour + interval '1 hour') AS held
             FROM archive_hours h
             WHERE h.status = 'done'
             ORDER BY h.hour",
            &[],
        )
        .await
        .ctx("check archive_hour_counts")?;
    for r in &rows {
        let hour: DateTime<Utc> = r.get(0);
        let (expected, held): (i64, i64) = (r.get(1), r.get(2));
        if held < expected {
            k.count += 1;
            if k.examples.len() < EXAMPLES {
                k.examples.push(format!(
                    "{}: {held} of {expected}",
                    hour.format("%Y-%m-%dT%H")
                ));
            }
        }
    }
    k.note = Some(if rows.is_empty() {
        "no archive hour is done".into()
    } else {
        format!("{} done hours compared", rows.len())
    });
    Ok(k)
}

fn ids(v: Option<Vec<i64>>, prefix: &str) -> Vec<String> {
    v.unwrap_or_default()
        .into_iter()
        .map(|id| format!("{prefix}{id}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_units_and_plain_seconds() {
        assert_eq!(parse_duration("90").unwrap(), Duration::seconds(90));
        assert_eq!(parse_duration("90s").unwrap(), Duration::seconds(90));
        assert_eq!(parse_duration("5m").unwrap(), Duration::minutes(5));
        assert_eq!(parse_duration("1h").unwrap(), Duration::hours(1));
        assert_eq!(parse_duration("2d").unwrap(), Duration::days(2));
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("-1h").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }

    #[test]
    fn a_report_is_healthy_when_every_count_is_zero() {
        let mut report = CheckReport {
            checked_at: Utc::now(),
            checks: vec![Check::new("a", ""), Check::new("b", "")],
        };
        report.checks[1].skipped = true;
        assert!(report.is_healthy());
        report.checks[0].count = 2;
        assert!(!report.is_healthy());
        assert_eq!(report.problems(), 2);
    }
}
