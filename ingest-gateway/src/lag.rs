//! Back-pressure from lag: how far each stream's table is behind its Kafka
//! topic, and the refusal of new requests once that passes the configured
//! bound.
//!
//! The lag is read from Kafka, not from the catalog: after every table commit
//! the compactor commits the same cut (the snapshot's `tlake.offsets`) to its
//! consumer group, so "group offset → end offset" is "committed to the table →
//! written to Kafka". The group offset is a mirror, advisory and a moment
//! late: a lost mirror commit overstates the lag until the next flush, which
//! errs towards refusing, never towards losing. A partition the group never
//! committed counts from its earliest record: a compactor that never ran is
//! as far behind as the topic is long.
//!
//! The watcher asks Kafka every `check_interval_ms` on a blocking thread;
//! requests read one atomic per topic. Between two checks the gateway keeps
//! accepting, so the lag can pass the bound by at most one interval of
//! traffic. When the check itself fails (Kafka unreachable, no permission to
//! read the group) the lag is unknown and requests are accepted: producing
//! fails on its own when Kafka is down, and a broken check must not stop
//! ingest that would land.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::{BackpressureConfig, KafkaConfig};
use crate::error::GatewayError;
use crate::metrics::{Metrics, StreamLabels};

/// Lag of a topic not read yet, or whose last check failed.
const UNKNOWN: u64 = u64::MAX;

/// The last lag seen per topic, and the bound requests are held to.
#[derive(Debug)]
pub struct LagGate {
    bound: u64,
    retry_after: Duration,
    /// Topic → records written to Kafka and not yet committed to the table.
    lags: BTreeMap<String, AtomicU64>,
}

impl LagGate {
    /// A gate for every topic the streams route to; all lags unknown.
    pub fn new(config: &BackpressureConfig, streams: &BTreeMap<String, String>) -> Self {
        Self {
            bound: config.max_lag_records,
            retry_after: config.retry_after_ms,
            lags: streams
                .values()
                .map(|topic| (topic.clone(), AtomicU64::new(UNKNOWN)))
                .collect(),
        }
    }

    /// Whether the gate refuses anything at all (`max_lag_records` > 0).
    pub fn enabled(&self) -> bool {
        self.bound > 0
    }

    /// Refuses a request for `stream` (routed to `topic`) while its lag is at
    /// or past the bound.
    pub fn admit(&self, stream: &str, topic: &str) -> Result<(), GatewayError> {
        let Some(lag) = self.lag(topic) else {
            return Ok(());
        };
        if self.enabled() && lag >= self.bound {
            return Err(GatewayError::Lagging {
                stream: stream.to_owned(),
                lag_records: lag,
                bound: self.bound,
                retry_after: self.retry_after,
            });
        }
        Ok(())
    }

    /// The last lag seen for `topic`, if known.
    pub fn lag(&self, topic: &str) -> Option<u64> {
        let lag = self.lags.get(topic)?.load(Ordering::Relaxed);
        (lag != UNKNOWN).then_some(lag)
    }

    fn set(&self, topic: &str, lag: Option<u64>) {
        if let Some(slot) = self.lags.get(topic) {
            slot.store(lag.unwrap_or(UNKNOWN), Ordering::Relaxed);
        }
    }

    fn topics(&self) -> impl Iterator<Item = &str> {
        self.lags.keys().map(String::as_str)
    }
}

/// Reads the compactor group's committed offsets (the tables' mirror) and
/// the topics' end offsets: the lag here, the watermarks in `watermark.rs`.
pub struct LagReader {
    consumer: BaseConsumer,
    timeout: Duration,
}

impl LagReader {
    /// A consumer that never subscribes: it only fetches the group's offsets
    /// (OffsetFetch does not join the group, so the compactor's assignment is
    /// untouched) and watermarks.
    pub fn new(kafka: &KafkaConfig, backpressure: &BackpressureConfig) -> Result<Self, KafkaError> {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &kafka.brokers)
            .set("group.id", &backpressure.compactor_group)
            .set("enable.auto.commit", "false")
            // Asking for a deleted topic's metadata must not bring it back.
            .set("allow.auto.create.topics", "false")
            .set("client.id", "tlake-gateway-lag");
        for (key, value) in &kafka.properties {
            client.set(key, value);
        }
        Ok(Self {
            consumer: client.create()?,
            timeout: Duration::from_secs(3),
        })
    }

    /// Records in `topic` past the group's committed offsets, summed over its
    /// partitions; 0 for a topic that does not exist (nothing to hold back).
    pub fn topic_lag(&self, topic: &str) -> Result<u64, KafkaError> {
        let mut lag = 0u64;
        for e in self.group_offsets(topic)?.elements() {
            let (low, high) = self
                .consumer
                .fetch_watermarks(topic, e.partition(), self.timeout)?;
            lag += partition_lag(e.offset(), low, high);
        }
        Ok(lag)
    }

    /// Per partition of `topic`, the first offset not yet in its table (the
    /// group's committed offset; 0 where the group never committed — what
    /// retention removed before a commit was never in the table), and the
    /// newest event time `stream`'s table held as of those commits, as the
    /// compactors report it in the commits' metadata.
    pub fn committed(&self, topic: &str, stream: &str) -> Result<Committed, KafkaError> {
        let mut committed = Committed::default();
        for e in self.group_offsets(topic)?.elements() {
            let next = match e.offset() {
                Offset::Offset(next) => next.max(0),
                _ => 0,
            };
            committed.offsets.insert(e.partition(), next);
            let reported = tlake_proto::positions::newest_event_of(e.metadata(), stream);
            committed.newest_event_us = committed.newest_event_us.max(reported);
        }
        Ok(committed)
    }

    /// Each partition of `topic` with the group's committed offset (and the
    /// commit's metadata, read only by [`Self::committed`]); none for a topic
    /// that does not exist.
    fn group_offsets(&self, topic: &str) -> Result<TopicPartitionList, KafkaError> {
        let metadata = self.consumer.fetch_metadata(Some(topic), self.timeout)?;
        let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
            return Ok(TopicPartitionList::new());
        };
        if found.error().is_some() {
            return Ok(TopicPartitionList::new());
        }
        let mut partitions = TopicPartitionList::new();
        for partition in found.partitions() {
            partitions.add_partition(topic, partition.id());
        }
        self.consumer.committed_offsets(partitions, self.timeout)
    }
}

