//! settings: the `[maintenance]` section of the compactor's configuration
//! (`tlake-compactor maintain` and the chart's CronJob read it there) — what
//! is small, what is old, how long each stream keeps its events — and its
//! checks.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tlake_service_kit::ConfigError;

/// Table maintenance: small-file rewrite, snapshot expiry, orphan removal.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Data files smaller than this are rewritten.
    pub small_file_bytes: u64,
    /// A partition is rewritten only when it has at least this many small files.
    pub min_files: usize,
    /// Size of the files the rewrite writes.
    pub target_file_bytes: u64,
    /// Upper bound of the small files read into memory for one replace commit.
    pub max_rewrite_bytes: u64,
    /// Table versions (snapshots) younger than this stay readable.
    pub snapshot_max_age_ms: u64,
    /// The newest versions (snapshots) always kept, whatever their age.
    pub keep_snapshots: usize,
    /// Unreferenced objects younger than this are never deleted.
    pub orphan_grace_ms: u64,
    /// Data manifests of the current snapshot are merged when there are more than this.
    pub max_manifests: usize,
    /// How long each stream keeps its events.
    pub retention: RetentionConfig,
}

/// Retention in whole days: `maintain` drops a stream's `day` partitions once
/// the whole day is older than its bound, so an event is kept at least that
/// many days and at most one more. Unset keeps every event.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Days every stream keeps, unless `streams` names it. Unset: forever.
    pub default_days: Option<i64>,
    /// Per-stream bounds in days (stream name → days), over the default.
    pub streams: std::collections::BTreeMap<String, i64>,
}

/// The longest retention accepted (a sanity bound: 100 years).
const MAX_RETENTION_DAYS: i64 = 36_500;

impl RetentionConfig {
    /// The bound for table `stream`, if it has one.
    pub fn days_for(&self, stream: &str) -> Option<i64> {
        self.streams.get(stream).copied().or(self.default_days)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let check = |key: &'static str, what: String, days: i64| {
            if (1..=MAX_RETENTION_DAYS).contains(&days) {
                Ok(())
            } else {
                Err(ConfigError::invalid(
                    key,
                    format!(
                        "{what}{days} days is not a retention: must be between 1 and \
                         {MAX_RETENTION_DAYS} (leave it unset to keep every event)"
                    ),
                ))
            }
        };
        if let Some(days) = self.default_days {
            check("maintenance.retention.default_days", String::new(), days)?;
        }
        for (stream, &days) in &self.streams {
            if !tlake_proto::contract::is_stream_name(stream) {
                return Err(ConfigError::invalid(
                    "maintenance.retention.streams",
                    format!(
                        "{stream:?} is not a stream name (lower-case letters, digits and '_', \
                         starting with a letter)"
                    ),
                ));
            }
            check("maintenance.retention.streams", format!("{stream}: "), days)?;
        }
        Ok(())
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            small_file_bytes: 32 << 20,
            min_files: 2,
            target_file_bytes: 128 << 20,
            max_rewrite_bytes: 256 << 20,
            snapshot_max_age_ms: 3_600_000,
            keep_snapshots: 10,
            orphan_grace_ms: 3_600_000,
            max_manifests: 100,
            retention: RetentionConfig::default(),
        }
    }
}

impl Settings {
    /// Checks `orphan_grace_ms` against the longest a flush's files stay
    /// unreferenced before their commit (`retry::orphan_grace_floor`, from the
    /// catalog's `request_timeout`). Only `maintain` removes orphans, so only
    /// it checks: a consume loop never stops over a grace it does not use.
    pub fn check_grace(&self, request_timeout: Duration) -> Result<(), ConfigError> {
        let floor = tlake_catalog_client::retry::orphan_grace_floor(request_timeout);
        if Duration::from_millis(self.orphan_grace_ms) < floor {
            return Err(ConfigError::invalid(
                "maintenance.orphan_grace_ms",
                format!(
                    "must be at least {} with catalog.request_timeout_ms = {} (twice the longest a \
                     flush's files stay unreferenced before their commit)",
                    floor.as_millis(),
                    request_timeout.as_millis()
                ),
            ));
        }
        Ok(())
    }

    /// Checks the `[maintenance]` section (the orphan grace: [`Self::check_grace`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.to_owned(),
            })
        };
        if self.target_file_bytes < 1 << 20 {
            return invalid(
                "maintenance.target_file_bytes",
                "must be at least 1048576 (1 MiB)",
            );
        }
        if self.small_file_bytes == 0 || self.small_file_bytes > self.target_file_bytes {
            return invalid(
                "maintenance.small_file_bytes",
                "must be between 1 and maintenance.target_file_bytes",
            );
        }
        if self.min_files < 2 {
            return invalid("maintenance.min_files", "must be at least 2");
        }
        if self.max_rewrite_bytes < self.small_file_bytes.saturating_mul(2) {
            return invalid(
                "maintenance.max_rewrite_bytes",
                "must hold at least two small files (2 × maintenance.small_file_bytes)",
            );
        }
        if self.keep_snapshots < 1 {
            return invalid("maintenance.keep_snapshots", "must be at least 1");
        }
        if self.max_manifests < 2 {
            return invalid("maintenance.max_manifests", "must be at least 2");
        }
        self.retention.validate()
    }
}
