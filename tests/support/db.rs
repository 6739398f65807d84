//! A fresh database per test: created from `DATABASE_URL` (or Postgres on 127.0.0.1:5432),
//! migrated, and dropped when the test ends.

use deadpool_postgres::Pool;
use rand::Rng;

pub struct TestDb {
    pub name: String,
    pub url: String,
    admin_url: String,
    pub pool: Pool,
}

/// The server tests create their databases on.
pub fn admin_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// `url` with its database name replaced.
pub fn with_dbname(url: &str, db: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (url, None),
    };
    let scheme_end = head
        .find("://")
        .map(|i| i + 3)
        .expect("DATABASE_URL must be a postgres:// URL");
    let base = match head[scheme_end..].find('/') {
        Some(i) => &head[..scheme_end + i],
        None => head,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

async fn admin_client(admin: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(admin, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot reach Postgres at {admin}: {e} (set DATABASE_URL, or run scripts/test.sh, which starts one)"));
    tokio::spawn(conn);
    client
}

impl TestDb {
    /// A new, migrated database.
    pub async fn new() -> Self {
        let db = Self::new_empty().await;
        ghevents_core::store::migrate(&db.pool)
            .await
            .expect("migrate");
        db
    }

    /// A new database without the schema.
    pub async fn new_empty() -> Self {
        crate::init_tracing();
        let admin_url = admin_url();
        let name = format!("ghevents_test_{:016x}", rand::thread_rng().gen::<u64>());
        admin_client(&admin_url)
            .await
            .execute(&format!("CREATE DATABASE {name}"), &[])
            .await
            .expect("create database");
        let url = with_dbname(&admin_url, &name);
        let pool = ghevents_core::store::pool(&url, 8).expect("pool");
        Self {
            name,
            url,
            admin_url,
            pool,
        }
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.pool
            .get()
            .await
            .unwrap()
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .get(0)
    }

    /// When the events feed's last cycle planned the next poll.
    pub async fn next_poll_at(&self) -> chrono::DateTime<chrono::Utc> {
        self.pool
            .get()
            .await
            .unwrap()
            .query_one(
                "SELECT next_poll_at FROM poll_state WHERE feed = 'events'",
                &[],
            )
            .await
            .unwrap()
            .get(0)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin_url.clone(), self.name.clone());
        self.pool.close();
        // Drop runs inside the test's runtime: use a thread with its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let c = admin_client(&admin).await;
                let _ = c
                    .execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"), &[])
                    .await;
            });
        })
        .join();
    }
}

#[cfg(test)]
mod tests {
    use super::with_dbname;

    #[test]
    fn replaces_only_the_database_name() {
        assert_eq!(
            with_dbname("postgres://u@h:5432/postgres", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            with_dbname("postgres://u@h/db?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
        assert_eq!(with_dbname("postgresql://h:1", "x"), "postgresql://h:1/x");
    }
}
