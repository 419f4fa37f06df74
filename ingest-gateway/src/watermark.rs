//! Watermarks: how far a stream's table is committed, per Kafka partition,
//! and waiting until given positions are — what a producer needs to know
//! that what it sent is queryable.
//!
//! A SendLogs OK carries the positions its records were written at
//! (`written`). The compactor commits each table commit's cut to its
//! consumer group right after the commit (see `lag.rs`), so a position below
//! the group's committed offset is in a committed snapshot: a query that
//! starts after [`wait`] returns `reached` sees it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::GatewayError;
use crate::lag::{Committed, LagReader};

/// The longest a single Watermark call waits, whatever the client asks:
/// a call is a held request, and a client wanting longer calls again.
pub const MAX_WAIT: Duration = Duration::from_secs(30);

/// How often a waiting call looks at the stream's reading again.
const POLL: Duration = Duration::from_millis(200);

/// How long a reading of the group's offsets serves every call that asks:
/// however many calls wait on a stream, its offsets are read at most about
/// ten times a second (one OffsetFetch and a metadata request each), not
/// once per call per poll.
const SHARED_FOR: Duration = Duration::from_millis(100);

/// One stream's newest reading; its lock is held while it is renewed, so
/// the calls that find it stale meanwhile wait for that one read.
type Slot = Arc<tokio::sync::Mutex<Option<(Instant, Committed)>>>;

/// The group's committed offsets as every Watermark call of this gateway
/// sees them: one reader, one reading per stream shared by all the calls.
#[derive(Debug)]
pub struct Watermarks {
    reader: Arc<LagReader>,
    readings: Mutex<HashMap<(String, String), Slot>>,
}

impl Watermarks {
    /// Watermarks read through `reader`.
    pub fn new(reader: Arc<LagReader>) -> Self {
        Self {
            reader,
            readings: Mutex::new(HashMap::new()),
        }
    }

    /// How far `stream` (on `topic`) is committed, read at most
    /// [`SHARED_FOR`] ago.
    async fn committed(&self, topic: &str, stream: &str) -> Result<Committed, GatewayError> {
        let reader = self.reader.clone();
        let (owned_topic, owned_stream) = (topic.to_owned(), stream.to_owned());
        shared(&self.readings, topic, stream, move || {
            reader.committed(&owned_topic, &owned_stream)
        })
        .await
        .map_err(|e| {
            GatewayError::KafkaUnavailable(format!(
                "cannot read how far stream {stream:?} is committed: {e}"
            ))
        })
    }
}

/// The reading of `(topic, stream)` in `readings` if it is fresh, else the
/// one `read` makes (on a blocking thread), which then serves the others.
async fn shared<E: std::fmt::Display + Send + 'static>(
    readings: &Mutex<HashMap<(String, String), Slot>>,
    topic: &str,
    stream: &str,
    read: impl FnOnce() -> Result<Committed, E> + Send + 'static,
) -> Result<Committed, String> {
    let slot = readings
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry((topic.to_owned(), stream.to_owned()))
        .or_default()
        .clone();
    let mut slot = slot.lock().await;
    if let Some((at, reading)) = slot.as_ref()
        && at.elapsed() < SHARED_FOR
    {
        return Ok(reading.clone());
    }
    let reading = tokio::task::spawn_blocking(read)
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    *slot = Some((Instant::now(), reading.clone()));
    Ok(reading)
}

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
    watermarks: &Watermarks,
    stream: &str,
    topic: &str,
    wait_for: &BTreeMap<i32, i64>,
    timeout: Duration,
) -> Result<Watermark, GatewayError> {
    let deadline = Instant::now() + timeout.min(MAX_WAIT);
    loop {
        let committed = watermarks.committed(topic, stream).await?;
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_waiters_share_one_reading_per_stream() {
        let readings = Arc::new(Mutex::new(HashMap::new()));
        let reads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let read = |reads: Arc<std::sync::atomic::AtomicUsize>, next: i64| {
            move || -> Result<Committed, String> {
                reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                // As slow as a Kafka round trip: the others arrive meanwhile.
                std::thread::sleep(Duration::from_millis(20));
                Ok(Committed {
                    offsets: BTreeMap::from([(0, next)]),
                    newest_event_us: Some(next),
                })
            }
        };
        let calls: Vec<_> = (0..50)
            .map(|_| {
                let (readings, reads) = (readings.clone(), reads.clone());
                tokio::spawn(async move { shared(&readings, "t", "s", read(reads, 7)).await })
            })
            .collect();
        for call in calls {
            let got = call.await.expect("joined").expect("read");
            assert_eq!(got.offsets[&0], 7);
        }
        assert_eq!(
            reads.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "50 calls, one read"
        );
        // Another stream has a reading of its own.
        shared(&readings, "t", "other", read(reads.clone(), 3))
            .await
            .expect("read");
        assert_eq!(reads.load(std::sync::atomic::Ordering::SeqCst), 2);
        // Once stale, the next call reads again.
        tokio::time::sleep(SHARED_FOR + Duration::from_millis(10)).await;
        let got = shared(&readings, "t", "s", read(reads.clone(), 9))
            .await
            .expect("read");
        assert_eq!(
            (
                got.offsets[&0],
                reads.load(std::sync::atomic::Ordering::SeqCst)
            ),
            (9, 3)
        );
        // A failed read is an error for its caller, and is not kept.
        let failed = shared(&readings, "t", "gone", || -> Result<Committed, String> {
            Err("broker down".into())
        })
        .await;
        assert_eq!(failed.expect_err("failed"), "broker down");
    }
}
