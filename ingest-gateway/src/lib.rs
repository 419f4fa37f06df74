//! telemetry-lake ingest gateway: the front door that accepts log events
//! (`telemetry.v1.LogIngest/SendLogs` and OTLP `LogsService/Export` over gRPC,
//! OTLP/HTTP `POST /v1/logs`) and writes them durably to Kafka.
//!
//! A request moves through the modules in this order: [`auth`] (headers),
//! [`http`] (OTLP/HTTP only: the body's encoding), [`otlp`] (OTLP only: map
//! onto telemetry.v1), [`validate`] (rules, limits,
//! stream → topic), [`lag`] (back-pressure while the stream's table is far
//! behind), [`chunk`] (Kafka record payloads), [`produce`] (idempotent
//! producer, delivery reports), [`service`] (the answer, with where the
//! records were written). [`watermark`] answers how far each stream's table
//! is committed (`LogIngest/Watermark`, `GET /v1/watermark`). [`error`] is the
//! one place errors become gRPC statuses.
#![deny(missing_docs)]

pub mod auth;
pub mod chunk;
pub mod config;
pub mod edge;
pub mod error;
pub mod events;
pub mod http;
pub mod lag;
pub mod metrics;
pub mod otlp;
pub mod produce;
pub mod scan;
pub mod service;
pub mod tls;
pub mod validate;
pub mod watermark;

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::serve::ListenerExt as _;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::LogsServiceServer;
use tlake_proto::raw::log_ingest_server::LogIngestServer;
use tokio::net::TcpListener;
use tonic::codec::CompressionEncoding;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;

use crate::auth::BearerAuth;
use crate::config::Config;
use crate::edge::Edge;
use crate::lag::{LagGate, LagReader};
use crate::metrics::Metrics;
use crate::produce::Kafka;
use crate::service::Ingest;

/// The largest HTTP/2 frame a client may send us (h2's default is 16 KiB).
/// A request of 1000 events (~300 KB) then arrives as one DATA frame
/// instead of ~19, with fewer reads, frame headers and flow-control updates:
/// measured side by side at batch 1000 (10 pairs), 9 % less gateway CPU per
/// event and 1.17× the events/s (BENCHMARKS.md, "One HTTP/2 frame per
/// request").
const MAX_FRAME_BYTES: u32 = 1 << 20;

/// Addresses the gateway actually listens on (ports resolved when 0 was asked).
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    /// gRPC.
    pub grpc: SocketAddr,
    /// OTLP/HTTP.
    pub otlp_http: SocketAddr,
    /// Prometheus metrics.
    pub metrics: SocketAddr,
}

