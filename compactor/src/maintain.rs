//! maintain: table maintenance (ARCHITECTURE §3), run by
//! `tlake-compactor maintain`, table by table:
//!
//! 0. retention — when `maintenance.retention` bounds the stream, its `day`
//!    partitions older than the bound are dropped by one metadata-only
//!    `delete` commit (`tlake-catalog-client`), which carries the Kafka
//!    offsets forward; first, so that nothing about to go is rewritten;
//! 1. rewrite — the small data files of a partition (below
//!    `maintenance.small_file_bytes`, partitions with at least `min_files`)
//!    are read with iceberg-rust's Arrow reader, sorted by (service,
//!    event_time), written with [`crate::write::write_files`], and swapped in
//!    with one `replace` commit (`tlake-catalog-client`), which carries the Kafka
//!    offsets forward;
//! 2. merge — when the current snapshot lists more than
//!    `maintenance.max_manifests` data manifests, their live entries are
//!    written into one manifest by a `replace` snapshot without data change
//!    (`tlake-catalog-client`), so flush-per-commit manifests (and those the rewrite
//!    left holding only deleted entries) do not pile up;
//! 3. expire — snapshots older than `snapshot_max_age_ms` leave the catalog
//!    (`remove-snapshots`; Nessie lists only the current snapshot, so there
//!    its history is expired in step 4);
//! 4. orphans — objects under the table's location that no retained version
//!    references, and older than the grace period, are deleted.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMicrosecondType;
use arrow_array::{Array, RecordBatch};
use futures::{StreamExt, TryStreamExt};
use iceberg::ErrorKind;
use iceberg::spec::{DataFile, Struct};
use iceberg::table::Table;
use tlake_catalog_client::maintenance::{
    DropPlan, ExpireReport, LiveFile, MergeOutcome, OrphanPolicy, OrphanReport, ReplaceOutcome,
    Retention, RetentionOutcome, live_data_files, manifest_counts,
};
use tlake_catalog_client::read::{FileToRead, read_data_file};
use tlake_catalog_client::schema::{EVENT_TIME, SERVICE};
use tlake_catalog_client::{LakeCatalog, SortBy};

use crate::config::{Config, ConfigError, MaintenanceConfig};
use crate::write::{Part, WriteError, Written, write_files};

/// Rows per batch handed to the writer after sorting.
const SORTED_BATCH_ROWS: usize = 64 * 1024;
/// Small files read at once.
const READ_CONCURRENCY: usize = 4;

/// What to maintain.
#[derive(Debug, Clone, Default)]
pub struct MaintainOptions {
    /// One table; all tables of the namespace when `None`.
    pub table: Option<String>,
    /// Plan and report only: write, commit and delete nothing.
    pub dry_run: bool,
    /// Also rewrite the files written under an older partition spec into
    /// the table's current one (a partition change applies to new files
    /// only until this is asked for).
    pub relayout: bool,
}

/// Why maintenance stopped.
#[derive(Debug, thiserror::Error)]
pub enum MaintainError {
    /// Bad configuration or missing credentials.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `--table` names no table of the namespace.
    #[error("table {namespace}.{table} does not exist")]
    NoSuchTable {
        /// Namespace.
        namespace: String,
        /// The name given.
        table: String,
    },
    /// The catalog or storage failed (or refused).
    #[error(transparent)]
    Catalog(#[from] tlake_catalog_client::Error),
    /// Writing the rewritten files failed.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// Reading a small file failed, or its rows do not add up.
    #[error("rewriting {table}: {reason}")]
    Rewrite {
        /// Table.
        table: String,
        /// What went wrong.
        reason: String,
    },
}

/// One partition's files (small ones, or ones of an older partition spec),
/// rewritten by one replace commit.
#[derive(Debug, Clone, PartialEq)]
pub struct RewriteGroup {
    /// The partition tuple.
    pub partition: Struct,
    /// The files to read and replace.
    pub files: Vec<DataFile>,
}

impl RewriteGroup {
    /// Bytes of the small files.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(DataFile::file_size_in_bytes).sum()
    }

