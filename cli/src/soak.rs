//! `tlake bench soak`: the whole pipeline on one box for minutes — an
//! offered load through a running gateway, Kafka and compactor into the
//! table — and what it cost: sustained events/s, freshness (gateway OK →
//! committed), each watched process's CPU and RSS over time, Kafka lag over
//! time, files and bytes per event, and the ledger (acknowledged = rows =
//! distinct ids). The series go to a CSV and PNG plots in `--out`.
//!
//! Freshness is exact per request up to the poll interval: every OK says
//! where its records were written, and a poller asks the gateway's
//! Watermark RPC (the compactor group's committed offsets, written right
//! after each table commit) every [`POLL`]; a request is committed at the
//! first poll whose offsets pass all of its positions.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use hdrhistogram::Histogram;
use tlake_proto::v1::WatermarkRequest;
use tlake_proto::v1::log_ingest_client::LogIngestClient;
use tonic::transport::Channel;

use crate::events::Source;
use crate::lake::{LakeArgs, S3Keys};
use crate::load::{self, Ack, OfferedLoad};
use crate::plot::{Series, line_chart};
use crate::sql::Session;

/// How often the committed offsets are asked for.
const POLL: Duration = Duration::from_millis(200);
/// How often the processes are sampled.
const SAMPLE: Duration = Duration::from_secs(1);
/// The throughput plot's window, seconds.
const RATE_WINDOW_S: usize = 10;
/// After the load: how long the table may take to catch up.
const DRAIN: Duration = Duration::from_secs(180);

/// Benchmark settings.
#[derive(Debug)]
pub struct SoakBench {
    /// Gateway URL.
    pub gateway: String,
    /// The offered load (the stream's table must be compacted by a running compactor).
    pub load: OfferedLoad,
    /// Event source.
    pub source: Source,
    /// Processes to sample: name → pid (this process is always sampled, as `harness`).
    pub watch: Vec<(String, u32)>,
    /// Catalog and object store, for the ledger and the table's files.
    pub lake: LakeArgs,
    /// DuckDB extension directory.
    pub extension_dir: PathBuf,
    /// Where the CSV and the plots go.
    pub out: PathBuf,
    /// Seconds at the start left out of the RSS-growth figure.
    pub warmup: Duration,
    /// Runs of the load, one after another.
    pub runs: usize,
}

/// One sample of the watched processes, `t` seconds into the load.
#[derive(Debug, Clone)]
struct Sample {
    t: f64,
    /// Per process: (cores used since the last sample, RSS MiB).
    processes: Vec<(f64, f64)>,
    /// Records written (highest acknowledged offsets) but not committed.
    lag_records: i64,
}

/// What the committed offsets were at one poll.
#[derive(Debug)]
struct Poll {
    at: Instant,
    committed: BTreeMap<i32, i64>,
}

/// What one run measured, for the summary of several.
#[derive(Debug, Clone)]
struct SoakRun {
    acked_per_s: f64,
    /// OK -> committed, ms: p50, p90, p99, max.
    fresh_ms: [f64; 4],
    lag_max: i64,
    /// Per watched process: mean cores, and RSS growth from after warm-up to the end (a ratio).
    processes: Vec<(f64, f64)>,
}

/// Runs the soak `bench.runs` times, one after another on the same
/// processes and table, and prints each report and, with several, the
/// median and range of each figure. `Err` when the ledger does not add up.
pub async fn run(bench: &SoakBench) -> Result<()> {
    anyhow::ensure!(bench.runs > 0, "--runs must be at least 1");
    let channel = load::connect(&bench.gateway).await?;
    let keys = S3Keys::from_env()?;
    let mut watch = bench.watch.clone();
    watch.push(("harness".into(), std::process::id()));
    for (name, pid) in &watch {
        crate::bench::cpu_seconds(*pid).with_context(|| format!("--watch {name}={pid}"))?;
    }
    let (mut n, mut acked) = (0u64, 0u64);
    let mut runs = Vec::new();
    for i in 0..bench.runs {
        let out = if bench.runs == 1 {
            bench.out.clone()
        } else {
            println!("run {} of {}:", i + 1, bench.runs);
            bench.out.join(format!("run-{}", i + 1))
        };
        runs.push(run_once(bench, &channel, &keys, &watch, &out, &mut n, &mut acked).await?);
    }
    if runs.len() > 1 {
        let names: Vec<&str> = watch.iter().map(|(n, _)| n.as_str()).collect();
        print!("{}", summary(&names, &runs));
    }
    Ok(())
}

