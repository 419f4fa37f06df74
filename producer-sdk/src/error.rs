//! The SDK's one error type. Every variant says whether trying again can
//! help ([`Error::retryable`]); gRPC statuses become an `Error` in exactly
//! one place ([`Error::from_status`]).

use std::time::Duration;

use tonic::{Code, Status};

/// Metadata key the gateway uses for how long to wait before retrying.
pub const RETRY_AFTER_MS: &str = "retry-after-ms";

/// Everything that can go wrong between `log()` and a durable event.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A builder setting is out of range or malformed.
    #[error("invalid configuration: {key}: {reason}")]
    Config {
        /// The builder method or environment variable at fault.
        key: &'static str,
        /// What is wrong and what would be accepted.
        reason: String,
    },
    /// The background runtime could not be started.
    #[error("cannot start the SDK's background thread: {0}")]
    Start(String),
    /// The queue was full and the overflow policy is `Drop`: the event was
    /// dropped (and counted in `Stats::dropped`).
    #[error("queue full ({capacity} events or {max_bytes} bytes); event dropped")]
    QueueFull {
        /// Configured queue capacity in events.
        capacity: usize,
        /// Configured queue capacity in bytes.
        max_bytes: usize,
    },
    /// The queue stayed full for the whole `Block` timeout: the event was
    /// dropped (and counted in `Stats::dropped`).
    #[error("queue stayed full for {waited:?}; event dropped")]
    BlockTimeout {
        /// How long the caller waited.
        waited: Duration,
    },
    /// The client has been shut down; the event was dropped.
    #[error("client is shut down")]
    Closed,
    /// One event is larger than the gateway accepts; it was not sent.
    #[error("event {id} is {size} bytes encoded; the limit is {limit} bytes per event")]
    EventTooLarge {
        /// The event's id.
        id: uuid::Uuid,
        /// Its encoded size.
        size: usize,
        /// The per-event limit.
        limit: usize,
    },
    /// The gateway (or the network) is unavailable or overloaded: the
    /// request is retried with backoff. Only final when retries run out.
    #[error("gateway unavailable ({code}): {message}")]
    Unavailable {
        /// gRPC status code name, e.g. `Unavailable`, `ResourceExhausted`.
        code: String,
        /// Status message or transport error.
        message: String,
        /// The gateway's hint how long to wait before retrying.
        retry_after: Option<Duration>,
    },
    /// The gateway refused the bearer token (or none was sent). Not retried.
    #[error("gateway refused the credentials: {message}")]
    Unauthenticated {
        /// Status message.
        message: String,
    },
    /// The gateway refused the request as malformed (e.g. unknown stream). Not retried.
    #[error("gateway refused the request as invalid: {message}")]
    InvalidArgument {
        /// Status message.
        message: String,
    },
    /// The request or an event exceeds the gateway's limits. Not retried
    /// as is: the SDK splits the batch, down to single events.
    #[error("gateway refused the request as too large: {message}")]
    OutOfRange {
        /// Status message.
        message: String,
    },
    /// Any other final gRPC status. Not retried.
    #[error("gateway refused the request ({code}): {message}")]
    Rejected {
        /// gRPC status code name.
        code: String,
        /// Status message.
        message: String,
    },
    /// Retrying took longer than the configured give-up time.
    #[error("gave up after {attempts} attempts over {elapsed:?}; last error: {last}")]
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// Time spent.
        elapsed: Duration,
        /// The last attempt's error.
        last: Box<Error>,
    },
    /// `shutdown()` ran out of time before these events were confirmed.
    /// Whether the last attempt reached Kafka is unknown.
    #[error("shutdown timed out before the events were confirmed")]
    ShutdownTimeout,
    /// `flush_until_queryable()` delivered everything, but the stream's
    /// table did not commit it within the timeout (the compactor is slow
    /// or stopped). The events are safe in Kafka and will land.
    #[error("delivered, but not committed to the table within {waited:?}")]
    NotYetQueryable {
        /// How long it waited for the commit.
        waited: Duration,
    },
    /// `flush()` finished, but some events it waited for were not delivered.
    #[error("{failed} events were not delivered; last error: {last}")]
    Undelivered {
        /// Events that failed while flushing.
        failed: u64,
        /// The most recent delivery error.
        last: Box<Error>,
    },
}

