//! fresh: `tlake sql --fresh` — each stream's table as its committed snapshot
//! holds it plus the records in Kafka past the offsets that snapshot holds
//! (`tlake.offsets`), read with the compactor's own reader
//! (`tlake_record_reader`: `decode::scan`, then `rows::Rows` into the table's
//! Arrow layout) into a DuckDB table, so a query sees an event as soon as the
//! gateway acknowledged it.
//!
//! Never counted twice, never missing, during a commit too:
//! - the committed part is read with `iceberg_scan` of the very metadata
//!   file the offsets were read from — immutable, so rows and offsets are of
//!   one snapshot whatever the compactor commits meanwhile;
//! - the tail starts at those offsets (a partition the table never committed
//!   from its beginning, as the compactor does) and ends at the partitions'
//!   end offsets read when the query starts ([`super::tail`]);
//! - a tail event whose id the tail already has is dropped on arrival (the
//!   first copy wins, as in a flush), and the view anti-joins the rest
//!   against the snapshot's ids (copies the compactor drops too).
//!
//! Only the streams a query names are read (DuckDB's own parser says which:
//! `json_serialize_sql`), each with its own consumer. Between queries a tail
//! keeps what it read and reads only what arrived; rows a newer snapshot
//! holds are deleted from it, so it stays as long as the compactor's lag.
//! The views live in an in-memory database `fresh` (`fresh."<stream>"`),
//! first on the search path; the committed tables stay reachable by their
//! full names. Not covered: the dead-letter table, tables without a snapshot
//! yet, and tables whose snapshots carry no `tlake.offsets` (another
//! writer's) — those resolve to the committed table, with a note.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use arrow_array::{ArrayRef, Int16Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use duckdb::Connection;
use tlake_catalog_client::iceberg::arrow::schema_to_arrow_schema;
use tlake_catalog_client::iceberg::table::Table;
use tlake_catalog_client::{DEAD_LETTER_TABLE, LakeCatalog, Offsets, progress_of};
use tlake_record_reader::decode::{EventKey, Origin, Scanned, scan};
use tlake_record_reader::rows::Rows;

use super::session::{identifier, literal, one_line};
use super::tail::{TailReader, TailRecord, Tp};

/// The database holding the fresh views (`fresh.main`) and the tails (`fresh.tail`).
pub const DATABASE: &str = "fresh";
/// The tail tables' extra column: which topic a row came from (an index into the session's topics).
const TOPIC_COLUMN: &str = "tlake_topic";

/// One stream's committed snapshot and what of its tail is held.
#[derive(Debug)]
struct FreshTable {
    metadata_location: String,
    schema_id: i32,
    /// What the snapshot holds: topic → partition → first offset not in it.
    offsets: Offsets,
    /// The tail's Arrow layout: the table's, plus [`TOPIC_COLUMN`].
    target: SchemaRef,
    /// This table's consumer.
    tail: TailReader,
    /// Topics by the index the tail's [`TOPIC_COLUMN`] stores.
    topics: Vec<String>,
    /// Ids in the tail.
    ids: HashSet<[u8; 16]>,
    /// Per partition, the tail's (offset, id) in offset order: what to forget
    /// when a snapshot moves past them.
    held: BTreeMap<Tp, VecDeque<(i64, [u8; 16])>>,
}

impl FreshTable {
    /// Whether the snapshot holds the record at `offset` of `tp`.
    fn holds(&self, tp: &Tp, offset: i64) -> bool {
        self.offsets
            .get(&tp.0)
            .and_then(|parts| parts.get(&tp.1))
            .is_some_and(|&next| offset < next)
    }

    /// The index of `topic` in the tail's topic column.
    fn topic_index(&mut self, topic: &str) -> i16 {
        let i = match self.topics.iter().position(|t| t == topic) {
            Some(i) => i,
            None => {
                self.topics.push(topic.to_owned());
                self.topics.len() - 1
            }
        };
        i16::try_from(i).unwrap_or(i16::MAX)
    }
}

/// The fresh views of one session.
pub struct Fresh {
    catalog: LakeCatalog,
    runtime: tokio::runtime::Handle,
    options: super::FreshOptions,
    tables: BTreeMap<String, FreshTable>,
    /// Tables already reported as not covered.
    noted: HashSet<String>,
}

