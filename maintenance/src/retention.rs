//! retention: the `delete` snapshot that drops whole day partitions older than a stream's
//! retention. Only manifests are written — no data file is read or rewritten — and the parent's
//! `tlake.*` summary (Kafka offsets, newest event time) is carried forward like every other
//! commit's. The dropped files stay on storage until expiry and orphan removal let them go, so
//! readers of a retained older version still find them.

use std::collections::{BTreeSet, HashSet};

use chrono::{DateTime, NaiveDate};
use iceberg::spec::{Literal, PrimitiveLiteral, Transform};
use iceberg::table::Table;
use uuid::Uuid;

use tlake_catalog_client::Result;
use tlake_catalog_client::schema::EVENT_TIME;

use super::*;

/// The live files a retention pass drops: those whose `day(event_time)`
/// (or `hour(event_time)`) partition lies wholly before a cutoff day.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DropPlan {
    /// The partitions' days (days since 1970-01-01, UTC).
    pub days: BTreeSet<i32>,
    /// The files' paths.
    pub files: Vec<String>,
    /// Their rows.
    pub rows: u64,
    /// Their bytes.
    pub bytes: u64,
}

impl DropPlan {
    /// Whether nothing is old enough to go.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The oldest and newest day dropped, as dates.
    pub fn day_range(&self) -> Option<(NaiveDate, NaiveDate)> {
        Some((
            day_to_date(*self.days.first()?),
            day_to_date(*self.days.last()?),
        ))
    }
}

/// A day (days since 1970-01-01) as a date.
pub fn day_to_date(day: i32) -> NaiveDate {
    DateTime::from_timestamp(i64::from(day) * 86_400, 0)
        .unwrap_or_default()
        .date_naive()
}

/// What [`Maintainer::drop_days_before`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetentionOutcome {
    /// No partition spec of the table partitions by event time (the
    /// dead-letter table): there are no whole days to drop.
    NotPartitionedByTime,
    /// No live file lies wholly before the cutoff.
    NothingToDrop,
    /// Dry run: what would go. Nothing was written.
    WouldDrop(DropPlan),
    /// The delete snapshot is in the table.
    Committed {
        /// What it dropped.
        plan: DropPlan,
        /// Its id (after an unknown outcome: the current snapshot's).
        snapshot_id: i64,
        /// 409s absorbed on the way (reload, re-plan, re-stage).
        conflicts: u32,
    },
    /// The catalog could not be reached to learn what happened. Dropping is
    /// idempotent: the next run re-plans and drops what is still there.
    Unknown {
        /// What the last attempt tried to drop.
        plan: DropPlan,
    },
}

/// The files of `files` (live in `table`) that lie wholly before `before_day`,
/// by their partition value; `None` when no partition spec of the table
/// partitions by `day` or `hour` of event time.
pub fn plan_drop(table: &Table, files: &[LiveFile], before_day: i32) -> Option<DropPlan> {
    let metadata = table.metadata();
    let event_time = metadata.current_schema().field_by_name(EVENT_TIME)?.id;
    // Per spec id: the position of its time field in the partition tuple,
    // and how a value of it becomes a day.
    let time_field = |spec_id: i32| {
        let spec = metadata.partition_spec_by_id(spec_id)?;
        spec.fields().iter().enumerate().find_map(|(i, f)| {
            (f.source_id == event_time)
                .then_some(())
                .and(match f.transform {
                    Transform::Day => Some((i, 1)),
                    Transform::Hour => Some((i, 24)),
                    _ => None,
                })
        })
    };
    let partitioned = metadata
        .partition_specs_iter()
        .any(|spec| time_field(spec.spec_id()).is_some());
    if !partitioned {
        return None;
    }
    let mut plan = DropPlan::default();
    for file in files {
        let Some((index, per_day)) = time_field(file.partition_spec_id) else {
            continue;
        };
        let day = match file.data_file.partition().fields().get(index) {
            Some(Some(Literal::Primitive(PrimitiveLiteral::Int(value)))) => {
                value.div_euclid(per_day)
            }
            _ => continue,
        };
        if day < before_day {
            plan.days.insert(day);
            plan.files.push(file.data_file.file_path().to_owned());
            plan.rows += file.data_file.record_count();
            plan.bytes += file.data_file.file_size_in_bytes();
        }
    }
    Some(plan)
}

