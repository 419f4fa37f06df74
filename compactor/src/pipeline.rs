//! The consume → buffer → flush → commit loop, on one blocking thread.
//!
//! Progress lives in the tables (ARCHITECTURE §2): on every assignment the
//! rebalance callback reads every table's committed offsets and seeks each
//! partition to the lowest of them (earliest when a table that may hold
//! uncommitted rows has none); each record is then skipped for its table if
//! that table already holds it. A flush writes every table's buffer at one
//! cut of consumed positions and commits each table with that cut.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arrow_array::builder::{
    BinaryBuilder, Int32Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::SchemaRef;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::message::Message;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tlake_catalog::iceberg::arrow::schema_to_arrow_schema;
use tlake_catalog::iceberg::table::Table;
use tlake_catalog::{
    CommitOutcome, CommitRequest, DEAD_LETTER_TABLE, LakeCatalog, Offsets, Progress, TableKind,
};
use tokio::runtime::Handle;

use crate::buffer::{Buffers, FlushOrder};
use crate::config::Config;
use crate::decode::{EventKey, Origin, scan};
use crate::metrics::{Metrics, PartitionLabels, TableLabels};
use crate::write::{Part, write_files};

/// Env var naming a point where the process aborts (tests only):
/// `after-upload` (files written, not committed) or `after-commit`.
pub const FAILPOINT_ENV: &str = "TLAKE_COMPACTOR_FAILPOINT";

/// A (topic, partition).
pub type Tp = (String, i32);

