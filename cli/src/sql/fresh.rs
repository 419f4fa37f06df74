//! fresh: `tlake sql --fresh` — each stream's table as its committed snapshot
//! holds it plus the records in Kafka past the offsets that snapshot holds
//! (`tlake.offsets`), read with the compactor's own reader
//! (`tlake_record_reader`: `decode::scan`, then `rows::Rows` into the table's
//! Arrow layout) into Parquet files the view reads, so a query sees an event
//! as soon as the gateway acknowledged it.
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
//! keeps what it read and reads only what arrived; a tail file whose rows a
//! newer snapshot all holds is dropped, so the tail stays about as long as the
//! compactor's lag.
//! The views live in an in-memory database `fresh` (`fresh."<stream>"`),
//! first on the search path; the committed tables stay reachable by their
//! full names. Not covered: the dead-letter table, tables without a snapshot
//! yet, and tables whose snapshots carry no `tlake.offsets` (another
//! writer's) — those resolve to the committed table, with a note.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use arrow_schema::SchemaRef;
use duckdb::Connection;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use tlake_catalog_client::iceberg::arrow::schema_to_arrow_schema;
use tlake_catalog_client::iceberg::table::Table;
use tlake_catalog_client::{DEAD_LETTER_TABLE, LakeCatalog, Offsets, progress_of};
use tlake_record_reader::decode::{EventKey, Origin, Scanned, scan};
use tlake_record_reader::rows::Rows;

use super::session::{identifier, literal, one_line};
use super::tail::{TailReader, TailRecord, Tp};

/// The database holding the fresh views (`fresh.main`).
pub const DATABASE: &str = "fresh";

/// One Parquet file of tail rows, as one refresh appended them.
#[derive(Debug)]
struct TailFile {
    path: PathBuf,
    /// Per partition, the highest offset of a row in it.
    last: BTreeMap<Tp, i64>,
    /// Its rows' ids.
    ids: Vec<[u8; 16]>,
}

/// One stream's committed snapshot and what of its tail is held.
#[derive(Debug)]
struct FreshTable {
    metadata_location: String,
    schema_id: i32,
    /// What the snapshot holds: topic → partition → first offset not in it.
    offsets: Offsets,
    /// The table's Arrow layout.
    target: SchemaRef,
    /// This table's consumer.
    tail: TailReader,
    /// The SQL its view was last defined with.
    view: String,
    /// Ids in the tail files.
    ids: HashSet<[u8; 16]>,
    /// At most the lowest id in the tail: where the view's anti-join starts
    /// reading the snapshot's ids. Lowered as ids arrive, raised only when
    /// the snapshot moves, so the view's text changes with commits only.
    low: Option<[u8; 16]>,
    /// This table's tail files and nothing else (the view reads `*.parquet` there).
    dir: PathBuf,
    /// The tail, oldest first.
    files: Vec<TailFile>,
}

impl FreshTable {
    /// Whether the snapshot holds the record at `offset` of `tp`.
    fn holds(&self, tp: &Tp, offset: i64) -> bool {
        self.offsets
            .get(&tp.0)
            .and_then(|parts| parts.get(&tp.1))
            .is_some_and(|&next| offset < next)
    }
}

impl Drop for FreshTable {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
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
    /// A private directory for the Parquet files rows enter DuckDB through; removed on drop.
    spill: PathBuf,
}