    /// Rows of the small files.
    pub fn rows(&self) -> u64 {
        self.files.iter().map(DataFile::record_count).sum()
    }
}

/// What the rewrite step did to one table.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RewriteReport {
    /// Partition groups found worth rewriting.
    pub groups: usize,
    /// Small files replaced (dry run: that would be).
    pub files_before: usize,
    /// Their bytes.
    pub bytes_before: u64,
    /// Files written in their place.
    pub files_after: usize,
    /// Their bytes.
    pub bytes_after: u64,
    /// Rows moved.
    pub rows: u64,
    /// Replace commits made.
    pub commits: usize,
    /// 409s absorbed by the commits.
    pub conflicts: u32,
    /// Groups given up because their files changed under us.
    pub abandoned: usize,
    /// Groups whose commit outcome stayed unknown.
    pub unknown: usize,
}

/// What the retention step did to one table.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RetentionReport {
    /// The stream's bound in days (None: it keeps every event).
    pub days: Option<i64>,
    /// Whether the table has day partitions to drop at all.
    pub partitioned: bool,
    /// What was dropped (dry run: would be; unknown outcome: was tried).
    pub dropped: DropPlan,
    /// Delete commits made (0 or 1).
    pub commits: usize,
    /// 409s absorbed by the commit.
    pub conflicts: u32,
    /// Whether the commit outcome stayed unknown.
    pub unknown: bool,
}

impl fmt::Display for RetentionReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(days) = self.days else {
            return write!(f, "retention: none set, every event is kept");
        };
        if !self.partitioned {
            return write!(
                f,
                "retention: {days} day(s), but the table is not partitioned by event time; nothing dropped"
            );
        }
        let d = &self.dropped;
        let range = match d.day_range() {
            Some((first, last)) if first == last => format!(" ({first})"),
            Some((first, last)) => format!(" ({first} .. {last})"),
            None => String::new(),
        };
        write!(
            f,
            "retention: {days} day(s): {} day partition(s){range} dropped, files {}, rows {}, bytes {}, commits {}, conflicts retried {}, unknown {}",
            d.days.len(),
            d.files.len(),
            d.rows,
            d.bytes,
            self.commits,
            self.conflicts,
            u8::from(self.unknown)
        )
    }
}

/// What the manifest merge step did to one table.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MergeReport {
    /// Manifests the current snapshot listed before.
    pub manifests_before: usize,
    /// Manifests after (dry run or nothing due: the same).
    pub manifests_after: usize,
    /// Whether a merge was due (more data manifests than `max_manifests`).
    pub due: bool,
    /// Merge commits made (0 or 1).
    pub commits: usize,
    /// 409s absorbed by the commit.
    pub conflicts: u32,
    /// Whether the commit outcome stayed unknown.
    pub unknown: bool,
}

/// What maintenance did to one table.
#[derive(Debug, Clone)]
pub struct TableReport {
    /// Table name.
    pub table: String,
    /// Whether anything was changed.
    pub dry_run: bool,
    /// Step 0.
    pub retention: RetentionReport,
    /// Step 1a, when asked for (`--relayout`).
    pub relayout: Option<RewriteReport>,
    /// Step 1b.
    pub rewrite: RewriteReport,
    /// Step 2.
    pub merge: MergeReport,
    /// Step 3.
    pub expire: ExpireReport,
    /// Step 4.
    pub orphans: OrphanReport,
}

impl fmt::Display for RewriteReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} partition group(s), files {} -> {}, bytes {} -> {}, rows {}, commits {}, conflicts retried {}, abandoned {}, unknown {}",
            self.groups,
            self.files_before,
            self.files_after,
            self.bytes_before,
            self.bytes_after,
            self.rows,
            self.commits,
            self.conflicts,
            self.abandoned,
            self.unknown
        )
    }
}