/// Fatal errors of the loop.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Kafka client could not be created or subscribed.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// DuckDB failed.
    #[error(transparent)]
    Buffer(#[from] crate::buffer::BufferError),
    /// A table cannot be used (incompatible layout, bad settings).
    #[error(transparent)]
    Catalog(#[from] tlake_catalog::Error),
    /// Rows cannot be converted to the table's types.
    #[error(transparent)]
    Write(#[from] crate::write::WriteError),
}

fn failpoint(name: &str) {
    if std::env::var(FAILPOINT_ENV).is_ok_and(|v| v == name) {
        eprintln!("tlake-compactor: failpoint {name}: aborting");
        std::process::abort();
    }
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default()
}

/// Where to start reading each partition, from every table's progress.
///
/// A partition starts at the lowest offset any table stored for it. A
/// table that may hold rows of it but never committed it — no committed
/// snapshot at all, or the topic but not this partition — sends it back to
/// the beginning; the per-table skip filter then drops what is committed.
pub fn seek_offsets(tables: &HashMap<String, Progress>, parts: &[Tp]) -> BTreeMap<Tp, Option<i64>> {
    let mut seeks = BTreeMap::new();
    for (topic, partition) in parts {
        let mut lowest: Option<i64> = None;
        let mut beginning = false;
        let mut any = false;
        for progress in tables.values() {
            if progress.snapshot_id.is_none() {
                beginning = true;
                continue;
            }
            if let Some(by_partition) = progress.offsets.get(topic) {
                any = true;
                match by_partition.get(partition) {
                    Some(&o) => lowest = Some(lowest.map_or(o, |l| l.min(o))),
                    None => beginning = true,
                }
            }
        }
        let seek = if beginning || !any { None } else { lowest };
        seeks.insert((topic.clone(), *partition), seek);
    }
    seeks
}

#[derive(Debug)]
enum Rebalanced {
    Assigned {
        parts: Vec<Tp>,
        tables: HashMap<String, Progress>,
        seeks: BTreeMap<Tp, Option<i64>>,
    },
    Revoked,
}

struct Shared {
    rt: Handle,
    catalog: LakeCatalog,
    events: Mutex<Vec<Rebalanced>>,
    stop: Arc<AtomicBool>,
}

impl Shared {
    /// Every table's progress, retried until the catalog answers (or stop).
    fn load_progress(&self) -> HashMap<String, Progress> {
        let mut delay = Duration::from_millis(200);
        loop {
            match self.rt.block_on(load_all_progress(&self.catalog)) {
                Ok(p) => return p,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read table progress; retrying in {delay:?}");
                    if self.stop.load(Ordering::Relaxed) {
                        return HashMap::new();
                    }
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

async fn load_all_progress(
    catalog: &LakeCatalog,
) -> tlake_catalog::Result<HashMap<String, Progress>> {
    let mut out = HashMap::new();
    for name in catalog.list_tables().await? {
        match catalog.load_table(&name).await {
            Ok(t) => match tlake_catalog::progress_of(&name, t.metadata()) {
                Ok(p) => {
                    out.insert(name.clone(), p);
                }
                // Not ours to seek by; committing to it stops us with this error.
                Err(e) => {
                    tracing::warn!(table = %name, error = %e, "ignoring table for start offsets")
                }
            },
            // Dropped between list and load.
            Err(e) if !e.retryable() => tracing::warn!(table = %name, error = %e, "skipping table"),
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Whether `theirs` (a table's stored offsets, `None` without any) holds less
/// than `ours` for some partition: offsets only grow, so a commit was lost.
pub fn holds_less(theirs: Option<&Offsets>, ours: &Offsets) -> bool {
    ours.iter().any(|(topic, parts)| {
        parts.iter().any(|(partition, &mine)| {
            theirs
                .and_then(|t| t.get(topic))
                .and_then(|m| m.get(partition))
                .is_none_or(|&stored| stored < mine)
        })
    })
}

/// How often `verify_commits` compares our commits with the tables.
const VERIFY_EVERY: Duration = Duration::from_secs(15);

struct Ctx(Arc<Shared>);

impl ClientContext for Ctx {}

impl ConsumerContext for Ctx {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let parts: Vec<Tp> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_owned(), e.partition()))
                    .collect();
                let tables = self.0.load_progress();
                let seeks = seek_offsets(&tables, &parts);
                for ((topic, partition), seek) in &seeks {
                    let offset = seek.map_or(Offset::Beginning, Offset::Offset);
                    if let Err(e) = tpl.set_partition_offset(topic, *partition, offset) {
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
                self.0
                    .events
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
                self.0
                    .events
                    .lock()
                    .expect("events lock")
                    .push(Rebalanced::Revoked);
            }
        }
    }
}

struct DeadLetter {
    raw: Vec<u8>,
    topic: String,
    partition: i32,
    offset: i64,
    reason: String,
    at_us: i64,
}

/// The rows a flush writes.
enum Source<'a> {
    /// A table's buffer, in `order`, built in `target` as they are written
    /// (and again if the write is retried).
    Buffered {
        order: &'a FlushOrder,
        target: &'a SchemaRef,
    },
    /// Rows already built (dead letters).
    Batch(Part),
}

/// Why a flush stopped early.
enum FlushStop {
    /// Another writer moved a partition: re-read from the tables' offsets.
    Resync,
    /// Cannot continue at all.
    Fatal(Box<PipelineError>),
}

/// The consume loop's state.
pub struct Pipeline {
    config: Config,
    shared: Arc<Shared>,
    consumer: BaseConsumer<Ctx>,
    metrics: Arc<Metrics>,
    buffers: Buffers,
    dead: Vec<DeadLetter>,
    dead_since: Option<Instant>,
    /// Tables checked against our layout (latest metadata we saw).
    tables: HashMap<String, Table>,
    /// table → offsets we know it holds (fencing base and skip filter).
    committed: HashMap<String, Offsets>,
    /// Next offset to consume, per assigned partition.
    positions: BTreeMap<Tp, i64>,
    assigned: HashSet<Tp>,
    writer_epoch: u64,
    /// Parquet bytes per Kafka byte, learned from flushes (size trigger).
    ratio: f64,
    last_lag: Instant,
    /// Tables this process committed to since its last assignment, and when
    /// their offsets were last compared with the table's (`verify_commits`).
    committed_here: HashSet<String>,
    last_verify: Instant,
    /// Tables whose dedup window was seeded from the table.
    remembered: HashSet<String>,
    /// Reused: the record being taken, and its events' keys.
    payload: Vec<u8>,
    keys: Vec<EventKey>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("assigned", &self.assigned)
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// Connects Kafka (the catalog is already connected) and subscribes.
    pub fn new(
        config: Config,
        catalog: LakeCatalog,
        metrics: Arc<Metrics>,
        rt: Handle,
        stop: Arc<AtomicBool>,
    ) -> Result<Self, PipelineError> {
        let shared = Arc::new(Shared {
            rt,
            catalog,
            events: Mutex::new(Vec::new()),
            stop,
        });
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
            .set("fetch.max.bytes", (64 << 20).to_string());
        for (k, v) in &config.kafka.properties {
            client.set(k, v);
        }
        let consumer: BaseConsumer<Ctx> = client.create_with_context(Ctx(shared.clone()))?;
        let topics: Vec<&str> = config.kafka.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        let buffers = Buffers::new(
            config.flush.dedup_window_flushes,
            usize::try_from(config.flush.dedup_window_ids).unwrap_or(usize::MAX),
        )?;
        let writer_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default();
        Ok(Self {
            config,
            shared,
            consumer,
            metrics,
            buffers,
            dead: Vec::new(),
            dead_since: None,
            tables: HashMap::new(),
            committed: HashMap::new(),
            positions: BTreeMap::new(),
            assigned: HashSet::new(),
            writer_epoch,
            ratio: 0.15,
            last_lag: Instant::now(),
            committed_here: HashSet::new(),
            last_verify: Instant::now(),
            remembered: HashSet::new(),
            payload: Vec::new(),
            keys: Vec::new(),
        })
    }

    /// Consumes until `stop`, then flushes and commits what is buffered.
    pub fn run(mut self) -> Result<(), PipelineError> {
        self.metrics.set_ready(true);
        while !self.shared.stop.load(Ordering::Relaxed) {
            let mut payload = std::mem::take(&mut self.payload);
            let polled = match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    payload.clear();
                    payload.extend_from_slice(m.payload().unwrap_or_default());
                    Some(Ok(((m.topic().to_owned(), m.partition()), m.offset())))
                }
                Some(Err(e)) => Some(Err(e)),
                None => None,
            };
            // Rebalances run inside poll(): apply them before the message.
            self.apply_rebalances()?;
            match polled {
                Some(Ok((tp, offset))) if self.assigned.contains(&tp) => {
                    self.metrics.records.inc();
                    self.positions.insert(tp.clone(), offset + 1);
                    self.take(tp, offset, &payload)?;
                }
                Some(Ok(_)) => {} // from a partition no longer ours
                Some(Err(e)) => tracing::warn!(error = %e, "kafka consumer error"),
                None => {}
            }
            self.payload = payload;
            if self.flush_due() {
                self.flush_all()?;
            }
            if self.last_lag.elapsed() > Duration::from_secs(5) {
                self.update_lag();
            }
            if self.last_verify.elapsed() > VERIFY_EVERY {
                self.verify_commits()?;
            }
        }
        tracing::info!("stopping: flushing what is buffered");
        self.flush_all()?;
        self.metrics.set_ready(false);
        Ok(())
    }

    fn apply_rebalances(&mut self) -> Result<(), PipelineError> {
        let events: Vec<Rebalanced> =
            std::mem::take(&mut *self.shared.events.lock().expect("events lock"));
        for event in events {
            // Whatever was buffered may now belong to someone else, or be
            // re-read from the tables' offsets: drop it all.
            self.buffers.clear()?;
            self.dead.clear();
            self.dead_since = None;
            match event {
                Rebalanced::Assigned {
                    parts,
                    tables,
                    seeks,
                } => {
                    self.assigned = parts.into_iter().collect();
                    // A commit of ours the catalog lost before `verify_commits`
                    // saw it: the table now holds less than we committed. Our
                    // window still counts its ids as committed and would drop
                    // them when re-read; forget it (the re-seed below relearns
                    // what the tables hold).
                    let lost = self.committed_here.iter().any(|t| {
                        self.committed
                            .get(t)
                            .is_some_and(|ours| holds_less(tables.get(t).map(|p| &p.offsets), ours))
                    });
                    if lost {
                        tracing::warn!(
                            "a table holds less than this process committed; forgetting the id windows"
                        );
                        self.buffers.forget_windows();
                    }
                    self.committed = tables.into_iter().map(|(t, p)| (t, p.offsets)).collect();
                    // Partitions new to this process may carry copies of events
                    // another instance committed after this one last read the
                    // tables (a client re-sending a request whose outcome it
                    // never learnt, to the same partition: the gateway keys
                    // records by event id). Reload the tables and seed their
                    // id windows again from their newest appends.
                    self.tables.clear();
                    self.remembered.clear();
                    self.committed_here.clear();
                    self.positions = seeks
                        .into_iter()
                        .filter_map(|(tp, s)| s.map(|o| (tp, o)))
                        .collect();
                }
                Rebalanced::Revoked => {
                    self.assigned.clear();
                    self.positions.clear();
                }
            }
        }
        Ok(())
    }

    /// Re-reads every assigned partition from the tables' offsets, with id
    /// windows seeded again from the tables (see `Buffers::forget_windows`).
    fn resync(&mut self) -> Result<(), PipelineError> {
        self.buffers.clear()?;
        self.buffers.forget_windows();
        self.tables.clear();
        self.remembered.clear();
        self.committed_here.clear();
        self.dead.clear();
        self.dead_since = None;
        let tables = self.shared.load_progress();
        let parts: Vec<Tp> = self.assigned.iter().cloned().collect();
        let seeks = seek_offsets(&tables, &parts);
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), seek) in &seeks {
            tpl.add_partition_offset(
                topic,
                *partition,
                seek.map_or(Offset::Beginning, Offset::Offset),
            )?;
        }
        self.committed = tables.into_iter().map(|(t, p)| (t, p.offsets)).collect();
        self.positions = seeks
            .into_iter()
            .filter_map(|(tp, s)| s.map(|o| (tp, o)))
            .collect();
        if tpl.count() > 0 {
            // assign() with offsets both resets fetch positions and drops
            // messages already fetched from the old ones.
            self.consumer.assign(&tpl)?;
        }
        tracing::info!("resynchronised with the tables' offsets");
        Ok(())
    }

    fn stored(&self, table: &str, tp: &Tp) -> Option<i64> {
        self.committed.get(table)?.get(&tp.0)?.get(&tp.1).copied()
    }

    /// Routes one record to its table's buffer (or the dead letters).
    fn take(&mut self, tp: Tp, offset: i64, payload: &[u8]) -> Result<(), PipelineError> {
        let origin = Origin {
            partition: tp.1,
            offset,
        };
        let mut keys = std::mem::take(&mut self.keys);
        let scanned = scan(payload, origin, &mut keys);
        let taken = match scanned {
            Ok(record) => {
                if self.stored(&record.stream, &tp).is_some_and(|s| offset < s) {
                    Ok(()) // already in that table
                } else {
                    self.table(&record.stream, TableKind::Logs).and_then(|_| {
                        Ok(self.buffers.append(record, &keys, payload.len() as u64)?)
                    })
                }
            }
            Err(_)
                if self
                    .stored(DEAD_LETTER_TABLE, &tp)
                    .is_some_and(|s| offset < s) =>
            {
                Ok(())
            }
            Err(reason) => {
                tracing::warn!(topic = %tp.0, partition = tp.1, offset, %reason, "dead letter");
                self.dead_since.get_or_insert_with(Instant::now);
                self.dead.push(DeadLetter {
                    raw: payload.to_vec(),
                    topic: tp.0,
                    partition: tp.1,
                    offset,
                    reason,
                    at_us: now_us(),
                });
                Ok(())
            }
        };
        self.keys = keys;
        taken
    }

    /// The table, created or checked (and evolved) on first use.
    fn table(&mut self, name: &str, kind: TableKind) -> Result<Table, PipelineError> {
        if let Some(t) = self.tables.get(name) {
            return Ok(t.clone());
        }
        let mut delay = Duration::from_millis(200);
        let table = loop {
            match self
                .shared
                .rt
                .block_on(self.shared.catalog.ensure_table(name, kind))
            {
                Ok(t) => break t,
                Err(e) if e.retryable() && !self.shared.stop.load(Ordering::Relaxed) => {
                    tracing::warn!(table = name, error = %e, "catalog unavailable; retrying in {delay:?}");
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e.into()),
            }
        };
        if kind == TableKind::Logs && self.remembered.insert(name.to_owned()) {
            self.remember_recent_ids(name, &table)?;
        }
        self.tables.insert(name.to_owned(), table.clone());
        Ok(table)
    }

    /// Seeds `name`'s dedup window with the ids its newest appends hold, so a
    /// copy of a committed event re-sent after this process started is
    /// still recognised (once per table and assignment).
    fn remember_recent_ids(&mut self, name: &str, table: &Table) -> Result<(), PipelineError> {
        let flushes = self.config.flush.dedup_window_flushes as usize;
        let max_ids = usize::try_from(self.config.flush.dedup_window_ids).unwrap_or(usize::MAX);
        let mut delay = Duration::from_millis(200);
        loop {
            match self
                .shared
                .rt
                .block_on(tlake_catalog::recent::recent_event_ids(
                    table, flushes, max_ids,
                )) {
                Ok(recent) => {
                    tracing::info!(
                        table = name,
                        ids = arrow_array::Array::len(&recent.ids),
                        appends = recent.appends,
                        capped = recent.capped,
                        "dedup window seeded from the table"
                    );
                    self.buffers.remember(name, &recent.ids)?;
                    return Ok(());
                }
                Err(e) if e.retryable() && !self.shared.stop.load(Ordering::Relaxed) => {
                    tracing::warn!(table = name, error = %e, "cannot read recent ids; retrying in {delay:?}");
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(e) => {
                    // Only late duplicates of already committed events could slip through.
                    tracing::warn!(table = name, error = %e, "dedup window starts empty");
                    return Ok(());
                }
            }
        }
    }

    fn flush_due(&self) -> bool {
        let latency = self.config.max_latency();
        let target = self.config.flush.target_file_bytes as f64;
        self.buffers.stats().any(|(_, s)| {
            s.oldest.is_some_and(|t| t.elapsed() >= latency)
                || s.bytes as f64 * self.ratio >= target
        }) || self.dead_since.is_some_and(|t| t.elapsed() >= latency)
    }

    /// Writes and commits every buffer at the current cut.
    fn flush_all(&mut self) -> Result<(), PipelineError> {
        let cut: BTreeMap<Tp, i64> = self.positions.clone();
        let tables: Vec<(String, Option<i64>, u64, u64)> = self
            .buffers
            .stats()
            .map(|(t, s)| (t.to_owned(), s.max_event_time_us, s.rows, s.bytes))
            .collect();
        for (name, max_event_time, buffered_rows, buffered_bytes) in tables {
            let started = Instant::now();
            let target = self.table(&name, TableKind::Logs)?;
            let target = schema_to_arrow_schema(target.metadata().current_schema())
                .map_err(|e| PipelineError::Write(e.into()))?;
            let target = Arc::new(target);
            let order = self.buffers.flush_order(&name)?;
            let rows = order.len();
            let source = Source::Buffered {
                order: &order,
                target: &target,
            };
            match self.write_and_commit(&name, TableKind::Logs, source, &cut, max_event_time) {
                Ok(bytes) => {
                    let labels = TableLabels {
                        table: name.clone(),
                    };
                    self.metrics
                        .flush_rows
                        .get_or_create(&labels)
                        .inc_by(rows as u64);
                    self.metrics
                        .flush_bytes
                        .get_or_create(&labels)
                        .inc_by(bytes);
                    self.metrics
                        .flush_duplicates
                        .get_or_create(&labels)
                        .inc_by(buffered_rows.saturating_sub(rows as u64));
                    self.metrics
                        .flush_seconds
                        .observe(started.elapsed().as_secs_f64());
                    if bytes > 0 && buffered_bytes > 0 {
                        // Learn how Kafka bytes turn into Parquet bytes, for the size trigger.
                        let observed = bytes as f64 / buffered_bytes as f64;
                        self.ratio = 0.7 * self.ratio + 0.3 * observed;
                    }
                    self.buffers.committed(&name)?;
                }
                Err(FlushStop::Resync) => return self.resync(),
                Err(FlushStop::Fatal(e)) => return Err(*e),
            }
        }
        if !self.dead.is_empty() {
            let batch = dead_letter_batch(&self.dead);
            match self.write_and_commit(
                DEAD_LETTER_TABLE,
                TableKind::DeadLetters,
                Source::Batch(Part {
                    day: None,
                    rows: batch,
                }),
                &cut,
                None,
            ) {
                Ok(_) => {
                    self.metrics.dead_letters.inc_by(self.dead.len() as u64);
                    self.dead.clear();
                    self.dead_since = None;
                }
                Err(FlushStop::Resync) => return self.resync(),
                Err(FlushStop::Fatal(e)) => return Err(*e),
            }
        }
        if !cut.is_empty() {
            // Advisory only: lets lag tools see progress. The table decides.
            let mut tpl = TopicPartitionList::new();
            for ((topic, partition), offset) in &cut {
                let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset));
            }
            if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
                tracing::debug!(error = %e, "advisory group offset commit failed");
            }
            self.update_lag();
        }
        Ok(())
    }

    /// Writes `source`'s rows as data files of `name` and commits them with the cut's offsets.
    /// Returns Parquet bytes written.
    fn write_and_commit(
        &mut self,
        name: &str,
        kind: TableKind,
        source: Source<'_>,
        cut: &BTreeMap<Tp, i64>,
        max_event_time_us: Option<i64>,
    ) -> Result<u64, FlushStop> {
        let table = self
            .table(name, kind)
            .map_err(|e| FlushStop::Fatal(Box::new(e)))?;
        let flush_id = uuid::Uuid::now_v7();
        let rows = match &source {
            Source::Buffered { order, .. } => order.len(),
            Source::Batch(part) => part.rows.num_rows(),
        };
        // Offsets this flush moves: partitions whose cut is past what the
        // table holds, with what it holds as the fencing base.
        let mut expected: BTreeMap<String, BTreeMap<i32, Option<i64>>> = BTreeMap::new();
        let mut next = Offsets::new();
        for (tp, &to) in cut {
            let stored = self.stored(name, tp);
            if stored.is_none_or(|s| to > s) {
                expected
                    .entry(tp.0.clone())
                    .or_default()
                    .insert(tp.1, stored);
                next.entry(tp.0.clone()).or_default().insert(tp.1, to);
            }
        }
        if next.is_empty() {
            return Ok(0);
        }
        let written = if rows == 0 {
            crate::write::Written::default()
        } else {
            let mut delay = Duration::from_millis(200);
            loop {
                let (id, target_bytes) =
                    (flush_id.to_string(), self.config.flush.target_file_bytes);
                let attempt = match &source {
                    Source::Buffered { order, target } => self.shared.rt.block_on(write_files(
                        &table,
                        self.buffers.parts(name, order, target),
                        &id,
                        target_bytes,
                    )),
                    Source::Batch(part) => self.shared.rt.block_on(write_files(
                        &table,
                        [Ok(part.clone())],
                        &id,
                        target_bytes,
                    )),
                };
                match attempt {
                    Ok(w) => break w,
                    Err(crate::write::WriteError::Iceberg(e)) => {
                        if self.shared.stop.load(Ordering::Relaxed)
                            && delay >= Duration::from_secs(5)
                        {
                            return Err(FlushStop::Fatal(Box::new(
                                crate::write::WriteError::Iceberg(e).into(),
                            )));
                        }
                        tracing::warn!(table = name, error = %e, "cannot write data files; retrying in {delay:?}");
                        std::thread::sleep(delay);
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                    Err(e) => return Err(FlushStop::Fatal(Box::new(e.into()))),
                }
            }
        };
        failpoint("after-upload");
        let request = CommitRequest {
            table: name.to_owned(),
            expected,
            next: next.clone(),
            files: written.files.clone(),
            commit_id: uuid::Uuid::now_v7(),
            writer_epoch: self.writer_epoch,
            max_event_time_us,
        };
        {
            let deadline = Instant::now() + Duration::from_secs(300);
            let mut delay = Duration::from_millis(200);
            loop {
                let outcome = self
                    .shared
                    .rt
                    .block_on(self.shared.catalog.commit(&request));
                match outcome {
                    Ok(CommitOutcome::Committed(snapshot)) => {
                        failpoint("after-commit");
                        self.metrics.outcome("committed");
                        tracing::info!(
                            table = name,
                            snapshot,
                            rows = written.rows,
                            bytes = written.bytes,
                            "committed"
                        );
                        self.committed_here.insert(name.to_owned());
                        let offsets = self.committed.entry(name.to_owned()).or_default();
                        for (topic, moved) in &next {
                            *offsets = tlake_catalog::offsets::merge(offsets, topic, moved);
                        }
                        if let Some(t) = max_event_time_us {
                            let age = (now_us() - t) as f64 / 1e6;
                            self.metrics
                                .freshness_seconds
                                .get_or_create(&TableLabels {
                                    table: name.to_owned(),
                                })
                                .set(age.max(0.0));
                        }
                        break;
                    }
                    Ok(CommitOutcome::Fenced(fence)) => {
                        self.metrics.outcome("fenced");
                        self.metrics.commit_conflicts.inc();
                        tracing::warn!(
                            table = name,
                            ?fence,
                            "fenced: another writer moved a partition; re-reading"
                        );
                        return Err(FlushStop::Resync);
                    }
                    Ok(CommitOutcome::Unknown) => {
                        self.metrics.outcome("unknown");
                    }
                    Err(e) if e.retryable() => {
                        self.metrics.outcome("error");
                        tracing::warn!(table = name, error = %e, "commit failed; retrying in {delay:?}");
                    }
                    Err(e) => return Err(FlushStop::Fatal(Box::new(e.into()))),
                }
                if Instant::now() > deadline {
                    // Whatever happened is in the table's offsets; start over from them.
                    tracing::warn!(
                        table = name,
                        "commit outcome still unknown; re-reading from the tables"
                    );
                    return Err(FlushStop::Resync);
                }
                self.metrics.commit_retries.inc();
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
        // The table's metadata moved; reload lazily on next use.
        self.tables.remove(name);
        Ok(written.bytes)
    }

    /// Compares the offsets this process committed with the tables' own: a
    /// table holding less for one of our partitions lost a commit of ours
    /// that the catalog did not fence (two first commits on a table without
    /// a snapshot: Nessie keeps the second, and the first's rows and offsets
    /// are gone). Then everything is re-read from the tables, whose offsets
    /// and ids are the authority, even if no new event ever arrives on the
    /// partition to trip the fence.
    fn verify_commits(&mut self) -> Result<(), PipelineError> {
        self.last_verify = Instant::now();
        let names: Vec<String> = self.committed_here.iter().cloned().collect();
        for name in names {
            let Ok(table) = self
                .shared
                .rt
                .block_on(self.shared.catalog.load_table(&name))
            else {
                continue; // the catalog is unreachable: the next commit's retries say so
            };
            let Ok(theirs) = tlake_catalog::progress_of(&name, table.metadata()) else {
                continue;
            };
            let Some(ours) = self.committed.get(&name) else {
                continue;
            };
            let lost = self.assigned.iter().find(|tp| {
                let mine = ours.get(&tp.0).and_then(|m| m.get(&tp.1)).copied();
                let stored = theirs
                    .offsets
                    .get(&tp.0)
                    .and_then(|m| m.get(&tp.1))
                    .copied();
                mine.is_some_and(|m| stored.is_none_or(|s| s < m))
            });
            if let Some(tp) = lost {
                tracing::warn!(
                    table = name,
                    topic = %tp.0,
                    partition = tp.1,
                    "the table holds less than this process committed (a commit was lost); re-reading from the table"
                );
                self.metrics.outcome("lost");
                return self.resync();
            }
        }
        Ok(())
    }

    fn update_lag(&mut self) {
        self.last_lag = Instant::now();
        for tp in &self.assigned {
            if let Ok((_, high)) =
                self.consumer
                    .fetch_watermarks(&tp.0, tp.1, Duration::from_millis(500))
            {
                let position = self.positions.get(tp).copied().unwrap_or(0);
                self.metrics
                    .consumer_lag
                    .get_or_create(&PartitionLabels {
                        topic: tp.0.clone(),
                        partition: tp.1.to_string(),
                    })
                    .set((high - position).max(0));
            }
        }
    }
}

fn dead_letter_batch(dead: &[DeadLetter]) -> RecordBatch {
    let mut raw = BinaryBuilder::new();
    let mut topic = StringBuilder::new();
    let mut partition = Int32Builder::new();
    let mut offset = Int64Builder::new();
    let mut reason = StringBuilder::new();
    let mut at = TimestampMicrosecondBuilder::new();
    for d in dead {
        raw.append_value(&d.raw);
        topic.append_value(&d.topic);
        partition.append_value(d.partition);
        offset.append_value(d.offset);
        reason.append_value(&d.reason);
        at.append_value(d.at_us);
    }
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("raw", Arc::new(raw.finish())),
        ("topic", Arc::new(topic.finish())),
        ("kafka_partition", Arc::new(partition.finish())),
        ("kafka_offset", Arc::new(offset.finish())),
        ("reason", Arc::new(reason.finish())),
        ("dead_lettered_at", Arc::new(at.finish())),
    ];
    RecordBatch::try_from_iter(columns).expect("columns of equal length")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_holding_less_than_we_committed_lost_a_commit() {
        let ours = progress(Some(1), &[("t", 0, 10), ("t", 1, 5)]).offsets;
        let more = progress(Some(2), &[("t", 0, 12), ("t", 1, 5), ("t", 2, 3)]).offsets;
        let less = progress(Some(2), &[("t", 0, 12), ("t", 1, 4)]).offsets;
        let missing = progress(Some(2), &[("t", 0, 12)]).offsets;
        assert!(!holds_less(Some(&more), &ours));
        assert!(holds_less(Some(&less), &ours));
        assert!(holds_less(Some(&missing), &ours));
        assert!(
            holds_less(None, &ours),
            "the table is gone or has no snapshot"
        );
        assert!(!holds_less(None, &Offsets::new()));
    }

    fn progress(snapshot: Option<i64>, entries: &[(&str, i32, i64)]) -> Progress {
        let mut offsets = Offsets::new();
        for &(t, p, o) in entries {
            offsets.entry(t.to_owned()).or_default().insert(p, o);
        }
        Progress {
            snapshot_id: snapshot,
            offsets,
            newest_event_time_us: None,
        }
    }

    fn parts() -> Vec<Tp> {
        vec![("a".into(), 0), ("a".into(), 1)]
    }

    #[test]
    fn seeks_to_the_lowest_table_offset() {
        let tables = HashMap::from([
            (
                "logs".to_owned(),
                progress(Some(1), &[("a", 0, 100), ("a", 1, 50)]),
            ),
            (
                "dead_letters".to_owned(),
                progress(Some(2), &[("a", 0, 7), ("a", 1, 60)]),
            ),
            ("other".to_owned(), progress(Some(3), &[("b", 0, 9)])),
        ]);
        let seeks = seek_offsets(&tables, &parts());
        assert_eq!(seeks[&("a".to_owned(), 0)], Some(7));
        assert_eq!(seeks[&("a".to_owned(), 1)], Some(50));
    }

    #[test]
    fn unknown_progress_means_the_beginning() {
        // Nothing committed anywhere.
        assert_eq!(
            seek_offsets(&HashMap::new(), &parts())[&("a".to_owned(), 0)],
            None
        );
        // A table created but never committed may hold rows of any partition.
        let tables = HashMap::from([
            (
                "logs".to_owned(),
                progress(Some(1), &[("a", 0, 100), ("a", 1, 50)]),
            ),
            ("new".to_owned(), progress(None, &[])),
        ]);
        assert_eq!(seek_offsets(&tables, &parts())[&("a".to_owned(), 0)], None);
        // A table that committed the topic but not this partition.
        let tables = HashMap::from([("logs".to_owned(), progress(Some(1), &[("a", 0, 100)]))]);
        let seeks = seek_offsets(&tables, &parts());
        assert_eq!(seeks[&("a".to_owned(), 0)], Some(100));
        assert_eq!(seeks[&("a".to_owned(), 1)], None);
    }
}
