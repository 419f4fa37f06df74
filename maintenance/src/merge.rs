//! merge: one `replace` snapshot without data change that writes the live entries of many data
//! manifests into one, so flush-per-commit manifests do not pile up.

use futures::{StreamExt, TryStreamExt};
use iceberg::spec::{FormatVersion, ManifestContentType, ManifestFile, ManifestWriterBuilder};
use iceberg::table::Table;
use uuid::Uuid;

use tlake_catalog_client::SUMMARY_COMMIT_ID;
use tlake_catalog_client::{Error, Result};

use super::*;

/// What [`Maintainer::merge_manifests`] did. Counts are manifests in the
/// current snapshot's manifest list (data and delete).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergeOutcome {
    /// Nothing committed: at most `max_manifests` data manifests, or merging
    /// would not make the list shorter.
    NotNeeded {
        /// Manifests listed.
        manifests: usize,
    },
    /// The merge snapshot is in the table.
    Committed {
        /// Its id (after an unknown outcome: the current snapshot's).
        snapshot_id: i64,
        /// Manifests of the parent.
        before: usize,
        /// Manifests of the merge snapshot.
        after: usize,
        /// 409s absorbed on the way (reload, re-stage).
        conflicts: u32,
    },
    /// The catalog could not be reached to learn what happened. The table's
    /// rows are the same either way; a later run merges again if needed.
    Unknown {
        /// Manifests of the parent.
        before: usize,
    },
}

/// What to do with one manifest of the list when merging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestFate {
    /// Listed unchanged (delete manifests, live data manifests of other specs).
    Keep,
    /// Its live entries go into the merged manifest.
    Merge,
    /// Left out: it lists no live file.
    Drop,
}

/// One manifest as the merge planner sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManifestInfo {
    /// Data or deletes.
    pub content: ManifestContentType,
    /// Its partition spec.
    pub spec_id: i32,
    /// Entries that are added or existing (ignored for delete manifests).
    pub live_files: usize,
}

/// Whether `list` has more than `max_manifests` data manifests.
pub fn needs_manifest_merge(list: &[ManifestFile], max_manifests: usize) -> bool {
    list.iter()
        .filter(|m| m.content == ManifestContentType::Data)
        .count()
        > max_manifests
}

/// The fate of each of `manifests` (same order): data manifests of `spec_id`
/// with a live file are merged into one, data manifests without a live file
/// dropped, the rest kept. `None` when that would not shorten the list.
pub fn plan_manifest_merge(manifests: &[ManifestInfo], spec_id: i32) -> Option<Vec<ManifestFate>> {
    let fates: Vec<ManifestFate> = manifests
        .iter()
        .map(|m| match m.content {
            ManifestContentType::Deletes => ManifestFate::Keep,
            ManifestContentType::Data if m.live_files == 0 => ManifestFate::Drop,
            ManifestContentType::Data if m.spec_id == spec_id => ManifestFate::Merge,
            ManifestContentType::Data => ManifestFate::Keep,
        })
        .collect();
    let merged = fates.iter().filter(|f| **f == ManifestFate::Merge).count();
    let dropped = fates.iter().filter(|f| **f == ManifestFate::Drop).count();
    (merged >= 2 || dropped > 0).then_some(fates)
}

/// A live data file as the live-set check compares it: path and rows.
pub type LiveKey = (String, u64);

/// `None` if `before` and `after` list the same live files (path and record
/// count, each as often), else the first difference.
pub fn live_set_difference(before: &[LiveKey], after: &[LiveKey]) -> Option<String> {
    let mut before = before.to_vec();
    let mut after = after.to_vec();
    before.sort_unstable();
    after.sort_unstable();
    if before == after {
        return None;
    }
    let mut b = before.iter().peekable();
    let mut a = after.iter().peekable();
    loop {
        match (b.peek(), a.peek()) {
            (Some(x), Some(y)) if x == y => {
                b.next();
                a.next();
            }
            (Some(x), Some(y)) if x < y => {
                return Some(format!("{} ({} rows) would disappear", x.0, x.1));
            }
            (Some(x), None) => return Some(format!("{} ({} rows) would disappear", x.0, x.1)),
            (_, Some(y)) => return Some(format!("{} ({} rows) would appear", y.0, y.1)),
            (None, None) => return Some("the live files differ".into()),
        }
    }
}

