//! The gateway's one typed configuration: defaults, then a TOML file, then
//! `TLAKE_GATEWAY_*` environment variables, then command-line flags — each
//! layer overriding the one before — validated once at start.
//!
//! Every key, with its default, is documented in `ingest-gateway/README.md`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use serde::{Deserialize, Serialize};

/// Kafka topic the default stream routes to (the seed's topic).
pub const DEFAULT_TOPIC: &str = "telemetry-logs";
/// Prefix of environment variables; nested keys are joined with `__`,
/// e.g. `TLAKE_GATEWAY_KAFKA__BROKERS`.
pub const ENV_PREFIX: &str = "TLAKE_GATEWAY_";

/// Complete gateway configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// gRPC listen address (SendLogs, OTLP Export, health). Port 0 picks a free port.
    pub listen: SocketAddr,
    /// Prometheus `/metrics` listen address.
    pub metrics_listen: SocketAddr,
    /// OTLP/HTTP listen address (`POST /v1/logs`; OTLP's default port 4318).
    pub otlp_http_listen: SocketAddr,
    /// Stream name → Kafka topic. A request naming any other stream is rejected.
    pub streams: BTreeMap<String, String>,
    /// Kafka producer settings.
    pub kafka: KafkaConfig,
    /// Request and event size limits.
    pub limits: Limits,
    /// Bearer-token authentication.
    pub auth: AuthConfig,
    /// Refusing new requests while the compactor is far behind.
    pub backpressure: BackpressureConfig,
    /// TLS for the gRPC and the OTLP/HTTP listeners.
    pub tls: Option<TlsConfig>,
    /// How long a graceful shutdown may take to drain requests and flush Kafka.
    #[serde(with = "millis")]
    pub shutdown_grace_ms: Duration,
}

/// Kafka producer settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma separated.
    pub brokers: String,
    /// Upper bound from produce to delivery report. Past it the request is
    /// answered UNAVAILABLE (the outcome is unknown, so it is never OK).
    #[serde(with = "millis")]
    pub delivery_timeout_ms: Duration,
    /// librdkafka `linger.ms`: how long to wait to fill a produce request.
    pub linger_ms: u32,
    /// librdkafka `compression.type` (none, gzip, snappy, lz4, zstd).
    pub compression: String,
    /// Extra librdkafka properties (e.g. security.protocol, sasl.*), applied last.
    pub properties: BTreeMap<String, String>,
}

/// Size limits. Requests beyond them are rejected before anything is produced.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest decoded (and decompressed) gRPC message accepted.
    pub max_request_bytes: usize,
    /// Most events in one request.
    pub max_events_per_request: usize,
    /// Largest single encoded event.
    pub max_event_bytes: usize,
    /// Target size of one Kafka record; a request is split into chunks of at most this.
    pub chunk_bytes: usize,
    /// Bytes of accepted-but-not-yet-delivered requests held at once; beyond
    /// it new requests get RESOURCE_EXHAUSTED (retryable) instead of queueing.
    pub max_inflight_bytes: usize,
}

/// Back-pressure from lag: past `max_lag_records` records written to a
/// stream's topic and not yet committed to its table, the stream's requests
/// get RESOURCE_EXHAUSTED / 429 with a retry hint instead of filling Kafka
/// towards its retention (see `lag.rs`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BackpressureConfig {
    /// The compactor's consumer group (its `kafka.group_id`): its committed
    /// offsets mirror the tables' `tlake.offsets`.
    pub compactor_group: String,
    /// Kafka records behind, summed over a topic's partitions, at which new
    /// requests are refused; 0 turns back-pressure off. A record is one
    /// chunk of a request (at most `limits.chunk_bytes`), so the bound holds
    /// Kafka's backlog under this many requests' worth of bytes.
    pub max_lag_records: u64,
    /// How often the lag is read from Kafka; the lag can pass the bound by
    /// one interval of traffic.
    #[serde(with = "millis")]
    pub check_interval_ms: Duration,
    /// The wait suggested to refused clients (`retry-after-ms`, `Retry-After`).
    #[serde(with = "millis")]
    pub retry_after_ms: Duration,
}

impl Default for BackpressureConfig {
    fn default() -> Self {
        Self {
            compactor_group: "tlake-compactor".to_owned(),
            // 20K requests behind: far past a healthy flush cycle (a
            // compactor commits every few seconds, ~10–100 records at the
            // SDK's batches), near the 2 GiB of the chart's Kafka volume
            // for 100-event requests (~30 KB records).
            max_lag_records: 20_000,
            check_interval_ms: Duration::from_secs(1),
            retry_after_ms: Duration::from_secs(1),
        }
    }
}

