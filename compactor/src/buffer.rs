//! buffer: records waiting to be flushed, per table; which events a flush
//! writes (the first copy of each event id, none committed recently) and in
//! which order — (day, service, event_time), or (day, event_time) for a
//! stream sorted by time alone — decided by a sort in DuckDB.
//!
//! What is kept: the records' encoded bytes in a reused [`Arena`], and one
//! small fixed-width key row per event — (row, day, service number, event
//! time) — appended to an in-memory DuckDB table in chunks. The flush query
//! returns row numbers in output order, and only then are those events
//! turned into Arrow rows ([`crate::rows`]), once, directly in the table's
//! layout. Duplicate ids are dropped on arrival against a hash set of the
//! ids buffered and those of the last committed flushes ([`SeenIds`]).
//!
//! Profiling showed why: the earlier shapes — whole rows in DuckDB (~70K
//! events per CPU-second), then every event decoded to Arrow on arrival and
//! gathered at the end (~170K), and DuckDB grouping by id for dedup and
//! anti-joining a window that grows with every flush — spent most of their
//! time allocating, copying and hashing.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type};
use arrow_array::{FixedSizeBinaryArray, Int32Array, Int64Array, RecordBatch};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};
use duckdb::Connection;
use tlake_catalog_client::SortBy;
use tlake_record_reader::decode::{EventKey, RecordInfo, Scanned};

use tlake_catalog_client::write::Part;
use tlake_record_reader::rows::Rows;

/// Failure inside DuckDB or Arrow (a bug or out of memory; not retryable).
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    /// From DuckDB.
    #[error("DuckDB buffer: {0}")]
    DuckDb(#[from] duckdb::Error),
    /// From Arrow.
    #[error("Arrow buffer: {0}")]
    Arrow(#[from] ArrowError),
    /// A buffered event did not turn into a row (a bug: it was validated).
    #[error("building rows: {0}")]
    Rows(String),
}

/// Counters of one table's buffer.
#[derive(Debug, Default, Clone)]
pub struct TableStats {
    /// Rows buffered (duplicates included).
    pub rows: u64,
    /// Kafka payload bytes buffered.
    pub bytes: u64,
    /// When the oldest buffered row arrived.
    pub oldest: Option<Instant>,
    /// Newest event time buffered (µs).
    pub max_event_time_us: Option<i64>,
}

/// The rows a flush writes, in order: (buffered row number, day).
#[derive(Debug, Default)]
pub struct FlushOrder {
    rows: Vec<(u32, i32)>,
}

impl FlushOrder {
    /// Rows to write.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The whole order as one run.
    pub fn whole(&self) -> OrderRun<'_> {
        OrderRun(&self.rows)
    }

    /// The order cut into at most `writers` contiguous runs of near-equal
    /// length, none shorter than `min_rows` unless it is the only one: each
    /// is written as files of its own, on a thread of its own. Contiguous,
    /// so each file keeps the sort and covers its own range of it.
    pub fn runs(&self, writers: usize, min_rows: usize) -> Vec<OrderRun<'_>> {
        let n = (self.rows.len() / min_rows.max(1)).clamp(1, writers.max(1));
        let len = self.rows.len().div_ceil(n).max(1);
        self.rows.chunks(len).map(OrderRun).collect()
    }
}

/// A contiguous run of a [`FlushOrder`]: what one writer builds and writes.
#[derive(Debug, Clone, Copy)]
pub struct OrderRun<'a>(&'a [(u32, i32)]);

impl OrderRun<'_> {
    /// Rows in the run.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// No rows.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Bytes of buffered records: fixed-size chunks that are kept across
/// flushes, so a steady stream reuses memory instead of growing (copying)
/// one vector and page-faulting fresh memory on every flush.
#[derive(Debug, Default)]
struct Arena {
    chunks: Vec<Vec<u8>>,
    /// Chunks in use; the last of them takes new bytes.
    used: usize,
}

const ARENA_CHUNK: usize = 32 << 20;

impl Arena {
    /// Stores `bytes`; returns where (chunk number × 2^32 + offset).
    fn push(&mut self, bytes: &[u8]) -> u64 {
        let fits = |c: &Vec<u8>| c.capacity() - c.len() >= bytes.len();
        if self.used == 0 || !fits(&self.chunks[self.used - 1]) {
            // The next kept chunk if it is big enough, else a new one.
            match self.chunks.get_mut(self.used) {
                Some(c) if c.capacity() >= bytes.len() => c.clear(),
                _ => self
                    .chunks
                    .insert(self.used, Vec::with_capacity(ARENA_CHUNK.max(bytes.len()))),
            }
            self.used += 1;
        }
        let chunk = &mut self.chunks[self.used - 1];
        let at = chunk.len();
        chunk.extend_from_slice(bytes);
        (((self.used - 1) as u64) << 32) | at as u64
    }

    fn get(&self, at: u64, len: usize) -> Option<&[u8]> {
        let (chunk, offset) = ((at >> 32) as usize, (at & 0xffff_ffff) as usize);
        self.chunks.get(chunk)?.get(offset..offset + len)
    }

