//! tail: the Kafka records past where the tables' snapshots end, read up to
//! the partitions' end offsets at the moment of asking — so everything the
//! gateway acknowledged before a query starts is read for it. One consumer
//! per session, assigned (never subscribed: it joins no group and commits
//! nothing), that keeps its positions between queries and reads only what
//! arrived since.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

/// A topic partition.
pub type Tp = (String, i32);

/// One record as read.
#[derive(Debug)]
pub struct TailRecord {
    /// Where it is.
    pub tp: Tp,
    /// Its offset.
    pub offset: i64,
    /// Its value (a gateway `LogBatch`); empty for a record without one.
    pub payload: Vec<u8>,
}

/// The session's consumer and how far it has read each partition.
pub struct TailReader {
    consumer: BaseConsumer,
    brokers: String,
    /// Next offset to read, per partition read so far.
    next: BTreeMap<Tp, i64>,
    /// Partitions to read from the beginning (no offset known yet).
    from_start: Vec<Tp>,
    /// Longest a read may take, and a metadata or watermark request.
    timeout: Duration,
    /// Per topic, its partitions and when they were asked for.
    partitions: HashMap<String, (Instant, Vec<i32>)>,
}

/// How long a topic's partition list is reused: a metadata request before
/// every query cost ~12 ms of a ~280 ms fresh query at 100K events/s, and
/// partitions are added rarely (a new one joins the view this much later).
const PARTITIONS_FOR: Duration = Duration::from_secs(10);

impl std::fmt::Debug for TailReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TailReader")
            .field("brokers", &self.brokers)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl TailReader {
    /// A consumer of `brokers`; connects on first use.
    pub fn new(brokers: &str, timeout: Duration) -> Result<Self> {
        if brokers.trim().is_empty() {
            bail!(
                "--kafka-brokers is empty: --fresh reads the Kafka tail (local stack: 127.0.0.1:9092)"
            );
        }
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            // Required by librdkafka for a consumer; never joined (assign only) nor committed to.
            .set("group.id", "tlake-sql-fresh")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            // As the compactor reads: only committed records (none are transactional today).
            .set("isolation.level", "read_committed")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "true")
            // A query waits on this read: answer as soon as anything is there.
            .set("fetch.wait.max.ms", "10")
            .set("fetch.max.bytes", (64 << 20).to_string())
            // librdkafka's 1 MiB per partition and fetch: a tail of seconds at 100K
            // events/s takes many round trips (the compactor measured 2.5x on a backlog).
            .set("max.partition.fetch.bytes", (16 << 20).to_string())
            .set("allow.auto.create.topics", "false")
            .set("client.id", "tlake-sql-fresh")
            .create()
            .context("creating the Kafka consumer for --fresh")?;
        Ok(Self {
            consumer,
            brokers: brokers.to_owned(),
            next: BTreeMap::new(),
            from_start: Vec::new(),
            timeout,
            partitions: HashMap::new(),
        })
    }

    /// The partitions of `topic` (none when it does not exist), asked of
    /// the brokers at most every [`PARTITIONS_FOR`].
    pub fn partitions(&mut self, topic: &str) -> Result<Vec<i32>> {
        if let Some((asked, known)) = self.partitions.get(topic)
            && asked.elapsed() < PARTITIONS_FOR
        {
            return Ok(known.clone());
        }
        let metadata = self
            .consumer
            .fetch_metadata(Some(topic), self.timeout)
            .map_err(|e| self.unreachable(e))?;
        let known: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        self.partitions
            .insert(topic.to_owned(), (Instant::now(), known.clone()));
        Ok(known)
    }

    /// Every record of the partitions in `from` (partition → first offset
    /// wanted; `None`: the beginning) from there, or from where the last read
    /// ended if that is further, up to each partition's end offset now.
    pub fn read(&mut self, from: &BTreeMap<Tp, Option<i64>>) -> Result<Vec<TailRecord>> {
        let mut reassign = from.len() != self.next.len() + self.from_start.len();
        for (tp, start) in from {
            match (self.next.get(tp).copied(), start) {
                (Some(next), Some(s)) if *s > next => {
                    // The table moved past what we read: what lies between is in it.
                    self.next.insert(tp.clone(), *s);
                    reassign = true;
                }
                (Some(_), _) => {}
                (None, Some(s)) => {
                    self.next.insert(tp.clone(), *s);
                    self.from_start.retain(|t| t != tp);
                    reassign = true;
                }
                (None, None) if !self.from_start.contains(tp) => {
                    self.from_start.push(tp.clone());
                    reassign = true;
                }
                (None, None) => {}
            }
        }
        if reassign {
            let mut list = TopicPartitionList::new();
            for (tp, next) in &self.next {
                list.add_partition_offset(&tp.0, tp.1, Offset::Offset(*next))
                    .map_err(|e| self.unreachable(e))?;
            }
            for tp in &self.from_start {
                list.add_partition_offset(&tp.0, tp.1, Offset::Beginning)
                    .map_err(|e| self.unreachable(e))?;
            }
            self.consumer
                .assign(&list)
                .map_err(|e| self.unreachable(e))?;
        }

        // The end of each partition now: the read stops there.
        let mut ends: BTreeMap<Tp, i64> = BTreeMap::new();
        for tp in from.keys() {
            let (low, high) = self
                .consumer
                .fetch_watermarks(&tp.0, tp.1, self.timeout)
                .map_err(|e| self.unreachable(e))?;
            let at = self.next.get(tp).copied().unwrap_or(low).max(low);
            if at < high {
                ends.insert(tp.clone(), high);
            }
        }

        let mut records = Vec::new();
        let deadline = Instant::now() + self.timeout;
        while !ends.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let behind: Vec<String> = ends
                    .iter()
                    .map(|((t, p), end)| format!("{t}/{p} to {end}"))
                    .collect();
                bail!(
                    "reading the Kafka tail from {} took longer than {:?}; still to read: {}",
                    self.brokers,
                    self.timeout,
                    behind.join(", ")
                );
            }
            match self.consumer.poll(left.min(Duration::from_millis(100))) {
                None => {}
                Some(Ok(message)) => {
                    let tp = (message.topic().to_owned(), message.partition());
                    let offset = message.offset();
                    self.next.insert(tp.clone(), offset + 1);
                    self.from_start.retain(|t| *t != tp);
                    if let Some(&end) = ends.get(&tp) {
                        records.push(TailRecord {
                            tp: tp.clone(),
                            offset,
                            payload: message.payload().unwrap_or_default().to_vec(),
                        });
                        if offset + 1 >= end {
                            ends.remove(&tp);
                        }
                    }
                }
                // The end of a partition: offsets may have gaps (compaction, transaction
                // markers), so the last one below the end may never come; the position says.
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    let positions = self.consumer.position().map_err(|e| self.unreachable(e))?;
                    ends.retain(|(topic, p), end| {
                        *p != partition
                            || !positions.elements().iter().any(|e| {
                                e.topic() == topic
                                    && e.partition() == partition
                                    && matches!(e.offset(), Offset::Offset(o) if o >= *end)
                            })
                    });
                }
                Some(Err(e)) => return Err(self.unreachable(e)),
            }
        }
        Ok(records)
    }

    fn unreachable(&self, e: KafkaError) -> anyhow::Error {
        anyhow!(
            "reading the Kafka tail from {}: {e}; is Kafka up? (local stack: deploy/local/stack status)",
            self.brokers
        )
    }
}
