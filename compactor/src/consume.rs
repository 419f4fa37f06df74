//! consume: the Kafka side of the loop — the consumer's settings, and the
//! rebalance callback that seeks each assigned partition to where the
//! tables say it is (ARCHITECTURE §2) before any of its records is polled.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tlake_catalog_client::Progress;

use crate::config::Config;
use crate::flush::FlightGate;
use crate::lake::Lake;
use crate::metrics::{Metrics, PartitionLabels};
use crate::progress::{self, Seeks};

/// A (topic, partition).
pub type Tp = (String, i32);

/// What a rebalance did, for the loop to apply before the next record.
#[derive(Debug)]
pub enum Rebalanced {
    /// These partitions are ours, seeked to `seeks` by what `tables` hold.
    Assigned {
        /// Every partition now assigned.
        parts: Vec<Tp>,
        /// Every table's progress, read at the assignment.
        tables: HashMap<String, Progress>,
        /// Where each partition starts (`None`: the beginning).
        seeks: Seeks,
    },
    /// Every partition was taken away.
    Revoked,
}

/// The consumer's context: the catalog (to read progress inside the
/// callback), the rebalances not yet applied by the loop, and each
/// partition's high watermark from librdkafka's statistics.
#[derive(Debug)]
pub struct Rebalances {
    lake: Arc<Lake>,
    /// Whether a flush is in the air: its commit lands before the tables'
    /// progress is read, or a partition is given up.
    gate: Arc<FlightGate>,
    events: Mutex<Vec<Rebalanced>>,
    high_watermarks: Mutex<HashMap<Tp, i64>>,
}

/// How often librdkafka reports statistics (the lag metric's source): a
/// JSON document of a few KB per second, parsed on the polling thread.
const STATISTICS_EVERY_MS: u32 = 1_000;

/// The compactor's Kafka consumer.
pub type KafkaConsumer = BaseConsumer<Rebalances>;

/// Creates the consumer (manual offsets, read-committed) and subscribes.
pub fn subscribe(
    config: &Config,
    lake: Arc<Lake>,
    gate: Arc<FlightGate>,
) -> Result<KafkaConsumer, KafkaError> {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("group.id", &config.kafka.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set(
            "session.timeout.ms",
            config.kafka.session_timeout_ms.to_string(),
        )
        // Flushes and catalog outages block polling; the table, not the
        // group, guards correctness, so a long interval is safe.
        .set("max.poll.interval.ms", "600000")
        .set("partition.assignment.strategy", "range,roundrobin")
        .set("fetch.max.bytes", (64 << 20).to_string())
        // librdkafka's 1 MiB per partition and fetch held a backlog drain
        // of 4 partitions to ~90 MB/s here (a poll often found the queue
        // empty); 16 MiB: 3M events drained at 2.5× the rate (BENCHMARKS.md).
        .set("max.partition.fetch.bytes", (16 << 20).to_string())
        .set("statistics.interval.ms", STATISTICS_EVERY_MS.to_string());
    for (k, v) in &config.kafka.properties {
        client.set(k, v);
    }
    let consumer: KafkaConsumer = client.create_with_context(Rebalances {
        lake,
        gate,
        events: Mutex::new(Vec::new()),
        high_watermarks: Mutex::new(HashMap::new()),
    })?;
    let topics: Vec<&str> = config.kafka.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    Ok(consumer)
}

/// The rebalances that happened inside the last `poll`, oldest first.
pub fn take_rebalances(consumer: &KafkaConsumer) -> Vec<Rebalanced> {
    std::mem::take(&mut *consumer.context().events.lock().expect("events lock"))
}

/// Restarts every partition of `seeks` at its seek (resync). `assign` with
/// offsets both resets fetch positions and drops messages already fetched
/// from the old ones.
pub fn seek(consumer: &KafkaConsumer, seeks: &Seeks) -> Result<(), KafkaError> {
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), seek) in seeks {
        tpl.add_partition_offset(topic, *partition, start(*seek))?;
    }
    if tpl.count() > 0 {
        consumer.assign(&tpl)?;
    }
    Ok(())
}

