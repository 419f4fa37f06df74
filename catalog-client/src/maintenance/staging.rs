//! staging: what every maintenance commit shares — the `replace` snapshot and its manifest list
//! written to storage, the REST commit posted by hand (iceberg-rust 0.10 has no rewrite action),
//! conflicts and unknown outcomes paced by the retry policy, and the one cleanup of staged files
//! when a commit certainly did not land.

use std::collections::HashMap;

use iceberg::io::FileIO;
use iceberg::spec::{
    MAIN_BRANCH, ManifestFile, ManifestListWriter, Operation, Snapshot, SnapshotReference,
    SnapshotRetention, Summary, TableMetadata,
};
use iceberg::table::Table;
use iceberg::{TableRequirement, TableUpdate};
use uuid::Uuid;

use crate::catalog::{LakeCatalog, Posted, SUMMARY_COMMIT_ID, unexpected};
use crate::error::{Error, Result};

use super::*;

/// How many unknown outcomes (5xx, timeouts) before answering `Unknown`.
/// Maintenance has no caller loop that retries it (the next run does), so
/// it reconciles a few itself, paced by [`crate::retry::transient`].
pub(crate) const MAX_UNKNOWN: u32 = 5;

/// What posting a staged commit answered (a refusal is an error).
pub(crate) enum Post {
    Applied,
    Conflict,
    Unknown,
}

/// A `replace` snapshot on top of `parent` with manifest list `list_path`.
pub(crate) fn replace_snapshot(
    metadata: &TableMetadata,
    parent: &Snapshot,
    (snapshot_id, sequence_number): (i64, i64),
    list_path: String,
    summary: HashMap<String, String>,
) -> Snapshot {
    Snapshot::builder()
        .with_snapshot_id(snapshot_id)
        .with_parent_snapshot_id(Some(parent.snapshot_id()))
        .with_sequence_number(sequence_number)
        .with_timestamp_ms(now_ms().max(parent.timestamp_ms() + 1))
        .with_manifest_list(list_path)
        .with_summary(Summary {
            operation: Operation::Replace,
            additional_properties: summary,
        })
        .with_schema_id(metadata.current_schema_id())
        .build()
}

/// Conflicts and unknown outcomes so far of one maintenance commit, and the
/// waits the retry policy gives each.
#[derive(Debug)]
pub(crate) struct Attempts {
    pub(crate) conflicts: u32,
    pub(crate) conflict_waits: backon::ExponentialBackoff,
    pub(crate) unknown: u32,
    pub(crate) unknown_waits: backon::ExponentialBackoff,
}

impl Default for Attempts {
    fn default() -> Self {
        Self {
            conflicts: 0,
            conflict_waits: crate::retry::conflicts(),
            unknown: 0,
            unknown_waits: crate::retry::transient(),
        }
    }
}

impl Attempts {
    /// Counts a post that did not apply and waits before the next try.
    /// `Ok(false)`: too many unknown outcomes, give up as unknown.
    pub(crate) async fn wait_to_retry(&mut self, post: Post, table: &str) -> Result<bool> {
        match post {
            Post::Applied => Ok(false),
            Post::Conflict => {
                self.conflicts += 1;
                let Some(wait) = self.conflict_waits.next() else {
                    return Err(Error::TooManyConflicts {
                        table: table.to_owned(),
                        attempts: self.conflicts,
                    });
                };
                tokio::time::sleep(wait).await;
                Ok(true)
            }
            Post::Unknown => {
                self.unknown += 1;
                match self.unknown_waits.next() {
                    Some(wait) if self.unknown < MAX_UNKNOWN => {
                        tokio::time::sleep(wait).await;
                        Ok(true)
                    }
                    _ => Ok(false),
                }
            }
        }
    }
}

/// The one cleanup of a failed staging, for the rewrite and the merge alike:
/// every file it wrote is deleted — nothing references them. `written` lists
/// them as they are written, so a failure half-way cleans up what exists. (A
/// staged commit whose post certainly did not land is cleaned up the same
/// way, by [`LakeCatalog::post_staged`].)
pub(crate) async fn discard_staged<T>(
    file_io: &FileIO,
    written: &[String],
    staged: Result<T>,
) -> Result<T> {
    if staged.is_err() {
        delete_quietly(file_io, written).await;
    }
    staged
}

