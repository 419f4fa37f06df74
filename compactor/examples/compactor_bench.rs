//! Benchmark harness (not a test): Kafka → committed snapshot throughput,
//! bytes per event on disk, freshness under a steady offered load, and a
//! promoted attribute column against the same attribute in the map.
//!
//! Needs the local stack and a release build of the compactor:
//!
//! ```sh
//! eval "$(deploy/local/stack env)"
//! cargo build --release -p tlake-compactor --bin tlake-compactor --example compactor_bench
//! target/release/examples/compactor_bench throughput --events 3000000 --runs 5
//! target/release/examples/compactor_bench ab --events 3000000 --runs 5 --a OLD_BIN --b NEW_BIN
//! target/release/examples/compactor_bench corpus --dir /work/shared/corpus/loghub-2k
//! target/release/examples/compactor_bench freshness --rate 10000 --seconds 30
//! target/release/examples/compactor_bench promoted --events 10000000 --runs 5
//! target/release/examples/compactor_bench promoted --events 10000000 --corpus /work/shared/corpus/loghub-2k
//! ```
//!
//! Each run uses a fresh topic (4 partitions) and a fresh stream/table.
//! `TLAKE_COMPACTOR_BIN` runs another build of the compactor (an A/B of two
//! versions, alternating, on the same stack).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prost::Message as _;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tlake_catalog_client::{CatalogSettings, LakeCatalog, S3Settings};
use tlake_proto::v1::{AnyValue, KeyValue, LogBatch, LogEvent, Resource, any_value};

const PARTITIONS: i32 = 4;
const RECORD_BYTES: usize = 500 << 10;

fn env(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_owned())
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64
}

fn text(s: String) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(s)),
    })
}

fn kv(k: &str, v: String) -> KeyValue {
    KeyValue {
        key: k.to_owned(),
        value: text(v),
    }
}

/// A synthetic ~300-byte event shaped like the test kit's.
fn synthetic(n: u64) -> LogEvent {
    const MESSAGES: [&str; 4] = [
        "request completed method=GET path=/api/v1/orders status=200",
        "cache miss for key user:profile, falling back to database",
        "retrying upstream call after connection reset by peer",
        "slow query detected on table orders: full scan of partition",
    ];
    let i = n as usize;
    let now = now_ns();
    LogEvent {
        event_id: uuid::Uuid::now_v7().as_bytes().to_vec().into(),
        time_unix_nano: now,
        observed_time_unix_nano: now,
        severity_number: [9, 9, 9, 13, 17][i % 5],
        severity_text: ["INFO", "INFO", "INFO", "WARN", "ERROR"][i % 5].to_owned(),
        body: text(format!("{} seq={n}", MESSAGES[i % 4])),
        attributes: vec![
            kv("http.route", "/api/v1/orders/{id}".into()),
            kv("user.id", format!("u-{:06}", n % 100_000)),
            kv(
                "service.component",
                ["checkout", "payments", "search", "inventory"][i % 4].into(),
            ),
        ],
        trace_id: uuid::Uuid::new_v4().as_bytes().to_vec().into(),
        span_id: n.to_be_bytes().to_vec().into(),
        flags: 1,
        event_name: String::new(),
        scope_name: "tlake::bench".to_owned(),
    }
}

fn line_event(line: &str) -> LogEvent {
    let now = now_ns();
    LogEvent {
        event_id: uuid::Uuid::now_v7().as_bytes().to_vec().into(),
        time_unix_nano: now,
        observed_time_unix_nano: now,
        severity_number: 9,
        body: text(line.to_owned()),
        ..Default::default()
    }
}

struct Setup {
    brokers: String,
    topic: String,
    stream: String,
    catalog: LakeCatalog,
    producer: FutureProducer,
}