/// Median (min–max) of each run's figures.
fn summary(names: &[&str], runs: &[SoakRun]) -> String {
    use crate::bench::{Show, Spread};
    let of = |f: &dyn Fn(&SoakRun) -> f64, digits| Spread::of(runs.iter().map(f)).show(digits);
    let mut text = format!(
        "{} runs, median (min–max):\n  acknowledged events/s {}\n  OK -> committed ms: p50 {}  p90 {}  \
         p99 {}  max {}\n  Kafka lag max, records {}\n",
        runs.len(),
        of(&|r| r.acked_per_s, 0),
        of(&|r| r.fresh_ms[0], 0),
        of(&|r| r.fresh_ms[1], 0),
        of(&|r| r.fresh_ms[2], 0),
        of(&|r| r.fresh_ms[3], 0),
        of(&|r| r.lag_max as f64, 0),
    );
    for (i, name) in names.iter().enumerate() {
        text += &format!(
            "  {name}: cores {}, RSS growth % {}\n",
            of(&|r| r.processes[i].0, 2),
            of(&|r| r.processes[i].1 * 100.0, 1),
        );
    }
    text
}

/// One run: the load, the drain, the report, and the ledger of everything
/// acknowledged so far (`acked`, `n` carry over from earlier runs).
async fn run_once(
    bench: &SoakBench,
    channel: &Channel,
    keys: &S3Keys,
    watch: &[(String, u32)],
    out: &Path,
    n: &mut u64,
    acked_so_far: &mut u64,
) -> Result<SoakRun> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let stop = Arc::new(AtomicBool::new(false));
    let polls: Arc<Mutex<Vec<Poll>>> = Arc::default();
    let high: Arc<Mutex<BTreeMap<i32, i64>>> = Arc::default();
    let poller = tokio::spawn(poll_committed(
        load::client(channel.clone()),
        bench.load.stream.clone(),
        stop.clone(),
        polls.clone(),
    ));
    let started = Instant::now();
    let sampler = tokio::spawn(sample(
        watch.to_vec(),
        started,
        stop.clone(),
        polls.clone(),
        high.clone(),
    ));

    let on_ack = {
        let high = high.clone();
        move |ack: &Ack| {
            let mut high = high.lock().expect("high");
            for &(p, o) in &ack.written {
                let h = high.entry(p).or_insert(o);
                *h = (*h).max(o);
            }
        }
    };
    let offered = load::offer(channel, &bench.load, &bench.source, n, on_ack).await?;

    // Until every acknowledged record is committed (or DRAIN passes).
    let drained_by = Instant::now() + DRAIN;
    let target = high.lock().expect("high").clone();
    while Instant::now() < drained_by && !reached(&polls, &target) {
        tokio::time::sleep(POLL).await;
    }
    let load_end = offered.sent_for.as_secs_f64();
    let caught_up = reached(&polls, &target);
    stop.store(true, Ordering::SeqCst);
    poller.await??;
    let samples = sampler.await??;
    let polls = std::mem::take(&mut *polls.lock().expect("polls"));

    let committed_at = commit_times(&offered.acks, &polls);
    let mut fresh = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    for (ack, at) in offered.acks.iter().zip(&committed_at) {
        if let Some(at) = at {
            fresh.record((*at - ack.at).as_micros().max(1) as u64)?;
        }
    }
    let never = committed_at.iter().filter(|c| c.is_none()).count();
    let acked = offered.events();
    *acked_so_far += acked;
    let (rows, distinct, files, bytes) = ledger(bench, keys).await?;

    let names: Vec<&str> = watch.iter().map(|(n, _)| n.as_str()).collect();
    write_csv(&out.join("soak.csv"), &names, &samples)?;
    plot(
        out,
        &names,
        &samples,
        &offered.acks,
        &committed_at,
        started,
        &fresh,
    )?;

    let secs = offered.sent_for.as_secs_f64();
    let ms = |q: f64| fresh.value_at_quantile(q) as f64 / 1000.0;
    let fresh_ms = [ms(0.5), ms(0.9), ms(0.99), fresh.max() as f64 / 1000.0];
    println!(
        "offered {} events/s in requests of {} for {:.0} s: acknowledged {acked} events = {:.0} events/s \
         ({} requests failed, {} not sent because {} were in flight)",
        bench.load.rate,
        bench.load.batch,
        secs,
        acked as f64 / secs,
        offered.failed,
        offered.late,
        bench.load.concurrency
    );
    println!(
        "committed: {} of {} requests{}; OK -> committed, ms: p50 {:.0}  p90 {:.0}  p99 {:.0}  max {:.0} \
         (polled every {} ms)",
        offered.acks.len() - never,
        offered.acks.len(),
        if caught_up { "" } else { " (NOT caught up)" },
        fresh_ms[0],
        fresh_ms[1],
        fresh_ms[2],
        fresh_ms[3],
        POLL.as_millis()
    );
    let lag_max = samples.iter().map(|s| s.lag_records).max().unwrap_or(0);
    println!(
        "Kafka lag, records: max {lag_max}, at the end of the load {}",
        samples
            .iter()
            .rfind(|s| s.t <= load_end)
            .map_or(0, |s| s.lag_records)
    );
    println!(
        "| process | mean cores | RSS after warm-up MiB | RSS at the end MiB | growth | peak RSS MiB |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let during: Vec<&Sample> = samples.iter().filter(|s| s.t <= load_end).collect();
    let warm = bench.warmup.as_secs_f64().min(load_end / 2.0);
    let mut processes = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let cores = mean(during.iter().map(|s| s.processes[i].0));
        let after_warmup = mean(
            during
                .iter()
                .filter(|s| s.t > warm && s.t <= warm + 30.0)
                .map(|s| s.processes[i].1),
        );
        let end = mean(
            during
                .iter()
                .filter(|s| s.t > load_end - 30.0)
                .map(|s| s.processes[i].1),
        );
        let peak = samples.iter().map(|s| s.processes[i].1).fold(0.0, f64::max);
        let growth = end / after_warmup - 1.0;
        println!(
            "| {name} | {cores:.2} | {after_warmup:.0} | {end:.0} | {:+.1} % | {peak:.0} |",
            growth * 100.0
        );
        processes.push((cores, growth));
    }
    println!(
        "table: {files} data files, {bytes} bytes = {:.1} bytes/event",
        bytes as f64 / rows.max(1) as f64
    );
    let acked = *acked_so_far;
    println!(
        "ledger: acknowledged {acked} | rows {rows} | distinct ids {distinct}; plots and soak.csv in {}",
        out.display()
    );
    if rows != acked || distinct != acked {
        bail!(
            "the ledger does not add up: {acked} acknowledged, {rows} rows, {distinct} distinct ids"
        );
    }
    Ok(SoakRun {
        acked_per_s: offered.events() as f64 / secs,
        fresh_ms,
        lag_max,
        processes,
    })
}