impl Error {
    /// Whether trying the same thing again later may succeed.
    ///
    /// `QueueFull` and `BlockTimeout` are retryable (the queue drains);
    /// `Unavailable` is what the SDK itself retries. Everything else needs
    /// a change (configuration, credentials, a smaller event) first.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            Self::QueueFull { .. }
                | Self::BlockTimeout { .. }
                | Self::Unavailable { .. }
                | Self::NotYetQueryable { .. }
        )
    }

    /// Maps a gRPC status to the SDK's error: UNAVAILABLE,
    /// RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED and ABORTED are retryable, and
    /// so is any failure raised on the client side (connection reset, a
    /// stream torn down mid-call): the request may or may not have arrived,
    /// and resending it with the same event ids is always safe.
    pub(crate) fn from_status(status: &Status) -> Self {
        let message = status.message().to_owned();
        let code = status.code();
        match code {
            Code::Unavailable
            | Code::ResourceExhausted
            | Code::DeadlineExceeded
            | Code::Aborted => Self::unavailable(status),
            Code::Unauthenticated => Self::Unauthenticated { message },
            Code::InvalidArgument => Self::InvalidArgument { message },
            Code::OutOfRange => Self::OutOfRange { message },
            // A status carrying a source error was made by the client from a
            // transport failure, not sent by the gateway.
            _ if std::error::Error::source(status).is_some() => Self::unavailable(status),
            _ => Self::Rejected {
                code: format!("{code:?}"),
                message,
            },
        }
    }

    fn unavailable(status: &Status) -> Self {
        let retry_after = status
            .metadata()
            .get(RETRY_AFTER_MS)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_millis);
        let mut message = status.message().to_owned();
        if let Some(source) = std::error::Error::source(status) {
            message = format!("{message}: {source}");
        }
        Self::Unavailable {
            code: format!("{:?}", status.code()),
            message,
            retry_after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_retry_after(mut status: Status, ms: &str) -> Status {
        status
            .metadata_mut()
            .insert(RETRY_AFTER_MS, ms.parse().expect("ascii"));
        status
    }

    #[test]
    fn retryable_statuses() {
        let e = Error::from_status(&with_retry_after(Status::unavailable("kafka"), "500"));
        assert!(e.retryable());
        assert!(matches!(
            e,
            Error::Unavailable { retry_after: Some(d), .. } if d == Duration::from_millis(500)
        ));
        let e = Error::from_status(&with_retry_after(Status::resource_exhausted("busy"), "200"));
        assert!(
            matches!(&e, Error::Unavailable { code, retry_after: Some(_), .. } if code == "ResourceExhausted")
        );
        assert!(Error::from_status(&Status::deadline_exceeded("slow")).retryable());
        assert!(Error::from_status(&Status::unavailable("x")).retryable());
    }

    #[test]
    fn final_statuses() {
        let cases = [
            (Status::unauthenticated("token"), "Unauthenticated"),
            (Status::invalid_argument("stream"), "InvalidArgument"),
            (Status::out_of_range("big"), "OutOfRange"),
            (Status::permission_denied("no"), "Rejected"),
            (Status::unknown("server said so"), "Rejected"),
        ];
        for (status, kind) in cases {
            let e = Error::from_status(&status);
            assert!(!e.retryable(), "{e}");
            assert!(format!("{e:?}").starts_with(kind), "{e:?}");
        }
    }

    #[test]
    fn client_side_transport_failures_are_retryable() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let status = Status::from_error(Box::new(io));
        assert_eq!(status.code(), Code::Unknown);
        let e = Error::from_status(&status);
        assert!(e.retryable(), "{e:?}");
        assert!(e.to_string().contains("reset by peer"), "{e}");
    }

    #[test]
    fn a_garbled_hint_is_ignored() {
        let e = Error::from_status(&with_retry_after(Status::unavailable("x"), "soon"));
        assert!(matches!(
            e,
            Error::Unavailable {
                retry_after: None,
                ..
            }
        ));
    }

    #[test]
    fn local_errors() {
        assert!(
            Error::QueueFull {
                capacity: 1,
                max_bytes: 1
            }
            .retryable()
        );
        assert!(!Error::Closed.retryable());
        assert!(!Error::ShutdownTimeout.retryable());
    }
}
