//! read: the rows of chosen data files, through iceberg-rust's Arrow reader
//! with one hand-made scan task per file — field ids and schema evolution
//! are resolved as in a table scan, while the list of files stays the
//! caller's (a scan cannot be limited to "the files snapshot X added" or
//! "these small files").

use arrow_array::RecordBatch;
use futures::{StreamExt, TryStreamExt};
use iceberg::arrow::ArrowReader;
use iceberg::scan::FileScanTask;
use iceberg::spec::{DataFileFormat, SchemaRef};

/// A Parquet data file to read.
#[derive(Debug, Clone, Copy)]
pub struct FileToRead<'a> {
    /// Its path.
    pub path: &'a str,
    /// Its size in bytes.
    pub size: u64,
    /// Its row count.
    pub rows: u64,
}

/// Every row of `file`, projected to `field_ids` of `schema`.
pub async fn read_data_file(
    reader: &ArrowReader,
    schema: SchemaRef,
    file: FileToRead<'_>,
    field_ids: Vec<i32>,
) -> iceberg::Result<Vec<RecordBatch>> {
    let task = FileScanTask::builder()
        .with_file_size_in_bytes(file.size)
        .with_start(0)
        .with_length(file.size)
        .with_record_count(Some(file.rows))
        .with_data_file_path(file.path.to_owned())
        .with_data_file_format(DataFileFormat::Parquet)
        .with_schema(schema)
        .with_project_field_ids(field_ids)
        .with_case_sensitive(true)
        .build();
    reader
        .clone()
        .read(futures::stream::once(async { Ok(task) }).boxed())?
        .stream()
        .try_collect()
        .await
}
