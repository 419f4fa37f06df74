//! buffer: rows waiting to be flushed, and the flush query that runs in
//! DuckDB: drop ids already committed within a bounded recent window, keep
//! the first row of each event id, sort by (service, event_time).
//!
//! The decoded Arrow rows stay in memory as they are; only the columns the
//! query needs (row index, event id, service, event time) are appended to an
//! in-memory DuckDB table. The query returns row indices in output order and
//! the rows are gathered with Arrow's `interleave`. This keeps DuckDB's table
//! storage (string heaps, statistics) off the wide columns — bodies and
//! attribute maps — which profiling showed to be most of the flush cost.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Int64Array, RecordBatch};
use arrow_schema::{ArrowError, DataType, Field, Schema};
use duckdb::Connection;

use crate::decode::buffer_schema;

/// Failure inside DuckDB or Arrow (a bug or out of memory; not retryable).
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    /// From DuckDB.
    #[error("DuckDB buffer: {0}")]
    DuckDb(#[from] duckdb::Error),
    /// From Arrow.
    #[error("Arrow buffer: {0}")]
    Arrow(#[from] ArrowError),
}

/// Counters of one table's buffer.
#[derive(Debug, Default, Clone)]
pub struct TableStats {
    /// Rows buffered (duplicates included).
    pub rows: u64,
    /// Kafka payload bytes buffered.
    pub bytes: u64,
    /// When the oldest buffered row arrived.
    pub oldest: Option<Instant>,
    /// Newest event time buffered (µs).
    pub max_event_time_us: Option<i64>,
}

#[derive(Debug)]
struct TableBuffer {
    sql_name: String,
    stats: TableStats,
    /// Buffered rows in arrival order; row `i` overall has DuckDB `idx = i`.
    batches: Vec<RecordBatch>,
    next_idx: i64,
    flushes: i64,
}

/// All buffers of one compactor.
#[derive(Debug)]
pub struct Buffers {
    db: Connection,
    tables: HashMap<String, TableBuffer>,
    dedup_window_flushes: i64,
}

fn key_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("idx", DataType::Int64, false),
        Field::new("event_id", DataType::FixedSizeBinary(16), false),
        Field::new("service", DataType::Utf8, true),
        Field::new(
            "event_time",
            buffer_schema()
                .field_with_name("event_time")
                .expect("event_time")
                .data_type()
                .clone(),
            false,
        ),
    ]))
}

impl Buffers {
    /// An empty in-memory DuckDB.
    pub fn new(dedup_window_flushes: u32) -> Result<Self, BufferError> {
        let db = Connection::open_in_memory()?;
        Ok(Self {
            db,
            tables: HashMap::new(),
            dedup_window_flushes: i64::from(dedup_window_flushes.max(1)),
        })
    }

    fn table(&mut self, table: &str) -> Result<&mut TableBuffer, BufferError> {
        if !self.tables.contains_key(table) {
            let sql_name = format!("buf_{}", self.tables.len());
            self.db.execute_batch(&format!(
                "CREATE TABLE {sql_name} (idx BIGINT NOT NULL, event_id BLOB NOT NULL, \
                 service VARCHAR, event_time TIMESTAMP NOT NULL);\n\
                 CREATE TABLE {sql_name}_recent (event_id BLOB NOT NULL, flush BIGINT NOT NULL);"
            ))?;
            self.tables.insert(
                table.to_owned(),
                TableBuffer {
                    sql_name,
                    stats: TableStats::default(),
                    batches: Vec::new(),
                    next_idx: 0,
                    flushes: 0,
                },
            );
        }
        Ok(self.tables.get_mut(table).expect("just inserted"))
    }

