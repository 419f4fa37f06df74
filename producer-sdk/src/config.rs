//! How a client is configured: one builder, defaults that suit a service
//! talking to a nearby gateway, validated once in [`ClientBuilder::build`].
//!
//! Environment variables the SDK reads are the `ENV_*` constants; secrets
//! (the bearer token) should come from there or from a file, never from a
//! literal in code.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use tonic::codec::CompressionEncoding;

use crate::client::Client;
use crate::error::Error;
use crate::event::Value;
use crate::queue::OverflowPolicy;
use crate::resource::{ENV_RESOURCE_ATTRIBUTES, ENV_SERVICE_NAME, ResourceAttrs};
use crate::send::{
    DeliveryFailure, FailureHook, MAX_EVENT_BYTES, MAX_EVENTS_PER_REQUEST, MAX_REQUEST_BYTES,
    RetryPolicy,
};

/// Gateway address, e.g. `https://logs.example.com:4317` (read by [`ClientBuilder::from_env`]).
pub const ENV_ENDPOINT: &str = "TLAKE_ENDPOINT";
/// Bearer token (read by [`ClientBuilder::from_env`]).
pub const ENV_TOKEN: &str = "TLAKE_TOKEN";
/// File holding the bearer token (read by [`ClientBuilder::from_env`]; `TLAKE_TOKEN` wins).
pub const ENV_TOKEN_FILE: &str = "TLAKE_TOKEN_FILE";
/// Stream to send to (read by [`ClientBuilder::from_env`]).
pub const ENV_STREAM: &str = "TLAKE_STREAM";

/// The gateway address used when none is configured.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:4317";

/// Request compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// No compression: best on loopback and fast local networks.
    #[default]
    None,
    /// gzip.
    Gzip,
    /// zstd: about gzip's ratio at a fraction of its CPU cost.
    Zstd,
}

impl Compression {
    pub(crate) fn encoding(self) -> Option<CompressionEncoding> {
        match self {
            Self::None => None,
            Self::Gzip => Some(CompressionEncoding::Gzip),
            Self::Zstd => Some(CompressionEncoding::Zstd),
        }
    }
}

/// TLS settings for an `https://` endpoint.
#[derive(Debug, Clone, Default)]
pub struct Tls {
    pub(crate) ca_pem: Option<Vec<u8>>,
    pub(crate) domain: Option<String>,
    pub(crate) identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl Tls {
    /// TLS trusting the system's root certificates.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trust this PEM CA certificate (bundle) instead of the system roots.
    #[must_use]
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Expect the server certificate to name `domain` (default: the
    /// endpoint's host).
    #[must_use]
    pub fn domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = Some(domain.into());
        self
    }

    /// Present a client certificate (mutual TLS): PEM chain and PEM key.
    #[must_use]
    pub fn client_identity(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.identity = Some((cert_pem.into(), key_pem.into()));
        self
    }
}

/// Configures and builds a [`Client`]. Start from [`Client::builder`] or
/// [`ClientBuilder::from_env`].
#[derive(Clone)]
pub struct ClientBuilder {
    pub(crate) endpoint: String,
    pub(crate) stream: String,
    pub(crate) token: Option<String>,
    pub(crate) compression: Compression,
    pub(crate) tls: Option<Tls>,
    pub(crate) max_batch_events: usize,
    pub(crate) max_batch_bytes: usize,
    pub(crate) linger: Duration,
    pub(crate) queue_capacity: usize,
    pub(crate) queue_max_bytes: usize,
    pub(crate) overflow: OverflowPolicy,
    pub(crate) max_in_flight: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) max_event_bytes: usize,
    pub(crate) env_resource: bool,
    pub(crate) resource: Vec<(String, Value)>,
    pub(crate) on_failure: Option<FailureHook>,
    pub(crate) runtime: Option<tokio::runtime::Handle>,
    pub(crate) env_error: Option<Error>,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("endpoint", &self.endpoint)
            .field("stream", &self.stream)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("compression", &self.compression)
            .field("max_batch_events", &self.max_batch_events)
            .field("max_batch_bytes", &self.max_batch_bytes)
            .field("linger", &self.linger)
            .field("queue_capacity", &self.queue_capacity)
            .field("overflow", &self.overflow)
            .finish_non_exhaustive()
    }
}