/// Asks the committed offsets every [`POLL`] until `stop`.
async fn poll_committed(
    mut client: LogIngestClient<Channel>,
    stream: String,
    stop: Arc<AtomicBool>,
    polls: Arc<Mutex<Vec<Poll>>>,
) -> Result<()> {
    let mut ticks = tokio::time::interval(POLL);
    while !stop.load(Ordering::SeqCst) {
        ticks.tick().await;
        let answer = client
            .watermark(WatermarkRequest {
                stream: stream.clone(),
                wait_for: Vec::new(),
                timeout_ms: 0,
            })
            .await
            .map_err(|s| anyhow!("Watermark: {:?}: {}", s.code(), s.message()))?;
        let committed = answer
            .into_inner()
            .committed
            .iter()
            .map(|p| (p.partition, p.offset))
            .collect();
        polls.lock().expect("polls").push(Poll {
            at: Instant::now(),
            committed,
        });
    }
    Ok(())
}

/// Whether the last poll's offsets pass every position of `high`.
fn reached(polls: &Mutex<Vec<Poll>>, high: &BTreeMap<i32, i64>) -> bool {
    polls
        .lock()
        .expect("polls")
        .last()
        .is_some_and(|p| passes(&p.committed, high.iter().map(|(p, o)| (*p, *o))))
}

/// Whether `committed` (first offsets not committed) is past every position.
fn passes(committed: &BTreeMap<i32, i64>, mut positions: impl Iterator<Item = (i32, i64)>) -> bool {
    positions.all(|(p, o)| committed.get(&p).is_some_and(|c| *c > o))
}

/// Per ack, the first poll at or after its OK that passes its positions.
fn commit_times(acks: &[Ack], polls: &[Poll]) -> Vec<Option<Instant>> {
    acks.iter()
        .map(|ack| {
            let from = polls.partition_point(|p| p.at < ack.at);
            polls[from..]
                .iter()
                .find(|p| passes(&p.committed, ack.written.iter().copied()))
                .map(|p| p.at)
        })
        .collect()
}

