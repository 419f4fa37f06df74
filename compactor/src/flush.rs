//! flush: when — the latency cap, or the size target through the
//! Parquet:Kafka byte ratio learned from earlier flushes — and the flush
//! itself, in two halves so that consuming goes on while files are written:
//!
//! 1. [`Pipeline::launch`], on the consume thread: one cut of consumed
//!    positions; per table its checked metadata, the order of its rows
//!    (DuckDB's sort) and its buffered events taken away
//!    ([`Buffers::take`](crate::buffer::Buffers::take)), the buffer starting
//!    the next batch at once; then the dead letters. A thread of its own —
//!    the flight — writes and commits every table at that cut
//!    ([`crate::commit`]), one after another.
//! 2. [`Pipeline::land`], on the consume thread again, as soon as the
//!    flight is down (looked at after every poll) and at the latest before
//!    the next flush, a rebalance, a commit check or the stop: what the flight
//!    committed becomes this process's view of the tables (the next flush's
//!    fencing base), the group offsets follow; a fence or an unknown outcome
//!    resyncs from the tables, as before.
//!
//! So at most one flight is in the air and commits keep their order; the
//! rebalance callback waits for it ([`FlightGate`]) before reading the
//! tables' progress, so an assignment never starts from offsets a commit
//! in the air is about to move. The cost is a second batch in memory while
//! the first is written.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use arrow_schema::SchemaRef;
use tlake_catalog_client::iceberg::arrow::schema_to_arrow_schema;
use tlake_catalog_client::iceberg::table::Table;
use tlake_catalog_client::write::Part;
use tlake_catalog_client::{DEAD_LETTER_TABLE, Offsets, TableKind, progress_of};

use crate::buffer::{Batch, FlushOrder, PartLimits};
use crate::commit::{Committed, FlushContext, FlushStop, Source, write_and_commit};
use crate::consume::{self, Tp};
use crate::lake::Lake;
use crate::metrics::{Metrics, TableLabels};
use crate::pipeline::{Pipeline, PipelineError};
use crate::progress::Moves;

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

/// Whether a flight is in the air. The rebalance callback (inside the
/// consumer's poll, on the consume thread) waits here for it to land.
#[derive(Debug, Default)]
pub struct FlightGate {
    flying: Mutex<bool>,
    landed: Condvar,
}

impl FlightGate {
    fn take_off(&self) {
        *self.flying.lock().unwrap_or_else(|p| p.into_inner()) = true;
    }

    fn touch_down(&self) {
        *self.flying.lock().unwrap_or_else(|p| p.into_inner()) = false;
        self.landed.notify_all();
    }