impl fmt::Display for TableReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.rewrite;
        let o = &self.orphans;
        let would = if self.dry_run { " (dry run)" } else { "" };
        writeln!(f, "table {}{would}", self.table)?;
        writeln!(f, "  {}", self.retention)?;
        if let Some(relayout) = &self.relayout {
            writeln!(f, "  relayout (older partition specs): {relayout}")?;
        }
        writeln!(f, "  rewrite: {r}")?;
        let m = &self.merge;
        writeln!(
            f,
            "  merge manifests: manifests {} -> {}, {}, commits {}, conflicts retried {}, unknown {}",
            m.manifests_before,
            m.manifests_after,
            if m.due { "due" } else { "not due" },
            m.commits,
            m.conflicts,
            u8::from(m.unknown)
        )?;
        writeln!(
            f,
            "  expire: catalog lists {} snapshot(s), expired {}; table versions {} found, {} retained",
            self.expire.listed,
            self.expire.expired.len(),
            o.versions,
            o.versions_retained
        )?;
        let orphan_bytes: u64 = o.orphans.iter().map(|x| x.size).sum();
        write!(
            f,
            "  orphans: {} object(s) listed, {} referenced, {} orphan(s) ({} bytes) older than the grace, {} deleted, {} younger left alone",
            o.objects,
            o.referenced,
            o.orphans.len(),
            orphan_bytes,
            o.deleted,
            o.too_young
        )
    }
}

/// What one pass did: a report per table done, an error per table that
/// failed (one table's failure does not stop the others).
#[derive(Debug, Default)]
pub struct MaintainRun {
    /// Tables maintained.
    pub reports: Vec<TableReport>,
    /// Tables that failed, with why.
    pub failed: Vec<(String, MaintainError)>,
}

/// Runs maintenance on `options.table` (or every table of the namespace).
/// `Err` only when nothing could start (configuration, catalog, an unknown
/// `--table`).
pub async fn maintain(
    config: &Config,
    options: &MaintainOptions,
) -> Result<MaintainRun, MaintainError> {
    let settings = crate::catalog_settings(config)?;
    config.maintenance.check_grace(settings.request_timeout)?;
    let catalog = LakeCatalog::connect(&settings).await?;
    let tables = match &options.table {
        Some(table) => vec![table.clone()],
        None => catalog.list_tables().await?,
    };
    let mut run = MaintainRun::default();
    for table in tables {
        match maintain_table(&catalog, &config.maintenance, &table, options).await {
            Ok(report) => run.reports.push(report),
            Err(e @ MaintainError::NoSuchTable { .. }) if options.table.is_some() => return Err(e),
            Err(e) => run.failed.push((table, e)),
        }
    }
    Ok(run)
}

/// The five steps on one table (six with `relayout`).
pub async fn maintain_table(
    catalog: &LakeCatalog,
    settings: &MaintenanceConfig,
    table: &str,
    options: &MaintainOptions,
) -> Result<TableReport, MaintainError> {
    let dry_run = options.dry_run;
    // A clear error for a wrong name, before anything else.
    if let Err(e) = catalog.load_table(table).await {
        return Err(match e {
            tlake_catalog_client::Error::Iceberg(ref i) if i.kind() == ErrorKind::TableNotFound => {
                MaintainError::NoSuchTable {
                    namespace: catalog.namespace().to_url_string(),
                    table: table.to_owned(),
                }
            }
            e => e.into(),
        });
    }
    let retention = drop_expired_days(catalog, settings, table, dry_run).await?;
    // Before the small files: what it writes is small files of the current
    // spec, merged by the next step.
    let relayout = match options.relayout {
        true => Some(rewrite_older_specs(catalog, settings, table, dry_run).await?),
        false => None,
    };
    let rewrite = rewrite_small_files(catalog, settings, table, dry_run).await?;
    // After the rewrite, so that its manifests are merged too.
    let merge = merge_manifests(catalog, settings, table, dry_run).await?;
    let versions = Retention {
        max_age: Duration::from_millis(settings.snapshot_max_age_ms),
        keep_last: settings.keep_snapshots,
    };
    let expire = catalog.expire_snapshots(table, versions, dry_run).await?;
    let orphans = catalog
        .remove_orphans(
            table,
            OrphanPolicy {
                retention: versions,
                grace: Duration::from_millis(settings.orphan_grace_ms),
                dry_run,
            },
        )
        .await?;
    Ok(TableReport {
        table: table.to_owned(),
        dry_run,
        retention,
        relayout,
        rewrite,
        merge,
        expire,
        orphans,
    })
}