/// How far a stream's table is committed ([`LagReader::committed`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Committed {
    /// Partition → first offset not yet in the table.
    pub offsets: BTreeMap<i32, i64>,
    /// Newest event time in the table (µs), when a compactor reported it.
    pub newest_event_us: Option<i64>,
}

impl std::fmt::Debug for LagReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LagReader").finish_non_exhaustive()
    }
}

/// Records in one partition past `committed`: from the earliest record kept
/// when the group has no (or an expired) offset, none past the end.
fn partition_lag(committed: Offset, low: i64, high: i64) -> u64 {
    let from = match committed {
        Offset::Offset(next) => next.max(low),
        _ => low,
    };
    u64::try_from(high - from).unwrap_or(0)
}

/// Refreshes `gate` from `reader` every `interval`, forever, and publishes
/// each stream's lag in `metrics`.
pub async fn watch(
    gate: Arc<LagGate>,
    reader: Arc<LagReader>,
    streams: BTreeMap<String, String>,
    metrics: Arc<Metrics>,
    interval: Duration,
) {
    let mut failing = BTreeSet::new();
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let topics: Vec<String> = gate.topics().map(str::to_owned).collect();
        let reading = reader.clone();
        let Ok(lags) = tokio::task::spawn_blocking(move || {
            topics
                .into_iter()
                .map(|topic| {
                    let lag = reading.topic_lag(&topic);
                    (topic, lag)
                })
                .collect::<Vec<_>>()
        })
        .await
        else {
            continue;
        };
        for (topic, lag) in lags {
            match lag {
                Ok(records) => {
                    if failing.remove(&topic) {
                        tracing::info!(%topic, records, "lag check works again");
                    }
                    gate.set(&topic, Some(records));
                }
                Err(err) => {
                    metrics.lag_check_errors.inc();
                    if failing.insert(topic.clone()) {
                        tracing::warn!(%topic, %err, "cannot read the compactor's lag; accepting requests until it can be read");
                    }
                    gate.set(&topic, None);
                }
            }
        }
        for (stream, topic) in &streams {
            let shown = gate
                .lag(topic)
                .map_or(-1, |lag| i64::try_from(lag).unwrap_or(i64::MAX));
            metrics
                .lag_records
                .get_or_create(&StreamLabels {
                    stream: stream.clone(),
                })
                .set(shown);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(bound: u64) -> LagGate {
        LagGate::new(
            &BackpressureConfig {
                max_lag_records: bound,
                ..BackpressureConfig::default()
            },
            &BTreeMap::from([("default".to_owned(), "logs".to_owned())]),
        )
    }

    #[test]
    fn partition_lag_counts_past_the_committed_offset() {
        assert_eq!(partition_lag(Offset::Offset(40), 0, 100), 60);
        assert_eq!(partition_lag(Offset::Offset(100), 0, 100), 0);
        // Never committed: everything kept is behind.
        assert_eq!(partition_lag(Offset::Invalid, 10, 100), 90);
        // Committed before retention removed records: only what is kept counts.
        assert_eq!(partition_lag(Offset::Offset(5), 10, 100), 90);
        // A group offset past the end (topic re-created) is not negative lag.
        assert_eq!(partition_lag(Offset::Offset(500), 0, 100), 0);
    }

    #[test]
    fn a_stream_past_the_bound_is_refused_with_a_retry_hint() {
        let gate = gate(1000);
        gate.set("logs", Some(999));
        gate.admit("default", "logs").expect("below the bound");
        gate.set("logs", Some(1000));
        let err = gate.admit("default", "logs").expect_err("at the bound");
        assert!(err.retryable());
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert_eq!(err.http_status(), http::StatusCode::TOO_MANY_REQUESTS);
        assert!(err.retry_after().is_some());
        assert!(err.to_string().contains("1000 Kafka records"), "{err}");
    }

    #[test]
    fn an_unknown_lag_or_a_disabled_gate_admits() {
        let gate = gate(1000);
        gate.admit("default", "logs").expect("not read yet");
        gate.set("logs", None);
        gate.admit("default", "logs").expect("check failed");
        let off = self::gate(0);
        off.set("logs", Some(u64::MAX - 1));
        off.admit("default", "logs").expect("disabled");
    }
}