    /// Appends decoded rows (in [`buffer_schema`] layout) for `table`.
    pub fn append(
        &mut self,
        table: &str,
        rows: RecordBatch,
        payload_bytes: u64,
        max_event_time_us: i64,
    ) -> Result<(), BufferError> {
        let n = rows.num_rows();
        if n == 0 {
            return Ok(());
        }
        let buffer = self.table(table)?;
        let idx = Int64Array::from_iter_values(buffer.next_idx..buffer.next_idx + n as i64);
        buffer.next_idx += n as i64;
        let column = |name: &str| rows.column_by_name(name).expect("buffer layout").clone();
        let keys = RecordBatch::try_new(
            key_schema(),
            vec![
                Arc::new(idx),
                column("event_id"),
                column("service"),
                column("event_time"),
            ],
        )?;
        buffer.batches.push(rows);
        let sql_name = buffer.sql_name.clone();
        let stats = &mut buffer.stats;
        stats.rows += n as u64;
        stats.bytes += payload_bytes;
        stats.oldest.get_or_insert_with(Instant::now);
        stats.max_event_time_us = Some(
            stats
                .max_event_time_us
                .map_or(max_event_time_us, |t| t.max(max_event_time_us)),
        );
        let mut appender = self.db.appender(&sql_name)?;
        appender.append_record_batch(keys)?;
        appender.flush()?;
        Ok(())
    }

    /// Tables with buffered rows and their counters.
    pub fn stats(&self) -> impl Iterator<Item = (&str, &TableStats)> {
        self.tables
            .iter()
            .filter(|(_, b)| b.stats.rows > 0)
            .map(|(n, b)| (n.as_str(), &b.stats))
    }

    /// The rows to write for `table`: deduplicated (first of each id, none
    /// already committed recently), sorted by (service, event_time).
    pub fn flush_rows(&mut self, table: &str) -> Result<Vec<RecordBatch>, BufferError> {
        let Some(buffer) = self.tables.get(table) else {
            return Ok(Vec::new());
        };
        if buffer.batches.is_empty() {
            return Ok(Vec::new());
        }
        let b = &buffer.sql_name;
        let sql = format!(
            "SELECT idx FROM {b} \
             WHERE event_id NOT IN (SELECT event_id FROM {b}_recent) \
             QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY idx) = 1 \
             ORDER BY service NULLS FIRST, event_time, idx"
        );
        let mut stmt = self.db.prepare(&sql)?;
        let order: Vec<RecordBatch> = stmt.query_arrow([])?.collect();
        // Row `idx` lives in the batch whose start is the last one ≤ idx.
        let mut starts = Vec::with_capacity(buffer.batches.len());
        let mut start = 0i64;
        for b in &buffer.batches {
            starts.push(start);
            start += b.num_rows() as i64;
        }
        let sources: Vec<&RecordBatch> = buffer.batches.iter().collect();
        // Gather straight from the buffered batches (no concatenated copy),
        // in output batches of up to 64K rows.
        const OUT_ROWS: usize = 1 << 16;
        let mut out = Vec::new();
        let mut picks: Vec<(usize, usize)> = Vec::with_capacity(OUT_ROWS);
        for chunk in order {
            let indices = chunk.column(0).as_primitive::<Int64Type>();
            for &idx in indices.values().iter() {
                let batch = starts.partition_point(|&s| s <= idx) - 1;
                picks.push((batch, (idx - starts[batch]) as usize));
                if picks.len() == OUT_ROWS {
                    out.push(arrow_select::interleave::interleave_record_batch(
                        &sources, &picks,
                    )?);
                    picks.clear();
                }
            }
        }
        if !picks.is_empty() {
            out.push(arrow_select::interleave::interleave_record_batch(
                &sources, &picks,
            )?);
        }
        Ok(out)
    }

    /// After a commit: remember the flushed ids (bounded window), empty the buffer.
    pub fn committed(&mut self, table: &str) -> Result<(), BufferError> {
        let window = self.dedup_window_flushes;
        let Some(buffer) = self.tables.get_mut(table) else {
            return Ok(());
        };
        buffer.flushes += 1;
        let b = buffer.sql_name.clone();
        let flush = buffer.flushes;
        buffer.stats = TableStats::default();
        buffer.batches.clear();
        buffer.next_idx = 0;
        self.db.execute_batch(&format!(
            "INSERT INTO {b}_recent SELECT DISTINCT event_id, {flush} FROM {b};\n\
             DELETE FROM {b}_recent WHERE flush <= {flush} - {window};\n\
             DELETE FROM {b};"
        ))?;
        Ok(())
    }

