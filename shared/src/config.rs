//! Configuration, read once at start from the environment. A bad value names its variable.

use secrecy::{ExposeSecret, SecretString};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error("{name}={value:?} is invalid: {reason}")]
    Invalid {
        name: &'static str,
        value: String,
        reason: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawPayloadStore {
    Postgres,
    S3,
}

/// What fills in or overrides the connection details of a database secret (which holds the
/// credentials): `DB_HOST`, `DB_PORT`, `DB_NAME`. The port is checked where it is used, so
/// its error names the secret it completes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DbEndpoint {
    pub host: Option<String>,
    pub port: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Holds the password: a secret, so `Debug` never prints it.
    pub database_url: Option<SecretString>,
    /// `DATABASE_SECRET_ARN`: the Secrets Manager secret to build the URL from when
    /// `DATABASE_URL` is not set (AWS; see `crate::aws::secrets`).
    pub database_secret_arn: Option<String>,
    pub db_endpoint: DbEndpoint,
    pub github_api_url: String,
    pub github_token: Option<SecretString>,
    /// `GITHUB_TOKEN_SECRET_ARN`: the secret holding the token when `GITHUB_TOKEN` is not set.
    pub github_token_secret_arn: Option<String>,
    /// `LOG_FORMAT`, else Lambda's `AWS_LAMBDA_LOG_FORMAT` (`JSON` or `Text`); default text.
    pub log_format: LogFormat,
    /// `AWS_LAMBDA_FUNCTION_NAME`, which the Lambda runtime sets.
    pub function_name: Option<String>,
    /// Requests per 60 that enrichment leaves to ingest (scaled to the real limit).
    pub ingest_reserve: u32,
    pub enrich_cache_ttl: Duration,
    pub enrich_max_attempts: i32,
    pub raw_payload_store: RawPayloadStore,
    pub raw_payload_bucket: Option<String>,
    pub raw_payload_prefix: String,
    pub enrich_queue_url: Option<String>,
    /// libpq's `PGSSLMODE` and `PGSSLROOTCERT`: TLS to Postgres when the URL does not say
    /// (see `crate::store::pool`).
    pub pg_sslmode: Option<String>,
    pub pg_sslrootcert: Option<String>,
    /// `DB_POOL_SIZE`: connections per process; unset, each binary's own default.
    pub db_pool_size: Option<usize>,
    /// `MIGRATE_ON_START` (default true): apply pending migrations when a process starts.
    pub migrate_on_start: bool,
    /// `GHARCHIVE_URL` (default `https://data.gharchive.org`): where GH Archive hours are read.
    pub gharchive_url: String,
    /// `ARCHIVE_MISSING_AFTER` (default 48h, as `90s`, `5m`, `1h`, `2d`): how long after an
    /// hour's end a 404 for it stops being "not published yet" and makes it `missing`.
    pub archive_missing_after: Duration,
    /// `ENRICH_ARCHIVE` (default false): archive push events wait for enrichment like polled
    /// ones; otherwise they are enriched from the cache only.
    pub enrich_archive: bool,
    /// `ARCHIVE_QUEUE_URL`: the SQS queue of archive hours (the archive Lambda's own queue).
    pub archive_queue_url: Option<String>,
}

