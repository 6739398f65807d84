//! Secrets Manager: the database credentials and the GitHub token, read at cold start. The
//! database secret is read again whenever Postgres refuses the credentials (RDS rotated the
//! password): see [`SecretsManagerCredentials`].
//!
//! - `DATABASE_URL` set: used as is. Else `DATABASE_SECRET_ARN`: a JSON secret with `username`,
//!   `password` and optionally `host`, `port`, `dbname` (the shape RDS writes); `DB_HOST`,
//!   `DB_PORT`, `DB_NAME` fill in or override those.
//! - `GITHUB_TOKEN` set: used as is. Else `GITHUB_TOKEN_SECRET_ARN`: the secret's string is
//!   the token.
//!
//! Secret values never reach logs or error messages.

use super::{sdk_error_retryable, sdk_error_text};
use crate::config::{Config, DbEndpoint};
use crate::store::{CredentialSource, DbCredentials};
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_secretsmanager::error::SdkError;
use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;
use secrecy::SecretString;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("GetSecretValue {arn} ({variable}): {}", sdk_error_text(&**source))]
    Get {
        variable: &'static str,
        arn: String,
        #[source]
        source: Box<SdkError<GetSecretValueError, HttpResponse>>,
    },
    #[error("secret {arn} ({variable}) has no SecretString")]
    NotAString { variable: &'static str, arn: String },
    #[error("database secret ({variable}): {reason}")]
    Database {
        variable: &'static str,
        reason: String,
    },
}

impl SecretsError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, SecretsError::Get { source, .. } if sdk_error_retryable(&**source))
    }
}

/// Fills `config.database_url` and `config.github_token` from Secrets Manager where the
/// configuration names a secret instead of giving the value.
pub async fn resolve(
    config: &mut Config,
    client: &aws_sdk_secretsmanager::Client,
) -> Result<(), SecretsError> {
    if config.database_url.is_none() {
        if let Some(arn) = &config.database_secret_arn {
            let json = secret_string(client, "DATABASE_SECRET_ARN", arn).await?;
            config.database_url = Some(database_url(&json, &config.db_endpoint)?.into());
            tracing::info!(secret = %arn, "database credentials read from Secrets Manager");
        }
    }
    if config.github_token.is_none() {
        if let Some(arn) = &config.github_token_secret_arn {
            let token = secret_string(client, "GITHUB_TOKEN_SECRET_ARN", arn).await?;
            config.github_token = Some(SecretString::from(token.trim().to_owned()));
            tracing::info!(secret = %arn, "GitHub token read from Secrets Manager");
        }
    }
    Ok(())
}

async fn secret_string(
    client: &aws_sdk_secretsmanager::Client,
    variable: &'static str,
    arn: &str,
) -> Result<String, SecretsError> {
    let out = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|source| SecretsError::Get {
            variable,
            arn: arn.to_owned(),
            source: Box::new(source),
        })?;
    out.secret_string.ok_or_else(|| SecretsError::NotAString {
        variable,
        arn: arn.to_owned(),
    })
}

/// The database secret, read again on demand by the pool's connector when Postgres refuses
/// the credentials it holds.
pub struct SecretsManagerCredentials {
    pub client: aws_sdk_secretsmanager::Client,
    pub arn: String,
}

#[async_trait::async_trait]
impl CredentialSource for SecretsManagerCredentials {
    async fn current(&self) -> Result<DbCredentials, String> {
        let json = secret_string(&self.client, "DATABASE_SECRET_ARN", &self.arn)
            .await
            .map_err(|e| e.to_string())?;
        let creds = credentials_of(&json).map_err(|e| e.to_string())?;
        tracing::info!(secret = %self.arn, "database credentials read again from Secrets Manager");
        Ok(creds)
    }
}

/// What a database secret's fault is called in errors.
fn bad_secret(reason: String) -> SecretsError {
    SecretsError::Database {
        variable: "DATABASE_SECRET_ARN",
        reason,
    }
}

/// A database secret's JSON. The parse error says where, never what (the text is the secret).
fn secret_value(secret_json: &str) -> Result<Value, SecretsError> {
    serde_json::from_str(secret_json).map_err(|e| {
        bad_secret(format!(
            "not a JSON object (line {}, column {})",
            e.line(),
            e.column()
        ))
    })
}

/// The user name and password of a database secret (JSON).
pub fn credentials_of(secret_json: &str) -> Result<DbCredentials, SecretsError> {
    let v = secret_value(secret_json)?;
    let field = |name: &str| match v.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };
    Ok(DbCredentials {
        user: field("username").ok_or_else(|| bad_secret("no \"username\"".into()))?,
        password: SecretString::from(
            field("password").ok_or_else(|| bad_secret("no \"password\"".into()))?,
        ),
    })
}

