//! The chart's scale-out test on a real cluster (deploy/kube/scale-out runs it inside the
//! cluster's network namespace): a load from outside the pods, through the gateway's Service,
//! with an ack ledger, while pods are deleted — a compactor, a gateway, `kafka-0`, Nessie —
//! and while the release is upgraded with a changed value and rolled back. It ends when the
//! table holds every acknowledged event, and fails unless, read in `duckdb-0`,
//! `count(*) == count(distinct event_id) == acked` (over this run's rows) and every
//! acknowledged id is there.
//!
//! ```text
//! tlake-kube-scale-out --kube deploy/kube/cluster [--namespace telemetry-lake]
//!     [--stream scaleout] [--rate 2000] [--senders 6] [--batch 200]
//! ```

use std::collections::HashSet;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tlake_proto::v1::SendLogsRequest;
use tlake_proto::v1::log_ingest_client::LogIngestClient;
use tlake_tests::events::{EventGen, resource};
use tlake_tests::{AckLedger, assert_no_loss_no_dup};
use tonic::transport::{Channel, Endpoint};

/// How long one request may go unacknowledged (retries included) before the test fails: longer
/// than a Kafka restart, shorter than the whole test.
const REQUEST_DEADLINE: Duration = Duration::from_secs(300);
/// How long the table may take to catch up with the ledger once the load stops.
const CATCH_UP: Duration = Duration::from_secs(600);

#[derive(Debug, Clone)]
struct Args {
    kube: String,
    namespace: String,
    release: String,
    chart: String,
    stream: String,
    rate: u64,
    senders: usize,
    batch: usize,
}

impl Args {
    fn parse() -> Result<Self, String> {
        let mut args = Args {
            kube: "deploy/kube/cluster".into(),
            namespace: "telemetry-lake".into(),
            release: "telemetry-lake".into(),
            chart: "deploy/helm/telemetry-lake".into(),
            stream: "scaleout".into(),
            rate: 2000,
            senders: 6,
            batch: 200,
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let mut value = || it.next().ok_or(format!("{flag} needs a value"));
            match flag.as_str() {
                "--kube" => args.kube = value()?,
                "--namespace" => args.namespace = value()?,
                "--release" => args.release = value()?,
                "--chart" => args.chart = value()?,
                "--stream" => args.stream = value()?,
                "--rate" => args.rate = value()?.parse().map_err(|e| format!("--rate: {e}"))?,
                "--senders" => {
                    args.senders = value()?.parse().map_err(|e| format!("--senders: {e}"))?
                }
                "--batch" => args.batch = value()?.parse().map_err(|e| format!("--batch: {e}"))?,
                other => return Err(format!("unknown argument {other}")),
            }
        }
        if args.senders == 0 || args.batch == 0 || args.rate == 0 {
            return Err("--rate, --senders and --batch must be above 0".into());
        }
        Ok(args)
    }
}

/// `deploy/kube/cluster kubectl|helm ARGS`, its stdout; a failure ends the test.
fn kube(args: &Args, tool: &str, cmd: &[&str]) -> String {
    let out = Command::new(&args.kube)
        .arg(tool)
        .args(cmd)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} {tool}: {e}", args.kube));
    assert!(
        out.status.success(),
        "{tool} {} failed: {}{}",
        cmd.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn kubectl(args: &Args, cmd: &[&str]) -> String {
    let mut full = vec!["-n", &args.namespace];
    full.extend_from_slice(cmd);
    kube(args, "kubectl", &full)
}

fn say(started: Instant, what: &str) {
    println!("[scale-out +{:>4}s] {what}", started.elapsed().as_secs());
}

/// SQL in `duckdb-0` through `duckdb-lake` (the lake attached), as CSV rows.
fn duckdb(args: &Args, sql: &str) -> Result<Vec<Vec<String>>, String> {
    let out = Command::new(&args.kube)
        .args(["kubectl", "-n", &args.namespace, "exec", "duckdb-0", "--"])
        .args(["duckdb-lake", "-csv", "-noheader", "-c", sql])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect())
}

/// (rows, distinct ids) of the stream's table; (0, 0) while it does not exist.
fn table_counts(args: &Args, table: &str) -> (u64, u64) {
    match duckdb(
        args,
        &format!("SELECT count(*), count(DISTINCT event_id) FROM {table}"),
    ) {
        Ok(rows) => {
            let row = rows.last().expect("one row");
            (
                row[0].parse().expect("count"),
                row[1].parse().expect("distinct"),
            )
        }
        Err(e) if e.contains("does not exist") => (0, 0),
        Err(e) => panic!("counting {table} failed: {e}"),
    }
}