/// A merge staged on storage.
pub(crate) struct StagedMerge {
    pub(crate) staged: Staged,
    pub(crate) before: usize,
    pub(crate) after: usize,
}

/// Manifests loaded at the same time while merging.
pub(crate) const MERGE_READ_CONCURRENCY: usize = 16;

impl Maintainer {
    /// Merges the data manifests of `table`'s current snapshot when it lists
    /// more than `max_manifests` of them: one `replace` snapshot, no data
    /// change, whose manifest list holds one new manifest with the live
    /// entries of every data manifest of the default partition spec (as
    /// EXISTING entries with their adding snapshot and sequence numbers),
    /// the delete manifests and live data manifests of other specs
    /// unchanged, and no manifest without a live file. The parent's `tlake.*`
    /// summary is carried forward as by [`Maintainer::replace_files`].
    ///
    /// Before posting, the live data files (path, rows) of the new list are
    /// checked against the parent's; any difference is refused
    /// ([`Error::Unsafe`]). Requires `assert-ref-snapshot-id`: a commit in
    /// between answers 409, and the merge is re-planned on the new table.
    pub async fn merge_manifests(&self, table: &str, max_manifests: usize) -> Result<MergeOutcome> {
        let commit_id = Uuid::now_v7();
        let mut loaded = self.catalog.load_table(table).await?;
        let name = loaded.identifier().to_string();
        let mut tries = Attempts::default();
        let mut first_before = None;
        for attempt in 0u32.. {
            if tries.unknown > 0 {
                match merge_landed(&loaded, commit_id).await {
                    Ok(Some(after)) => {
                        return Ok(MergeOutcome::Committed {
                            snapshot_id: loaded
                                .metadata()
                                .current_snapshot_id()
                                .unwrap_or_default(),
                            before: first_before.unwrap_or_default(),
                            after,
                            conflicts: tries.conflicts,
                        });
                    }
                    Ok(None) => {}
                    Err(e) if e.retryable() => {
                        return Ok(MergeOutcome::Unknown {
                            before: first_before.unwrap_or_default(),
                        });
                    }
                    Err(e) => return Err(e),
                }
            }
            let staged = match self
                .stage_merge(&loaded, max_manifests, commit_id, attempt)
                .await
            {
                Ok(Ok(staged)) => staged,
                Ok(Err(manifests)) => return Ok(MergeOutcome::NotNeeded { manifests }),
                Err(e) if tries.unknown > 0 && e.retryable() => {
                    return Ok(MergeOutcome::Unknown {
                        before: first_before.unwrap_or_default(),
                    });
                }
                Err(e) => return Err(e),
            };
            let before = *first_before.get_or_insert(staged.before);
            let (after, snapshot_id) = (staged.after, staged.staged.snapshot.snapshot_id());
            let post = self
                .post_staged(&loaded, staged.staged, "merge manifests")
                .await?;
            if let Post::Applied = post {
                return Ok(MergeOutcome::Committed {
                    snapshot_id,
                    before,
                    after,
                    conflicts: tries.conflicts,
                });
            }
            if !tries.wait_to_retry(post, &name).await? {
                return Ok(MergeOutcome::Unknown { before });
            }
            loaded = match self.catalog.load_table(table).await {
                Ok(t) => t,
                Err(e) if tries.unknown > 0 && e.retryable() => {
                    return Ok(MergeOutcome::Unknown { before });
                }
                Err(e) => return Err(e),
            };
        }
        Ok(MergeOutcome::Unknown {
            before: first_before.unwrap_or_default(),
        })
    }

