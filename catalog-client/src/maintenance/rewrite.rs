//! rewrite: the `replace` commit that swaps a partition's small data files for their rewrite
//! (the same rows), carrying the parent's `tlake.*` summary forward.

use std::collections::HashSet;

use iceberg::spec::{
    DataFile, FormatVersion, ManifestContentType, ManifestFile, ManifestWriterBuilder,
};
use iceberg::table::Table;
use uuid::Uuid;

use crate::catalog::LakeCatalog;
use crate::error::{Error, Result};

use super::*;

/// What a replace commit did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplaceOutcome {
    /// The replace snapshot is in the table.
    Committed {
        /// Its id.
        snapshot_id: i64,
        /// 409s absorbed on the way (reload, re-check, re-stage).
        conflicts: u32,
    },
    /// Nothing was committed: a file to remove is no longer live (another
    /// maintenance run replaced it). The new files are unreferenced and
    /// left for orphan cleanup.
    Abandoned {
        /// Which file and why.
        reason: String,
    },
    /// The catalog could not be reached to learn what happened. Do not delete
    /// the new files: they may be committed. A later run reconciles.
    Unknown,
}

impl LakeCatalog {
    /// Commits one `replace` snapshot on `main` that removes `remove` and adds
    /// `add` (the same rows, rewritten), carrying the parent's `tlake.*`
    /// summary forward. `planned` is the table the rewrite was planned on.
    ///
    /// Requires `assert-ref-snapshot-id`, so a compactor append landing in
    /// between answers 409: the table is reloaded, every file to remove must
    /// still be live (appends only add), and the commit is re-staged on the
    /// new parent with its offsets. Rows are never lost or doubled: the files
    /// to remove either all go, together with the adds, or nothing changes.
    pub async fn replace_files(
        &self,
        planned: &Table,
        remove: &[DataFile],
        add: &[DataFile],
    ) -> Result<ReplaceOutcome> {
        let name = planned.identifier().to_string();
        if remove.is_empty() {
            return Ok(ReplaceOutcome::Abandoned {
                reason: "nothing to remove".into(),
            });
        }
        let remove_paths: HashSet<&str> = remove.iter().map(|f| f.file_path()).collect();
        let add_paths: HashSet<&str> = add.iter().map(|f| f.file_path()).collect();
        let commit_id = Uuid::now_v7();
        let mut table = planned.clone();
        let mut tries = Attempts::default();
        for attempt in 0u32.. {
            let live: HashSet<String> = match live_data_files(&table).await {
                Ok(files) => files
                    .into_iter()
                    .map(|f| f.data_file.file_path().to_owned())
                    .collect(),
                // After an unknown outcome we cannot tell without reading.
                Err(e) if tries.unknown > 0 && e.retryable() => return Ok(ReplaceOutcome::Unknown),
                Err(e) => return Err(e),
            };
            // Reconcile an unknown outcome: our new file names are unique.
            if add_paths.iter().any(|p| live.contains(*p)) {
                let snapshot_id = table.metadata().current_snapshot_id().unwrap_or_default();
                return Ok(ReplaceOutcome::Committed {
                    snapshot_id,
                    conflicts: tries.conflicts,
                });
            }
            if let Some(gone) = remove_paths.iter().find(|p| !live.contains(**p)) {
                return Ok(ReplaceOutcome::Abandoned {
                    reason: format!("{gone} is no longer live in {name}"),
                });
            }
            let staged = self
                .stage_replace(&table, &remove_paths, add, commit_id, attempt)
                .await?;
            let snapshot_id = staged.snapshot.snapshot_id();
            let post = self.post_staged(&table, staged, "replace").await?;
            if let Post::Applied = post {
                return Ok(ReplaceOutcome::Committed {
                    snapshot_id,
                    conflicts: tries.conflicts,
                });
            }
            if !tries.wait_to_retry(post, &name).await? {
                return Ok(ReplaceOutcome::Unknown);
            }
            table = match self.load_table(planned.identifier().name()).await {
                Ok(t) => t,
                Err(e) if tries.unknown > 0 && e.retryable() => return Ok(ReplaceOutcome::Unknown),
                Err(e) => return Err(e),
            };
        }
        Ok(ReplaceOutcome::Unknown)
    }

    /// Writes the manifests and manifest list of a replace on top of
    /// `table`'s current snapshot. Nothing is committed.
    pub(crate) async fn stage_replace(
        &self,
        table: &Table,
        remove: &HashSet<&str>,
        add: &[DataFile],
        commit_id: Uuid,
        attempt: u32,
    ) -> Result<Staged> {
        let metadata = table.metadata();
        let name = table.identifier().to_string();
        if metadata.format_version() != FormatVersion::V2 {
            return Err(Error::Unsafe {
                table: name,
                reason: format!(
                    "replace commits are written for format v2; the table is {:?}",
                    metadata.format_version()
                ),
            });
        }
        let Some(parent) = metadata.current_snapshot() else {
            return Err(Error::Unsafe {
                table: name,
                reason: "the table has no snapshot to replace files in".into(),
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
                    return Err(Error::Unsafe {
                        table: name,
                        reason:
                            "the table has delete files; rewriting would bring deleted rows back"
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
            if counts.added_records != counts.deleted_records {
                return Err(Error::Unsafe {
                    table: name,
                    reason: format!(
                        "the rewrite has {} rows but the files it replaces hold {}",
                        counts.added_records, counts.deleted_records
                    ),
                });
            }

            let list_path = manifest_list_path(location, snapshot_id, attempt, commit_id);
            written.push(list_path.clone());
            write_manifest_list(
                file_io,
                &list_path,
                (snapshot_id, sequence_number),
                parent,
                manifests,
            )
            .await?;

            let snapshot = replace_snapshot(
                metadata,
                parent,
                (snapshot_id, sequence_number),
                list_path,
                replace_summary(
                    &parent.summary().additional_properties,
                    &counts,
                    commit_id,
                    "rewrite-small-files",
                ),
            );
            Ok::<_, Error>(snapshot)
        }
        .await;
        let snapshot = discard_staged(file_io, &written, staged).await?;
        Ok(Staged { snapshot, written })
    }
}