impl Setup {
    /// Deletes the run's topic (each run writes hundreds of MB to Kafka;
    /// the table stays for inspection).
    async fn drop_topic(&self) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .create()
            .expect("admin");
        match admin
            .delete_topics(&[&self.topic], &AdminOptions::new())
            .await
        {
            Ok(results) => {
                for r in results {
                    if let Err((topic, e)) = r {
                        eprintln!("warning: topic {topic} not deleted: {e}");
                    }
                }
            }
            Err(e) => eprintln!("warning: topic {} not deleted: {e}", self.topic),
        }
    }
}

async fn setup(name: &str) -> Setup {
    let brokers = env("TLAKE_KAFKA_BROKERS", "127.0.0.1:9092");
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let topic = format!("tlake-bench-{name}-{suffix}");
    let stream = format!("bench_{name}_{suffix}");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .expect("admin");
    for r in admin
        .create_topics(
            &[NewTopic::new(
                &topic,
                PARTITIONS,
                TopicReplication::Fixed(1),
            )],
            &AdminOptions::new(),
        )
        .await
        .expect("create topic")
    {
        r.expect("topic created");
    }
    let settings = CatalogSettings {
        uri: env("TLAKE_CATALOG_URI", "http://127.0.0.1:19120/iceberg/"),
        warehouse: env("TLAKE_WAREHOUSE", "telemetrylake"),
        namespace: "logs".into(),
        s3: S3Settings {
            endpoint: env("TLAKE_S3_ENDPOINT", "http://127.0.0.1:9000"),
            region: env("TLAKE_S3_REGION", "us-east-1"),
            path_style: true,
            access_key_id: env("TLAKE_S3_ACCESS_KEY", ""),
            secret_access_key: env("TLAKE_S3_SECRET_KEY", ""),
        },
        request_timeout: Duration::from_secs(30),
    };
    let catalog = LakeCatalog::connect(&settings)
        .await
        .expect("catalog (eval \"$(deploy/local/stack env)\" first)");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("message.max.bytes", "1000000")
        .create()
        .expect("producer");
    Setup {
        brokers,
        topic,
        stream,
        catalog,
        producer,
    }
}

/// Packs events into LogBatch records of ≤ RECORD_BYTES and produces them
/// round-robin. Returns (partition, offset, events, bytes, produce time) per record.
async fn produce(s: &Setup, events: Vec<LogEvent>) -> Vec<(i32, i64, usize, usize, Instant)> {
    let mut out = Vec::new();
    let mut chunk = Vec::new();
    let mut size = 0;
    let mut partition = 0;
    let mut pending = Vec::new();
    let flush = |chunk: Vec<LogEvent>, partition: i32| {
        let batch = LogBatch {
            stream: s.stream.clone(),
            resource: Some(Resource {
                attributes: vec![kv(
                    "service.name",
                    ["checkout", "payments", "search"][partition as usize % 3].into(),
                )],
            }),
            events: chunk,
            received_unix_nano: now_ns(),
            source: 1,
        };
        (batch.events.len(), batch.encode_to_vec())
    };
    for e in events {
        size += e.encoded_len() + 4;
        chunk.push(e);
        if size >= RECORD_BYTES {
            pending.push(flush(std::mem::take(&mut chunk), partition));
            partition = (partition + 1) % PARTITIONS;
            size = 0;
        }
    }
    if !chunk.is_empty() {
        pending.push(flush(chunk, partition));
    }
    let mut futures = Vec::new();
    for (i, (n, bytes)) in pending.into_iter().enumerate() {
        let p = i as i32 % PARTITIONS;
        let producer = s.producer.clone();
        let topic = s.topic.clone();
        futures.push(async move {
            let at = Instant::now();
            let offset = producer
                .send(
                    FutureRecord::<(), [u8]>::to(&topic)
                        .partition(p)
                        .payload(&bytes),
                    Duration::from_secs(30),
                )
                .await
                .expect("produce")
                .offset;
            (p, offset, n, bytes.len(), at)
        });
    }
    for f in futures {
        out.push(f.await);
    }
    out
}