/// A replace staged on storage: its snapshot and the files written for it.
pub(crate) struct Staged {
    pub(crate) snapshot: Snapshot,
    pub(crate) written: Vec<String>,
}

impl LakeCatalog {
    /// Posts a staged `replace` snapshot as the new head of `main`, requiring
    /// `main` to still be its parent. Certainly-not-committed attempts (409,
    /// refusal) have their staged files deleted; a refusal is an error.
    pub(crate) async fn post_staged(
        &self,
        table: &Table,
        staged: Staged,
        operation: &'static str,
    ) -> Result<Post> {
        let name = table.identifier().to_string();
        let snapshot_id = staged.snapshot.snapshot_id();
        let parent = staged.snapshot.parent_snapshot_id();
        let body = commit_body(
            self,
            table,
            vec![
                TableRequirement::UuidMatch {
                    uuid: table.metadata().uuid(),
                },
                TableRequirement::RefSnapshotIdMatch {
                    r#ref: MAIN_BRANCH.to_owned(),
                    snapshot_id: parent,
                },
            ],
            vec![
                TableUpdate::AddSnapshot {
                    snapshot: staged.snapshot,
                },
                TableUpdate::SetSnapshotRef {
                    ref_name: MAIN_BRANCH.to_owned(),
                    reference: SnapshotReference::new(
                        snapshot_id,
                        SnapshotRetention::branch(None, None, None),
                    ),
                },
            ],
        )?;
        match self
            .post_table_update(table.identifier().name(), &body)
            .await?
        {
            Posted::Applied => Ok(Post::Applied),
            Posted::Conflict(text) => {
                tracing::info!(table = %name, operation, %text, "conflicts with a concurrent commit; reloading");
                // Certainly not committed: its files can go now.
                delete_quietly(table.file_io(), &staged.written).await;
                Ok(Post::Conflict)
            }
            Posted::Refused(status, reason) => {
                delete_quietly(table.file_io(), &staged.written).await;
                Err(Error::Refused {
                    table: name,
                    operation,
                    status,
                    reason,
                })
            }
            Posted::Unknown(status, text) => {
                tracing::warn!(table = %name, operation, status, %text, "commit outcome unknown; reconciling");
                Ok(Post::Unknown)
            }
        }
    }
}

/// Where the manifest list of snapshot `snapshot_id` goes (unique per
/// attempt and commit, so a retry never overwrites a list another
/// attempt may have committed).
pub(crate) fn manifest_list_path(
    location: &str,
    snapshot_id: i64,
    attempt: u32,
    commit_id: Uuid,
) -> String {
    format!("{location}/metadata/snap-{snapshot_id}-{attempt}-{commit_id}.avro")
}

/// Writes the v2 manifest list of snapshot `(id, sequence number)` on top
/// of `parent`, listing `manifests`.
pub(crate) async fn write_manifest_list(
    file_io: &iceberg::io::FileIO,
    path: &str,
    (snapshot_id, sequence_number): (i64, i64),
    parent: &Snapshot,
    manifests: Vec<ManifestFile>,
) -> iceberg::Result<()> {
    let mut writer = ManifestListWriter::v2(
        file_io.new_output(path)?.writer().await?,
        snapshot_id,
        Some(parent.snapshot_id()),
        sequence_number,
    );
    writer.add_manifests(manifests.into_iter())?;
    writer.close().await
}

#[derive(Debug, Default)]
pub(crate) struct Counts {
    pub(crate) added_files: u64,
    pub(crate) added_records: u64,
    pub(crate) added_bytes: u64,
    pub(crate) deleted_files: u64,
    pub(crate) deleted_records: u64,
    pub(crate) deleted_bytes: u64,
}

