//! `tlake send`: sends events to a gateway through the producer SDK — its
//! batching, its retry policy (so a gateway restart or a Kafka blip is
//! waited out, not fatal), its shutdown that settles every event — with an
//! optional rate, a progress bar, and a summary of what was acknowledged.

use std::time::{Duration, Instant, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressStyle};
use tlake_producer_sdk::{Client, Event, OverflowPolicy, RetryPolicy, Severity, Shutdown, Stats};
use tlake_proto::v1::{LogEvent, any_value};

use crate::events::Source;

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
    /// Events per request (at most).
    pub batch: usize,
    /// Events per second; `None` sends as fast as the gateway acknowledges.
    pub rate: Option<f64>,
    /// A request still failing after this long is given up (its events count as failed).
    pub give_up_after: Duration,
    /// Bearer token, if the gateway requires one.
    pub token: Option<String>,
    /// PEM CA certificate to verify a TLS gateway (`https://` URLs).
    pub ca_file: Option<std::path::PathBuf>,
    /// Where events come from.
    pub source: Source,
}

/// How a send ended.
#[derive(Debug)]
pub struct SendSummary {
    /// The SDK's final counters.
    pub stats: Stats,
    /// Why events failed, when some did.
    pub last_error: Option<String>,
    /// Wall time from the first event to the last acknowledgement.
    pub elapsed: Duration,
}

impl SendSummary {
    /// Whether every event was acknowledged by the gateway.
    pub fn complete(&self) -> bool {
        self.stats.failed == 0 && self.stats.dropped == 0 && self.stats.pending == 0
    }
}

/// Sends every event and waits until each is acknowledged or given up.
pub async fn send(options: SendOptions) -> anyhow::Result<SendSummary> {
    anyhow::ensure!(options.batch > 0, "--batch must be at least 1");
    if let Some(rate) = options.rate {
        anyhow::ensure!(
            rate.is_finite() && rate > 0.0,
            "--rate must be a positive number of events per second"
        );
    }
    let client = client(&options)?;
    let progress = progress_bar(options.count);
    let ticker = tokio::spawn({
        let (client, progress) = (client.clone(), progress.clone());
        async move {
            loop {
                progress.set_position(client.stats().sent);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    let started = Instant::now();
    for n in 0..options.count {
        if let Some(rate) = options.rate {
            let due = started + Duration::from_secs_f64(n as f64 / rate);
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
            }
        }
        // A refused event (queue full past the wait, or closed) is counted in `dropped`.
        let _ = client.log_async(sdk_event(options.source.event(n))).await;
    }
    let shutdown = client.shutdown().await;
    ticker.abort();
    progress.finish_and_clear();
    let elapsed = started.elapsed();
    let (stats, last_error) = match shutdown {
        Shutdown::Complete(stats) => (stats, None),
        Shutdown::Incomplete { stats, last_error } => (stats, last_error.map(|e| e.to_string())),
    };
    Ok(SendSummary {
        stats,
        last_error,
        elapsed,
    })
}

fn client(options: &SendOptions) -> anyhow::Result<Client> {
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_else(|_| "localhost".into());
    let mut builder = Client::builder()
        .endpoint(options.gateway.clone())
        .stream(options.stream.clone())
        .resource_from_env(false)
        .service_name(options.service.clone())
        .resource_attribute("host.name", host.trim().to_owned())
        .max_batch_events(options.batch)
        // Waiting for room is the back-pressure a bulk send wants: nothing is dropped
        // while the gateway is slow or away.
        .overflow(OverflowPolicy::Block {
            timeout: options.give_up_after,
        })
        .retry(RetryPolicy {
            give_up_after: Some(options.give_up_after),
            ..RetryPolicy::default()
        })
        .shutdown_timeout(options.give_up_after + Duration::from_secs(30))
        .runtime(tokio::runtime::Handle::current());
    if let Some(token) = &options.token {
        builder = builder.bearer_token(token.clone());
    }
    if let Some(path) = &options.ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("cannot read CA file {}: {e}", path.display()))?;
        builder = builder.tls(tlake_producer_sdk::Tls::new().ca_pem(pem));
    }
    builder
        .build()
        .map_err(|e| anyhow::anyhow!("cannot send to {}: {e}", options.gateway))
}

/// Acknowledged events against the total, with the rate; drawn only on a terminal.
fn progress_bar(count: u64) -> ProgressBar {
    let bar = ProgressBar::new(count);
    if let Ok(style) = ProgressStyle::with_template(
        "{bar:40} {human_pos}/{human_len} acknowledged, {per_sec}, eta {eta}",
    ) {
        bar.set_style(style);
    }
    bar
}

/// The SDK's event for one of the source's events (ids are the SDK's own).
fn sdk_event(event: LogEvent) -> Event {
    let severity = match event.severity_number {
        ..=4 => Severity::Trace,
        5..=8 => Severity::Debug,
        9..=12 => Severity::Info,
        13..=16 => Severity::Warn,
        17..=20 => Severity::Error,
        _ => Severity::Fatal,
    };
    let body = match event.body.and_then(|b| b.value) {
        Some(any_value::Value::StringValue(s)) => s,
        _ => String::new(),
    };
    let mut out =
        Event::new(severity, body).at(UNIX_EPOCH + Duration::from_nanos(event.time_unix_nano));
    for kv in event.attributes {
        if let Some(any_value::Value::StringValue(s)) = kv.value.and_then(|v| v.value) {
            out = out.attr(kv.key, s);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_events_keep_severity_time_body_and_attributes() {
        for n in 0..5 {
            let raw = Source::Synthetic.event(n);
            let (number, time) = (raw.severity_number, raw.time_unix_nano);
            let event = sdk_event(raw);
            assert_eq!(event.severity().number(), number);
            assert_eq!(event.time_unix_nano(), time);
            assert!(
                format!("{:?}", event.body()).contains(&format!("seq={n}")),
                "{event:?}"
            );
            let keys: Vec<&str> = event.attributes().map(|(k, _)| k).collect();
            assert_eq!(
                keys,
                ["http.route", "user.id", "service.component", "k8s.pod.name"]
            );
        }
    }
}
