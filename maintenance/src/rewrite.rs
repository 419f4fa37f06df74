//! rewrite: one group's files read back through iceberg-rust's Arrow reader,
//! sorted by the table's sort order, and written as new data files in the
//! table's current spec (not committed: [`crate::Maintainer::replace_files`]
//! swaps them in).

use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMicrosecondType;
use arrow_array::{Array, RecordBatch};
use futures::{StreamExt, TryStreamExt};
use iceberg::spec::DataFile;
use iceberg::table::Table;
use tlake_catalog_client::SortBy;
use tlake_catalog_client::read::{FileToRead, read_data_file};
use tlake_catalog_client::schema::{EVENT_TIME, SERVICE};
use tlake_catalog_client::write::{Part, Written, write_files};

use crate::{MaintainError, RewriteGroup};

/// Rows per batch handed to the writer after sorting.
const SORTED_BATCH_ROWS: usize = 64 * 1024;
/// Small files read at once.
const READ_CONCURRENCY: usize = 4;

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
}
