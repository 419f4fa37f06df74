//! `tlake`: the telemetry-lake command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use tlake_cli::bench::{Ceiling, GatewayBench, TABLE_HEADER};
use tlake_cli::doctor;
use tlake_cli::events::Source;
use tlake_cli::lake::{LakeArgs, S3Keys};
use tlake_cli::load::LoadArgs;
use tlake_cli::send::{SendOptions, send};
use tlake_cli::sql::{Format, FreshOptions, SqlOptions};
use tlake_cli::tables;

#[derive(Debug, Parser)]
#[command(version, about = "telemetry-lake command line")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Send events to a gateway (synthetic, or lines of log files).
    Send {
        /// Gateway URL.
        #[arg(long, env = "TLAKE_GATEWAY", default_value = "http://127.0.0.1:4317")]
        gateway: String,
        /// Stream ("" or "default" for the default stream).
        #[arg(long, default_value = "")]
        stream: String,
        /// service.name of the events' resource.
        #[arg(long, default_value = "tlake-cli")]
        service: String,
        /// How many events.
        #[arg(long, default_value_t = 1000)]
        count: u64,
        /// Events per request (at most).
        #[arg(long, default_value_t = 500)]
        batch: usize,
        /// Events per second (default: as fast as the gateway acknowledges).
        #[arg(long)]
        rate: Option<f64>,
        /// Seconds a failing request is retried (gateway restarts, Kafka blips) before its
        /// events count as failed.
        #[arg(long, default_value_t = 300)]
        give_up_after: u64,
        /// Send lines of these log files (a file or a folder of *.log) instead of synthetic events.
        #[arg(long)]
        lines: Option<PathBuf>,
        /// Bearer token.
        #[arg(long, env = "TLAKE_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// PEM CA certificate for a TLS gateway (https:// URL).
        #[arg(long, env = "TLAKE_CA_FILE")]
        ca_file: Option<PathBuf>,
    },
    /// Query the lake with DuckDB: the catalog attached and its stream namespace in use, so a
    /// stream's table is `"<stream>"` (quoted: `default` is a keyword). SQL from the argument,
    /// --file, standard input, or an interactive prompt when none is given on a terminal.
    /// S3 keys come from TLAKE_S3_ACCESS_KEY/TLAKE_S3_SECRET_KEY (or AWS_ACCESS_KEY_ID/
    /// AWS_SECRET_ACCESS_KEY); for the local stack: eval "$(deploy/local/stack env)".
    Sql {
        #[command(flatten)]
        lake: LakeArgs,
        /// SQL to run (several statements: the last one's result is printed).
        query: Option<String>,
        /// Read the SQL from this file (`-`: standard input).
        #[arg(long, short = 'f', conflicts_with = "query")]
        file: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Write the result to this file (required for --format parquet).
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
        /// DuckDB extension directory with avro, httpfs and iceberg (deploy/local/libduckdb
        /// fills the default).
        #[arg(long, env = "TLAKE_DUCKDB_EXTENSIONS", default_value_os_t = tlake_cli::sql::session::default_extension_dir())]
        extension_dir: PathBuf,
        /// Fresh views: a stream's bare name (and `fresh."<stream>"`) means its committed rows
        /// plus the records in Kafka past the committed offsets, without duplicates, so an
        /// event is visible as soon as the gateway acknowledged it. Re-read before each query.
        #[arg(long)]
        fresh: bool,
        /// Kafka bootstrap servers the --fresh tail is read from.
        #[arg(long, env = "TLAKE_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
        kafka_brokers: String,
        /// Longest a --fresh query waits for the Kafka tail, in seconds.
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
        fresh_timeout: u64,
    },
    /// List the lake's tables: rows, files, bytes, newest event time, and the committed
    /// watermark (the Kafka offsets the table holds everything before).
    Tables {
        #[command(flatten)]
        lake: LakeArgs,
        /// Output format.
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        target: BenchTarget,
    },
    /// Check a deployed namespace: pods, services, Kafka, Nessie, the object store and its
    /// bucket; exits non-zero when a check fails. Uses the kubeconfig as kubectl does.
    Doctor {
        /// Namespace of the release.
        #[arg(long, short = 'n', default_value = doctor::DEFAULT_NAMESPACE)]
        namespace: String,
        /// kubeconfig context (default: the current one; KUBECONFIG is honoured).
        #[arg(long)]
        context: Option<String>,
        /// Output format.
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
        output: Output,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
enum BenchTarget {
    /// SendLogs throughput, latency and gateway CPU per event.
    Gateway {
        /// Gateway URL.
        #[arg(long, default_value = "http://127.0.0.1:4317")]
        gateway: String,
        /// Gateway pid, to report its CPU time per event.
        #[arg(long)]
        gateway_pid: Option<u32>,
        /// Stream to send to.
        #[arg(long, default_value = "")]
        stream: String,
        /// Batch sizes, comma separated.
        #[arg(long, value_delimiter = ',', default_value = "1,100,1000")]
        batches: Vec<usize>,
        /// Seconds per batch size.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Requests in flight.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Use lines of these log files as event bodies.
        #[arg(long)]
        lines: Option<PathBuf>,
        /// Runs per batch size; with several, the summary gives medians and ranges.
        #[arg(long, default_value_t = 1)]
        runs: usize,
        /// Also measure the ceiling: before each gateway run, produce the records the gateway
        /// would write for the same requests straight to these Kafka brokers, from this process
        /// (the gateway's chunking and producer settings).
        #[arg(long)]
        kafka: Option<String>,
        /// Topic of the ceiling runs: the one the gateway's stream routes to.
        #[arg(long, default_value = "telemetry-logs")]
        topic: String,
    },
    /// How soon an acknowledged event is visible through `tlake sql --fresh` at an offered
    /// rate (a compactor must be compacting the stream), and a fresh query's cost over a
    /// committed-only one.
    Fresh {
        #[command(flatten)]
        load: LoadArgs,
        /// After the run, this many committed-only and fresh scans of the table, alternating.
        #[arg(long, default_value_t = 0)]
        compare: usize,
        /// Runs of the load, one after another; with several, the median and range of each
        /// figure follow.
        #[arg(long, default_value_t = 1)]
        runs: usize,
        #[command(flatten)]
        lake: LakeArgs,
        /// DuckDB extension directory with avro, httpfs and iceberg.
        #[arg(long, env = "TLAKE_DUCKDB_EXTENSIONS", default_value_os_t = tlake_cli::sql::session::default_extension_dir())]
        extension_dir: PathBuf,
        /// Kafka bootstrap servers the tail is read from.
        #[arg(long, env = "TLAKE_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
        kafka_brokers: String,
    },
    /// The whole pipeline for minutes at an offered rate (a compactor must be compacting the
    /// stream): throughput, OK -> committed freshness, CPU and RSS per process and Kafka lag
    /// over time (CSV and PNG plots), bytes per event, and the ledger.
    Soak {
        #[command(flatten)]
        load: LoadArgs,
        /// Seconds at the start left out of the RSS-growth figure.
        #[arg(long, default_value_t = 60)]
        warmup: u64,
        /// Processes to sample as NAME=PID, repeatable (this process is always sampled).
        #[arg(long = "watch", value_parser = parse_watch)]
        watch: Vec<(String, u32)>,
        /// Directory for soak.csv and the PNG plots (with several runs, one folder per run
        /// inside it).
        #[arg(long, default_value = "soak-out")]
        out: PathBuf,
        /// Runs of the load, one after another on the same processes and table; with
        /// several, the median and range of each figure follow.
        #[arg(long, default_value_t = 1)]
        runs: usize,
        #[command(flatten)]
        lake: LakeArgs,
        /// DuckDB extension directory with avro, httpfs and iceberg.
        #[arg(long, env = "TLAKE_DUCKDB_EXTENSIONS", default_value_os_t = tlake_cli::sql::session::default_extension_dir())]
        extension_dir: PathBuf,
    },
}

/// `NAME=PID` of `--watch`.
fn parse_watch(arg: &str) -> Result<(String, u32), String> {
    let (name, pid) = arg
        .split_once('=')
        .ok_or_else(|| format!("{arg:?}: expected NAME=PID"))?;
    let pid = pid
        .parse()
        .map_err(|_| format!("{arg:?}: {pid:?} is not a pid"))?;
    if name.is_empty() {
        return Err(format!("{arg:?}: the name is empty"));
    }
    Ok((name.to_owned(), pid))
}

fn source(lines: Option<PathBuf>) -> anyhow::Result<Source> {
    match lines {
        Some(path) => Source::lines(&path),
        None => Ok(Source::Synthetic),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("tlake: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Send {
            gateway,
            stream,
            service,
            count,
            batch,
            rate,
            give_up_after,
            lines,
            token,
            ca_file,
        } => {
            let summary = send(SendOptions {
                gateway: gateway.clone(),
                stream: stream.clone(),
                service,
                count,
                batch,
                rate,
                give_up_after: Duration::from_secs(give_up_after),
                token,
                ca_file,
                source: source(lines)?,
            })
            .await?;
            let s = summary.stats;
            let stream = if stream.is_empty() {
                "default"
            } else {
                &stream
            };
            eprintln!(
                "sent {} events in {:.2}s to {gateway} (stream {stream:?}): {} acknowledged, {} re-sent, {} failed, {} dropped, {} requests",
                s.accepted,
                summary.elapsed.as_secs_f64(),
                s.sent,
                s.retried,
                s.failed,
                s.dropped,
                s.requests,
            );
            println!("{}", s.sent);
            if !summary.complete() {
                eprintln!(
                    "tlake send: {} of {count} events were not acknowledged: {}",
                    count.saturating_sub(s.sent),
                    summary.last_error.as_deref().unwrap_or("gave up")
                );
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Sql {
            lake,
            query,
            file,
            format,
            output,
            extension_dir,
            fresh,
            kafka_brokers,
            fresh_timeout,
        } => {
            let options = SqlOptions {
                lake,
                extension_dir,
                query,
                file,
                format,
                output,
                fresh: fresh.then(|| FreshOptions {
                    kafka_brokers,
                    timeout: Duration::from_secs(fresh_timeout),
                }),
            };
            // DuckDB's API is blocking (and the prompt waits on the terminal).
            tokio::task::spawn_blocking(move || tlake_cli::sql::run(&options)).await??;
        }
        Command::Tables { lake, output } => {
            let keys = S3Keys::from_env()?;
            let infos = tables::list(&lake, &keys).await?;
            match output {
                Output::Table => print!("{}", tables::text(&infos)),
                Output::Json => println!("{}", serde_json::to_string_pretty(&infos)?),
            }
        }
        Command::Bench {
            target:
                BenchTarget::Gateway {
                    gateway,
                    gateway_pid,
                    stream,
                    batches,
                    seconds,
                    concurrency,
                    lines,
                    runs,
                    kafka,
                    topic,
                },
        } => {
            let bench = GatewayBench {
                gateway,
                gateway_pid,
                stream,
                batches,
                duration: Duration::from_secs(seconds),
                concurrency,
                source: source(lines)?,
                runs,
                kafka: kafka.map(|brokers| Ceiling { brokers, topic }),
            };
            println!("{TABLE_HEADER}");
            let runs = tlake_cli::bench::gateway(&bench, |run| println!("{run}")).await?;
            if bench.runs > 1 || bench.kafka.is_some() {
                print!("\n{}", tlake_cli::bench::summary(&runs));
            }
        }
        Command::Bench {
            target:
                BenchTarget::Fresh {
                    load,
                    compare,
                    runs,
                    lake,
                    extension_dir,
                    kafka_brokers,
                },
        } => {
            tlake_cli::freshness::run(&tlake_cli::freshness::FreshBench {
                gateway: load.gateway.clone(),
                load: load.offered(),
                source: source(load.lines)?,
                lake,
                extension_dir,
                fresh: FreshOptions {
                    kafka_brokers,
                    timeout: Duration::from_secs(30),
                },
                compare,
                runs,
            })
            .await?;
        }
        Command::Bench {
            target:
                BenchTarget::Soak {
                    load,
                    warmup,
                    watch,
                    out,
                    runs,
                    lake,
                    extension_dir,
                },
        } => {
            tlake_cli::soak::run(&tlake_cli::soak::SoakBench {
                gateway: load.gateway.clone(),
                load: load.offered(),
                source: source(load.lines)?,
                watch,
                lake,
                extension_dir,
                out,
                warmup: Duration::from_secs(warmup),
                runs,
            })
            .await?;
        }
        Command::Doctor {
            namespace,
            context,
            output,
        } => {
            let report = doctor::run(&doctor::Options { namespace, context }).await;
            match output {
                Output::Table => print!("{}", report.table()),
                Output::Json => println!("{}", report.json()),
            }
            if report.failed() {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
