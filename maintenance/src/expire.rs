//! expire: snapshots past the retention leave the catalog (`remove-snapshots`; Nessie refuses
//! it and lists only the current snapshot, so there history is expired by removing orphans).

use std::time::Duration;

use iceberg::spec::{MAIN_BRANCH, TableMetadata};
use iceberg::table::Table;
use iceberg::{ErrorKind, TableRequirement, TableUpdate};

use tlake_catalog_client::Posted;
use tlake_catalog_client::{Error, Result};

use super::*;

impl Maintainer {
    /// Removes the snapshots `retention` lets go (see [`snapshots_to_expire`])
    /// with a REST `remove-snapshots` update. On Nessie, which lists only the
    /// current snapshot, there is never anything to remove this way; the
    /// history is expired by [`Maintainer::remove_orphans`].
    pub async fn expire_snapshots(
        &self,
        table: &str,
        retention: Retention,
        dry_run: bool,
    ) -> Result<ExpireReport> {
        let loaded = self.catalog.load_table(table).await?;
        let listed = loaded.metadata().snapshots().len();
        let expired = snapshots_to_expire(loaded.metadata(), retention, now_ms());
        if !expired.is_empty() && !dry_run {
            self.remove_snapshots(&loaded, &expired).await?;
        }
        Ok(ExpireReport { listed, expired })
    }

    /// Posts `remove-snapshots` for `ids`, requiring `main` to be unchanged.
    /// Nessie 0.99 answers HTTP 500 `UnsupportedOperationException: Nessie
    /// Catalog does not allow external snapshot management`, which becomes
    /// [`Error::Refused`].
    pub async fn remove_snapshots(&self, table: &Table, ids: &[i64]) -> Result<()> {
        let name = table.identifier().to_string();
        let body = commit_body(
            &self.catalog,
            table,
            vec![TableRequirement::RefSnapshotIdMatch {
                r#ref: MAIN_BRANCH.to_owned(),
                snapshot_id: table.metadata().current_snapshot_id(),
            }],
            vec![TableUpdate::RemoveSnapshots {
                snapshot_ids: ids.to_vec(),
            }],
        )?;
        match self
            .catalog
            .post_table_update(table.identifier().name(), &body)
            .await?
        {
            Posted::Applied => Ok(()),
            Posted::Conflict(text) => Err(iceberg::Error::new(
                ErrorKind::CatalogCommitConflicts,
                format!("remove-snapshots on {name} conflicts: {text}"),
            )
            .into()),
            Posted::Refused(status, reason) => Err(Error::Refused {
                table: name,
                operation: "remove-snapshots",
                status,
                reason,
            }),
            // Nessie signals "unsupported" with a 500; that is final, not unknown.
            Posted::Unknown(status, reason) if reason.contains("UnsupportedOperation") => {
                Err(Error::Refused {
                    table: name,
                    operation: "remove-snapshots",
                    status,
                    reason: catalog_message(&reason),
                })
            }
            Posted::Unknown(status, text) => Err(Error::unexpected(format!(
                "remove-snapshots on {name} answered {status}: {text}"
            ))),
        }
    }
}

/// How much history to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Keep everything newer than this.
    pub max_age: Duration,
    /// Always keep at least this many of the newest (≥ 1; the current one is
    /// always kept).
    pub keep_last: usize,
}

/// What [`Maintainer::expire_snapshots`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpireReport {
    /// Snapshots the catalog lists.
    pub listed: usize,
    /// Snapshots removed (or, in a dry run, that would be).
    pub expired: Vec<i64>,
}

/// The snapshots of `metadata` that `retention` lets go: all but the
/// current one, the newest `keep_last`, and those younger than `max_age`.
pub fn snapshots_to_expire(
    metadata: &TableMetadata,
    retention: Retention,
    now_ms: i64,
) -> Vec<i64> {
    let mut snapshots: Vec<(i64, i64)> = metadata
        .snapshots()
        .map(|s| (s.timestamp_ms(), s.snapshot_id()))
        .collect();
    snapshots.sort_unstable_by(|a, b| b.cmp(a));
    let cutoff = now_ms - i64::try_from(retention.max_age.as_millis()).unwrap_or(i64::MAX);
    let current = metadata.current_snapshot_id();
    snapshots
        .into_iter()
        .enumerate()
        .filter(|&(rank, (ts, id))| {
            rank >= retention.keep_last.max(1) && ts < cutoff && Some(id) != current
        })
        .map(|(_, (_, id))| id)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata_with_snapshots(snapshots: &[(i64, i64)], current: i64) -> TableMetadata {
        let snapshots: Vec<serde_json::Value> = snapshots
            .iter()
            .enumerate()
            .map(|(i, &(id, ts))| {
                serde_json::json!({
                    "snapshot-id": id, "sequence-number": i + 1, "timestamp-ms": ts,
                    "manifest-list": format!("s3://b/t/metadata/snap-{id}.avro"),
                    "summary": {"operation": "append"}, "schema-id": 0
                })
            })
            .collect();
        let json = serde_json::json!({
            "format-version": 2,
            "table-uuid": "bab982d3-cc06-48b3-8d89-db739fc53f3c",
            "location": "s3://b/t",
            "last-sequence-number": snapshots.len(),
            "last-updated-ms": 1000,
            "last-column-id": 1,
            "schemas": [{"type": "struct", "schema-id": 0, "fields": [
                {"id": 1, "name": "a", "required": false, "type": "long"}]}],
            "current-schema-id": 0,
            "partition-specs": [{"spec-id": 0, "fields": []}],
            "default-spec-id": 0,
            "last-partition-id": 999,
            "sort-orders": [{"order-id": 0, "fields": []}],
            "default-sort-order-id": 0,
            "current-snapshot-id": current,
            "refs": {"main": {"snapshot-id": current, "type": "branch"}},
            "snapshots": snapshots,
        });
        serde_json::from_value(json).expect("metadata")
    }

    #[test]
    fn expiry_keeps_the_newest_the_recent_and_the_current() {
        let metadata = metadata_with_snapshots(&[(1, 100), (2, 200), (3, 300), (4, 400)], 4);
        let retention = |keep_last, max_age_ms| Retention {
            keep_last,
            max_age: Duration::from_millis(max_age_ms),
        };
        let mut expired = snapshots_to_expire(&metadata, retention(2, 0), 1000);
        expired.sort();
        assert_eq!(expired, [1, 2]);
        // max age 750 ms at 1000: 3 and 4 are young enough to stay; 2 and 1 go.
        assert_eq!(
            snapshots_to_expire(&metadata, retention(1, 750), 1000),
            [2, 1]
        );
        // keep_last 0 behaves as 1; the current is never expired.
        let rolled_back = metadata_with_snapshots(&[(1, 100), (2, 200)], 1);
        assert_eq!(
            snapshots_to_expire(&rolled_back, retention(0, 0), 1000),
            Vec::<i64>::new()
        );
    }
}