    /// Drops every buffered row (after a rebalance or fence); they will be
    /// read again from Kafka. The recent-id window is kept: those ids are committed.
    pub fn clear(&mut self) -> Result<(), BufferError> {
        for buffer in self.tables.values_mut() {
            buffer.stats = TableStats::default();
            buffer.batches.clear();
            buffer.next_idx = 0;
            self.db
                .execute_batch(&format!("DELETE FROM {};", buffer.sql_name))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    use prost::Message as _;
    use tlake_proto::v1::{AnyValue, KeyValue, LogBatch, LogEvent, Resource, any_value};

    use super::*;
    use crate::decode::{Origin, decode};

    fn rows(ids: &[u8], service: &str, offset: i64) -> RecordBatch {
        let batch = LogBatch {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(service.into())),
                    }),
                }],
            }),
            events: ids
                .iter()
                .map(|&id| LogEvent {
                    event_id: vec![id; 16].into(),
                    time_unix_nano: 1_000_000_000 * (100 - u64::from(id)),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        decode(
            &batch.encode_to_vec(),
            Origin {
                partition: 0,
                offset,
            },
        )
        .expect("decode")
        .rows
    }

    fn ids(batches: &[RecordBatch]) -> Vec<u8> {
        batches
            .iter()
            .flat_map(|b| {
                let col = b
                    .column_by_name("event_id")
                    .expect("event_id")
                    .as_fixed_size_binary()
                    .clone();
                (0..col.len())
                    .map(move |i| col.value(i)[0])
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn flush_dedups_sorts_and_remembers() {
        let mut buffers = Buffers::new(2).expect("duckdb");
        buffers
            .append("t", rows(&[1, 2, 3], "b", 0), 100, 0)
            .expect("append");
        buffers
            .append("t", rows(&[2, 4], "a", 1), 100, 0)
            .expect("append");
        let out = buffers.flush_rows("t").expect("flush");
        // service a first; within a service by event_time (higher id = earlier).
        assert_eq!(ids(&out), [4, 3, 2, 1]); // id 2 keeps its first copy (service b)
        let kept = out.iter().find(|b| b.num_rows() > 0).expect("rows");
        assert_eq!(
            kept.column_by_name("service")
                .expect("service")
                .as_string::<i32>()
                .value(0),
            "a"
        );
        buffers.committed("t").expect("committed");
        assert_eq!(buffers.stats().count(), 0);
        // A late duplicate of a committed id is dropped; a new id is kept.
        buffers
            .append("t", rows(&[3, 5], "b", 2), 100, 0)
            .expect("append");
        assert_eq!(ids(&buffers.flush_rows("t").expect("flush")), [5]);
        buffers.committed("t").expect("committed");
        buffers.committed("t").expect("committed");
        buffers.committed("t").expect("committed");
        // The window is bounded (2 flushes): two flushes later id 3 is forgotten.
        buffers
            .append("t", rows(&[3], "b", 3), 100, 0)
            .expect("append");
        assert_eq!(ids(&buffers.flush_rows("t").expect("flush")), [3]);
    }

    #[test]
    fn clear_drops_rows_but_not_the_window() {
        let mut buffers = Buffers::new(4).expect("duckdb");
        buffers
            .append("t", rows(&[1], "a", 0), 10, 0)
            .expect("append");
        buffers.committed("t").expect("committed");
        buffers
            .append("t", rows(&[2], "a", 1), 10, 0)
            .expect("append");
        buffers.clear().expect("clear");
        assert!(ids(&buffers.flush_rows("t").expect("flush")).is_empty());
        buffers
            .append("t", rows(&[1, 3], "a", 2), 10, 0)
            .expect("append");
        assert_eq!(ids(&buffers.flush_rows("t").expect("flush")), [3]);
    }
}
