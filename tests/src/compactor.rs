//! Starting the real `tlake-compactor` binary as a child process.

use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::process::Command;

pub use crate::process::http_get;
use crate::process::{Process, addr, binary, temp_dir};

/// What to start a compactor with.
#[derive(Debug, Clone)]
pub struct CompactorOptions {
    /// Kafka bootstrap servers.
    pub brokers: String,
    /// Topics to consume.
    pub topics: Vec<String>,
    /// Consumer group (unique per test by default).
    pub group_id: String,
    /// `flush.max_latency_ms`.
    pub max_latency_ms: u64,
    /// Extra environment variables (e.g. the failpoint).
    pub env: Vec<(String, String)>,
    /// TOML sections added at the end of the config file (e.g. `[promote.s]`).
    pub extra_toml: String,
}

impl CompactorOptions {
    /// One topic, its own group, a 1 s latency cap.
    pub fn new(brokers: &str, topic: &str) -> Self {
        Self {
            brokers: brokers.to_owned(),
            topics: vec![topic.to_owned()],
            group_id: format!("tlake-test-{}", uuid::Uuid::new_v4().simple()),
            max_latency_ms: 1000,
            env: Vec::new(),
            extra_toml: String::new(),
        }
    }

    /// Adds an environment variable.
    pub fn with_env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }
}

/// A running compactor; killed (SIGKILL) when dropped. Process control
/// (`sigterm`, `kill`, `wait`, `log`) comes from [`Process`].
#[derive(Debug)]
pub struct Compactor {
    process: Process,
    /// Metrics / healthz address.
    pub metrics: SocketAddr,
}

impl Compactor {
    /// Starts a compactor and waits for its ready line.
    pub fn start(options: &CompactorOptions) -> Self {
        let dir = temp_dir("tlake-cmp");
        let toml = config_toml(options);
        let config = dir.join("compactor.toml");
        std::fs::write(&config, toml).expect("write config");
        let mut command = Command::new(binary("tlake-compactor"));
        command
            .arg("--config")
            .arg(&config)
            .envs(crate::lake::compactor_env())
            .envs(options.env.iter().cloned())
            .env("RUST_LOG", "info,tlake_compactor=debug");
        let (process, fields) = Process::start("tlake-compactor", command, &dir);
        Self {
            process,
            metrics: addr(&fields, "metrics"),
        }
    }

    /// The Prometheus metrics text.
    pub fn metrics_text(&self) -> String {
        http_get(self.metrics, "/metrics")
    }
}

/// The compactor's TOML configuration for `options` and the local stack.
pub fn config_toml(options: &CompactorOptions) -> String {
    let topics: Vec<String> = options.topics.iter().map(|t| format!("\"{t}\"")).collect();
    format!(
        "metrics_listen = \"127.0.0.1:0\"\n[kafka]\nbrokers = \"{}\"\ngroup_id = \"{}\"\ntopics = [{}]\nsession_timeout_ms = 6000\n\
         [catalog]\nuri = \"{}\"\nwarehouse = \"{}\"\nnamespace = \"logs\"\nrequest_timeout_ms = 10000\n\
         [s3]\nendpoint = \"{}\"\nregion = \"{}\"\npath_style = true\n[flush]\nmax_latency_ms = {}\n{}",
        options.brokers,
        options.group_id,
        topics.join(", "),
        crate::lake::env("TLAKE_CATALOG_URI"),
        crate::lake::env("TLAKE_WAREHOUSE"),
        crate::lake::env("TLAKE_S3_ENDPOINT"),
        crate::lake::env("TLAKE_S3_REGION"),
        options.max_latency_ms,
        options.extra_toml,
    )
}

/// What one `tlake-compactor maintain` run printed.
#[derive(Debug)]
pub struct MaintainRun {
    /// Exit code (None: killed by a signal).
    pub code: Option<i32>,
    /// The summary.
    pub stdout: String,
    /// The log.
    pub stderr: String,
}

/// Runs `tlake-compactor maintain <args>` once with `options`' configuration
/// plus `maintenance` (TOML lines of the `[maintenance]` section).
pub fn maintain(options: &CompactorOptions, maintenance: &str, args: &[&str]) -> MaintainRun {
    let dir = temp_dir("tlake-maint");
    let config = dir.join("compactor.toml");
    std::fs::write(
        &config,
        format!("{}[maintenance]\n{maintenance}\n", config_toml(options)),
    )
    .expect("write config");
    let output = Command::new(binary("tlake-compactor"))
        .arg("maintain")
        .arg("--config")
        .arg(&config)
        .args(args)
        .envs(crate::lake::compactor_env())
        // Lets tests use a grace of seconds (the floor is ~52 minutes by default).
        .env("TLAKE_TEST_SHORT_ORPHAN_GRACE", "1") // tlake_catalog_client::retry::SHORT_GRACE_ENV
        .env("RUST_LOG", "info")
        .output()
        .expect("run tlake-compactor maintain");
    MaintainRun {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

impl Deref for Compactor {
    type Target = Process;

    fn deref(&self) -> &Process {
        &self.process
    }
}

impl DerefMut for Compactor {
    fn deref_mut(&mut self) -> &mut Process {
        &mut self.process
    }
}
