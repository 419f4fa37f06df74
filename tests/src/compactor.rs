//! Starting the real `tlake-compactor` binary as a child process.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::gateway::binary;

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
        }
    }

    /// Adds an environment variable.
    pub fn with_env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }
}

/// A running compactor; killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct Compactor {
    child: Child,
    /// Metrics / healthz address.
    pub metrics: SocketAddr,
    log: PathBuf,
}

impl Compactor {
    /// Starts a compactor and waits for its ready line.
    pub fn start(options: &CompactorOptions) -> Self {
        let dir = std::env::temp_dir().join(format!("tlake-cmp-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let topics: Vec<String> = options.topics.iter().map(|t| format!("\"{t}\"")).collect();
        let toml = format!(
            "metrics_listen = \"127.0.0.1:0\"\n[kafka]\nbrokers = \"{}\"\ngroup_id = \"{}\"\ntopics = [{}]\nsession_timeout_ms = 6000\n\
             [catalog]\nuri = \"{}\"\nwarehouse = \"{}\"\nnamespace = \"logs\"\nrequest_timeout_ms = 10000\n\
             [s3]\nendpoint = \"{}\"\nregion = \"{}\"\npath_style = true\n[flush]\nmax_latency_ms = {}\n",
            options.brokers,
            options.group_id,
            topics.join(", "),
            crate::lake::env("TLAKE_CATALOG_URI"),
            crate::lake::env("TLAKE_WAREHOUSE"),
            crate::lake::env("TLAKE_S3_ENDPOINT"),
            crate::lake::env("TLAKE_S3_REGION"),
            options.max_latency_ms,
        );
        let config = dir.join("compactor.toml");
        std::fs::write(&config, toml).expect("write config");
        let log = dir.join("compactor.log");
        let mut child = Command::new(binary("tlake-compactor"))
            .arg("--config")
            .arg(&config)
            .envs(crate::lake::compactor_env())
            .envs(options.env.iter().cloned())
            .env("RUST_LOG", "info,tlake_compactor=debug")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn tlake-compactor");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read ready line");
        let Some(rest) = line.trim().strip_prefix("tlake-compactor ready ") else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "compactor did not start: {line:?}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        let metrics = rest
            .split(' ')
            .find_map(|p| p.strip_prefix("metrics="))
            .and_then(|a| a.parse().ok())
            .expect("metrics address in ready line");
        Self {
            child,
            metrics,
            log,
        }
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to exit (at most `timeout`); returns whether it
    /// exited by itself, and its exit status if so.
    pub fn wait(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The compactor's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The Prometheus metrics text.
    pub fn metrics_text(&self) -> String {
        http_get(self.metrics, "/metrics")
    }
}

/// A plain HTTP/1.1 GET; returns the whole response (status line included).
pub fn http_get(addr: SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

impl Drop for Compactor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- compactor log ({}) ----\n{}",
                self.log.display(),
                self.log()
            );
        }
    }
}
