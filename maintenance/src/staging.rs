//! staging: what every maintenance commit shares — the `replace` or `delete` snapshot, its
//! manifests and manifest list written to storage, the REST commit posted by hand (iceberg-rust
//! 0.10 has no rewrite action), conflicts and unknown outcomes paced by the retry policy, and the
//! one cleanup of staged files when a commit certainly did not land.

use std::collections::{HashMap, HashSet};

use iceberg::io::FileIO;
use iceberg::spec::{
    DataFile, FormatVersion, MAIN_BRANCH, ManifestContentType, ManifestFile, ManifestListWriter,
    ManifestWriterBuilder, Operation, Snapshot, SnapshotReference, SnapshotRetention, Summary,
    TableMetadata,
};
use iceberg::table::Table;
use iceberg::{TableRequirement, TableUpdate};
use uuid::Uuid;

use tlake_catalog_client::{Error, Result};
use tlake_catalog_client::{Posted, SUMMARY_COMMIT_ID};

use super::*;

/// How many unknown outcomes (5xx, timeouts) before answering `Unknown`.
/// Maintenance has no caller loop that retries it (the next run does), so
/// it reconciles a few itself, paced by [`tlake_catalog_client::retry::transient`].
pub(crate) const MAX_UNKNOWN: u32 = 5;

/// What posting a staged commit answered (a refusal is an error).
pub(crate) enum Post {
    Applied,
    Conflict,
    Unknown,
}

/// What a staged change does with the live files it removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Removal {
    /// A `replace`: the added files hold the same rows (small-file rewrite).
    Rewrite,
    /// A `delete`: the rows go and nothing is added (retention).
    Drop,
}

impl Removal {
    fn operation(self) -> Operation {
        match self {
            Removal::Rewrite => Operation::Replace,
            Removal::Drop => Operation::Delete,
        }
    }

    /// The `tlake.maintenance` summary value.
    fn kind(self) -> &'static str {
        match self {
            Removal::Rewrite => "rewrite-small-files",
            Removal::Drop => "retention",
        }
    }
}

