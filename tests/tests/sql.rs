//! `tlake sql` and `tlake tables` against the real stack: events sent through
//! the gateway and committed by the compactor are counted back, by id, in every
//! output format; bad input and unreachable services give a one-line error and
//! a non-zero exit, never a panic.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use tlake_tests::compactor::{Compactor, CompactorOptions};
use tlake_tests::flow::Flow;
use tlake_tests::kafka::read_all;
use tlake_tests::lake::{catalog, tlake_command, wait_for_rows};
use tlake_tests::process::temp_dir;

const WAIT: Duration = Duration::from_secs(90);

fn run(command: &mut Command) -> Output {
    command.output().expect("run tlake")
}

fn stdout(output: Output) -> String {
    assert!(
        output.status.success(),
        "tlake failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// A failure's message: exit code 1, one line on stderr starting `tlake: `, no panic.
fn one_line_error(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(
        output.status.code(),
        Some(1),
        "expected exit code 1; stdout {} stderr {stderr}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let line = stderr.trim_end();
    assert!(!line.contains('\n'), "more than one line: {stderr}");
    assert!(line.starts_with("tlake: "), "not a tlake error: {stderr}");
    line.to_owned()
}

fn hex(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02X}")).collect()
}

/// A port on 127.0.0.1 nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_and_tables_see_every_committed_event_once_in_every_format() {
    let mut flow = Flow::new("sql", 2).await;
    let options = CompactorOptions::new(&flow.stack.kafka_brokers, &flow.topic);
    let _compactor = Compactor::start(&options);
    let n = 3000;
    flow.send(n, 500).await;
    let catalog = catalog().await;
    let ids = wait_for_rows(&catalog, &flow.stream, n, WAIT).await;
    assert_eq!(
        ids.len(),
        n,
        "the compactor did not commit every event in {WAIT:?}"
    );
    let table = format!("\"{}\"", flow.stream);

    // CSV, the SQL as an argument; the stream namespace is in use, so the bare table name resolves.
    let csv = stdout(run(tlake_command().args([
        "sql",
        "--format",
        "csv",
        &format!("SELECT count(*) AS events, count(DISTINCT event_id) AS ids FROM {table}"),
    ])));
    assert_eq!(csv, format!("events,ids\n{n},{n}\n"));

    // JSON lines: every acknowledged id exactly once.
    let jsonl = stdout(run(tlake_command().args([
        "sql",
        "--format",
        "jsonl",
        &format!("SELECT hex(event_id) AS id, event_time FROM telemetrylake.logs.{table}"),
    ])));
    let seen: Vec<String> = jsonl
        .lines()
        .map(|line| {
            let row: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            assert!(
                row["event_time"].is_string(),
                "event_time (TIMESTAMPTZ) printed: {line}"
            );
            row["id"].as_str().expect("id is a string").to_owned()
        })
        .collect();
    let distinct: HashSet<&String> = seen.iter().collect();
    assert_eq!(seen.len(), n, "rows");
    assert_eq!(distinct.len(), n, "distinct ids");
    let acked: HashSet<String> = flow.ledger.ids().iter().map(|id| hex(id)).collect();
    assert_eq!(distinct.into_iter().cloned().collect::<HashSet<_>>(), acked);

    // Parquet to a file, read back by DuckDB's own Parquet reader; several statements from
    // --file, the last one's result printed.
    let dir = temp_dir("tlake-sql");
    let parquet = dir.join("events.parquet");
    let out = run(tlake_command()
        .args(["sql", "--format", "parquet", "--output"])
        .arg(&parquet)
        .arg(format!(
            "SELECT event_id, event_time, service, severity_text, body FROM {table}"
        )));
    assert!(stdout(out).is_empty(), "parquet goes to the file only");
    let script = dir.join("count.sql");
    std::fs::write(
        &script,
        format!(
            "SET threads = 1;\nSELECT count(*) AS events, count(DISTINCT event_id) AS ids\n  FROM read_parquet('{}');\n",
            parquet.display()
        ),
    )
    .expect("write script");
    let csv = stdout(run(tlake_command()
        .args(["sql", "--format", "csv", "--file"])
        .arg(&script)));
    assert_eq!(csv, format!("events,ids\n{n},{n}\n"));

    // Standard input (not a terminal: no prompt), the default aligned table.
    let mut child = tlake_command()
        .arg("sql")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tlake sql");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("SELECT count(*) AS events FROM {table};").as_bytes())
        .expect("write stdin");
    let text = stdout(child.wait_with_output().expect("tlake sql"));
    assert!(text.contains("events"), "{text}");
    assert!(text.contains(&format!("| {n} ")), "{text}");
    assert!(text.trim_end().ends_with("1 row"), "{text}");

    // tlake tables: the row count and the committed watermark, which is the next offset after
    // the last record of each partition (everything sent is committed).
    let json = stdout(run(tlake_command().args(["tables", "--output", "json"])));
    let tables: serde_json::Value = serde_json::from_str(&json).expect("tables JSON");
    let entry = tables
        .as_array()
        .expect("an array")
        .iter()
        .find(|t| t["table"] == flow.stream.as_str())
        .unwrap_or_else(|| panic!("{} missing from {json}", flow.stream));
    assert_eq!(entry["rows"], n, "{entry}");
    assert!(entry["files"].as_u64().expect("files") >= 1, "{entry}");
    assert!(entry["bytes"].as_u64().expect("bytes") > 0, "{entry}");
    assert!(entry["newest_event_time"].is_string(), "{entry}");
    let mut next: BTreeMap<String, i64> = BTreeMap::new();
    for record in read_all(&flow.stack.kafka_brokers, &flow.topic) {
        let slot = next.entry(record.partition.to_string()).or_default();
        *slot = (*slot).max(record.offset + 1);
    }
    let committed: BTreeMap<String, i64> =
        serde_json::from_value(entry["committed_offsets"][&flow.topic].clone())
            .unwrap_or_else(|e| panic!("committed_offsets of {}: {e}: {entry}", flow.topic));
    assert_eq!(committed, next, "{entry}");

    let text = stdout(run(tlake_command().arg("tables")));
    let line = text
        .lines()
        .find(|l| l.starts_with(&flow.stream))
        .unwrap_or_else(|| panic!("{} missing from {text}", flow.stream));
    assert!(line.contains(&format!(" {n} ")), "{line}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_sql_and_a_missing_table_are_one_line_errors() {
    let message = one_line_error(&run(tlake_command().args(["sql", "SELEC 1"])));
    assert!(message.contains("syntax error"), "{message}");

    let message = one_line_error(&run(
        tlake_command().args(["sql", "SELECT count(*) FROM \"no_such_stream_here\""])
    ));
    assert!(message.contains("no_such_stream_here"), "{message}");

    let message = one_line_error(&run(
        tlake_command().args(["sql", "--format", "parquet", "SELECT 1"])
    ));
    assert!(message.contains("--output"), "{message}");
}

#[test]
fn unreachable_catalog_and_missing_keys_are_one_line_errors() {
    let uri = format!("http://127.0.0.1:{}/iceberg/", closed_port());
    for command in [&["sql", "SELECT 1"][..], &["tables"]] {
        let message = one_line_error(&run(tlake_command()
            .args(command)
            .args(["--catalog-uri", &uri])));
        assert!(message.contains(&uri), "{command:?}: {message}");
    }

    for command in [&["sql", "SELECT 1"][..], &["tables"]] {
        let message = one_line_error(&run(tlake_command()
            .args(command)
            .env_remove("TLAKE_S3_ACCESS_KEY")
            .env_remove("TLAKE_S3_SECRET_KEY")));
        assert!(
            message.contains("TLAKE_S3_ACCESS_KEY"),
            "{command:?}: {message}"
        );
    }

    let empty = temp_dir("tlake-no-extensions");
    let message = one_line_error(&run(tlake_command()
        .args(["sql", "--extension-dir"])
        .arg(&empty)
        .arg("SELECT 1")));
    assert!(message.contains("deploy/local/libduckdb"), "{message}");
    assert!(
        message.contains(&Path::new(&empty).display().to_string()),
        "{message}"
    );
    std::fs::remove_dir_all(&empty).ok();
}