    /// Forgets the bytes, keeping as many chunks as this flush used (a
    /// burst's extra memory goes back once flushes are small again).
    fn clear(&mut self) {
        self.chunks.truncate(self.used);
        for c in &mut self.chunks {
            c.clear();
        }
        self.used = 0;
    }
}

/// One buffered event.
#[derive(Debug, Clone, Copy)]
struct Row {
    record: u32,
    start: u64,
    len: u32,
    time_us: i64,
}

/// Key rows not yet appended to DuckDB.
#[derive(Debug, Default)]
struct PendingKeys {
    idx: Vec<i64>,
    day: Vec<i32>,
    service: Vec<i32>,
    time: Vec<i64>,
}

/// Key rows are handed to DuckDB in chunks of this many.
const KEY_CHUNK: usize = 1 << 16;
/// Rows per output part: small enough that a part's Arrow memory is
/// reused by the next (no fresh pages per flush) and stays in cache until
/// Parquet has encoded it.
const OUT_ROWS: usize = 1 << 13;
/// Bytes per output part: the events' encoded bytes plus the record text
/// each row repeats; a part goes over by at most its last row.
const OUT_BYTES: usize = 64 << 20;
const DAY_US: i64 = 86_400_000_000;

/// A table's buffered events — the records' bytes and one row per event
/// pointing into them — as a flush takes them away: the flush builds its
/// Arrow parts from a `Batch` on another thread while the buffer fills the
/// next one, then gives it back to be reused.
#[derive(Debug, Default)]
pub struct Batch {
    arena: Arena,
    records: Vec<RecordInfo>,
    /// Per record: the text every one of its rows repeats (service name,
    /// resource attributes), counted against a part's byte budget.
    record_text: Vec<usize>,
    rows: Vec<Row>,
}

/// How big an output part may get ([`OUT_ROWS`], [`OUT_BYTES`]; smaller in tests).
#[derive(Debug, Clone, Copy)]
pub struct PartLimits {
    rows: usize,
    bytes: usize,
}

#[derive(Debug)]
struct TableBuffer {
    sql_name: String,
    stats: TableStats,
    batch: Batch,
    /// The batch the last flush took, given back: the next flush's memory.
    spare: Option<Batch>,
    pending: PendingKeys,
    /// service name → its number in `<sql_name>_svc` (0 is no service).
    services: HashMap<String, i32>,
    seen: SeenIds,
}

/// All buffers of one compactor.
#[derive(Debug)]
pub struct Buffers {
    db: Connection,
    tables: HashMap<String, TableBuffer>,
    window_flushes: usize,
    window_ids: usize,
    limits: PartLimits,
}

fn key_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("idx", DataType::Int64, false),
        Field::new("day", DataType::Int32, false),
        Field::new("svc", DataType::Int32, false),
        Field::new("event_time", DataType::Int64, false),
    ]))
}

impl Buffers {
    /// An empty in-memory DuckDB; duplicates are dropped against the ids
    /// of the last `window_flushes` committed flushes, at most `window_ids`.
    pub fn new(window_flushes: u32, window_ids: usize) -> Result<Self, BufferError> {
        let db = Connection::open_in_memory()?;
        // The sort is of small fixed-width keys: one thread spends less CPU
        // than DuckDB's parallel sort and merge on a compactor's few cores.
        db.execute_batch("SET threads TO 1;")?;
        Ok(Self {
            db,
            tables: HashMap::new(),
            window_flushes: window_flushes as usize,
            window_ids,
            limits: PartLimits {
                rows: OUT_ROWS,
                bytes: OUT_BYTES,
            },
        })
    }

    fn table(&mut self, table: &str) -> Result<&mut TableBuffer, BufferError> {
        if !self.tables.contains_key(table) {
            let b = format!("buf_{}", self.tables.len());
            self.db.execute_batch(&format!(
                "CREATE TABLE {b} (idx BIGINT NOT NULL, day INTEGER NOT NULL, \
                 svc INTEGER NOT NULL, event_time BIGINT NOT NULL);\n\
                 CREATE TABLE {b}_svc (id INTEGER NOT NULL, name VARCHAR);\n\
                 INSERT INTO {b}_svc VALUES (0, NULL);"
            ))?;
            self.tables.insert(
                table.to_owned(),
                TableBuffer {
                    sql_name: b,
                    stats: TableStats::default(),
                    batch: Batch::default(),
                    spare: None,
                    pending: PendingKeys::default(),
                    services: HashMap::new(),
                    seen: SeenIds::new(),
                },
            );
        }
        Ok(self.tables.get_mut(table).expect("just inserted"))
    }