type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(&|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    pub fn from_lookup(get: Lookup<'_>) -> Result<Self, ConfigError> {
        let log_format = match (get("LOG_FORMAT"), get("AWS_LAMBDA_LOG_FORMAT")) {
            (Some(v), _) => log_format("LOG_FORMAT", &v)?,
            (None, Some(v)) => log_format("AWS_LAMBDA_LOG_FORMAT", &v)?,
            (None, None) => LogFormat::Text,
        };
        let raw_payload_store = match get("RAW_PAYLOAD_STORE").as_deref() {
            None | Some("postgres") => RawPayloadStore::Postgres,
            Some("s3") => RawPayloadStore::S3,
            Some(other) => {
                return Err(invalid(
                    "RAW_PAYLOAD_STORE",
                    other,
                    "expected postgres or s3",
                ))
            }
        };
        let raw_payload_bucket = get("RAW_PAYLOAD_BUCKET");
        if raw_payload_store == RawPayloadStore::S3 && raw_payload_bucket.is_none() {
            return Err(ConfigError::Missing("RAW_PAYLOAD_BUCKET"));
        }
        let github_api_url =
            get("GITHUB_API_URL").unwrap_or_else(|| "https://api.github.com".into());
        if !(github_api_url.starts_with("http://") || github_api_url.starts_with("https://")) {
            return Err(invalid(
                "GITHUB_API_URL",
                &github_api_url,
                "expected an http(s) URL",
            ));
        }
        Ok(Self {
            database_url: get("DATABASE_URL").map(SecretString::from),
            database_secret_arn: get("DATABASE_SECRET_ARN"),
            db_endpoint: DbEndpoint {
                host: get("DB_HOST"),
                port: get("DB_PORT"),
                name: get("DB_NAME"),
            },
            github_api_url,
            github_token: get("GITHUB_TOKEN").map(SecretString::from),
            github_token_secret_arn: get("GITHUB_TOKEN_SECRET_ARN"),
            log_format,
            function_name: get("AWS_LAMBDA_FUNCTION_NAME"),
            ingest_reserve: num(get, "INGEST_RESERVE", 20)?,
            enrich_cache_ttl: Duration::from_secs(num(get, "ENRICH_CACHE_TTL_SECS", 86_400)?),
            enrich_max_attempts: num(get, "ENRICH_MAX_ATTEMPTS", 5)?,
            raw_payload_store,
            raw_payload_bucket,
            raw_payload_prefix: get("RAW_PAYLOAD_PREFIX").unwrap_or_else(|| "raw/".into()),
            enrich_queue_url: get("ENRICH_QUEUE_URL"),
            archive_queue_url: get("ARCHIVE_QUEUE_URL"),
            pg_sslmode: get("PGSSLMODE"),
            pg_sslrootcert: get("PGSSLROOTCERT"),
            db_pool_size: match get("DB_POOL_SIZE") {
                None => None,
                Some(v) => match v.trim().parse::<usize>() {
                    Ok(n) if n >= 1 => Some(n),
                    _ => return Err(invalid("DB_POOL_SIZE", &v, "expected a number >= 1")),
                },
            },
            migrate_on_start: boolean(get, "MIGRATE_ON_START", true)?,
            gharchive_url: {
                let u = get("GHARCHIVE_URL").unwrap_or_else(|| "https://data.gharchive.org".into());
                if !(u.starts_with("http://") || u.starts_with("https://")) {
                    return Err(invalid("GHARCHIVE_URL", &u, "expected an http(s) URL"));
                }
                u.trim_end_matches('/').to_owned()
            },
            archive_missing_after: match get("ARCHIVE_MISSING_AFTER") {
                None => Duration::from_secs(48 * 3600),
                Some(v) => crate::check::parse_duration(&v)
                    .ok()
                    .and_then(|d| d.to_std().ok())
                    .ok_or_else(|| {
                        invalid(
                            "ARCHIVE_MISSING_AFTER",
                            &v,
                            "expected a duration such as 48h or 2d",
                        )
                    })?,
            },
            enrich_archive: boolean(get, "ENRICH_ARCHIVE", false)?,
        })
    }

    pub fn require_database_url(&self) -> Result<&str, ConfigError> {
        self.database_url
            .as_ref()
            .map(|u| u.expose_secret())
            .ok_or(ConfigError::Missing("DATABASE_URL"))
    }

    /// libpq's TLS variables as this configuration read them, for [`crate::store::pool_with_env_options`].
    pub fn pg_env(&self, name: &str) -> Option<String> {
        match name {
            "PGSSLMODE" => self.pg_sslmode.clone(),
            "PGSSLROOTCERT" => self.pg_sslrootcert.clone(),
            _ => None,
        }
    }

    /// GitHub's documented limit for this identity, assumed until a response says otherwise.
    pub fn default_rate_limit(&self) -> i32 {
        if self.github_token.is_some() {
            5000
        } else {
            60
        }
    }
}

fn invalid(name: &'static str, value: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        name,
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

fn log_format(name: &'static str, value: &str) -> Result<LogFormat, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "json" => Ok(LogFormat::Json),
        "text" => Ok(LogFormat::Text),
        _ => Err(invalid(name, value, "expected json or text")),
    }
}

fn boolean(get: Lookup<'_>, name: &'static str, default: bool) -> Result<bool, ConfigError> {
    match get(name) {
        None => Ok(default),
        Some(v) => match v.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" => Ok(false),
            _ => Err(invalid(name, &v, "expected true or false")),
        },
    }
}