    /// Writes the merged manifest and the manifest list of a merge on top of
    /// `table`'s current snapshot (nothing committed), or answers how many
    /// manifests are listed when no merge is due.
    pub(crate) async fn stage_merge(
        &self,
        table: &Table,
        max_manifests: usize,
        commit_id: Uuid,
        attempt: u32,
    ) -> Result<std::result::Result<StagedMerge, usize>> {
        let metadata = table.metadata();
        let name = table.identifier().to_string();
        let Some(parent) = metadata.current_snapshot() else {
            return Ok(Err(0));
        };
        let file_io = table.file_io();
        let list = load_manifest_list(file_io, metadata.format_version(), parent).await?;
        let list = list.entries();
        if !needs_manifest_merge(list, max_manifests) {
            return Ok(Err(list.len()));
        }
        if metadata.format_version() != FormatVersion::V2 {
            return Err(Error::Unsafe {
                table: name,
                reason: format!(
                    "manifest merges are written for format v2; the table is {:?}",
                    metadata.format_version()
                ),
            });
        }
        // Every data manifest: the merge input, and the live set to check against.
        let loaded: Vec<Option<iceberg::spec::Manifest>> = futures::stream::iter(list.iter())
            .map(|m| async move {
                if m.content == ManifestContentType::Data {
                    m.load_manifest(file_io).await.map(Some)
                } else {
                    Ok(None)
                }
            })
            .buffered(MERGE_READ_CONCURRENCY)
            .try_collect()
            .await?;
        let infos: Vec<ManifestInfo> = list
            .iter()
            .zip(&loaded)
            .map(|(m, l)| ManifestInfo {
                content: m.content,
                spec_id: m.partition_spec_id,
                live_files: l
                    .as_ref()
                    .map_or(0, |l| l.entries().iter().filter(|e| e.is_alive()).count()),
            })
            .collect();
        let spec = metadata.default_partition_spec();
        let Some(fates) = plan_manifest_merge(&infos, spec.spec_id()) else {
            return Ok(Err(list.len()));
        };
        let parent_live: Vec<LiveKey> = loaded
            .iter()
            .flatten()
            .flat_map(|l| l.entries().iter().filter(|e| e.is_alive()))
            .map(|e| (e.file_path().to_owned(), e.record_count()))
            .collect();

        let location = metadata.location().trim_end_matches('/');
        let snapshot_id = new_snapshot_id(metadata);
        let sequence_number = metadata.next_sequence_number();
        // Everything written here is deleted again if staging fails.
        let mut written = Vec::new();
        let staged = async {
            let mut kept: Vec<ManifestFile> = Vec::new();
            let mut new_live: Vec<LiveKey> = Vec::new();
            let mut merged = None;
            if fates.contains(&ManifestFate::Merge) {
                let path = format!("{location}/metadata/{commit_id}-{attempt}-merged-m0.avro");
                let mut writer = ManifestWriterBuilder::new(
                    file_io.new_output(&path)?,
                    Some(snapshot_id),
                    metadata.current_schema().clone(),
                    spec.as_ref().clone(),
                )
                .build_v2_data();
                written.push(path);
                let entries = list
                    .iter()
                    .zip(&loaded)
                    .zip(&fates)
                    .filter(|(_, fate)| **fate == ManifestFate::Merge)
                    .filter_map(|((m, l), _)| l.as_ref().map(|l| (m, l)))
                    .flat_map(|(m, l)| l.entries().iter().map(move |e| (m, e)));
                for (manifest, entry) in entries.filter(|(_, e)| e.is_alive()) {
                    let (Some(added_by), Some(seq)) =
                        (entry.snapshot_id(), entry.sequence_number())
                    else {
                        return Err(Error::Unsafe {
                            table: name.clone(),
                            reason: format!(
                                "{} in {} has no snapshot id or sequence number",
                                entry.file_path(),
                                manifest.manifest_path
                            ),
                        });
                    };
                    let file_seq = entry.file_sequence_number.or(Some(seq));
                    writer.add_existing_file(entry.data_file().clone(), added_by, seq, file_seq)?;
                }
                let file = writer.write_manifest_file().await?;
                // Check what is on storage, not what we meant to write.
                let read_back = file.load_manifest(file_io).await?;
                new_live.extend(
                    read_back
                        .entries()
                        .iter()
                        .filter(|e| e.is_alive())
                        .map(|e| (e.file_path().to_owned(), e.record_count())),
                );
                merged = Some(file);
            }
            for ((manifest, l), fate) in list.iter().zip(&loaded).zip(&fates) {
                if *fate != ManifestFate::Keep {
                    continue;
                }
                if let Some(l) = l {
                    new_live.extend(
                        l.entries()
                            .iter()
                            .filter(|e| e.is_alive())
                            .map(|e| (e.file_path().to_owned(), e.record_count())),
                    );
                }
                kept.push(manifest.clone());
            }
            if let Some(difference) = live_set_difference(&parent_live, &new_live) {
                return Err(Error::Unsafe {
                    table: name.clone(),
                    reason: format!(
                        "merging manifests would change the live data files: {difference}; refusing"
                    ),
                });
            }
            let manifests: Vec<ManifestFile> = merged.into_iter().chain(kept).collect();
            let after = manifests.len();

            let head = ReplaceHead {
                metadata,
                parent,
                ids: (snapshot_id, sequence_number),
                attempt,
                commit_id,
            };
            let what = (
                iceberg::spec::Operation::Replace,
                &Counts::default(),
                "merge-manifests",
            );
            let snapshot = head.stage(file_io, manifests, &mut written, what).await?;
            Ok::<_, Error>((snapshot, after))
        }
        .await;
        let (snapshot, after) = discard_staged(file_io, &written, staged).await?;
        Ok(Ok(StagedMerge {
            staged: Staged { snapshot, written },
            before: list.len(),
            after,
        }))
    }
}