    /// Buffers a scanned record whose events are `keys`.
    pub fn append(
        &mut self,
        record: Scanned<'_>,
        keys: &[EventKey],
        payload_bytes: u64,
    ) -> Result<(), BufferError> {
        if keys.is_empty() {
            return Ok(());
        }
        if !self.tables.contains_key(&record.stream) {
            self.table(&record.stream)?;
        }
        let db = &self.db;
        let buffer = self.tables.get_mut(&record.stream).expect("created above");
        let service = match &record.info.service {
            None => 0,
            Some(name) => match buffer.services.get(name.as_str()) {
                Some(&n) => n,
                None => {
                    let n = i32::try_from(buffer.services.len() + 1).unwrap_or(i32::MAX);
                    db.execute(
                        &format!("INSERT INTO {}_svc VALUES (?, ?)", buffer.sql_name),
                        duckdb::params![n, name],
                    )?;
                    buffer.services.insert(name.clone(), n);
                    n
                }
            },
        };
        let batch = &mut buffer.batch;
        let base = batch.arena.push(&record.bytes);
        let record_no = u32::try_from(batch.records.len()).unwrap_or(u32::MAX);
        let repeated = record.info.service.as_ref().map_or(0, String::len)
            + record
                .info
                .resource
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
        batch.records.push(record.info);
        batch.record_text.push(repeated);
        let pending = &mut buffer.pending;
        for key in keys {
            if !buffer.seen.insert(key.id) {
                continue; // a later copy of an id buffered or committed recently
            }
            let idx = batch.rows.len() as i64;
            batch.rows.push(Row {
                record: record_no,
                start: base + u64::from(key.start),
                len: key.len,
                time_us: key.time_us,
            });
            pending.idx.push(idx);
            pending.day.push(key.time_us.div_euclid(DAY_US) as i32);
            pending.service.push(service);
            pending.time.push(key.time_us);
        }
        let stats = &mut buffer.stats;
        stats.rows += keys.len() as u64;
        stats.bytes += payload_bytes;
        stats.oldest.get_or_insert_with(Instant::now);
        stats.max_event_time_us = Some(
            stats
                .max_event_time_us
                .map_or(record.max_event_time_us, |t| {
                    t.max(record.max_event_time_us)
                }),
        );
        if buffer.pending.idx.len() >= KEY_CHUNK {
            append_keys(db, buffer)?;
        }
        Ok(())
    }

    /// Tables with buffered rows and their counters.
    pub fn stats(&self) -> impl Iterator<Item = (&str, &TableStats)> {
        self.tables
            .iter()
            .filter(|(_, b)| b.stats.rows > 0)
            .map(|(n, b)| (n.as_str(), &b.stats))
    }

    /// The order `table`'s buffered rows are written in: deduplicated
    /// (first of each id, none already committed recently), by day, then
    /// `sort` (service, then event time; or event time) — DuckDB's sort of
    /// the key rows.
    pub fn flush_order(&mut self, table: &str, sort: SortBy) -> Result<FlushOrder, BufferError> {
        let Some(buffer) = self.tables.get_mut(table) else {
            return Ok(FlushOrder::default());
        };
        if buffer.batch.rows.is_empty() {
            return Ok(FlushOrder::default());
        }
        append_keys(&self.db, buffer)?;
        let b = &buffer.sql_name;
        // Sort on integers only: services by the rank of their name.
        let sql = match sort {
            SortBy::ServiceTime => format!(
                "WITH ranked AS (SELECT id, row_number() OVER (ORDER BY name NULLS FIRST) AS rank \
                                 FROM {b}_svc) \
                 SELECT k.idx, k.day FROM {b} k JOIN ranked s ON s.id = k.svc \
                 ORDER BY k.day, s.rank, k.event_time, k.idx"
            ),
            SortBy::Time => {
                format!("SELECT idx, day FROM {b} ORDER BY day, event_time, idx")
            }
        };
        let mut stmt = self.db.prepare(&sql)?;
        let mut order = FlushOrder::default();
        for chunk in stmt.query_arrow([])? {
            let indices = chunk.column(0).as_primitive::<Int64Type>();
            let days = chunk.column(1).as_primitive::<Int32Type>();
            for (&idx, &day) in indices.values().iter().zip(days.values()) {
                let idx = u32::try_from(idx)
                    .map_err(|_| BufferError::Rows(format!("row number {idx} out of range")))?;
                order.rows.push((idx, day));
            }
        }
        Ok(order)
    }