/// Runs the gateway until `shutdown` resolves, then drains in-flight requests
/// and flushes the Kafka producer. `ready` is called once both listeners are bound.
pub async fn run(
    config: Config,
    ready: impl FnOnce(Bound),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // Other crates in a build (S3 clients) can compile in a second rustls
    // crypto provider, and then rustls refuses to pick one by itself.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = Arc::new(config);
    let tokens = config.tokens()?;
    let auth = BearerAuth::new(tokens);
    let metrics = Arc::new(Metrics::new());
    let kafka = Arc::new(Kafka::new(&config.kafka).context("cannot create the Kafka producer")?);
    let lag = Arc::new(LagGate::new(&config.backpressure, &config.streams));
    // The compactor group's offsets: the lag's source and the watermarks'.
    let offsets = Arc::new(
        LagReader::new(&config.kafka, &config.backpressure)
            .context("cannot create the Kafka client that reads the compactor's offsets")?,
    );
    let lag_watch = lag.enabled().then(|| {
        tokio::spawn(lag::watch(
            lag.clone(),
            offsets.clone(),
            config.streams.clone(),
            metrics.clone(),
            config.backpressure.check_interval_ms,
        ))
    });
    let ingest = Arc::new(Ingest::new(
        config.clone(),
        kafka.clone(),
        metrics.clone(),
        lag,
        offsets,
    ));

    let grpc_listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen for gRPC on {}", config.listen))?;
    let http_listener = TcpListener::bind(config.otlp_http_listen)
        .await
        .with_context(|| format!("cannot listen for OTLP/HTTP on {}", config.otlp_http_listen))?;
    let metrics_listener = TcpListener::bind(config.metrics_listen)
        .await
        .with_context(|| format!("cannot listen for metrics on {}", config.metrics_listen))?;
    let bound = Bound {
        grpc: grpc_listener.local_addr()?,
        otlp_http: http_listener.local_addr()?,
        metrics: metrics_listener.local_addr()?,
    };

    let (health, health_service) = tonic_health::server::health_reporter();
    let watch = tokio::spawn(watch_kafka(kafka.clone(), metrics.clone(), health.clone()));

    let max = config.limits.max_request_bytes;
    let send_logs = LogIngestServer::from_arc(ingest.clone())
        .max_decoding_message_size(max)
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd)
        .send_compressed(CompressionEncoding::Gzip);
    let otlp_http = http::router(ingest.clone(), auth.clone(), metrics.clone(), max);
    let export = LogsServiceServer::from_arc(ingest)
        .max_decoding_message_size(max)
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd);

    let mut server = Server::builder().max_frame_size(MAX_FRAME_BYTES);
    let mut http_tls = None;
    if let Some(tls) = &config.tls {
        let pem = tls::Pem::read(tls)?;
        http_tls = Some(tls::acceptor(tls, &pem)?);
        server = server
            .tls_config(ServerTlsConfig::new().identity(Identity::from_pem(pem.cert, pem.key)))
            .context("invalid TLS certificate or key")?;
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let grace = config.shutdown_grace_ms;
    let router = server
        .layer(Edge(metrics.clone()))
        .add_service(health_service)
        .add_service(tonic::service::interceptor::InterceptedService::new(
            send_logs,
            auth.clone(),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            export, auth,
        ));

    let mut metrics_stop = stop_rx.clone();
    let metrics_server = tokio::spawn(tlake_service_kit::serve::metrics_and_health(
        metrics_listener,
        metrics.clone(),
        async move {
            let _ = metrics_stop.wait_for(|stop| *stop).await;
        },
    ));

    // OTLP/HTTP stops accepting on the same signal and finishes its requests in flight.
    let mut http_stop = stop_rx.clone();
    let http_stopped = async move {
        let _ = http_stop.wait_for(|stop| *stop).await;
    };
    let http_server = match http_tls {
        Some(acceptor) => tokio::spawn(
            axum::serve(tls::TlsListener::new(http_listener, acceptor)?, otlp_http)
                .with_graceful_shutdown(http_stopped)
                .into_future(),
        ),
        None => tokio::spawn(
            axum::serve(
                http_listener.tap_io(|tcp| {
                    let _ = tcp.set_nodelay(true);
                }),
                otlp_http,
            )
            .with_graceful_shutdown(http_stopped)
            .into_future(),
        ),
    };

    // On the shutdown signal: report NOT_SERVING so load balancers move away,
    // stop accepting, and let in-flight requests finish (they answer only
    // after Kafka's delivery report), for at most the grace period.
    let signal_health = health.clone();
    let mut grpc_stop = stop_rx.clone();
    let grpc = router.serve_with_incoming_shutdown(
        // No Nagle: small unary answers must not wait for delayed ACKs.
        TcpIncoming::from(grpc_listener).with_nodelay(Some(true)),
        async move {
            let _ = grpc_stop.wait_for(|stop| *stop).await;
        },
    );
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutdown requested: draining in-flight requests");
        signal_health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        let _ = stop_tx.send(true);
    });

    ready(bound);
    tracing::info!(grpc = %bound.grpc, otlp_http = %bound.otlp_http, metrics = %bound.metrics, tls = config.tls.is_some(), auth = auth_enabled(&config), "gateway listening");

    let mut drain_deadline = stop_rx.clone();
    let servers = async move {
        let (grpc, http) = tokio::join!(grpc, http_server);
        grpc.context("gRPC server failed")?;
        http.context("OTLP/HTTP server task failed")?
            .context("OTLP/HTTP server failed")
    };
    tokio::select! {
        result = servers => result?,
        () = async move {
            let _ = drain_deadline.wait_for(|stop| *stop).await;
            tokio::time::sleep(grace).await;
        } => tracing::warn!(grace_ms = grace.as_millis(), "requests still running after the grace period; closing"),
    }
    watch.abort();
    if let Some(task) = lag_watch {
        task.abort();
    }
    let _ = metrics_server.await;
    match kafka.flush(grace).await {
        Ok(()) => tracing::info!("gateway stopped"),
        Err(err) => tracing::error!(%err, "Kafka flush at shutdown did not complete"),
    }
    Ok(())
}

fn auth_enabled(config: &Config) -> bool {
    config.auth.token.is_some() || config.auth.tokens_file.is_some()
}

/// Keeps the health status and `kafka_up` in line with broker reachability.
async fn watch_kafka(
    kafka: Arc<Kafka>,
    metrics: Arc<Metrics>,
    health: tonic_health::server::HealthReporter,
) {
    let mut last = None;
    loop {
        let up = kafka.reachable(Duration::from_secs(3)).await;
        metrics.kafka_up.set(if up { 1.0 } else { 0.0 });
        if last != Some(up) {
            let status = if up {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            health.set_service_status("", status).await;
            if up {
                health.set_serving::<LogIngestServer<Ingest>>().await;
                tracing::info!("Kafka reachable");
            } else {
                health.set_not_serving::<LogIngestServer<Ingest>>().await;
                tracing::warn!("Kafka unreachable: requests will be answered UNAVAILABLE");
            }
            last = Some(up);
        }
        tokio::time::sleep(Duration::from_secs(if up { 5 } else { 1 })).await;
    }
}
