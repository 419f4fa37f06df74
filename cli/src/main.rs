//! `tlake`: the telemetry-lake command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use tlake_cli::bench::{GatewayBench, TABLE_HEADER};
use tlake_cli::doctor;
use tlake_cli::events::Source;
use tlake_cli::send::{SendOptions, send};

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
        /// Events per request.
        #[arg(long, default_value_t = 500)]
        batch: usize,
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
    },
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
            lines,
            token,
            ca_file,
        } => {
            let acked = send(SendOptions {
                gateway,
                stream,
                service,
                count,
                batch,
                token,
                ca_file,
                source: source(lines)?,
            })
            .await?;
            println!("{acked}");
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
            };
            println!("{TABLE_HEADER}");
            for run in tlake_cli::bench::gateway(&bench).await? {
                println!("{run}");
            }
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
