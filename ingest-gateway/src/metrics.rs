//! Prometheus metrics: requests by RPC and gRPC code, events and bytes by
//! stream, Kafka produce latency, in-flight bytes and broker reachability.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
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
        Self {
            registry,
            requests,
            events,
            bytes,
            kafka_records,
            produce_seconds,
            inflight_bytes,
            kafka_up,
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

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// A tower layer that counts every gRPC response by method and status code,
/// including those tonic answers itself (undecodable bodies, size limits,
/// failed auth), which never reach a handler.
#[derive(Clone, Debug)]
pub struct CountCodes(pub Arc<Metrics>);

impl<S> tower::Layer<S> for CountCodes {
    type Service = CountCodesService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CountCodesService {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// The service of [`CountCodes`].
#[derive(Clone, Debug)]
pub struct CountCodesService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, RB> tower::Service<http::Request<B>> for CountCodesService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let rpc = request
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let metrics = self.metrics.clone();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            // Errors are answered "trailers-only": the status is in the
            // headers. A unary success carries its status in the trailers.
            let code = response
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i32>().ok())
                .map_or(tonic::Code::Ok, tonic::Code::from);
            metrics
                .requests
                .get_or_create(&RpcLabels {
                    rpc,
                    code: format!("{code:?}"),
                })
                .inc();
            Ok(response)
        })
    }
}