/// The summary of a replace: the parent's `tlake.*` keys (offsets, newest
/// event time, writer epoch) unchanged, our commit id, the change counts,
/// and the totals moved on from the parent's.
pub(crate) fn replace_summary(
    parent: &HashMap<String, String>,
    counts: &Counts,
    commit_id: Uuid,
    kind: &str,
) -> HashMap<String, String> {
    let mut summary: HashMap<String, String> = parent
        .iter()
        .filter(|(k, _)| k.starts_with("tlake."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    summary.insert(SUMMARY_COMMIT_ID.to_owned(), commit_id.to_string());
    summary.insert(SUMMARY_MAINTENANCE.to_owned(), kind.to_owned());
    for (key, value) in [
        ("added-data-files", counts.added_files),
        ("deleted-data-files", counts.deleted_files),
        ("added-records", counts.added_records),
        ("deleted-records", counts.deleted_records),
        ("added-files-size", counts.added_bytes),
        ("removed-files-size", counts.deleted_bytes),
    ] {
        summary.insert(key.to_owned(), value.to_string());
    }
    for (key, added, deleted) in [
        ("total-data-files", counts.added_files, counts.deleted_files),
        (
            "total-records",
            counts.added_records,
            counts.deleted_records,
        ),
        ("total-files-size", counts.added_bytes, counts.deleted_bytes),
    ] {
        if let Some(total) = parent.get(key).and_then(|v| v.parse::<u64>().ok()) {
            let total = total.saturating_add(added).saturating_sub(deleted);
            summary.insert(key.to_owned(), total.to_string());
        }
    }
    for key in [
        "total-delete-files",
        "total-position-deletes",
        "total-equality-deletes",
    ] {
        if let Some(v) = parent.get(key) {
            summary.insert(key.to_owned(), v.clone());
        }
    }
    summary
}

pub(crate) fn commit_body(
    catalog: &LakeCatalog,
    table: &Table,
    requirements: Vec<TableRequirement>,
    updates: Vec<TableUpdate>,
) -> Result<serde_json::Value> {
    let encode = |e: serde_json::Error| unexpected(format!("encoding a table commit: {e}"));
    Ok(serde_json::json!({
        "identifier": {"namespace": catalog.namespace().as_ref(), "name": table.identifier().name()},
        "requirements": serde_json::to_value(requirements).map_err(encode)?,
        "updates": serde_json::to_value(updates).map_err(encode)?,
    }))
}

/// The `message` of a REST error body, or the body.
pub(crate) fn catalog_message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| body.trim().to_owned())
}

/// A positive snapshot id the table does not use yet.
pub(crate) fn new_snapshot_id(metadata: &TableMetadata) -> i64 {
    loop {
        let (high, low) = Uuid::new_v4().as_u64_pair();
        let id = i64::try_from((high ^ low) & (i64::MAX as u64)).unwrap_or(1);
        if id > 0 && metadata.snapshot_by_id(id).is_none() {
            return id;
        }
    }
}

pub(crate) async fn delete_quietly(file_io: &FileIO, paths: &[String]) {
    for path in paths {
        if let Err(e) = file_io.delete(path).await {
            tracing::debug!(%path, error = %e, "could not delete an uncommitted file; orphan cleanup will");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_summary_carries_progress_and_moves_totals() {
        let parent = HashMap::from([
            ("tlake.offsets".to_owned(), r#"{"t":{"0":42}}"#.to_owned()),
            ("tlake.max-event-time-us".to_owned(), "7".to_owned()),
            ("tlake.commit-id".to_owned(), "old".to_owned()),
            ("added-records".to_owned(), "5".to_owned()),
            ("total-records".to_owned(), "100".to_owned()),
            ("total-data-files".to_owned(), "10".to_owned()),
            ("total-files-size".to_owned(), "1000".to_owned()),
        ]);
        let counts = Counts {
            added_files: 1,
            added_records: 60,
            added_bytes: 300,
            deleted_files: 6,
            deleted_records: 60,
            deleted_bytes: 600,
        };
        let id = Uuid::now_v7();
        let s = replace_summary(&parent, &counts, id, "rewrite-small-files");
        assert_eq!(s["tlake.offsets"], parent["tlake.offsets"]);
        assert_eq!(s["tlake.max-event-time-us"], "7");
        assert_eq!(s[SUMMARY_COMMIT_ID], id.to_string());
        assert_eq!(s["total-records"], "100");
        assert_eq!(s["total-data-files"], "5");
        assert_eq!(s["total-files-size"], "700");
        assert_eq!(s["added-records"], "60");
        assert_eq!(s["deleted-data-files"], "6");
    }

    #[test]
    fn catalog_messages_are_unwrapped() {
        let body = r#"{"error":{"message":"Nessie Catalog does not allow external snapshot management","type":"UnsupportedOperationException","code":500}}"#;
        assert_eq!(
            catalog_message(body),
            "Nessie Catalog does not allow external snapshot management"
        );
        assert_eq!(catalog_message(" plain "), "plain");
    }
}
