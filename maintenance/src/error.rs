//! The crate's one error type: why maintenance stopped.

/// Why maintenance stopped (a table's steps, or the whole pass).
#[derive(Debug, thiserror::Error)]
pub enum MaintainError {
    /// Bad configuration or missing credentials.
    #[error(transparent)]
    Config(#[from] tlake_service_kit::ConfigError),
    /// `--table` names no table of the namespace.
    #[error("table {namespace}.{table} does not exist")]
    NoSuchTable {
        /// Namespace.
        namespace: String,
        /// The name given.
        table: String,
    },
    /// The catalog or storage failed (or refused).
    #[error(transparent)]
    Catalog(#[from] tlake_catalog_client::Error),
    /// Reading a small file failed, or its rows do not add up.
    #[error("rewriting {table}: {reason}")]
    Rewrite {
        /// Table.
        table: String,
        /// What went wrong.
        reason: String,
    },
}
