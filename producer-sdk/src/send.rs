//! Delivering one batch: encode once, send, and retry with backoff until
//! the gateway says OK, says no for good, or time runs out. Each batch ends
//! with every one of its events counted as sent or failed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tlake_proto::codec::{PreEncoded, SEND_LOGS_PATH};
use tlake_proto::v1::{Resource, SendLogsResponse};
use tokio::sync::watch;
use tonic::codec::CompressionEncoding;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use tonic::{Request, Status};

use crate::encode::EncodedBatch;
use crate::error::Error;
use crate::event::Event;

/// The gateway's default per-event limit (`limits.max_event_bytes`).
pub const MAX_EVENT_BYTES: usize = 256 << 10;
/// The gateway's default per-request limit (`limits.max_request_bytes`).
pub const MAX_REQUEST_BYTES: usize = 8 << 20;
/// The gateway's default event count limit (`limits.max_events_per_request`).
pub const MAX_EVENTS_PER_REQUEST: usize = 10_000;

/// How failed requests are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Wait before the first retry; doubles with each further attempt.
    pub initial_backoff: Duration,
    /// Upper bound of one wait (before jitter).
    pub max_backoff: Duration,
    /// Stop retrying a batch after this long and count it failed. `None`
    /// retries until `shutdown()` runs out of time.
    pub give_up_after: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            give_up_after: Some(Duration::from_secs(300)),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `attempt` (1-based): exponential, with
    /// "equal jitter" (half fixed, half random) so that many clients cut off
    /// by the same outage do not come back in lockstep, and never shorter
    /// than the gateway's `retry-after-ms` hint.
    pub(crate) fn backoff(&self, attempt: u32, hint: Option<Duration>) -> Duration {
        let exp = self
            .initial_backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
            .min(self.max_backoff);
        let half = exp / 2;
        let jitter = half.mul_f64(fastrand::f64());
        let wait = half + jitter;
        // A hint far beyond our own bound is more likely a misconfigured
        // gateway than a real need; cap it so the client keeps probing.
        match hint {
            Some(h) => wait.max(h.min(self.max_backoff.max(Duration::from_secs(60)))),
            None => wait,
        }
    }
}

/// Counters every delivery updates.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) sent: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) requests: AtomicU64,
}

/// A final failure of some events, as reported to the application.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryFailure {
    /// How many events failed.
    pub events: u64,
    /// Why.
    pub error: Error,
}

/// Called on the background task for every failure (keep it short).
pub(crate) type FailureHook = Arc<dyn Fn(&DeliveryFailure) + Send + Sync>;

/// Everything a delivery needs; shared by all batches.
pub(crate) struct Sender {
    pub(crate) channel: Channel,
    pub(crate) compression: Option<CompressionEncoding>,
    pub(crate) authorization: Option<MetadataValue<Ascii>>,
    pub(crate) stream: String,
    pub(crate) resource: Resource,
    pub(crate) retry: RetryPolicy,
    pub(crate) request_timeout: Duration,
    pub(crate) max_event_bytes: usize,
    pub(crate) max_request_bytes: usize,
    pub(crate) counters: Arc<Counters>,
    pub(crate) last_error: Arc<std::sync::Mutex<Option<Error>>>,
    pub(crate) on_failure: Option<FailureHook>,
    pub(crate) written: Arc<Written>,
}

/// Per Kafka partition, the highest offset any acknowledged request of this
/// client was written at (the gateway's `written` answer):
/// `flush_until_queryable` waits until the table is committed past them.
#[derive(Debug, Default)]
pub(crate) struct Written(std::sync::Mutex<std::collections::BTreeMap<i32, i64>>);

impl Written {
    fn record(&self, positions: &[tlake_proto::v1::Position]) {
        let mut highest = self.0.lock().unwrap_or_else(|p| p.into_inner());
        tlake_proto::positions::fold_highest(
            &mut highest,
            positions.iter().map(|p| (p.partition, p.offset)),
        );
    }

