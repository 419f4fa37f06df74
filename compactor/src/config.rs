//! The compactor's one typed configuration: defaults, then a TOML file, then
//! `TLAKE_COMPACTOR_*` environment variables (`__` nests), then flags —
//! validated once at start. Every key is documented in `compactor/README.md`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use std::collections::BTreeMap;

use figment::Figment;
use serde::{Deserialize, Serialize};
use tlake_catalog_client::{AttributeType, DEAD_LETTER_TABLE, SortBy, TimePartition};
/// Table maintenance's settings (the `[maintenance]` section), owned by `tlake-maintenance`.
pub use tlake_maintenance::Settings as MaintenanceConfig;

/// Prefix of environment variables, e.g. `TLAKE_COMPACTOR_KAFKA__BROKERS`.
pub const ENV_PREFIX: &str = "TLAKE_COMPACTOR_";
/// Env var with the S3 access key id (never in a file).
pub const ENV_ACCESS_KEY: &str = "AWS_ACCESS_KEY_ID";
/// Env var with the S3 secret access key (never in a file).
pub const ENV_SECRET_KEY: &str = "AWS_SECRET_ACCESS_KEY";

/// Complete compactor configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Prometheus `/metrics` and `/healthz` listen address. Port 0 picks one.
    pub metrics_listen: SocketAddr,
    /// Kafka consumer settings.
    pub kafka: KafkaConfig,
    /// Iceberg REST catalog (Nessie).
    pub catalog: CatalogConfig,
    /// Object storage for data files.
    pub s3: S3Config,
    /// When buffers are written out.
    pub flush: FlushConfig,
    /// Table maintenance (`tlake-compactor maintain`).
    pub maintenance: MaintenanceConfig,
    /// Attributes each stream stores in typed columns of their own:
    /// stream → attribute key → type (`[promote.app]` `"http.status_code" = "long"`).
    pub promote: BTreeMap<String, BTreeMap<String, AttributeType>>,
    /// Streams partitioned by the hour of event time instead of the day
    /// (`[partition_by]` `app = "hour"`); a change applies to new files.
    pub partition_by: BTreeMap<String, TimePartition>,
    /// Streams written in another order than (service, event_time)
    /// (`[sort_by]` `app = "event_time"`); a change applies to new files.
    pub sort_by: BTreeMap<String, SortBy>,
}

/// Kafka consumer settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma separated.
    pub brokers: String,
    /// Consumer group. Its offsets are advisory: the table holds the truth.
    pub group_id: String,
    /// Topics to consume.
    pub topics: Vec<String>,
    /// librdkafka `session.timeout.ms`.
    pub session_timeout_ms: u32,
    /// Extra librdkafka properties, applied last.
    pub properties: std::collections::BTreeMap<String, String>,
}

/// Iceberg REST catalog.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CatalogConfig {
    /// Base URI of the Iceberg REST API.
    pub uri: String,
    /// Warehouse name.
    pub warehouse: String,
    /// Namespace with one table per stream (and `dead_letters`).
    pub namespace: String,
    /// Upper bound of one catalog request.
    pub request_timeout_ms: u64,
}

/// Object storage. Credentials come from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    /// S3 endpoint URL.
    pub endpoint: String,
    /// Region.
    pub region: String,
    /// Path-style addressing.
    pub path_style: bool,
}

/// Flush triggers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FlushConfig {
    /// Flush when the estimated Parquet size of a buffer reaches this.
    pub target_file_bytes: u64,
    /// Flush when the oldest buffered row is this old (ms). Freshness ≈ this + flush time.
    pub max_latency_ms: u64,
    /// Flushes whose event ids are remembered to drop late duplicates.
    pub dedup_window_flushes: u32,
    /// At most this many remembered ids per table (~60–120 bytes each: the
    /// map is kept at most half full, so that it never grows after warm-up); the
    /// oldest flushes are forgotten first.
    pub dedup_window_ids: u64,
    /// Threads a large flush of one table is split across, each writing
    /// files of its own (0: one per core, at most 4).
    pub writers: u32,
    /// Rows each of those threads gets at least: a flush of fewer rows
    /// than twice this is written by one thread, as one file per day.
    pub min_rows_per_writer: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            metrics_listen: SocketAddr::from(([0, 0, 0, 0], 9465)),
            kafka: KafkaConfig::default(),
            catalog: CatalogConfig::default(),
            s3: S3Config::default(),
            flush: FlushConfig::default(),
            maintenance: MaintenanceConfig::default(),
            promote: BTreeMap::new(),
            partition_by: BTreeMap::new(),
            sort_by: BTreeMap::new(),
        }
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            group_id: "tlake-compactor".into(),
            topics: vec!["telemetry-logs".into()],
            session_timeout_ms: 10_000,
            properties: Default::default(),
        }
    }
}