/// Bearer-token authentication. With no tokens configured, auth is off.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// File with one accepted token per line (blank lines and `#` comments ignored).
    pub tokens_file: Option<PathBuf>,
    /// A single accepted token, normally from `TLAKE_GATEWAY_AUTH__TOKEN`.
    /// Never put a token in a config file checked into version control.
    pub token: Option<String>,
}

/// Server TLS: PEM certificate chain and private key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 4317)),
            metrics_listen: SocketAddr::from(([0, 0, 0, 0], 9464)),
            otlp_http_listen: SocketAddr::from(([0, 0, 0, 0], 4318)),
            streams: BTreeMap::from([(
                tlake_proto::contract::DEFAULT_STREAM.to_owned(),
                DEFAULT_TOPIC.to_owned(),
            )]),
            kafka: KafkaConfig::default(),
            limits: Limits::default(),
            auth: AuthConfig::default(),
            backpressure: BackpressureConfig::default(),
            tls: None,
            shutdown_grace_ms: Duration::from_secs(30),
        }
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".to_owned(),
            delivery_timeout_ms: Duration::from_secs(10),
            linger_ms: 5,
            compression: "lz4".to_owned(),
            properties: BTreeMap::new(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_request_bytes: 8 << 20,
            max_events_per_request: 10_000,
            max_event_bytes: 256 << 10,
            chunk_bytes: 512 << 10,
            max_inflight_bytes: 256 << 20,
        }
    }
}

pub use tlake_service_kit::ConfigError;

impl Config {
    /// Loads defaults ← `file` (if given) ← environment ← `overrides`, then validates.
    pub fn load(file: Option<&Path>, overrides: Figment) -> Result<Self, ConfigError> {
        // TLAKE_GATEWAY_CONFIG names the file (a flag's env), not a key.
        let config: Config =
            tlake_service_kit::config::load(ENV_PREFIX, &["config"], file, overrides)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value that can be checked without a network.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.to_owned(),
            })
        };
        if self.streams.is_empty() {
            return invalid("streams", "at least one stream → topic route is required");
        }
        for (stream, topic) in &self.streams {
            if let Err(reason) = tlake_proto::contract::stream_name(stream) {
                return Err(ConfigError::Invalid {
                    key: "streams",
                    reason: format!("stream {stream:?}: {reason}"),
                });
            }
            if !tlake_proto::contract::is_topic_name(topic) {
                return Err(ConfigError::Invalid {
                    key: "streams",
                    reason: format!(
                        "topic {topic:?} of stream {stream:?} is not a valid Kafka topic name \
                         (1-249 of [a-zA-Z0-9._-])"
                    ),
                });
            }
        }
        if self.kafka.brokers.trim().is_empty() {
            return invalid("kafka.brokers", "must name at least one host:port");
        }
        if self.kafka.delivery_timeout_ms < Duration::from_millis(100) {
            return invalid("kafka.delivery_timeout_ms", "must be at least 100");
        }
        if !["none", "gzip", "snappy", "lz4", "zstd"].contains(&self.kafka.compression.as_str()) {
            return invalid(
                "kafka.compression",
                "must be one of none, gzip, snappy, lz4, zstd",
            );
        }
        let l = &self.limits;
        if l.max_events_per_request == 0 {
            return invalid("limits.max_events_per_request", "must be at least 1");
        }
        if l.max_event_bytes < 64 {
            return invalid("limits.max_event_bytes", "must be at least 64");
        }
        if l.chunk_bytes < l.max_event_bytes {
            return invalid(
                "limits.chunk_bytes",
                "must be at least limits.max_event_bytes (one event must fit a chunk)",
            );
        }
        // Kafka's default message.max.bytes is 1 MiB; a chunk plus its
        // envelope must stay below it.
        if l.chunk_bytes > 900 << 10 {
            return invalid(
                "limits.chunk_bytes",
                "must be at most 921600 (Kafka's 1 MiB record limit, less headroom)",
            );
        }
        if l.max_request_bytes < l.max_event_bytes {
            return invalid(
                "limits.max_request_bytes",
                "must be at least limits.max_event_bytes",
            );
        }
        if l.max_inflight_bytes < l.max_request_bytes {
            return invalid(
                "limits.max_inflight_bytes",
                "must be at least limits.max_request_bytes",
            );
        }
        let b = &self.backpressure;
        if b.max_lag_records > 0 {
            if b.compactor_group.trim().is_empty() {
                return invalid(
                    "backpressure.compactor_group",
                    "must name the compactor's consumer group (or set max_lag_records = 0)",
                );
            }
            if b.check_interval_ms < Duration::from_millis(100) {
                return invalid("backpressure.check_interval_ms", "must be at least 100");
            }
            if b.retry_after_ms.is_zero() {
                return invalid("backpressure.retry_after_ms", "must be at least 1");
            }
        }
        if self
            .auth
            .token
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return invalid("auth.token", "is set but empty");
        }
        Ok(())
    }

    /// Reads every accepted bearer token (from `auth.token` and `auth.tokens_file`).
    pub fn tokens(&self) -> Result<Vec<String>, ConfigError> {
        let mut tokens: Vec<String> = self.auth.token.iter().cloned().collect();
        if let Some(path) = &self.auth.tokens_file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::File {
                key: "auth.tokens_file",
                path: path.clone(),
                source,
            })?;
            let before = tokens.len();
            tokens.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_owned),
            );
            if tokens.len() == before {
                return Err(ConfigError::Invalid {
                    key: "auth.tokens_file",
                    reason: format!("{} holds no token", path.display()),
                });
            }
        }
        Ok(tokens)
    }
}

