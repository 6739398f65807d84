//! The enrichment queue in SQS: push ids go out with `SendMessageBatch` (at most 10 per
//! call), one message per id, body `{"push_id": N}`, optionally with a `DelaySeconds` (the
//! outbox sends a deferred row for its due time, at most 15 minutes ahead).

use super::{sdk_error_retryable, sdk_error_text};
use crate::queue::{PushQueue, QueueError, SendReport, MAX_DELIVERY_DELAY};
use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::error::SdkError;
use aws_sdk_sqs::operation::send_message_batch::SendMessageBatchError;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use std::collections::HashMap;
use std::time::Duration;
use tracing::warn;

/// SQS's limit of entries per `SendMessageBatch`.
pub const MAX_BATCH: usize = 10;

/// Why SQS did not take a push id; a [`QueueError`]'s source.
#[derive(Debug, thiserror::Error)]
pub enum SqsError {
    #[error("SendMessageBatch {queue_url}: {}", sdk_error_text(&**source))]
    SendMessageBatch {
        queue_url: String,
        #[source]
        source: Box<SdkError<SendMessageBatchError, HttpResponse>>,
    },
    #[error("SendMessageBatch {queue_url} entry {entry}: {code}: {message}")]
    EntryFailed {
        queue_url: String,
        entry: String,
        code: String,
        message: String,
        sender_fault: bool,
    },
    #[error("SendMessageBatch {queue_url} entry {entry}: neither in Successful nor in Failed")]
    EntryUnanswered { queue_url: String, entry: String },
    #[error("SendMessageBatch {queue_url}: not tried after an earlier batch failed")]
    NotTried { queue_url: String },
}

impl SqsError {
    pub fn is_retryable(&self) -> bool {
        match self {
            SqsError::SendMessageBatch { source, .. } => sdk_error_retryable(&**source),
            // The sender's fault (a bad message) will not get better by itself.
            SqsError::EntryFailed { sender_fault, .. } => !sender_fault,
            SqsError::EntryUnanswered { .. } | SqsError::NotTried { .. } => true,
        }
    }
}

impl From<SqsError> for QueueError {
    fn from(e: SqsError) -> Self {
        QueueError::new("sqs", e.is_retryable(), e)
    }
}

#[derive(Clone, Debug)]
pub struct SqsQueue {
    pub client: aws_sdk_sqs::Client,
    pub queue_url: String,
}

/// The body of a queue message.
pub fn message_body(push_id: i64) -> String {
    serde_json::json!({ "push_id": push_id }).to_string()
}

/// The push id a message body carries, if it is `{"push_id": N}` (other fields ignored).
pub fn push_id_of(body: &str) -> Option<i64> {
    match serde_json::from_str::<serde_json::Value>(body).ok()? {
        serde_json::Value::Object(m) => m.get("push_id")?.as_i64(),
        _ => None,
    }
}

/// `DelaySeconds` for a delivery delay: whole seconds rounded up (a message never arrives
/// before its row is due), at most [`MAX_DELIVERY_DELAY`]; `None` for no delay.
pub fn delay_seconds(delay: Duration) -> Option<i32> {
    let capped = delay.min(MAX_DELIVERY_DELAY);
    let secs = capped.as_secs() + u64::from(capped.subsec_nanos() > 0);
    (secs > 0).then(|| i32::try_from(secs).unwrap_or(900))
}

/// The URL of the queue an ARN names (`arn:aws:sqs:REGION:ACCOUNT:NAME` →
/// `https://sqs.REGION.amazonaws.com/ACCOUNT/NAME`), for calls about a received message
/// (the SQS event carries the ARN, not the URL).
pub fn queue_url_from_arn(arn: &str) -> Option<String> {
    let parts: Vec<&str> = arn.split(':').collect();
    match parts.as_slice() {
        ["arn", partition, "sqs", region, account, name]
            if !region.is_empty() && !account.is_empty() && !name.is_empty() =>
        {
            let domain = if partition.starts_with("aws-cn") {
                "amazonaws.com.cn"
            } else {
                "amazonaws.com"
            };
            Some(format!("https://sqs.{region}.{domain}/{account}/{name}"))
        }
        _ => None,
    }
}