/// The first day a table bounded to `days` keeps, as days since 1970-01-01
/// (UTC) at `now`: a day partition goes once all of it is older than `days`.
pub fn first_kept_day(now: SystemTime, days: i64) -> i32 {
    let today = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400);
    i32::try_from(i64::try_from(today).unwrap_or(i64::MAX) - days).unwrap_or(i32::MIN)
}

/// Step 0 on one table: the day partitions past the stream's retention
/// dropped by one delete commit (dry run: only planned).
pub async fn drop_expired_days(
    catalog: &LakeCatalog,
    settings: &MaintenanceConfig,
    table: &str,
    dry_run: bool,
) -> Result<RetentionReport, MaintainError> {
    let Some(days) = settings.retention.days_for(table) else {
        return Ok(RetentionReport::default());
    };
    let mut report = RetentionReport {
        days: Some(days),
        partitioned: true,
        ..Default::default()
    };
    let loaded = catalog.load_table(table).await?;
    let before = first_kept_day(SystemTime::now(), days);
    match catalog.drop_days_before(&loaded, before, dry_run).await? {
        RetentionOutcome::NotPartitionedByTime => report.partitioned = false,
        RetentionOutcome::NothingToDrop => {}
        RetentionOutcome::WouldDrop(plan) => report.dropped = plan,
        RetentionOutcome::Committed {
            plan, conflicts, ..
        } => {
            report.dropped = plan;
            report.commits = 1;
            report.conflicts = conflicts;
        }
        RetentionOutcome::Unknown { plan } => {
            tracing::warn!(
                table,
                "retention commit outcome unknown; the next run drops what is still there"
            );
            report.dropped = plan;
            report.unknown = true;
        }
    }
    Ok(report)
}

/// Step 2 on one table: one merge commit when more than
/// `settings.max_manifests` data manifests are listed (dry run: only says
/// whether one is due).
pub async fn merge_manifests(
    catalog: &LakeCatalog,
    settings: &MaintenanceConfig,
    table: &str,
    dry_run: bool,
) -> Result<MergeReport, MaintainError> {
    if dry_run {
        let loaded = catalog.load_table(table).await?;
        let (all, data) = manifest_counts(&loaded).await?;
        return Ok(MergeReport {
            manifests_before: all,
            manifests_after: all,
            due: data > settings.max_manifests,
            ..Default::default()
        });
    }
    Ok(
        match catalog
            .merge_manifests(table, settings.max_manifests)
            .await?
        {
            MergeOutcome::NotNeeded { manifests } => MergeReport {
                manifests_before: manifests,
                manifests_after: manifests,
                ..Default::default()
            },
            MergeOutcome::Committed {
                before,
                after,
                conflicts,
                ..
            } => MergeReport {
                manifests_before: before,
                manifests_after: after,
                due: true,
                commits: 1,
                conflicts,
                unknown: false,
            },
            MergeOutcome::Unknown { before } => {
                tracing::warn!(
                    table,
                    "manifest merge outcome unknown; the next run merges if still due"
                );
                MergeReport {
                    manifests_before: before,
                    manifests_after: before,
                    due: true,
                    unknown: true,
                    ..Default::default()
                }
            }
        },
    )
}

/// Step 1a on one table (asked for by `--relayout`): every group
/// [`plan_relayout`] finds, one replace commit each.
pub async fn rewrite_older_specs(
    catalog: &LakeCatalog,
    settings: &MaintenanceConfig,
    table: &str,
    dry_run: bool,
) -> Result<RewriteReport, MaintainError> {
    rewrite_planned(catalog, settings, table, dry_run, plan_relayout).await
}

