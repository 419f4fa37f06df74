//! Benchmark harness (not a test): the per-event hot paths of the gateway
//! and the compactor, in process, for an instruction count that does not
//! depend on how busy the machine is (`deploy/local/bench-instructions` runs
//! it under `valgrind --tool=callgrind` at two sizes and divides the
//! difference by the events).
//!
//! - `gateway`: what the gateway does with a SendLogs request between the
//!   gRPC frame and librdkafka — `events::send_logs` (the request read in
//!   place), `validate::route` and the rules, `chunk::forwarded` (the Kafka
//!   record payloads, the events' bytes copied);
//! - `compactor`: what the compactor does with those records between
//!   librdkafka and S3 — `scan` (the zero-copy reader), `Buffers::append`
//!   (id window, key rows into DuckDB), then one flush: `flush_order`
//!   (DuckDB's sort), `parts` (Arrow rows in the table's schema) and Parquet
//!   encoding with the table writer's properties into memory.
//!
//! Kafka, gRPC framing, S3 and the catalog are left out on purpose: they are
//! measured end to end by the other harnesses (BENCHMARKS.md). The inputs
//! are built before the measured function starts, so a callgrind run that
//! collects only inside `measured_gateway` / `measured_compactor` counts the
//! stage alone.
//!
//! ```sh
//! cargo build --release -p tlake-tests --example hot_path
//! $CARGO_TARGET_DIR/release/examples/hot_path gateway --events 200000
//! $CARGO_TARGET_DIR/release/examples/hot_path compactor --events 200000 [--corpus DIR]
//! ```

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use prost::Message as _;
use tlake_catalog_client::iceberg::arrow::schema_to_arrow_schema;
use tlake_catalog_client::{SortBy, TableKind};
use tlake_compactor::buffer::Buffers;
use tlake_ingest_gateway::config::Limits;
use tlake_ingest_gateway::{chunk, events, validate};
use tlake_proto::v1::{LogEvent, SendLogsRequest, Source};
use tlake_record_reader::decode::{Origin, scan};
use tlake_tests::events::{EventGen, resource, text};

/// Events per SendLogs request: the SDK's default batch.
const REQUEST_EVENTS: usize = 1000;
const STREAM: &str = "default";
const TOPIC: &str = "telemetry-logs";

fn usage() -> ! {
    eprintln!("usage: hot_path gateway|compactor --events N [--corpus DIR]");
    std::process::exit(2)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let stage = args.next().unwrap_or_else(|| usage());
    let (mut events, mut corpus) = (None, None);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--events" => events = args.next().and_then(|v| v.parse::<usize>().ok()),
            "--corpus" => corpus = args.next().map(PathBuf::from),
            _ => usage(),
        }
    }
    let events = events.unwrap_or_else(|| usage());
    let requests = requests(events, corpus.as_deref());
    let started = Instant::now();
    let (count, bytes) = match stage.as_str() {
        "gateway" => measured_gateway(&requests),
        "compactor" => {
            let records: Vec<Vec<u8>> = gateway_records(&requests);
            measured_compactor(&records)
        }
        _ => usage(),
    };
    let elapsed = started.elapsed();
    // One line: what was done, so a run that did nothing is visible.
    println!(
        "{stage}: {count} events, {bytes} bytes out, {:.3} s, {:.0} ns/event",
        elapsed.as_secs_f64(),
        elapsed.as_nanos() as f64 / count.max(1) as f64
    );
}

