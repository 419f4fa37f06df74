//! Prometheus metrics (served with `/healthz` by `tlake_service_kit::serve`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels per table.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabels {
    /// Table name.
    pub table: String,
}

/// Labels per commit outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `committed`, `fenced`, `unknown`, `error`, `lost` (a commit the
    /// table no longer holds, found by `verify_commits`).
    pub outcome: String,
}

/// Labels per partition.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: String,
}

/// All compactor metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Kafka records consumed.
    pub records: Counter,
    /// Records sent to the dead-letter table.
    pub dead_letters: Counter,
    /// Rows written by flushes (after dedup).
    pub flush_rows: Family<TableLabels, Counter>,
    /// Parquet bytes written by flushes.
    pub flush_bytes: Family<TableLabels, Counter>,
    /// Duplicate rows removed by flushes.
    pub flush_duplicates: Family<TableLabels, Counter>,
    /// Time from flush start to committed snapshot.
    pub flush_seconds: Histogram,
    /// Commit calls by outcome.
    pub commits: Family<OutcomeLabels, Counter>,
    /// Commit attempts repeated after an unknown outcome or an error.
    pub commit_retries: Counter,
    /// Flushes dropped because another writer moved a partition (fenced).
    pub commit_conflicts: Counter,
    /// now − newest committed event time, seconds.
    pub freshness_seconds: Family<TableLabels, Gauge<f64, AtomicU64>>,
    /// High watermark − consumed position per assigned partition.
    pub consumer_lag: Family<PartitionLabels, Gauge>,
    /// 1 while the consume loop runs.
    pub up: Gauge,
    ready: AtomicBool,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tlake_compactor");
        let records = Counter::default();
        registry.register("records", "Kafka records consumed", records.clone());
        let dead_letters = Counter::default();
        registry.register(
            "dead_letters",
            "Records written to the dead-letter table",
            dead_letters.clone(),
        );
        let flush_rows = Family::default();
        registry.register("flush_rows", "Rows written by flushes", flush_rows.clone());
        let flush_bytes = Family::default();
        registry.register(
            "flush_bytes",
            "Parquet bytes written by flushes",
            flush_bytes.clone(),
        );
        let flush_duplicates = Family::default();
        registry.register(
            "flush_duplicates",
            "Duplicate event ids removed",
            flush_duplicates.clone(),
        );
        let flush_seconds = Histogram::new(exponential_buckets(0.01, 2.0, 14));
        registry.register(
            "flush_seconds",
            "Flush start to committed snapshot",
            flush_seconds.clone(),
        );
        let commits = Family::default();
        registry.register("commits", "Commit calls by outcome", commits.clone());
        let commit_retries = Counter::default();
        registry.register(
            "commit_retries",
            "Commit attempts repeated after unknown outcomes or errors",
            commit_retries.clone(),
        );
        let commit_conflicts = Counter::default();
        registry.register(
            "commit_conflicts",
            "Flushes dropped because another writer moved a partition",
            commit_conflicts.clone(),
        );
        let freshness_seconds = Family::default();
        registry.register(
            "freshness_seconds",
            "Now minus newest committed event time",
            freshness_seconds.clone(),
        );
        let consumer_lag = Family::default();
        registry.register(
            "consumer_lag",
            "High watermark minus consumed position",
            consumer_lag.clone(),
        );
        let up = Gauge::default();
        registry.register("up", "1 while consuming", up.clone());
        Self {
            registry,
            records,
            dead_letters,
            flush_rows,
            flush_bytes,
            flush_duplicates,
            flush_seconds,
            commits,
            commit_retries,
            commit_conflicts,
            freshness_seconds,
            consumer_lag,
            up,
            ready: AtomicBool::new(false),
        }
    }

    /// Counts one commit outcome.
    pub fn outcome(&self, outcome: &str) {
        self.commits
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Marks the compactor as consuming (for `/healthz`).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
        self.up.set(i64::from(ready));
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// `/healthz` answers 503 until the consume loop runs.
impl tlake_service_kit::serve::Exposition for Metrics {
    fn encode(&self) -> String {
        Metrics::encode(self)
    }
    fn healthy(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}
