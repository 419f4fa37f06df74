//! Where the local stack listens (env from `deploy/local/stack env`, with
//! the stack's defaults), and control of its components for fault tests.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// Endpoints of the local stack.
#[derive(Debug, Clone)]
pub struct Stack {
    /// Kafka bootstrap servers.
    pub kafka_brokers: String,
}

impl Stack {
    /// Reads the endpoints and checks that Kafka answers; panics with the
    /// command that starts the stack when it does not.
    pub fn get() -> Self {
        let stack = Self {
            kafka_brokers: env_or("TLAKE_KAFKA_BROKERS", "127.0.0.1:9092"),
        };
        require_port("Kafka", &stack.kafka_brokers);
        stack
    }
}

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_owned())
}

/// Panics with a how-to-start message when nothing listens at `addr`.
pub fn require_port(what: &str, addr: &str) {
    let first = addr.split(',').next().unwrap_or(addr);
    let reachable = first
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok());
    assert!(
        reachable,
        "{what} is not reachable at {addr}. Start the local stack first: \
         `deploy/local/stack up` (or run everything with `tests/run`)."
    );
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

/// Runs `deploy/local/stack <args>` and panics with its output on failure.
pub fn stack_ctl(args: &[&str]) {
    let script = repo_root().join("deploy/local/stack");
    let output = Command::new(&script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        output.status.success(),
        "`deploy/local/stack {}` failed: {}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
