//! write: flushed rows → Parquet (zstd) data files through iceberg-rust's
//! writers, one or more per day partition, so field ids, partition values
//! and column metrics come out right (the compactor's flush and the
//! maintenance rewrite). Nothing is committed here.

use std::sync::Arc;

use crate::error::{Error, Result};
use arrow_array::{ArrayRef, RecordBatch, new_null_array};
use iceberg::arrow::{RecordBatchPartitionSplitter, schema_to_arrow_schema};
use iceberg::spec::{DataFile, DataFileFormat, Literal, PartitionKey, Struct, Transform};
use iceberg::table::Table;
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::file_writer::location_generator::{
    DefaultFileNameGenerator, DefaultLocationGenerator,
};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::partitioning::PartitioningWriter;
use iceberg::writer::partitioning::fanout_writer::FanoutWriter;
use iceberg::writer::{IcebergWriter, IcebergWriterBuilder};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use tlake_proto::contract::columns::logs::{
    ATTRIBUTES, BODY, EVENT_ID, EVENT_TIME, OBSERVED_TIME, RESOURCE, SPAN_ID, TRACE_ID,
};

/// What was written.
#[derive(Debug, Default)]
pub struct Written {
    /// Data files to commit.
    pub files: Vec<DataFile>,
    /// Rows written.
    pub rows: u64,
    /// Bytes of Parquet written.
    pub bytes: u64,
}

/// The Parquet settings of every data file we write (public for the hot-path
/// harness). zstd level 1: with the encodings below, level 3 saved under 0.1 B/event
/// (synthetic and loghub) for ~8 % more compactor CPU (BENCHMARKS.md).
pub fn writer_properties() -> WriterProperties {
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(1).expect("valid level"),
        ))
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_max_row_group_row_count(Some(1 << 20));
    // Nearly unique per row: a dictionary only costs time before Parquet
    // gives up on it.
    for column in [EVENT_ID, EVENT_TIME, OBSERVED_TIME, TRACE_ID, SPAN_ID, BODY] {
        props = props.set_column_dictionary_enabled(ColumnPath::from(column), false);
    }
    // Bounds of free text and of map entries prune nothing worth their
    // cost (a string comparison per value).
    let map_entry =
        |map: &str, part: &str| vec![map.to_owned(), "key_value".to_owned(), part.to_owned()];
    for path in [
        vec![BODY.to_owned()],
        vec![TRACE_ID.to_owned()],
        vec![SPAN_ID.to_owned()],
        map_entry(ATTRIBUTES, "key"),
        map_entry(ATTRIBUTES, "value"),
        map_entry(RESOURCE, "key"),
        map_entry(RESOURCE, "value"),
    ] {
        props =
            props.set_column_statistics_enabled(ColumnPath::from(path), EnabledStatistics::None);
    }
    // Times are near-sorted within a part: a few bits per value instead of
    // eight bytes (1.6 → 0.1 B/event each after zstd).
    for column in [EVENT_TIME, OBSERVED_TIME] {
        props = props.set_column_encoding(ColumnPath::from(column), Encoding::DELTA_BINARY_PACKED);
    }
    // Free-form values (ids, counters): the dictionary grows until Parquet
    // gives up on it; zstd finds the repeats anyway.
    props = props
        .set_column_dictionary_enabled(ColumnPath::from(map_entry(ATTRIBUTES, "value")), false);
    props.build()
}

/// Converts `batch` to the table's Arrow schema, column by name (the
/// table's field ids travel in the schema metadata). Columns the table has
/// but we do not fill become nulls.
pub fn conform(batch: &RecordBatch, target: &arrow_schema::SchemaRef) -> Result<RecordBatch> {
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(target.fields().len());
    for field in target.fields() {
        let column = match batch.column_by_name(field.name()) {
            Some(c) => tlake_record_reader::rows::fit(c.clone(), field).map_err(|reason| {
                Error::Convert {
                    column: field.name().clone(),
                    reason,
                }
            })?,
            None => new_null_array(field.data_type(), batch.num_rows()),
        };
        columns.push(column);
    }
    RecordBatch::try_new(target.clone(), columns).map_err(|e| Error::Convert {
        column: "*".into(),
        reason: e.to_string(),
    })
}

/// Rows to write.
#[derive(Debug, Clone)]
pub struct Part {
    /// Days since 1970-01-01 (UTC) of every row's event time, when known:
    /// lets a table partitioned by `day(event_time)` skip per-row splitting.
    pub day: Option<i32>,
    /// The rows (in the table's layout or convertible to it).
    pub rows: RecordBatch,
}

/// The partition key of `day` when the table is partitioned by exactly
/// `day(event_time)` (ours), else `None`.
fn day_key(metadata: &iceberg::spec::TableMetadata, day: i32) -> Option<PartitionKey> {
    let spec = metadata.default_partition_spec();
    let schema = metadata.current_schema();
    let event_time = schema.field_by_name(EVENT_TIME)?.id;
    match spec.fields() {
        [field] if field.transform == Transform::Day && field.source_id == event_time => {
            Some(PartitionKey::new(
                spec.as_ref().clone(),
                schema.clone(),
                Struct::from_iter([Some(Literal::date(day))]),
            ))
        }
        _ => None,
    }
}

/// Writes `parts` into new data files of `table`, named after `flush_id`
/// (unique per flush: no two flushes share a file name; a retried write of
/// the same flush writes the same rows under the same names). Parts
/// are taken one at a time, so they can be built as they are written.
pub async fn write_files(
    table: &Table,
    parts: impl IntoIterator<Item = Result<Part>>,
    flush_id: &str,
    target_file_bytes: u64,
) -> Result<Written> {
    let metadata = table.metadata();
    let schema = metadata.current_schema().clone();
    let arrow_schema = Arc::new(schema_to_arrow_schema(&schema)?);
    let spec = metadata.default_partition_spec().clone();
    let rolling = RollingFileWriterBuilder::new(
        ParquetWriterBuilder::new(writer_properties(), schema.clone()),
        usize::try_from(target_file_bytes).unwrap_or(usize::MAX),
        table.file_io().clone(),
        DefaultLocationGenerator::new(metadata)?,
        DefaultFileNameGenerator::new(flush_id.to_owned(), None, DataFileFormat::Parquet),
    );
    let builder = DataFileWriterBuilder::new(rolling);
    let mut rows = 0u64;
    let parts = parts
        .into_iter()
        .filter(|p| p.as_ref().map_or(true, |p| p.rows.num_rows() > 0));
    let files = if spec.is_unpartitioned() {
        let mut writer = builder.build(None).await?;
        for part in parts {
            let batch = conform(&part?.rows, &arrow_schema)?;
            rows += batch.num_rows() as u64;
            writer.write(batch).await?;
        }
        writer.close().await?
    } else {
        let splitter = RecordBatchPartitionSplitter::try_new_with_computed_values(schema, spec)?;
        let mut writer = FanoutWriter::new(builder);
        for part in parts {
            let part = part?;
            let batch = conform(&part.rows, &arrow_schema)?;
            rows += batch.num_rows() as u64;
            match part.day.and_then(|day| day_key(metadata, day)) {
                Some(key) => writer.write(key, batch).await?,
                // Not our partition spec, or rows of several days.
                None => {
                    for (key, split) in splitter.split(&batch)? {
                        writer.write(key, split).await?;
                    }
                }
            }
        }
        writer.close().await?
    };
    let bytes = files.iter().map(|f| f.file_size_in_bytes()).sum();
    Ok(Written { files, rows, bytes })
}
