//! tlake-maintenance: keeping the stream tables small, bounded and tidy
//! (docs/ARCHITECTURE.md §3), run by `tlake-compactor maintain` and the
//! chart's CronJob. [`maintain`] goes table by table ([`run`]):
//!
//! 0. retention ([`retention`]) — day partitions wholly past a stream's
//!    bound are dropped by one metadata-only `delete` commit;
//! 1. rewrite — small files of a partition ([`plan`]) are read, sorted by
//!    the table's sort order and written again ([`rewrite`]), then swapped
//!    in by one `replace` commit each ([`replace`]); `--relayout` does the
//!    same to every file of an older partition spec;
//! 2. merge ([`merge`]) — a snapshot listing too many data manifests gets
//!    one `replace` snapshot without data change that merges them;
//! 3. expire ([`expire`]) — snapshots older than the retention age leave
//!    the catalog where the catalog allows it;
//! 4. orphans ([`orphans`]) — objects no retained table version
//!    references, older than a grace period, are deleted.
//!
//! Every commit here carries the parent snapshot's `tlake.*` summary (Kafka
//! offsets, newest event time) forward unchanged: Nessie lists only the
//! current snapshot, so the compactor's progress must stay readable from
//! it. iceberg-rust 0.10 has no rewrite, delete or expiry action, so these
//! commits are built here ([`staging`]: manifests and manifest lists written
//! with iceberg-rust's writers, one cleanup of staged files on failure) and
//! posted with [`LakeCatalog::post_table_update`]. Nessie 0.99 refuses
//! `remove-snapshots` and lists only the current snapshot, so a table's
//! history is the metadata files its commits wrote: [`orphans`] keeps the
//! newest versions and those inside the retention age (with everything
//! they reference) and deletes the rest once older than the grace.
//!
//! [`storage`] lists and deletes objects (iceberg-rust's FileIO cannot
//! list), [`live`] reads a snapshot's live files; [`settings`] is the
//! `[maintenance]` section of the configuration, [`report`] what a pass
//! prints.
#![deny(missing_docs)]

mod error;
pub mod expire;
pub mod live;
pub mod merge;
pub mod orphans;
pub mod plan;
pub mod replace;
pub mod report;
pub mod retention;
pub mod rewrite;
pub mod run;
pub mod settings;
mod staging;
pub mod storage;

pub use error::MaintainError;
pub use expire::*;
pub use live::*;
pub use merge::*;
pub use orphans::*;
pub use plan::*;
pub use replace::*;
pub use report::*;
pub use retention::*;
pub use rewrite::*;
pub use run::*;
pub use settings::*;
pub(crate) use staging::*;
pub use storage::*;

use std::time::{SystemTime, UNIX_EPOCH};

use tlake_catalog_client::LakeCatalog;

/// Summary key marking snapshots written by maintenance.
pub const SUMMARY_MAINTENANCE: &str = "tlake.maintenance";

/// The catalog and the object store under it, as maintenance uses them: the
/// commits of [`replace`], [`retention`] and [`merge`], [`expire`] and
/// [`orphans`] are its methods.
#[derive(Debug, Clone)]
pub struct Maintainer {
    catalog: LakeCatalog,
    storage: Storage,
}

impl Maintainer {
    /// Maintenance through `catalog`, listing and deleting objects with the
    /// S3 settings it was connected with.
    pub fn new(catalog: LakeCatalog) -> Self {
        let storage = Storage(catalog.s3().clone());
        Self { catalog, storage }
    }

    /// The catalog.
    pub fn catalog(&self) -> &LakeCatalog {
        &self.catalog
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}