    /// `table`'s rows in `order`, built in `target` ([`Batch::parts`]).
    pub fn parts<'a>(
        &'a self,
        table: &str,
        order: &'a FlushOrder,
        target: &'a SchemaRef,
    ) -> impl Iterator<Item = Result<Part, tlake_catalog_client::Error>> + 'a {
        let batch = self.tables.get(table).map(|b| &b.batch);
        let missing = (batch.is_none() && !order.is_empty()).then(|| {
            Err(tlake_catalog_client::Error::Rows(
                "no buffer for this table".into(),
            ))
        });
        let limits = self.limits;
        missing.into_iter().chain(
            batch
                .into_iter()
                .flat_map(move |b| b.parts(order.whole(), target, limits)),
        )
    }

    /// The part limits a taken [`Batch`] is built with.
    pub fn part_limits(&self) -> PartLimits {
        self.limits
    }

    /// A flush takes `table`'s buffered events away to write them: its ids
    /// join the recent window now (optimistically: a flush that fails ends
    /// in a resync, which forgets the windows), and the buffer starts the
    /// next batch in the memory the last flush gave back.
    pub fn take(&mut self, table: &str) -> Result<Batch, BufferError> {
        let Some(buffer) = self.tables.get_mut(table) else {
            return Ok(Batch::default());
        };
        buffer.seen.committed(self.window_flushes, self.window_ids);
        let next = buffer.spare.take().unwrap_or_default();
        let taken = std::mem::replace(&mut buffer.batch, next);
        buffer.stats = TableStats::default();
        buffer.pending = PendingKeys::default();
        self.db
            .execute_batch(&format!("DELETE FROM {};", buffer.sql_name))?;
        Ok(taken)
    }

    /// A taken batch is written: its memory serves `table`'s next one.
    pub fn give_back(&mut self, table: &str, mut batch: Batch) {
        if let Some(buffer) = self.tables.get_mut(table) {
            batch.clear();
            buffer.spare = Some(batch);
        }
    }

    /// What a flush does to `table`'s buffer, at once (take and give back):
    /// the ids join the recent window, the buffer empties. The flush itself
    /// takes the batch away and gives it back after writing it.
    #[cfg(test)]
    fn committed(&mut self, table: &str) -> Result<(), BufferError> {
        let batch = self.take(table)?;
        self.give_back(table, batch);
        Ok(())
    }

    /// Drops every buffered row (after a rebalance or fence); they will be
    /// read again from Kafka. The recent-id window is kept: those ids are committed.
    pub fn clear(&mut self) -> Result<(), BufferError> {
        for buffer in self.tables.values_mut() {
            buffer.seen.forget_buffered();
            buffer.reset();
            self.db
                .execute_batch(&format!("DELETE FROM {};", buffer.sql_name))?;
        }
        Ok(())
    }

    /// Forgets every id window as well (after a fence): what this process
    /// believed committed may not be in the table — a commit on a table
    /// without a snapshot is not fenced by the catalog (Nessie accepts a
    /// second one on top, dropping the first's files), so the windows are
    /// seeded again from what the table holds, and events of a lost commit
    /// are taken again instead of dropped as copies.
    pub fn forget_windows(&mut self) {
        for buffer in self.tables.values_mut() {
            buffer.seen = SeenIds::new();
        }
    }

    /// Adds ids committed before this process started (read back from the
    /// table) to `table`'s recent window, so late copies of them are dropped.
    pub fn remember(&mut self, table: &str, ids: &FixedSizeBinaryArray) -> Result<(), BufferError> {
        let buffer = self.table(table)?;
        buffer.seen.remember(
            ids.iter()
                .flatten()
                .filter_map(|id| <[u8; 16]>::try_from(id).ok()),
        );
        Ok(())
    }
}

/// Event ids a table's buffer has seen: those buffered now, and those of
/// the last committed flushes — at most `window_flushes` of them and, past
/// `window_ids` ids, fewer (oldest forgotten first).
#[derive(Debug)]
struct SeenIds {
    /// id → the flush it belongs to. Hashed with a seeded fast hash
    /// (SipHash was a tenth of the arrival cost); ids come from clients.
    flush_of: HashMap<[u8; 16], u64, foldhash::quality::RandomState>,
    /// Ids per flush, oldest first; the last entry is the buffer's.
    flushes: VecDeque<(u64, Vec<[u8; 16]>)>,
    /// Ids `flush_of` holds without growing, as last built ([`Self::keep_room`]).
    room: usize,
}

impl SeenIds {
    fn new() -> Self {
        Self {
            flush_of: HashMap::default(),
            flushes: VecDeque::from([(1, Vec::new())]),
            room: 0,
        }
    }

    fn current(&mut self) -> &mut (u64, Vec<[u8; 16]>) {
        self.flushes.back_mut().expect("always a current flush")
    }

    /// Remembers `id` for the buffer; false if it was seen already.
    fn insert(&mut self, id: [u8; 16]) -> bool {
        let (flush, ids) = self.flushes.back_mut().expect("always a current flush");
        match self.flush_of.entry(id) {
            Entry::Occupied(_) => false,
            Entry::Vacant(v) => {
                v.insert(*flush);
                ids.push(id);
                true
            }
        }
    }

    /// The buffer was committed: its ids become the newest committed flush.
    fn committed(&mut self, window_flushes: usize, window_ids: usize) {
        let buffered = self.current().1.len();
        let next = self.current().0 + 1;
        self.flushes.push_back((next, Vec::new()));
        while self.flushes.len() > 1
            && (self.flushes.len() - 1 > window_flushes || self.flush_of.len() > window_ids)
        {
            let (flush, ids) = self.flushes.pop_front().expect("len > 1");
            for id in ids {
                if self.flush_of.get(&id) == Some(&flush) {
                    self.flush_of.remove(&id);
                }
            }
        }
        self.keep_room(self.flush_of.len() + buffered);
    }