impl Maintainer {
    /// Drops every live file of `planned`'s table whose event-time partition
    /// lies wholly before `before_day` (days since 1970-01-01, UTC) with one
    /// `delete` snapshot on `main`, carrying the parent's `tlake.*` summary
    /// forward. `dry_run`: only plans.
    ///
    /// Requires `assert-ref-snapshot-id`, so a compactor append landing in
    /// between answers 409; then the table is reloaded and the drop
    /// re-planned on it (the append's rows stay; an append of old events is
    /// dropped with the rest), paced by the conflict policy. The append is
    /// never blocked beyond its own retry of the same 409.
    pub async fn drop_days_before(
        &self,
        planned: &Table,
        before_day: i32,
        dry_run: bool,
    ) -> Result<RetentionOutcome> {
        let name = planned.identifier().to_string();
        let commit_id = Uuid::now_v7();
        let mut table = planned.clone();
        let mut tries = Attempts::default();
        let mut tried: Option<DropPlan> = None;
        for attempt in 0u32.. {
            let files = match live_data_files(&table).await {
                Ok(files) => files,
                Err(e) if e.retryable() && tried.is_some() && tries.unknown > 0 => {
                    return Ok(RetentionOutcome::Unknown {
                        plan: tried.unwrap_or_default(),
                    });
                }
                Err(e) => return Err(e),
            };
            let Some(plan) = plan_drop(&table, &files, before_day) else {
                return Ok(RetentionOutcome::NotPartitionedByTime);
            };
            if plan.is_empty() {
                // After an unknown outcome, nothing left to drop means the
                // drop landed (or another run's did): the goal either way.
                return Ok(match tried {
                    Some(plan) if tries.unknown > 0 => RetentionOutcome::Committed {
                        plan,
                        snapshot_id: table.metadata().current_snapshot_id().unwrap_or_default(),
                        conflicts: tries.conflicts,
                    },
                    _ => RetentionOutcome::NothingToDrop,
                });
            }
            if dry_run {
                return Ok(RetentionOutcome::WouldDrop(plan));
            }
            let remove: HashSet<&str> = plan.files.iter().map(String::as_str).collect();
            let staged = self
                .stage_removal(&table, &remove, &[], Removal::Drop, (commit_id, attempt))
                .await?;
            let snapshot_id = staged.snapshot.snapshot_id();
            let post = self.post_staged(&table, staged, "delete").await?;
            if let Post::Applied = post {
                return Ok(RetentionOutcome::Committed {
                    plan,
                    snapshot_id,
                    conflicts: tries.conflicts,
                });
            }
            tried = Some(plan);
            if !tries.wait_to_retry(post, &name).await? {
                return Ok(RetentionOutcome::Unknown {
                    plan: tried.unwrap_or_default(),
                });
            }
            table = match self.catalog.load_table(planned.identifier().name()).await {
                Ok(t) => t,
                Err(e) if tries.unknown > 0 && e.retryable() => {
                    return Ok(RetentionOutcome::Unknown {
                        plan: tried.unwrap_or_default(),
                    });
                }
                Err(e) => return Err(e),
            };
        }
        Ok(RetentionOutcome::Unknown {
            plan: tried.unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_utc_dates() {
        assert_eq!(day_to_date(0).to_string(), "1970-01-01");
        assert_eq!(day_to_date(20_425).to_string(), "2025-12-03");
        let plan = DropPlan {
            days: BTreeSet::from([20_420, 20_425, 20_421]),
            ..Default::default()
        };
        let (first, last) = plan.day_range().expect("days");
        assert_eq!(
            (first.to_string(), last.to_string()),
            ("2025-11-28".into(), "2025-12-03".into())
        );
        assert_eq!(DropPlan::default().day_range(), None);
    }
}