/// Samples CPU and RSS of `watch` and the lag every [`SAMPLE`] until `stop`.
async fn sample(
    watch: Vec<(String, u32)>,
    started: Instant,
    stop: Arc<AtomicBool>,
    polls: Arc<Mutex<Vec<Poll>>>,
    high: Arc<Mutex<BTreeMap<i32, i64>>>,
) -> Result<Vec<Sample>> {
    let mut ticks = tokio::time::interval(SAMPLE);
    let mut last: Vec<f64> = Vec::new();
    let mut last_at = Instant::now();
    for (_, pid) in &watch {
        last.push(crate::bench::cpu_seconds(*pid)?);
    }
    let mut samples = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        ticks.tick().await;
        let now = Instant::now();
        let wall = (now - last_at).as_secs_f64().max(1e-3);
        let mut processes = Vec::with_capacity(watch.len());
        for (i, (name, pid)) in watch.iter().enumerate() {
            let cpu = crate::bench::cpu_seconds(*pid)
                .with_context(|| format!("{name} (pid {pid}) is gone"))?;
            processes.push((
                (cpu - last[i]) / wall,
                crate::bench::status_mib(&pid.to_string(), "VmRSS")?,
            ));
            last[i] = cpu;
        }
        last_at = now;
        let lag_records = {
            let high = high.lock().expect("high");
            let polls = polls.lock().expect("polls");
            let committed = polls.last().map(|p| &p.committed);
            high.iter()
                .map(|(p, o)| {
                    (o + 1 - committed.and_then(|c| c.get(p)).copied().unwrap_or(0)).max(0)
                })
                .sum()
        };
        samples.push(Sample {
            t: (now - started).as_secs_f64(),
            processes,
            lag_records,
        });
    }
    Ok(samples)
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0u32), |(s, n), v| (s + v, n + 1));
    if n == 0 { f64::NAN } else { sum / f64::from(n) }
}

/// Rows, distinct ids, data files and their bytes of the stream's table.
async fn ledger(bench: &SoakBench, keys: &S3Keys) -> Result<(u64, u64, u64, u64)> {
    let catalog = bench.lake.connect(keys).await?;
    let table = catalog.load_table(&bench.load.stream).await?;
    table
        .metadata()
        .current_snapshot()
        .context("the table has no snapshot")?;
    let crate::tables::TableInfo { files, bytes, .. } =
        crate::tables::info(&bench.load.stream, &table);
    let session = Session::attach(&bench.extension_dir, &bench.lake, keys)?;
    let batches = session.query(&format!(
        "SELECT count(*), count(DISTINCT event_id) FROM \"{}\".\"{}\".\"{}\"",
        bench.lake.warehouse, bench.lake.namespace, bench.load.stream
    ))?;
    let first = batches.first().context("a count")?;
    let value = |c: usize| first.column(c).as_primitive::<Int64Type>().value(0) as u64;
    Ok((value(0), value(1), files, bytes))
}

fn write_csv(path: &Path, names: &[&str], samples: &[Sample]) -> Result<()> {
    let mut out = csv::Writer::from_path(path)?;
    let mut header = vec!["t_s".to_owned(), "lag_records".to_owned()];
    for name in names {
        header.push(format!("{name}_cores"));
        header.push(format!("{name}_rss_mib"));
    }
    out.write_record(&header)?;
    for s in samples {
        let mut row = vec![format!("{:.1}", s.t), s.lag_records.to_string()];
        for (cores, rss) in &s.processes {
            row.push(format!("{cores:.3}"));
            row.push(format!("{rss:.1}"));
        }
        out.write_record(&row)?;
    }
    out.flush()?;
    Ok(())
}

