//! `tlake bench gateway`: drives SendLogs at full speed against a running
//! gateway and reports throughput, latency percentiles (including the Kafka
//! ack, since OK waits for it) and the gateway's CPU time per event.
//!
//! With `--kafka`, each run of the gateway is paired with a run of its
//! ceiling: this process producing the very records the gateway would write
//! for the same requests (its own chunking, producer settings and "wait for
//! every delivery report" per request, `tlake_ingest_gateway::produce`)
//! straight to the broker — what any Kafka front door on this box could
//! carry. The two alternate run by run (`--runs`), so the box's load falls
//! on both alike, and the summary gives medians, ranges and the ratio.
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
use tlake_ingest_gateway::chunk::Chunk;
use tlake_ingest_gateway::config::{KafkaConfig, Limits};
use tlake_ingest_gateway::events;
use tlake_ingest_gateway::produce::{Kafka, RequestDelivery};
use tlake_proto::v1::{self, SendLogsRequest};
use tonic::transport::Channel;

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
    /// Runs per batch size (each paired with a ceiling run under `kafka`).
    pub runs: usize,
    /// Measure the ceiling too: produce the same records straight to Kafka.
    pub kafka: Option<Ceiling>,
}

/// Where the ceiling runs produce: the broker and the topic the gateway's
/// stream routes to.
#[derive(Debug)]
pub struct Ceiling {
    /// Bootstrap servers.
    pub brokers: String,
    /// Topic.
    pub topic: String,
}

/// What carried the events to Kafka in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Front {
    /// The gateway, through SendLogs.
    Gateway,
    /// librdkafka in this process, the same records (the ceiling).
    Librdkafka,
}

impl std::fmt::Display for Front {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            Self::Gateway => "gateway",
            Self::Librdkafka => "librdkafka",
        })
    }
}

