//! flush: when — the latency cap, or the size target through the
//! Parquet:Kafka byte ratio learned from earlier flushes — and the flush
//! itself: every table's buffer at one cut of consumed positions
//! ([`crate::commit`] writes and commits each), then the dead letters, then
//! the advisory group commit.

use std::sync::Arc;
use std::time::Instant;

use tlake_catalog_client::iceberg::arrow::schema_to_arrow_schema;
use tlake_catalog_client::write::Part;
use tlake_catalog_client::{DEAD_LETTER_TABLE, TableKind};

use crate::commit::{FlushContext, FlushStop, Source, write_and_commit};
use crate::consume;
use crate::metrics::TableLabels;
use crate::pipeline::{Pipeline, PipelineError};

/// Parquet bytes per buffered Kafka byte, learned from flushes: the size
/// trigger fires when a buffer would make a file of the target size.
#[derive(Debug)]
pub struct SizeTrigger {
    ratio: f64,
}

impl Default for SizeTrigger {
    /// 0.15: what synthetic and loghub events compress to (BENCHMARKS.md),
    /// until the first flush says otherwise.
    fn default() -> Self {
        Self { ratio: 0.15 }
    }
}

impl SizeTrigger {
    /// Whether `buffered` Kafka bytes would make `target` bytes of Parquet.
    pub fn due(&self, buffered: u64, target: u64) -> bool {
        buffered as f64 * self.ratio >= target as f64
    }

    /// A flush turned `buffered` Kafka bytes into `written` Parquet bytes.
    pub fn learn(&mut self, buffered: u64, written: u64) {
        if written > 0 && buffered > 0 {
            let observed = written as f64 / buffered as f64;
            self.ratio = 0.7 * self.ratio + 0.3 * observed;
        }
    }
}

impl Pipeline {
    /// Whether a buffer (or the dead letters) reached the latency cap or
    /// the size target.
    pub(crate) fn flush_due(&self) -> bool {
        let latency = self.config.max_latency();
        let target = self.config.flush.target_file_bytes;
        self.buffers.stats().any(|(_, s)| {
            s.oldest.is_some_and(|t| t.elapsed() >= latency) || self.trigger.due(s.bytes, target)
        }) || self.dead.due(latency)
    }

    /// Writes and commits every buffer at the current cut.
    pub(crate) fn flush_all(&mut self) -> Result<(), PipelineError> {
        match self.flush_at_cut() {
            Ok(()) => Ok(()),
            Err(FlushStop::Resync) => self.resync(),
            Err(FlushStop::Fatal(e)) => Err(*e),
        }
    }

    fn flush_at_cut(&mut self) -> Result<(), FlushStop> {
        let cut = self.positions.cut();
        let cx = FlushContext {
            lake: &self.lake,
            metrics: &self.metrics,
            writer_epoch: self.writer_epoch,
            target_file_bytes: self.config.flush.target_file_bytes,
        };
        let tables: Vec<(String, Option<i64>, u64, u64)> = self
            .buffers
            .stats()
            .map(|(t, s)| (t.to_owned(), s.max_event_time_us, s.rows, s.bytes))
            .collect();
        for (name, max_event_time, buffered_rows, buffered_bytes) in tables {
            let started = Instant::now();
            let table = self
                .tables
                .get(&self.lake, &mut self.buffers, &name, TableKind::Logs)?;
            let target = schema_to_arrow_schema(table.metadata().current_schema())
                .map_err(|e| PipelineError::Catalog(e.into()))?;
            let target = Arc::new(target);
            let order = self
                .buffers
                .flush_order(&name, self.tables.sort_by(&name))
                .map_err(PipelineError::from)?;
            let rows = order.len() as u64;
            if let Some(moves) = self.positions.moves(&name, &cut) {
                let next = moves.next.clone();
                let source = Source::Buffered {
                    buffers: &self.buffers,
                    order: &order,
                    target: &target,
                };
                let done = write_and_commit(cx, &table, &name, source, moves, max_event_time)?;
                self.positions.committed(&name, &next);
                self.tables.reload(&name);
                let labels = TableLabels {
                    table: name.clone(),
                };
                let m = &self.metrics;
                m.flush_rows.get_or_create(&labels).inc_by(rows);
                m.flush_bytes.get_or_create(&labels).inc_by(done.bytes);
                m.flush_duplicates
                    .get_or_create(&labels)
                    .inc_by(buffered_rows.saturating_sub(rows));
                m.flush_seconds.observe(started.elapsed().as_secs_f64());
                self.trigger.learn(buffered_bytes, done.bytes);
            }
            self.buffers.committed(&name).map_err(PipelineError::from)?;
        }
        if !self.dead.is_empty() {
            let table = self.tables.get(
                &self.lake,
                &mut self.buffers,
                DEAD_LETTER_TABLE,
                TableKind::DeadLetters,
            )?;
            if let Some(moves) = self.positions.moves(DEAD_LETTER_TABLE, &cut) {
                let next = moves.next.clone();
                let source = Source::Batch(Part {
                    day: None,
                    rows: self.dead.batch(),
                });
                write_and_commit(cx, &table, DEAD_LETTER_TABLE, source, moves, None)?;
                self.positions.committed(DEAD_LETTER_TABLE, &next);
                self.tables.reload(DEAD_LETTER_TABLE);
                self.metrics.dead_letters.inc_by(self.dead.len() as u64);
            }
            self.dead.clear();
        }
        if !cut.is_empty() {
            consume::commit_advisory(&self.consumer, &cut);
            self.record_lag();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_size_trigger_learns_the_compression_ratio() {
        let mut trigger = SizeTrigger::default();
        assert!(!trigger.due(600, 100), "600 × 0.15 = 90 < 100");
        assert!(trigger.due(700, 100));
        // Flushes that compress 10:1 move the ratio towards 0.1.
        for _ in 0..20 {
            trigger.learn(1000, 100);
        }
        assert!(!trigger.due(900, 100) && trigger.due(1100, 100));
        trigger.learn(0, 0);
        assert!(trigger.due(1100, 100), "an empty flush teaches nothing");
    }
}
