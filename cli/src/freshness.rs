//! `tlake bench fresh`: how soon an acknowledged event is visible through
//! `tlake sql --fresh`, at a fixed offered rate, against a running gateway,
//! Kafka, compactor and catalog — and what a fresh query costs over a
//! committed-only one on the same table.
//!
//! Visibility is exact, not sampled: every SendLogs OK says where its
//! records were written (partition → highest offset), and the querier asks
//! the fresh view `max(kafka_offset)` per partition in a loop. The tail is
//! read up to the end offsets at each query's start, so a partition's rows
//! are visible as a prefix: a request is visible at the end of the first
//! query whose maxima reach its positions. Its latency is that moment minus
//! its OK.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type};
use hdrhistogram::Histogram;
use tonic::transport::Channel;

use crate::events::Source;
use crate::lake::{LakeArgs, S3Keys};
use crate::load::{self, Ack, OfferedLoad};
use crate::sql::{FreshOptions, Session};

/// The probe query's window of event time: requests not visible within it count as never seen.
const PROBE_WINDOW_S: u64 = 20;

/// Benchmark settings.
#[derive(Debug)]
pub struct FreshBench {
    /// Gateway URL.
    pub gateway: String,
    /// The offered load (the stream's table must be compacted by a running compactor).
    pub load: OfferedLoad,
    /// Event source.
    pub source: Source,
    /// Catalog and object store.
    pub lake: LakeArgs,
    /// DuckDB extension directory.
    pub extension_dir: std::path::PathBuf,
    /// Where the tail is read from.
    pub fresh: FreshOptions,
    /// After the runs: this many committed-only and fresh queries, alternating.
    pub compare: usize,
    /// Runs of the load, one after the other on the same stream; with more
    /// than one, a summary of medians and ranges follows.
    pub runs: usize,
}

/// What one run measured.
#[derive(Debug, Clone, Copy)]
struct FreshRun {
    acked_per_s: f64,
    /// OK → visible: p50, p90, p99, max (ms).
    visible_ms: [f64; 4],
    never: usize,
    queries: usize,
    /// Query time p50, p99 (ms).
    query_ms: [f64; 2],
}

/// One fresh query: when it began and ended, and the highest offset per partition it saw.
#[derive(Debug)]
struct Seen {
    ended: Instant,
    took: Duration,
    max_offset: BTreeMap<i32, i64>,
}

/// Runs the benchmark and prints its report: each run's, then (with
/// several) the median and range of each figure.
pub async fn run(bench: &FreshBench) -> Result<()> {
    anyhow::ensure!(bench.runs > 0, "--runs must be at least 1");
    let channel = load::connect(&bench.gateway).await?;
    let keys = S3Keys::from_env()?;
    let table = format!("\"{}\"", bench.load.stream.replace('"', "\"\""));

    // A fresh view covers tables with a snapshot: one request first, committed.
    let mut n = 0u64;
    let first = load::request(&bench.load.stream, bench.load.batch, &bench.source, &mut n);
    load::send_one(channel.clone(), first, bench.load.batch).await?;
    wait_for_snapshot(bench, &keys).await?;

    // One session for every run, as someone watching the stream keeps the
    // view open: its first query reads the whole uncommitted tail once,
    // before any load is measured. (A session per run made each run's first
    // query decode the tail the last run left, 2-3 s at 100K events/s, and
    // kept the last session's consumer and caches alive beside the next.)
    let mut session = {
        let (lake, extension_dir, fresh) = (
            bench.lake.clone(),
            bench.extension_dir.clone(),
            bench.fresh.clone(),
        );
        let (keys, runtime, probe) = (
            keys.clone(),
            tokio::runtime::Handle::current(),
            probe(&table),
        );
        tokio::task::spawn_blocking(move || -> Result<Session> {
            let catalog = runtime.block_on(lake.connect(&keys))?;
            let session = Session::attach(&extension_dir, &lake, &keys)?
                .with_fresh(&lake, catalog, runtime, &fresh)?;
            session.query(&probe)?;
            Ok(session)
        })
        .await??
    };
    let mut runs = Vec::new();
    for i in 0..bench.runs {
        if bench.runs > 1 {
            println!("run {} of {}:", i + 1, bench.runs);
        }
        let (run, back) = run_once(bench, &channel, &table, &mut n, session).await?;
        runs.push(run);
        session = back;
    }
    if runs.len() > 1 {
        print!("{}", summary(&runs));
    }
    if bench.compare > 0 {
        let compare = bench.compare;
        let (lake, table) = (bench.lake.clone(), table.clone());
        tokio::task::spawn_blocking(move || overhead(&session, &lake, &table, compare)).await??;
    }
    Ok(())
}