/// Durations are written as integer milliseconds in files and env.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = tlake_service_kit::config::from_toml(text)?;
        config.validate()?;
        Ok(config)
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().expect("defaults validate");
    }

    #[test]
    fn file_values_override_defaults() {
        let c = load_toml(
            "listen = \"127.0.0.1:5000\"\n[kafka]\nbrokers = \"k:9092\"\ndelivery_timeout_ms = 2500\n\
             [streams]\napp = \"app-logs\"\n",
        )
        .expect("valid");
        assert_eq!(c.listen.port(), 5000);
        assert_eq!(c.kafka.brokers, "k:9092");
        assert_eq!(c.kafka.delivery_timeout_ms, Duration::from_millis(2500));
        assert_eq!(c.streams.get("app").map(String::as_str), Some("app-logs"));
        assert_eq!(
            c.streams.get("default").map(String::as_str),
            Some("telemetry-logs")
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = load_toml("[kafka]\nbroker = \"typo:9092\"\n").expect_err("typo must fail");
        assert!(err.to_string().contains("broker"), "{err}");
    }

    #[test]
    fn wrong_types_are_rejected() {
        let err = load_toml("listen = 5").expect_err("must fail");
        assert!(err.to_string().contains("listen"), "{err}");
    }

    #[test]
    fn bad_values_name_the_key() {
        for (toml, key) in [
            ("[streams]\n\"Bad-Name\" = \"t\"\n", "streams"),
            ("[streams]\nok = \"bad topic!\"\n", "streams"),
            ("[kafka]\ncompression = \"brotli\"\n", "kafka.compression"),
            (
                "[kafka]\ndelivery_timeout_ms = 5\n",
                "kafka.delivery_timeout_ms",
            ),
            ("[limits]\nchunk_bytes = 2000000\n", "limits.chunk_bytes"),
            (
                "[limits]\nmax_events_per_request = 0\n",
                "limits.max_events_per_request",
            ),
            ("[auth]\ntoken = \" \"\n", "auth.token"),
            (
                "[backpressure]\ncompactor_group = \"\"\n",
                "backpressure.compactor_group",
            ),
            (
                "[backpressure]\ncheck_interval_ms = 10\n",
                "backpressure.check_interval_ms",
            ),
            (
                "[backpressure]\nretry_after_ms = 0\n",
                "backpressure.retry_after_ms",
            ),
        ] {
            match load_toml(toml) {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{toml}"),
                other => panic!("{toml}: expected Invalid({key}), got {other:?}"),
            }
        }
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail closure signature
    fn the_config_file_variable_is_not_a_key() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TLAKE_GATEWAY_CONFIG", "/etc/telemetry-lake/gateway.toml");
            jail.set_env("TLAKE_GATEWAY_KAFKA__BROKERS", "env-broker:9092");
            let config = Config::load(None, Figment::new()).map_err(|e| e.to_string())?;
            assert_eq!(config.kafka.brokers, "env-broker:9092");
            Ok(())
        });
    }

    #[test]
    fn missing_config_file_is_an_error() {
        let err = Config::load(Some(Path::new("/nonexistent/gw.toml")), Figment::new())
            .expect_err("must fail");
        assert!(err.to_string().contains("/nonexistent/gw.toml"), "{err}");
    }

    #[test]
    fn tokens_file_is_read() {
        let dir = std::env::temp_dir().join(format!("tlake-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("tokens");
        std::fs::write(&path, "# ops\nalpha\n\n beta \n").expect("write");
        let config = Config {
            auth: AuthConfig {
                tokens_file: Some(path.clone()),
                token: Some("gamma".into()),
            },
            ..Config::default()
        };
        assert_eq!(config.tokens().expect("read"), ["gamma", "alpha", "beta"]);
        std::fs::write(&path, "# nothing\n").expect("write");
        assert!(config.tokens().is_err());
    }
}