/// `events` events as encoded SendLogs requests of [`REQUEST_EVENTS`]: the
/// test kit's synthetic events, or the lines of every `*.log` file under
/// `corpus`, round robin, as event bodies.
fn requests(events: usize, corpus: Option<&Path>) -> Vec<Vec<u8>> {
    let lines = corpus.map(corpus_lines);
    let mut generator = EventGen::new();
    let mut made = 0usize;
    let mut out = Vec::new();
    while made < events {
        let n = REQUEST_EVENTS.min(events - made);
        let batch: Vec<LogEvent> = (0..n)
            .map(|i| {
                let mut event = generator.next_event();
                if let Some(lines) = &lines {
                    event.body = text(lines[(made + i) % lines.len()].clone());
                    event.attributes.clear();
                }
                event
            })
            .collect();
        made += n;
        out.push(
            SendLogsRequest {
                stream: STREAM.to_owned(),
                resource: Some(resource("checkout")),
                events: batch,
            }
            .encode_to_vec(),
        );
    }
    out
}

fn corpus_lines(dir: &Path) -> Vec<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .flat_map(|path| match path.is_dir() {
            true => std::fs::read_dir(&path)
                .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
                .unwrap_or_default(),
            false => vec![path],
        })
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    files.sort();
    let lines: Vec<String> = files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter(|l| !l.is_empty())
        .collect();
    assert!(!lines.is_empty(), "no *.log lines under {}", dir.display());
    lines
}

fn streams() -> BTreeMap<String, String> {
    BTreeMap::from([(STREAM.to_owned(), TOPIC.to_owned())])
}

/// The gateway's work on each request; returns (events, record bytes).
#[inline(never)]
fn measured_gateway(requests: &[Vec<u8>]) -> (usize, usize) {
    gateway(requests, |_| {})
}

/// The records the gateway makes of `requests` (outside the measured part).
fn gateway_records(requests: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut records = Vec::new();
    gateway(requests, |chunk| records.push(chunk.payload));
    records
}

fn gateway(requests: &[Vec<u8>], mut sink: impl FnMut(chunk::Chunk)) -> (usize, usize) {
    let limits = Limits::default();
    let streams = streams();
    let (mut events, mut bytes) = (0, 0);
    for body in requests {
        let (stream, request) = events::send_logs(body).expect("a valid request");
        assert!(
            matches!(request, events::Events::Scanned(_)),
            "read in place, as the gateway reads its clients' requests"
        );
        let (stream, _topic) = validate::route(&streams, &stream).expect("routed");
        let (count, _) = request.check(&limits).expect("within the limits");
        events += count;
        for chunk in request.chunks(
            stream,
            Source::SendLogs,
            1_700_000_000_000_000_000,
            limits.chunk_bytes,
        ) {
            bytes += chunk.payload.len();
            sink(black_box(chunk));
        }
    }
    (events, bytes)
}

/// The compactor's work on `records`, one flush at the end; returns (rows
/// written, Parquet bytes).
#[inline(never)]
fn measured_compactor(records: &[Vec<u8>]) -> (usize, usize) {
    let mut buffers = Buffers::new(3, 1 << 22).expect("DuckDB buffer");
    let mut keys = Vec::new();
    for (offset, payload) in records.iter().enumerate() {
        let origin = Origin {
            partition: 0,
            offset: offset as i64,
        };
        let record = scan(payload, origin, &mut keys).expect("the gateway's records scan");
        buffers
            .append(record, &keys, payload.len() as u64)
            .expect("buffered");
    }
    let schema = TableKind::Logs.schema();
    let target = Arc::new(schema_to_arrow_schema(&schema).expect("Arrow schema"));
    let order = buffers
        .flush_order(STREAM, SortBy::ServiceTime)
        .expect("flush order");
    let mut out = Vec::new();
    let mut writer = parquet::arrow::ArrowWriter::try_new(
        &mut out,
        target.clone(),
        Some(tlake_catalog_client::write::writer_properties()),
    )
    .expect("Parquet writer");
    let mut rows = 0;
    for part in buffers.parts(STREAM, &order, &target) {
        let part = part.expect("rows built");
        rows += part.rows.num_rows();
        writer.write(&part.rows).expect("encoded");
    }
    writer.close().expect("Parquet footer");
    (rows, out.len())
}
