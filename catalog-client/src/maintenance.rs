//! Table maintenance (ARCHITECTURE §3): the `replace` commit that swaps
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

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{StreamExt, TryStreamExt};
use iceberg::io::FileIO;
use iceberg::spec::{
    DataFile, FormatVersion, MAIN_BRANCH, ManifestContentType, ManifestFile, ManifestList,
    ManifestListWriter, ManifestWriterBuilder, Operation, Snapshot, SnapshotReference,
    SnapshotRetention, Summary, TableMetadata,
};
use iceberg::table::Table;
use iceberg::{ErrorKind, TableRequirement, TableUpdate};
use uuid::Uuid;

use crate::catalog::{LakeCatalog, Posted, S3Settings, SUMMARY_COMMIT_ID, unexpected};
use crate::error::{Error, Result};

/// How many unknown outcomes (5xx, timeouts) before answering `Unknown`.
/// Maintenance has no caller loop that retries it (the next run does), so
/// it reconciles a few itself, paced by [`crate::retry::transient`].
const MAX_UNKNOWN: u32 = 5;
/// Summary key marking snapshots written by maintenance.
pub const SUMMARY_MAINTENANCE: &str = "tlake.maintenance";

/// S3 settings for listing and deleting objects (FileIO cannot list).
#[derive(Clone)]
pub(crate) struct Storage(pub(crate) S3Settings);

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the keys.
        f.debug_struct("Storage")
            .field("endpoint", &self.0.endpoint)
            .finish_non_exhaustive()
    }
}

impl Storage {
    fn operator(&self, bucket: &str) -> Result<opendal::Operator> {
        let s = &self.0;
        let mut builder = opendal::services::S3::default()
            .bucket(bucket)
            .endpoint(&s.endpoint)
            .region(&s.region)
            .access_key_id(&s.access_key_id)
            .secret_access_key(&s.secret_access_key)
            .disable_config_load()
            .disable_ec2_metadata();
        if !s.path_style {
            builder = builder.enable_virtual_host_style();
        }
        Ok(opendal::Operator::new(builder)
            .map_err(storage_error)?
            .finish())
    }
}

fn storage_error(e: opendal::Error) -> Error {
    Error::Storage(e.to_string())
}

/// `s3://bucket/key` → (`bucket`, `key`). Any `scheme://` is accepted.
pub fn split_location(location: &str) -> Option<(&str, &str)> {
    let (_, rest) = location.split_once("://")?;
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    (!bucket.is_empty()).then_some((bucket, key))
}

