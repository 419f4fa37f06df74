//! dead_letters: records that cannot be mapped to an event table, kept
//! with the reason, and written to the `dead_letters` table by the next
//! flush (under the same cut as the event tables, so each is written once).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arrow_array::builder::{
    BinaryBuilder, Int32Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use tlake_proto::contract::columns::dead_letters::{
    DEAD_LETTERED_AT, KAFKA_OFFSET, KAFKA_PARTITION, RAW, REASON, TOPIC,
};

use crate::consume::Tp;

/// One record that became a dead letter.
#[derive(Debug)]
struct DeadLetter {
    raw: Vec<u8>,
    topic: String,
    partition: i32,
    offset: i64,
    reason: String,
    at_us: i64,
}

/// Dead letters not yet written, and since when the oldest waits.
#[derive(Debug, Default)]
pub struct DeadLetters {
    pending: Vec<DeadLetter>,
    since: Option<Instant>,
}

impl DeadLetters {
    /// Keeps the record at `offset` of `tp` (its raw bytes) with `reason`.
    pub fn push(&mut self, tp: &Tp, offset: i64, raw: &[u8], reason: String) {
        tracing::warn!(topic = %tp.0, partition = tp.1, offset, %reason, "dead letter");
        self.since.get_or_insert_with(Instant::now);
        self.pending.push(DeadLetter {
            raw: raw.to_vec(),
            topic: tp.0.clone(),
            partition: tp.1,
            offset,
            reason,
            at_us: now_us(),
        });
    }

    /// How many wait.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Whether the oldest has waited `latency` (the flush latency cap).
    pub fn due(&self, latency: Duration) -> bool {
        self.since.is_some_and(|t| t.elapsed() >= latency)
    }

    /// Drops them all (written, or to be re-read after a rebalance).
    pub fn clear(&mut self) {
        self.pending.clear();
        self.since = None;
    }

    /// The rows of the `dead_letters` table (schema `TableKind::DeadLetters`).
    pub fn batch(&self) -> RecordBatch {
        let mut raw = BinaryBuilder::new();
        let mut topic = StringBuilder::new();
        let mut partition = Int32Builder::new();
        let mut offset = Int64Builder::new();
        let mut reason = StringBuilder::new();
        let mut at = TimestampMicrosecondBuilder::new();
        for d in &self.pending {
            raw.append_value(&d.raw);
            topic.append_value(&d.topic);
            partition.append_value(d.partition);
            offset.append_value(d.offset);
            reason.append_value(&d.reason);
            at.append_value(d.at_us);
        }
        let columns: Vec<(&str, ArrayRef)> = vec![
            (RAW, Arc::new(raw.finish())),
            (TOPIC, Arc::new(topic.finish())),
            (KAFKA_PARTITION, Arc::new(partition.finish())),
            (KAFKA_OFFSET, Arc::new(offset.finish())),
            (REASON, Arc::new(reason.finish())),
            (DEAD_LETTERED_AT, Arc::new(at.finish())),
        ];
        RecordBatch::try_from_iter(columns).expect("columns of equal length")
    }
}

/// Microseconds since the epoch, now.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letters_become_rows_of_the_dead_letter_table() {
        let mut dead = DeadLetters::default();
        assert!(dead.is_empty() && !dead.due(Duration::ZERO));
        dead.push(&("t".into(), 3), 41, b"\xff", "bad".into());
        dead.push(&("t".into(), 3), 42, b"", "worse".into());
        assert_eq!(dead.len(), 2);
        assert!(dead.due(Duration::ZERO));
        let batch = dead.batch();
        assert_eq!(batch.num_rows(), 2);
        let schema = batch.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, tlake_proto::contract::columns::dead_letters::ALL);
        dead.clear();
        assert!(dead.is_empty() && !dead.due(Duration::ZERO));
    }
}
