//! The push-queue port: the hand-off of new push ids to enrichment (an SQS queue in AWS,
//! see `crate::aws::sqs`), and an in-memory fake.

use crate::BoxError;
use std::sync::Arc;

/// Why the queue did not take a push id. Cloned for every id of a failed call, so the cause
/// is shared.
#[derive(Debug, Clone)]
pub struct QueueError {
    /// The queue (`sqs`, …).
    pub context: String,
    /// Sending the same id again later can succeed (throttling, a 5xx, a network error).
    pub retryable: bool,
    pub source: Arc<dyn std::error::Error + Send + Sync>,
}

impl std::fmt::Display for QueueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "push queue: {}: {}", self.context, self.source)
    }
}

/// Equal when they say the same: same queue, same decision, same cause text.
impl PartialEq for QueueError {
    fn eq(&self, other: &Self) -> bool {
        self.context == other.context
            && self.retryable == other.retryable
            && self.source.to_string() == other.source.to_string()
    }
}

impl Eq for QueueError {}

// By hand: the source is the error inside the `Arc` (so callers can downcast it), not the
// `Arc` itself.
impl std::error::Error for QueueError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

impl QueueError {
    pub fn new(context: impl Into<String>, retryable: bool, source: impl Into<BoxError>) -> Self {
        Self {
            context: context.into(),
            retryable,
            source: Arc::from(source.into()),
        }
    }
}

/// What a [`PushQueue::send`] did: the ids the queue accepted and, for the rest, why not.
/// Only `sent` ids may be marked as enqueued.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendReport {
    pub sent: Vec<i64>,
    pub failed: Vec<(i64, QueueError)>,
}

impl SendReport {
    /// Every id failed for the same reason (e.g. the call itself failed).
    pub fn all_failed(ids: &[i64], error: &QueueError) -> Self {
        Self {
            sent: Vec::new(),
            failed: ids.iter().map(|&id| (id, error.clone())).collect(),
        }
    }

    pub fn merge(&mut self, other: SendReport) {
        self.sent.extend(other.sent);
        self.failed.extend(other.failed);
    }

    /// The first failure, for a log line or an error.
    pub fn first_error(&self) -> Option<&QueueError> {
        self.failed.first().map(|(_, e)| e)
    }
}

/// The hand-off of new push ids to enrichment (an SQS queue in AWS).
#[async_trait::async_trait]
pub trait PushQueue: Send + Sync {
    /// Sends each id once. A partial failure is not an error of the whole call: the report
    /// says which ids went out.
    async fn send(&self, push_ids: &[i64]) -> SendReport;

    /// Sends each id once, to be delivered after its delay (at most
    /// [`MAX_DELIVERY_DELAY`]). A queue without delivery delays delivers at once: a message
    /// for a row not yet due is acked by enrichment and the row goes back to the outbox.
    async fn send_delayed(&self, items: &[(i64, std::time::Duration)]) -> SendReport {
        let ids: Vec<i64> = items.iter().map(|(id, _)| *id).collect();
        self.send(&ids).await
    }
}

/// The longest delivery delay a queue message can have (SQS `DelaySeconds`: 15 minutes).
pub const MAX_DELIVERY_DELAY: std::time::Duration = std::time::Duration::from_secs(900);

#[cfg(any(test, feature = "mocks"))]
pub use fake::MemoryQueue;

#[cfg(any(test, feature = "mocks"))]
mod fake {
    use super::{PushQueue, QueueError, SendReport};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Mutex;

    /// An in-memory [`PushQueue`] for tests: keeps every id it accepted, in order, and can be
    /// told to refuse everything or particular ids.
    #[derive(Default)]
    pub struct MemoryQueue {
        sent: Mutex<Vec<i64>>,
        refuse_all: AtomicBool,
        refuse: Mutex<Vec<i64>>,
        calls: AtomicUsize,
    }

    impl MemoryQueue {
        pub fn new() -> Self {
            Self::default()
        }
        /// Every id accepted so far, in order (duplicates included).
        pub fn sent(&self) -> Vec<i64> {
            self.sent.lock().expect("queue lock").clone()
        }
        /// How many times `send` was called.
        pub fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
        /// From now on refuse every id (`true`) or accept again (`false`).
        pub fn refuse_all(&self, refuse: bool) {
            self.refuse_all.store(refuse, Ordering::SeqCst);
        }
        /// Refuse these ids from now on.
        pub fn refuse_ids(&self, ids: &[i64]) {
            self.refuse
                .lock()
                .expect("queue lock")
                .extend_from_slice(ids);
        }
    }

    #[async_trait::async_trait]
    impl PushQueue for MemoryQueue {
        async fn send(&self, push_ids: &[i64]) -> SendReport {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let refused = QueueError::new("memory queue", true, "refused");
            if self.refuse_all.load(Ordering::SeqCst) {
                return SendReport::all_failed(push_ids, &refused);
            }
            let refuse = self.refuse.lock().expect("queue lock").clone();
            let mut report = SendReport::default();
            let mut sent = self.sent.lock().expect("queue lock");
            for &id in push_ids {
                if refuse.contains(&id) {
                    report.failed.push((id, refused.clone()));
                } else {
                    sent.push(id);
                    report.sent.push(id);
                }
            }
            report
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_memory_queue_reports_which_ids_it_took() {
        let q = MemoryQueue::new();
        q.refuse_ids(&[2]);
        let r = q.send(&[1, 2, 3]).await;
        assert_eq!(r.sent, vec![1, 3]);
        assert_eq!(
            r.failed.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            vec![2]
        );
        q.refuse_all(true);
        assert_eq!(q.send(&[4]).await.sent, Vec::<i64>::new());
        assert_eq!(q.sent(), vec![1, 3]);
        assert_eq!(q.calls(), 2);
    }
}