/// The Postgres URL for a database secret (JSON) and the `DB_*` variables.
pub fn database_url(secret_json: &str, endpoint: &DbEndpoint) -> Result<String, SecretsError> {
    let v = secret_value(secret_json)?;
    let field = |name: &str| -> Option<String> {
        match v.get(name) {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        }
    };
    let username = field("username").ok_or_else(|| bad_secret("no \"username\"".into()))?;
    let password = field("password").ok_or_else(|| bad_secret("no \"password\"".into()))?;
    let host = endpoint
        .host
        .clone()
        .or_else(|| field("host"))
        .ok_or_else(|| bad_secret("no host: set DB_HOST or put \"host\" in the secret".into()))?;
    let port = endpoint
        .port
        .clone()
        .or_else(|| field("port"))
        .unwrap_or_else(|| "5432".into());
    let port: u16 = port.trim().parse().map_err(|_| SecretsError::Database {
        variable: "DB_PORT",
        reason: format!("port {port:?} is not a number"),
    })?;
    // As libpq: without a database name, the user's name.
    let dbname = endpoint
        .name
        .clone()
        .or_else(|| field("dbname"))
        .unwrap_or_else(|| username.clone());
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host
    };
    Ok(format!(
        "postgres://{}:{}@{host}:{port}/{}",
        encode(&username),
        encode(&password),
        encode(&dbname)
    ))
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// The `DB_*` overrides, as the configuration reads them from these variables.
    fn env(pairs: &[(&str, &str)]) -> DbEndpoint {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(&move |k| m.get(k).cloned())
            .expect("valid configuration")
            .db_endpoint
    }

    #[test]
    fn the_password_is_percent_encoded_and_the_url_parses_back_to_it() {
        let secret = r#"{"username":"ghevents","password":"p@ss:w/rd?#%&= é","host":"db.internal","port":5432,"dbname":"ghevents"}"#;
        let url = database_url(secret, &env(&[])).unwrap();
        assert_eq!(
            url,
            "postgres://ghevents:p%40ss%3Aw%2Frd%3F%23%25%26%3D%20%C3%A9@db.internal:5432/ghevents"
        );
        let cfg: tokio_postgres::Config = url.parse().unwrap();
        assert_eq!(cfg.get_password(), Some("p@ss:w/rd?#%&= é".as_bytes()));
        assert_eq!(cfg.get_user(), Some("ghevents"));
        assert_eq!(cfg.get_dbname(), Some("ghevents"));
        let c = credentials_of(secret).unwrap();
        assert_eq!(c.user, "ghevents");
        assert_eq!(
            secrecy::ExposeSecret::expose_secret(&c.password),
            "p@ss:w/rd?#%&= é"
        );
        assert!(!format!("{c:?}").contains("p@ss"));
    }

    #[test]
    fn db_variables_fill_in_and_override_the_secret() {
        // RDS's managed secret: username and password only.
        let rds = r#"{"username":"ghevents","password":"pw"}"#;
        let url = database_url(
            rds,
            &env(&[
                ("DB_HOST", "x.rds.amazonaws.com"),
                ("DB_PORT", "6432"),
                ("DB_NAME", "events"),
            ]),
        )
        .unwrap();
        assert_eq!(
            url,
            "postgres://ghevents:pw@x.rds.amazonaws.com:6432/events"
        );
        let full = r#"{"username":"u","password":"pw","host":"secret-host","port":"5433","dbname":"secretdb"}"#;
        assert_eq!(
            database_url(full, &env(&[])).unwrap(),
            "postgres://u:pw@secret-host:5433/secretdb"
        );
        assert_eq!(
            database_url(full, &env(&[("DB_HOST", "env-host")])).unwrap(),
            "postgres://u:pw@env-host:5433/secretdb"
        );
        // No database name anywhere: the user's, as libpq does.
        assert_eq!(
            database_url(r#"{"username":"u","password":"pw","host":"h"}"#, &env(&[])).unwrap(),
            "postgres://u:pw@h:5432/u"
        );
    }

    #[test]
    fn a_bad_secret_is_explained_without_showing_it() {
        let e = database_url(r#"{"username":"u","password":"hunter2"}"#, &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("DB_HOST"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        let e = database_url("hunter2 is not json", &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(!e.contains("hunter2"), "{e}");
        let e = database_url(
            r#"{"username":"u","password":"pw","host":"h"}"#,
            &env(&[("DB_PORT", "x")]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("DB_PORT"), "{e}");
    }
}
