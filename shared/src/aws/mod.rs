//! AWS adapters and Lambda wiring (cargo feature `aws`): S3 raw payloads, the SQS push queue,
//! Secrets Manager, and what both Lambda functions set up once per container.
//!
//! Every AWS call goes through the SDK's standard retry (3 attempts, backoff): that is the
//! only retry layer for AWS calls, nothing here wraps them again. Endpoints follow the SDK's
//! own settings (`AWS_ENDPOINT_URL`, e.g. LocalStack).

pub mod hours;
pub mod s3;
pub mod secrets;
pub mod sqs;

use crate::config::{Config, LogFormat, RawPayloadStore};
use crate::queue::PushQueue;
use crate::raw::{ObjectRaw, RawStore};
use crate::store::CredentialSource;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use std::sync::Arc;

/// The shared AWS configuration: credentials, region and endpoint from the environment, and
/// the SDK's HTTPS client on rustls with ring (the crypto provider the rest of the workspace
/// uses).
pub async fn sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client())
        .load()
        .await
}

/// The SDK's hyper client with rustls on ring.
pub fn http_client() -> aws_sdk_s3::config::SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

/// An S3 client with path-style addressing (`endpoint/bucket/key`), which works with AWS and
/// with local endpoints alike.
pub fn s3_client(sdk: &SdkConfig) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::config::Builder::from(sdk)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

pub fn sqs_client(sdk: &SdkConfig) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(sdk)
}

/// What a function reads at cold start: the configuration with its secrets resolved, and
/// the AWS configuration.
pub struct LambdaEnv {
    pub config: Config,
    pub sdk: SdkConfig,
    /// When the database URL came from `DATABASE_SECRET_ARN`: that secret, read again when
    /// Postgres refuses the credentials (rotation).
    pub db_credentials: Option<Arc<dyn CredentialSource>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Secrets(#[from] secrets::SecretsError),
}

impl LambdaEnv {
    /// [`Config::from_env`], then [`LambdaEnv::from_config`].
    pub async fn load() -> Result<Self, StartError> {
        Self::from_config(Config::from_env()?).await
    }

    /// The AWS configuration, and `DATABASE_SECRET_ARN` / `GITHUB_TOKEN_SECRET_ARN` resolved
    /// through Secrets Manager (see [`secrets::resolve`]).
    pub async fn from_config(mut config: Config) -> Result<Self, StartError> {
        let sdk = sdk_config().await;
        let client = aws_sdk_secretsmanager::Client::new(&sdk);
        let from_secret = config.database_url.is_none();
        secrets::resolve(&mut config, &client).await?;
        let db_credentials = config
            .database_secret_arn
            .clone()
            .filter(|_| from_secret)
            .map(|arn| {
                Arc::new(secrets::SecretsManagerCredentials { client, arn })
                    as Arc<dyn CredentialSource>
            });
        Ok(Self {
            config,
            sdk,
            db_credentials,
        })
    }

    /// The S3 raw store when `RAW_PAYLOAD_STORE=s3`, else `None` (inline JSONB).
    pub fn raw_store(&self) -> Option<Arc<dyn RawStore>> {
        raw_store(&self.config, &self.sdk)
    }

    /// The SQS queue when `ENRICH_QUEUE_URL` is set.
    pub fn push_queue(&self) -> Option<Arc<dyn PushQueue>> {
        push_queue(&self.config, &self.sdk)
    }
}

pub fn raw_store(config: &Config, sdk: &SdkConfig) -> Option<Arc<dyn RawStore>> {
    match (config.raw_payload_store, &config.raw_payload_bucket) {
        (RawPayloadStore::S3, Some(bucket)) => Some(Arc::new(ObjectRaw::new(
            s3::S3Objects {
                client: s3_client(sdk),
                bucket: bucket.clone(),
            },
            config.raw_payload_prefix.clone(),
        ))),
        _ => None,
    }
}

/// S3 mode: where GH Archive hour files are kept (the raw bucket, under
/// `{RAW_PAYLOAD_PREFIX}archive/`).
pub fn hour_objects(
    config: &Config,
    sdk: &SdkConfig,
) -> Option<Arc<dyn crate::archive::HourObjects>> {
    match (config.raw_payload_store, &config.raw_payload_bucket) {
        (RawPayloadStore::S3, Some(bucket)) => Some(Arc::new(s3::S3Objects {
            client: s3_client(sdk),
            bucket: bucket.clone(),
        })),
        _ => None,
    }
}

pub fn push_queue(config: &Config, sdk: &SdkConfig) -> Option<Arc<dyn PushQueue>> {
    config.enrich_queue_url.as_ref().map(|url| {
        Arc::new(sqs::SqsQueue {
            client: sqs_client(sdk),
            queue_url: url.clone(),
        }) as Arc<dyn PushQueue>
    })
}

/// Logs for Lambda in `format` ([`Config::log_format`]: `LOG_FORMAT`, else
/// `AWS_LAMBDA_LOG_FORMAT`): JSON (one object per line, fields flattened) or text; to stderr,
/// so stdout carries only the metric lines. `RUST_LOG` filters (default `info`).
pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,refinery_core=warn,tokio_postgres=warn,aws_config=warn".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Whether an AWS call that failed (after the SDK's own retries) can succeed later:
/// timeouts, connection failures, throttling and 5xx can; a missing bucket, a denied
/// permission or an invalid request cannot.
pub fn sdk_error_retryable<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> bool {
    match e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(s) => {
            let status = s.raw().status().as_u16();
            status >= 500
                || status == 429
                || matches!(
                    s.err().code(),
                    Some(
                        "Throttling"
                            | "ThrottlingException"
                            | "RequestThrottled"
                            | "SlowDown"
                            | "RequestTimeout"
                            | "ServiceUnavailable"
                            | "InternalError"
                    )
                )
        }
        _ => false,
    }
}

/// An SDK error with its whole cause chain, for messages and logs.
pub fn sdk_error_text<E: std::error::Error + 'static>(e: &SdkError<E, HttpResponse>) -> String {
    aws_sdk_s3::error::DisplayErrorContext(e).to_string()
}

/// An SDK error kept as a source, shown with its whole context (code, message, request id)
/// rather than the SDK's bare "service error".
#[derive(Debug, thiserror::Error)]
#[error("{text}")]
pub struct SdkFailure {
    text: String,
    #[source]
    source: crate::BoxError,
}

impl SdkFailure {
    pub fn new<E>(e: SdkError<E, HttpResponse>) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        Self {
            text: sdk_error_text(&e),
            source: Box::new(e),
        }
    }
}
