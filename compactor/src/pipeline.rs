//! pipeline: the consume → buffer → flush → commit loop, on one blocking
//! thread.
//!
//! Progress lives in the tables (ARCHITECTURE §2): on every assignment the
//! rebalance callback ([`crate::consume`]) reads every table's committed
//! offsets and seeks each partition to the lowest of them ([`crate::progress`]);
//! each record is then skipped for its table if that table already holds
//! it, or routed to its table's buffer ([`crate::buffer`], checked tables in
//! [`crate::tables`]) or to the dead letters ([`crate::dead_letters`]). A
//! flush ([`crate::flush`]) takes every table's buffer at one cut of
//! consumed positions; its flight writes and commits each table with that
//! cut ([`crate::commit`]) on a thread of its own while this one consumes,
//! and is landed as soon as it is down, at the latest before the next
//! flush, a rebalance or a commit check.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::message::Message;
use tlake_catalog_client::{DEAD_LETTER_TABLE, LakeCatalog, TableKind};
use tlake_record_reader::decode::{EventKey, Origin, scan};
use tokio::runtime::Handle;

use crate::buffer::Buffers;
use crate::config::Config;
use crate::consume::{self, KafkaConsumer, Rebalanced, Tp};
use crate::dead_letters::DeadLetters;
use crate::flush::{Flight, FlightGate, SizeTrigger};
use crate::lake::Lake;
use crate::metrics::Metrics;
use crate::progress::{self, Positions};
use crate::tables::Tables;

pub use crate::commit::FAILPOINT_ENV;

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
    Catalog(#[from] tlake_catalog_client::Error),
    /// The flush thread could not start, or panicked.
    #[error("{0}")]
    Flight(String),
}

/// How often [`Pipeline::verify_commits`] compares our commits with the tables.
const VERIFY_EVERY: Duration = Duration::from_secs(15);
/// How often the consumer lag gauge is refreshed between flushes.
const LAG_EVERY: Duration = Duration::from_secs(5);

