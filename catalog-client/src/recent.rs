//! The event ids the newest appends put into a table: what the compactor's
//! recent-id window (ARCHITECTURE §2, "App → table") held before a restart,
//! rebuilt from the table itself so an SDK retry that lands after the
//! restart is still recognised as a duplicate.
//!
//! Which snapshots: the catalog may list only the current snapshot — Nessie
//! does, without even its parent id — so ancestry cannot be walked through
//! the table metadata. The current snapshot's manifest list can stand in for
//! it: every live manifest of the branch is stamped with the snapshot that
//! added it and that snapshot's sequence number, and every manifest entry
//! keeps the data sequence number of the append that wrote its file. Ordering
//! by sequence number, newest first, is the parent walk restricted to
//! snapshots that added data, and it works the same on every catalog.
//!
//! Maintenance `replace` snapshots add no rows, but they may move the rows of
//! recent appends into new files (small-file rewrite has no age limit). Their
//! deleted entries keep the sequence numbers of the appends whose files they
//! removed, so a replace that rewrote files of a chosen append has its own
//! output read too (rows of older appends rewritten along come with it: every
//! id returned is in the table, the window may only hold a few more).
//!
//! How the ids are read: iceberg-rust's own Arrow reader, fed one hand-made
//! [`FileScanTask`] per data file that projects only the `event_id` field id.
//! It resolves field ids (and name mappings) like a table scan and fetches
//! only that column's byte ranges, while the file list stays ours: a table
//! scan cannot be restricted to the files some snapshots added.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use arrow_array::builder::FixedSizeBinaryBuilder;
use arrow_array::cast::AsArray;
use arrow_array::{Array, FixedSizeBinaryArray};
use arrow_schema::DataType;
use futures::{StreamExt, TryStreamExt};
use iceberg::spec::{
    DataContentType, DataFileFormat, Manifest, ManifestContentType, ManifestFile, ManifestStatus,
    Operation, PrimitiveType, Type,
};
use iceberg::table::Table;

use crate::read::{FileToRead, read_data_file};

use crate::error::{Error, Result};
use crate::schema::EVENT_ID;

/// Bytes of one event id.
pub const EVENT_ID_BYTES: i32 = 16;
/// Manifests or data files read at the same time.
const READ_CONCURRENCY: usize = 8;

/// The ids the newest appends added, newest append first.
#[derive(Debug, Clone)]
pub struct RecentIds {
    /// Event ids (`FixedSizeBinary(16)`, no nulls), newest append first;
    /// order within an append is unspecified.
    pub ids: FixedSizeBinaryArray,
    /// How many appends the ids cover (the oldest may be partial if `capped`).
    pub appends: usize,
    /// Whether the id cap cut the window short.
    pub capped: bool,
}

impl RecentIds {
    fn empty() -> Self {
        Self {
            ids: FixedSizeBinaryBuilder::new(EVENT_ID_BYTES).finish(),
            appends: 0,
            capped: false,
        }
    }
}