impl Default for ClientBuilder {
    fn default() -> Self {
        Self {
            endpoint: DEFAULT_ENDPOINT.to_owned(),
            stream: String::new(),
            token: None,
            compression: Compression::None,
            tls: None,
            max_batch_events: 5_000,
            max_batch_bytes: 4 << 20,
            linger: Duration::from_millis(100),
            queue_capacity: 100_000,
            queue_max_bytes: 64 << 20,
            overflow: OverflowPolicy::Drop,
            max_in_flight: 4,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            shutdown_timeout: Duration::from_secs(30),
            max_event_bytes: MAX_EVENT_BYTES,
            env_resource: true,
            resource: Vec::new(),
            on_failure: None,
            runtime: None,
            env_error: None,
        }
    }
}

impl ClientBuilder {
    /// Defaults, then `TLAKE_ENDPOINT`, `TLAKE_TOKEN` (or
    /// `TLAKE_TOKEN_FILE`) and `TLAKE_STREAM` where set.
    pub fn from_env() -> Self {
        let mut builder = Self::default();
        let var = |key| std::env::var(key).ok().filter(|v| !v.trim().is_empty());
        if let Some(endpoint) = var(ENV_ENDPOINT) {
            builder.endpoint = endpoint;
        }
        if let Some(stream) = var(ENV_STREAM) {
            builder.stream = stream;
        }
        if let Some(token) = var(ENV_TOKEN) {
            builder.token = Some(token.trim().to_owned());
        } else if let Some(path) = var(ENV_TOKEN_FILE) {
            match std::fs::read_to_string(&path) {
                Ok(token) => builder.token = Some(token.trim().to_owned()),
                Err(e) => {
                    builder.env_error = Some(Error::Config {
                        key: ENV_TOKEN_FILE,
                        reason: format!("cannot read {path}: {e}"),
                    });
                }
            }
        }
        builder
    }

