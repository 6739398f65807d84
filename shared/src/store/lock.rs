use super::{Ctx, StoreError};
use deadpool_postgres::{Object, Pool};

/// A session-level advisory lock on a name, held on its own connection, across processes.
/// If the holder dies, Postgres releases it with the connection; if the guard is dropped
/// without [`AdvisoryLock::release`] (an error or a panic unwound past it), the connection
/// is closed instead of going back to the pool, which releases the lock too.
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
        Ok(got.then_some(Self {
            conn: Some(conn),
            key,
        }))
    }

    /// Waits for the lock.
    pub async fn acquire(pool: &Pool, name: &str) -> Result<Self, StoreError> {
        let conn = pool.get().await?;
        let key = key_of(&conn, name).await?;
        conn.execute("SELECT pg_advisory_lock($1)", &[&key])
            .await
            .ctx("advisory lock")?;
        Ok(Self {
            conn: Some(conn),
            key,
        })
    }

    pub async fn release(mut self) -> Result<(), StoreError> {
        if let Some(conn) = self.conn.take() {
            conn.execute("SELECT pg_advisory_unlock($1)", &[&self.key])
                .await
                .ctx("advisory unlock")?;
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