fn wait_ready(args: &Args, selector: &str) {
    kubectl(
        args,
        &[
            "wait",
            "--for=condition=ready",
            "pod",
            "-l",
            selector,
            "--timeout=300s",
        ],
    );
}

/// The name of one pod with label `app=<app>`.
fn one_pod(args: &Args, app: &str) -> String {
    let names = kubectl(
        args,
        &[
            "get",
            "pods",
            "-l",
            &format!("app={app}"),
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ],
    );
    names
        .split_whitespace()
        .next()
        .unwrap_or_else(|| panic!("no pod with app={app}"))
        .to_owned()
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    retries: AtomicU64,
}

/// One sender: its own connection (so the Service spreads senders over the gateways), batches
/// of fresh events, each re-sent until acknowledged, at its share of the rate.
async fn sender(
    args: Args,
    url: String,
    n: usize,
    ledger: Arc<AckLedger>,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
) -> Result<(), String> {
    let mut events = EventGen::new();
    let services = ["checkout", "payments", "search"];
    let per_batch =
        Duration::from_secs_f64(args.batch as f64 * args.senders as f64 / args.rate as f64);
    let endpoint = Endpoint::from_shared(url.clone())
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(30));
    let mut client: Option<LogIngestClient<Channel>> = None;
    let mut next = tokio::time::Instant::now();
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep_until(next).await;
        next += per_batch;
        let batch = events.batch(args.batch);
        let request = SendLogsRequest {
            stream: args.stream.clone(),
            resource: Some(resource(services[n % services.len()])),
            events: batch,
        };
        let started = Instant::now();
        let mut backoff = Duration::from_millis(200);
        loop {
            let c = match &mut client {
                Some(c) => c,
                None => match endpoint.connect().await {
                    Ok(channel) => client.insert(LogIngestClient::new(channel)),
                    Err(e) => {
                        counters.retries.fetch_add(1, Ordering::Relaxed);
                        if started.elapsed() > REQUEST_DEADLINE {
                            return Err(format!("sender {n}: cannot connect to {url}: {e}"));
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                        continue;
                    }
                },
            };
            match c.send_logs(request.clone()).await {
                Ok(_) => {
                    ledger.ack(request.events.iter().map(|e| e.event_id.as_ref()));
                    counters.requests.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(status) => {
                    counters.retries.fetch_add(1, Ordering::Relaxed);
                    if started.elapsed() > REQUEST_DEADLINE {
                        return Err(format!(
                            "sender {n}: a request was not acknowledged within {REQUEST_DEADLINE:?}: {status}"
                        ));
                    }
                    // A new connection may reach another gateway (the old one may be gone).
                    if status.code() == tonic::Code::Unavailable
                        || status.code() == tonic::Code::Unknown
                        || status.code() == tonic::Code::Cancelled
                    {
                        client = None;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
        // Behind schedule after an outage: resume at the rate, don't burst.
        next = next.max(tokio::time::Instant::now());
    }
    Ok(())
}

fn main() {
    let args = match Args::parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("tlake-kube-scale-out: {e}");
            std::process::exit(2);
        }
    };
    let started = Instant::now();
    let table = format!("telemetrylake.logs.\"{}\"", args.stream);

    let ip = kubectl(
        &args,
        &[
            "get",
            "service",
            "ingest-gateway",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ],
    );
    let url = format!("http://{}:4317", ip.trim());
    let partitions = kubectl(
        &args,
        &[
            "exec",
            "kafka-0",
            "-c",
            "kafka",
            "--",
            "/opt/kafka/bin/kafka-topics.sh",
            "--bootstrap-server",
            "localhost:9092",
            "--describe",
            "--topic",
            "telemetry-logs",
        ],
    );
    let partition_count = partitions.matches("Partition: ").count();
    let replicas = |app: &str| {
        kubectl(
            &args,
            &[
                "get",
                "deploy",
                app,
                "-o",
                "jsonpath={.status.readyReplicas}",
            ],
        )
    };
    say(
        started,
        &format!(
            "gateway Service {url}; topic telemetry-logs has {partition_count} partitions; \
             {} gateways and {} compactors ready",
            replicas("ingest-gateway").trim(),
            replicas("compactor").trim()
        ),
    );
    let (before_rows, before_distinct) = table_counts(&args, &table);
    assert_eq!(
        before_rows, before_distinct,
        "{table} already holds duplicate ids before this run"
    );
    say(
        started,
        &format!("{table} holds {before_rows} rows before the load"),
    );

    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let ledger = Arc::new(AckLedger::new());
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters::default());
    let senders: Vec<_> = (0..args.senders)
        .map(|n| {
            rt.spawn(sender(
                args.clone(),
                url.clone(),
                n,
                ledger.clone(),
                stop.clone(),
                counters.clone(),
            ))
        })
        .collect();
    let progress = |what: &str| {
        say(
            started,
            &format!(
                "{what} — acked {} events in {} requests, {} retries",
                ledger.len(),
                counters.requests.load(Ordering::Relaxed),
                counters.retries.load(Ordering::Relaxed)
            ),
        )
    };

    let pause = |secs| std::thread::sleep(Duration::from_secs(secs));
    pause(20);
    progress("load running");
    for (app, what) in [
        ("compactor", "a compactor pod"),
        ("ingest-gateway", "a gateway pod"),
    ] {
        let pod = one_pod(&args, app);
        kubectl(&args, &["delete", "pod", &pod, "--wait=false"]);
        progress(&format!("deleted {what} ({pod})"));
        pause(20);
        wait_ready(&args, &format!("app={app}"));
        progress(&format!("{app} pods ready again"));
    }
    kubectl(&args, &["delete", "pod", "kafka-0", "--wait=false"]);
    progress("deleted kafka-0");
    pause(10);
    wait_ready(&args, "app=kafka");
    progress("kafka-0 ready again");
    pause(15);
    let nessie = one_pod(&args, "nessie");
    kubectl(&args, &["delete", "pod", &nessie, "--wait=false"]);
    progress(&format!("deleted the Nessie pod ({nessie})"));
    pause(10);
    wait_ready(&args, "app=nessie");
    progress("Nessie ready again");
    pause(15);

    // A changed value rolls every compactor (its config checksum changes), then back.
    kube(
        &args,
        "helm",
        &[
            "upgrade",
            &args.release,
            &args.chart,
            "--reuse-values",
            "--set",
            "compactor.config.flush.max_latency_ms=3000",
            "--wait",
            "--timeout",
            "10m",
        ],
    );
    progress("helm upgrade (compactor.config.flush.max_latency_ms=3000) done");
    pause(15);
    kube(
        &args,
        "helm",
        &["rollback", &args.release, "--wait", "--timeout", "10m"],
    );
    progress("helm rollback done");
    pause(15);

    stop.store(true, Ordering::Relaxed);
    for s in senders {
        if let Err(e) = rt.block_on(s).expect("sender task") {
            panic!("{e}");
        }
    }
    let acked = ledger.len() as u64;
    progress("load stopped");
    assert!(acked > 0, "no request was acknowledged: the load never ran");

    let deadline = Instant::now() + CATCH_UP;
    let (rows, distinct) = loop {
        let (rows, distinct) = table_counts(&args, &table);
        let (rows, distinct) = (rows - before_rows, distinct - before_distinct);
        say(
            started,
            &format!("{table}: {rows} new rows, {distinct} distinct, {acked} acked"),
        );
        if rows >= acked || Instant::now() > deadline {
            break (rows, distinct);
        }
        pause(10);
    };
    // Every acknowledged id, read back in duckdb-0 (all rows of the table: ids of earlier
    // runs are allowed, this run's must each be there exactly once).
    let ids: Vec<[u8; 16]> = duckdb(&args, &format!("SELECT hex(event_id) FROM {table}"))
        .unwrap_or_else(|e| panic!("reading the ids of {table}: {e}"))
        .into_iter()
        .map(|row| {
            let hex = &row[0];
            let mut id = [0u8; 16];
            for (i, b) in id.iter_mut().enumerate() {
                *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex id");
            }
            id
        })
        .collect();
    let ours: HashSet<[u8; 16]> = ledger.ids().into_iter().collect();
    let observed: Vec<[u8; 16]> = ids.into_iter().filter(|id| ours.contains(id)).collect();
    assert_no_loss_no_dup(&ledger.ids(), &observed, true);
    println!(
        "scale-out ledger: acked {acked} | rows {rows} | distinct {distinct} (new rows in {table}; \
         {partition_count} partitions, {} retries, {}s)",
        counters.retries.load(Ordering::Relaxed),
        started.elapsed().as_secs()
    );
    assert_eq!(rows, acked, "rows != acked");
    assert_eq!(distinct, acked, "distinct ids != acked");
    println!("scale-out: passed");
}