/// The event ids written by the newest `max_appends` append snapshots of the
/// table's current branch, at most `max_ids` of them (newer appends win; the
/// ids of the append that reaches the cap are cut arbitrarily).
///
/// Counted are the data files an append added (its own `Added` entries, or
/// `Existing` ones where a rewritten manifest still names it as their adder)
/// and the output of `replace` snapshots that rewrote such files.
/// Non-appends (`replace`, `overwrite`, `delete`) do not count towards
/// `max_appends`. A snapshot the catalog does not list is judged by its
/// manifests: one that also records existing or deleted files is no plain
/// append. Snapshots that added no data file (an offsets-only commit) are
/// not seen. Rows removed later by delete files are still returned.
///
/// Costs one read of the manifest list, one per manifest added by the newest
/// appends (and by replaces between them), and one ranged read of the
/// `event_id` column per data file, stopping at files beyond `max_ids`.
///
/// Errors: object storage unreachable is retryable ([`Error::retryable`]);
/// an `event_id` column that is not `fixed[16]`, or data files that are not
/// Parquet, are [`Error::Incompatible`].
pub async fn recent_event_ids(
    table: &Table,
    max_appends: usize,
    max_ids: usize,
) -> Result<RecentIds> {
    let name = table.identifier().to_string();
    let metadata = table.metadata();
    let Some(current) = metadata.current_snapshot() else {
        return Ok(RecentIds::empty());
    };
    if max_appends == 0 || max_ids == 0 {
        return Ok(RecentIds::empty());
    }
    let schema = metadata.current_schema();
    let event_id = schema
        .field_by_name(EVENT_ID)
        .ok_or_else(|| Error::Incompatible {
            table: name.clone(),
            reason: format!("no {EVENT_ID} column"),
        })?;
    if *event_id.field_type != Type::Primitive(PrimitiveType::Fixed(EVENT_ID_BYTES as u64)) {
        return Err(Error::Incompatible {
            table: name,
            reason: format!(
                "column {EVENT_ID} has type {}, expected fixed[{EVENT_ID_BYTES}]",
                event_id.field_type
            ),
        });
    }

    let list = table
        .manifest_list_reader(current)
        .load()
        .await
        .map_err(|e| context(e, format!("reading the manifest list of {name}")))?;
    let groups = group_by_snapshot(list.entries(), |id| {
        metadata
            .snapshot_by_id(id)
            .map(|s| s.summary().operation.clone())
    });

    // Newest group first; stop as soon as no older group can change the window.
    let name_ref = &name;
    let mut loaded = futures::stream::iter(groups.iter())
        .map(|group| async move {
            let manifests =
                futures::future::try_join_all(group.manifests.iter().map(|m| async move {
                    m.load_manifest(table.file_io()).await.map_err(|e| {
                        context(
                            e,
                            format!("reading manifest {} of {name_ref}", m.manifest_path),
                        )
                    })
                }))
                .await?;
            Ok::<_, Error>((group, manifests))
        })
        .buffered(READ_CONCURRENCY);
    let mut planner = Planner::new(max_appends);
    let mut next = 1;
    while let Some((group, manifests)) = loaded.try_next().await? {
        let entries = facts(name_ref, &manifests)?;
        planner.add(group, &entries);
        if planner.complete(groups.get(next).map(|g| g.seq)) {
            break;
        }
        next += 1;
    }
    drop(loaded);

    let (files, appends) = planner.plan();
    let (files, capped) = take_within_cap(files, max_ids);
    let (ids, files_read, cut) = read_event_ids(table, &name, event_id.id, &files, max_ids).await?;
    let covered: HashSet<i64> = files[..files_read]
        .iter()
        .flat_map(|f| f.covers.iter().copied())
        .collect();
    Ok(RecentIds {
        ids,
        appends: appends.iter().filter(|s| covered.contains(s)).count(),
        capped: capped || cut,
    })
}

/// The manifests one snapshot added to the branch.
#[derive(Debug, PartialEq)]
struct Group<'a> {
    snapshot_id: i64,
    seq: i64,
    append: bool,
    manifests: Vec<&'a ManifestFile>,
}

/// The data manifests of `list` grouped by the snapshot that added them,
/// newest first. `listed_operation` gives the operation of a snapshot the
/// catalog lists (None: not listed).
fn group_by_snapshot<'a>(
    list: &'a [ManifestFile],
    listed_operation: impl Fn(i64) -> Option<Operation>,
) -> Vec<Group<'a>> {
    let mut by_snapshot: HashMap<i64, (i64, Vec<&ManifestFile>)> = HashMap::new();
    for m in list
        .iter()
        .filter(|m| m.content == ManifestContentType::Data)
    {
        let (seq, manifests) = by_snapshot
            .entry(m.added_snapshot_id)
            .or_insert((m.sequence_number, Vec::new()));
        *seq = (*seq).max(m.sequence_number);
        manifests.push(m);
    }
    let mut groups: Vec<Group> = by_snapshot
        .into_iter()
        .map(|(snapshot_id, (seq, manifests))| Group {
            snapshot_id,
            seq,
            append: is_append(listed_operation(snapshot_id), &manifests),
            manifests,
        })
        .collect();
    groups.sort_by_key(|g| std::cmp::Reverse((g.seq, g.snapshot_id)));
    groups
}

/// An append, by its summary if the catalog lists it, else by the manifests
/// it added: a plain append records no existing or deleted files (an
/// unknown count is taken as none, so such a snapshot is read).
fn is_append(listed: Option<Operation>, added_manifests: &[&ManifestFile]) -> bool {
    match listed {
        Some(op) => op == Operation::Append,
        None => added_manifests.iter().all(|m| {
            m.existing_files_count.unwrap_or(0) == 0 && m.deleted_files_count.unwrap_or(0) == 0
        }),
    }
}