/// The release compactor beside this example, or `TLAKE_COMPACTOR_BIN`.
fn compactor_bin() -> PathBuf {
    match std::env::var_os("TLAKE_COMPACTOR_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => std::env::current_exe()
            .expect("exe")
            .parent()
            .and_then(|d| d.parent())
            .expect("target dir")
            .join("tlake-compactor"),
    }
}

fn start_compactor(s: &Setup, latency_ms: u64, extra_toml: &str) -> Child {
    start_compactor_bin(s, latency_ms, extra_toml, &compactor_bin())
}

fn start_compactor_bin(s: &Setup, latency_ms: u64, extra_toml: &str, bin: &Path) -> Child {
    let dir = std::env::temp_dir().join(format!("tlake-bench-{}", s.topic));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("compactor.toml");
    std::fs::write(
        &config,
        format!(
            "metrics_listen = \"127.0.0.1:0\"\n[kafka]\nbrokers = \"{}\"\ngroup_id = \"bench-{}\"\ntopics = [\"{}\"]\n\
             [catalog]\nuri = \"{}\"\nwarehouse = \"{}\"\n[s3]\nendpoint = \"{}\"\n[flush]\nmax_latency_ms = {latency_ms}\n{extra_toml}",
            s.brokers,
            s.topic,
            s.topic,
            env("TLAKE_CATALOG_URI", "http://127.0.0.1:19120/iceberg/"),
            env("TLAKE_WAREHOUSE", "telemetrylake"),
            env("TLAKE_S3_ENDPOINT", "http://127.0.0.1:9000"),
        ),
    )
    .expect("config");
    let mut child = Command::new(bin)
        .arg("--config")
        .arg(&config)
        .env("AWS_ACCESS_KEY_ID", env("TLAKE_S3_ACCESS_KEY", ""))
        .env("AWS_SECRET_ACCESS_KEY", env("TLAKE_S3_SECRET_KEY", ""))
        // TLAKE_BENCH_LOG=info: the compactor's log (flights, commits) in compactor.log.
        .env("RUST_LOG", env("TLAKE_BENCH_LOG", "warn"))
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("compactor.log")).expect("log"))
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "start {}: {e} (cargo build --release -p tlake-compactor)",
                bin.display()
            )
        });
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready line");
    assert!(
        line.starts_with("tlake-compactor ready"),
        "compactor did not start: {line:?}"
    );
    child
}

/// CPU seconds (user + system) used by a process so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = fields
        .get(11)
        .and_then(|u| u.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0);
    ticks / 100.0
}

fn covered(
    offsets: &tlake_catalog_client::Offsets,
    topic: &str,
    ends: &BTreeMap<i32, i64>,
) -> bool {
    ends.iter().all(|(p, end)| {
        offsets
            .get(topic)
            .and_then(|m| m.get(p))
            .is_some_and(|o| o >= end)
    })
}

/// (rows, Parquet bytes, commits) of the run's table.
async fn table_size(s: &Setup) -> (u64, u64, usize) {
    let table = s.catalog.load_table(&s.stream).await.expect("table");
    // A fresh table: one sequence number per commit (Nessie lists only
    // the current snapshot).
    let commits = usize::try_from(table.metadata().last_sequence_number()).unwrap_or(0);
    let summary = &table
        .metadata()
        .current_snapshot()
        .expect("snapshot")
        .summary()
        .additional_properties;
    let get = |k: &str| summary.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
    (get("total-records"), get("total-files-size"), commits)
}

/// What one drain measured.
#[derive(Debug, Clone, Copy)]
struct Drained {
    wall_events_per_s: f64,
    events_per_cpu_s: f64,
    bytes_per_event: f64,
}

async fn drain(name: &str, events: Vec<LogEvent>) -> Drained {
    drain_with(name, events, &compactor_bin()).await
}

