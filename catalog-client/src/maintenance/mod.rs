//! Table maintenance (ARCHITECTURE §3): retention, the `replace` commit that swaps
//! small data files for their rewrite, snapshot expiry, and removal of
//! objects that no retained table version references.
//!
//! iceberg-rust 0.10 has no rewrite action, so [`LakeCatalog::replace_files`]
//! writes the manifests and manifest list with iceberg-rust's writers and
//! posts the REST commit itself. A replace snapshot carries the parent's
//! `tlake.*` summary (offsets, newest event time) forward unchanged: Nessie
//! lists only the current snapshot, so progress must be readable from it.
//!
//! Nessie 0.99 refuses `remove-snapshots` ("Nessie Catalog does not allow
//! external snapshot management") and lists only the current snapshot, so a
//! table's history is the metadata files its commits wrote. Expiry therefore
//! works on those files: [`LakeCatalog::remove_orphans`] keeps the newest
//! versions and those inside the retention age (with everything they
//! reference) and deletes the rest once older than a grace period.
//!
//! Retention drops whole day partitions older than a stream's bound with a
//! metadata-only `delete` snapshot that carries the same summary forward.
//!
//! One operation per file: [`retention`] (delete commits), [`rewrite`]
//! (replace commits), [`merge`] (manifest merge), [`expire`] (snapshot
//! expiry), [`orphans`] (orphan removal); [`staging`] is what their commits
//! share, [`storage`] and [`live`] what they read.

mod expire;
mod live;
mod merge;
mod orphans;
mod retention;
mod rewrite;
mod staging;
mod storage;

pub use expire::*;
pub use live::*;
pub use merge::*;
pub use orphans::*;
pub use retention::*;
pub use rewrite::*;
pub(crate) use staging::*;
pub use storage::*;

use std::time::{SystemTime, UNIX_EPOCH};

/// Summary key marking snapshots written by maintenance.
pub const SUMMARY_MAINTENANCE: &str = "tlake.maintenance";

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}