impl Drop for Fresh {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.spill);
    }
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
        conn.execute_batch(&format!("ATTACH ':memory:' AS {}", identifier(DATABASE)))
            .map_err(one_line)?;
        let spill = std::env::temp_dir().join(format!(
            "tlake-fresh-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&spill).with_context(|| format!("creating {}", spill.display()))?;
        Ok(Self {
            catalog,
            runtime,
            options: options.clone(),
            tables: BTreeMap::new(),
            noted: HashSet::new(),
            spill,
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
                self.create(&name, &table)?;
            }
            let fresh = self
                .tables
                .get_mut(&name)
                .ok_or_else(|| anyhow!("table {name} has no tail (a bug)"))?;
            advance(&name, fresh, &table)?;
            let from = wanted(fresh)?;
            let records = fresh.tail.read(&from)?;
            append(&name, fresh, &records)?;
            define_view(conn, &name, fresh)?;
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

    /// Drops `name`'s view and tail files, if it has them.
    fn forget(&mut self, conn: &Connection, name: &str) -> Result<()> {
        if self.tables.remove(name).is_some() {
            conn.execute_batch(&format!(
                "DROP VIEW IF EXISTS {}.main.{}",
                identifier(DATABASE),
                identifier(name)
            ))
            .map_err(one_line)?;
        }
        Ok(())
    }

    /// Starts `name`'s tail: its Arrow layout and consumer.
    fn create(&mut self, name: &str, table: &Table) -> Result<()> {
        let metadata = table.metadata();
        let target = schema_to_arrow_schema(metadata.current_schema())
            .with_context(|| format!("the Arrow schema of {name}"))?;
        // A new directory each time: a forgotten table's files are gone with its old one.
        let dir = self
            .spill
            .join(format!("{name}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        self.tables.insert(
            name.to_owned(),
            FreshTable {
                // Empty: `advance` sets the offsets, `define_view` the view.
                metadata_location: String::new(),
                schema_id: metadata.current_schema_id(),
                offsets: Offsets::new(),
                target: Arc::new(target),
                tail: TailReader::new(&self.options.kafka_brokers, self.options.timeout)?,
                view: String::new(),
                ids: HashSet::new(),
                low: None,
                dir,
                files: Vec::new(),
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

/// Moves `fresh` to `table`'s current snapshot, and drops the tail files it holds entirely.
fn advance(name: &str, fresh: &mut FreshTable, table: &Table) -> Result<()> {
    let location = table.metadata_location().unwrap_or_default().to_owned();
    if fresh.metadata_location == location {
        return Ok(());
    }
    let progress = progress_of(name, table.metadata())?;
    fresh.metadata_location = location;
    fresh.offsets = progress.offsets;
    // Rows of a partly held file stay: the view's anti-join hides those the snapshot has.
    let (gone, kept): (Vec<TailFile>, Vec<TailFile>) = std::mem::take(&mut fresh.files)
        .into_iter()
        .partition(|f| f.last.iter().all(|(tp, &offset)| fresh.holds(tp, offset)));
    fresh.files = kept;
    for mut file in gone {
        for id in &file.ids {
            fresh.ids.remove(id);
        }
        file.ids.clear();
        let _ = std::fs::remove_file(&file.path);
    }
    fresh.low = fresh.ids.iter().min().copied();
    Ok(())
}

/// (Re)defines `fresh`'s view over its snapshot and tail, when its text
/// changes: at a new snapshot, or when the tail empties or starts (a view is
/// bound when it is created — the iceberg scan reads the table's metadata —
/// so one created for every query cost ~40 ms of a ~280 ms query at 100K
/// events/s; the tail is read by a glob over the table's directory instead
/// of a list of its files).
///
/// The anti-join reads the snapshot's ids only from `low`, at most the
/// lowest id in the tail: exact (no copy of a tail id lies below it), and
/// cheap for time-ordered ids (UUIDv7, what the SDK makes) — the iceberg and
/// Parquet readers skip every file and row group whose ids all lie below,
/// instead of reading every id of the table for each query.
fn define_view(conn: &Connection, name: &str, fresh: &mut FreshTable) -> Result<()> {
    let db = identifier(DATABASE);
    let t = identifier(name);
    let loc = literal(&fresh.metadata_location);
    let committed = format!("SELECT * FROM iceberg_scan({loc})");
    let sql = match (&fresh.low, fresh.files.is_empty()) {
        (Some(low), false) => format!(
            "CREATE OR REPLACE VIEW {db}.main.{t} AS {committed} \
             UNION ALL BY NAME \
             SELECT tail.* FROM read_parquet({}) AS tail \
             ANTI JOIN (SELECT event_id FROM iceberg_scan({loc}) WHERE event_id >= {}) AS ids \
             ON tail.event_id = ids.event_id",
            literal(&fresh.dir.join("*.parquet").to_string_lossy()),
            blob(low),
        ),
        _ => format!("CREATE OR REPLACE VIEW {db}.main.{t} AS {committed}"),
    };
    if fresh.view != sql {
        conn.execute_batch(&sql)
            .map_err(one_line)
            .with_context(|| format!("creating the fresh view of {name}"))?;
        fresh.view = sql;
    }
    Ok(())
}

/// A BLOB literal.
fn blob(bytes: &[u8]) -> String {
    let escaped: String = bytes.iter().map(|b| format!("\\x{b:02X}")).collect();
    format!("'{escaped}'::BLOB")
}

/// Where to read each partition of the table's topics from: the first
/// offset it lacks (`None`: the beginning — it holds none of that partition).
fn wanted(fresh: &mut FreshTable) -> Result<BTreeMap<Tp, Option<i64>>> {
    let mut from = BTreeMap::new();
    for (topic, parts) in &fresh.offsets {
        for partition in fresh.tail.partitions(topic)? {
            from.insert((topic.clone(), partition), parts.get(&partition).copied());
        }
    }
    Ok(from)
}

/// The events of `records` that belong to `name` and are neither in its
/// snapshot nor already in its tail, as a new tail file.
fn append(name: &str, fresh: &mut FreshTable, records: &[TailRecord]) -> Result<()> {
    let mut rows = Rows::with_capacity(0, 0).promoting(&fresh.target);
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
    let mut file = TailFile {
        path: fresh
            .dir
            .join(format!("{}.parquet", uuid::Uuid::new_v4().simple())),
        last: BTreeMap::new(),
        ids: Vec::new(),
    };
    for (s, keys, record) in &scanned {
        for key in keys {
            if !fresh.ids.insert(key.id) {
                continue;
            }
            file.ids.push(key.id);
            file.last.insert(record.tp.clone(), record.offset);
            let event = &s.bytes[key.start as usize..(key.start + key.len) as usize];
            rows.push(event, &s.info, key.time_us)
                .map_err(|e| anyhow!("building the tail rows of {name}: {e}"))?;
        }
    }
    if rows.is_empty() {
        return Ok(());
    }
    let batch = rows
        .finish(&fresh.target)
        .map_err(|e| anyhow!("building the tail rows of {name}: {e}"))?;
    // A Parquet file the view reads, not rows appended to a DuckDB table: duckdb-rs's Arrow
    // appender converts value by value (11–33 µs a row measured here), and an INSERT from
    // Parquet still cost ~14 µs a row on the busy box; an uncompressed file costs ~4 µs a row
    // to write, and DuckDB scans it on every core when a query needs it.
    let written = std::fs::File::create(&file.path)
        .map_err(anyhow::Error::from)
        .and_then(|out| {
            let props = WriterProperties::builder()
                .set_compression(Compression::UNCOMPRESSED)
                .set_dictionary_enabled(false)
                .build();
            let mut writer = ArrowWriter::try_new(out, batch.schema(), Some(props))?;
            writer.write(&batch)?;
            writer.close()?;
            Ok(())
        })
        .with_context(|| format!("writing the tail rows of {name} to {}", file.path.display()));
    if let Err(e) = written {
        for id in &file.ids {
            fresh.ids.remove(id);
        }
        file.ids.clear();
        let _ = std::fs::remove_file(&file.path);
        return Err(e);
    }
    if let Some(&lowest) = file.ids.iter().min() {
        fresh.low = Some(fresh.low.map_or(lowest, |low| low.min(lowest)));
    }
    fresh.files.push(file);
    Ok(())
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
