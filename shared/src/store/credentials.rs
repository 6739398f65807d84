//! Database credentials that change under a running process: a secret rotated by RDS.
//!
//! Connections already open keep working after a rotation; a new one made with the old
//! password fails with SQLSTATE 28P01 (`invalid_password`). The pool's connector then reads
//! the credentials again from their [`CredentialSource`] and connects once more with them,
//! so a warm process follows the rotation instead of failing until it is recycled.

use deadpool_postgres::Connect;
use futures::future::BoxFuture;
use secrecy::{ExposeSecret, SecretString};
use std::sync::{Arc, Mutex};
use tokio::task::JoinHandle;
use tokio_postgres::error::SqlState;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{Client, Config, Error, Socket};

#[derive(Clone)]
pub struct DbCredentials {
    pub user: String,
    pub password: SecretString,
}

impl std::fmt::Debug for DbCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbCredentials")
            .field("user", &self.user)
            .field("password", &"[redacted]")
            .finish()
    }
}

/// Where the current database credentials are read from (Secrets Manager on AWS).
#[async_trait::async_trait]
pub trait CredentialSource: Send + Sync {
    /// Reads them again; the error says why not, without the secret.
    async fn current(&self) -> Result<DbCredentials, String>;
}

/// Whether a connection failed because the server refused the credentials.
pub fn is_auth_failure(e: &Error) -> bool {
    e.code().is_some_and(|c| {
        *c == SqlState::INVALID_PASSWORD || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
    })
}

/// A [`Connect`] that re-reads the credentials once when the server refuses them.
pub(crate) struct RotatingConnect<T> {
    pub tls: T,
    pub source: Arc<dyn CredentialSource>,
    /// Credentials read since the pool was built; they replace the URL's.
    pub latest: Mutex<Option<DbCredentials>>,
}

impl<T> RotatingConnect<T>
where
    T: MakeTlsConnect<Socket> + Clone + Sync + Send + 'static,
    T::Stream: Sync + Send,
    T::TlsConnect: Sync + Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    pub fn new(tls: T, source: Arc<dyn CredentialSource>) -> Self {
        Self {
            tls,
            source,
            latest: Mutex::new(None),
        }
    }

    async fn connect_with(&self, cfg: &Config) -> Result<(Client, JoinHandle<()>), Error> {
        let (client, connection) = cfg.connect(self.tls.clone()).await?;
        let task = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "Postgres connection ended");
            }
        });
        Ok((client, task))
    }
}

fn apply(cfg: &mut Config, c: &DbCredentials) {
    cfg.user(&c.user);
    cfg.password(c.password.expose_secret());
}

impl<T> Connect for RotatingConnect<T>
where
    T: MakeTlsConnect<Socket> + Clone + Sync + Send + 'static,
    T::Stream: Sync + Send,
    T::TlsConnect: Sync + Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    fn connect(
        &self,
        pg_config: &Config,
    ) -> BoxFuture<'_, Result<(Client, JoinHandle<()>), Error>> {
        let mut cfg = pg_config.clone();
        Box::pin(async move {
            let known = self.latest.lock().expect("credentials lock").clone();
            if let Some(c) = &known {
                apply(&mut cfg, c);
            }
            match self.connect_with(&cfg).await {
                Err(e) if is_auth_failure(&e) => {
                    tracing::warn!(
                        error_code = "db_auth_failed",
                        "database refused the credentials; reading them again (rotated secret?)"
                    );
                    match self.source.current().await {
                        Ok(fresh) => {
                            apply(&mut cfg, &fresh);
                            *self.latest.lock().expect("credentials lock") = Some(fresh);
                            self.connect_with(&cfg).await
                        }
                        Err(reason) => {
                            tracing::warn!(error_code = "db_credentials_unreadable", reason = %reason, "could not read the database credentials again");
                            Err(e)
                        }
                    }
                }
                other => other,
            }
        })
    }
}