impl Default for CatalogConfig {
    fn default() -> Self {
        Self {
            uri: "http://127.0.0.1:19120/iceberg/".into(),
            warehouse: "telemetrylake".into(),
            namespace: "logs".into(),
            request_timeout_ms: 30_000,
        }
    }
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            endpoint: "http://127.0.0.1:9000".into(),
            region: "us-east-1".into(),
            path_style: true,
        }
    }
}

impl Default for FlushConfig {
    fn default() -> Self {
        Self {
            target_file_bytes: 128 << 20,
            max_latency_ms: 5_000,
            dedup_window_flushes: 16,
            dedup_window_ids: 4_000_000,
            writers: 0,
            // ~7 MiB of Parquet for ~300-byte events (27 B/event).
            min_rows_per_writer: 1 << 18,
        }
    }
}

pub use tlake_service_kit::ConfigError;

impl Config {
    /// Loads defaults ← `file` ← environment ← `overrides`, then validates.
    pub fn load(file: Option<&Path>, overrides: Figment) -> Result<Self, ConfigError> {
        // TLAKE_COMPACTOR_CONFIG names the file and _FAILPOINT is for tests: neither is a key.
        let config: Config =
            tlake_service_kit::config::load(ENV_PREFIX, &["config", "failpoint"], file, overrides)?;
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
        if self.kafka.brokers.trim().is_empty() {
            return invalid("kafka.brokers", "must name at least one host:port");
        }
        if self.kafka.group_id.trim().is_empty() {
            return invalid("kafka.group_id", "must not be empty");
        }
        if self.kafka.topics.is_empty() {
            return invalid("kafka.topics", "must list at least one topic");
        }
        if let Some(t) = self
            .kafka
            .topics
            .iter()
            .find(|t| !tlake_proto::contract::is_topic_name(t))
        {
            return Err(ConfigError::Invalid {
                key: "kafka.topics",
                reason: format!("{t:?} is not a valid Kafka topic name (1-249 of [a-zA-Z0-9._-])"),
            });
        }
        if !(self.catalog.uri.starts_with("http://") || self.catalog.uri.starts_with("https://")) {
            return invalid("catalog.uri", "must be an http:// or https:// URL");
        }
        if self.catalog.warehouse.trim().is_empty() {
            return invalid("catalog.warehouse", "must not be empty");
        }
        if !tlake_proto::contract::is_stream_name(&self.catalog.namespace) {
            return invalid(
                "catalog.namespace",
                "must be lower-case letters, digits and '_', starting with a letter",
            );
        }
        if self.catalog.request_timeout_ms < 100 {
            return invalid("catalog.request_timeout_ms", "must be at least 100");
        }
        if !(self.s3.endpoint.starts_with("http://") || self.s3.endpoint.starts_with("https://")) {
            return invalid("s3.endpoint", "must be an http:// or https:// URL");
        }
        if self.s3.region.trim().is_empty() {
            return invalid("s3.region", "must not be empty");
        }
        if self.flush.target_file_bytes < 1 << 20 {
            return invalid(
                "flush.target_file_bytes",
                "must be at least 1048576 (1 MiB)",
            );
        }
        if self.flush.dedup_window_ids > 1 << 30 {
            return invalid(
                "flush.dedup_window_ids",
                "must be at most 1073741824 (each id costs ~60–120 bytes of memory)",
            );
        }
        if !(100..=600_000).contains(&self.flush.max_latency_ms) {
            return invalid("flush.max_latency_ms", "must be between 100 and 600000");
        }
        if self.flush.writers > 64 {
            return invalid("flush.writers", "must be at most 64 (0: one per core)");
        }
        if self.flush.min_rows_per_writer == 0 {
            return invalid("flush.min_rows_per_writer", "must be at least 1");
        }
        self.validate_streams()?;
        self.maintenance.validate()
    }

