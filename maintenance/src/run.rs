//! run: the steps on one table, in order — retention, relayout (when
//! asked), small-file rewrite, manifest merge, snapshot expiry, orphans —
//! and a pass over every table of the namespace (one table's failure does
//! not stop the others).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use iceberg::ErrorKind;
use tlake_catalog_client::LakeCatalog;

use crate::{
    LiveFile, MaintainError, Maintainer, MergeOutcome, MergeReport, OrphanPolicy, ReplaceOutcome,
    Retention, RetentionOutcome, RetentionReport, RewriteGroup, RewriteReport, Settings,
    TableReport, live_data_files, manifest_counts, plan_relayout, plan_rewrites, rewrite_group,
};

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
    catalog: &LakeCatalog,
    settings: &Settings,
    options: &MaintainOptions,
) -> Result<MaintainRun, MaintainError> {
    settings.check_grace(catalog.request_timeout())?;
    let maintainer = Maintainer::new(catalog.clone());
    let tables = match &options.table {
        Some(table) => vec![table.clone()],
        None => catalog.list_tables().await?,
    };
    let mut run = MaintainRun::default();
    for table in tables {
        match maintain_table(&maintainer, settings, &table, options).await {
            Ok(report) => run.reports.push(report),
            Err(e @ MaintainError::NoSuchTable { .. }) if options.table.is_some() => return Err(e),
            Err(e) => run.failed.push((table, e)),
        }
    }
    Ok(run)
}

/// The five steps on one table (six with `relayout`).
pub async fn maintain_table(
    catalog: &Maintainer,
    settings: &Settings,
    table: &str,
    options: &MaintainOptions,
) -> Result<TableReport, MaintainError> {
    let dry_run = options.dry_run;
    // A clear error for a wrong name, before anything else.
    if let Err(e) = catalog.catalog().load_table(table).await {
        return Err(match e {
            tlake_catalog_client::Error::Iceberg(ref i) if i.kind() == ErrorKind::TableNotFound => {
                MaintainError::NoSuchTable {
                    namespace: catalog.catalog().namespace().to_url_string(),
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
    catalog: &Maintainer,
    settings: &Settings,
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
    let loaded = catalog.catalog().load_table(table).await?;
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
    catalog: &Maintainer,
    settings: &Settings,
    table: &str,
    dry_run: bool,
) -> Result<MergeReport, MaintainError> {
    if dry_run {
        let loaded = catalog.catalog().load_table(table).await?;
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
    catalog: &Maintainer,
    settings: &Settings,
    table: &str,
    dry_run: bool,
) -> Result<RewriteReport, MaintainError> {
    rewrite_planned(catalog, settings, table, dry_run, plan_relayout).await
}

/// Step 1b on one table: every group [`plan_rewrites`] finds, one replace
/// commit each.
pub async fn rewrite_small_files(
    catalog: &Maintainer,
    settings: &Settings,
    table: &str,
    dry_run: bool,
) -> Result<RewriteReport, MaintainError> {
    rewrite_planned(catalog, settings, table, dry_run, plan_rewrites).await
}

/// Plans `table`'s groups with `plan` (its live files, the default spec
/// id), rewrites each (read, sort by the table's order, write in its
/// current spec) and replaces its files with one commit per group.
async fn rewrite_planned(
    catalog: &Maintainer,
    settings: &Settings,
    table: &str,
    dry_run: bool,
    plan: fn(&[LiveFile], i32, &Settings) -> Vec<RewriteGroup>,
) -> Result<RewriteReport, MaintainError> {
    let mut loaded = catalog.catalog().load_table(table).await?;
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
        loaded = catalog.catalog().load_table(table).await?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