/// A data file.
#[derive(Debug, Clone, PartialEq)]
struct FileRef {
    path: String,
    size: u64,
    rows: u64,
}

/// What one manifest entry says.
#[derive(Debug, Clone, PartialEq)]
struct Fact {
    status: ManifestStatus,
    snapshot_id: Option<i64>,
    /// Data sequence number: that of the append that wrote the file.
    seq: Option<i64>,
    file: FileRef,
}

/// The data-file entries of `manifests`; refuses data files we cannot read.
fn facts(table: &str, manifests: &[Manifest]) -> Result<Vec<Fact>> {
    let mut out = Vec::new();
    for entry in manifests.iter().flat_map(|m| m.entries()) {
        if entry.content_type() != DataContentType::Data {
            continue;
        }
        if entry.file_format() != DataFileFormat::Parquet {
            return Err(Error::Incompatible {
                table: table.to_owned(),
                reason: format!(
                    "data file {} is {:?}; only Parquet is read",
                    entry.file_path(),
                    entry.file_format()
                ),
            });
        }
        out.push(Fact {
            status: entry.status(),
            snapshot_id: entry.snapshot_id(),
            seq: entry.sequence_number(),
            file: FileRef {
                path: entry.file_path().to_owned(),
                size: entry.file_size_in_bytes(),
                rows: entry.record_count(),
            },
        });
    }
    Ok(out)
}

/// What a sequence number belongs to.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// An append (its id, unless only seen through a replace's deletes).
    Append(Option<i64>),
    /// A replace or other non-append.
    Other,
}

/// A data file to read and the appends (snapshot sequence numbers) whose rows it holds.
#[derive(Debug, Clone, PartialEq)]
struct PlannedFile {
    file: FileRef,
    /// Newest first.
    covers: Vec<i64>,
}

/// Collects groups newest first and decides which files hold the rows of
/// the newest appends. Everything is keyed by sequence number, which is
/// unique per snapshot and survives manifest rewrites.
#[derive(Debug, Default)]
struct Planner {
    max_appends: usize,
    kinds: BTreeMap<i64, Kind>,
    /// (adder's seq, file) of files still live.
    added: Vec<(i64, FileRef)>,
    /// (replace's seq, file) of files a non-append wrote.
    rewritten: Vec<(i64, FileRef)>,
    /// (replace's seq, seq of a file it removed).
    removed: Vec<(i64, i64)>,
}

impl Planner {
    fn new(max_appends: usize) -> Self {
        Self {
            max_appends,
            ..Self::default()
        }
    }

    fn add(&mut self, group: &Group<'_>, entries: &[Fact]) {
        let kind = if group.append {
            Kind::Append(Some(group.snapshot_id))
        } else {
            Kind::Other
        };
        // The group is authoritative about its own sequence number.
        self.kinds.insert(group.seq, kind);
        for e in entries {
            let own = e.snapshot_id == Some(group.snapshot_id);
            match (e.status, e.seq) {
                (ManifestStatus::Added, _) if own && group.append => {
                    self.added.push((group.seq, e.file.clone()));
                }
                (ManifestStatus::Added, _) if own => {
                    self.rewritten.push((group.seq, e.file.clone()));
                }
                // Kept by a rewritten manifest (or added under another id):
                // still the adder's file.
                (ManifestStatus::Added | ManifestStatus::Existing, Some(seq)) => {
                    self.kinds.entry(seq).or_insert(Kind::Append(e.snapshot_id));
                    self.added.push((seq, e.file.clone()));
                }
                (ManifestStatus::Deleted, Some(seq)) if !group.append => {
                    self.kinds.entry(seq).or_insert(Kind::Append(None));
                    self.removed.push((group.seq, seq));
                }
                _ => {}
            }
        }
    }