async fn drain_with(name: &str, events: Vec<LogEvent>, bin: &Path) -> Drained {
    let s = setup(name).await;
    let n = events.len();
    let raw: usize = events.iter().map(prost::Message::encoded_len).sum();
    let records = produce(&s, events).await;
    let kafka_bytes: usize = records.iter().map(|r| r.3).sum();
    let mut ends = BTreeMap::new();
    for (p, o, ..) in &records {
        let e = ends.entry(*p).or_insert(0);
        *e = (*e).max(o + 1);
    }
    let start = Instant::now();
    let mut child = start_compactor_bin(&s, 5000, "", bin);
    loop {
        if let Ok(p) = s.catalog.progress(&s.stream).await
            && covered(&p.offsets, &s.topic, &ends)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(start.elapsed() < Duration::from_secs(900), "timed out");
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds(child.id());
    let _ = child.kill();
    let _ = child.wait();
    let (rows, bytes, commits) = table_size(&s).await;
    s.drop_topic().await;
    assert_eq!(rows as usize, n, "rows in table");
    println!(
        "{name}: {n} events, {:.0} B/event encoded, {:.1} MB in Kafka; wall {elapsed:.2} s (incl. start-up), \
         compactor CPU {cpu:.2} s\n  {:.0} events/s wall, {:.1} MB/s wall; {:.0} events per CPU-second, {:.1} MB per CPU-second\n  \
         on disk: {bytes} bytes Parquet = {:.1} bytes/event; {commits} commits",
        raw as f64 / n as f64,
        kafka_bytes as f64 / 1e6,
        n as f64 / elapsed,
        raw as f64 / 1e6 / elapsed,
        n as f64 / cpu,
        raw as f64 / 1e6 / cpu,
        bytes as f64 / rows as f64,
    );
    Drained {
        wall_events_per_s: n as f64 / elapsed,
        events_per_cpu_s: n as f64 / cpu,
        bytes_per_event: bytes as f64 / rows as f64,
    }
}

/// Median and range of `values`, as "median (min–max)".
fn spread(values: &mut [f64]) -> String {
    values.sort_by(f64::total_cmp);
    let median = match values.len() {
        0 => return "-".into(),
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    };
    format!(
        "{median:.0} ({:.0}–{:.0})",
        values[0],
        values[values.len() - 1]
    )
}

/// `runs` drains of `n` synthetic events by each build in `bins`, the
/// builds alternating run by run (A B A B …) on the same stack, so the
/// box's load falls on each alike; prints each build's median and range.
async fn side_by_side(n: u64, runs: u32, bins: &[(String, PathBuf)]) {
    let mut results: Vec<Vec<Drained>> = vec![Vec::new(); bins.len()];
    for run in 0..runs {
        for (i, (label, bin)) in bins.iter().enumerate() {
            println!("run {} of {runs}, {label} ({}):", run + 1, bin.display());
            results[i].push(drain_with("synthetic", (0..n).map(synthetic).collect(), bin).await);
        }
    }
    println!("\n{n} events, {runs} runs per build: median (min–max)");
    for ((label, _), drained) in bins.iter().zip(&results) {
        let pick = |f: fn(&Drained) -> f64| drained.iter().map(f).collect::<Vec<_>>();
        println!(
            "  {label}: wall events/s {}, events per CPU-second {}, bytes/event {}",
            spread(&mut pick(|d| d.wall_events_per_s)),
            spread(&mut pick(|d| d.events_per_cpu_s)),
            spread(&mut pick(|d| d.bytes_per_event)),
        );
    }
}

async fn freshness(rate: u64, seconds: u64) {
    let s = setup(&format!("fresh{rate}")).await;
    let mut child = start_compactor(&s, 5000, "");
    let total = rate * seconds;
    // Produce in 100 ms slices; each event's time is its production time.
    let slice = (rate / 10).max(1);
    let start = Instant::now();
    let mut produced: Vec<(i32, i64, usize, Instant)> = Vec::new();
    let mut n = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let (ends_tx, ends_rx) = tokio::sync::watch::channel(None::<BTreeMap<i32, i64>>);
    let watcher = {
        let catalog = s.catalog.clone();
        let stream = s.stream.clone();
        let topic = s.topic.clone();
        tokio::spawn(async move {
            let mut seen: Vec<(Instant, tlake_catalog_client::Offsets)> = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(seconds + 120);
            while Instant::now() < deadline {
                if let Ok(p) = catalog.progress(&stream).await {
                    let done = ends_rx
                        .borrow()
                        .as_ref()
                        .is_some_and(|e| covered(&p.offsets, &topic, e));
                    seen.push((Instant::now(), p.offsets));
                    if done {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            seen
        })
    };
    while n < total {
        tick.tick().await;
        let events: Vec<LogEvent> = (n..n + slice).map(synthetic).collect();
        n += slice;
        // Small records here: a slice at 10K/s is ~300 KB.
        for (p, o, count, _, at) in produce(&s, events).await {
            produced.push((p, o, count, at));
        }
    }
    let offered = n as f64 / start.elapsed().as_secs_f64();
    let mut ends = BTreeMap::new();
    for (p, o, ..) in &produced {
        let e = ends.entry(*p).or_insert(0);
        *e = (*e).max(o + 1);
    }
    let _ = ends_tx.send(Some(ends));
    let seen = watcher.await.expect("watcher");
    let _ = child.kill();
    let _ = child.wait();
    s.drop_topic().await;
    let mut lat: Vec<(f64, usize)> = Vec::new();
    for (p, o, count, at) in &produced {
        let visible = seen
            .iter()
            .find(|(_, off)| {
                off.get(&s.topic)
                    .and_then(|m| m.get(p))
                    .is_some_and(|c| c > o)
            })
            .map(|(t, _)| t.duration_since(*at).as_secs_f64());
        lat.push((visible.unwrap_or(f64::INFINITY), *count));
    }
    lat.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total_events: usize = lat.iter().map(|l| l.1).sum();
    let pct = |q: f64| {
        let target = (total_events as f64 * q).ceil() as usize;
        let mut acc = 0;
        for (l, c) in &lat {
            acc += c;
            if acc >= target {
                return *l;
            }
        }
        f64::INFINITY
    };
    println!(
        "freshness at {rate} events/s offered ({offered:.0} achieved, {seconds} s, {total_events} events, flush.max_latency_ms=5000): \
         p50 {:.2} s, p99 {:.2} s, max {:.2} s (produce → visible in a committed snapshot, polled every 100 ms)",
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
}

/// A synthetic event with an OTLP-int `http.status_code` (200; 404 every
/// 20th; 503 every 1000th), the hot attribute of the promoted-column run.
fn with_status(n: u64) -> LogEvent {
    let mut event = synthetic(n);
    let status = match n {
        n if n % 1000 == 0 => 503,
        n if n % 20 == 1 => 404,
        _ => 200,
    };
    event.attributes.push(KeyValue {
        key: "http.status_code".into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(status)),
        }),
    });
    event
}

/// Produces `n` events of `event` in chunks (10M events do not fit in memory
/// at once), runs a compactor with `extra_toml` until they are committed;
/// returns the table and its Parquet bytes per event.
async fn load(
    name: &str,
    n: u64,
    event: &(dyn Fn(u64) -> LogEvent + Sync),
    extra_toml: &str,
) -> (String, f64) {
    let s = setup(name).await;
    let extra = extra_toml.replace("{stream}", &s.stream);
    let mut ends = BTreeMap::new();
    let chunk = 500_000;
    for start in (0..n).step_by(chunk as usize) {
        let records = produce(&s, (start..(start + chunk).min(n)).map(event).collect()).await;
        for (p, o, ..) in &records {
            let e = ends.entry(*p).or_insert(0);
            *e = (*e).max(o + 1);
        }
    }
    let started = Instant::now();
    let mut child = start_compactor(&s, 5000, &extra);
    loop {
        if let Ok(p) = s.catalog.progress(&s.stream).await
            && covered(&p.offsets, &s.topic, &ends)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(started.elapsed() < Duration::from_secs(1800), "timed out");
    }
    let cpu = cpu_seconds(child.id());
    let _ = child.kill();
    let _ = child.wait();
    let (rows, bytes, commits) = table_size(&s).await;
    s.drop_topic().await;
    assert_eq!(rows, n, "rows in table");
    let per_event = bytes as f64 / rows as f64;
    println!(
        "{name}: {rows} rows in {}, {bytes} bytes Parquet = {per_event:.1} bytes/event, {commits} commits, \
         compactor {:.0} events per CPU-second",
        s.stream,
        rows as f64 / cpu
    );
    (s.stream, per_event)
}

/// Loghub lines (cycled to `n` events) with the system a line came from
/// and its level as attributes: `loghub.system` and `level`.
fn corpus_events(dir: &str) -> Vec<(String, String, String)> {
    let mut lines = Vec::new();
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .expect("corpus dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    paths.sort();
    for path in paths
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
    {
        let system = path
            .file_stem()
            .and_then(|s| s.to_str())
            .map(|s| s.trim_end_matches("_2k").to_owned())
            .unwrap_or_default();
        let text = std::fs::read_to_string(path).unwrap_or_default();
        for line in text.lines().filter(|l| !l.is_empty()) {
            let level = line
                .split(|c: char| !c.is_ascii_alphabetic())
                .find(|w| {
                    [
                        "INFO", "WARN", "WARNING", "ERROR", "FATAL", "DEBUG", "TRACE",
                    ]
                    .contains(w)
                })
                .unwrap_or("NONE");
            lines.push((system.clone(), level.to_owned(), line.to_owned()));
        }
    }
    lines
}

/// What a promoted-column run loads and asks.
struct PromotedRun {
    /// `[promote.{stream}]` section for the promoted table.
    promote: &'static str,
    /// (label, SQL on the map table, SQL on the promoted table), `{t}` the table.
    queries: Vec<(&'static str, String, String)>,
}

/// The same events into two tables — the hot attributes in the map, and
/// promoted to columns — then the same questions of both, timed by DuckDB
/// side by side (`deploy/local/query_times.py`).
async fn promoted(n: u64, runs: u32, corpus: Option<String>) {
    let lines = corpus.as_deref().map(corpus_events).unwrap_or_default();
    let (event, run): (Box<dyn Fn(u64) -> LogEvent + Sync>, PromotedRun) = if lines.is_empty() {
        (
            Box::new(with_status),
            PromotedRun {
                promote: "\"http.status_code\" = \"long\"",
                queries: vec![
                    (
                        "count of status 503",
                        "SELECT count(*) FROM {t} WHERE attributes['http.status_code'] = '503'".into(),
                        "SELECT count(*) FROM {t} WHERE attr_http_status_code = 503".into(),
                    ),
                    (
                        "rows by status",
                        "SELECT attributes['http.status_code'] AS s, count(*) FROM {t} GROUP BY s".into(),
                        "SELECT attr_http_status_code AS s, count(*) FROM {t} GROUP BY s".into(),
                    ),
                    (
                        "status >= 600 (none)",
                        "SELECT count(*) FROM {t} WHERE TRY_CAST(attributes['http.status_code'] AS BIGINT) >= 600".into(),
                        "SELECT count(*) FROM {t} WHERE attr_http_status_code >= 600".into(),
                    ),
                ],
            },
        )
    } else {
        let lines = std::sync::Arc::new(lines);
        (
            Box::new(move |i: u64| {
                let (system, level, line) = &lines[(i % lines.len() as u64) as usize];
                let mut event = line_event(line);
                event.attributes = vec![kv("loghub.system", system.clone()), kv("level", level.clone())];
                event
            }),
            PromotedRun {
                promote: "\"loghub.system\" = \"string\"\nlevel = \"string\"",
                queries: vec![
                    (
                        "count of ERROR lines",
                        "SELECT count(*) FROM {t} WHERE attributes['level'] = 'ERROR'".into(),
                        "SELECT count(*) FROM {t} WHERE attr_level = 'ERROR'".into(),
                    ),
                    (
                        "ERROR lines of one system",
                        "SELECT count(*) FROM {t} WHERE attributes['loghub.system'] = 'Hadoop' AND attributes['level'] = 'ERROR'".into(),
                        "SELECT count(*) FROM {t} WHERE attr_loghub_system = 'Hadoop' AND attr_level = 'ERROR'".into(),
                    ),
                    (
                        "lines by system",
                        "SELECT attributes['loghub.system'] AS s, count(*) FROM {t} GROUP BY s".into(),
                        "SELECT attr_loghub_system AS s, count(*) FROM {t} GROUP BY s".into(),
                    ),
                ],
            },
        )
    };
    let (map, map_bytes) = load("map", n, &*event, "").await;
    let section = format!("[promote.{{stream}}]\n{}\n", run.promote);
    let (col, col_bytes) = load("promoted", n, &*event, &section).await;
    println!(
        "bytes/event: map {map_bytes:.1}, promoted {col_bytes:.1} ({:+.1} %)",
        (col_bytes / map_bytes - 1.0) * 100.0
    );
    let table = |t: &str| format!("telemetrylake.logs.\"{t}\"");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/local/query_times.py"
    );
    let mut command = Command::new(env("TLAKE_DUCKDB_PYTHON", "python3"));
    command.arg(script).arg("--runs").arg(runs.to_string());
    for (label, a, b) in &run.queries {
        command
            .arg(label)
            .arg(a.replace("{t}", &table(&map)))
            .arg(b.replace("{t}", &table(&col)));
    }
    let status = command.status().expect("run query_times.py");
    assert!(status.success(), "query_times.py failed");
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |name: &str, default: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
            .unwrap_or_else(|| default.to_owned())
    };
    match args.first().map(String::as_str) {
        Some("throughput") => {
            let n: u64 = arg("--events", "1000000").parse().expect("--events");
            let runs: u32 = arg("--runs", "1").parse().expect("--runs");
            side_by_side(n, runs, &[("this build".into(), compactor_bin())]).await;
        }
        Some("ab") => {
            let n: u64 = arg("--events", "3000000").parse().expect("--events");
            let runs: u32 = arg("--runs", "5").parse().expect("--runs");
            let bins = [
                ("A".to_owned(), PathBuf::from(arg("--a", ""))),
                ("B".to_owned(), PathBuf::from(arg("--b", ""))),
            ];
            assert!(
                bins.iter().all(|(_, b)| b.is_file()),
                "ab needs --a BIN and --b BIN (two builds of tlake-compactor)"
            );
            side_by_side(n, runs, &bins).await;
        }
        Some("corpus") => {
            let dir = arg("--dir", "/work/shared/corpus/loghub-2k");
            let mut events = Vec::new();
            let mut paths: Vec<_> = std::fs::read_dir(&dir)
                .expect("corpus dir")
                .flatten()
                .map(|e| e.path())
                .collect();
            paths.sort();
            for path in paths
                .iter()
                .filter(|p| p.extension().is_some_and(|e| e == "log"))
            {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                events.extend(text.lines().filter(|l| !l.is_empty()).map(line_event));
            }
            drain("loghub", events).await;
        }
        Some("promoted") => {
            let n: u64 = arg("--events", "10000000").parse().expect("--events");
            let runs: u32 = arg("--runs", "5").parse().expect("--runs");
            let corpus = args
                .iter()
                .any(|a| a == "--corpus")
                .then(|| arg("--corpus", ""));
            promoted(n, runs, corpus).await;
        }
        Some("freshness") => {
            let rate: u64 = arg("--rate", "10000").parse().expect("--rate");
            let seconds: u64 = arg("--seconds", "30").parse().expect("--seconds");
            freshness(rate, seconds).await;
        }
        _ => eprintln!(
            "usage: compactor_bench throughput [--events N] [--runs R] | ab [--events N] [--runs R] --a BIN --b BIN | corpus [--dir DIR] | freshness [--rate R] [--seconds S] | promoted [--events N] [--runs R] [--corpus DIR]"
        ),
    }
}