/// Step 1b on one table: every group [`plan_rewrites`] finds, one replace
/// commit each.
pub async fn rewrite_small_files(
    catalog: &LakeCatalog,
    settings: &MaintenanceConfig,
    table: &str,
    dry_run: bool,
) -> Result<RewriteReport, MaintainError> {
    rewrite_planned(catalog, settings, table, dry_run, plan_rewrites).await
}

/// Plans `table`'s groups with `plan` (its live files, the default spec
/// id), rewrites each (read, sort by the table's order, write in its
/// current spec) and replaces its files with one commit per group.
async fn rewrite_planned(
    catalog: &LakeCatalog,
    settings: &MaintenanceConfig,
    table: &str,
    dry_run: bool,
    plan: fn(&[LiveFile], i32, &MaintenanceConfig) -> Vec<RewriteGroup>,
) -> Result<RewriteReport, MaintainError> {
    let mut loaded = catalog.load_table(table).await?;
    let files = live_data_files(&loaded).await?;
    let groups = plan(
        &files,
        loaded.metadata().default_partition_spec_id(),
        settings,
    );
    let mut report = RewriteReport {
        groups: groups.len(),
        ..Default::default()
    };
    for group in groups {
        if dry_run {
            report.files_before += group.files.len();
            report.bytes_before += group.bytes();
            report.rows += group.rows();
            continue;
        }
        let written = rewrite_group(&loaded, &group, settings.target_file_bytes).await?;
        match catalog
            .replace_files(&loaded, &group.files, &written.files)
            .await?
        {
            ReplaceOutcome::Committed { conflicts, .. } => {
                report.commits += 1;
                report.conflicts += conflicts;
                report.files_before += group.files.len();
                report.bytes_before += group.bytes();
                report.files_after += written.files.len();
                report.bytes_after += written.bytes;
                report.rows += written.rows;
            }
            ReplaceOutcome::Abandoned { reason } => {
                tracing::warn!(table, %reason, "rewrite abandoned; its files are left to orphan cleanup");
                report.abandoned += 1;
            }
            ReplaceOutcome::Unknown => {
                tracing::warn!(
                    table,
                    "rewrite commit outcome unknown; the next run reconciles"
                );
                report.unknown += 1;
            }
        }
        loaded = catalog.load_table(table).await?;
    }
    Ok(report)
}

/// Groups of small files worth rewriting: live files of the default spec
/// below `small_file_bytes`, by partition, cut into chunks of at most
/// `max_rewrite_bytes`, each with at least `min_files` files. Deterministic
/// (files by path, groups by their first path).
pub fn plan_rewrites(
    files: &[LiveFile],
    default_spec_id: i32,
    settings: &MaintenanceConfig,
) -> Vec<RewriteGroup> {
    let mut by_partition: HashMap<&Struct, Vec<&DataFile>> = HashMap::new();
    for file in files {
        let f = &file.data_file;
        if file.partition_spec_id == default_spec_id
            && f.file_size_in_bytes() < settings.small_file_bytes
        {
            by_partition.entry(f.partition()).or_default().push(f);
        }
    }
    let mut groups: Vec<RewriteGroup> = by_partition
        .into_iter()
        .flat_map(|(partition, files)| chunks(partition, files, settings.max_rewrite_bytes))
        .collect();
    groups.retain(|g| g.files.len() >= settings.min_files);
    groups.sort_by(|a, b| a.files[0].file_path().cmp(b.files[0].file_path()));
    groups
}

/// Groups of the live files written under another partition spec than
/// `default_spec_id` — every one, whatever its size — by (spec, partition),
/// cut into chunks of at most `max_rewrite_bytes`. Their rewrite is split
/// by the current spec (e.g. a day's file into hour files). Deterministic.
pub fn plan_relayout(
    files: &[LiveFile],
    default_spec_id: i32,
    settings: &MaintenanceConfig,
) -> Vec<RewriteGroup> {
    let mut by_partition: HashMap<(i32, &Struct), Vec<&DataFile>> = HashMap::new();
    for file in files {
        if file.partition_spec_id != default_spec_id {
            let f = &file.data_file;
            by_partition
                .entry((file.partition_spec_id, f.partition()))
                .or_default()
                .push(f);
        }
    }
    let mut groups: Vec<RewriteGroup> = by_partition
        .into_iter()
        .flat_map(|((_, partition), files)| chunks(partition, files, settings.max_rewrite_bytes))
        .collect();
    groups.sort_by(|a, b| a.files[0].file_path().cmp(b.files[0].file_path()));
    groups
}