impl std::fmt::Debug for Fresh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fresh")
            .field("options", &self.options)
            .field("tables", &self.tables.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Fresh {
    /// Creates `fresh.main` and `fresh.tail` in `conn`; reads nothing yet.
    pub fn new(
        conn: &Connection,
        catalog: LakeCatalog,
        runtime: tokio::runtime::Handle,
        options: &super::FreshOptions,
    ) -> Result<Self> {
        // Fails early on an empty broker list.
        TailReader::new(&options.kafka_brokers, options.timeout)?;
        conn.execute_batch(&format!(
            "ATTACH ':memory:' AS {db}; CREATE SCHEMA {db}.tail",
            db = identifier(DATABASE)
        ))
        .map_err(one_line)?;
        Ok(Self {
            catalog,
            runtime,
            options: options.clone(),
            tables: BTreeMap::new(),
            noted: HashSet::new(),
        })
    }

    /// Brings the views of the streams `sql` names up to the catalog's
    /// current snapshots and the Kafka tail as it ends now. Called before
    /// each query.
    pub fn refresh(&mut self, conn: &Connection, sql: &str) -> Result<()> {
        for name in named_streams(conn, sql) {
            let runtime = self.runtime.clone();
            let Some(table) = runtime.block_on(self.snapshot(&name))? else {
                self.forget(conn, &name)?;
                continue;
            };
            let schema_id = table.metadata().current_schema_id();
            if self
                .tables
                .get(&name)
                .is_none_or(|t| t.schema_id != schema_id)
            {
                // New here, or its schema changed: (re)built and read again from its offsets.
                self.forget(conn, &name)?;
                self.create(conn, &name, &table)?;
            }
            let fresh = self
                .tables
                .get_mut(&name)
                .ok_or_else(|| anyhow!("table {name} has no tail (a bug)"))?;
            advance(conn, &name, fresh, &table)?;
            let from = wanted(fresh)?;
            let records = fresh.tail.read(&from)?;
            append(conn, &name, fresh, &records)?;
        }
        Ok(())
    }

    /// `name`'s current metadata, if a fresh view can cover it.
    async fn snapshot(&mut self, name: &str) -> Result<Option<Table>> {
        if name == DEAD_LETTER_TABLE {
            return Ok(None);
        }
        let table = match self.catalog.load_table(name).await {
            Ok(table) => table,
            // Not a table of the lake (a CTE, a local table, a typo): DuckDB answers for it.
            Err(e) if !e.retryable() => return Ok(None),
            Err(e) => return Err(anyhow!(e).context(format!("loading table {name} for --fresh"))),
        };
        let why_not = match progress_of(name, table.metadata()) {
            Ok(p) if p.snapshot_id.is_none() => Some("it has no snapshot yet".to_owned()),
            Ok(_) if table.metadata_location().is_none() => {
                Some("the catalog gave no metadata location".to_owned())
            }
            Ok(_) => None,
            Err(e) => Some(e.to_string()),
        };
        match why_not {
            None => Ok(Some(table)),
            Some(why) => {
                if self.noted.insert(name.to_owned()) {
                    eprintln!(
                        "tlake: note: --fresh shows only the committed rows of {name}: {why}"
                    );
                }
                Ok(None)
            }
        }
    }

    /// Drops `name`'s view and tail, if it has them.
    fn forget(&mut self, conn: &Connection, name: &str) -> Result<()> {
        if self.tables.remove(name).is_some() {
            conn.execute_batch(&format!(
                "DROP VIEW IF EXISTS {db}.main.{t}; DROP TABLE IF EXISTS {db}.tail.{t}",
                db = identifier(DATABASE),
                t = identifier(name)
            ))
            .map_err(one_line)?;
        }
        Ok(())
    }

    /// Creates `name`'s tail table (the table's columns and [`TOPIC_COLUMN`]) and consumer.
    fn create(&mut self, conn: &Connection, name: &str, table: &Table) -> Result<()> {
        let location = table.metadata_location().unwrap_or_default();
        conn.execute_batch(&format!(
            "CREATE TABLE {db}.tail.{t} AS SELECT *, NULL::SMALLINT AS {TOPIC_COLUMN} \
             FROM iceberg_scan({loc}) LIMIT 0",
            db = identifier(DATABASE),
            t = identifier(name),
            loc = literal(location),
        ))
        .map_err(one_line)
        .with_context(|| format!("creating the tail table of {name}"))?;
        let metadata = table.metadata();
        let mut fields: Vec<Arc<Field>> = schema_to_arrow_schema(metadata.current_schema())
            .with_context(|| format!("the Arrow schema of {name}"))?
            .fields()
            .iter()
            .cloned()
            .collect();
        fields.push(Arc::new(Field::new(TOPIC_COLUMN, DataType::Int16, true)));
        self.tables.insert(
            name.to_owned(),
            FreshTable {
                // Empty: `advance` sets the offsets and the view.
                metadata_location: String::new(),
                schema_id: metadata.current_schema_id(),
                offsets: Offsets::new(),
                target: Arc::new(Schema::new(fields)),
                tail: TailReader::new(&self.options.kafka_brokers, self.options.timeout)?,
                topics: Vec::new(),
                ids: HashSet::new(),
                held: BTreeMap::new(),
            },
        );
        Ok(())
    }
}

/// The streams `sql` reads by a name a fresh view answers to: `"s"` or
/// `fresh."s"` (DuckDB's parser, through `json_serialize_sql`; statements it
/// cannot serialize — DDL — are skipped, a script's statements each parsed).
fn named_streams(conn: &Connection, sql: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut parse = |text: &str| -> bool {
        let json: Option<String> = conn
            .query_row("SELECT json_serialize_sql(?::VARCHAR)", [text], |row| {
                row.get(0)
            })
            .ok();
        let Some(tree) = json.and_then(|j| serde_json::from_str::<serde_json::Value>(&j).ok())
        else {
            return false;
        };
        if tree["error"].as_bool() != Some(false) {
            return false;
        }
        collect_tables(&tree, &mut names);
        true
    };
    if !parse(sql) {
        for statement in sql.split(';') {
            parse(statement);
        }
    }
    names
}

fn collect_tables(node: &serde_json::Value, names: &mut BTreeSet<String>) {
    match node {
        serde_json::Value::Object(map) => {
            if map.get("type").and_then(|t| t.as_str()) == Some("BASE_TABLE") {
                let text = |k: &str| map.get(k).and_then(|v| v.as_str()).unwrap_or("");
                let ours = matches!(
                    (text("catalog_name"), text("schema_name")),
                    ("", "" | DATABASE) | (DATABASE, "" | "main")
                );
                if ours && !text("table_name").is_empty() {
                    names.insert(text("table_name").to_owned());
                }
            }
            map.values().for_each(|v| collect_tables(v, names));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_tables(v, names)),
        _ => {}
    }
}

/// Moves `fresh`'s view to `table`'s current snapshot, and forgets the tail rows it holds.
fn advance(conn: &Connection, name: &str, fresh: &mut FreshTable, table: &Table) -> Result<()> {
    let location = table.metadata_location().unwrap_or_default().to_owned();
    if fresh.metadata_location == location {
        return Ok(());
    }
    let progress = progress_of(name, table.metadata())?;
    // Rows the snapshot now holds leave the tail (the anti-join would hide them anyway;
    // this keeps the tail as long as the lag).
    let mut gone = Vec::new();
    for (topic, parts) in &progress.offsets {
        let topic_index = fresh.topic_index(topic);
        for (&partition, &next) in parts {
            let Some(held) = fresh.held.get_mut(&(topic.clone(), partition)) else {
                continue;
            };
            let before = held.len();
            while held.front().is_some_and(|&(offset, _)| offset < next) {
                if let Some((_, id)) = held.pop_front() {
                    fresh.ids.remove(&id);
                }
            }
            if held.len() < before {
                gone.push(format!(
                    "({TOPIC_COLUMN} = {topic_index} AND kafka_partition = {partition} AND \
                     kafka_offset < {next})"
                ));
            }
        }
    }
    let db = identifier(DATABASE);
    let t = identifier(name);
    if !gone.is_empty() {
        conn.execute_batch(&format!(
            "DELETE FROM {db}.tail.{t} WHERE {}",
            gone.join(" OR ")
        ))
        .map_err(one_line)
        .with_context(|| format!("trimming the tail of {name}"))?;
    }
    let loc = literal(&location);
    conn.execute_batch(&format!(
        "CREATE OR REPLACE VIEW {db}.main.{t} AS \
         SELECT * FROM iceberg_scan({loc}) \
         UNION ALL BY NAME \
         SELECT tail.* EXCLUDE ({TOPIC_COLUMN}) FROM {db}.tail.{t} AS tail \
         ANTI JOIN (SELECT event_id FROM iceberg_scan({loc})) AS committed \
         ON tail.event_id = committed.event_id"
    ))
    .map_err(one_line)
    .with_context(|| format!("creating the fresh view of {name}"))?;
    fresh.metadata_location = location;
    fresh.offsets = progress.offsets;
    Ok(())
}

/// Where to read each partition of the table's topics from: the first
/// offset it lacks (`None`: the beginning — it holds none of that partition).
fn wanted(fresh: &FreshTable) -> Result<BTreeMap<Tp, Option<i64>>> {
    let mut from = BTreeMap::new();
    for (topic, parts) in &fresh.offsets {
        for partition in fresh.tail.partitions(topic)? {
            from.insert((topic.clone(), partition), parts.get(&partition).copied());
        }
    }
    Ok(from)
}

/// The events of `records` that belong to `name` and are neither in its
/// snapshot nor already in its tail, appended to the tail as rows.
fn append(
    conn: &Connection,
    name: &str,
    fresh: &mut FreshTable,
    records: &[TailRecord],
) -> Result<()> {
    let mut rows = Rows::with_capacity(0, 0);
    let mut topic_of_row: Vec<i16> = Vec::new();
    let mut keys: Vec<EventKey> = Vec::new();
    let mut scanned: Vec<(Scanned<'_>, Vec<EventKey>, &TailRecord)> = Vec::new();
    for record in records {
        if fresh.holds(&record.tp, record.offset) {
            continue;
        }
        let origin = Origin {
            partition: record.tp.1,
            offset: record.offset,
        };
        // A record that cannot be mapped goes to the dead letters, not to a stream.
        if let Ok(s) = scan(&record.payload, origin, &mut keys)
            && s.stream == name
        {
            scanned.push((s, std::mem::take(&mut keys), record));
        }
    }
    for (s, keys, record) in &scanned {
        let topic_index = fresh.topic_index(&record.tp.0);
        for key in keys {
            if !fresh.ids.insert(key.id) {
                continue;
            }
            fresh
                .held
                .entry(record.tp.clone())
                .or_default()
                .push_back((record.offset, key.id));
            let event = &s.bytes[key.start as usize..(key.start + key.len) as usize];
            rows.push(event, &s.info, key.time_us)
                .map_err(|e| anyhow!("building the tail rows of {name}: {e}"))?;
            topic_of_row.push(topic_index);
        }
    }
    if rows.is_empty() {
        return Ok(());
    }
    let batch = rows
        .finish(&fresh.target)
        .map_err(|e| anyhow!("building the tail rows of {name}: {e}"))?;
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    if let Some(last) = columns.last_mut() {
        *last = Arc::new(Int16Array::from(topic_of_row));
    }
    let batch = RecordBatch::try_new(fresh.target.clone(), columns)
        .with_context(|| format!("the tail rows of {name}"))?;
    let mut appender = conn
        .appender_to_catalog_and_db(name, DATABASE, "tail")
        .map_err(one_line)?;
    appender
        .append_record_batch(batch)
        .and_then(|()| appender.flush())
        .map_err(one_line)
        .with_context(|| format!("appending to the tail of {name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_streams_a_query_names_are_the_bare_and_fresh_names_only() {
        let conn = Connection::open_in_memory().expect("DuckDB");
        let names = |sql: &str| -> Vec<String> { named_streams(&conn, sql).into_iter().collect() };
        assert_eq!(
            names(
                "WITH c AS (SELECT * FROM \"default\") SELECT * FROM c JOIN fresh.app USING (x) \
                 WHERE y IN (SELECT y FROM telemetrylake.logs.committed_only) \
                 UNION ALL SELECT * FROM fresh.main.other"
            ),
            ["app", "c", "default", "other"],
            "a CTE's name is asked of the catalog too (and found missing there)"
        );
        assert_eq!(
            names("SELECT 1; SELECT * FROM a; SELECT * FROM b"),
            ["a", "b"]
        );
        // DDL is not serializable: the script is parsed statement by statement.
        assert_eq!(names("CREATE TABLE t AS SELECT 1; SELECT * FROM s"), ["s"]);
        assert!(names("SELEC nonsense").is_empty());
    }
}
