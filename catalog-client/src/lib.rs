//! tlake-catalog-client: the compactor's (and users') view of the Iceberg tables
//! behind Nessie's REST catalog.
//!
//! - [`LakeCatalog::connect`] with S3 settings the client uses itself;
//! - [`LakeCatalog::ensure_table`]: create a stream's table with the layout of
//!   [`schema::TableKind`], or check an existing one and evolve it additively;
//! - [`LakeCatalog::commit`]: a fast append whose snapshot summary carries
//!   the merged Kafka offsets, a commit id and a writer epoch, with conflict
//!   retries, fencing and unknown-outcome reconciliation ([`CommitOutcome`]);
//! - [`LakeCatalog::progress`]: committed offsets and newest event time;
//! - [`read`] and [`write`]: the rows of chosen data files, and rows as new
//!   data files (Parquet through iceberg-rust's writers), uncommitted;
//! - [`LakeCatalog::post_table_update`]: a table commit posted as is, for
//!   what iceberg-rust has no action for (schema changes here; replace,
//!   delete and expiry in `tlake-maintenance`);
//! - [`retry`]: the one retry policy, and the orphan grace floor it implies.
#![deny(missing_docs)]

mod catalog;
mod error;
pub mod offsets;
mod pinned;
pub mod read;
pub mod recent;
pub mod retry;
pub mod schema;
pub mod write;

pub use catalog::{
    CatalogSettings, CommitOutcome, CommitRequest, LakeCatalog, Posted, Progress, S3Settings,
    SUMMARY_COMMIT_ID, SUMMARY_MAX_EVENT_TIME, SUMMARY_OFFSETS, SUMMARY_WRITER_EPOCH, find_commit,
    progress_of,
};
pub use error::{Error, Result};
pub use iceberg;
pub use offsets::{Fence, Offsets};
pub use schema::{AttributeType, Layout, PromotedAttribute, SortBy, TableKind, TimePartition};

/// Name of the dead-letter table in the namespace.
pub use tlake_proto::contract::DEAD_LETTER_TABLE;
