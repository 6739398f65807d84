use super::{Ctx, StoreError};
use crate::budget::{Budget, BudgetError, Denied, Observation, Purpose, State};
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;

/// The rate budget held in `rate_limit_state`, shared by every process using the same GitHub
/// identity. Each change runs [`State`]'s logic under the row's lock.
pub struct PgBudget {
    pool: Pool,
    identity: String,
    default_limit: i32,
    reserve_per_60: u32,
}

impl PgBudget {
    pub fn new(pool: Pool, identity: String, default_limit: i32, reserve_per_60: u32) -> Self {
        Self {
            pool,
            identity,
            default_limit,
            reserve_per_60,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The budget as stored (read only).
    pub async fn snapshot(&self, now: DateTime<Utc>) -> Result<State, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                &format!(
                    "{SELECT} FROM rate_limit_state WHERE identity = $1 AND resource = 'core'"
                ),
                &[&self.identity],
            )
            .await
            .ctx("read budget")?;
        Ok(row
            .map(|r| from_row(&r))
            .unwrap_or_else(|| State::unknown(self.default_limit, now)))
    }

    pub fn reserve_per_60(&self) -> u32 {
        self.reserve_per_60
    }

    async fn with_state<T>(
        &self,
        now: DateTime<Utc>,
        f: impl FnOnce(&mut State) -> T,
    ) -> Result<T, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await.ctx("begin budget")?;
        tx.execute(
            "INSERT INTO rate_limit_state (identity, resource, limit_total, remaining, observed_at)
             VALUES ($1, 'core', $2, $2, $3) ON CONFLICT DO NOTHING",
            &[&self.identity, &self.default_limit, &now],
        )
        .await
        .ctx("budget row")?;
        let row = tx
            .query_one(&format!("{SELECT} FROM rate_limit_state WHERE identity = $1 AND resource = 'core' FOR UPDATE"), &[&self.identity])
            .await
            .ctx("lock budget")?;
        let mut state = from_row(&row);
        let before = state.clone();
        let out = f(&mut state);
        if state != before {
            tx.execute(
                "UPDATE rate_limit_state SET limit_total = $2, remaining = $3, used = $4, reset_at = $5,
                    github_used = $6, in_flight = $7, retry_after_until = $8, secondary_strikes = $9, observed_at = $10,
                    window_started_at = $11
                 WHERE identity = $1 AND resource = 'core'",
                &[
                    &self.identity, &state.limit, &state.remaining, &state.used, &state.reset_at, &state.github_used,
                    &state.in_flight, &state.retry_after_until, &state.secondary_strikes, &state.observed_at,
                    &state.window_started_at,
                ],
            )
            .await
            .ctx("update budget")?;
        }
        tx.commit().await.ctx("commit budget")?;
        Ok(out)
    }
}

const SELECT: &str = "SELECT limit_total, remaining, used, reset_at, github_used, in_flight, retry_after_until, secondary_strikes, observed_at, window_started_at";

fn from_row(r: &tokio_postgres::Row) -> State {
    State {
        limit: r.get(0),
        remaining: r.get(1),
        used: r.get(2),
        reset_at: r.get(3),
        github_used: r.get(4),
        in_flight: r.get(5),
        retry_after_until: r.get(6),
        secondary_strikes: r.get(7),
        observed_at: r.get(8),
        window_started_at: r.get(9),
    }
}

#[async_trait::async_trait]
impl Budget for PgBudget {
    async fn acquire(
        &self,
        purpose: Purpose,
        now: DateTime<Utc>,
    ) -> Result<Result<(), Denied>, BudgetError> {
        let reserve = self.reserve_per_60;
        self.with_state(now, |s| s.acquire(purpose, reserve, now))
            .await
            .map_err(BudgetError::from)
    }

    async fn observe(
        &self,
        obs: Observation,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, BudgetError> {
        self.with_state(now, |s| s.observe(obs, now))
            .await
            .map_err(BudgetError::from)
    }
}
