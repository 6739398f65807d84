//! Raw payloads in S3: one gzip NDJSON object per fetched page (see [`crate::raw`]), written
//! before the page's transaction, read back with `GetObject`.

use super::{sdk_error_retryable, sdk_error_text};
use crate::raw::{ObjectReader, ObjectWriter, RawStoreError};
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::operation::get_object::GetObjectError;
use aws_sdk_s3::operation::put_object::PutObjectError;
use aws_sdk_s3::primitives::ByteStream;

/// A bucket, as an object store.
#[derive(Clone, Debug)]
pub struct S3Objects {
    pub client: aws_sdk_s3::Client,
    pub bucket: String,
}

#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    #[error("PutObject s3://{bucket}/{key}: {}", sdk_error_text(&**source))]
    PutObject {
        bucket: String,
        key: String,
        #[source]
        source: Box<SdkError<PutObjectError, HttpResponse>>,
    },
    #[error("GetObject s3://{bucket}/{key}: {}", sdk_error_text(&**source))]
    GetObject {
        bucket: String,
        key: String,
        #[source]
        source: Box<SdkError<GetObjectError, HttpResponse>>,
    },
    #[error("GetObject s3://{bucket}/{key}: reading the body: {source}")]
    ReadBody {
        bucket: String,
        key: String,
        #[source]
        source: aws_sdk_s3::primitives::ByteStreamError,
    },
}

impl S3Error {
    pub fn is_retryable(&self) -> bool {
        match self {
            S3Error::PutObject { source, .. } => sdk_error_retryable(&**source),
            S3Error::GetObject { source, .. } => sdk_error_retryable(&**source),
            S3Error::ReadBody { .. } => true,
        }
    }
}

impl From<S3Error> for RawStoreError {
    fn from(e: S3Error) -> Self {
        RawStoreError::new("s3", e.is_retryable(), e)
    }
}

impl S3Objects {
    pub async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), S3Error> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            // A .json.gz file, as GH Archive serves them (no Content-Encoding, so clients
            // download the gzip bytes as they are).
            .content_type("application/gzip")
            .body(ByteStream::from(body))
            .send()
            .await
            .map(|_| ())
            .map_err(|source| S3Error::PutObject {
                bucket: self.bucket.clone(),
                key: key.to_owned(),
                source: Box::new(source),
            })
    }

    pub async fn get(&self, key: &str) -> Result<Vec<u8>, S3Error> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|source| S3Error::GetObject {
                bucket: self.bucket.clone(),
                key: key.to_owned(),
                source: Box::new(source),
            })?;
        let body = out
            .body
            .collect()
            .await
            .map_err(|source| S3Error::ReadBody {
                bucket: self.bucket.clone(),
                key: key.to_owned(),
                source,
            })?;
        Ok(body.into_bytes().to_vec())
    }
}

#[async_trait::async_trait]
impl ObjectWriter for S3Objects {
    async fn put_object(&self, key: &str, body: Vec<u8>) -> Result<(), RawStoreError> {
        let bytes = body.len();
        self.put(key, body).await.map_err(|e| {
            tracing::warn!(bucket = %self.bucket, key, bytes, retryable = e.is_retryable(), error = %e, error_code = "s3_put_failed", "raw page not stored");
            e.into()
        })
    }
}

#[async_trait::async_trait]
impl ObjectReader for S3Objects {
    async fn get_object(&self, key: &str) -> Result<Vec<u8>, RawStoreError> {
        self.get(key).await.map_err(Into::into)
    }
}