fn num<T: std::str::FromStr>(
    get: Lookup<'_>,
    name: &'static str,
    default: T,
) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match get(name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|e: T::Err| invalid(name, &v, &e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(&move |k| m.get(k).cloned())
    }

    #[test]
    fn defaults_need_nothing_but_a_database_for_commands_that_use_one() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.github_api_url, "https://api.github.com");
        assert_eq!((c.ingest_reserve, c.enrich_max_attempts), (20, 5));
        assert_eq!(c.default_rate_limit(), 60);
        assert_eq!((c.db_pool_size, c.migrate_on_start), (None, true));
        assert!(matches!(
            c.require_database_url(),
            Err(ConfigError::Missing("DATABASE_URL"))
        ));
    }

    #[test]
    fn debug_output_never_shows_the_database_password_or_the_token() {
        let c = cfg(&[
            ("DATABASE_URL", "postgres://app:hunter2@db:5432/app"),
            ("GITHUB_TOKEN", "ghp_topsecret"),
        ])
        .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("ghp_topsecret"), "{shown}");
        assert_eq!(
            c.require_database_url().unwrap(),
            "postgres://app:hunter2@db:5432/app"
        );
    }

    #[test]
    fn bad_values_name_their_variable() {
        let e = cfg(&[("INGEST_RESERVE", "lots")]).unwrap_err().to_string();
        assert!(e.starts_with("INGEST_RESERVE=\"lots\" is invalid"), "{e}");
        let e = cfg(&[("RAW_PAYLOAD_STORE", "s3")]).unwrap_err().to_string();
        assert_eq!(e, "RAW_PAYLOAD_BUCKET is not set");
    }

    #[test]
    fn pool_size_and_migrations_at_start_are_configurable() {
        let c = cfg(&[("DB_POOL_SIZE", "5"), ("MIGRATE_ON_START", "false")]).unwrap();
        assert_eq!((c.db_pool_size, c.migrate_on_start), (Some(5), false));
        let e = cfg(&[("DB_POOL_SIZE", "0")]).unwrap_err().to_string();
        assert!(e.starts_with("DB_POOL_SIZE=\"0\" is invalid"), "{e}");
        let e = cfg(&[("MIGRATE_ON_START", "maybe")])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("MIGRATE_ON_START=\"maybe\" is invalid"),
            "{e}"
        );
    }

    #[test]
    fn the_token_is_redacted_in_debug_output() {
        let c = cfg(&[("GITHUB_TOKEN", "ghp_supersecretvalue")]).unwrap();
        assert_eq!(
            c.github_token.as_ref().unwrap().expose_secret(),
            "ghp_supersecretvalue"
        );
        assert!(!format!("{c:?}").contains("supersecret"));
        assert_eq!(c.default_rate_limit(), 5000);
    }

    #[test]
    fn the_log_format_follows_log_format_then_lambdas_own_setting() {
        assert_eq!(cfg(&[]).unwrap().log_format, LogFormat::Text);
        let lambda_json = [("AWS_LAMBDA_LOG_FORMAT", "JSON")];
        assert_eq!(cfg(&lambda_json).unwrap().log_format, LogFormat::Json);
        let both = [("AWS_LAMBDA_LOG_FORMAT", "JSON"), ("LOG_FORMAT", "text")];
        assert_eq!(cfg(&both).unwrap().log_format, LogFormat::Text);
        let e = cfg(&[("LOG_FORMAT", "yaml")]).unwrap_err().to_string();
        assert!(e.starts_with("LOG_FORMAT=\"yaml\" is invalid"), "{e}");
    }

    #[test]
    fn secret_arns_and_db_overrides_are_read_with_the_rest() {
        let c = cfg(&[
            ("DATABASE_SECRET_ARN", "arn:db"),
            ("GITHUB_TOKEN_SECRET_ARN", "arn:token"),
            ("DB_HOST", "h"),
            ("DB_PORT", "6432"),
        ])
        .unwrap();
        assert_eq!(c.database_secret_arn.as_deref(), Some("arn:db"));
        assert_eq!(c.github_token_secret_arn.as_deref(), Some("arn:token"));
        assert_eq!(
            c.db_endpoint,
            DbEndpoint {
                host: Some("h".into()),
                port: Some("6432".into()),
                name: None
            }
        );
    }
}
