//! The ingest entry points — SendLogs, OTLP Export over gRPC, and OTLP/HTTP
//! (`http.rs`) — one pipeline: read → route → validate → chunk → produce →
//! answer. OK is answered only after Kafka acknowledged every chunk.
//!
//! SendLogs reads its request in place when it can and forwards the events'
//! bytes ([`events`]); OTLP requests are decoded and mapped. Both meet the
//! same rules.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::LogsService;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use tlake_proto::positions;
use tlake_proto::raw::log_ingest_server::LogIngest;
use tlake_proto::v1::{Position, SendLogsResponse, Source, WatermarkRequest, WatermarkResponse};
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};

use crate::config::Config;
use crate::error::GatewayError;
use crate::events::{self, Events};
use crate::lag::{LagGate, LagReader};
use crate::metrics::{Metrics, StreamLabels};
use crate::produce::{Kafka, RequestDelivery};
use crate::{otlp, validate, watermark};

/// Metadata key naming the stream of an OTLP Export (OTLP has no field for it).
pub const STREAM_HEADER: &str = "x-tlake-stream";

/// In-flight bytes are counted in KiB permits (tokio semaphores count in u32).
const PERMIT_BYTES: usize = 1024;

/// Shared state of both RPCs.
#[derive(Debug)]
pub struct Ingest {
    config: Arc<Config>,
    kafka: Arc<Kafka>,
    metrics: Arc<Metrics>,
    lag: Arc<LagGate>,
    watermarks: watermark::Watermarks,
    inflight: Semaphore,
}

/// What an accepted request did: its event count and, per partition, the
/// highest offset its records were written at.
#[derive(Debug, Default)]
pub(crate) struct Accepted {
    pub(crate) events: u32,
    pub(crate) written: BTreeMap<i32, i64>,
}

impl Ingest {
    /// Wires the pipeline.
    pub fn new(
        config: Arc<Config>,
        kafka: Arc<Kafka>,
        metrics: Arc<Metrics>,
        lag: Arc<LagGate>,
        offsets: Arc<LagReader>,
    ) -> Self {
        let permits = config.limits.max_inflight_bytes.div_ceil(PERMIT_BYTES);
        Self {
            config,
            kafka,
            metrics,
            lag,
            watermarks: watermark::Watermarks::new(offsets),
            inflight: Semaphore::new(permits),
        }
    }

    /// Validates, chunks and produces the events of one request for one
    /// stream, and returns how many were acknowledged — all of them, or an
    /// error — and where they were written.
    async fn accept(
        &self,
        stream: &str,
        events: Events<'_>,
        source: Source,
    ) -> Result<Accepted, GatewayError> {
        let (stream, topic) = validate::route(&self.config.streams, stream)?;
        self.lag.admit(stream, topic).inspect_err(|_| {
            self.metrics
                .lag_refusals
                .get_or_create(&StreamLabels {
                    stream: stream.to_owned(),
                })
                .inc();
        })?;
        let limits = &self.config.limits;
        let (count, bytes) = events.check(limits)?;
        if count == 0 {
            return Ok(Accepted::default());
        }

        let permits = u32::try_from(bytes.div_ceil(PERMIT_BYTES)).unwrap_or(u32::MAX);
        let _permit =
            self.inflight
                .try_acquire_many(permits)
                .map_err(|_| GatewayError::Overloaded {
                    inflight_limit: limits.max_inflight_bytes,
                    retry_after: Duration::from_millis(200),
                })?;
        let inflight = i64::try_from(bytes).unwrap_or(i64::MAX);
        self.metrics.inflight_bytes.inc_by(inflight);
        let _gauge = scopeguard(|| {
            self.metrics.inflight_bytes.dec_by(inflight);
        });

        let received = unix_nanos();
        let payloads = events.chunks(stream, source, received, limits.chunk_bytes);

        let started = Instant::now();
        let outcome = self.kafka.produce_all(topic, &payloads).await;
        self.metrics
            .produce_seconds
            .observe(started.elapsed().as_secs_f64());
        match outcome {
            RequestDelivery::Delivered(written) => {
                let labels = StreamLabels {
                    stream: stream.to_owned(),
                };
                self.metrics
                    .events
                    .get_or_create(&labels)
                    .inc_by(count as u64);
                self.metrics
                    .bytes
                    .get_or_create(&labels)
                    .inc_by(bytes as u64);
                self.metrics.kafka_records.inc_by(payloads.len() as u64);
                Ok(Accepted {
                    events: u32::try_from(count).unwrap_or(u32::MAX),
                    written,
                })
            }
            RequestDelivery::Incomplete {
                reason,
                possibly_persisted,
            } => {
                tracing::warn!(%stream, %topic, count, possibly_persisted, %reason, "request not delivered");
                Err(GatewayError::NotDelivered(reason))
            }
        }
    }
}