    /// Gateway address: `http://host:port`, or `https://host:port` for TLS
    /// (default `http://127.0.0.1:4317`).
    #[must_use]
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = endpoint.into();
        self
    }

    /// Stream (one table each) the events go to; empty means the gateway's
    /// default stream.
    #[must_use]
    pub fn stream(mut self, stream: impl Into<String>) -> Self {
        self.stream = stream.into();
        self
    }

    /// Bearer token sent with every request.
    #[must_use]
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Request compression (default none).
    #[must_use]
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// TLS settings; required only to change the trust roots or the
    /// expected name, `https://` endpoints use the system roots otherwise.
    #[must_use]
    pub fn tls(mut self, tls: Tls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Most events in one request (default 5 000; at most 10 000).
    #[must_use]
    pub fn max_batch_events(mut self, events: usize) -> Self {
        self.max_batch_events = events;
        self
    }

    /// Target bytes of one request (default 4 MiB; at most 6 MiB so that a
    /// batch stays under the gateway's 8 MiB request limit).
    #[must_use]
    pub fn max_batch_bytes(mut self, bytes: usize) -> Self {
        self.max_batch_bytes = bytes;
        self
    }

    /// Longest an event waits for its batch to fill (default 100 ms).
    #[must_use]
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// Most events held in memory and not yet in a request (default 100 000).
    #[must_use]
    pub fn queue_capacity(mut self, events: usize) -> Self {
        self.queue_capacity = events;
        self
    }

    /// Most bytes (estimated) held in memory and not yet in a request
    /// (default 64 MiB).
    #[must_use]
    pub fn queue_max_bytes(mut self, bytes: usize) -> Self {
        self.queue_max_bytes = bytes;
        self
    }

    /// What `log()` does when the queue is full (default: drop and count).
    #[must_use]
    pub fn overflow(mut self, policy: OverflowPolicy) -> Self {
        self.overflow = policy;
        self
    }

    /// Requests in flight at once (default 4).
    #[must_use]
    pub fn max_in_flight(mut self, requests: usize) -> Self {
        self.max_in_flight = requests;
        self
    }

    /// Timeout of one connection attempt (default 5 s).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Timeout of one request; a request that times out is retried
    /// (default 30 s, above the gateway's Kafka delivery timeout).
    #[must_use]
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Backoff and give-up time of retries.
    #[must_use]
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Longest `shutdown()` (and the drop of the last handle) spends
    /// delivering what is queued before reporting the rest failed
    /// (default 30 s).
    #[must_use]
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Largest encoded event sent (default 256 KiB, the gateway's default
    /// limit); larger events fail alone instead of failing their batch.
    #[must_use]
    pub fn max_event_bytes(mut self, bytes: usize) -> Self {
        self.max_event_bytes = bytes;
        self
    }

    /// Sets the resource's `service.name` (wins over `OTEL_SERVICE_NAME`).
    #[must_use]
    pub fn service_name(self, name: impl Into<String>) -> Self {
        self.resource_attribute("service.name", Value::Str(Cow::Owned(name.into())))
    }

    /// Sets a resource attribute (wins over `OTEL_RESOURCE_ATTRIBUTES`).
    #[must_use]
    pub fn resource_attribute(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.resource.push((key.into(), value.into()));
        self
    }

    /// Whether to read `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`
    /// (default true).
    #[must_use]
    pub fn resource_from_env(mut self, read: bool) -> Self {
        self.env_resource = read;
        self
    }

    /// Called on the background task whenever events fail for good (after
    /// retries, or at once for a final status such as UNAUTHENTICATED).
    /// Keep it short and do not log through this client from it.
    #[must_use]
    pub fn on_failure(mut self, hook: impl Fn(&DeliveryFailure) + Send + Sync + 'static) -> Self {
        self.on_failure = Some(Arc::new(hook));
        self
    }

    /// Runs the background task on this runtime. By default the SDK uses
    /// the current multi-threaded tokio runtime, and otherwise (no runtime,
    /// or a current-thread one that a blocking `log()` could stall) starts
    /// its own thread.
    #[must_use]
    pub fn runtime(mut self, handle: tokio::runtime::Handle) -> Self {
        self.runtime = Some(handle);
        self
    }

    /// Validates the settings and starts the client. Does not connect: the
    /// connection is made with the first request and remade as needed.
    pub fn build(self) -> Result<Client, Error> {
        self.validate()?;
        Client::start(self)
    }

    pub(crate) fn resource_attrs(&self) -> Result<ResourceAttrs, Error> {
        let mut attrs = ResourceAttrs::default();
        if self.env_resource {
            attrs
                .apply_env(
                    std::env::var(ENV_SERVICE_NAME).ok().as_deref(),
                    std::env::var(ENV_RESOURCE_ATTRIBUTES).ok().as_deref(),
                )
                .map_err(|reason| Error::Config {
                    key: ENV_RESOURCE_ATTRIBUTES,
                    reason,
                })?;
        }
        for (key, value) in &self.resource {
            attrs.set(key.clone(), value.clone());
        }
        Ok(attrs)
    }

    fn validate(&self) -> Result<(), Error> {
        if let Some(err) = &self.env_error {
            return Err(err.clone());
        }
        let invalid = |key, reason: String| Err(Error::Config { key, reason });
        if !(self.endpoint.starts_with("http://") || self.endpoint.starts_with("https://")) {
            return invalid(
                "endpoint",
                format!("{:?} must start with http:// or https://", self.endpoint),
            );
        }
        if self.endpoint.parse::<http::Uri>().is_err() {
            return invalid(
                "endpoint",
                format!("{:?} is not a valid URI", self.endpoint),
            );
        }
        if self.tls.is_some() && !self.endpoint.starts_with("https://") {
            return invalid("tls", "TLS needs an https:// endpoint".into());
        }
        if !self.stream.is_empty() {
            tlake_proto::contract::stream_name(&self.stream)
                .or_else(|reason| invalid("stream", format!("{:?} {reason}", self.stream)))?;
        }
        if let Some(token) = &self.token
            && (token.is_empty()
                || format!("Bearer {token}")
                    .parse::<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>()
                    .is_err())
        {
            return invalid("bearer_token", "must be non-empty printable ASCII".into());
        }
        if !(1..=MAX_EVENTS_PER_REQUEST).contains(&self.max_batch_events) {
            return invalid(
                "max_batch_events",
                format!(
                    "must be 1..={MAX_EVENTS_PER_REQUEST}, got {}",
                    self.max_batch_events
                ),
            );
        }
        let max_batch = MAX_REQUEST_BYTES / 4 * 3;
        if !(1024..=max_batch).contains(&self.max_batch_bytes) {
            return invalid(
                "max_batch_bytes",
                format!("must be 1024..={max_batch}, got {}", self.max_batch_bytes),
            );
        }
        if self.linger > Duration::from_secs(60) {
            return invalid(
                "linger",
                format!("must be at most 60 s, got {:?}", self.linger),
            );
        }
        if self.queue_capacity == 0 {
            return invalid("queue_capacity", "must be at least 1".into());
        }
        if self.queue_max_bytes < self.max_batch_bytes {
            return invalid("queue_max_bytes", "must be at least max_batch_bytes".into());
        }
        if self.max_in_flight == 0 {
            return invalid("max_in_flight", "must be at least 1".into());
        }
        if self.request_timeout.is_zero() || self.connect_timeout.is_zero() {
            return invalid("request_timeout", "timeouts must be above zero".into());
        }
        if self.retry.initial_backoff.is_zero()
            || self.retry.max_backoff < self.retry.initial_backoff
        {
            return invalid(
                "retry",
                "initial_backoff must be above zero and at most max_backoff".into(),
            );
        }
        if !(64..=MAX_REQUEST_BYTES / 2).contains(&self.max_event_bytes) {
            return invalid(
                "max_event_bytes",
                format!(
                    "must be 64..={}, got {}",
                    MAX_REQUEST_BYTES / 2,
                    self.max_event_bytes
                ),
            );
        }
        self.resource_attrs().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(builder: ClientBuilder) -> &'static str {
        match builder.validate() {
            Err(Error::Config { key, .. }) => key,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_valid() {
        ClientBuilder::default().validate().expect("defaults");
    }

    #[test]
    fn bad_settings_name_their_key() {
        let b = ClientBuilder::default;
        assert_eq!(key_of(b().endpoint("127.0.0.1:4317")), "endpoint");
        assert_eq!(key_of(b().endpoint("http://a b")), "endpoint");
        assert_eq!(key_of(b().tls(Tls::new())), "tls");
        assert_eq!(key_of(b().stream("Bad-Name")), "stream");
        assert_eq!(key_of(b().bearer_token("")), "bearer_token");
        assert_eq!(key_of(b().bearer_token("a\nb")), "bearer_token");
        assert_eq!(key_of(b().max_batch_events(0)), "max_batch_events");
        assert_eq!(key_of(b().max_batch_events(10_001)), "max_batch_events");
        assert_eq!(key_of(b().max_batch_bytes(8 << 20)), "max_batch_bytes");
        assert_eq!(key_of(b().linger(Duration::from_secs(61))), "linger");
        assert_eq!(key_of(b().queue_capacity(0)), "queue_capacity");
        assert_eq!(key_of(b().queue_max_bytes(10)), "queue_max_bytes");
        assert_eq!(key_of(b().max_in_flight(0)), "max_in_flight");
        assert_eq!(key_of(b().max_event_bytes(10)), "max_event_bytes");
    }

    #[test]
    fn good_streams() {
        for s in ["app", "a1_b2", "default"] {
            ClientBuilder::default().stream(s).validate().expect(s);
        }
    }

    #[test]
    fn explicit_resource_wins() {
        let attrs = ClientBuilder::default()
            .resource_from_env(false)
            .service_name("a")
            .service_name("b")
            .resource_attribute("deployment.environment", "test")
            .resource_attrs()
            .expect("valid");
        assert_eq!(
            attrs.get("service.name"),
            Some(&Value::from("b".to_owned()))
        );
        assert_eq!(
            attrs.get("deployment.environment"),
            Some(&Value::from("test"))
        );
    }

    #[test]
    fn debug_redacts_the_token() {
        let text = format!("{:?}", ClientBuilder::default().bearer_token("s3cret"));
        assert!(!text.contains("s3cret"), "{text}");
    }
}