/// The consume loop's state.
pub struct Pipeline {
    pub(crate) config: Config,
    pub(crate) lake: Arc<Lake>,
    pub(crate) consumer: KafkaConsumer,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) buffers: Buffers,
    pub(crate) dead: DeadLetters,
    pub(crate) tables: Tables,
    pub(crate) positions: Positions,
    pub(crate) trigger: SizeTrigger,
    pub(crate) writer_epoch: u64,
    /// The flush being written and committed, if any.
    pub(crate) flight: Option<Flight>,
    /// Whether it is in the air (the rebalance callback waits on it).
    pub(crate) gate: Arc<FlightGate>,
    /// Per table this instance committed to, the newest event time it holds
    /// (µs): sent with the group offsets, for the gateway's watermarks.
    pub(crate) newest_event_us: BTreeMap<String, i64>,
    /// Whether the record consumed last was stamped by Kafka (its producer)
    /// over a second before it was consumed: this process is behind its
    /// topics (see `Pipeline::catching_up`).
    pub(crate) behind: bool,
    /// Whether the last poll found nothing to read.
    pub(crate) drained: bool,
    last_lag: Instant,
    last_verify: Instant,
    /// Reused: the record being taken, and its events' keys.
    payload: Vec<u8>,
    keys: Vec<EventKey>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("positions", &self.positions)
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
        let lake = Arc::new(Lake::new(rt, catalog, stop));
        let gate = Arc::new(FlightGate::default());
        let consumer = consume::subscribe(&config, lake.clone(), gate.clone())?;
        let buffers = Buffers::new(
            config.flush.dedup_window_flushes,
            usize::try_from(config.flush.dedup_window_ids).unwrap_or(usize::MAX),
        )?;
        let writer_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default();
        Ok(Self {
            tables: Tables::new(&config),
            config,
            lake,
            consumer,
            metrics,
            buffers,
            dead: DeadLetters::default(),
            positions: Positions::default(),
            trigger: SizeTrigger::default(),
            writer_epoch,
            flight: None,
            newest_event_us: BTreeMap::new(),
            behind: false,
            drained: false,
            gate,
            last_lag: Instant::now(),
            last_verify: Instant::now(),
            payload: Vec::new(),
            keys: Vec::new(),
        })
    }

    /// Consumes until `stop`, then flushes and commits what is buffered.
    pub fn run(mut self) -> Result<(), PipelineError> {
        self.metrics.set_ready(true);
        while !self.lake.stopping() {
            let mut payload = std::mem::take(&mut self.payload);
            let polled = match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    self.behind = m.timestamp().to_millis().is_some_and(|stamped| {
                        crate::dead_letters::now_us() / 1000 - stamped > crate::flush::BEHIND_MS
                    });
                    payload.clear();
                    payload.extend_from_slice(m.payload().unwrap_or_default());
                    Some(Ok(((m.topic().to_owned(), m.partition()), m.offset())))
                }
                Some(Err(e)) => Some(Err(e)),
                None => None,
            };
            self.drained = polled.is_none();
            // Rebalances run inside poll(): apply them before the message.
            self.apply_rebalances()?;
            match polled {
                Some(Ok((tp, offset))) if self.positions.holds(&tp) => {
                    self.metrics.records.inc();
                    self.positions.consumed(&tp, offset);
                    self.take(&tp, offset, &payload)?;
                }
                Some(Ok(_)) => {} // from a partition no longer ours
                Some(Err(e)) => tracing::warn!(error = %e, "kafka consumer error"),
                None => {}
            }
            self.payload = payload;
            // Land a finished flight at once: the group offsets (the gateway's
            // watermarks and lag) follow each commit, not the next flush.
            if self.flight.as_ref().is_some_and(Flight::is_down) {
                self.land()?;
            }
            if self.flush_due() {
                self.flush_all()?;
            }
            if self.last_lag.elapsed() > LAG_EVERY {
                self.record_lag();
            }
            if self.last_verify.elapsed() > VERIFY_EVERY {
                self.verify_commits()?;
            }
        }
        tracing::info!("stopping: flushing what is buffered");
        self.flush_all()?;
        self.land()?;
        self.metrics.set_ready(false);
        Ok(())
    }

    fn apply_rebalances(&mut self) -> Result<(), PipelineError> {
        let events = consume::take_rebalances(&self.consumer);
        if !events.is_empty() {
            // The callback waited for the flight; what it committed is part
            // of what this process held before the assignment changed.
            self.land()?;
        }
        for event in events {
            // Whatever was buffered may now belong to someone else, or be
            // re-read from the tables' offsets: drop it all.
            self.buffers.clear()?;
            self.dead.clear();
            match event {
                Rebalanced::Assigned {
                    parts,
                    tables,
                    seeks,
                } => {
                    // A commit of ours the catalog lost before `verify_commits`
                    // saw it: the table now holds less than we committed. Our
                    // window still counts its ids as committed and would drop
                    // them when re-read; forget it (the re-seed below relearns
                    // what the tables hold).
                    if self.positions.lost_in(&tables) {
                        tracing::warn!(
                            "a table holds less than this process committed; forgetting the id windows"
                        );
                        self.buffers.forget_windows();
                    }
                    // Partitions new to this process may carry copies of events
                    // another instance committed after this one last read the
                    // tables (a client re-sending a request whose outcome it
                    // never learnt, to the same partition: the gateway keys
                    // records by event id). Reload the tables and seed their
                    // id windows again from their newest appends.
                    self.tables.forget();
                    self.positions.assign(parts, tables, seeks);
                }
                Rebalanced::Revoked => self.positions.revoke(),
            }
        }
        Ok(())
    }

    /// Re-reads every assigned partition from the tables' offsets, with id
    /// windows seeded again from the tables (see `Buffers::forget_windows`).
    pub(crate) fn resync(&mut self) -> Result<(), PipelineError> {
        self.buffers.clear()?;
        self.buffers.forget_windows();
        self.tables.forget();
        self.dead.clear();
        let tables = progress::load_all(&self.lake);
        let parts: Vec<Tp> = self
            .positions
            .assigned()
            .map(|(tp, _)| tp.clone())
            .collect();
        let seeks = progress::seek_offsets(&tables, &parts);
        consume::seek(&self.consumer, &seeks)?;
        self.positions.restart(tables, seeks);
        tracing::info!("resynchronised with the tables' offsets");
        Ok(())
    }

    /// Routes one record to its table's buffer (or the dead letters).
    fn take(&mut self, tp: &Tp, offset: i64, payload: &[u8]) -> Result<(), PipelineError> {
        let origin = Origin {
            partition: tp.1,
            offset,
        };
        let mut keys = std::mem::take(&mut self.keys);
        let taken = match scan(payload, origin, &mut keys) {
            Ok(record) if self.positions.already_in(&record.stream, tp, offset) => Ok(()),
            Ok(record) => self
                .tables
                .get(
                    &self.lake,
                    &mut self.buffers,
                    &record.stream,
                    TableKind::Logs,
                )
                .and_then(|_| Ok(self.buffers.append(record, &keys, payload.len() as u64)?)),
            Err(_) if self.positions.already_in(DEAD_LETTER_TABLE, tp, offset) => Ok(()),
            Err(reason) => {
                self.dead.push(tp, offset, payload, reason);
                Ok(())
            }
        };
        self.keys = keys;
        taken
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
        self.land()?;
        let names: Vec<String> = self.positions.committed_here().map(str::to_owned).collect();
        for name in names {
            // Unreachable, or not ours: the next commit's retries and checks say so.
            let Ok(table) = self.lake.block_on(self.lake.catalog.load_table(&name)) else {
                continue;
            };
            let Ok(theirs) = tlake_catalog_client::progress_of(&name, table.metadata()) else {
                continue;
            };
            if let Some(tp) = self.positions.lost_at(&name, &theirs.offsets) {
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

    pub(crate) fn record_lag(&mut self) {
        self.last_lag = Instant::now();
        consume::record_lag(&self.consumer, self.positions.assigned(), &self.metrics);
    }
}