/// throughput.png, freshness.png, cpu.png, rss.png and lag.png in `out`.
fn plot(
    out: &Path,
    names: &[&str],
    samples: &[Sample],
    acks: &[Ack],
    committed_at: &[Option<Instant>],
    started: Instant,
    fresh: &Histogram<u64>,
) -> Result<()> {
    // Events per whole second, acknowledged and committed.
    let seconds = samples.last().map_or(1, |s| s.t.ceil() as usize + 1);
    let (mut acked, mut committed) = (vec![0.0; seconds], vec![0.0; seconds]);
    for (ack, at) in acks.iter().zip(committed_at) {
        let second = |t: Instant| ((t - started).as_secs_f64() as usize).min(seconds - 1);
        acked[second(ack.at)] += ack.events as f64;
        if let Some(at) = at {
            committed[second(*at)] += ack.events as f64;
        }
    }
    // Mean rates over windows of a flush interval or two: per second the
    // committed line is a comb of commits.
    let per_second = |v: &[f64]| -> Vec<(f64, f64)> {
        v.chunks(RATE_WINDOW_S)
            .enumerate()
            .map(|(w, c)| {
                (
                    ((w * RATE_WINDOW_S) + c.len()) as f64,
                    c.iter().sum::<f64>() / c.len() as f64,
                )
            })
            .collect()
    };
    line_chart(
        &out.join("throughput.png"),
        &format!("Events per second ({RATE_WINDOW_S} s means)"),
        "seconds",
        "events/s",
        &[
            Series::new("acknowledged by the gateway", per_second(&acked)),
            Series::new("committed to the table", per_second(&committed)),
        ],
    )?;
    let cdf: Vec<(f64, f64)> = fresh
        .iter_quantiles(1)
        .map(|q| {
            (
                q.value_iterated_to() as f64 / 1e6,
                q.quantile_iterated_to() * 100.0,
            )
        })
        .collect();
    line_chart(
        &out.join("freshness.png"),
        "Gateway OK -> committed (cumulative)",
        "seconds",
        "% of requests",
        &[Series::new("requests", cdf)],
    )?;
    let by_process = |pick: fn(&(f64, f64)) -> f64| -> Vec<Series> {
        names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                Series::new(
                    name,
                    samples
                        .iter()
                        .map(|s| (s.t, pick(&s.processes[i])))
                        .collect(),
                )
            })
            .collect()
    };
    line_chart(
        &out.join("cpu.png"),
        "CPU per process",
        "seconds",
        "cores",
        &by_process(|p| p.0),
    )?;
    line_chart(
        &out.join("rss.png"),
        "Resident memory per process",
        "seconds",
        "MiB",
        &by_process(|p| p.1),
    )?;
    line_chart(
        &out.join("lag.png"),
        "Kafka lag (records written, not yet committed)",
        "seconds",
        "records",
        &[Series::new(
            "lag",
            samples
                .iter()
                .map(|s| (s.t, s.lag_records as f64))
                .collect(),
        )],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_committed_at_the_first_poll_past_all_its_positions() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let poll = |ms, c: &[(i32, i64)]| Poll {
            at: at(ms),
            committed: c.iter().copied().collect(),
        };
        let polls = [
            poll(0, &[(0, 5), (1, 0)]),
            poll(200, &[(0, 11), (1, 3)]),
            poll(400, &[(0, 11), (1, 4)]),
        ];
        let ack = |ms, written: &[(i32, i64)]| Ack {
            at: at(ms),
            events: 10,
            written: written.to_vec(),
        };
        let acks = [
            ack(10, &[(0, 10)]),         // first passed at 200
            ack(10, &[(0, 10), (1, 3)]), // partition 1 needs > 3: at 400
            ack(300, &[(0, 4)]),         // committed before its OK: the next poll
            ack(10, &[(0, 11)]),         // never
        ];
        assert_eq!(
            commit_times(&acks, &polls),
            vec![Some(at(200)), Some(at(400)), Some(at(400)), None]
        );
    }

    #[test]
    fn the_summary_gives_the_median_and_range_of_each_figure() {
        let run = |per_s: f64, p99: f64, growth: f64| SoakRun {
            acked_per_s: per_s,
            fresh_ms: [1000.0, 2000.0, p99, p99 + 500.0],
            lag_max: 100,
            processes: vec![(0.4, growth), (0.1, 0.0)],
        };
        let runs = [
            run(199_000.0, 7000.0, 0.05),
            run(200_000.0, 9000.0, 0.12),
            run(198_000.0, 8000.0, 0.08),
        ];
        let text = summary(&["compactor", "gateway"], &runs);
        assert!(text.starts_with("3 runs, median (min–max):"), "{text}");
        assert!(
            text.contains("acknowledged events/s 199000 (198000–200000)"),
            "{text}"
        );
        assert!(text.contains("p99 8000 (7000–9000)"), "{text}");
        assert!(
            text.contains("compactor: cores 0.40 (0.40–0.40), RSS growth % 8.0 (5.0–12.0)"),
            "{text}"
        );
        assert!(text.contains("gateway: cores 0.10"), "{text}");
    }
}
