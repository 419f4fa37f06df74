//! `tlake-gateway`: reads its configuration, serves until SIGTERM/SIGINT.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use figment::Figment;
use figment::providers::Serialized;
use tlake_gateway::config::Config;
use tracing_subscriber::EnvFilter;

/// Ingest gateway: SendLogs and OTLP Export → Kafka.
///
/// Configuration: defaults ← --config file ← TLAKE_GATEWAY_* env ← flags.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, env = "TLAKE_GATEWAY_CONFIG")]
    config: Option<PathBuf>,
    /// gRPC listen address (overrides `listen`).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Metrics listen address (overrides `metrics_listen`).
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// Kafka bootstrap servers (overrides `kafka.brokers`).
    #[arg(long)]
    brokers: Option<String>,
    /// Validate the configuration, print it and exit.
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let mut overrides = Figment::new();
    if let Some(listen) = cli.listen {
        overrides = overrides.merge(Serialized::global("listen", listen));
    }
    if let Some(listen) = cli.metrics_listen {
        overrides = overrides.merge(Serialized::global("metrics_listen", listen));
    }
    if let Some(brokers) = &cli.brokers {
        overrides = overrides.merge(Serialized::global("kafka.brokers", brokers));
    }
    let config = match Config::load(cli.config.as_deref(), overrides) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("tlake-gateway: {err}");
            return ExitCode::from(2);
        }
    };
    if cli.check_config {
        let mut shown = config.clone();
        if shown.auth.token.is_some() {
            shown.auth.token = Some("<redacted>".into());
        }
        println!("{shown:#?}");
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("tlake-gateway: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(tlake_gateway::run(
        config,
        |bound| {
            // One machine-readable line for scripts and tests.
            let mut out = std::io::stdout().lock();
            let _ = writeln!(
                out,
                "tlake-gateway ready grpc={} metrics={}",
                bound.grpc, bound.metrics
            );
            let _ = out.flush();
        },
        shutdown_signal(),
    ));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tlake-gateway: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