    /// The positions recorded so far.
    pub(crate) fn positions(&self) -> Vec<tlake_proto::v1::Position> {
        let highest = self.0.lock().unwrap_or_else(|p| p.into_inner());
        highest
            .iter()
            .map(|(&partition, &offset)| tlake_proto::v1::Position { partition, offset })
            .collect()
    }
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("stream", &self.stream)
            .field("compression", &self.compression)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl Sender {
    /// Delivers `events`, resolving each to sent or failed. `give_up`
    /// turning true (shutdown deadline) ends retrying at once.
    pub(crate) async fn deliver(&self, events: Vec<Event>, mut give_up: watch::Receiver<bool>) {
        let (batch, oversized) =
            EncodedBatch::new(&self.stream, &self.resource, events, self.max_event_bytes);
        for big in oversized {
            // Alone it can never be accepted; sending it would fail the
            // whole batch with it.
            self.fail(
                1,
                Error::EventTooLarge {
                    id: big.id,
                    size: big.size,
                    limit: self.max_event_bytes,
                },
            );
        }
        // Runs of events still to send, split further when the gateway
        // answers OUT_OF_RANGE (its limits may be lower than ours).
        let mut parts = vec![(0, batch.len())];
        while let Some((from, to)) = parts.pop() {
            let count = to - from;
            if count == 0 {
                continue;
            }
            if batch.request_len(from, to) > self.max_request_bytes && count > 1 {
                parts.extend(halves(from, to));
                continue;
            }
            match self
                .send_with_retries(batch.request(from, to), count, &mut give_up)
                .await
            {
                Ok(()) => {
                    self.counters
                        .sent
                        .fetch_add(count as u64, Ordering::Relaxed);
                }
                Err(Error::OutOfRange { .. }) if count > 1 => parts.extend(halves(from, to)),
                Err(err) => self.fail(count as u64, err),
            }
        }
    }

    async fn send_with_retries(
        &self,
        body: Bytes,
        events: usize,
        give_up: &mut watch::Receiver<bool>,
    ) -> Result<(), Error> {
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let err = tokio::select! {
                biased;
                _ = give_up.wait_for(|g| *g) => return Err(Error::ShutdownTimeout),
                result = self.send_once(body.clone()) => match result {
                    Ok(answer) => {
                        self.written.record(&answer.written);
                        return Ok(());
                    }
                    Err(err) => err,
                },
            };
            if !err.retryable() {
                return Err(err);
            }
            let hint = match &err {
                Error::Unavailable { retry_after, .. } => *retry_after,
                _ => None,
            };
            let wait = self.retry.backoff(attempt, hint);
            if let Some(limit) = self.retry.give_up_after
                && started.elapsed() + wait > limit
            {
                return Err(Error::GaveUp {
                    attempts: attempt,
                    elapsed: started.elapsed(),
                    last: Box::new(err),
                });
            }
            tracing::debug!(target: "tlake_producer_sdk", attempt, ?wait, %err, "retrying a batch");
            self.counters
                .retried
                .fetch_add(events as u64, Ordering::Relaxed);
            self.record_error(&err);
            tokio::select! {
                biased;
                _ = give_up.wait_for(|g| *g) => return Err(Error::ShutdownTimeout),
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn send_once(&self, body: Bytes) -> Result<SendLogsResponse, Error> {
        let mut grpc =
            tonic::client::Grpc::new(self.channel.clone()).max_encoding_message_size(usize::MAX);
        if let Some(encoding) = self.compression {
            grpc = grpc.send_compressed(encoding);
        }
        let mut request = Request::new(body);
        request.set_timeout(self.request_timeout);
        if let Some(token) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
        }
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let call = async {
            grpc.ready()
                .await
                .map_err(|e| Error::from_status(&Status::from_error(e.into())))?;
            grpc.unary(
                request,
                http::uri::PathAndQuery::from_static(SEND_LOGS_PATH),
                PreEncoded::<SendLogsResponse>::default(),
            )
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| Error::from_status(&status))
        };
        // The client-side bound: a request that outlives it has an unknown
        // outcome, which is retryable (same ids, duplicates are removed).
        match tokio::time::timeout(self.request_timeout + Duration::from_secs(1), call).await {
            Ok(result) => result,
            Err(_) => Err(Error::Unavailable {
                code: "DeadlineExceeded".into(),
                message: format!("no answer within {:?}", self.request_timeout),
                retry_after: None,
            }),
        }
    }

    fn record_error(&self, err: &Error) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(err.clone());
    }

    fn fail(&self, events: u64, error: Error) {
        tracing::warn!(target: "tlake_producer_sdk", events, %error, "events not delivered");
        self.counters.failed.fetch_add(events, Ordering::Relaxed);
        self.record_error(&error);
        if let Some(hook) = &self.on_failure {
            hook(&DeliveryFailure { events, error });
        }
    }
}

fn halves(from: usize, to: usize) -> [(usize, usize); 2] {
    let mid = from + (to - from) / 2;
    [(from, mid), (mid, to)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_jittered_and_capped() {
        let p = RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            give_up_after: None,
        };
        for _ in 0..100 {
            let first = p.backoff(1, None);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            let third = p.backoff(3, None);
            assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400));
            let late = p.backoff(30, None);
            assert!(late >= Duration::from_secs(1) && late <= Duration::from_secs(2));
        }
        let waits: std::collections::HashSet<_> = (0..20).map(|_| p.backoff(5, None)).collect();
        assert!(waits.len() > 1, "jitter varies the wait");
    }

    #[test]
    fn retry_after_hint_is_a_floor() {
        let p = RetryPolicy::default();
        let hinted = p.backoff(1, Some(Duration::from_millis(750)));
        assert!(hinted >= Duration::from_millis(750));
        let absurd = p.backoff(1, Some(Duration::from_secs(3600)));
        assert!(absurd <= Duration::from_secs(60));
    }

    #[test]
    fn halves_split_evenly() {
        assert_eq!(halves(10, 15), [(10, 12), (12, 15)]);
        assert_eq!(halves(0, 2), [(0, 1), (1, 2)]);
    }
}