    /// The window's appends so far, newest first.
    fn appends(&self) -> impl Iterator<Item = i64> + '_ {
        self.kinds
            .iter()
            .rev()
            .filter(|(_, k)| matches!(k, Kind::Append(_)))
            .map(|(seq, _)| *seq)
            .take(self.max_appends)
    }

    /// Whether groups from `next_seq` down can no longer change the window:
    /// an append is seen in its own group or in a newer replace's manifests.
    fn complete(&self, next_seq: Option<i64>) -> bool {
        let Some(next_seq) = next_seq else {
            return true;
        };
        self.appends().count() == self.max_appends
            && self
                .appends()
                .last()
                .is_some_and(|oldest| oldest > next_seq)
    }

    /// Files to read, newest append first, and the appends chosen.
    fn plan(self) -> (Vec<PlannedFile>, Vec<i64>) {
        let chosen: BTreeSet<i64> = self.appends().collect();
        // Which chosen appends each non-append's output holds, oldest
        // replace first so that a rewrite of a rewrite inherits.
        let mut covers: BTreeMap<i64, BTreeSet<i64>> = BTreeMap::new();
        let mut removed = self.removed.clone();
        removed.sort_unstable();
        for (replace, seq) in removed {
            let inherited: Vec<i64> = if chosen.contains(&seq) {
                vec![seq]
            } else {
                covers
                    .get(&seq)
                    .map(|c| c.iter().copied().collect())
                    .unwrap_or_default()
            };
            covers.entry(replace).or_default().extend(inherited);
        }
        let mut seen = HashSet::new();
        let mut files: Vec<PlannedFile> = self
            .added
            .into_iter()
            .filter(|(seq, _)| chosen.contains(seq))
            .map(|(seq, file)| PlannedFile {
                file,
                covers: vec![seq],
            })
            .chain(self.rewritten.into_iter().filter_map(|(replace, file)| {
                let c = covers.get(&replace).filter(|c| !c.is_empty())?;
                Some(PlannedFile {
                    file,
                    covers: c.iter().rev().copied().collect(),
                })
            }))
            .filter(|f| seen.insert(f.file.path.clone()))
            .collect();
        files.sort_by_key(|f| std::cmp::Reverse(f.covers.first().copied()));
        (files, chosen.into_iter().rev().collect())
    }
}

/// The leading files whose rows reach `max_ids`, and whether any were left out
/// (or the last one will be cut).
fn take_within_cap(files: Vec<PlannedFile>, max_ids: usize) -> (Vec<PlannedFile>, bool) {
    let max = max_ids as u64;
    let mut total = 0u64;
    let mut taken = Vec::new();
    let mut left_out = false;
    for file in files {
        if total >= max {
            left_out = true;
            break;
        }
        total += file.file.rows;
        taken.push(file);
    }
    (taken, left_out || total > max)
}

/// Up to `max_ids` event ids of `files`, in file order; also how many files
/// were (at least partly) used and whether ids were left unread.
async fn read_event_ids(
    table: &Table,
    name: &str,
    event_id_field: i32,
    files: &[PlannedFile],
    max_ids: usize,
) -> Result<(FixedSizeBinaryArray, usize, bool)> {
    let schema = table.metadata().current_schema().clone();
    let reader = table
        .reader_builder()
        .with_data_file_concurrency_limit(1)
        .with_row_group_filtering_enabled(false)
        .build();
    // `buffered` yields in file order, so the cap cuts the oldest append.
    let mut per_file = futures::stream::iter(files.iter())
        .map(|planned| {
            let file = &planned.file;
            let read = read_data_file(
                &reader,
                schema.clone(),
                FileToRead {
                    path: &file.path,
                    size: file.size,
                    rows: file.rows,
                },
                vec![event_id_field],
            );
            async move {
                let batches = read.await.map_err(|e| {
                    context(e, format!("reading {EVENT_ID} of {} ({name})", file.path))
                })?;
                Ok::<_, Error>((file, batches))
            }
        })
        .buffered(READ_CONCURRENCY);

    let planned = files.iter().map(|f| f.file.rows).sum::<u64>();
    let capacity = usize::try_from(planned).map_or(max_ids, |n| n.min(max_ids));
    let mut ids = FixedSizeBinaryBuilder::with_capacity(capacity, EVENT_ID_BYTES);
    let mut count = 0usize;
    let mut used = 0usize;
    while let Some((file, batches)) = per_file.try_next().await? {
        for column in batches.iter().filter_map(|b| b.columns().first()) {
            if column.data_type() != &DataType::FixedSizeBinary(EVENT_ID_BYTES) {
                return Err(Error::Incompatible {
                    table: name.to_owned(),
                    reason: format!(
                        "{EVENT_ID} of {} reads as {}, expected FixedSizeBinary({EVENT_ID_BYTES})",
                        file.path,
                        column.data_type()
                    ),
                });
            }
            for id in column.as_fixed_size_binary().iter().flatten() {
                if count == max_ids {
                    return Ok((ids.finish(), used + 1, true));
                }
                ids.append_value(id).map_err(|e| Error::Incompatible {
                    table: name.to_owned(),
                    reason: format!("{EVENT_ID} of {}: {e}", file.path),
                })?;
                count += 1;
            }
        }
        used += 1;
    }
    Ok((ids.finish(), used, false))
}

