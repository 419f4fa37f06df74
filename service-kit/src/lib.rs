//! tlake-service-kit: the plumbing `tlake-gateway` and `tlake-compactor` share, so
//! both load configuration, expose metrics, log, stop and announce readiness the
//! same way.
//!
//! - [`config`]: defaults ← TOML file ← environment ← flags, and the one
//!   [`ConfigError`] both binaries report.
//! - [`serve`]: `/metrics` (OpenMetrics text) and `/healthz`.
//! - [`shutdown`]: SIGTERM or SIGINT.
//! - [`exit`]: the runtime a binary runs on, and its exit codes (0, 1, 2).
//! - [`init_tracing`] and [`print_ready`]: stderr logs, and the one stdout line
//!   scripts and tests wait for.
#![deny(missing_docs)]

pub mod config;
pub mod exit;
pub mod serve;
pub mod shutdown;

pub use config::ConfigError;

use std::fmt::Display;
use std::io::Write as _;

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// Prints `<binary> ready k=v …` on stdout and flushes it: the one
/// machine-readable line that scripts and tests wait for (stdout carries
/// nothing else).
pub fn print_ready(binary: &str, fields: &[(&str, &dyn Display)]) {
    let mut line = format!("{binary} ready");
    for (key, value) in fields {
        line.push_str(&format!(" {key}={value}"));
    }
    let mut out = std::io::stdout().lock();
    // Nothing to do if stdout is gone: the process serves regardless.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
