//! tlake-compactor: Kafka → DuckDB buffer → Parquet → Iceberg commit via
//! Nessie, exactly once (docs/ARCHITECTURE.md).
//!
//! The data path, top-down, a module each: [`consume`] (the Kafka consumer
//! and its rebalances, seeked by [`progress`]) → [`pipeline`] (the loop:
//! each record is read in place by `tlake_record_reader`, prost being the
//! authority on what it cannot tell) → [`buffer`] (per table, dropping copies on
//! arrival against an event-id window; [`tables`] checks and seeds them;
//! [`dead_letters`] keeps what cannot be mapped) → [`flush`] (when, and at
//! which cut; DuckDB sorts the buffered keys, `tlake_record_reader::rows` builds
//! the Arrow) →
//! [`commit`] (writes Parquet through `tlake_catalog_client::write` and
//! commits through `tlake-catalog-client` with the Kafka offsets it covers).
//! [`lake`] is the loop's handle on the catalog and its one retry policy. The
//! `maintain` subcommand is `tlake-maintenance`'s pass, with this
//! configuration's `[maintenance]` section.
#![deny(missing_docs)]

pub mod buffer;
pub mod commit;
pub mod config;
pub mod consume;
pub mod dead_letters;
pub mod flush;
pub mod lake;
pub mod metrics;
pub mod pipeline;
pub mod progress;
pub mod tables;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tlake_catalog_client::{CatalogSettings, LakeCatalog, S3Settings};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;

/// Why the compactor stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Bad configuration or missing credentials.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The metrics listener could not be bound.
    #[error("cannot listen for metrics on {addr}: {source}")]
    Listen {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// The catalog refused us for good (incompatible table, bad settings).
    #[error(transparent)]
    Catalog(#[from] tlake_catalog_client::Error),
    /// The consume loop failed.
    #[error(transparent)]
    Pipeline(#[from] pipeline::PipelineError),
    /// The consume thread panicked.
    #[error("the consume loop panicked: {0}")]
    Panicked(String),
}

/// Catalog settings from the configuration and the S3 credentials in env.
pub fn catalog_settings(config: &Config) -> Result<CatalogSettings, config::ConfigError> {
    let (access_key_id, secret_access_key) = config::s3_credentials()?;
    Ok(CatalogSettings {
        uri: config.catalog.uri.clone(),
        warehouse: config.catalog.warehouse.clone(),
        namespace: config.catalog.namespace.clone(),
        s3: S3Settings {
            endpoint: config.s3.endpoint.clone(),
            region: config.s3.region.clone(),
            path_style: config.s3.path_style,
            access_key_id,
            secret_access_key,
        },
        request_timeout: Duration::from_millis(config.catalog.request_timeout_ms),
    })
}

/// Runs until `stop` is set, then flushes, commits and returns.
/// `ready` is called with the metrics address once consuming.
pub async fn run(
    config: Config,
    stop: Arc<AtomicBool>,
    ready: impl FnOnce(SocketAddr) + Send + 'static,
) -> Result<(), RunError> {
    let settings = catalog_settings(&config)?;
    let metrics = Arc::new(Metrics::new());
    let listener = tokio::net::TcpListener::bind(config.metrics_listen)
        .await
        .map_err(|source| RunError::Listen {
            addr: config.metrics_listen,
            source,
        })?;
    let metrics_addr = listener.local_addr().map_err(|source| RunError::Listen {
        addr: config.metrics_listen,
        source,
    })?;
    // Serves until the runtime stops (main shuts it down after the last flush).
    tokio::spawn(tlake_service_kit::serve::metrics_and_health(
        listener,
        metrics.clone(),
        std::future::pending(),
    ));

    // The catalog may be starting too: back off rather than fail.
    let mut waits = tlake_catalog_client::retry::transient();
    let catalog = loop {
        match LakeCatalog::connect(&settings).await {
            Ok(c) => break c,
            Err(e) if e.retryable() && !stop.load(Ordering::Relaxed) => {
                let wait = waits
                    .next()
                    .unwrap_or(tlake_catalog_client::retry::MAX_DELAY);
                tracing::warn!(uri = %settings.uri, error = %e, "catalog unreachable; retrying in {wait:?}");
                tokio::time::sleep(wait).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    let rt = tokio::runtime::Handle::current();
    let handle = tokio::task::spawn_blocking(move || {
        let pipeline = Pipeline::new(config, catalog, metrics.clone(), rt, stop)?;
        metrics.set_ready(true);
        ready(metrics_addr);
        pipeline.run()
    });
    match handle.await {
        Ok(result) => Ok(result?),
        Err(e) => Err(RunError::Panicked(e.to_string())),
    }
}