    /// The per-stream sections: `partition_by`, `sort_by` and `promote`.
    fn validate_streams(&self) -> Result<(), ConfigError> {
        const KEY: &str = "promote";
        for stream in self.partition_by.keys() {
            check_log_stream("partition_by", stream)?;
        }
        for stream in self.sort_by.keys() {
            check_log_stream("sort_by", stream)?;
        }
        for (stream, keys) in &self.promote {
            check_log_stream(KEY, stream)?;
            let mut columns: BTreeMap<String, &str> = BTreeMap::new();
            for key in keys.keys() {
                if key.is_empty() || key.len() > 255 || key.chars().any(char::is_control) {
                    return Err(ConfigError::invalid(
                        KEY,
                        format!(
                            "{stream}: attribute key {key:?} must be 1-255 characters without \
                             control characters"
                        ),
                    ));
                }
                let column = tlake_catalog_client::schema::promoted_column(key);
                if let Some(other) = columns.insert(column.clone(), key) {
                    return Err(ConfigError::invalid(
                        KEY,
                        format!(
                            "{stream}: attributes {other:?} and {key:?} would both be column \
                             {column}; promote one of them"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Latency cap as a duration.
    pub fn max_latency(&self) -> Duration {
        Duration::from_millis(self.flush.max_latency_ms)
    }

    /// How many threads may write one table's flush (`flush.writers`, 0
    /// resolved to the cores this process may use, at most 4).
    pub fn writers(&self) -> usize {
        match self.flush.writers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get().min(4)),
            n => n as usize,
        }
    }
}

/// `stream` names a logs table (not the dead letters), for the per-stream key `key`.
fn check_log_stream(key: &'static str, stream: &str) -> Result<(), ConfigError> {
    if !tlake_proto::contract::is_stream_name(stream) || stream == DEAD_LETTER_TABLE {
        return Err(ConfigError::invalid(
            key,
            format!(
                "{stream:?} is not a stream name (lower-case letters, digits and '_', starting \
                 with a letter; not {DEAD_LETTER_TABLE})"
            ),
        ));
    }
    Ok(())
}

/// S3 credentials from the environment.
pub fn s3_credentials() -> Result<(String, String), ConfigError> {
    let get = |key: &'static str| {
        std::env::var(key)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .ok_or(ConfigError::Invalid {
                key,
                reason: "must be set in the environment (S3 credentials are never read from files)"
                    .into(),
            })
    };
    Ok((get(ENV_ACCESS_KEY)?, get(ENV_SECRET_KEY)?))
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
    fn defaults_are_valid_and_fresh_enough() {
        let c = Config::default();
        c.validate().expect("defaults validate");
        assert!(
            c.max_latency() <= Duration::from_secs(5),
            "≤ 10 s freshness needs a ≤ 5 s cap"
        );
        assert_eq!(c.metrics_listen.port(), 9465);
    }

    #[test]
    fn the_charts_keys_parse() {
        let c = load_toml(
            "metrics_listen = \"0.0.0.0:9465\"\n\
             [kafka]\nbrokers = \"k:9092\"\ngroup_id = \"g\"\ntopics = [\"a\", \"b\"]\n\
             [catalog]\nuri = \"http://nessie:19120/iceberg/\"\nwarehouse = \"w\"\nnamespace = \"logs\"\n\
             [s3]\nendpoint = \"http://s3:9000\"\nregion = \"eu-west-1\"\npath_style = false\n\
             [flush]\ntarget_file_bytes = 67108864\nmax_latency_ms = 2000\n",
        )
        .expect("valid");
        assert_eq!(c.kafka.topics, ["a", "b"]);
        assert_eq!(c.catalog.uri, "http://nessie:19120/iceberg/");
        assert!(!c.s3.path_style);
        assert_eq!(c.flush.max_latency_ms, 2000);
    }

    #[test]
    fn writers_default_to_the_cores_at_most_four() {
        let auto = load_toml("").expect("defaults");
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(auto.writers(), cores.min(4));
        let set = load_toml("[flush]\nwriters = 8\n").expect("valid");
        assert_eq!(set.writers(), 8);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = load_toml("[flush]\nmax_latency = 5\n").expect_err("typo must fail");
        assert!(err.to_string().contains("max_latency"), "{err}");
    }

    #[test]
    fn bad_values_name_the_key() {
        for (toml, key) in [
            ("[kafka]\ntopics = []\n", "kafka.topics"),
            ("[kafka]\ntopics = [\"bad topic\"]\n", "kafka.topics"),
            ("[kafka]\nbrokers = \" \"\n", "kafka.brokers"),
            ("[catalog]\nuri = \"nessie:19120\"\n", "catalog.uri"),
            ("[catalog]\nnamespace = \"Logs\"\n", "catalog.namespace"),
            ("[s3]\nendpoint = \"s3:9000\"\n", "s3.endpoint"),
            (
                "[flush]\ntarget_file_bytes = 10\n",
                "flush.target_file_bytes",
            ),
            ("[flush]\nmax_latency_ms = 0\n", "flush.max_latency_ms"),
            ("[flush]\nwriters = 65\n", "flush.writers"),
            (
                "[flush]\nmin_rows_per_writer = 0\n",
                "flush.min_rows_per_writer",
            ),
            ("[maintenance]\nmin_files = 1\n", "maintenance.min_files"),
            (
                "[maintenance]\nsmall_file_bytes = 0\n",
                "maintenance.small_file_bytes",
            ),
            (
                "[maintenance]\ntarget_file_bytes = 10\n",
                "maintenance.target_file_bytes",
            ),
            (
                "[maintenance]\nmax_rewrite_bytes = 1\n",
                "maintenance.max_rewrite_bytes",
            ),
            (
                "[maintenance]\nkeep_snapshots = 0\n",
                "maintenance.keep_snapshots",
            ),
            (
                "[maintenance]\nmax_manifests = 1\n",
                "maintenance.max_manifests",
            ),
        ] {
            match load_toml(toml) {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{toml}"),
                other => panic!("{toml}: expected Invalid({key}), got {other:?}"),
            }
        }
    }

    #[test]
    fn the_orphan_grace_must_outlast_the_longest_commit() {
        let grace = |ms: u64, timeout_ms: u64| {
            let c = load_toml(&format!(
                "[catalog]\nrequest_timeout_ms = {timeout_ms}\n[maintenance]\norphan_grace_ms = {ms}\n"
            ))
            .expect("the consume loop starts whatever the grace");
            c.maintenance
                .check_grace(Duration::from_millis(c.catalog.request_timeout_ms))
        };
        // 30 minutes is too short with 30 s catalog requests (a commit may take ~26 min)…
        let err = grace(1_800_000, 30_000).expect_err("too short");
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    key: "maintenance.orphan_grace_ms",
                    ..
                }
            ),
            "{err}"
        );
        assert!(grace(5, 30_000).is_err());
        // …and enough with 5 s ones; the default hour is enough with the default timeout.
        grace(1_800_000, 5_000).expect("valid");
        grace(3_600_000, 30_000).expect("valid");
    }

    #[test]
    fn the_maintenance_section_parses_with_defaults_for_the_rest() {
        let c = load_toml(
            "[maintenance]\nsmall_file_bytes = 1000\nmin_files = 3\norphan_grace_ms = 3600000\n",
        )
        .expect("valid");
        assert_eq!(c.maintenance.small_file_bytes, 1000);
        assert_eq!(c.maintenance.min_files, 3);
        assert_eq!(c.maintenance.orphan_grace_ms, 3_600_000);
        assert_eq!(c.maintenance.keep_snapshots, 10);
        let err = load_toml("[maintenance]\ngrace_ms = 1\n").expect_err("typo must fail");
        assert!(err.to_string().contains("grace_ms"), "{err}");
    }

    #[test]
    fn retention_is_a_default_with_per_stream_overrides_and_refuses_non_positive_days() {
        let c = load_toml(
            "[maintenance.retention]\ndefault_days = 30\n\
             [maintenance.retention.streams]\naudit = 365\ndebug = 1\n",
        )
        .expect("valid");
        let r = &c.maintenance.retention;
        assert_eq!(r.days_for("audit"), Some(365));
        assert_eq!(r.days_for("debug"), Some(1));
        assert_eq!(r.days_for("app"), Some(30));
        assert_eq!(
            Config::default().maintenance.retention.days_for("app"),
            None
        );

        for (toml, key, says) in [
            (
                "default_days = 0",
                "maintenance.retention.default_days",
                "0 days",
            ),
            (
                "default_days = -3",
                "maintenance.retention.default_days",
                "-3 days",
            ),
            (
                "default_days = 40000",
                "maintenance.retention.default_days",
                "40000 days",
            ),
            (
                "streams = { app = 0 }",
                "maintenance.retention.streams",
                "app: 0 days",
            ),
            (
                "streams = { app = -1 }",
                "maintenance.retention.streams",
                "app: -1 days",
            ),
            (
                "streams = { App = 7 }",
                "maintenance.retention.streams",
                "\"App\"",
            ),
        ] {
            match load_toml(&format!("[maintenance.retention]\n{toml}\n")) {
                Err(ConfigError::Invalid { key: k, reason }) => {
                    assert_eq!(k, key, "{toml}");
                    assert!(reason.contains(says), "{toml}: {reason}");
                }
                other => panic!("{toml}: expected Invalid({key}), got {other:?}"),
            }
        }
        let err = load_toml("[maintenance.retention]\ndays = 3\n").expect_err("typo must fail");
        assert!(err.to_string().contains("days"), "{err}");
    }

    #[test]
    fn promoted_attributes_are_typed_per_stream_and_bad_ones_name_the_problem() {
        let c = load_toml(
            "[promote.app]\n\"http.status_code\" = \"long\"\n\"user.id\" = \"string\"\n\
             [promote.audit]\nok = \"bool\"\nms = \"double\"\nat = \"timestamp\"\n",
        )
        .expect("valid");
        assert_eq!(c.promote["app"]["http.status_code"], AttributeType::Long);
        assert_eq!(c.promote["audit"]["at"], AttributeType::Timestamp);

        let c = load_toml("[partition_by]\napp = \"hour\"\naudit = \"day\"\n").expect("valid");
        assert_eq!(c.partition_by["app"], TimePartition::Hour);
        let c = load_toml("[sort_by]\napp = \"event_time\"\nweb = \"service,event_time\"\n")
            .expect("valid");
        assert_eq!(c.sort_by["app"], SortBy::Time);
        assert_eq!(c.sort_by["web"], SortBy::ServiceTime);
        let err = load_toml("[sort_by]\napp = \"severity\"\n").expect_err("unknown");
        assert!(err.to_string().contains("event_time"), "{err}");
        let err = load_toml("[partition_by]\napp = \"minute\"\n").expect_err("unknown");
        assert!(err.to_string().contains("hour"), "{err}");
        match load_toml("[partition_by]\ndead_letters = \"hour\"\n") {
            Err(ConfigError::Invalid { key, .. }) => assert_eq!(key, "partition_by"),
            other => panic!("expected Invalid(partition_by), got {other:?}"),
        }

        let err = load_toml("[promote.app]\n\"a\" = \"int\"\n").expect_err("unknown type");
        let text = err.to_string();
        assert!(text.contains("int") && text.contains("long"), "{text}");
        for (toml, says) in [
            (
                "[promote.App]\nk = \"long\"\n",
                "\"App\" is not a stream name",
            ),
            ("[promote.dead_letters]\nk = \"long\"\n", "not dead_letters"),
            ("[promote.app]\n\"\" = \"long\"\n", "1-255 characters"),
            (
                "[promote.app]\n\"a.b\" = \"long\"\n\"a-b\" = \"string\"\n",
                "would both be column attr_a_b",
            ),
        ] {
            match load_toml(toml) {
                Err(ConfigError::Invalid { key, reason }) => {
                    assert_eq!(key, "promote", "{toml}");
                    assert!(reason.contains(says), "{toml}: {reason}");
                }
                other => panic!("{toml}: expected Invalid(promote), got {other:?}"),
            }
        }
    }

    #[test]
    fn missing_file_is_an_error() {
        let err = Config::load(Some(Path::new("/nonexistent/c.toml")), Figment::new())
            .expect_err("must fail");
        assert!(err.to_string().contains("/nonexistent/c.toml"), "{err}");
    }
}