    /// Rebuilds the map with room for twice `peak` ids (the window and a
    /// buffer like the last one) once `peak` outgrows half its room, or
    /// falls under an eighth of it (the rate dropped after a burst: the
    /// memory goes back).
    ///
    /// Why: hashbrown leaves some removed entries as tombstones, and when
    /// they use up its spare room it rehashes in place if at most half the
    /// table is live, and doubles the table otherwise. With a window of 4M
    /// ids and flushes of 1M, that doubling came 55 flushes into a steady
    /// stream: the 200K soak's +20 % RSS step at minute four (BENCHMARKS.md).
    /// Built at twice the peak, the table grows while the window fills or
    /// when the rate rises, and every later clean-up is in place.
    fn keep_room(&mut self, peak: usize) {
        if (peak..=4 * peak).contains(&(self.room / 2)) {
            return;
        }
        let mut map = HashMap::with_capacity_and_hasher(2 * peak, *self.flush_of.hasher());
        map.extend(self.flush_of.drain());
        tracing::debug!(
            peak,
            from = self.room,
            to = map.capacity(),
            "id window map rebuilt"
        );
        self.room = map.capacity();
        self.flush_of = map;
    }

    /// The buffer was dropped: its ids were not committed.
    fn forget_buffered(&mut self) {
        let (flush, ids) = self.flushes.back_mut().expect("always a current flush");
        for id in ids.drain(..) {
            if self.flush_of.get(&id) == Some(flush) {
                self.flush_of.remove(&id);
            }
        }
    }

    /// Ids the table holds (read back when this process started, and again
    /// on every assignment, since another instance may have committed
    /// more), as part of the newest committed flush: they leave the window
    /// with it. Flush numbers are unchanged, so a re-seed never renumbers.
    fn remember(&mut self, ids: impl Iterator<Item = [u8; 16]>) {
        // The current flush is numbered from 1, so the newest committed one is >= 0.
        let newest_committed = self.current().0 - 1;
        if self.flushes.len() < 2 {
            self.flushes.push_front((newest_committed, Vec::new()));
        }
        let at = self.flushes.len() - 2;
        let (flush, kept) = &mut self.flushes[at];
        debug_assert_eq!(*flush, newest_committed);
        for id in ids {
            if let Entry::Vacant(v) = self.flush_of.entry(id) {
                v.insert(*flush);
                kept.push(id);
            }
        }
    }
}

impl TableBuffer {
    /// Empties the Rust side, keeping its memory for the next flush.
    fn reset(&mut self) {
        self.stats = TableStats::default();
        self.batch.clear();
        self.pending = PendingKeys::default();
    }
}

impl Batch {
    /// Forgets the events, keeping the memory.
    fn clear(&mut self) {
        self.arena.clear();
        self.records.clear();
        self.record_text.clear();
        self.rows.clear();
    }

    /// The rows of `run`, built in `target` (the table's Arrow schema) a
    /// part at a time — at most `limits` rows and bytes of one day each — so
    /// a writer never holds more than one part of Arrow memory and each part
    /// reuses the memory the previous one gave back.
    pub fn parts<'a>(
        &'a self,
        run: OrderRun<'a>,
        target: &'a SchemaRef,
        limits: PartLimits,
    ) -> impl Iterator<Item = Result<Part, tlake_catalog_client::Error>> + 'a {
        let mut rest = run.0;
        std::iter::from_fn(move || {
            let (part, next) = self.next_part(rest, target, limits)?;
            rest = next;
            Some(part)
        })
    }

    /// The part at the head of `rest`, and what follows it.
    #[allow(clippy::type_complexity)]
    fn next_part<'o>(
        &self,
        rest: &'o [(u32, i32)],
        target: &SchemaRef,
        limits: PartLimits,
    ) -> Option<(Result<Part, tlake_catalog_client::Error>, &'o [(u32, i32)])> {
        let &(_, day) = rest.first()?;
        // At least one row. Counting each row's event bytes and the record
        // text it repeats bounds a part's string columns by the budget plus
        // one row — far below Arrow's 2 GiB.
        let mut bytes = 0usize;
        let n = rest
            .iter()
            .take(limits.rows.max(1))
            .take_while(|&&(idx, d)| {
                let fits = bytes < limits.bytes.max(1);
                bytes += self.rows.get(idx as usize).map_or(0, |r| {
                    r.len as usize
                        + self
                            .record_text
                            .get(r.record as usize)
                            .copied()
                            .unwrap_or(0)
                });
                d == day && fits
            })
            .count();
        let (this, next) = rest.split_at(n);
        Some((build_part(self, this, day, target), next))
    }
}

/// Rows `rows` (row number, day `day`) of `buffer` as one part.
fn build_part(
    buffer: &Batch,
    rows: &[(u32, i32)],
    day: i32,
    target: &SchemaRef,
) -> Result<Part, tlake_catalog_client::Error> {
    let bytes = rows
        .iter()
        .filter_map(|&(idx, _)| buffer.rows.get(idx as usize))
        .map(|r| r.len as usize)
        .sum();
    let mut out = Rows::with_capacity(rows.len(), bytes).promoting(target);
    for &(idx, _) in rows {
        let row = buffer
            .rows
            .get(idx as usize)
            .ok_or_else(|| tlake_catalog_client::Error::Rows(format!("no buffered row {idx}")))?;
        let bytes = buffer
            .arena
            .get(row.start, row.len as usize)
            .ok_or_else(|| {
                tlake_catalog_client::Error::Rows(format!("row {idx} outside the arena"))
            })?;
        let info = &buffer.records[row.record as usize];
        out.push(bytes, info, row.time_us)
            .map_err(tlake_catalog_client::Error::Rows)?;
    }
    Ok(Part {
        day: Some(day),
        rows: out
            .finish(target)
            .map_err(tlake_catalog_client::Error::Rows)?,
    })
}