/// Median (min–max) of each run's figures.
fn summary(runs: &[FreshRun]) -> String {
    use crate::bench::{Show, Spread};
    let of = |f: fn(&FreshRun) -> f64| Spread::of(runs.iter().map(f)).show(0);
    format!(
        "{} runs, median (min–max):\n  acknowledged events/s {}\n  OK -> visible ms: p50 {}  p90 {}  p99 {}  max {}\n  \
         fresh query ms: p50 {}  p99 {}; requests never seen: {}\n",
        runs.len(),
        of(|r| r.acked_per_s),
        of(|r| r.visible_ms[0]),
        of(|r| r.visible_ms[1]),
        of(|r| r.visible_ms[2]),
        of(|r| r.visible_ms[3]),
        of(|r| r.query_ms[0]),
        of(|r| r.query_ms[1]),
        runs.iter().map(|r| r.never).sum::<usize>(),
    )
}

/// One run: the load, a querier asking the fresh view back to back, and
/// per acknowledged request the time until a query saw it.
async fn run_once(
    bench: &FreshBench,
    channel: &Channel,
    table: &str,
    n: &mut u64,
    session: Session,
) -> Result<(FreshRun, Session)> {
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let querier = {
        let (stop, seen, sql) = (stop.clone(), seen.clone(), probe(table));
        std::thread::spawn(move || -> Result<Session> {
            while !stop.load(Ordering::SeqCst) {
                let began = Instant::now();
                let batches = session.query(&sql)?;
                let mut max_offset = BTreeMap::new();
                for b in &batches {
                    let (p, o) = (
                        b.column(0).as_primitive::<Int32Type>(),
                        b.column(1).as_primitive::<Int64Type>(),
                    );
                    for i in 0..b.num_rows() {
                        max_offset.insert(p.value(i), o.value(i));
                    }
                }
                let ended = Instant::now();
                seen.lock().expect("seen").push(Seen {
                    ended,
                    took: ended - began,
                    max_offset,
                });
            }
            Ok(session)
        })
    };

    let cpu_before = crate::bench::cpu_seconds(std::process::id())?;
    let started = Instant::now();
    let offered = load::offer(channel, &bench.load, &bench.source, n, |_| {}).await?;
    let (failed, late, sent_for) = (offered.failed, offered.late, offered.sent_for);
    // Until the querier saw the last OK (or 60 s).
    let last = offered.acks.iter().map(|a| a.at).max();
    let give_up = Instant::now() + Duration::from_secs(60);
    while Instant::now() < give_up
        && !last.is_some_and(|l| {
            seen.lock()
                .expect("seen")
                .iter()
                .any(|s| s.ended > l + Duration::from_secs(1))
        })
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let session = tokio::task::spawn_blocking(move || querier.join())
        .await?
        .map_err(|_| anyhow!("the querier panicked"))??;
    let cpu = crate::bench::cpu_seconds(std::process::id())? - cpu_before;

    let acks = offered.acks;
    let seen = std::mem::take(&mut *seen.lock().expect("seen"));
    let (visible, never) = visibility(&acks, &seen)?;
    let mut took = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    for s in &seen {
        took.record(s.took.as_micros().max(1) as u64)?;
    }
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let events = acks.iter().map(|a| a.events as f64).sum::<f64>();
    let run = FreshRun {
        acked_per_s: events / sent_for.as_secs_f64(),
        visible_ms: [
            ms(&visible, 0.5),
            ms(&visible, 0.9),
            ms(&visible, 0.99),
            visible.max() as f64 / 1000.0,
        ],
        never,
        queries: seen.len(),
        query_ms: [ms(&took, 0.5), ms(&took, 0.99)],
    };
    println!(
        "offered {} events/s in requests of {} for {:.1} s: acknowledged {:.0} events/s ({} requests; \
         {failed} failed, {late} not sent because {} were in flight)",
        bench.load.rate,
        bench.load.batch,
        sent_for.as_secs_f64(),
        run.acked_per_s,
        acks.len(),
        bench.load.concurrency,
    );
    let [p50, p90, p99, max] = run.visible_ms;
    println!(
        "OK -> visible in --fresh, ms: p50 {p50:.0}  p90 {p90:.0}  p99 {p99:.0}  max {max:.0}  ({never} requests never seen)"
    );
    println!(
        "fresh queries: {}  took ms p50 {:.0}  p99 {:.0}; this process: {:.2} cores, RSS {} MiB (peak {} MiB)",
        run.queries,
        run.query_ms[0],
        run.query_ms[1],
        cpu / started.elapsed().as_secs_f64(),
        rss_mib("VmRSS"),
        rss_mib("VmHWM")
    );
    Ok((run, session))
}

