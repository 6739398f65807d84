//! Session-level advisory locks on names, the one way the core takes a lock across processes.

use super::{Ctx, StoreError};
use deadpool_postgres::{Object, Pool};

/// The public events feed: the name of its row in `poll_state` and of its cycle lock.
pub const EVENTS_FEED: &str = "events";

/// A session-level advisory lock on a name, held on its own connection, across processes.
/// The key is `hashtextextended('ghevents:' || name, 0)`. If the holder dies, Postgres
/// releases it with the connection; if the guard is dropped without
/// [`AdvisoryLock::release`] (an error, a cancelled future or a panic unwound past it), or the
/// unlock fails, the connection is closed instead of going back to the pool, which releases
/// the lock too.
pub struct AdvisoryLock {
    conn: Option<Object>,
    key: i64,
}

impl AdvisoryLock {
    /// Takes the lock if it is free.
    pub async fn try_acquire(pool: &Pool, name: &str) -> Result<Option<Self>, StoreError> {
        let conn = pool.get().await?;
        let key = key_of(&conn, name).await?;
        let got: bool = conn
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
            .await
            .ctx("try advisory lock")?
            .get(0);
        // Not taken: the connection goes back to the pool as it is.
        Ok(got.then_some(Self {
            conn: Some(conn),
            key,
        }))
    }

    /// Takes the lock one ingest cycle of `feed` holds, if it is free: whoever holds it is
    /// polling the feed (or about to hand that cycle's push ids to the queue).
    pub async fn try_feed(pool: &Pool, feed: &str) -> Result<Option<Self>, StoreError> {
        Self::try_acquire(pool, &format!("poll:{feed}")).await
    }

    pub async fn release(mut self) -> Result<(), StoreError> {
        if let Some(conn) = self.conn.take() {
            if let Err(e) = conn
                .execute("SELECT pg_advisory_unlock($1)", &[&self.key])
                .await
            {
                // The lock may still be held: close the session rather than pool it.
                drop(Object::take(conn));
                return Err(StoreError::Db {
                    context: "advisory unlock",
                    source: e,
                });
            }
        }
        Ok(())
    }
}

async fn key_of(conn: &Object, name: &str) -> Result<i64, StoreError> {
    Ok(conn
        .query_one("SELECT hashtextextended('ghevents:' || $1, 0)", &[&name])
        .await
        .ctx("lock key")?
        .get(0))
}

impl Drop for AdvisoryLock {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            drop(Object::take(conn));
        }
    }
}
