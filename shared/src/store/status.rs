use super::{Ctx, PollState, StoreError};
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde::Serialize;
use std::collections::BTreeMap;

/// Rows per status, for `ghevents status`.
#[derive(Debug, Clone, Serialize)]
pub struct Counts {
    pub events_total: i64,
    pub events_by_parse_status: BTreeMap<String, i64>,
    pub push_events_total: i64,
    pub push_events_by_enrichment_status: BTreeMap<String, i64>,
    pub push_events_not_enqueued: i64,
    pub oldest_pending_push_at: Option<DateTime<Utc>>,
}

pub async fn counts(pool: &Pool) -> Result<Counts, StoreError> {
    let c = pool.get().await?;
    let mut by_parse = BTreeMap::new();
    for r in c
        .query(
            "SELECT parse_status, count(*) FROM github_events GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await
        .ctx("count events")?
    {
        by_parse.insert(r.get::<_, String>(0), r.get::<_, i64>(1));
    }
    let mut by_enrich = BTreeMap::new();
    for s in ["pending", "in_progress", "completed", "failed"] {
        by_enrich.insert(s.to_owned(), 0);
    }
    for r in c
        .query(
            "SELECT enrichment_status, count(*) FROM push_events GROUP BY 1",
            &[],
        )
        .await
        .ctx("count push events")?
    {
        by_enrich.insert(r.get::<_, String>(0), r.get::<_, i64>(1));
    }
    let row = c
        .query_one(
            "SELECT count(*) FILTER (WHERE enqueued_at IS NULL),
                    min(created_at) FILTER (WHERE enrichment_status IN ('pending', 'in_progress'))
             FROM push_events",
            &[],
        )
        .await
        .ctx("push backlog")?;
    Ok(Counts {
        events_total: by_parse.values().sum(),
        events_by_parse_status: by_parse,
        push_events_total: by_enrich.values().sum(),
        push_events_by_enrichment_status: by_enrich,
        push_events_not_enqueued: row.get(0),
        oldest_pending_push_at: row.get(1),
    })
}

/// The poll state of every feed.
pub async fn poll_states(pool: &Pool) -> Result<Vec<PollState>, StoreError> {
    let feeds: Vec<String> = pool
        .get()
        .await?
        .query("SELECT feed FROM poll_state ORDER BY feed", &[])
        .await
        .ctx("list feeds")?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut out = Vec::with_capacity(feeds.len());
    for f in feeds {
        out.push(PollState::load(pool, &f).await?);
    }
    Ok(out)
}
