//! orphans: objects under a table's location that no retained version references, deleted once
//! older than the grace (which must outlast the longest commit: `retry::orphan_grace_floor`).

use std::collections::HashSet;
use std::time::Duration;

use iceberg::spec::TableMetadata;

use tlake_catalog_client::{Error, Result};

use super::*;

impl Maintainer {
    /// Deletes the objects under `table`'s location that no retained version
    /// references and that are older than `policy.grace` (only reports them
    /// with `dry_run`). Retained versions: the current metadata, its
    /// metadata log, and the metadata files [`retained_versions`] keeps;
    /// referenced: those files, the manifest lists of their snapshots, the
    /// manifests, the live data and delete files, statistics files.
    /// A grace shorter than [`retry::orphan_grace_floor`](tlake_catalog_client::retry::orphan_grace_floor)
    /// is refused: it could delete a flush's files before their commit lands.
    pub async fn remove_orphans(&self, table: &str, policy: OrphanPolicy) -> Result<OrphanReport> {
        let floor = tlake_catalog_client::retry::orphan_grace_floor(self.catalog.request_timeout());
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
        let loaded = self.catalog.load_table(table).await?;
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

/// What [`Maintainer::remove_orphans`] keeps and deletes.
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

/// What [`Maintainer::remove_orphans`] found and did.
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
}
