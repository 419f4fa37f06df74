//! rewrite: the `replace` commit that swaps a partition's small data files for their rewrite
//! (the same rows), carrying the parent's `tlake.*` summary forward.

use std::collections::HashSet;

use iceberg::spec::DataFile;
use iceberg::table::Table;
use uuid::Uuid;

use tlake_catalog_client::Result;

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

impl Maintainer {
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
                .stage_removal(
                    &table,
                    &remove_paths,
                    add,
                    Removal::Rewrite,
                    (commit_id, attempt),
                )
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
            table = match self.catalog.load_table(planned.identifier().name()).await {
                Ok(t) => t,
                Err(e) if tries.unknown > 0 && e.retryable() => return Ok(ReplaceOutcome::Unknown),
                Err(e) => return Err(e),
            };
        }
        Ok(ReplaceOutcome::Unknown)
    }
}
