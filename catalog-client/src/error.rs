//! The crate's one error type, and whether a caller should retry.

/// Everything that can go wrong talking to the catalog.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request to the REST catalog or to object storage failed.
    #[error("catalog request failed: {0}")]
    Iceberg(#[from] iceberg::Error),
    /// The table exists but cannot hold what the compactor writes.
    #[error("table {table} is incompatible with what the compactor writes: {reason}")]
    Incompatible {
        /// `namespace.table`.
        table: String,
        /// What differs and what would be accepted.
        reason: String,
    },
    /// The table's snapshots carry no usable `tlake.offsets`.
    #[error("cannot read the Kafka offsets of {table} (snapshot {snapshot_id}): {reason}")]
    CorruptOffsets {
        /// `namespace.table`.
        table: String,
        /// The snapshot.
        snapshot_id: i64,
        /// The parse error.
        reason: String,
    },
    /// Every commit attempt hit a concurrent commit (HTTP 409).
    #[error("commit to {table} still conflicts after {attempts} attempts")]
    TooManyConflicts {
        /// `namespace.table`.
        table: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The catalog refuses an update for good (e.g. Nessie and `remove-snapshots`).
    #[error("{table}: the catalog refuses {operation} (HTTP {status}): {reason}")]
    Refused {
        /// `namespace.table`.
        table: String,
        /// The update, e.g. `remove-snapshots`.
        operation: &'static str,
        /// HTTP status.
        status: u16,
        /// The catalog's message.
        reason: String,
    },
    /// Listing or deleting objects failed.
    #[error("object storage: {0}")]
    Storage(String),
    /// Maintenance found the table in a state it will not act on.
    #[error("{table}: {reason}")]
    Unsafe {
        /// `namespace.table`.
        table: String,
        /// Why nothing was done.
        reason: String,
    },
    /// Rows to write did not come out of the events they were built from
    /// (a bug: the events were validated).
    #[error("building rows: {0}")]
    Rows(String),
    /// A column of the rows to write cannot be converted to the table's type.
    #[error("column {column} cannot be converted to the table's type: {reason}")]
    Convert {
        /// Column name.
        column: String,
        /// Why.
        reason: String,
    },
    /// The connection settings are unusable.
    #[error("invalid catalog settings: {0}")]
    Config(String),
}

impl Error {
    /// An answer this client did not expect (retryable: iceberg-rust's
    /// `Unexpected` kind).
    pub fn unexpected(message: impl Into<String>) -> Self {
        iceberg::Error::new(iceberg::ErrorKind::Unexpected, message.into()).into()
    }

    /// Whether the same call may succeed later (the catalog or storage was
    /// unreachable or busy). Incompatible tables and bad settings are not.
    pub fn retryable(&self) -> bool {
        match self {
            Error::Iceberg(e) => {
                matches!(
                    e.kind(),
                    iceberg::ErrorKind::Unexpected | iceberg::ErrorKind::CatalogCommitConflicts
                ) || e.retryable()
            }
            Error::TooManyConflicts { .. } | Error::Storage(_) => true,
            Error::Incompatible { .. }
            | Error::CorruptOffsets { .. }
            | Error::Config(_)
            | Error::Rows(_)
            | Error::Convert { .. }
            | Error::Refused { .. }
            | Error::Unsafe { .. } => false,
        }
    }
}

/// Result with the crate's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
