//! A result, written as an aligned table, CSV, JSON lines or a Parquet file.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use duckdb::arrow::record_batch::RecordBatch;
use duckdb::arrow::util::display::{ArrayFormatter, FormatOptions};
use duckdb::arrow::util::pretty::pretty_format_batches;

/// How a result is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// An aligned table with a row count (for people).
    Table,
    /// CSV with a header row; NULL is an empty field, nested values as DuckDB shows them.
    Csv,
    /// One JSON object per row.
    Jsonl,
    /// A Parquet file (needs --output).
    Parquet,
}

/// Writes `batches` as `format` to `out`; Parquet goes to `file` instead,
/// which it needs.
pub fn write(
    batches: &[RecordBatch],
    format: Format,
    out: &mut dyn Write,
    file: Option<&Path>,
) -> Result<()> {
    match format {
        Format::Table => table(batches, out),
        Format::Csv => csv(batches, out),
        Format::Jsonl => jsonl(batches, out),
        Format::Parquet => {
            let Some(file) = file else {
                bail!("--format parquet writes a file: give it with --output PATH");
            };
            parquet(batches, file)
        }
    }
}

fn table(batches: &[RecordBatch], out: &mut dyn Write) -> Result<()> {
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    if batches.is_empty() {
        return writeln!(out, "(no result)").map_err(Into::into);
    }
    writeln!(out, "{}", pretty_format_batches(batches)?)?;
    writeln!(out, "{rows} row{}", if rows == 1 { "" } else { "s" })?;
    Ok(())
}

/// Cells through arrow's display formatter, so maps, lists and timestamps
/// are written (arrow's own CSV writer refuses nested types).
fn csv(batches: &[RecordBatch], out: &mut dyn Write) -> Result<()> {
    let mut writer = ::csv::Writer::from_writer(out);
    let Some(first) = batches.first() else {
        return Ok(());
    };
    writer.write_record(first.schema().fields().iter().map(|f| f.name().as_str()))?;
    let options = FormatOptions::default().with_null("");
    for batch in batches {
        let columns = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        for row in 0..batch.num_rows() {
            writer.write_record(columns.iter().map(|c| c.value(row).to_string()))?;
        }
    }
    writer.flush()?;
    Ok(())
}

fn jsonl(batches: &[RecordBatch], out: &mut dyn Write) -> Result<()> {
    let mut writer = arrow_json::LineDelimitedWriter::new(out);
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    writer.write_batches(&refs)?;
    writer.finish()?;
    Ok(())
}

fn parquet(batches: &[RecordBatch], path: &Path) -> Result<()> {
    let Some(first) = batches.first() else {
        bail!(
            "the statement returned no result to write to {}",
            path.display()
        );
    };
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
        .build();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, first.schema(), Some(props))?;
    for batch in batches {
        writer.write(batch)?;
    }
    writer.close()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use duckdb::arrow::array::{Int64Array, StringArray};
    use duckdb::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch() -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new("s", DataType::Utf8, true),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(StringArray::from(vec![Some("a,b"), None])),
            ],
        )
        .unwrap()
    }

    fn text(format: Format) -> String {
        let mut out = Vec::new();
        write(&[batch()], format, &mut out, None).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn csv_quotes_and_writes_null_empty() {
        assert_eq!(text(Format::Csv), "n,s\n1,\"a,b\"\n2,\n");
    }

    #[test]
    fn jsonl_is_one_object_per_row() {
        assert_eq!(text(Format::Jsonl), "{\"n\":1,\"s\":\"a,b\"}\n{\"n\":2}\n");
    }

    #[test]
    fn table_counts_rows() {
        let t = text(Format::Table);
        assert!(t.contains("| a,b |"), "{t}");
        assert!(t.ends_with("2 rows\n"), "{t}");
    }

    #[test]
    fn parquet_needs_a_file_and_round_trips() {
        let mut out = Vec::new();
        let err = write(&[batch()], Format::Parquet, &mut out, None).unwrap_err();
        assert!(err.to_string().contains("--output"), "{err}");
        let path = std::env::temp_dir().join(format!(
            "tlake-out-{}.parquet",
            uuid::Uuid::new_v4().simple()
        ));
        write(&[batch()], Format::Parquet, &mut out, Some(&path)).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(&path).unwrap(),
        )
        .unwrap()
        .build()
        .unwrap();
        let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
        assert_eq!(rows, 2);
        std::fs::remove_file(path).ok();
    }
}