/// One partition's `files`, by path, cut into groups of at most
/// `max_bytes` (a file larger than that is a group of its own).
fn chunks(partition: &Struct, mut files: Vec<&DataFile>, max_bytes: u64) -> Vec<RewriteGroup> {
    files.sort_by(|a, b| a.file_path().cmp(b.file_path()));
    let mut groups = Vec::new();
    let mut chunk: Vec<DataFile> = Vec::new();
    let mut bytes = 0u64;
    for file in files {
        if !chunk.is_empty() && bytes + file.file_size_in_bytes() > max_bytes {
            groups.push(RewriteGroup {
                partition: partition.clone(),
                files: std::mem::take(&mut chunk),
            });
            bytes = 0;
        }
        bytes += file.file_size_in_bytes();
        chunk.push(file.clone());
    }
    groups.push(RewriteGroup {
        partition: partition.clone(),
        files: chunk,
    });
    groups
}

/// Reads `group`'s files, sorts the rows, and writes them as new data files
/// (not committed). Fails if the rows read are not the rows the manifests list.
pub async fn rewrite_group(
    table: &Table,
    group: &RewriteGroup,
    target_file_bytes: u64,
) -> Result<Written, MaintainError> {
    let name = table.identifier().to_string();
    let batches = read_files(table, &group.files).await?;
    let read: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
    if read != group.rows() {
        return Err(MaintainError::Rewrite {
            table: name,
            reason: format!(
                "read {read} rows but the manifests list {} for {} files",
                group.rows(),
                group.files.len()
            ),
        });
    }
    let sort = SortBy::of(table.metadata());
    let sorted = sort_rows(&batches, sort).map_err(|reason| MaintainError::Rewrite {
        table: name.clone(),
        reason,
    })?;
    let id = format!("rewrite-{}", uuid::Uuid::now_v7());
    // One partition's files: the spec's splitter sorts out the day.
    let parts = sorted.into_iter().map(|rows| Ok(Part { day: None, rows }));
    let written = write_files(table, parts, &id, target_file_bytes).await?;
    if written.rows != read {
        return Err(MaintainError::Rewrite {
            table: name,
            reason: format!("wrote {} rows of {read}", written.rows),
        });
    }
    Ok(written)
}

/// Every row of `files`, in the table's current schema, through
/// iceberg-rust's Arrow reader (field ids, evolution) with one hand-made
/// scan task per file.
pub async fn read_files(
    table: &Table,
    files: &[DataFile],
) -> Result<Vec<RecordBatch>, MaintainError> {
    let schema = table.metadata().current_schema().clone();
    let field_ids: Vec<i32> = schema.as_struct().fields().iter().map(|f| f.id).collect();
    let reader = table
        .reader_builder()
        .with_row_group_filtering_enabled(false)
        .build();
    let per_file = futures::stream::iter(files.iter())
        .map(|file| {
            let read = read_data_file(
                &reader,
                schema.clone(),
                FileToRead {
                    path: file.file_path(),
                    size: file.file_size_in_bytes(),
                    rows: file.record_count(),
                },
                field_ids.clone(),
            );
            let path = file.file_path().to_owned();
            async move {
                read.await.map_err(|e| MaintainError::Rewrite {
                    table: table.identifier().to_string(),
                    reason: format!("reading {path}: {e}"),
                })
            }
        })
        .buffered(READ_CONCURRENCY);
    let per_file: Vec<Vec<RecordBatch>> = per_file.try_collect().await?;
    Ok(per_file.into_iter().flatten().collect())
}

