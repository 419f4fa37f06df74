//! Prometheus metrics: requests by RPC and gRPC code, events and bytes by
//! stream, Kafka produce latency, in-flight bytes, broker reachability and
//! each stream's lag behind its table.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of a finished RPC.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    /// Method name, e.g. `SendLogs`, `Export`.
    pub rpc: String,
    /// gRPC status code name, e.g. `Ok`, `InvalidArgument`.
    pub code: String,
}

/// Labels per stream.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabels {
    /// Stream name.
    pub stream: String,
}

/// All gateway metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Finished RPCs.
    pub requests: Family<RpcLabels, Counter>,
    /// Events acknowledged (OK answered).
    pub events: Family<StreamLabels, Counter>,
    /// Encoded event bytes acknowledged.
    pub bytes: Family<StreamLabels, Counter>,
    /// Kafka records delivered.
    pub kafka_records: Counter,
    /// Time from produce to the last delivery report of a request.
    pub produce_seconds: Histogram,
    /// Bytes accepted but not yet answered.
    pub inflight_bytes: Gauge<i64, std::sync::atomic::AtomicI64>,
    /// 1 when a broker answered the last metadata probe.
    pub kafka_up: Gauge<f64, AtomicU64>,
    /// Records in a stream's topic not yet committed to its table (-1: unknown).
    pub lag_records: Family<StreamLabels, Gauge>,
    /// Requests refused because their stream's lag was past the bound.
    pub lag_refusals: Family<StreamLabels, Counter>,
    /// Lag checks that could not read Kafka (requests are admitted meanwhile).
    pub lag_check_errors: Counter,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tlake_gateway");
        let requests = Family::default();
        registry.register(
            "requests",
            "Finished RPCs by method and gRPC code",
            requests.clone(),
        );
        let events = Family::default();
        registry.register("events", "Events acknowledged to clients", events.clone());
        let bytes = Family::default();
        registry.register(
            "event_bytes",
            "Encoded event bytes acknowledged",
            bytes.clone(),
        );
        let kafka_records = Counter::default();
        registry.register(
            "kafka_records",
            "Kafka records delivered",
            kafka_records.clone(),
        );
        let produce_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "produce_seconds",
            "Time from produce to the last delivery report of a request",
            produce_seconds.clone(),
        );
        let inflight_bytes = Gauge::default();
        registry.register(
            "inflight_bytes",
            "Bytes accepted and not yet answered",
            inflight_bytes.clone(),
        );
        let kafka_up = Gauge::default();
        registry.register(
            "kafka_up",
            "1 when a Kafka broker answered the last probe",
            kafka_up.clone(),
        );
        let lag_records = Family::default();
        registry.register(
            "lag_records",
            "Records in the stream's topic not yet committed to its table (-1: unknown)",
            lag_records.clone(),
        );
        let lag_refusals = Family::default();
        registry.register(
            "lag_refusals",
            "Requests refused because the stream's lag was past backpressure.max_lag_records",
            lag_refusals.clone(),
        );
        let lag_check_errors = Counter::default();
        registry.register(
            "lag_check_errors",
            "Lag checks that could not read Kafka",
            lag_check_errors.clone(),
        );
        Self {
            registry,
            requests,
            events,
            bytes,
            kafka_records,
            produce_seconds,
            inflight_bytes,
            kafka_up,
            lag_records,
            lag_refusals,
            lag_check_errors,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The gateway is healthy once it serves: Kafka's reachability is the gRPC
/// health service's business (and `kafka_up`'s), not the process's.
impl tlake_service_kit::serve::Exposition for Metrics {
    fn encode(&self) -> String {
        Metrics::encode(self)
    }
    fn healthy(&self) -> bool {
        true
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
