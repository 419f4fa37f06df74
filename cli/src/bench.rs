//! `tlake bench gateway`: drives SendLogs at full speed against a running
//! gateway and reports throughput, latency percentiles (including the Kafka
//! ack, since OK waits for it) and the gateway's CPU time per event.
//!
//! Requests are built and encoded before the clock starts and re-sent from a
//! pool, so the figures measure the gateway, not this client. Event ids
//! repeat across the pool: point the gateway's stream at a topic nobody
//! compacts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use prost::Message;
use tlake_proto::codec::{PreEncoded, SEND_LOGS_PATH};
use tlake_proto::v1::SendLogsRequest;
use tonic::transport::Channel;
use tonic::{Request, Status};

use crate::events::{Source, resource};

/// Benchmark settings.
#[derive(Debug)]
pub struct GatewayBench {
    /// Gateway URL.
    pub gateway: String,
    /// The gateway's pid, to measure its CPU time (Linux /proc).
    pub gateway_pid: Option<u32>,
    /// Stream to send to.
    pub stream: String,
    /// Events per request, one run each.
    pub batches: Vec<usize>,
    /// Length of each run.
    pub duration: Duration,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Event source.
    pub source: Source,
}

/// The result of one run.
#[derive(Debug)]
pub struct Run {
    /// Events per request.
    pub batch: usize,
    /// Events acknowledged per second.
    pub events_per_sec: f64,
    /// Encoded event bytes acknowledged per second, in MB (10^6).
    pub mb_per_sec: f64,
    /// Mean encoded bytes per event.
    pub bytes_per_event: f64,
    /// SendLogs latency percentiles, milliseconds: p50, p99, p99.9.
    pub latency_ms: [f64; 3],
    /// Gateway CPU time per event in microseconds, when its pid is known.
    pub cpu_us_per_event: Option<f64>,
    /// Gateway CPU use over the run, in cores, when its pid is known.
    pub cpu_cores: Option<f64>,
    /// Requests that failed.
    pub errors: u64,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "| {:>5} | {:>10.0} | {:>7.1} | {:>5.0} | {:>7.2} | {:>7.2} | {:>7.2} | {:>9} | {:>6} | {:>6} |",
            self.batch,
            self.events_per_sec,
            self.mb_per_sec,
            self.bytes_per_event,
            self.latency_ms[0],
            self.latency_ms[1],
            self.latency_ms[2],
            self.cpu_us_per_event
                .map_or("-".into(), |c| format!("{c:.2}")),
            self.cpu_cores.map_or("-".into(), |c| format!("{c:.2}")),
            self.errors,
        )
    }
}

/// Header matching [`Run`]'s `Display`.
pub const TABLE_HEADER: &str = "| batch |   events/s |    MB/s | B/evt | p50 ms  | p99 ms  | p99.9ms | cpu µs/ev | cores  | errors |\n|------:|-----------:|--------:|------:|--------:|--------:|--------:|----------:|-------:|-------:|";

/// Runs one benchmark per batch size.
pub async fn gateway(bench: &GatewayBench) -> anyhow::Result<Vec<Run>> {
    let channel = Channel::from_shared(bench.gateway.clone())?
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to the gateway at {}: {e}", bench.gateway))?;
    let mut runs = Vec::new();
    for &batch in &bench.batches {
        runs.push(run(bench, channel.clone(), batch).await?);
    }
    Ok(runs)
}

async fn run(bench: &GatewayBench, channel: Channel, batch: usize) -> anyhow::Result<Run> {
    anyhow::ensure!(batch > 0, "batch sizes must be at least 1");
    let pool_size = (bench.concurrency * 4).max(16);
    let mut n = 0u64;
    let mut pool = Vec::with_capacity(pool_size);
    let mut event_bytes = 0usize;
    for _ in 0..pool_size {
        let events: Vec<_> = (0..batch)
            .map(|_| {
                n += 1;
                bench.source.event(n)
            })
            .collect();
        event_bytes += events.iter().map(Message::encoded_len).sum::<usize>();
        let request = SendLogsRequest {
            stream: bench.stream.clone(),
            resource: Some(resource("bench")),
            events,
        };
        pool.push(Bytes::from(request.encode_to_vec()));
    }
    let bytes_per_event = event_bytes as f64 / (pool_size * batch) as f64;
    let pool = Arc::new(pool);

    // Warm up connections and the producer.
    send(channel.clone(), pool[0].clone())
        .await
        .map_err(|s| anyhow::anyhow!("warm-up request failed: {:?}: {}", s.code(), s.message()))?;

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let cpu_before = bench.gateway_pid.map(cpu_seconds).transpose()?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..bench.concurrency {
        let (channel, pool, stop, acked, errors) = (
            channel.clone(),
            pool.clone(),
            stop.clone(),
            acked.clone(),
            errors.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut histogram =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
            let mut i = worker;
            while !stop.load(Ordering::Relaxed) {
                let body = pool[i % pool.len()].clone();
                i += 1;
                let t = Instant::now();
                match send(channel.clone(), body).await {
                    Ok(()) => {
                        let _ = histogram.record(t.elapsed().as_micros() as u64);
                        acked.fetch_add(batch as u64, Ordering::Relaxed);
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            histogram
        }));
    }
    tokio::time::sleep(bench.duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for task in tasks {
        histogram.add(task.await?)?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = match (bench.gateway_pid, cpu_before) {
        (Some(pid), Some(before)) => Some(cpu_seconds(pid)? - before),
        _ => None,
    };
    let events = acked.load(Ordering::Relaxed) as f64;
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    Ok(Run {
        batch,
        events_per_sec: events / elapsed,
        mb_per_sec: events * bytes_per_event / elapsed / 1e6,
        bytes_per_event,
        latency_ms: [ms(0.5), ms(0.99), ms(0.999)],
        cpu_us_per_event: cpu.filter(|_| events > 0.0).map(|c| c / events * 1e6),
        cpu_cores: cpu.map(|c| c / elapsed),
        errors: errors.load(Ordering::Relaxed),
    })
}

async fn send(channel: Channel, body: Bytes) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    grpc.unary(
        Request::new(body),
        http::uri::PathAndQuery::from_static(SEND_LOGS_PATH),
        PreEncoded::<()>::default(),
    )
    .await
    .map(drop)
}

/// User + system CPU seconds of a process so far.
pub(crate) fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| anyhow::anyhow!("cannot read /proc/{pid}/stat: {e}"))?;
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|u| u.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0);
    Ok(ticks / clock_ticks())
}

/// A `kB` field of `/proc/<pid>/status` (`pid` a number or `self`), in
/// MiB: `VmRSS` (resident now), `VmHWM` (peak resident).
pub(crate) fn status_mib(pid: &str, field: &str) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| anyhow::anyhow!("cannot read /proc/{pid}/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .ok_or_else(|| anyhow::anyhow!("no {field} in /proc/{pid}/status"))
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}
