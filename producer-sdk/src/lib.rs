//! The telemetry-lake producer SDK: the crate applications link to get
//! their logs into the lake.
//!
//! Events go from your code into a bounded in-memory queue (the only work
//! done on your thread), and a background tokio task batches them by count,
//! bytes and linger time, sends them to the ingest gateway
//! (`telemetry.v1.LogIngest/SendLogs`) and retries with backoff until the
//! gateway confirms they are durable in Kafka.
//!
//! # Quick start
//!
//! With the `tracing` ecosystem:
//!
//! ```no_run
//! use tracing_subscriber::prelude::*;
//!
//! # #[tokio::main] async fn main() -> Result<(), tlake_producer_sdk::Error> {
//! let client = tlake_producer_sdk::Client::builder()
//!     .endpoint("http://127.0.0.1:4317")
//!     .service_name("checkout")
//!     .build()?;
//! tracing_subscriber::registry()
//!     .with(tlake_producer_sdk::TracingLayer::new(client.clone()))
//!     .init();
//!
//! tracing::info!(order.id = 42, user.id = "u-7", "order placed");
//!
//! // Before exiting: deliver what is queued, and learn whether it all arrived.
//! let outcome = client.shutdown().await;
//! assert!(outcome.is_complete(), "{outcome:?}");
//! # Ok(()) }
//! ```
//!
//! Or build events yourself:
//!
//! ```no_run
//! use tlake_producer_sdk::{Client, Event, Severity};
//!
//! # async fn run() -> Result<(), tlake_producer_sdk::Error> {
//! let client = Client::builder().build()?;
//! client.log(Event::new(Severity::Warn, "disk almost full").attr("disk.used_ratio", 0.93))?;
//! client.flush().await?; // every event logged so far is now in Kafka
//! # Ok(()) }
//! ```
//!
//! The `log` crate works too: [`LogBridge::install`].
//!
//! # Guarantees
//!
//! - Every event gets a UUIDv7 id when it is created; retries resend the same
//!   id, and the pipeline removes duplicates by id. So a retry after an
//!   unknown outcome (timeout, dropped connection, gateway restart) can never
//!   produce a duplicate row.
//! - Every event accepted by [`Client::log`] ends up counted as `sent` or
//!   `failed` ([`Stats`]); [`Client::shutdown`] waits for that, up to its
//!   timeout, and says which [`Shutdown`] outcome it reached.
//! - Memory is bounded: the queue holds at most `queue_capacity` events and
//!   `queue_max_bytes` bytes; beyond that the [`OverflowPolicy`] applies.
//! - UNAVAILABLE and RESOURCE_EXHAUSTED (and transport failures) are retried
//!   with exponential backoff and jitter, never sooner than the gateway's
//!   `retry-after-ms` hint. UNAUTHENTICATED and INVALID_ARGUMENT are final:
//!   they reach the application as [`Error`]s through [`Client::flush`],
//!   [`Client::last_error`] and the [`ClientBuilder::on_failure`] hook.
//!   OUT_OF_RANGE makes the SDK split the batch; a single event over the
//!   limit fails alone.
//!
//! # Configuration
//!
//! [`ClientBuilder`] documents every setting and its default.
//! [`ClientBuilder::from_env`] reads `TLAKE_ENDPOINT`, `TLAKE_TOKEN` (or
//! `TLAKE_TOKEN_FILE`) and `TLAKE_STREAM`. The resource (`service.name`, ...)
//! comes from `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`, overridden
//! by [`ClientBuilder::service_name`] and
//! [`ClientBuilder::resource_attribute`].
#![deny(missing_docs)]

mod batcher;
mod client;
mod config;
mod encode;
mod error;
mod event;
mod log_bridge;
mod queue;
mod resource;
mod send;
#[cfg(test)]
mod testing;
mod tracing_layer;

pub use client::{Client, Queryable, Shutdown, Stats};
pub use config::{
    ClientBuilder, Compression, DEFAULT_ENDPOINT, ENV_ENDPOINT, ENV_STREAM, ENV_TOKEN,
    ENV_TOKEN_FILE, Tls,
};
pub use error::{Error, RETRY_AFTER_MS};
pub use event::{Event, Severity, Value};
pub use log_bridge::LogBridge;
pub use queue::OverflowPolicy;
pub use resource::{ENV_RESOURCE_ATTRIBUTES, ENV_SERVICE_NAME};
pub use send::{
    DeliveryFailure, MAX_EVENT_BYTES, MAX_EVENTS_PER_REQUEST, MAX_REQUEST_BYTES, RetryPolicy,
};
pub use tracing_layer::{EXCLUDED_TARGETS, TracingLayer, is_excluded};
