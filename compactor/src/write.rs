//! write: flushed rows → Parquet (zstd) data files through iceberg-rust's
//! writers, one or more per day partition, so field ids, partition values
//! and column metrics come out right. Nothing is committed here.

use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, new_null_array};
use arrow_cast::cast;
use iceberg::arrow::{RecordBatchPartitionSplitter, schema_to_arrow_schema};
use iceberg::spec::{DataFile, DataFileFormat};
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
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};

/// Writing failed (storage unreachable, or rows that do not fit the table).
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// From iceberg-rust (storage, partitioning, Parquet).
    #[error("writing data files: {0}")]
    Iceberg(#[from] iceberg::Error),
    /// A buffered column cannot be converted to the table's type.
    #[error("column {column} cannot be converted to the table's type: {reason}")]
    Convert {
        /// Column name.
        column: String,
        /// Why.
        reason: String,
    },
}

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

fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(3).expect("valid level"),
        ))
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_max_row_group_row_count(Some(1 << 20))
        .build()
}

/// Converts DuckDB's Arrow output to the table's Arrow schema, column by
/// column and by name (the table's field ids travel in the schema metadata).
/// Columns the table has but we do not fill become nulls.
pub fn conform(
    batch: &RecordBatch,
    target: &arrow_schema::SchemaRef,
) -> Result<RecordBatch, WriteError> {
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(target.fields().len());
    for field in target.fields() {
        let column = match batch.column_by_name(field.name()) {
            Some(c) if c.data_type() == field.data_type() => c.clone(),
            Some(c) => cast(c, field.data_type()).map_err(|e| WriteError::Convert {
                column: field.name().clone(),
                reason: e.to_string(),
            })?,
            None => new_null_array(field.data_type(), batch.num_rows()),
        };
        columns.push(column);
    }
    RecordBatch::try_new(target.clone(), columns).map_err(|e| WriteError::Convert {
        column: "*".into(),
        reason: e.to_string(),
    })
}

/// Writes `batches` into new data files of `table`, named after `flush_id`
/// (unique per flush, so a retried flush never reuses a file name).
pub async fn write_files(
    table: &Table,
    batches: &[RecordBatch],
    flush_id: &str,
    target_file_bytes: u64,
) -> Result<Written, WriteError> {
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
    let files = if spec.is_unpartitioned() {
        let mut writer = builder.build(None).await?;
        for batch in batches.iter().filter(|b| b.num_rows() > 0) {
            let batch = conform(batch, &arrow_schema)?;
            rows += batch.num_rows() as u64;
            writer.write(batch).await?;
        }
        writer.close().await?
    } else {
        let splitter = RecordBatchPartitionSplitter::try_new_with_computed_values(schema, spec)?;
        let mut writer = FanoutWriter::new(builder);
        for batch in batches.iter().filter(|b| b.num_rows() > 0) {
            let batch = conform(batch, &arrow_schema)?;
            rows += batch.num_rows() as u64;
            for (key, part) in splitter.split(&batch)? {
                writer.write(key, part).await?;
            }
        }
        writer.close().await?
    };
    let bytes = files.iter().map(|f| f.file_size_in_bytes()).sum();
    Ok(Written { files, rows, bytes })
}