/// A location without its scheme (`bucket/key`), so `s3://` and `s3a://`
/// spellings of one object compare equal.
pub fn normalize(location: &str) -> String {
    match split_location(location) {
        Some((bucket, key)) => format!("{bucket}/{key}"),
        None => location.to_owned(),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// One live data file of a table's current snapshot.
#[derive(Debug, Clone)]
pub struct LiveFile {
    /// The file as the manifest lists it.
    pub data_file: DataFile,
    /// Partition spec of the manifest listing it.
    pub partition_spec_id: i32,
}

async fn load_manifest_list(
    file_io: &FileIO,
    version: FormatVersion,
    snapshot: &Snapshot,
) -> Result<ManifestList> {
    let bytes = file_io.new_input(snapshot.manifest_list())?.read().await?;
    Ok(ManifestList::parse_with_version(&bytes, version)?)
}

/// The live data files of `table`'s current snapshot (none without one).
pub async fn live_data_files(table: &Table) -> Result<Vec<LiveFile>> {
    let metadata = table.metadata();
    let Some(snapshot) = metadata.current_snapshot() else {
        return Ok(Vec::new());
    };
    let list = load_manifest_list(table.file_io(), metadata.format_version(), snapshot).await?;
    let mut files = Vec::new();
    for manifest in list.entries() {
        if manifest.content != ManifestContentType::Data {
            continue;
        }
        for entry in manifest.load_manifest(table.file_io()).await?.entries() {
            if entry.is_alive() {
                files.push(LiveFile {
                    data_file: entry.data_file().clone(),
                    partition_spec_id: manifest.partition_spec_id,
                });
            }
        }
    }
    Ok(files)
}

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

/// What posting a staged commit answered (a refusal is an error).
enum Post {
    Applied,
    Conflict,
    Unknown,
}

/// A `replace` snapshot on top of `parent` with manifest list `list_path`.
fn replace_snapshot(
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
struct Attempts {
    conflicts: u32,
    conflict_waits: backon::ExponentialBackoff,
    unknown: u32,
    unknown_waits: backon::ExponentialBackoff,
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
    async fn wait_to_retry(&mut self, post: Post, table: &str) -> Result<bool> {
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

/// A replace staged on storage: its snapshot and the files written for it.
struct Staged {
    snapshot: Snapshot,
    written: Vec<String>,
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

    /// Posts a staged `replace` snapshot as the new head of `main`, requiring
    /// `main` to still be its parent. Certainly-not-committed attempts (409,
    /// refusal) have their staged files deleted; a refusal is an error.
    async fn post_staged(
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
                // Certainly not committed: its manifests can go now.
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

    /// Writes the manifests and manifest list of a replace on top of
    /// `table`'s current snapshot. Nothing is committed.
    async fn stage_replace(
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
        let mut written = Vec::new();
        let mut manifests: Vec<ManifestFile> = Vec::new();

        let path = format!("{location}/metadata/{tag}-m0.avro");
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
        written.push(path);

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
                    reason: "the table has delete files; rewriting would bring deleted rows back"
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
                    writer.add_existing_file(entry.data_file().clone(), added_by, seq, file_seq)?;
                }
            }
            manifests.push(writer.write_manifest_file().await?);
            written.push(path);
        }
        if counts.added_records != counts.deleted_records {
            delete_quietly(file_io, &written).await;
            return Err(Error::Unsafe {
                table: name,
                reason: format!(
                    "the rewrite has {} rows but the files it replaces hold {}",
                    counts.added_records, counts.deleted_records
                ),
            });
        }

        let list_path = manifest_list_path(location, snapshot_id, attempt, commit_id);
        write_manifest_list(
            file_io,
            &list_path,
            (snapshot_id, sequence_number),
            parent,
            manifests,
        )
        .await?;
        written.push(list_path.clone());

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
        Ok(Staged { snapshot, written })
    }

    /// Removes the snapshots `retention` lets go (see [`snapshots_to_expire`])
    /// with a REST `remove-snapshots` update. On Nessie, which lists only the
    /// current snapshot, there is never anything to remove this way; the
    /// history is expired by [`LakeCatalog::remove_orphans`].
    pub async fn expire_snapshots(
        &self,
        table: &str,
        retention: Retention,
        dry_run: bool,
    ) -> Result<ExpireReport> {
        let loaded = self.load_table(table).await?;
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
            self,
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
            Posted::Unknown(status, text) => Err(unexpected(format!(
                "remove-snapshots on {name} answered {status}: {text}"
            ))),
        }
    }

    /// Deletes the objects under `table`'s location that no retained version
    /// references and that are older than `policy.grace` (only reports them
    /// with `dry_run`). Retained versions: the current metadata, its
    /// metadata log, and the metadata files [`retained_versions`] keeps;
    /// referenced: those files, the manifest lists of their snapshots, the
    /// manifests, the live data and delete files, statistics files.
    /// A grace shorter than [`retry::orphan_grace_floor`](crate::retry::orphan_grace_floor)
    /// is refused: it could delete a flush's files before their commit lands.
    pub async fn remove_orphans(&self, table: &str, policy: OrphanPolicy) -> Result<OrphanReport> {
        let floor = crate::retry::orphan_grace_floor(self.request_timeout);
        if policy.grace < floor {
            return Err(Error::Unsafe {
                table: table.to_owned(),
                reason: format!(
                    "an orphan grace of {:?} is shorter than {floor:?}, the longest a flush's files \
                     can stay unreferenced before their commit lands; refusing to delete anything",
                    policy.grace
                ),
            });
        }
        let loaded = self.load_table(table).await?;
        let name = loaded.identifier().to_string();
        let metadata = loaded.metadata();
        let unsafe_ = |reason: String| Error::Unsafe {
            table: name.clone(),
            reason,
        };
        let location = metadata.location().trim_end_matches('/');
        let Some((bucket, prefix)) = split_location(location) else {
            return Err(unsafe_(format!(
                "cannot parse the table location {location}"
            )));
        };
        if prefix.is_empty() {
            return Err(unsafe_(format!(
                "the table location {location} is a whole bucket; refusing to clean it"
            )));
        }
        let operator = self.storage.operator(bucket)?;
        let now = now_ms();
        let objects: Vec<StoredObject> = operator
            .list_with(&format!("{prefix}/"))
            .recursive(true)
            .await
            .map_err(storage_error)?
            .into_iter()
            .filter(|e| e.metadata().mode().is_file())
            .map(|e| StoredObject {
                path: format!("{bucket}/{}", e.path()),
                size: e.metadata().content_length(),
                modified_ms: e
                    .metadata()
                    .last_modified()
                    .map(|t| t.into_inner().as_millisecond())
                    // Unknown age: treat as new, never delete.
                    .unwrap_or(now),
            })
            .collect();

        let current = loaded
            .metadata_location()
            .map(normalize)
            .ok_or_else(|| unsafe_("the catalog did not say where the metadata is".into()))?;
        let metadata_dir = format!("{bucket}/{prefix}/metadata/");
        let versions: Vec<StoredObject> = objects
            .iter()
            .filter(|o| o.path.starts_with(&metadata_dir) && o.path.ends_with(".metadata.json"))
            .cloned()
            .collect();
        // Another table's metadata under our location (a table nested in
        // ours) would have its files taken for orphans: refuse.
        if let Some(nested) = objects
            .iter()
            .find(|o| o.path.ends_with(".metadata.json") && !o.path.starts_with(&metadata_dir))
        {
            return Err(unsafe_(format!(
                "{} lies under the table's location but outside its metadata folder \
                 (another table nested in this one?); refusing to delete anything",
                nested.path
            )));
        }
        let mut retained = retained_versions(&versions, &current, policy.retention, now);
        retained.extend(
            metadata
                .metadata_log()
                .iter()
                .map(|l| normalize(&l.metadata_file)),
        );
        let listed: HashSet<&str> = objects.iter().map(|o| o.path.as_str()).collect();
        // A listing that does not contain the current metadata means the
        // paths do not line up (endpoint, bucket, scheme): delete nothing.
        if !listed.contains(current.as_str()) {
            return Err(unsafe_(format!(
                "the listing of {location} does not contain the current metadata {current}; \
                 refusing to delete anything"
            )));
        }

        let mut versions_read = vec![(current.clone(), metadata.clone())];
        for version in &retained {
            if *version == current || !listed.contains(version.as_str()) {
                continue;
            }
            let bytes = loaded
                .file_io()
                .new_input(format!("s3://{version}"))?
                .read()
                .await?;
            let parsed: TableMetadata = serde_json::from_slice(&bytes)
                .map_err(|e| unsafe_(format!("cannot parse retained metadata {version}: {e}")))?;
            versions_read.push((version.clone(), parsed));
        }
        // Read each manifest list and manifest once: versions share most.
        let mut seen_lists = HashSet::new();
        let mut seen_manifests = HashSet::new();
        let mut version_files = Vec::new();
        for (path, version) in &versions_read {
            let mut files = VersionFiles {
                metadata_file: path.clone(),
                ..Default::default()
            };
            files.other.extend(
                version
                    .statistics_iter()
                    .map(|s| s.statistics_path.clone())
                    .chain(
                        version
                            .partition_statistics_iter()
                            .map(|s| s.statistics_path.clone()),
                    ),
            );
            for snapshot in version.snapshots() {
                if !seen_lists.insert(snapshot.manifest_list().to_owned()) {
                    continue;
                }
                files.other.push(snapshot.manifest_list().to_owned());
                let list = load_manifest_list(loaded.file_io(), version.format_version(), snapshot)
                    .await?;
                for manifest in list.entries() {
                    files.other.push(manifest.manifest_path.clone());
                    if !seen_manifests.insert(manifest.manifest_path.clone()) {
                        continue;
                    }
                    for entry in manifest.load_manifest(loaded.file_io()).await?.entries() {
                        files
                            .entries
                            .push((entry.file_path().to_owned(), entry.is_alive()));
                    }
                }
            }
            version_files.push(files);
        }
        let mut referenced = referenced_paths(&version_files);
        referenced.extend(retained.iter().cloned());
        if let Some(snapshot) = metadata.current_snapshot()
            && !listed.contains(normalize(snapshot.manifest_list()).as_str())
        {
            return Err(unsafe_(format!(
                "the current manifest list {} is not in the listing; refusing to delete anything",
                snapshot.manifest_list()
            )));
        }

        let cutoff = now - i64::try_from(policy.grace.as_millis()).unwrap_or(i64::MAX);
        let (orphans, too_young) = orphans(&objects, &referenced, cutoff);
        let mut deleted = 0;
        if !policy.dry_run {
            for orphan in &orphans {
                let key = orphan
                    .path
                    .strip_prefix(&format!("{bucket}/"))
                    .unwrap_or(&orphan.path);
                operator.delete(key).await.map_err(storage_error)?;
                deleted += 1;
            }
        }
        Ok(OrphanReport {
            objects: objects.len(),
            referenced: referenced.len(),
            versions: versions.len(),
            versions_retained: retained.len(),
            orphans,
            too_young,
            deleted,
        })
    }
}

/// What [`LakeCatalog::merge_manifests`] did. Counts are manifests in the
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
struct StagedMerge {
    staged: Staged,
    before: usize,
    after: usize,
}

/// Manifests loaded at the same time while merging.
const MERGE_READ_CONCURRENCY: usize = 16;

impl LakeCatalog {
    /// Merges the data manifests of `table`'s current snapshot when it lists
    /// more than `max_manifests` of them: one `replace` snapshot, no data
    /// change, whose manifest list holds one new manifest with the live
    /// entries of every data manifest of the default partition spec (as
    /// EXISTING entries with their adding snapshot and sequence numbers),
    /// the delete manifests and live data manifests of other specs
    /// unchanged, and no manifest without a live file. The parent's `tlake.*`
    /// summary is carried forward as by [`LakeCatalog::replace_files`].
    ///
    /// Before posting, the live data files (path, rows) of the new list are
    /// checked against the parent's; any difference is refused
    /// ([`Error::Unsafe`]). Requires `assert-ref-snapshot-id`: a commit in
    /// between answers 409, and the merge is re-planned on the new table.
    pub async fn merge_manifests(&self, table: &str, max_manifests: usize) -> Result<MergeOutcome> {
        let commit_id = Uuid::now_v7();
        let mut loaded = self.load_table(table).await?;
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
            loaded = match self.load_table(table).await {
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
    async fn stage_merge(
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
                    &Counts::default(),
                    commit_id,
                    "merge-manifests",
                ),
            );
            Ok::<_, Error>((snapshot, after))
        }
        .await;
        match staged {
            Ok((snapshot, after)) => Ok(Ok(StagedMerge {
                staged: Staged { snapshot, written },
                before: list.len(),
                after,
            })),
            Err(e) => {
                delete_quietly(file_io, &written).await;
                Err(e)
            }
        }
    }
}

/// Where the manifest list of snapshot `snapshot_id` goes (unique per
/// attempt and commit, so a retry never overwrites a list another
/// attempt may have committed).
fn manifest_list_path(location: &str, snapshot_id: i64, attempt: u32, commit_id: Uuid) -> String {
    format!("{location}/metadata/snap-{snapshot_id}-{attempt}-{commit_id}.avro")
}

/// Writes the v2 manifest list of snapshot `(id, sequence number)` on top
/// of `parent`, listing `manifests`.
async fn write_manifest_list(
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

/// After an unknown outcome: whether the merge `commit_id` is in `table`
/// (its snapshot is current, or a later commit lists its merged manifest);
/// if so, how many manifests the current snapshot lists.
async fn merge_landed(table: &Table, commit_id: Uuid) -> Result<Option<usize>> {
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

#[derive(Debug, Default)]
struct Counts {
    added_files: u64,
    added_records: u64,
    added_bytes: u64,
    deleted_files: u64,
    deleted_records: u64,
    deleted_bytes: u64,
}

/// The summary of a replace: the parent's `tlake.*` keys (offsets, newest
/// event time, writer epoch) unchanged, our commit id, the change counts,
/// and the totals moved on from the parent's.
fn replace_summary(
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

fn commit_body(
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
fn catalog_message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| body.trim().to_owned())
}

/// A positive snapshot id the table does not use yet.
fn new_snapshot_id(metadata: &TableMetadata) -> i64 {
    loop {
        let (high, low) = Uuid::new_v4().as_u64_pair();
        let id = i64::try_from((high ^ low) & (i64::MAX as u64)).unwrap_or(1);
        if id > 0 && metadata.snapshot_by_id(id).is_none() {
            return id;
        }
    }
}

async fn delete_quietly(file_io: &FileIO, paths: &[String]) {
    for path in paths {
        if let Err(e) = file_io.delete(path).await {
            tracing::debug!(%path, error = %e, "could not delete an uncommitted file; orphan cleanup will");
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

/// What [`LakeCatalog::expire_snapshots`] did.
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

/// An object in storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    /// `bucket/key`.
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// Last modified, ms since the epoch.
    pub modified_ms: i64,
}

/// What [`LakeCatalog::remove_orphans`] keeps and deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrphanPolicy {
    /// Which table versions (metadata files) stay readable.
    pub retention: Retention,
    /// Unreferenced objects younger than this are left alone (in-flight
    /// flushes, commits whose outcome is still being reconciled).
    pub grace: Duration,
    /// Only report.
    pub dry_run: bool,
}

/// What [`LakeCatalog::remove_orphans`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrphanReport {
    /// Objects under the table's location.
    pub objects: usize,
    /// Distinct referenced paths.
    pub referenced: usize,
    /// Metadata files (table versions) found.
    pub versions: usize,
    /// Table versions kept readable.
    pub versions_retained: usize,
    /// Unreferenced objects older than the grace period.
    pub orphans: Vec<StoredObject>,
    /// Unreferenced objects left because they are younger than the grace period.
    pub too_young: usize,
    /// Orphans deleted (0 in a dry run).
    pub deleted: usize,
}

/// What one retained table version points at, as read from storage.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct VersionFiles {
    /// Its metadata file.
    pub metadata_file: String,
    /// Manifest lists, manifests, statistics files.
    pub other: Vec<String>,
    /// Manifest entries: (file path, alive). Entries of deleted files
    /// belong to older versions, not to this one.
    pub entries: Vec<(String, bool)>,
}

/// Every path `versions` reference, normalized (no scheme).
pub fn referenced_paths(versions: &[VersionFiles]) -> HashSet<String> {
    let mut referenced = HashSet::new();
    for version in versions {
        referenced.insert(normalize(&version.metadata_file));
        referenced.extend(version.other.iter().map(|p| normalize(p)));
        referenced.extend(
            version
                .entries
                .iter()
                .filter(|(_, alive)| *alive)
                .map(|(p, _)| normalize(p)),
        );
    }
    referenced
}

/// Table versions (metadata files) to keep: the current one, the newest
/// `keep_last`, and those younger than `max_age`. Paths as in `versions`.
pub fn retained_versions(
    versions: &[StoredObject],
    current: &str,
    retention: Retention,
    now_ms: i64,
) -> HashSet<String> {
    let mut by_age: Vec<&StoredObject> = versions.iter().collect();
    by_age.sort_unstable_by(|a, b| (b.modified_ms, &b.path).cmp(&(a.modified_ms, &a.path)));
    let cutoff = now_ms - i64::try_from(retention.max_age.as_millis()).unwrap_or(i64::MAX);
    let mut keep: HashSet<String> = by_age
        .iter()
        .enumerate()
        .filter(|&(rank, v)| rank < retention.keep_last.max(1) || v.modified_ms >= cutoff)
        .map(|(_, v)| v.path.clone())
        .collect();
    keep.insert(current.to_owned());
    keep
}

/// Objects not in `referenced`: those last modified before `cutoff_ms`
/// (to delete), and how many newer ones were left alone.
pub fn orphans(
    objects: &[StoredObject],
    referenced: &HashSet<String>,
    cutoff_ms: i64,
) -> (Vec<StoredObject>, usize) {
    let mut old = Vec::new();
    let mut young = 0;
    for object in objects.iter().filter(|o| !referenced.contains(&o.path)) {
        if object.modified_ms < cutoff_ms {
            old.push(object.clone());
        } else {
            young += 1;
        }
    }
    (old, young)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(path: &str, modified_ms: i64) -> StoredObject {
        StoredObject {
            path: path.to_owned(),
            size: 1,
            modified_ms,
        }
    }

    #[test]
    fn locations_split_and_normalize() {
        assert_eq!(
            split_location("s3://b/t/x.parquet"),
            Some(("b", "t/x.parquet"))
        );
        assert_eq!(split_location("s3a://b"), Some(("b", "")));
        assert_eq!(split_location("/local/path"), None);
        assert_eq!(normalize("s3a://b/k"), normalize("s3://b/k"));
        assert_eq!(normalize("s3://b/k"), "b/k");
    }

    #[test]
    fn orphans_are_unreferenced_and_older_than_the_grace() {
        let objects = [
            object("b/t/data/a.parquet", 100),
            object("b/t/data/stray.parquet", 100),
            object("b/t/data/in-flight.parquet", 950),
            object("b/t/metadata/m.avro", 100),
        ];
        let referenced: HashSet<String> = ["b/t/data/a.parquet", "b/t/metadata/m.avro"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        let (old, young) = orphans(&objects, &referenced, 900);
        assert_eq!(old, vec![object("b/t/data/stray.parquet", 100)]);
        assert_eq!(young, 1);
    }

    #[test]
    fn versions_keep_the_newest_the_recent_and_the_current() {
        let versions = [
            object("v1", 100),
            object("v2", 200),
            object("v3", 300),
            object("v4", 400),
            object("v5", 500),
        ];
        let policy = |keep_last, max_age_ms| Retention {
            keep_last,
            max_age: Duration::from_millis(max_age_ms),
        };
        let sorted = |s: HashSet<String>| {
            let mut v: Vec<String> = s.into_iter().collect();
            v.sort();
            v
        };
        // Newest two, nothing recent enough by age.
        assert_eq!(
            sorted(retained_versions(&versions, "v5", policy(2, 10), 1000)),
            ["v4", "v5"]
        );
        // Age keeps v3.. (now 1000, max age 750 → cutoff 250).
        assert_eq!(
            sorted(retained_versions(&versions, "v5", policy(1, 750), 1000)),
            ["v3", "v4", "v5"]
        );
        // keep_last 0 still keeps one, and the current is kept even if old.
        assert_eq!(
            sorted(retained_versions(&versions, "v1", policy(0, 0), 1000)),
            ["v1", "v5"]
        );
    }

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
    fn referenced_paths_are_live_files_and_metadata_of_every_version() {
        let versions = [
            VersionFiles {
                metadata_file: "s3://b/t/metadata/v2.metadata.json".into(),
                other: vec![
                    "s3://b/t/metadata/snap-2.avro".into(),
                    "s3a://b/t/metadata/m2.avro".into(),
                ],
                entries: vec![
                    ("s3://b/t/data/big.parquet".into(), true),
                    // Deleted by the replace: not this version's.
                    ("s3://b/t/data/small.parquet".into(), false),
                ],
            },
            VersionFiles {
                metadata_file: "s3://b/t/metadata/v1.metadata.json".into(),
                other: vec!["s3://b/t/metadata/snap-1.avro".into()],
                entries: vec![("s3://b/t/data/other.parquet".into(), true)],
            },
        ];
        let mut referenced: Vec<String> = referenced_paths(&versions).into_iter().collect();
        referenced.sort();
        assert_eq!(
            referenced,
            [
                "b/t/data/big.parquet",
                "b/t/data/other.parquet",
                "b/t/metadata/m2.avro",
                "b/t/metadata/snap-1.avro",
                "b/t/metadata/snap-2.avro",
                "b/t/metadata/v1.metadata.json",
                "b/t/metadata/v2.metadata.json",
            ]
        );
    }

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
