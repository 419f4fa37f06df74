//! Starting the real `tlake-gateway` binary as a child process.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tlake_proto::v1::log_ingest_client::LogIngestClient;
use tonic::transport::Channel;

/// Path of one of our binaries, built next to the test executables.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is not built. Build the binaries first: `cargo build --workspace --bins` \
         (`tests/run` does this).",
        path.display()
    );
    path
}

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

/// A running gateway process; killed when dropped.
#[derive(Debug)]
pub struct Gateway {
    child: Child,
    /// gRPC address.
    pub grpc: SocketAddr,
    /// Metrics address.
    pub metrics: SocketAddr,
    log: PathBuf,
}

impl Gateway {
    /// Starts a gateway on free loopback ports and waits until it listens.
    pub fn start(options: &GatewayOptions) -> Self {
        let dir = std::env::temp_dir().join(format!("tlake-gw-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut toml = format!(
            "listen = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\nshutdown_grace_ms = 20000\n{}\n[kafka]\nbrokers = \"{}\"\n[streams]\n",
            options.extra_toml, options.brokers
        );
        for (stream, topic) in &options.streams {
            toml.push_str(&format!("{stream} = \"{topic}\"\n"));
        }
        let config = dir.join("gateway.toml");
        std::fs::write(&config, toml).expect("write config");
        let log = dir.join("gateway.log");
        let mut child = Command::new(binary("tlake-gateway"))
            .arg("--config")
            .arg(&config)
            .envs(options.env.iter().cloned())
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn tlake-gateway");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read ready line");
        let Some(rest) = line.trim().strip_prefix("tlake-gateway ready ") else {
            let _ = child.kill();
            panic!(
                "gateway did not start: {line:?}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        let mut grpc = None;
        let mut metrics = None;
        for part in rest.split(' ') {
            if let Some(a) = part.strip_prefix("grpc=") {
                grpc = a.parse().ok();
            } else if let Some(a) = part.strip_prefix("metrics=") {
                metrics = a.parse().ok();
            }
        }
        Self {
            child,
            grpc: grpc.expect("grpc address in ready line"),
            metrics: metrics.expect("metrics address in ready line"),
            log,
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

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to exit (at most `timeout`); returns its success.
    pub fn wait(&mut self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.success();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "gateway did not exit in {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The gateway's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The Prometheus metrics text.
    pub fn metrics_text(&self) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(self.metrics).expect("metrics port");
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        out
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- gateway log ----\n{}", self.log());
        }
    }
}
