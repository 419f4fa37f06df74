//! Watermarks: how far a stream's table is committed, per Kafka partition,
//! and waiting until given positions are — what a producer needs to know
//! that what it sent is queryable.
//!
//! A SendLogs OK carries the positions its records were written at
//! (`written`). The compactor commits each table commit's cut to its
//! consumer group right after the commit (see `lag.rs`), so a position below
//! the group's committed offset is in a committed snapshot: a query that
//! starts after [`wait`] returns `reached` sees it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::GatewayError;
use crate::lag::LagReader;

/// The longest a single Watermark call waits, whatever the client asks:
/// a call is a held request, and a client wanting longer calls again.
pub const MAX_WAIT: Duration = Duration::from_secs(30);

/// How often the group's offsets are read while waiting.
const POLL: Duration = Duration::from_millis(200);

/// The answer: per partition the first offset not yet in the table,
/// whether every position waited for is below it, and the newest event time
/// the table holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watermark {
    /// Partition → first offset not yet committed to the table.
    pub committed: BTreeMap<i32, i64>,
    /// Every position waited for is committed.
    pub reached: bool,
    /// Newest event time in the table (µs), once a compactor reported it.
    pub newest_event_us: Option<i64>,
}

impl Watermark {
    /// [`Self::newest_event_us`] in ns, 0 when unknown (the proto's zero value).
    pub fn newest_event_unix_nano(&self) -> u64 {
        self.newest_event_us
            .and_then(|us| u64::try_from(us).ok())
            .map_or(0, |us| us.saturating_mul(1000))
    }
}

/// Reads the committed offsets of `topic` until every `(partition, offset)`
/// of `wait_for` is below them, or `timeout` (capped at [`MAX_WAIT`]) passes.
pub async fn wait(
    reader: &Arc<LagReader>,
    stream: &str,
    topic: &str,
    wait_for: &BTreeMap<i32, i64>,
    timeout: Duration,
) -> Result<Watermark, GatewayError> {
    let deadline = Instant::now() + timeout.min(MAX_WAIT);
    loop {
        let reading = reader.clone();
        let (owned_topic, owned_stream) = (topic.to_owned(), stream.to_owned());
        let committed =
            tokio::task::spawn_blocking(move || reading.committed(&owned_topic, &owned_stream))
                .await
                .map_err(|e| GatewayError::KafkaUnavailable(e.to_string()))?
                .map_err(|e| {
                    GatewayError::KafkaUnavailable(format!(
                        "cannot read how far stream {stream:?} is committed: {e}"
                    ))
                })?;
        if let Some(partition) = wait_for.keys().find(|p| !committed.offsets.contains_key(p)) {
            return Err(GatewayError::InvalidArgument(format!(
                "partition {partition} is not a partition of stream {stream:?}'s topic \
                 (it has {})",
                committed.offsets.len()
            )));
        }
        let reached = reached(&committed.offsets, wait_for);
        if reached || Instant::now() + POLL > deadline {
            return Ok(Watermark {
                committed: committed.offsets,
                reached,
                newest_event_us: committed.newest_event_us,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Every position is below its partition's first uncommitted offset.
fn reached(committed: &BTreeMap<i32, i64>, wait_for: &BTreeMap<i32, i64>) -> bool {
    wait_for
        .iter()
        .all(|(partition, offset)| committed.get(partition).is_some_and(|next| offset < next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_is_reached_once_committed_past_it() {
        let committed = BTreeMap::from([(0, 10), (1, 0)]);
        assert!(reached(&committed, &BTreeMap::from([(0, 9)])));
        assert!(!reached(&committed, &BTreeMap::from([(0, 10)])));
        assert!(!reached(&committed, &BTreeMap::from([(0, 3), (1, 0)])));
        assert!(reached(&committed, &BTreeMap::new()), "nothing to wait for");
    }
}
