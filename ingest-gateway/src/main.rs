//! `tlake-gateway`: reads its configuration, serves until SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use figment::Figment;
use figment::providers::Serialized;
use tlake_ingest_gateway::config::Config;
use tlake_service_kit::exit;

const BINARY: &str = "tlake-gateway";

/// Ingest gateway: SendLogs, OTLP Export (gRPC) and OTLP/HTTP → Kafka.
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
    /// OTLP/HTTP listen address (overrides `otlp_http_listen`).
    #[arg(long)]
    otlp_http_listen: Option<SocketAddr>,
    /// Kafka bootstrap servers (overrides `kafka.brokers`).
    #[arg(long)]
    brokers: Option<String>,
    /// Validate the configuration, print it and exit.
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    tlake_service_kit::init_tracing();
    let cli = Cli::parse();
    let mut overrides = Figment::new();
    if let Some(listen) = cli.listen {
        overrides = overrides.merge(Serialized::global("listen", listen));
    }
    if let Some(listen) = cli.metrics_listen {
        overrides = overrides.merge(Serialized::global("metrics_listen", listen));
    }
    if let Some(listen) = cli.otlp_http_listen {
        overrides = overrides.merge(Serialized::global("otlp_http_listen", listen));
    }
    if let Some(brokers) = &cli.brokers {
        overrides = overrides.merge(Serialized::global("kafka.brokers", brokers));
    }
    let config = match Config::load(cli.config.as_deref(), overrides) {
        Ok(config) => config,
        Err(err) => return exit::usage(BINARY, err),
    };
    if cli.check_config {
        let mut shown = config.clone();
        if shown.auth.token.is_some() {
            shown.auth.token = Some("<redacted>".into());
        }
        println!("{shown:#?}");
        return ExitCode::SUCCESS;
    }
    let service = tlake_ingest_gateway::run(
        config,
        |bound| {
            tlake_service_kit::print_ready(
                BINARY,
                &[
                    ("grpc", &bound.grpc),
                    ("otlp_http", &bound.otlp_http),
                    ("metrics", &bound.metrics),
                ],
            )
        },
        tlake_service_kit::shutdown::signal(),
    );
    exit::serve(BINARY, service)
}