/// The result of one run.
#[derive(Debug)]
pub struct Run {
    /// What carried the events.
    pub front: Front,
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
    /// CPU time per event in microseconds of the front (the gateway when its
    /// pid is known; this process for librdkafka).
    pub cpu_us_per_event: Option<f64>,
    /// The front's CPU use over the run, in cores.
    pub cpu_cores: Option<f64>,
    /// Requests that failed.
    pub errors: u64,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "| {:<10} | {:>5} | {:>10.0} | {:>7.1} | {:>5.0} | {:>7.2} | {:>7.2} | {:>7.2} | {:>9} | {:>6} | {:>6} |",
            self.front,
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
pub const TABLE_HEADER: &str = "| front      | batch |   events/s |    MB/s | B/evt | p50 ms  | p99 ms  | p99.9ms | cpu µs/ev | cores  | errors |\n|------------|------:|-----------:|--------:|------:|--------:|--------:|--------:|----------:|-------:|-------:|";

/// Runs `bench.runs` benchmarks per batch size (with `kafka`, a ceiling run
/// before each gateway run), calling `each` as a run ends.
pub async fn gateway(bench: &GatewayBench, mut each: impl FnMut(&Run)) -> anyhow::Result<Vec<Run>> {
    anyhow::ensure!(bench.runs > 0, "--runs must be at least 1");
    let channel = Channel::from_shared(bench.gateway.clone())?
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to the gateway at {}: {e}", bench.gateway))?;
    let kafka = match &bench.kafka {
        None => None,
        Some(ceiling) => {
            let config = KafkaConfig {
                brokers: ceiling.brokers.clone(),
                ..KafkaConfig::default()
            };
            let kafka = Kafka::new(&config)
                .map_err(|e| anyhow::anyhow!("cannot create a Kafka producer: {e}"))?;
            anyhow::ensure!(
                kafka.reachable(Duration::from_secs(5)).await,
                "no Kafka broker answers at {} (deploy/local/stack up)",
                ceiling.brokers
            );
            Some((Arc::new(kafka), ceiling.topic.clone()))
        }
    };
    let mut runs = Vec::new();
    for &batch in &bench.batches {
        let pool = Pool::new(bench, batch)?;
        for _ in 0..bench.runs {
            if let Some((kafka, topic)) = &kafka {
                let target = Target::Kafka(kafka.clone(), topic.clone(), pool.records.clone());
                let run = run(bench, &pool, target).await?;
                each(&run);
                runs.push(run);
            }
            let run = run(
                bench,
                &pool,
                Target::Gateway(channel.clone(), pool.requests.clone()),
            )
            .await?;
            each(&run);
            runs.push(run);
        }
    }
    Ok(runs)
}

/// The requests a run re-sends, and the Kafka records the gateway makes of
/// each (for the ceiling).
struct Pool {
    batch: usize,
    requests: Arc<Vec<Bytes>>,
    records: Arc<Vec<Vec<Chunk>>>,
    bytes_per_event: f64,
}

/// Where a run sends.
enum Target {
    Gateway(Channel, Arc<Vec<Bytes>>),
    Kafka(Arc<Kafka>, String, Arc<Vec<Vec<Chunk>>>),
}

impl Pool {
    fn new(bench: &GatewayBench, batch: usize) -> anyhow::Result<Self> {
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
        let limits = Limits::default();
        let records = pool
            .iter()
            .map(|body| {
                let (stream, events) = events::send_logs(body)?;
                events.check(&limits)?;
                let stream = if stream.is_empty() {
                    tlake_proto::contract::DEFAULT_STREAM
                } else {
                    &stream
                };
                Ok(events.chunks(stream, v1::Source::SendLogs, 1, limits.chunk_bytes))
            })
            .collect::<Result<Vec<_>, tlake_ingest_gateway::error::GatewayError>>()
            .map_err(|e| {
                anyhow::anyhow!("the gateway would refuse the benchmark's requests: {e}")
            })?;
        Ok(Self {
            batch,
            requests: Arc::new(pool),
            records: Arc::new(records),
            bytes_per_event: event_bytes as f64 / (pool_size * batch) as f64,
        })
    }
}

async fn run(bench: &GatewayBench, pool: &Pool, target: Target) -> anyhow::Result<Run> {
    let batch = pool.batch;
    let (front, pid) = match &target {
        Target::Gateway(..) => (Front::Gateway, bench.gateway_pid),
        Target::Kafka(..) => (Front::Librdkafka, Some(std::process::id())),
    };
    let target = Arc::new(target);
    // Warm up connections and the producer.
    send(&target, 0)
        .await
        .map_err(|e| anyhow::anyhow!("warm-up request failed: {e}"))?;

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let cpu_before = pid.map(cpu_seconds).transpose()?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    let requests = pool.requests.len();
    for worker in 0..bench.concurrency {
        let (target, stop, acked, errors) =
            (target.clone(), stop.clone(), acked.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut histogram =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
            let mut i = worker;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let sent = send(&target, i % requests).await;
                i += 1;
                match sent {
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
    let cpu = match (pid, cpu_before) {
        (Some(pid), Some(before)) => Some(cpu_seconds(pid)? - before),
        _ => None,
    };
    let events = acked.load(Ordering::Relaxed) as f64;
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    let bytes_per_event = pool.bytes_per_event;
    Ok(Run {
        front,
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

/// Sends request `i` of the pool: SendLogs to the gateway, or its records
/// to Kafka, waiting (like the gateway) for every delivery report.
async fn send(target: &Target, i: usize) -> Result<(), String> {
    match target {
        Target::Gateway(channel, requests) => {
            crate::load::send_logs::<()>(channel.clone(), requests[i].clone())
                .await
                .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
        }
        Target::Kafka(kafka, topic, records) => match kafka.produce_all(topic, &records[i]).await {
            RequestDelivery::Delivered(_) => Ok(()),
            RequestDelivery::Incomplete { reason, .. } => Err(reason),
        },
    }
}

/// Medians and ranges per front and batch size, and — when the ceiling was
/// measured — the gateway's share of it, run pair by run pair.
pub fn summary(runs: &[Run]) -> String {
    use std::fmt::Write as _;
    let mut out = String::from(
        "median (min–max) of the runs\n\
         | front      | batch | runs |             events/s |      p99 ms      |   cpu µs/event   | events/s per core |\n\
         |------------|------:|-----:|---------------------:|-----------------:|-----------------:|------------------:|\n",
    );
    let mut batches: Vec<usize> = runs.iter().map(|r| r.batch).collect();
    batches.dedup();
    for &batch in &batches {
        for front in [Front::Librdkafka, Front::Gateway] {
            let of: Vec<&Run> = runs
                .iter()
                .filter(|r| r.batch == batch && r.front == front)
                .collect();
            if of.is_empty() {
                continue;
            }
            let rate = Spread::of(of.iter().map(|r| r.events_per_sec));
            let p99 = Spread::of(of.iter().map(|r| r.latency_ms[1]));
            let cpu = Spread::of(of.iter().filter_map(|r| r.cpu_us_per_event));
            let per_core = Spread::of(of.iter().filter_map(|r| {
                r.cpu_cores
                    .filter(|&c| c > 0.0)
                    .map(|c| r.events_per_sec / c)
            }));
            let _ = writeln!(
                out,
                "| {front:<10} | {batch:>5} | {:>4} | {:>20} | {:>16} | {:>16} | {:>17} |",
                of.len(),
                rate.show(0),
                p99.show(1),
                cpu.show(2),
                per_core.show(0),
            );
        }
    }
    for &batch in &batches {
        let rates = |front| -> Vec<f64> {
            runs.iter()
                .filter(|r| r.batch == batch && r.front == front)
                .map(|r| r.events_per_sec)
                .collect()
        };
        let (ceiling, gateway) = (rates(Front::Librdkafka), rates(Front::Gateway));
        if ceiling.is_empty() {
            continue;
        }
        let ratio = Spread::of(
            ceiling
                .iter()
                .zip(&gateway)
                .filter(|(c, _)| **c > 0.0)
                .map(|(c, g)| g / c),
        );
        let _ = writeln!(
            out,
            "batch {batch}: the gateway carries {} of librdkafka's rate (gateway ÷ ceiling, run pair by run pair)",
            ratio.show_percent(),
        );
    }
    out
}

/// Median and range of a handful of measurements.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// The median (of an even count, the mean of the middle two).
    pub median: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
}

impl Spread {
    /// `None` without values.
    pub fn of(values: impl Iterator<Item = f64>) -> Option<Self> {
        let mut v: Vec<f64> = values.collect();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = match n {
            0 => return None,
            _ if n % 2 == 1 => v[n / 2],
            _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        };
        Some(Self {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }
}

/// "median (min–max)" with `digits` decimals; "-" for no values.
pub(crate) trait Show {
    fn show(&self, digits: usize) -> String;
    fn show_percent(&self) -> String;
}

impl Show for Option<Spread> {
    fn show(&self, digits: usize) -> String {
        self.map_or("-".into(), |s| {
            format!(
                "{:.digits$} ({:.digits$}–{:.digits$})",
                s.median, s.min, s.max
            )
        })
    }

    fn show_percent(&self) -> String {
        self.map_or("-".into(), |s| {
            format!(
                "{:.0} % ({:.0}–{:.0} %)",
                s.median * 100.0,
                s.min * 100.0,
                s.max * 100.0
            )
        })
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn run(front: Front, batch: usize, events_per_sec: f64, cores: f64) -> Run {
        Run {
            front,
            batch,
            events_per_sec,
            mb_per_sec: 0.0,
            bytes_per_event: 290.0,
            latency_ms: [1.0, 2.0, 3.0],
            cpu_us_per_event: Some(cores / events_per_sec * 1e6),
            cpu_cores: Some(cores),
            errors: 0,
        }
    }

    #[test]
    fn spreads_are_median_and_range() {
        let s = Spread::of([3.0, 1.0, 2.0].into_iter()).expect("values");
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        let s = Spread::of([4.0, 1.0, 2.0, 3.0].into_iter()).expect("values");
        assert_eq!(s.median, 2.5);
        assert_eq!(Spread::of(std::iter::empty()), None);
        assert_eq!(None.show(1), "-");
    }

    #[test]
    fn the_summary_pairs_runs_for_the_ratio() {
        let runs = [
            run(Front::Librdkafka, 1000, 1000.0, 1.0),
            run(Front::Gateway, 1000, 800.0, 0.5),
            run(Front::Librdkafka, 1000, 1000.0, 1.0),
            run(Front::Gateway, 1000, 900.0, 0.5),
            run(Front::Librdkafka, 1000, 2000.0, 1.0),
            run(Front::Gateway, 1000, 1000.0, 0.5),
        ];
        let text = summary(&runs);
        // Ratios 80 %, 90 %, 50 %: median 80.
        assert!(text.contains("carries 80 % (50–90 %)"), "{text}");
        // The gateway's rate per core: 1600, 1800, 2000 events/s.
        assert!(text.contains("1800 (1600–2000)"), "{text}");
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("| gateway"))
            .collect();
        assert_eq!(lines.len(), 1, "{text}");
        assert!(lines[0].contains("|    3 |"), "{text}");
    }
}
