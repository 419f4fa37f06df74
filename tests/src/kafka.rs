//! Kafka helpers: a fresh topic per test, and reading a topic back whole.

use std::time::Duration;

use prost::Message as _;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tlake_proto::v1::{LogBatch, LogEvent};

/// A topic name unique to this test run.
pub fn unique_topic(prefix: &str) -> String {
    format!(
        "tlake-test-{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// Creates `topic` with `partitions` partitions (replication 1).
pub async fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create_topics request");
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("cannot create topic {t}: {e}"));
    }
}

/// One record read back from Kafka.
#[derive(Debug)]
pub struct Record {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Raw payload.
    pub payload: Vec<u8>,
}

impl Record {
    /// Decodes the payload as a gateway `LogBatch`.
    pub fn batch(&self) -> LogBatch {
        LogBatch::decode(self.payload.as_slice()).expect("payload is a LogBatch")
    }
}

/// A reader in a group of its own (it never commits).
fn reader(brokers: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set(
            "group.id",
            format!("tlake-test-reader-{}", uuid::Uuid::new_v4()),
        )
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .expect("consumer")
}

/// Each partition of `topic` with its (low, high) watermarks.
fn watermarks(consumer: &BaseConsumer, topic: &str) -> Vec<(i32, i64, i64)> {
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("topic metadata");
    let partitions: Vec<i32> = metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| p.id())
        .collect();
    assert!(!partitions.is_empty(), "topic {topic} has no partitions");
    partitions
        .into_iter()
        .map(|p| {
            let (low, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks");
            (p, low, high)
        })
        .collect()
}

/// Records written to `topic` so far: its end offsets, summed over partitions.
pub fn records_written(brokers: &str, topic: &str) -> i64 {
    watermarks(&reader(brokers), topic)
        .iter()
        .map(|&(_, _, high)| high)
        .sum()
}

/// Reads every record of `topic` from the beginning up to the current end.
pub fn read_all(brokers: &str, topic: &str) -> Vec<Record> {
    let consumer = reader(brokers);
    let mut ends = Vec::new();
    let mut assignment = TopicPartitionList::new();
    for (p, low, high) in watermarks(&consumer, topic) {
        if high > low {
            ends.push((p, high));
            assignment
                .add_partition_offset(topic, p, Offset::Offset(low))
                .expect("assign");
        }
    }
    let mut records = Vec::new();
    if ends.is_empty() {
        return records;
    }
    consumer.assign(&assignment).expect("assign");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let done = |records: &Vec<Record>| {
        ends.iter().all(|&(p, high)| {
            records
                .iter()
                .filter(|r| r.partition == p)
                .map(|r| r.offset)
                .max()
                .is_some_and(|o| o + 1 >= high)
        })
    };
    while !done(&records) {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out reading {topic}"
        );
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => records.push(Record {
                partition: m.partition(),
                offset: m.offset(),
                payload: m.payload().unwrap_or_default().to_vec(),
            }),
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    records
}

/// Every event found in `topic`, in read order (duplicates kept).
pub fn events(brokers: &str, topic: &str) -> Vec<LogEvent> {
    read_all(brokers, topic)
        .iter()
        .flat_map(|r| r.batch().events)
        .collect()
}

/// Every event id found in `topic`, in read order (duplicates kept).
pub fn event_ids(brokers: &str, topic: &str) -> Vec<[u8; 16]> {
    events(brokers, topic)
        .iter()
        .map(|e| <[u8; 16]>::try_from(e.event_id.as_ref()).expect("16-byte id"))
        .collect()
}