/// Hands the pending key rows to DuckDB.
fn append_keys(db: &Connection, buffer: &mut TableBuffer) -> Result<(), BufferError> {
    let p = &mut buffer.pending;
    if p.idx.is_empty() {
        return Ok(());
    }
    let keys = RecordBatch::try_new(
        key_schema(),
        vec![
            Arc::new(Int64Array::from(std::mem::take(&mut p.idx))),
            Arc::new(Int32Array::from(std::mem::take(&mut p.day))),
            Arc::new(Int32Array::from(std::mem::take(&mut p.service))),
            Arc::new(Int64Array::from(std::mem::take(&mut p.time))),
        ],
    )?;
    let mut appender = db.appender(&buffer.sql_name)?;
    appender.append_record_batch(keys)?;
    appender.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::cast::AsArray;
    use arrow_array::{Array, FixedSizeBinaryArray};
    use prost::Message as _;
    use tlake_catalog_client::TableKind;
    use tlake_catalog_client::iceberg::arrow::schema_to_arrow_schema;
    use tlake_proto::v1::{AnyValue, KeyValue, LogBatch, LogEvent, Resource, any_value};
    use tlake_record_reader::decode::{Origin, scan};

    use super::*;

    const DAY_NS: u64 = 86_400_000_000_000;

    fn target() -> SchemaRef {
        Arc::new(schema_to_arrow_schema(&TableKind::Logs.schema()).expect("schema"))
    }

    /// A record of events `ids` from `service`; event `id` happens at
    /// day 20000 + `id / 100`, `100 - id % 100` seconds in.
    fn record(ids: &[u8], service: &str) -> Vec<u8> {
        LogBatch {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(service.into())),
                    }),
                }],
            }),
            events: ids
                .iter()
                .map(|&id| LogEvent {
                    event_id: vec![id; 16].into(),
                    time_unix_nano: (20_000 + u64::from(id / 100)) * DAY_NS
                        + 1_000_000_000 * (100 - u64::from(id % 100)),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn append(buffers: &mut Buffers, ids: &[u8], service: &str) {
        let payload = record(ids, service);
        let mut keys = Vec::new();
        let origin = Origin {
            partition: 0,
            offset: 0,
        };
        let scanned = scan(&payload, origin, &mut keys).expect("scan");
        buffers
            .append(scanned, &keys, payload.len() as u64)
            .expect("append");
    }

    fn flush(buffers: &mut Buffers) -> Vec<(Option<i32>, Vec<u8>, Vec<String>)> {
        let order = buffers
            .flush_order("default", SortBy::ServiceTime)
            .expect("flush order");
        let target = target();
        buffers
            .parts("default", &order, &target)
            .map(|p| {
                let p = p.expect("part");
                let ids = p.rows.column_by_name("event_id").expect("id");
                let ids = ids.as_fixed_size_binary();
                let services = p.rows.column_by_name("service").expect("service");
                let services = services.as_string::<i32>();
                (
                    p.day,
                    (0..ids.len()).map(|i| ids.value(i)[0]).collect(),
                    (0..ids.len())
                        .map(|i| services.value(i).to_owned())
                        .collect(),
                )
            })
            .collect()
    }

    fn ids(parts: &[(Option<i32>, Vec<u8>, Vec<String>)]) -> Vec<u8> {
        parts.iter().flat_map(|p| p.1.clone()).collect()
    }

    #[test]
    fn flush_dedups_sorts_and_remembers() {
        let mut buffers = Buffers::new(2, 1000).expect("duckdb");
        append(&mut buffers, &[1, 2, 3], "b");
        append(&mut buffers, &[2, 4], "a");
        let out = flush(&mut buffers);
        // service a first; within a service by event_time (higher id = earlier);
        // id 2 keeps its first copy (service b).
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, Some(20_000));
        assert_eq!(out[0].1, [4, 3, 2, 1]);
        assert_eq!(out[0].2, ["a", "b", "b", "b"]);
        let stats: Vec<_> = buffers.stats().map(|(_, s)| s.rows).collect();
        assert_eq!(stats, [5], "every received event is counted");
        buffers.committed("default").expect("committed");
        assert_eq!(buffers.stats().count(), 0);
        // A late duplicate of a committed id is dropped; a new id is kept.
        append(&mut buffers, &[3, 5], "b");
        assert_eq!(ids(&flush(&mut buffers)), [5]);
        buffers.committed("default").expect("committed");
        buffers.committed("default").expect("committed");
        buffers.committed("default").expect("committed");
        // The window is bounded (2 flushes): three flushes later id 3 is forgotten.
        append(&mut buffers, &[3], "b");
        assert_eq!(ids(&flush(&mut buffers)), [3]);
    }

    #[test]
    fn the_window_is_also_bounded_by_ids() {
        let mut buffers = Buffers::new(100, 3).expect("duckdb");
        append(&mut buffers, &[1, 2], "a");
        buffers.committed("default").expect("committed");
        append(&mut buffers, &[3, 4], "a");
        buffers.committed("default").expect("committed");
        // 4 ids > 3: the oldest flush (1, 2) is forgotten, (3, 4) kept.
        append(&mut buffers, &[1, 3], "a");
        assert_eq!(ids(&flush(&mut buffers)), [1]);
    }

    #[test]
    fn clear_drops_rows_but_not_the_window() {
        let mut buffers = Buffers::new(4, 1000).expect("duckdb");
        append(&mut buffers, &[1], "a");
        buffers.committed("default").expect("committed");
        append(&mut buffers, &[2], "a");
        buffers.clear().expect("clear");
        assert!(ids(&flush(&mut buffers)).is_empty());
        // 2 was never committed: read again, it is kept; 1 is still a duplicate.
        append(&mut buffers, &[1, 2, 3], "a");
        assert_eq!(ids(&flush(&mut buffers)), [3, 2]);
    }

    #[test]
    fn forgotten_windows_take_committed_ids_again() {
        // After a fence the table is the authority: ids this process committed
        // may be gone from it, so they are taken again until a re-seed says otherwise.
        let mut buffers = Buffers::new(4, 1000).expect("duckdb");
        append(&mut buffers, &[1, 2], "a");
        buffers.committed("default").expect("committed");
        buffers.clear().expect("clear");
        buffers.forget_windows();
        append(&mut buffers, &[1, 2, 3], "a");
        assert_eq!(ids(&flush(&mut buffers)), [3, 2, 1]);
    }

    #[test]
    fn remembered_ids_are_duplicates() {
        let mut buffers = Buffers::new(4, 1000).expect("duckdb");
        let committed =
            FixedSizeBinaryArray::try_from_iter([[7u8; 16], [8u8; 16]].into_iter()).expect("ids");
        buffers.remember("default", &committed).expect("remember");
        append(&mut buffers, &[6, 7, 8, 9], "a");
        assert_eq!(ids(&flush(&mut buffers)), [9, 6]);
    }

    #[test]
    fn remembering_again_after_commits_adds_ids_and_keeps_the_window() {
        // The compactor re-seeds on every assignment: twice with nothing committed in
        // between, then after commits (ids another instance committed meanwhile).
        let mut buffers = Buffers::new(2, 1000).expect("duckdb");
        let seed = |ids: &[u8]| {
            FixedSizeBinaryArray::try_from_iter(ids.iter().map(|&n| [n; 16])).expect("ids")
        };
        buffers.remember("default", &seed(&[7])).expect("remember");
        buffers
            .remember("default", &seed(&[7, 8]))
            .expect("remember again");
        append(&mut buffers, &[1], "a");
        buffers.committed("default").expect("committed");
        buffers
            .remember("default", &seed(&[9]))
            .expect("remember after a commit");
        append(&mut buffers, &[6, 7, 8, 9, 1], "a");
        assert_eq!(ids(&flush(&mut buffers)), [6]);
        buffers.committed("default").expect("committed");
        // Two flushes later the first seeds have left the window; 9 (seeded with flush 1) too.
        append(&mut buffers, &[10], "a");
        buffers.committed("default").expect("committed");
        append(&mut buffers, &[7, 9, 1, 6], "a");
        assert_eq!(ids(&flush(&mut buffers)), [9, 7, 1]);
    }

    #[test]
    fn rows_of_different_days_come_in_parts_of_one_day() {
        let mut buffers = Buffers::new(4, 1000).expect("duckdb");
        // ids ≥ 100 fall on the next day.
        append(&mut buffers, &[101, 1, 150, 2], "b");
        append(&mut buffers, &[120, 3], "a");
        let out = flush(&mut buffers);
        let days: Vec<_> = out.iter().map(|p| p.0).collect();
        assert_eq!(days, [Some(20_000), Some(20_001)]);
        assert_eq!(out[0].1, [3, 2, 1]);
        assert_eq!(out[1].1, [120, 150, 101]);
    }

    #[test]
    fn parts_are_bounded_by_rows_and_bytes() {
        let mut buffers = Buffers::new(4, 1000).expect("duckdb");
        append(&mut buffers, &[1, 2, 3, 4, 5], "a");
        buffers.limits.rows = 2;
        let sizes = |out: Vec<(Option<i32>, Vec<u8>, Vec<String>)>| -> Vec<usize> {
            out.iter().map(|p| p.1.len()).collect()
        };
        let out = flush(&mut buffers);
        assert_eq!(ids(&out), [5, 4, 3, 2, 1], "order kept across parts");
        assert_eq!(sizes(out), [2, 2, 1]);
        // Under one event's bytes: one event per part, never an empty part.
        buffers.limits.rows = OUT_ROWS;
        buffers.limits.bytes = 1;
        assert_eq!(sizes(flush(&mut buffers)), [1, 1, 1, 1, 1]);
        // Rows of 27 encoded bytes plus their record's repeated text (service
        // and resource, "a"): one row is under 50 bytes, two are over, so a
        // part closes after two.
        buffers.limits.bytes = 50;
        assert_eq!(sizes(flush(&mut buffers)), [2, 2, 1]);
        // 28 bytes: a row's 27 event bytes alone would leave room for a
        // second row; with the repeated text counted, it does not.
        buffers.limits.bytes = 28;
        assert_eq!(sizes(flush(&mut buffers)), [1, 1, 1, 1, 1]);
    }

    #[test]
    fn a_taken_batch_is_written_while_the_buffer_fills_the_next() {
        let mut buffers = Buffers::new(4, 1000).expect("duckdb");
        append(&mut buffers, &[3, 1, 2], "a");
        let order = buffers
            .flush_order("default", SortBy::ServiceTime)
            .expect("flush order");
        let taken = buffers.take("default").expect("take");
        assert_eq!(buffers.stats().count(), 0, "the buffer starts empty");
        // While the batch is written: a copy of a taken id is dropped (it is
        // committed, as far as the window knows), a new one is buffered.
        append(&mut buffers, &[2, 4], "a");
        let target = target();
        let written: Vec<u8> = taken
            .parts(order.whole(), &target, buffers.part_limits())
            .flat_map(|p| {
                let p = p.expect("part");
                let ids = p.rows.column_by_name("event_id").expect("id");
                let ids = ids.as_fixed_size_binary();
                (0..ids.len()).map(|i| ids.value(i)[0]).collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(written, [3, 2, 1], "the batch's rows, in the flush order");
        buffers.give_back("default", taken);
        assert_eq!(ids(&flush(&mut buffers)), [4], "the next batch, untouched");
        // The memory given back serves the batch after.
        buffers.committed("default").expect("committed");
        append(&mut buffers, &[5], "a");
        assert_eq!(ids(&flush(&mut buffers)), [5]);
    }

    /// Buffers `ids` ids never seen before (numbered on from `next`, spread
    /// over the hash like random ids), then commits them as one flush.
    fn commit_new_ids(
        seen: &mut SeenIds,
        next: &mut u128,
        ids: usize,
        window_flushes: usize,
        window_ids: usize,
    ) {
        for _ in 0..ids {
            *next += 1;
            let id = next.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
            assert!(seen.insert(id.to_le_bytes()), "every id is new");
        }
        seen.committed(window_flushes, window_ids);
    }

    #[test]
    fn a_steady_stream_does_not_grow_the_id_window_after_warm_up() {
        // Flushes of 3 000 new ids, a window of 10 000: ids come and go for
        // as long as the process runs. The table may grow while the window
        // fills, never after (without `keep_room` it doubled at flush 8).
        let mut seen = SeenIds::new();
        let mut next = 0;
        let mut flush = |seen: &mut SeenIds| commit_new_ids(seen, &mut next, 3_000, 16, 10_000);
        // The window is full after four flushes; one more for the peak.
        let mut warm = 0;
        for _ in 0..5 {
            flush(&mut seen);
            warm = warm.max(seen.flush_of.capacity());
        }
        for i in 0..2_000 {
            flush(&mut seen);
            // capacity() is live + spare: removed entries lower it and a
            // rehash in place restores it, but only growth exceeds this.
            assert!(
                seen.flush_of.capacity() <= warm,
                "flush {i}: capacity {} after warm-up {warm}",
                seen.flush_of.capacity()
            );
        }
        assert!(seen.flush_of.len() <= 10_000 + 3_000);
    }

    #[test]
    fn the_id_window_gives_memory_back_when_the_rate_drops() {
        let mut seen = SeenIds::new();
        let mut next = 0;
        let mut flush =
            |seen: &mut SeenIds, ids| commit_new_ids(seen, &mut next, ids, 4, 1_000_000);
        for _ in 0..6 {
            flush(&mut seen, 20_000);
        }
        let burst = seen.flush_of.capacity();
        assert!(burst >= 2 * 5 * 20_000, "room for twice the peak: {burst}");
        // Four flushes later the window holds only small ones.
        for _ in 0..6 {
            flush(&mut seen, 1_000);
        }
        let after = seen.flush_of.capacity();
        assert!(
            after < burst / 8,
            "capacity {after} after a burst of {burst}"
        );
        assert!(
            after >= 2 * 5 * 1_000,
            "still room for twice the peak: {after}"
        );
    }

    #[test]
    fn runs_cover_the_order_once_in_order_and_split_only_what_is_large() {
        let order = |n: u32| FlushOrder {
            rows: (0..n).map(|i| (i, 0)).collect(),
        };
        let lens = |o: &FlushOrder, writers, min| -> Vec<usize> {
            o.runs(writers, min).iter().map(OrderRun::len).collect()
        };
        // Under twice the minimum: one run, however many writers.
        assert_eq!(lens(&order(199), 4, 100), [199]);
        assert_eq!(lens(&order(200), 4, 100), [100, 100]);
        assert_eq!(lens(&order(1001), 4, 100), [251, 251, 251, 248]);
        assert_eq!(lens(&order(1001), 1, 100), [1001]);
        assert_eq!(lens(&order(10), 0, 0), [10], "zeros mean one writer");
        assert!(order(0).runs(4, 100).iter().all(OrderRun::is_empty));
        let o = order(1001);
        let joined: Vec<(u32, i32)> = o.runs(3, 10).iter().flat_map(|r| r.0.to_vec()).collect();
        assert_eq!(joined, o.rows, "every row once, in the flush order");
    }
}