impl SqsQueue {
    async fn send_batch(&self, items: &[(i64, Duration)]) -> SendReport {
        let ids: Vec<i64> = items.iter().map(|(id, _)| *id).collect();
        let ids = ids.as_slice();
        let entries: Vec<SendMessageBatchRequestEntry> = items
            .iter()
            .enumerate()
            .map(|(i, (id, delay))| {
                let mut entry = SendMessageBatchRequestEntry::builder()
                    // Unique within the batch (an id may appear twice in a caller's list).
                    .id(format!("m{i}"))
                    .message_body(message_body(*id));
                if let Some(secs) = delay_seconds(*delay) {
                    entry = entry.delay_seconds(secs);
                }
                entry.build().expect("id and body are set")
            })
            .collect();
        let out = match self
            .client
            .send_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
        {
            Ok(out) => out,
            Err(source) => {
                let err = QueueError::from(SqsError::SendMessageBatch {
                    queue_url: self.queue_url.clone(),
                    source: Box::new(source),
                });
                return SendReport::all_failed(ids, &err);
            }
        };
        let index = |entry_id: &str| {
            entry_id
                .strip_prefix('m')
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|&i| i < ids.len())
        };
        let mut report = SendReport::default();
        let mut answered = vec![false; ids.len()];
        for ok in out.successful() {
            if let Some(i) = index(ok.id()) {
                answered[i] = true;
                report.sent.push(ids[i]);
            }
        }
        let mut reasons: HashMap<usize, QueueError> = HashMap::new();
        for failed in out.failed() {
            if let Some(i) = index(failed.id()) {
                answered[i] = true;
                reasons.insert(
                    i,
                    QueueError::from(SqsError::EntryFailed {
                        queue_url: self.queue_url.clone(),
                        entry: failed.id().to_owned(),
                        code: failed.code().to_owned(),
                        message: failed.message().unwrap_or("").to_owned(),
                        sender_fault: failed.sender_fault(),
                    }),
                );
            }
        }
        for (i, id) in ids.iter().enumerate() {
            if let Some(e) = reasons.remove(&i) {
                report.failed.push((*id, e));
            } else if !answered[i] {
                report.failed.push((
                    *id,
                    QueueError::from(SqsError::EntryUnanswered {
                        queue_url: self.queue_url.clone(),
                        entry: format!("m{i}"),
                    }),
                ));
            }
        }
        report
    }
}

#[async_trait::async_trait]
impl PushQueue for SqsQueue {
    async fn send(&self, push_ids: &[i64]) -> SendReport {
        let items: Vec<(i64, Duration)> = push_ids.iter().map(|id| (*id, Duration::ZERO)).collect();
        self.send_delayed(&items).await
    }

    async fn send_delayed(&self, items: &[(i64, Duration)]) -> SendReport {
        let mut report = SendReport::default();
        let mut chunks = items.chunks(MAX_BATCH);
        for chunk in chunks.by_ref() {
            let r = self.send_batch(chunk).await;
            let whole_call_failed = r.sent.is_empty() && r.failed.len() == chunk.len();
            report.merge(r);
            if whole_call_failed {
                break;
            }
        }
        // After a call failed outright (the SDK's retries included), the rest is not tried:
        // it waits in the outbox for the next flush.
        let rest: Vec<i64> = chunks.flatten().map(|(id, _)| *id).collect();
        if !rest.is_empty() {
            let err = report.first_error().cloned().unwrap_or_else(|| {
                QueueError::from(SqsError::NotTried {
                    queue_url: self.queue_url.clone(),
                })
            });
            report.merge(SendReport::all_failed(&rest, &err));
        }
        if let Some(e) = report.first_error() {
            warn!(queue_url = %self.queue_url, sent = report.sent.len(), failed = report.failed.len(), retryable = e.retryable, error = %e, error_code = "sqs_send_failed", "push ids not sent");
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_carry_the_push_id_and_poison_is_recognized() {
        assert_eq!(message_body(42), r#"{"push_id":42}"#);
        assert_eq!(push_id_of(&message_body(42)), Some(42));
        assert_eq!(push_id_of(r#"{"push_id": 7, "extra": true}"#), Some(7));
        for poison in [
            "",
            "not json",
            "{}",
            r#"{"push_id":"7"}"#,
            r#"{"push_id":1.5}"#,
            "[1]",
        ] {
            assert_eq!(push_id_of(poison), None, "{poison}");
        }
    }

    #[test]
    fn delays_round_up_to_whole_seconds_and_stop_at_fifteen_minutes() {
        assert_eq!(delay_seconds(Duration::ZERO), None);
        assert_eq!(delay_seconds(Duration::from_millis(1)), Some(1));
        assert_eq!(delay_seconds(Duration::from_millis(30_500)), Some(31));
        assert_eq!(delay_seconds(Duration::from_secs(900)), Some(900));
        assert_eq!(delay_seconds(Duration::from_secs(86_400)), Some(900));
    }

    #[test]
    fn queue_urls_are_derived_from_arns() {
        assert_eq!(
            queue_url_from_arn("arn:aws:sqs:us-east-1:123456789012:ghevents-EnrichQueue-X")
                .as_deref(),
            Some("https://sqs.us-east-1.amazonaws.com/123456789012/ghevents-EnrichQueue-X")
        );
        assert_eq!(queue_url_from_arn("arn:aws:s3:::bucket"), None);
        assert_eq!(queue_url_from_arn("nonsense"), None);
    }

    #[test]
    fn a_queue_error_keeps_its_cause_and_whether_to_retry() {
        let entry = |sender_fault| {
            QueueError::from(SqsError::EntryFailed {
                queue_url: "https://sqs.example/1/q".into(),
                entry: "m0".into(),
                code: "InvalidParameterValue".into(),
                message: "bad body".into(),
                sender_fault,
            })
        };
        let e = entry(true);
        assert!(!e.retryable);
        assert!(entry(false).retryable);
        let cause = std::error::Error::source(&e).expect("a source");
        assert!(
            matches!(
                cause.downcast_ref::<SqsError>(),
                Some(SqsError::EntryFailed { code, .. }) if code == "InvalidParameterValue"
            ),
            "{cause:?}"
        );
        assert_eq!(
            e.to_string(),
            "push queue: sqs: SendMessageBatch https://sqs.example/1/q entry m0: InvalidParameterValue: bad body"
        );
    }
}
