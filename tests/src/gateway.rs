//! Starting the real `tlake-gateway` binary as a child process.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::process::Command;
use std::time::Duration;

use tlake_proto::v1::log_ingest_client::LogIngestClient;
use tonic::transport::Channel;

pub use crate::process::binary;
use crate::process::{Process, addr, http_get, temp_dir};

/// What to start a gateway with.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// stream → topic routes.
    pub streams: BTreeMap<String, String>,
    /// Kafka bootstrap servers.
    pub brokers: String,
    /// Extra TOML appended to the generated config file.
    pub extra_toml: String,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
}

impl GatewayOptions {
    /// Routes the default stream to `topic`.
    pub fn new(brokers: &str, topic: &str) -> Self {
        Self {
            streams: BTreeMap::from([("default".to_owned(), topic.to_owned())]),
            brokers: brokers.to_owned(),
            extra_toml: String::new(),
            env: Vec::new(),
        }
    }
}

/// A running gateway process; killed when dropped. Process control
/// (`sigterm`, `kill`, `log`) comes from [`Process`].
#[derive(Debug)]
pub struct Gateway {
    process: Process,
    /// gRPC address.
    pub grpc: SocketAddr,
    /// OTLP/HTTP address.
    pub otlp_http: SocketAddr,
    /// Metrics address.
    pub metrics: SocketAddr,
}

impl Gateway {
    /// Starts a gateway on free loopback ports and waits until it listens.
    pub fn start(options: &GatewayOptions) -> Self {
        let dir = temp_dir("tlake-gw");
        let mut toml = format!(
            "listen = \"127.0.0.1:0\"\notlp_http_listen = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\nshutdown_grace_ms = 20000\n{}\n[kafka]\nbrokers = \"{}\"\n[streams]\n",
            options.extra_toml, options.brokers
        );
        for (stream, topic) in &options.streams {
            toml.push_str(&format!("{stream} = \"{topic}\"\n"));
        }
        let config = dir.join("gateway.toml");
        std::fs::write(&config, toml).expect("write config");
        let mut command = Command::new(binary("tlake-gateway"));
        command
            .arg("--config")
            .arg(&config)
            .envs(options.env.iter().cloned())
            .env("RUST_LOG", "info");
        let (process, fields) = Process::start("tlake-gateway", command, &dir);
        Self {
            process,
            grpc: addr(&fields, "grpc"),
            otlp_http: addr(&fields, "otlp_http"),
            metrics: addr(&fields, "metrics"),
        }
    }

    /// A connected channel.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.grpc))
            .expect("uri")
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .expect("connect to gateway")
    }

    /// A SendLogs client.
    pub async fn client(&self) -> LogIngestClient<Channel> {
        LogIngestClient::new(self.channel().await)
    }

    /// Waits for the process to exit (at most `timeout`, else panics);
    /// returns whether it exited successfully.
    pub fn wait(&mut self, timeout: Duration) -> bool {
        self.process
            .wait(timeout)
            .unwrap_or_else(|| panic!("gateway did not exit in {timeout:?}"))
            .success()
    }

    /// The Prometheus metrics text.
    pub fn metrics_text(&self) -> String {
        http_get(self.metrics, "/metrics")
    }
}

impl Deref for Gateway {
    type Target = Process;

    fn deref(&self) -> &Process {
        &self.process
    }
}

impl DerefMut for Gateway {
    fn deref_mut(&mut self) -> &mut Process {
        &mut self.process
    }
}
