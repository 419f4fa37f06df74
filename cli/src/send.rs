//! `tlake send`: sends events to a gateway with SendLogs and reports what
//! was acknowledged.

use std::time::Instant;

use tlake_proto::v1::SendLogsRequest;
use tlake_proto::v1::log_ingest_client::LogIngestClient;
use tonic::Request;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

use crate::events::{Source, resource};

/// What to send.
#[derive(Debug)]
pub struct SendOptions {
    /// Gateway URL, e.g. `http://127.0.0.1:4317`.
    pub gateway: String,
    /// Stream name ("" = default).
    pub stream: String,
    /// `service.name` of the resource.
    pub service: String,
    /// Number of events.
    pub count: u64,
    /// Events per request.
    pub batch: usize,
    /// Bearer token, if the gateway requires one.
    pub token: Option<String>,
    /// PEM CA certificate to verify a TLS gateway (`https://` URLs).
    pub ca_file: Option<std::path::PathBuf>,
    /// Where events come from.
    pub source: Source,
}

/// Sends every event, stopping at the first refused request; returns how
/// many were acknowledged.
pub async fn send(options: SendOptions) -> anyhow::Result<u64> {
    anyhow::ensure!(options.batch > 0, "--batch must be at least 1");
    let mut endpoint = Channel::from_shared(options.gateway.clone())
        .map_err(|e| anyhow::anyhow!("invalid gateway URL {:?}: {e}", options.gateway))?;
    if let Some(path) = &options.ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("cannot read CA file {}: {e}", path.display()))?;
        endpoint = endpoint
            .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))?;
    }
    let channel = endpoint.connect().await.map_err(|e| {
        anyhow::anyhow!("cannot connect to the gateway at {}: {e}", options.gateway)
    })?;
    let mut client = LogIngestClient::new(channel);
    let token: Option<MetadataValue<_>> = match &options.token {
        Some(t) => Some(format!("Bearer {t}").parse()?),
        None => None,
    };
    let started = Instant::now();
    let mut acked = 0u64;
    let mut n = 0u64;
    while n < options.count {
        let size = (options.count - n).min(options.batch as u64);
        let events = (n..n + size).map(|i| options.source.event(i)).collect();
        let mut request = Request::new(SendLogsRequest {
            stream: options.stream.clone(),
            resource: Some(resource(&options.service)),
            events,
        });
        if let Some(t) = &token {
            request.metadata_mut().insert("authorization", t.clone());
        }
        let response = client.send_logs(request).await.map_err(|s| {
            anyhow::anyhow!(
                "gateway refused events {n}..{}: {:?}: {}",
                n + size,
                s.code(),
                s.message()
            )
        })?;
        acked += u64::from(response.into_inner().accepted_events);
        n += size;
    }
    eprintln!(
        "sent {acked} events in {:.2}s to {} (stream {:?})",
        started.elapsed().as_secs_f64(),
        options.gateway,
        if options.stream.is_empty() {
            "default"
        } else {
            &options.stream
        }
    );
    Ok(acked)
}
