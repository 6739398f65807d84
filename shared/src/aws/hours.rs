//! The archive hours queue in SQS: one message per GH Archive hour, body
//! `{"hour":"2015-01-01T00"}`, sent with `SendMessageBatch` (at most 10 per call). The row in
//! `archive_hours` is the truth; a message only says "look at this hour", so sending an hour
//! twice costs one short invocation and nothing else.

use super::sqs::MAX_BATCH;
use super::{sdk_error_retryable, SdkFailure};
use crate::archive::Hour;
use crate::queue::QueueError;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;

/// The body of an hour's message.
pub fn message_body(hour: Hour) -> String {
    serde_json::json!({ "hour": hour }).to_string()
}

/// Why a message body is not an hour.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("message body is not {{\"hour\":\"YYYY-MM-DDTHH\"}}: {reason}")]
pub struct BodyError {
    pub reason: String,
}

/// The hour a message body names: `{"hour": "2015-01-01T00"}` (other fields ignored; any
/// spelling `Hour::parse` accepts).
pub fn hour_of(body: &str) -> Result<Hour, BodyError> {
    let err = |reason: String| BodyError { reason };
    let v: serde_json::Value =
        serde_json::from_str(body).map_err(|e| err(format!("not JSON ({e})")))?;
    let s = v
        .get("hour")
        .ok_or_else(|| err("no \"hour\" field".into()))?
        .as_str()
        .ok_or_else(|| err("\"hour\" is not a string".into()))?;
    Hour::parse(s).map_err(|e| err(e.to_string()))
}

/// What a send did, hour by hour.
#[derive(Debug, Default)]
pub struct HourSendReport {
    pub sent: Vec<Hour>,
    pub failed: Vec<(Hour, QueueError)>,
}

impl HourSendReport {
    pub fn first_error(&self) -> Option<&QueueError> {
        self.failed.first().map(|(_, e)| e)
    }
}

/// Where hours are handed to the archive function.
#[async_trait::async_trait]
pub trait HourQueue: Send + Sync {
    /// Sends one message per hour, in order; reports every hour as sent or failed.
    async fn send_hours(&self, hours: &[Hour]) -> HourSendReport;

    /// Makes a received message visible again at once (its receipt handle), so the hour it
    /// names is taken up again without waiting for the visibility timeout.
    async fn release(&self, receipt_handle: &str) -> Result<(), QueueError>;
}

#[derive(Clone, Debug)]
pub struct SqsHours {
    pub client: aws_sdk_sqs::Client,
    pub queue_url: String,
}

impl SqsHours {
    async fn send_batch(&self, hours: &[Hour]) -> HourSendReport {
        let entries: Vec<SendMessageBatchRequestEntry> = hours
            .iter()
            .enumerate()
            .map(|(i, h)| {
                SendMessageBatchRequestEntry::builder()
                    .id(format!("h{i}"))
                    .message_body(message_body(*h))
                    .build()
                    .expect("id and body are set")
            })
            .collect();
        let context = format!("SendMessageBatch {}", self.queue_url);
        let out = match self
            .client
            .send_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => {
                let retryable = sdk_error_retryable(&e);
                let err = QueueError::new(context, retryable, SdkFailure::new(e));
                return HourSendReport {
                    sent: Vec::new(),
                    failed: hours.iter().map(|h| (*h, err.clone())).collect(),
                };
            }
        };
        let index = |id: &str| {
            id.strip_prefix('h')
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|&i| i < hours.len())
        };
        let mut outcome: Vec<Option<Result<(), QueueError>>> = vec![None; hours.len()];
        for ok in out.successful() {
            if let Some(i) = index(ok.id()) {
                outcome[i] = Some(Ok(()));
            }
        }
        for failed in out.failed() {
            if let Some(i) = index(failed.id()) {
                outcome[i] = Some(Err(QueueError::new(
                    format!("{context} entry {}", failed.id()),
                    !failed.sender_fault(),
                    format!("{}: {}", failed.code(), failed.message().unwrap_or("")),
                )));
            }
        }
        let mut report = HourSendReport::default();
        for (hour, o) in hours.iter().zip(outcome) {
            match o {
                Some(Ok(())) => report.sent.push(*hour),
                Some(Err(e)) => report.failed.push((*hour, e)),
                None => report.failed.push((
                    *hour,
                    QueueError::new(
                        context.clone(),
                        true,
                        "entry neither in Successful nor in Failed",
                    ),
                )),
            }
        }
        report
    }
}

#[async_trait::async_trait]
impl HourQueue for SqsHours {
    async fn send_hours(&self, hours: &[Hour]) -> HourSendReport {
        let mut report = HourSendReport::default();
        for chunk in hours.chunks(MAX_BATCH) {
            let r = self.send_batch(chunk).await;
            report.sent.extend(r.sent);
            report.failed.extend(r.failed);
        }
        if let Some(e) = report.first_error() {
            tracing::warn!(queue_url = %self.queue_url, sent = report.sent.len(), failed = report.failed.len(), retryable = e.retryable, error = %e, error_code = "sqs_send_failed", "archive hours not sent");
        }
        report
    }

    async fn release(&self, receipt_handle: &str) -> Result<(), QueueError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(0)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                let retryable = sdk_error_retryable(&e);
                QueueError::new(
                    format!("ChangeMessageVisibility {}", self.queue_url),
                    retryable,
                    SdkFailure::new(e),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_name_the_hour_and_read_back() {
        let h = Hour::parse("2015-01-01T00").unwrap();
        assert_eq!(message_body(h), r#"{"hour":"2015-01-01T00"}"#);
        assert_eq!(hour_of(&message_body(h)), Ok(h));
        assert_eq!(
            hour_of(r#"{"hour":"2015-01-01-5","extra":1}"#),
            Ok(Hour::parse("2015-01-01T05").unwrap())
        );
    }

    #[test]
    fn bodies_that_are_not_an_hour_say_why() {
        for (body, why) in [
            ("", "not JSON"),
            ("[1]", "no \"hour\""),
            (r#"{"push_id":7}"#, "no \"hour\""),
            (r#"{"hour":7}"#, "not a string"),
            (r#"{"hour":"2015-01-01T24"}"#, "0 to 23"),
        ] {
            let e = hour_of(body).unwrap_err();
            assert!(e.to_string().contains(why), "{body}: {e}");
        }
    }
}