/// After an unknown outcome: whether the merge `commit_id` is in `table`
/// (its snapshot is current, or a later commit lists its merged manifest);
/// if so, how many manifests the current snapshot lists.
pub(crate) async fn merge_landed(table: &Table, commit_id: Uuid) -> Result<Option<usize>> {
    let metadata = table.metadata();
    let Some(current) = metadata.current_snapshot() else {
        return Ok(None);
    };
    let list = load_manifest_list(table.file_io(), metadata.format_version(), current).await?;
    let ours = current
        .summary()
        .additional_properties
        .get(SUMMARY_COMMIT_ID)
        .is_some_and(|id| *id == commit_id.to_string())
        || current.manifest_list().contains(&commit_id.to_string())
        || list
            .entries()
            .iter()
            .any(|m| m.manifest_path.contains(&commit_id.to_string()));
    Ok(ours.then_some(list.entries().len()))
}

/// How many manifests `table`'s current snapshot lists: (all, data).
pub async fn manifest_counts(table: &Table) -> Result<(usize, usize)> {
    let metadata = table.metadata();
    let Some(snapshot) = metadata.current_snapshot() else {
        return Ok((0, 0));
    };
    let list = load_manifest_list(table.file_io(), metadata.format_version(), snapshot).await?;
    let data = list
        .entries()
        .iter()
        .filter(|m| m.content == ManifestContentType::Data)
        .count();
    Ok((list.entries().len(), data))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn manifest(content: ManifestContentType, spec: i32) -> ManifestFile {
        ManifestFile {
            manifest_path: "s3://b/t/metadata/m.avro".into(),
            manifest_length: 1,
            partition_spec_id: spec,
            content,
            sequence_number: 1,
            min_sequence_number: 1,
            added_snapshot_id: 1,
            added_files_count: Some(1),
            existing_files_count: Some(0),
            deleted_files_count: Some(0),
            added_rows_count: Some(1),
            existing_rows_count: Some(0),
            deleted_rows_count: Some(0),
            partitions: None,
            key_metadata: None,
            first_row_id: None,
        }
    }

    #[test]
    fn a_merge_is_due_only_above_the_data_manifest_bound() {
        let data = |n| vec![manifest(ManifestContentType::Data, 0); n];
        assert!(!needs_manifest_merge(&data(2), 2));
        assert!(needs_manifest_merge(&data(3), 2));
        // Delete manifests do not count.
        let mut list = data(2);
        list.push(manifest(ManifestContentType::Deletes, 0));
        assert!(!needs_manifest_merge(&list, 2));
    }

    #[test]
    fn merge_plan_merges_the_spec_keeps_the_rest_and_drops_the_dead() {
        use ManifestFate::{Drop, Keep, Merge};
        let info = |content, spec_id, live_files| ManifestInfo {
            content,
            spec_id,
            live_files,
        };
        let (data, deletes) = (ManifestContentType::Data, ManifestContentType::Deletes);
        let manifests = [
            info(data, 1, 3),
            info(data, 1, 0),    // only deleted entries
            info(deletes, 1, 0), // delete manifests stay as they are
            info(data, 0, 2),    // another spec
            info(data, 0, 0),    // another spec, nothing live
            info(data, 1, 1),
        ];
        assert_eq!(
            plan_manifest_merge(&manifests, 1),
            Some(vec![Merge, Drop, Keep, Keep, Drop, Merge])
        );
        // One live manifest of the spec and nothing to drop: no shorter list.
        assert_eq!(
            plan_manifest_merge(&[info(data, 1, 5), info(data, 0, 5)], 1),
            None
        );
        // One live manifest but a dead one to drop: worth a commit.
        assert_eq!(
            plan_manifest_merge(&[info(data, 1, 5), info(data, 1, 0)], 1),
            Some(vec![Merge, Drop])
        );
        assert_eq!(plan_manifest_merge(&[], 1), None);
    }

    #[test]
    fn the_live_set_check_sees_lost_added_and_changed_files() {
        let key = |p: &str, rows| (p.to_owned(), rows);
        let before = [key("a", 1), key("b", 2)];
        assert_eq!(
            live_set_difference(&before, &[key("b", 2), key("a", 1)]),
            None
        );
        let lost = live_set_difference(&before, &[key("a", 1)]).expect("lost");
        assert!(lost.contains("b (2 rows) would disappear"), "{lost}");
        let added =
            live_set_difference(&before, &[key("a", 1), key("b", 2), key("c", 3)]).expect("added");
        assert!(added.contains("c (3 rows) would appear"), "{added}");
        assert!(live_set_difference(&before, &[key("a", 1), key("b", 3)]).is_some());
        // A file listed twice is a difference too.
        assert!(live_set_difference(&before, &[key("a", 1), key("a", 1), key("b", 2)]).is_some());
    }

    #[test]
    fn a_merge_summary_carries_progress_and_changes_no_totals() {
        let parent = HashMap::from([
            ("tlake.offsets".to_owned(), r#"{"t":{"0":42}}"#.to_owned()),
            ("tlake.writer-epoch".to_owned(), "3".to_owned()),
            ("total-records".to_owned(), "100".to_owned()),
            ("total-data-files".to_owned(), "10".to_owned()),
        ]);
        let s = replace_summary(
            &parent,
            &Counts::default(),
            Uuid::now_v7(),
            "merge-manifests",
        );
        assert_eq!(s["tlake.offsets"], parent["tlake.offsets"]);
        assert_eq!(s["tlake.writer-epoch"], "3");
        assert_eq!(s[SUMMARY_MAINTENANCE], "merge-manifests");
        assert_eq!(s["total-records"], "100");
        assert_eq!(s["total-data-files"], "10");
        assert_eq!(
            (s["added-records"].as_str(), s["deleted-records"].as_str()),
            ("0", "0")
        );
    }
}