/// What someone watching the stream asks: the last seconds. The committed
/// files older than that are skipped by their event-time bounds, so the
/// probe measures visibility, not a scan of everything committed so far.
fn probe(table: &str) -> String {
    format!(
        "SELECT kafka_partition, max(kafka_offset) FROM fresh.{table} \
         WHERE event_time >= now() - INTERVAL {PROBE_WINDOW_S} SECONDS GROUP BY ALL"
    )
}

async fn wait_for_snapshot(bench: &FreshBench, keys: &S3Keys) -> Result<()> {
    let catalog = bench.lake.connect(keys).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(table) = catalog.load_table(&bench.load.stream).await
            && table.metadata().current_snapshot().is_some()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "table {} has no snapshot after 120 s: is a compactor reading the stream's topic?",
                bench.load.stream
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Per acknowledged request, the time from its OK to the end of the first
/// query that saw its positions (in µs); and how many no query saw.
fn visibility(acks: &[Ack], seen: &[Seen]) -> Result<(Histogram<u64>, usize)> {
    let mut visible = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut never = 0;
    for ack in acks {
        let first = seen.iter().find(|s| {
            s.ended >= ack.at
                && ack
                    .written
                    .iter()
                    .all(|(p, o)| s.max_offset.get(p).is_some_and(|m| m >= o))
        });
        match first {
            Some(s) => visible.record((s.ended - ack.at).as_micros().max(1) as u64)?,
            None => never += 1,
        }
    }
    Ok((visible, never))
}

/// The same scan of the stream's table, committed-only and fresh, `pairs`
/// times each, alternating (the box is noisy: side by side, medians).
fn overhead(session: &Session, lake: &LakeArgs, table: &str, pairs: usize) -> Result<()> {
    let scan = |from: &str| {
        format!("SELECT count(*), count(DISTINCT service), max(event_time) FROM {from}")
    };
    let committed = scan(&format!(
        "\"{}\".\"{}\".{table}",
        lake.warehouse, lake.namespace
    ));
    let fresh = scan(&format!("fresh.{table}"));
    let rows = |sql: &str| -> Result<(i64, Duration)> {
        let began = Instant::now();
        let batches = session.query(sql)?;
        let took = began.elapsed();
        let count = batches
            .first()
            .map(|b| b.column(0).as_primitive::<Int64Type>().value(0))
            .context("a count")?;
        Ok((count, took))
    };
    let (mut c_took, mut f_took) = (Vec::new(), Vec::new());
    let (mut c_rows, mut f_rows) = (0, 0);
    for _ in 0..pairs {
        let (r, t) = rows(&committed)?;
        (c_rows, c_took) = (r, [c_took, vec![t]].concat());
        let (r, t) = rows(&fresh)?;
        (f_rows, f_took) = (r, [f_took, vec![t]].concat());
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (c, f) = (median(&mut c_took), median(&mut f_took));
    println!(
        "overhead, {pairs} pairs of `{}`: committed-only {c_rows} rows in {:.0} ms, fresh {f_rows} rows \
         in {:.0} ms (medians): fresh/committed = {:.2}",
        scan("<table>"),
        c.as_secs_f64() * 1000.0,
        f.as_secs_f64() * 1000.0,
        f.as_secs_f64() / c.as_secs_f64()
    );
    Ok(())
}

/// This process's `VmRSS` (now) or `VmHWM` (peak), MiB (Linux; 0 if unreadable).
fn rss_mib(key: &str) -> u64 {
    crate::bench::status_mib("self", key).map_or(0, |mib| mib as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(p99: f64, never: usize) -> FreshRun {
        FreshRun {
            acked_per_s: 100_000.0,
            visible_ms: [p99 / 4.0, p99 / 2.0, p99, p99 + 100.0],
            never,
            queries: 100,
            query_ms: [150.0, 400.0],
        }
    }

    #[test]
    fn the_summary_gives_medians_ranges_and_every_unseen_request() {
        let text = summary(&[run(833.0, 0), run(711.0, 1), run(702.0, 2)]);
        assert!(text.starts_with("3 runs"), "{text}");
        assert!(text.contains("p99 711 (702–833)"), "{text}");
        assert!(text.contains("requests never seen: 3"), "{text}");
    }
}
