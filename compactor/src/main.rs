//! `tlake-compactor`: reads its configuration, consumes until SIGTERM/SIGINT,
//! then flushes and commits what it holds.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Args, Parser, Subcommand};
use figment::Figment;
use figment::providers::Serialized;
use tlake_compactor::config::Config;
use tlake_service_kit::exit;

const BINARY: &str = "tlake-compactor";

/// Compactor: Kafka → DuckDB → Parquet → Iceberg (Nessie), exactly once.
///
/// Configuration: defaults ← --config file ← TLAKE_COMPACTOR_* env ← flags.
/// S3 credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, env = "TLAKE_COMPACTOR_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Kafka bootstrap servers (overrides `kafka.brokers`).
    #[arg(long)]
    brokers: Option<String>,
    /// Validate the configuration, print it and exit.
    #[arg(long)]
    check_config: bool,
    /// Without a subcommand: run the compactor.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Table maintenance, once: rewrite small files, expire old snapshots,
    /// delete orphaned files (settings: the `[maintenance]` section).
    Maintain(MaintainArgs),
}

#[derive(Debug, Args)]
struct MaintainArgs {
    /// Only this table (default: every table of the namespace).
    #[arg(long)]
    table: Option<String>,
    /// Report what would be done; write, commit and delete nothing.
    #[arg(long)]
    dry_run: bool,
    /// Also rewrite the files written under an older partition spec into the
    /// table's current one (after a `[partition_by]` change).
    #[arg(long)]
    relayout: bool,
}

fn main() -> ExitCode {
    tlake_service_kit::init_tracing();
    let cli = Cli::parse();
    let mut overrides = Figment::new();
    if let Some(brokers) = &cli.brokers {
        overrides = overrides.merge(Serialized::global("kafka.brokers", brokers));
    }
    let config = match Config::load(cli.config.as_deref(), overrides) {
        Ok(config) => config,
        Err(err) => return exit::usage(BINARY, err),
    };
    if cli.check_config {
        println!("{config:#?}");
        return ExitCode::SUCCESS;
    }
    if let Err(err) = tlake_compactor::catalog_settings(&config) {
        return exit::usage(BINARY, err);
    }
    if let Some(Command::Maintain(args)) = cli.command {
        return maintain(&config, args);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let topics = config.kafka.topics.join(",");
    exit::serve(BINARY, async {
        let signal_stop = stop.clone();
        tokio::spawn(async move {
            tlake_service_kit::shutdown::signal().await;
            signal_stop.store(true, Ordering::Relaxed);
        });
        tlake_compactor::run(config, stop.clone(), move |metrics| {
            tlake_service_kit::print_ready(BINARY, &[("metrics", &metrics), ("topics", &topics)])
        })
        .await
    })
}

/// `tlake-compactor maintain`: one pass, a summary per table on stdout.
fn maintain(config: &Config, args: MaintainArgs) -> ExitCode {
    use tlake_maintenance::{MaintainError, MaintainOptions};
    if let Some(table) = &args.table
        && !tlake_proto::contract::is_stream_name(table)
    {
        return exit::usage(
            BINARY,
            format!(
                "--table: {table:?} is not a table name \
                 (lower-case letters, digits and '_', starting with a letter)"
            ),
        );
    }
    let options = MaintainOptions {
        table: args.table,
        dry_run: args.dry_run,
        relayout: args.relayout,
    };
    let pass = async {
        let settings = tlake_compactor::catalog_settings(config)?;
        // A grace below the floor is a configuration error, said before connecting.
        config.maintenance.check_grace(settings.request_timeout)?;
        let catalog = tlake_catalog_client::LakeCatalog::connect(&settings).await?;
        tlake_maintenance::maintain(&catalog, &config.maintenance, &options).await
    };
    let run = match exit::block_on(BINARY, pass) {
        Ok(run) => run,
        Err(code) => return code,
    };
    match run {
        Ok(run) => {
            for report in &run.reports {
                println!("{report}");
            }
            for (table, err) in &run.failed {
                eprintln!("{BINARY}: maintenance of {table} failed: {err}");
            }
            if run.failed.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(err @ (MaintainError::NoSuchTable { .. } | MaintainError::Config(_))) => {
            exit::usage(BINARY, err)
        }
        Err(err) => {
            eprintln!("{BINARY}: maintenance failed: {err}");
            ExitCode::FAILURE
        }
    }
}
