//! The gateway's one error type, and the one place it becomes a gRPC status
//! or an OTLP/HTTP status code.
//!
//! Every variant says whether the client should retry: retryable ones map to
//! UNAVAILABLE or RESOURCE_EXHAUSTED (HTTP 503 or 429, with `Retry-After`),
//! everything else is final.

use std::time::Duration;

use tonic::{Code, Status};

/// Metadata key carrying how long a client should wait before retrying.
pub const RETRY_AFTER_MS: &str = "retry-after-ms";

/// Why a request was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The request breaks a field rule (missing id, bad trace id, ...).
    #[error("{0}")]
    InvalidArgument(String),
    /// The request names a stream that is not configured.
    #[error("unknown stream {stream:?}; this gateway accepts: {known}")]
    UnknownStream {
        /// The stream asked for.
        stream: String,
        /// Configured streams, comma separated.
        known: String,
    },
    /// The request or one of its events is larger than the limits allow.
    /// Not retryable: the client must split or shrink it.
    #[error("{0}")]
    TooLarge(String),
    /// An OTLP/HTTP body in a content type or encoding the gateway does not read.
    #[error("{0}")]
    UnsupportedMedia(String),
    /// No or a wrong bearer token.
    #[error("missing or invalid bearer token")]
    Unauthenticated,
    /// The gateway holds as many undelivered bytes as it may; retry later.
    #[error("gateway is at its in-flight limit ({inflight_limit} bytes); retry later")]
    Overloaded {
        /// The configured in-flight limit.
        inflight_limit: usize,
        /// Suggested wait before retrying.
        retry_after: Duration,
    },
    /// The stream's table is too far behind its topic (the compactor is
    /// stopped or slow); retry later.
    #[error(
        "stream {stream:?} is {lag_records} Kafka records behind its table (the bound is {bound}): \
         the compactor is not keeping up; retry later"
    )]
    Lagging {
        /// The stream refused.
        stream: String,
        /// Records written and not yet committed to the table, at the last check.
        lag_records: u64,
        /// `backpressure.max_lag_records`.
        bound: u64,
        /// Suggested wait before retrying.
        retry_after: Duration,
    },
    /// Kafka could not be asked (for a watermark); nothing was written.
    #[error("Kafka is unavailable: {0}")]
    KafkaUnavailable(String),
    /// Kafka did not confirm delivery. Some chunks may have been written:
    /// retrying with the same event ids is safe (duplicates are removed by id).
    #[error("events not confirmed by Kafka ({0}); retry with the same event ids")]
    NotDelivered(String),
}

impl GatewayError {
    /// Whether sending the same request again may succeed.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            Self::Overloaded { .. }
                | Self::Lagging { .. }
                | Self::KafkaUnavailable(_)
                | Self::NotDelivered(_)
        )
    }

    /// The gRPC code this error is answered with.
    pub fn code(&self) -> Code {
        match self {
            Self::InvalidArgument(_) | Self::UnknownStream { .. } | Self::UnsupportedMedia(_) => {
                Code::InvalidArgument
            }
            Self::TooLarge(_) => Code::OutOfRange,
            Self::Unauthenticated => Code::Unauthenticated,
            Self::Overloaded { .. } | Self::Lagging { .. } => Code::ResourceExhausted,
            Self::KafkaUnavailable(_) | Self::NotDelivered(_) => Code::Unavailable,
        }
    }

    /// The OTLP/HTTP status code this error is answered with: the OTLP
    /// specification's retryable 429 and 503 for the retryable errors, final
    /// 4xx codes for the rest.
    pub fn http_status(&self) -> http::StatusCode {
        use http::StatusCode;
        match self {
            Self::InvalidArgument(_) | Self::UnknownStream { .. } => StatusCode::BAD_REQUEST,
            Self::UnsupportedMedia(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::Overloaded { .. } | Self::Lagging { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::KafkaUnavailable(_) | Self::NotDelivered(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// How long a client should wait before retrying, for retryable errors.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Overloaded { retry_after, .. } | Self::Lagging { retry_after, .. } => {
                Some(*retry_after)
            }
            Self::KafkaUnavailable(_) | Self::NotDelivered(_) => Some(Duration::from_millis(500)),
            _ => None,
        }
    }
}

impl From<GatewayError> for Status {
    fn from(err: GatewayError) -> Self {
        let mut status = Status::new(err.code(), err.to_string());
        if let Some(wait) = err.retry_after()
            && let Ok(value) = wait.as_millis().to_string().parse()
        {
            status.metadata_mut().insert(RETRY_AFTER_MS, value);
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_errors_map_to_retryable_codes() {
        let overloaded = GatewayError::Overloaded {
            inflight_limit: 1,
            retry_after: Duration::from_millis(250),
        };
        assert!(overloaded.retryable());
        let status = Status::from(overloaded);
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(
            status
                .metadata()
                .get(RETRY_AFTER_MS)
                .and_then(|v| v.to_str().ok()),
            Some("250")
        );
        let lost = GatewayError::NotDelivered("timeout".into());
        assert!(lost.retryable());
        assert_eq!(Status::from(lost).code(), Code::Unavailable);
    }

    #[test]
    fn final_errors_are_not_retryable() {
        for err in [
            GatewayError::InvalidArgument("x".into()),
            GatewayError::TooLarge("x".into()),
            GatewayError::Unauthenticated,
            GatewayError::UnknownStream {
                stream: "s".into(),
                known: "default".into(),
            },
        ] {
            assert!(!err.retryable(), "{err}");
            let status = Status::from(err);
            assert!(
                matches!(
                    status.code(),
                    Code::InvalidArgument | Code::OutOfRange | Code::Unauthenticated
                ),
                "{status:?}"
            );
            assert!(status.metadata().get(RETRY_AFTER_MS).is_none());
        }
    }
}