/// Commits the cut to the group, advisory only: it lets lag tools and the
/// gateway's watermarks see progress. The tables decide where reading
/// starts. Each offset carries the newest event time of the tables
/// committed (`tlake_proto::positions::newest_event_metadata`).
pub fn commit_advisory(
    consumer: &KafkaConsumer,
    cut: &BTreeMap<Tp, i64>,
    newest_event_us: &BTreeMap<String, i64>,
) {
    let metadata = tlake_proto::positions::newest_event_metadata(newest_event_us);
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), offset) in cut {
        let mut element = tpl.add_partition(topic, *partition);
        let _ = element.set_offset(Offset::Offset(*offset));
        if let Some(metadata) = &metadata {
            element.set_metadata(metadata);
        }
    }
    if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
        tracing::debug!(error = %e, "advisory group offset commit failed");
    }
}

/// Sets `consumer_lag` (high watermark − next offset) for each assigned
/// partition, from the high watermarks librdkafka's last statistics carried.
///
/// Not `fetch_watermarks`: that is a ListOffsets request on the broker
/// connection the fetches use, and on a busy broker its short timeout
/// expired — librdkafka then drops the connection (`socket.max.fails` = 1),
/// in-flight fetches with it. In the cluster that stalled consumption for
/// minutes (25 such resets in one compactor's log); statistics cost no request.
pub fn record_lag<'a>(
    consumer: &KafkaConsumer,
    assigned: impl Iterator<Item = (&'a Tp, i64)>,
    metrics: &Metrics,
) {
    let highs = consumer
        .context()
        .high_watermarks
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    for (tp, position) in assigned {
        if let Some(high) = highs.get(tp) {
            metrics
                .consumer_lag
                .get_or_create(&PartitionLabels {
                    topic: tp.0.clone(),
                    partition: tp.1.to_string(),
                })
                .set((high - position).max(0));
        }
    }
}

fn start(seek: Option<i64>) -> Offset {
    seek.map_or(Offset::Beginning, Offset::Offset)
}

impl ClientContext for Rebalances {
    fn stats(&self, statistics: Statistics) {
        let mut highs = self
            .high_watermarks
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for (topic, t) in statistics.topics {
            // Partition -1 is librdkafka's internal "unassigned" queue.
            for (partition, p) in t.partitions.into_iter().filter(|(id, _)| *id >= 0) {
                if p.hi_offset >= 0 {
                    highs.insert((topic.clone(), partition), p.hi_offset);
                }
            }
        }
    }
}

impl ConsumerContext for Rebalances {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        // A flush in the air commits offsets of partitions this rebalance
        // moves: let it land first, so that whoever reads the tables next
        // (this process on assignment, another on revocation) sees it.
        self.gate.wait();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let parts: Vec<Tp> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_owned(), e.partition()))
                    .collect();
                let tables = progress::load_all(&self.lake);
                let seeks = progress::seek_offsets(&tables, &parts);
                for ((topic, partition), seek) in &seeks {
                    if let Err(e) = tpl.set_partition_offset(topic, *partition, start(*seek)) {
                        tracing::error!(error = %e, "cannot set start offset");
                    }
                }
                tracing::info!(
                    ?seeks,
                    "partitions assigned; starting at the tables' offsets"
                );
                if let Err(e) = consumer.assign(tpl) {
                    tracing::error!(error = %e, "assign failed");
                }
                self.events
                    .lock()
                    .expect("events lock")
                    .push(Rebalanced::Assigned {
                        parts,
                        tables,
                        seeks,
                    });
            }
            _ => {
                if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS {
                    tracing::warn!(?err, "rebalance error; dropping the assignment");
                }
                if let Err(e) = consumer.unassign() {
                    tracing::error!(error = %e, "unassign failed");
                }
                self.events
                    .lock()
                    .expect("events lock")
                    .push(Rebalanced::Revoked);
            }
        }
    }
}