impl Ingest {
    /// An OTLP Export, from gRPC or HTTP: `stream` comes from the
    /// [`STREAM_HEADER`], the records are mapped onto events by [`otlp::decode`].
    pub(crate) async fn export_request(
        &self,
        stream: &str,
        request: ExportLogsServiceRequest,
    ) -> Result<Accepted, GatewayError> {
        let groups = otlp::decode(request)
            .into_iter()
            .map(|g| (g.resource, g.events))
            .collect();
        self.accept(stream, Events::Decoded(groups), Source::Otlp)
            .await
    }

    /// The stream's committed watermark, after waiting (at most `timeout`)
    /// for `wait_for`: SendLogs' Watermark RPC and OTLP/HTTP's
    /// `GET /v1/watermark`.
    pub(crate) async fn watermark(
        &self,
        stream: &str,
        wait_for: &BTreeMap<i32, i64>,
        timeout: Duration,
    ) -> Result<watermark::Watermark, GatewayError> {
        let (stream, topic) = validate::route(&self.config.streams, stream)?;
        watermark::wait(&self.watermarks, stream, topic, wait_for, timeout).await
    }
}

/// The stream an OTLP request names in its [`STREAM_HEADER`] ("" when absent).
pub(crate) fn stream_header(value: Option<&http::HeaderValue>) -> Result<String, GatewayError> {
    match value {
        None => Ok(String::new()),
        Some(v) => v
            .to_str()
            .map(str::to_owned)
            .map_err(|_| GatewayError::InvalidArgument(format!("{STREAM_HEADER} is not ASCII"))),
    }
}

#[tonic::async_trait]
impl LogIngest for Ingest {
    async fn send_logs(
        &self,
        request: Request<Bytes>,
    ) -> Result<Response<SendLogsResponse>, Status> {
        let bytes = request.into_inner();
        let (stream, events) = events::send_logs(&bytes)?;
        let accepted = self.accept(&stream, events, Source::SendLogs).await?;
        Ok(Response::new(SendLogsResponse {
            accepted_events: accepted.events,
            written: positions(&accepted.written),
        }))
    }

    async fn watermark(
        &self,
        request: Request<WatermarkRequest>,
    ) -> Result<Response<WatermarkResponse>, Status> {
        let WatermarkRequest {
            stream,
            wait_for,
            timeout_ms,
        } = request.into_inner();
        let wait_for =
            tlake_proto::positions::highest(wait_for.iter().map(|p| (p.partition, p.offset)));
        let answer = self
            .watermark(
                &stream,
                &wait_for,
                Duration::from_millis(u64::from(timeout_ms)),
            )
            .await?;
        Ok(Response::new(WatermarkResponse {
            committed: positions(&answer.committed),
            reached: answer.reached,
            committed_event_time_unix_nano: answer.newest_event_unix_nano(),
        }))
    }
}

#[tonic::async_trait]
impl LogsService for Ingest {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let (metadata, _, request) = request.into_parts();
        let headers = metadata.into_headers();
        let stream = stream_header(headers.get(STREAM_HEADER))?;
        let accepted = self.export_request(&stream, request).await?;
        // OTLP's answer has no field for positions: they go in its metadata.
        let mut response = Response::new(ExportLogsServiceResponse {
            partial_success: None,
        });
        if let Ok(value) = positions::to_text(&accepted.written).parse() {
            response
                .metadata_mut()
                .insert(positions::WRITTEN_HEADER, value);
        }
        Ok(response)
    }
}

fn positions(by_partition: &BTreeMap<i32, i64>) -> Vec<Position> {
    by_partition
        .iter()
        .map(|(&partition, &offset)| Position { partition, offset })
        .collect()
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Runs a closure when dropped (also when the request future is cancelled).
fn scopeguard<F: FnOnce()>(f: F) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}