/// The rows of `batches` ordered by `sort` — (service, event_time) or
/// (event_time), nulls first: the table's sort order — in batches of at
/// most [`SORTED_BATCH_ROWS`]. Tables without those columns (dead letters)
/// keep their order.
pub fn sort_rows(batches: &[RecordBatch], sort: SortBy) -> Result<Vec<RecordBatch>, String> {
    let batches: Vec<&RecordBatch> = batches.iter().filter(|b| b.num_rows() > 0).collect();
    let Some(first) = batches.first() else {
        return Ok(Vec::new());
    };
    let schema = first.schema();
    if batches.iter().any(|b| b.schema() != schema) {
        return Err("the files read do not share one schema".into());
    }
    let keys = batches
        .iter()
        .map(|b| {
            let service = b.column_by_name(SERVICE)?.as_string_opt::<i32>()?;
            let time = b
                .column_by_name(EVENT_TIME)?
                .as_primitive_opt::<TimestampMicrosecondType>()?;
            Some((service, time))
        })
        .collect::<Option<Vec<_>>>();
    let mut order: Vec<(usize, usize)> = batches
        .iter()
        .enumerate()
        .flat_map(|(b, batch)| (0..batch.num_rows()).map(move |r| (b, r)))
        .collect();
    if let Some(keys) = &keys {
        let key = |&(b, r): &(usize, usize)| {
            let (service, time) = keys[b];
            (
                (sort == SortBy::ServiceTime && service.is_valid(r)).then(|| service.value(r)),
                time.is_valid(r).then(|| time.value(r)),
            )
        };
        order.sort_by(|x, y| key(x).cmp(&key(y)));
    }
    order
        .chunks(SORTED_BATCH_ROWS)
        .map(|chunk| {
            arrow_select::interleave::interleave_record_batch(&batches, chunk)
                .map_err(|e| format!("gathering sorted rows: {e}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{Int64Array, StringArray, TimestampMicrosecondArray};
    use arrow_schema::{DataType, Field, Schema, TimeUnit};
    use iceberg::spec::{DataContentType, DataFileBuilder, Literal};

    use super::*;

    fn batch(services: &[Option<&str>], times: &[i64], ids: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new(SERVICE, DataType::Utf8, true),
            Field::new(
                EVENT_TIME,
                DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
                false,
            ),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(ids.to_vec())),
                Arc::new(StringArray::from(services.to_vec())),
                Arc::new(TimestampMicrosecondArray::from(times.to_vec()).with_timezone("+00:00")),
            ],
        )
        .expect("batch")
    }

    #[test]
    fn a_day_goes_once_all_of_it_is_older_than_the_bound() {
        // 2026-12-03 23:59:59 UTC is day 20_790 + 86_399 s.
        let day = 20_790_u64;
        let late = UNIX_EPOCH + Duration::from_secs(day * 86_400 + 86_399);
        let early = UNIX_EPOCH + Duration::from_secs(day * 86_400);
        // One day kept: the previous day's events are at most ~2 days old at
        // the end of today and at least 1 day old at its start.
        assert_eq!(first_kept_day(late, 1), 20_789);
        assert_eq!(first_kept_day(early, 1), 20_789);
        assert_eq!(first_kept_day(early, 30), 20_760);
    }

    #[test]
    fn rows_are_sorted_by_the_tables_order_across_batches() {
        let a = batch(&[Some("s"), Some("c"), None], &[5, 9, 7], &[1, 2, 3]);
        let b = batch(&[Some("c"), Some("s")], &[1, 2], &[4, 5]);
        let sorted = sort_rows(&[a.clone(), b.clone()], SortBy::ServiceTime).expect("sort");
        assert_eq!(sorted.len(), 1);
        let ids = sorted[0]
            .column(0)
            .as_primitive::<arrow_array::types::Int64Type>();
        // null service first, then c@1, c@9, s@2, s@5.
        assert_eq!(ids.values().to_vec(), vec![3, 4, 2, 5, 1]);
        // By time alone: c@1, s@2, s@5, null@7, c@9.
        let by_time = sort_rows(&[a, b], SortBy::Time).expect("sort");
        let time_ids = by_time[0]
            .column(0)
            .as_primitive::<arrow_array::types::Int64Type>();
        assert_eq!(time_ids.values().to_vec(), vec![4, 5, 1, 3, 2]);
    }

    #[test]
    fn tables_without_sort_columns_keep_their_order() {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let b = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![3, 1, 2]))])
            .expect("batch");
        let out = sort_rows(std::slice::from_ref(&b), SortBy::ServiceTime).expect("sort");
        assert_eq!(out, vec![b]);
        assert!(
            sort_rows(&[], SortBy::ServiceTime)
                .expect("empty")
                .is_empty()
        );
    }

    fn file(path: &str, day: i32, size: u64, spec: i32) -> LiveFile {
        LiveFile {
            data_file: DataFileBuilder::default()
                .content(DataContentType::Data)
                .file_path(path.to_owned())
                .file_format(iceberg::spec::DataFileFormat::Parquet)
                .partition(Struct::from_iter([Some(Literal::int(day))]))
                .record_count(10)
                .file_size_in_bytes(size)
                .partition_spec_id(spec)
                .build()
                .expect("data file"),
            partition_spec_id: spec,
        }
    }

    fn settings() -> MaintenanceConfig {
        MaintenanceConfig {
            small_file_bytes: 100,
            min_files: 2,
            target_file_bytes: 1 << 20,
            max_rewrite_bytes: 250,
            ..MaintenanceConfig::default()
        }
    }

    fn paths(groups: &[RewriteGroup]) -> Vec<Vec<&str>> {
        groups
            .iter()
            .map(|g| g.files.iter().map(|f| f.file_path()).collect())
            .collect()
    }

    #[test]
    fn only_partitions_with_enough_small_files_are_rewritten() {
        let files = [
            file("d1/b", 1, 50, 0),
            file("d1/a", 1, 50, 0),
            file("d1/big", 1, 500, 0), // not small
            file("d2/a", 2, 50, 0),    // alone in its partition
            file("d2/old", 2, 50, 7),  // another spec
            file("d3/a", 3, 99, 0),
            file("d3/b", 3, 99, 0),
        ];
        let groups = plan_rewrites(&files, 0, &settings());
        assert_eq!(
            paths(&groups),
            vec![vec!["d1/a", "d1/b"], vec!["d3/a", "d3/b"]]
        );
        assert_eq!(groups[0].bytes(), 100);
        assert_eq!(groups[0].rows(), 20);
    }

    #[test]
    fn large_partitions_are_cut_at_the_rewrite_bound() {
        let files: Vec<LiveFile> = (0..7).map(|i| file(&format!("d1/{i}"), 1, 90, 0)).collect();
        // 250 bytes per group: 2 files each; the last single file is left.
        let groups = plan_rewrites(&files, 0, &settings());
        assert_eq!(
            paths(&groups),
            vec![
                vec!["d1/0", "d1/1"],
                vec!["d1/2", "d1/3"],
                vec!["d1/4", "d1/5"]
            ]
        );
    }

    #[test]
    fn relayout_takes_every_file_of_other_specs_by_spec_and_partition() {
        let files = [
            file("d1/new", 1, 50, 2),  // the current spec: left alone
            file("d1/old", 1, 500, 0), // large, but of an older spec
            file("h1/x", 1, 90, 1),    // same partition value, another old spec
            file("h1/y", 1, 90, 1),
            file("h1/z", 1, 90, 1),
            file("d2/old", 2, 10, 0), // alone: still rewritten
        ];
        let groups = plan_relayout(&files, 2, &settings());
        assert_eq!(
            paths(&groups),
            vec![
                vec!["d1/old"],
                vec!["d2/old"],
                vec!["h1/x", "h1/y"],
                vec!["h1/z"]
            ]
        );
        assert!(plan_relayout(&files[..1], 2, &settings()).is_empty());
    }
}
