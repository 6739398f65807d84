//! LocalStack for the AWS tests: S3 and SQS on 127.0.0.1:4566 (or `AWS_ENDPOINT_URL`), a new
//! bucket and queue per test, and bounded waits. Included by the `lambda_*` / `aws_*` tests
//! with `#[path = "aws_support.rs"] mod aws_support;`.
//!
//! Without LocalStack these tests fail (they do not skip): `scripts/test.sh` starts it.

#![allow(dead_code)]

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_s3::config::{Credentials, Region};
use aws_sdk_sqs::types::{Message, QueueAttributeName};
use std::collections::HashMap;
use std::time::Duration;

pub struct Aws {
    pub endpoint: String,
    pub sdk: SdkConfig,
    pub s3: aws_sdk_s3::Client,
    pub sqs: aws_sdk_sqs::Client,
}

pub fn endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| "http://127.0.0.1:4566".into())
}

/// The AWS configuration for an endpoint (LocalStack's credentials and region).
pub async fn sdk_for(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(ghevents_core::aws::http_client())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "localstack"))
        .load()
        .await
}

/// LocalStack, or a failing test that says how to get it.
pub async fn localstack() -> Aws {
    ghevents_tests::init_tracing();
    let endpoint = endpoint();
    let health = format!("{endpoint}/_localstack/health");
    let reachable = tokio::time::timeout(Duration::from_secs(5), http_get(&health)).await;
    match reachable {
        Ok(Ok(body)) if body.contains("\"s3\"") && body.contains("\"sqs\"") => {}
        other => panic!(
            "LocalStack (S3, SQS) is not reachable at {endpoint} ({other:?}): run the tests with scripts/test.sh, which starts it, \
             or start it with scripts/localstack.sh start"
        ),
    }
    let sdk = sdk_for(&endpoint).await;
    Aws {
        s3: ghevents_core::aws::s3_client(&sdk),
        sqs: ghevents_core::aws::sqs_client(&sdk),
        sdk,
        endpoint,
    }
}

async fn http_get(url: &str) -> Result<String, String> {
    // A plain HTTP/1.0 GET over TCP: no extra client needed for one health probe.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").ok_or("not an http URL")?;
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let mut s = tokio::net::TcpStream::connect(host)
        .await
        .map_err(|e| e.to_string())?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out)
        .await
        .map_err(|e| e.to_string())?;
    Ok(out)
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}

impl Aws {
    /// A new, empty bucket.
    pub async fn bucket(&self) -> String {
        let name = unique("ghevents-test");
        self.create_bucket(&name).await;
        name
    }

    pub async fn create_bucket(&self, name: &str) {
        self.s3
            .create_bucket()
            .bucket(name)
            .send()
            .await
            .unwrap_or_else(|e| panic!("create bucket {name}: {e:?}"));
    }

    /// A new, empty standard queue; returns its URL.
    pub async fn queue(&self) -> String {
        let name = unique("ghevents-test");
        self.sqs
            .create_queue()
            .queue_name(&name)
            .attributes(QueueAttributeName::VisibilityTimeout, "120")
            .send()
            .await
            .unwrap_or_else(|e| panic!("create queue {name}: {e:?}"))
            .queue_url
            .expect("queue url")
    }

    /// The URL of a queue that does not exist.
    pub fn missing_queue_url(&self) -> String {
        format!(
            "{}/000000000000/{}",
            self.endpoint,
            unique("ghevents-missing")
        )
    }

    pub async fn keys(&self, bucket: &str) -> Vec<String> {
        let out = self
            .s3
            .list_objects_v2()
            .bucket(bucket)
            .send()
            .await
            .unwrap_or_else(|e| panic!("list {bucket}: {e:?}"));
        let mut keys: Vec<String> = out
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect();
        keys.sort();
        keys
    }

    /// Receives until `expected` messages have arrived (or `within` has passed), then keeps
    /// listening a little longer so that extra (duplicate) messages are caught too. Received
    /// messages stay invisible for the queue's visibility timeout (not deleted).
    pub async fn receive(
        &self,
        queue_url: &str,
        expected: usize,
        within: Duration,
    ) -> Vec<Message> {
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + within;
        let mut quiet_until: Option<tokio::time::Instant> = None;
        loop {
            let now = tokio::time::Instant::now();
            if now >= deadline || quiet_until.is_some_and(|q| now >= q) {
                break;
            }
            let call = self
                .sqs
                .receive_message()
                .queue_url(queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send();
            let out = tokio::time::timeout(Duration::from_secs(10), call)
                .await
                .expect("ReceiveMessage answers within 10 s")
                .unwrap_or_else(|e| panic!("receive from {queue_url}: {e:?}"));
            got.extend(out.messages().iter().cloned());
            if got.len() >= expected && quiet_until.is_none() {
                quiet_until = Some(tokio::time::Instant::now() + Duration::from_millis(1500));
            }
        }
        got
    }

    /// Push id → times received, from message bodies.
    pub fn push_ids(messages: &[Message]) -> HashMap<i64, usize> {
        let mut m = HashMap::new();
        for msg in messages {
            let body = msg.body().unwrap_or_default();
            let id = ghevents_core::aws::sqs::push_id_of(body)
                .unwrap_or_else(|| panic!("message body is not {{\"push_id\": N}}: {body}"));
            *m.entry(id).or_default() += 1;
        }
        m
    }
}