/// `e` with what we were doing in front, keeping its kind and retryability.
fn context(e: iceberg::Error, doing: String) -> Error {
    let retryable = e.retryable();
    iceberg::Error::new(e.kind(), doing)
        .with_retryable(retryable)
        .with_source(e)
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(snapshot: i64, seq: i64, added: u32, existing: u32, deleted: u32) -> ManifestFile {
        ManifestFile {
            manifest_path: format!("s3://b/t/metadata/m-{snapshot}-{seq}-{added}.avro"),
            manifest_length: 1,
            partition_spec_id: 0,
            content: ManifestContentType::Data,
            sequence_number: seq,
            min_sequence_number: seq,
            added_snapshot_id: snapshot,
            added_files_count: Some(added),
            existing_files_count: Some(existing),
            deleted_files_count: Some(deleted),
            added_rows_count: Some(u64::from(added) * 10),
            existing_rows_count: Some(0),
            deleted_rows_count: Some(0),
            partitions: None,
            key_metadata: None,
            first_row_id: None,
        }
    }

    fn summary(groups: &[Group<'_>]) -> Vec<(i64, bool, usize)> {
        groups
            .iter()
            .map(|g| (g.snapshot_id, g.append, g.manifests.len()))
            .collect()
    }

    #[test]
    fn groups_are_newest_first_and_judged() {
        let mut deletes = manifest(66, 6, 1, 0, 0);
        deletes.content = ManifestContentType::Deletes;
        // Manifest list order says nothing; sequence numbers do. 33 rewrote
        // files (it records existing and deleted ones).
        let list = [
            manifest(11, 1, 1, 0, 0),
            manifest(33, 3, 1, 0, 0),
            manifest(22, 2, 2, 0, 0),
            manifest(44, 4, 1, 0, 0),
            manifest(33, 3, 0, 5, 2),
            deletes,
        ];
        assert_eq!(
            summary(&group_by_snapshot(&list, |_| None)),
            [(44, true, 1), (33, false, 2), (22, true, 1), (11, true, 1)]
        );
        // A listed snapshot is judged by its summary.
        let op = |id| match id {
            44 => Some(Operation::Replace),
            33 => Some(Operation::Append),
            _ => None,
        };
        let list = [manifest(33, 3, 1, 0, 0), manifest(44, 4, 1, 0, 0)];
        assert_eq!(
            summary(&group_by_snapshot(&list, op)),
            [(44, false, 1), (33, true, 1)]
        );
        // Unknown counts: read.
        let mut m = manifest(11, 1, 1, 0, 0);
        (m.existing_files_count, m.deleted_files_count) = (None, None);
        assert!(group_by_snapshot(&[m], |_| None)[0].append);
    }

    fn group(snapshot_id: i64, seq: i64, append: bool) -> Group<'static> {
        Group {
            snapshot_id,
            seq,
            append,
            manifests: Vec::new(),
        }
    }

    fn fact(status: ManifestStatus, snapshot_id: i64, seq: i64, path: &str) -> Fact {
        Fact {
            status,
            snapshot_id: Some(snapshot_id),
            seq: Some(seq),
            file: FileRef {
                path: path.to_owned(),
                size: 100,
                rows: 10,
            },
        }
    }

    fn added(snapshot_id: i64, seq: i64, path: &str) -> Fact {
        fact(ManifestStatus::Added, snapshot_id, seq, path)
    }

    fn paths(files: &[PlannedFile]) -> Vec<&str> {
        files.iter().map(|f| f.file.path.as_str()).collect()
    }

    #[test]
    fn newest_appends_and_an_early_stop() {
        let mut planner = Planner::new(2);
        planner.add(
            &group(55, 5, true),
            &[added(55, 5, "e1"), added(55, 5, "e2")],
        );
        assert!(!planner.complete(Some(4)));
        planner.add(&group(44, 4, true), &[added(44, 4, "d")]);
        // Two appends newer than anything left: done.
        assert!(planner.complete(Some(3)));
        let (files, appends) = planner.plan();
        assert_eq!(paths(&files), ["e1", "e2", "d"]);
        assert_eq!(appends, [5, 4]);

        // A table with fewer appends than asked is read to its end.
        let mut planner = Planner::new(5);
        planner.add(&group(11, 1, true), &[added(11, 1, "a")]);
        assert!(!planner.complete(Some(0)));
        assert!(planner.complete(None));
    }

    #[test]
    fn a_replace_does_not_count_but_its_rewrite_of_the_window_is_read() {
        use ManifestStatus::{Deleted, Existing};
        // Appends 1..=4 (a, b, c, d), then replace 5 rewrote c (seq 3) and a
        // (seq 1) into r, keeping d and b; its rewritten manifests name them.
        // Then append 6 (f).
        let mut planner = Planner::new(3);
        planner.add(&group(66, 6, true), &[added(66, 6, "f")]);
        planner.add(
            &group(55, 5, false),
            &[
                added(55, 5, "r"),
                fact(Deleted, 55, 3, "c"),
                fact(Deleted, 55, 1, "a"),
                fact(Existing, 44, 4, "d"),
                fact(Existing, 22, 2, "b"),
            ],
        );
        // Seen so far: 6, 4, 3 (from the delete), 2, 1: the window (6, 4, 3)
        // cannot change any more.
        assert!(planner.complete(Some(2)));
        let (files, appends) = planner.plan();
        assert_eq!(appends, [6, 4, 3]);
        assert_eq!(paths(&files), ["f", "d", "r"]);
        assert_eq!(files[2].covers, [3]);
    }

    #[test]
    fn a_replace_outside_the_window_is_not_read() {
        use ManifestStatus::Deleted;
        let mut planner = Planner::new(2);
        planner.add(&group(77, 7, true), &[added(77, 7, "g")]);
        planner.add(&group(66, 6, true), &[added(66, 6, "f")]);
        planner.add(
            &group(55, 5, false),
            &[added(55, 5, "r"), fact(Deleted, 55, 1, "a")],
        );
        let (files, appends) = planner.plan();
        assert_eq!(appends, [7, 6]);
        assert_eq!(paths(&files), ["g", "f"]);
    }

    #[test]
    fn a_rewrite_of_a_rewrite_inherits_what_it_holds() {
        use ManifestStatus::Deleted;
        // Replace 3 rewrote append 2's file into r1; replace 4 rewrote r1 into r2.
        let mut planner = Planner::new(2);
        planner.add(
            &group(44, 4, false),
            &[added(44, 4, "r2"), fact(Deleted, 44, 3, "r1")],
        );
        planner.add(&group(33, 3, false), &[fact(Deleted, 33, 2, "b")]);
        planner.add(&group(11, 1, true), &[added(11, 1, "a")]);
        let (files, appends) = planner.plan();
        assert_eq!(appends, [2, 1]);
        assert_eq!(paths(&files), ["r2", "a"]);
        assert_eq!(files[0].covers, [2]);
    }

    fn planned(rows: u64) -> PlannedFile {
        PlannedFile {
            file: FileRef {
                path: format!("s3://b/{rows}.parquet"),
                size: 100,
                rows,
            },
            covers: vec![1],
        }
    }

    #[test]
    fn the_cap_stops_at_the_file_that_reaches_it() {
        let files = vec![planned(10), planned(10), planned(10)];
        let (taken, capped) = take_within_cap(files.clone(), 30);
        assert_eq!((taken.len(), capped), (3, false));
        let (taken, capped) = take_within_cap(files.clone(), 20);
        assert_eq!((taken.len(), capped), (2, true));
        let (taken, capped) = take_within_cap(files.clone(), 15);
        assert_eq!((taken.len(), capped), (2, true));
        let (taken, capped) = take_within_cap(files, 1000);
        assert_eq!((taken.len(), capped), (3, false));
    }

    #[test]
    fn context_keeps_kind_and_retryability() {
        let e = iceberg::Error::new(iceberg::ErrorKind::Unexpected, "connection refused");
        let wrapped = context(e, "reading manifest m of logs.t".into());
        assert!(wrapped.retryable());
        let text = format!("{wrapped}");
        assert!(text.contains("reading manifest m of logs.t"), "{text}");
        let e = iceberg::Error::new(iceberg::ErrorKind::DataInvalid, "bad avro");
        assert!(!context(e, "x".into()).retryable());
    }
}