/// A maintenance snapshot (`operation`: `replace`, or `delete` for retention)
/// on top of `parent` with manifest list `list_path`.
pub(crate) fn replace_snapshot(
    metadata: &TableMetadata,
    parent: &Snapshot,
    (snapshot_id, sequence_number): (i64, i64),
    list_path: String,
    operation: Operation,
    summary: HashMap<String, String>,
) -> Snapshot {
    Snapshot::builder()
        .with_snapshot_id(snapshot_id)
        .with_parent_snapshot_id(Some(parent.snapshot_id()))
        .with_sequence_number(sequence_number)
        .with_timestamp_ms(now_ms().max(parent.timestamp_ms() + 1))
        .with_manifest_list(list_path)
        .with_summary(Summary {
            operation,
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
            conflict_waits: tlake_catalog_client::retry::conflicts(),
            unknown: 0,
            unknown_waits: tlake_catalog_client::retry::transient(),
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
/// way, by [`Maintainer::post_staged`].)
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

impl Maintainer {
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
            &self.catalog,
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
            .catalog
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

impl Maintainer {
    /// Writes the manifests and manifest list of a snapshot on top of
    /// `table`'s current one that removes the live files `remove` and adds
    /// `add` (`removal` says whether the rows move or go). Nothing is
    /// committed.
    pub(crate) async fn stage_removal(
        &self,
        table: &Table,
        remove: &HashSet<&str>,
        add: &[DataFile],
        removal: Removal,
        (commit_id, attempt): (Uuid, u32),
    ) -> Result<Staged> {
        let metadata = table.metadata();
        let name = table.identifier().to_string();
        if metadata.format_version() != FormatVersion::V2 {
            return Err(Error::Unsafe {
                table: name,
                reason: format!(
                    "maintenance commits are written for format v2; the table is {:?}",
                    metadata.format_version()
                ),
            });
        }
        let Some(parent) = metadata.current_snapshot() else {
            return Err(Error::Unsafe {
                table: name,
                reason: "the table has no snapshot to remove files from".into(),
            });
        };
        let file_io = table.file_io();
        let location = metadata.location().trim_end_matches('/');
        let schema = metadata.current_schema().clone();
        let snapshot_id = new_snapshot_id(metadata);
        let sequence_number = metadata.next_sequence_number();
        let tag = format!("{commit_id}-{attempt}");
        // Everything written here is deleted again if staging fails.
        let mut written = Vec::new();
        let staged = async {
            let mut manifests: Vec<ManifestFile> = Vec::new();

            let path = format!("{location}/metadata/{tag}-m0.avro");
            // Listed before it is written: a write that fails half-way is cleaned up too.
            written.push(path.clone());
            let mut writer = ManifestWriterBuilder::new(
                file_io.new_output(&path)?,
                Some(snapshot_id),
                schema.clone(),
                metadata.default_partition_spec().as_ref().clone(),
            )
            .build_v2_data();
            for file in add {
                writer.add_file(file.clone(), sequence_number)?;
            }
            manifests.push(writer.write_manifest_file().await?);

            let mut counts = Counts::default();
            for file in add {
                counts.added_files += 1;
                counts.added_records += file.record_count();
                counts.added_bytes += file.file_size_in_bytes();
            }
            let list = load_manifest_list(file_io, metadata.format_version(), parent).await?;
            for (n, manifest) in list.entries().iter().enumerate() {
                if manifest.content != ManifestContentType::Data {
                    // The rewrite reads data files without applying deletes, and
                    // its files would outrank them: deleted rows would return.
                    // (Nothing here writes delete files: refused for every change.)
                    return Err(Error::Unsafe {
                        table: name,
                        reason: "the table has delete files; rewriting or dropping files could \
                                 bring deleted rows back"
                            .into(),
                    });
                }
                let loaded = manifest.load_manifest(file_io).await?;
                let touched = loaded
                    .entries()
                    .iter()
                    .any(|e| e.is_alive() && remove.contains(e.file_path()));
                if !touched {
                    manifests.push(manifest.clone());
                    continue;
                }
                let spec = metadata
                    .partition_spec_by_id(manifest.partition_spec_id)
                    .ok_or_else(|| Error::Unsafe {
                        table: name.clone(),
                        reason: format!(
                            "manifest {} uses unknown partition spec {}",
                            manifest.manifest_path, manifest.partition_spec_id
                        ),
                    })?;
                let path = format!("{location}/metadata/{tag}-m{}.avro", n + 1);
                written.push(path.clone());
                let mut writer = ManifestWriterBuilder::new(
                    file_io.new_output(&path)?,
                    Some(snapshot_id),
                    schema.clone(),
                    spec.as_ref().clone(),
                )
                .build_v2_data();
                // Entries deleted by earlier snapshots are dropped, as Iceberg does
                // when it rewrites a manifest; live ones are kept (existing) or
                // marked deleted, with their sequence numbers.
                for entry in loaded.entries().iter().filter(|e| e.is_alive()) {
                    let Some(seq) = entry.sequence_number() else {
                        return Err(Error::Unsafe {
                            table: name.clone(),
                            reason: format!("{} has no sequence number", entry.file_path()),
                        });
                    };
                    let file_seq = entry.file_sequence_number.or(Some(seq));
                    if remove.contains(entry.file_path()) {
                        counts.deleted_files += 1;
                        counts.deleted_records += entry.record_count();
                        counts.deleted_bytes += entry.file_size_in_bytes();
                        writer.add_delete_file(entry.data_file().clone(), seq, file_seq)?;
                    } else {
                        let added_by = entry.snapshot_id().unwrap_or(parent.snapshot_id());
                        writer.add_existing_file(
                            entry.data_file().clone(),
                            added_by,
                            seq,
                            file_seq,
                        )?;
                    }
                }
                manifests.push(writer.write_manifest_file().await?);
            }
            if removal == Removal::Rewrite && counts.added_records != counts.deleted_records {
                return Err(Error::Unsafe {
                    table: name,
                    reason: format!(
                        "the rewrite has {} rows but the files it replaces hold {}",
                        counts.added_records, counts.deleted_records
                    ),
                });
            }

            let head = ReplaceHead {
                metadata,
                parent,
                ids: (snapshot_id, sequence_number),
                attempt,
                commit_id,
            };
            let what = (removal.operation(), &counts, removal.kind());
            head.stage(file_io, manifests, &mut written, what).await
        }
        .await;
        let snapshot = discard_staged(file_io, &written, staged).await?;
        Ok(Staged { snapshot, written })
    }
}

/// The new snapshot a replace stages on top of `parent`: its ids, and the
/// attempt and commit that make its manifest list's path unique.
pub(crate) struct ReplaceHead<'a> {
    pub(crate) metadata: &'a TableMetadata,
    pub(crate) parent: &'a Snapshot,
    /// (snapshot id, sequence number).
    pub(crate) ids: (i64, i64),
    pub(crate) attempt: u32,
    pub(crate) commit_id: Uuid,
}

impl ReplaceHead<'_> {
    /// What every replace ends with: writes the manifest list of
    /// `manifests` (noted in `written`, which the caller deletes if staging
    /// fails) and builds the replace snapshot over it, its summary carrying
    /// the parent's progress and `counts` under the maintenance `kind`.
    pub(crate) async fn stage(
        &self,
        file_io: &FileIO,
        manifests: Vec<ManifestFile>,
        written: &mut Vec<String>,
        (operation, counts, kind): (Operation, &Counts, &str),
    ) -> Result<Snapshot> {
        let location = self.metadata.location().trim_end_matches('/');
        let list_path = manifest_list_path(location, self.ids.0, self.attempt, self.commit_id);
        written.push(list_path.clone());
        write_manifest_list(file_io, &list_path, self.ids, self.parent, manifests).await?;
        Ok(replace_snapshot(
            self.metadata,
            self.parent,
            self.ids,
            list_path,
            operation,
            replace_summary(
                &self.parent.summary().additional_properties,
                counts,
                self.commit_id,
                kind,
            ),
        ))
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
    let encode = |e: serde_json::Error| Error::unexpected(format!("encoding a table commit: {e}"));
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
