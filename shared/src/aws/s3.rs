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

/// Parts of a multipart upload of an hour file (S3's smallest part is 5 MiB, but the last).
pub const PART_SIZE: usize = 8 << 20;

fn copy_error<E>(bucket: &str, key: &str, step: &str, e: SdkError<E, HttpResponse>) -> RawStoreError
where
    E: std::error::Error + aws_sdk_s3::error::ProvideErrorMetadata + Send + Sync + 'static,
{
    let retryable = sdk_error_retryable(&e);
    RawStoreError::new(
        format!("{step} s3://{bucket}/{key}"),
        retryable,
        super::SdkFailure::new(e),
    )
}

impl S3Objects {
    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Vec<u8>,
    ) -> Result<aws_sdk_s3::types::CompletedPart, RawStoreError> {
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| copy_error(&self.bucket, key, "UploadPart", e))?;
        Ok(aws_sdk_s3::types::CompletedPart::builder()
            .set_e_tag(out.e_tag)
            .part_number(number)
            .build())
    }

    /// Streams `body` into `key`: one PutObject when it is smaller than `part_size`, else a
    /// multipart upload (at most one part in memory), completed only once the body ended
    /// well and aborted otherwise, so the key never holds part of a body.
    pub async fn put_stream_in_parts(
        &self,
        key: &str,
        mut body: crate::archive::ByteChunks,
        part_size: usize,
    ) -> Result<u64, RawStoreError> {
        use futures::StreamExt;
        let mut buf: Vec<u8> = Vec::with_capacity(part_size);
        let mut total = 0u64;
        let mut upload: Option<(String, Vec<aws_sdk_s3::types::CompletedPart>)> = None;
        let result: Result<(), RawStoreError> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| {
                    RawStoreError::new(
                        format!("copy to s3://{}/{key} (reading the source)", self.bucket),
                        true,
                        e,
                    )
                })?;
                total += chunk.len() as u64;
                buf.extend_from_slice(&chunk);
                if buf.len() >= part_size {
                    if upload.is_none() {
                        let out = self
                            .client
                            .create_multipart_upload()
                            .bucket(&self.bucket)
                            .key(key)
                            .content_type("application/gzip")
                            .send()
                            .await
                            .map_err(|e| {
                                copy_error(&self.bucket, key, "CreateMultipartUpload", e)
                            })?;
                        upload = Some((out.upload_id.unwrap_or_default(), Vec::new()));
                    }
                    let (id, parts) = upload.as_mut().expect("started above");
                    let number = i32::try_from(parts.len() + 1).unwrap_or(i32::MAX);
                    let part = std::mem::replace(&mut buf, Vec::with_capacity(part_size));
                    parts.push(self.upload_part(key, id, number, part).await?);
                }
            }
            Ok(())
        }
        .await;
        let abort = |id: String| async move {
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(id)
                .send()
                .await;
        };
        match (result, upload) {
            (Err(e), Some((id, _))) => {
                abort(id).await;
                Err(e)
            }
            (Err(e), None) => Err(e),
            (Ok(()), None) => {
                self.put(key, buf).await.map_err(RawStoreError::from)?;
                Ok(total)
            }
            (Ok(()), Some((id, mut parts))) => {
                if !buf.is_empty() {
                    let number = i32::try_from(parts.len() + 1).unwrap_or(i32::MAX);
                    match self.upload_part(key, &id, number, buf).await {
                        Ok(p) => parts.push(p),
                        Err(e) => {
                            abort(id).await;
                            return Err(e);
                        }
                    }
                }
                let done = aws_sdk_s3::types::CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build();
                if let Err(e) = self
                    .client
                    .complete_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(&id)
                    .multipart_upload(done)
                    .send()
                    .await
                {
                    let err = copy_error(&self.bucket, key, "CompleteMultipartUpload", e);
                    abort(id).await;
                    return Err(err);
                }
                Ok(total)
            }
        }
    }
}

#[async_trait::async_trait]
impl crate::archive::HourObjects for S3Objects {
    async fn put_stream(
        &self,
        key: &str,
        body: crate::archive::ByteChunks,
    ) -> Result<u64, RawStoreError> {
        self.put_stream_in_parts(key, body, PART_SIZE).await.inspect_err(|e| {
            tracing::warn!(bucket = %self.bucket, key, retryable = e.retryable, error = %e, error_code = "s3_copy_failed", "archive hour not copied");
        })
    }

    async fn get_stream(&self, key: &str) -> Result<crate::archive::ByteChunks, RawStoreError> {
        use futures::StreamExt;
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|source| {
                RawStoreError::from(S3Error::GetObject {
                    bucket: self.bucket.clone(),
                    key: key.to_owned(),
                    source: Box::new(source),
                })
            })?;
        let chunks = futures::stream::unfold(out.body, |mut body| async move {
            body.next()
                .await
                .map(|r| (r.map_err(std::io::Error::other), body))
        });
        Ok(chunks.boxed())
    }
}