    /// Returns once no flight is in the air.
    pub fn wait(&self) {
        let mut flying = self.flying.lock().unwrap_or_else(|p| p.into_inner());
        while *flying {
            flying = self.landed.wait(flying).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Opens the gate when the flight's thread ends, however it ends.
struct TouchDown(Arc<FlightGate>);

impl Drop for TouchDown {
    fn drop(&mut self) {
        self.0.touch_down();
    }
}

/// The rows one table's share of a flight writes.
enum FlightRows {
    /// A log table's batch, in `order`, built in `target`.
    Taken {
        batch: Batch,
        order: FlushOrder,
        target: SchemaRef,
    },
    /// The dead letters, already rows.
    DeadLetters(Part),
}

/// One table's share of a flight (`T`: the table it is written to; the
/// flight's tests use a name).
struct TableFlush<T = Table> {
    name: String,
    table: T,
    rows: FlightRows,
    moves: Moves,
    max_event_time_us: Option<i64>,
    /// Rows and Kafka bytes buffered (copies included), for the metrics and
    /// the size trigger.
    buffered_rows: u64,
    buffered_bytes: u64,
}

/// What one table's share committed.
struct Landed {
    name: String,
    next: Offsets,
    rows: u64,
    bytes: u64,
    buffered_rows: u64,
    buffered_bytes: u64,
    seconds: f64,
    /// The batch written, given back to the buffer (none for dead letters).
    batch: Option<Batch>,
    dead_letters: u64,
}

/// A flush being written and committed on its own thread.
#[derive(Debug)]
pub struct Flight {
    cut: BTreeMap<Tp, i64>,
    /// Per table flown, the newest event time it holds once committed: the
    /// newest of its snapshot when the flush started and of the batch.
    newest: BTreeMap<String, i64>,
    handle: JoinHandle<Result<Vec<Landed>, FlushStop>>,
}

impl Flight {
    /// Whether its thread is done (landing it will not wait).
    pub fn is_down(&self) -> bool {
        self.handle.is_finished()
    }
}

/// What the flight's thread needs besides the tables' shares.
struct Crew {
    lake: Arc<Lake>,
    metrics: Arc<Metrics>,
    writer_epoch: u64,
    target_file_bytes: u64,
    writers: usize,
    min_rows_per_writer: usize,
    limits: PartLimits,
}

/// A record consumed this long after Kafka stamped it means this process
/// is behind its topics (a restart, a burst): see [`Pipeline::catching_up`].
pub(crate) const BEHIND_MS: i64 = 1_000;

/// While catching up, a flush starts once a buffer would make a file of at
/// least this share of the target size.
const CATCH_UP_FILE_SHARE: u64 = 16;

impl Pipeline {
    /// Whether a buffer (or the dead letters) reached the latency cap or
    /// the size target, or the process is catching up.
    pub(crate) fn flush_due(&self) -> bool {
        let latency = self.config.max_latency();
        let target = self.config.flush.target_file_bytes;
        self.buffers.stats().any(|(_, s)| {
            s.oldest.is_some_and(|t| t.elapsed() >= latency) || self.trigger.due(s.bytes, target)
        }) || self.dead.due(latency)
            || self.catching_up()
    }

    /// Behind the topics, with no flight in the air and a buffer worth a
    /// file (or the backlog read to its end): flush now rather than at the
    /// latency cap. The cap is there for freshness, and rows that are
    /// already late gain nothing by waiting, while the writer's core would
    /// sit idle. So a backlog is written in flights back to back, each as
    /// large as what arrived while the last was written (the size target
    /// still bounds them), consuming and writing overlapped from the first
    /// second instead of the fifth.
    fn catching_up(&self) -> bool {
        if !self.behind || self.flight.is_some() {
            return false;
        }
        let floor = self.config.flush.target_file_bytes / CATCH_UP_FILE_SHARE;
        self.buffers
            .stats()
            .any(|(_, s)| self.drained || self.trigger.due(s.bytes, floor))
    }

    /// Lands the flight in the air, if any, then launches one for what is
    /// buffered at the current cut.
    pub(crate) fn flush_all(&mut self) -> Result<(), PipelineError> {
        self.land()?;
        self.launch()
    }

    /// Takes every buffer (and the dead letters) at one cut and sends them
    /// to be written and committed on the flight's thread.
    fn launch(&mut self) -> Result<(), PipelineError> {
        debug_assert!(self.flight.is_none(), "one flight at a time");
        let cut = self.positions.cut();
        let buffered: Vec<(String, Option<i64>, u64, u64)> = self
            .buffers
            .stats()
            .map(|(t, s)| (t.to_owned(), s.max_event_time_us, s.rows, s.bytes))
            .collect();
        let mut shares = Vec::new();
        let mut newest = BTreeMap::new();
        for (name, max_event_time_us, buffered_rows, buffered_bytes) in buffered {
            let table = self
                .tables
                .get(&self.lake, &mut self.buffers, &name, TableKind::Logs)?;
            let committed = progress_of(&name, table.metadata())
                .ok()
                .and_then(|p| p.newest_event_time_us);
            if let Some(us) = committed.max(max_event_time_us) {
                newest.insert(name.clone(), us);
            }
            let target = Arc::new(
                schema_to_arrow_schema(table.metadata().current_schema())
                    .map_err(|e| PipelineError::Catalog(e.into()))?,
            );
            let order = self
                .buffers
                .flush_order(&name, self.tables.sort_by(&name))?;
            let batch = self.buffers.take(&name)?;
            match self.positions.moves(&name, &cut) {
                Some(moves) => shares.push(TableFlush {
                    name,
                    table,
                    rows: FlightRows::Taken {
                        batch,
                        order,
                        target,
                    },
                    moves,
                    max_event_time_us,
                    buffered_rows,
                    buffered_bytes,
                }),
                // The table holds every record buffered (none to commit).
                None => self.buffers.give_back(&name, batch),
            }
        }
        if !self.dead.is_empty() {
            let table = self.tables.get(
                &self.lake,
                &mut self.buffers,
                DEAD_LETTER_TABLE,
                TableKind::DeadLetters,
            )?;
            if let Some(moves) = self.positions.moves(DEAD_LETTER_TABLE, &cut) {
                shares.push(TableFlush {
                    name: DEAD_LETTER_TABLE.to_owned(),
                    table,
                    rows: FlightRows::DeadLetters(Part {
                        day: None,
                        rows: self.dead.batch(),
                    }),
                    moves,
                    max_event_time_us: None,
                    buffered_rows: self.dead.len() as u64,
                    buffered_bytes: 0,
                });
            }
            self.dead.clear();
        }
        if shares.is_empty() {
            if !cut.is_empty() {
                consume::commit_advisory(&self.consumer, &cut, &self.newest_event_us);
                self.record_lag();
            }
            return Ok(());
        }
        let crew = Crew {
            lake: self.lake.clone(),
            metrics: self.metrics.clone(),
            writer_epoch: self.writer_epoch,
            target_file_bytes: self.config.flush.target_file_bytes,
            writers: self.config.writers(),
            min_rows_per_writer: usize::try_from(self.config.flush.min_rows_per_writer)
                .unwrap_or(usize::MAX),
            limits: self.buffers.part_limits(),
        };
        self.gate.take_off();
        let touch_down = TouchDown(self.gate.clone());
        let handle = std::thread::Builder::new()
            .name("tlake-flush".into())
            .spawn(move || {
                let _touch_down = touch_down;
                fly(&crew, shares)
            })
            .map_err(|e| PipelineError::Flight(format!("cannot start the flush thread: {e}")))?;
        self.flight = Some(Flight {
            cut,
            newest,
            handle,
        });
        Ok(())
    }

    /// Waits for the flight in the air, if any, and applies what it
    /// committed; a fence or an unknown outcome resyncs from the tables.
    pub(crate) fn land(&mut self) -> Result<(), PipelineError> {
        let Some(flight) = self.flight.take() else {
            return Ok(());
        };
        let outcome = flight.handle.join().unwrap_or_else(|panic| {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".into());
            Err(FlushStop::Fatal(Box::new(PipelineError::Flight(format!(
                "the flush thread panicked: {message}"
            )))))
        });
        let landed = match outcome {
            Ok(landed) => landed,
            Err(FlushStop::Resync) => return self.resync(),
            Err(FlushStop::Fatal(e)) => return Err(*e),
        };
        for share in landed {
            if let Some(&us) = flight.newest.get(&share.name) {
                let known = self.newest_event_us.entry(share.name.clone()).or_insert(us);
                *known = (*known).max(us);
            }
            self.positions.committed(&share.name, &share.next);
            self.tables.reload(&share.name);
            let m = &self.metrics;
            if share.name == DEAD_LETTER_TABLE {
                m.dead_letters.inc_by(share.dead_letters);
            } else {
                let labels = TableLabels {
                    table: share.name.clone(),
                };
                m.flush_rows.get_or_create(&labels).inc_by(share.rows);
                m.flush_bytes.get_or_create(&labels).inc_by(share.bytes);
                m.flush_duplicates
                    .get_or_create(&labels)
                    .inc_by(share.buffered_rows.saturating_sub(share.rows));
                m.flush_seconds.observe(share.seconds);
                self.trigger.learn(share.buffered_bytes, share.bytes);
            }
            if let Some(batch) = share.batch {
                self.buffers.give_back(&share.name, batch);
            }
        }
        consume::commit_advisory(&self.consumer, &flight.cut, &self.newest_event_us);
        self.record_lag();
        Ok(())
    }
}

/// The flight: every share written and committed in turn, on the flight's
/// thread.
fn fly(crew: &Crew, shares: Vec<TableFlush>) -> Result<Vec<Landed>, FlushStop> {
    let cx = FlushContext {
        lake: &crew.lake,
        metrics: &crew.metrics,
        writer_epoch: crew.writer_epoch,
        target_file_bytes: crew.target_file_bytes,
        writers: crew.writers,
        min_rows_per_writer: crew.min_rows_per_writer,
    };
    fly_with(shares, crew.limits, |share, source| {
        write_and_commit(
            cx,
            &share.table,
            &share.name,
            source,
            share.moves.clone(),
            share.max_event_time_us,
        )
    })
}

/// The shares published in order by `publish` (write and commit); the
/// first that does not commit stops the flight with its reason, and what
/// the shares before it committed is dropped with it: a stop means a resync
/// (the tables say what landed) or the end of the process.
fn fly_with<T>(
    shares: Vec<TableFlush<T>>,
    limits: PartLimits,
    mut publish: impl FnMut(&TableFlush<T>, Source<'_>) -> Result<Committed, FlushStop>,
) -> Result<Vec<Landed>, FlushStop> {
    let mut landed = Vec::with_capacity(shares.len());
    for share in shares {
        let started = Instant::now();
        let (source, rows) = match &share.rows {
            FlightRows::Taken {
                batch,
                order,
                target,
            } => (
                Source::Taken {
                    batch,
                    order,
                    target,
                    limits,
                },
                order.len() as u64,
            ),
            FlightRows::DeadLetters(part) => {
                (Source::Batch(part.clone()), part.rows.num_rows() as u64)
            }
        };
        let done = publish(&share, source)?;
        let (batch, dead_letters) = match share.rows {
            FlightRows::Taken { batch, .. } => (Some(batch), 0),
            FlightRows::DeadLetters(_) => (None, rows),
        };
        landed.push(Landed {
            name: share.name,
            next: share.moves.next,
            rows,
            bytes: done.bytes,
            buffered_rows: share.buffered_rows,
            buffered_bytes: share.buffered_bytes,
            seconds: started.elapsed().as_secs_f64(),
            batch,
            dead_letters,
        });
    }
    Ok(landed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::Buffers;

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

    fn share(name: &str, partition: i32, next: i64, dead_letters: usize) -> TableFlush<String> {
        let rows = match dead_letters {
            0 => FlightRows::Taken {
                batch: Batch::default(),
                order: FlushOrder::default(),
                target: Arc::new(arrow_schema::Schema::empty()),
            },
            n => FlightRows::DeadLetters(Part {
                day: None,
                rows: arrow_array::RecordBatch::try_new(
                    Arc::new(arrow_schema::Schema::new(vec![arrow_schema::Field::new(
                        "x",
                        arrow_schema::DataType::Int64,
                        false,
                    )])),
                    vec![Arc::new(arrow_array::Int64Array::from(vec![0; n]))],
                )
                .expect("batch"),
            }),
        };
        let mut moves = Moves::default();
        moves
            .next
            .entry("t".into())
            .or_default()
            .insert(partition, next);
        TableFlush {
            name: name.into(),
            table: name.into(),
            rows,
            moves,
            max_event_time_us: None,
            buffered_rows: 5,
            buffered_bytes: 500,
        }
    }

    fn limits() -> PartLimits {
        Buffers::new(1, 1).expect("duckdb").part_limits()
    }

    #[test]
    fn a_flight_commits_its_shares_in_order_and_lands_what_they_moved() {
        let mut published = Vec::new();
        let landed = fly_with(
            vec![share("a", 0, 10, 0), share("dead_letters", 1, 7, 2)],
            limits(),
            |s, source| {
                published.push((s.table.clone(), matches!(source, Source::Batch(_))));
                Ok(Committed {
                    snapshot: 1,
                    bytes: 100,
                })
            },
        )
        .expect("committed");
        assert_eq!(
            published,
            [("a".to_owned(), false), ("dead_letters".to_owned(), true)]
        );
        let moved: Vec<_> = landed
            .iter()
            .map(|l| (l.name.as_str(), l.next["t"].clone()))
            .collect();
        assert_eq!(
            moved,
            [
                ("a", BTreeMap::from([(0, 10)])),
                ("dead_letters", BTreeMap::from([(1, 7)]))
            ]
        );
        assert!(
            landed[0].batch.is_some(),
            "the batch goes back to its buffer"
        );
        assert_eq!((landed[1].dead_letters, landed[1].bytes), (2, 100));
    }

    #[test]
    fn the_first_share_that_does_not_commit_stops_the_flight() {
        for stop in [
            FlushStop::Resync,
            FlushStop::Fatal(Box::new(PipelineError::Flight("x".into()))),
        ] {
            let resync = matches!(stop, FlushStop::Resync);
            let mut stop = Some(stop);
            let mut published = Vec::new();
            let outcome = fly_with(
                vec![
                    share("a", 0, 1, 0),
                    share("b", 0, 1, 0),
                    share("c", 0, 1, 0),
                ],
                limits(),
                |s, _| {
                    published.push(s.table.clone());
                    match s.table.as_str() {
                        "b" => Err(stop.take().expect("once")),
                        _ => Ok(Committed {
                            snapshot: 1,
                            bytes: 1,
                        }),
                    }
                },
            );
            assert_eq!(published, ["a", "b"], "c is never written");
            match outcome {
                Err(FlushStop::Resync) => assert!(resync),
                Err(FlushStop::Fatal(_)) => assert!(!resync),
                Ok(landed) => panic!("landed {} shares", landed.len()),
            }
        }
    }

    #[test]
    fn the_gate_opens_when_the_flight_lands() {
        let gate = Arc::new(FlightGate::default());
        gate.wait(); // nothing in the air: returns at once
        gate.take_off();
        let touch_down = TouchDown(gate.clone());
        let flight = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            drop(touch_down);
        });
        let waited = Instant::now();
        gate.wait();
        assert!(waited.elapsed() >= std::time::Duration::from_millis(40));
        flight.join().expect("flight");
    }
}
