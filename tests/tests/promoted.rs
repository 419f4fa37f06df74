//! Promoted attribute columns against the real stack (gateway, Kafka,
//! compactor, Nessie, S3 server, DuckDB): a stream's table first written
//! without promotion, then by a compactor whose `[promote.<stream>]` names
//! typed keys. The table's schema grows additively (the old files untouched);
//! new rows carry typed values in their own columns and not in the map, a
//! value that does not parse stays in the map, old rows answer null in the
//! column and keep the value in the map — and the documented `coalesce`
//! pattern answers for both; `tlake sql --fresh` promotes the Kafka tail the
//! same way. Every acknowledged event is one row throughout.

use std::collections::HashSet;
use std::time::Duration;

use tlake_proto::v1::{AnyValue, KeyValue, LogEvent, any_value};
use tlake_tests::assert_no_loss_no_dup;
use tlake_tests::compactor::{Compactor, CompactorOptions};
use tlake_tests::events::{EventGen, attr};
use tlake_tests::flow::Flow;
use tlake_tests::lake::{catalog, duckdb_csv, scan_event_ids, tlake_command, wait_for_rows};

const WAIT: Duration = Duration::from_secs(90);

fn value(v: any_value::Value) -> Option<AnyValue> {
    Some(AnyValue { value: Some(v) })
}

/// Events with typed attributes: event `i` has status 200 (text), 404
/// (an OTLP int) or "n/a" (not a number, every 10th), a duration (double),
/// a cache hit flag (bool) and a start time (RFC 3339).
fn events(generator: &mut EventGen, count: usize) -> Vec<LogEvent> {
    let mut events = generator.batch(count);
    for (i, e) in events.iter_mut().enumerate() {
        let status = if i % 10 == 9 {
            attr("http.status_code", "n/a")
        } else if i % 2 == 0 {
            attr("http.status_code", "200")
        } else {
            KeyValue {
                key: "http.status_code".into(),
                value: value(any_value::Value::IntValue(404)),
            }
        };
        e.attributes.extend([
            status,
            KeyValue {
                key: "duration_ms".into(),
                value: value(any_value::Value::DoubleValue(1.5)),
            },
            KeyValue {
                key: "cache.hit".into(),
                value: value(any_value::Value::BoolValue(i % 3 == 0)),
            },
            attr("started_at", "2026-12-03T10:00:00Z"),
        ]);
    }
    events
}

fn sql(table: &str, select: &str) -> Vec<Vec<String>> {
    duckdb_csv(&format!(
        "SELECT {select} FROM telemetrylake.logs.\"{table}\""
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn promoted_keys_become_typed_columns_for_new_files_and_old_rows_keep_the_map() {
    let flow = Flow::new("promoted", 2).await;
    let catalog = catalog().await;
    let mut generator = EventGen::new();
    let mut options = CompactorOptions::new(&flow.stack.kafka_brokers, &flow.topic);
    options.max_latency_ms = 200;

    // Before: no promotion.
    let mut compactor = Compactor::start(&options);
    let old = events(&mut generator, 500);
    for chunk in old.chunks(100) {
        flow.send_events(chunk).await;
    }
    wait_for_rows(&catalog, &flow.stream, 500, WAIT).await;
    compactor.sigterm();
    let status = compactor.wait(Duration::from_secs(60)).expect("exits");
    assert!(status.success(), "{}", compactor.log());
    let schema_before = catalog
        .load_table(&flow.stream)
        .await
        .expect("load")
        .metadata()
        .current_schema_id();

    // After: four keys promoted, one left in the map.
    options.extra_toml = format!(
        "[promote.{}]\n\"http.status_code\" = \"long\"\nduration_ms = \"double\"\n\
         \"cache.hit\" = \"bool\"\nstarted_at = \"timestamp\"\n",
        flow.stream
    );
    let mut compactor = Compactor::start(&options);
    let new = events(&mut generator, 500);
    for chunk in new.chunks(100) {
        flow.send_events(chunk).await;
    }
    let ids = wait_for_rows(&catalog, &flow.stream, 1000, WAIT).await;
    assert_no_loss_no_dup(&flow.ledger.ids(), &ids, true);

    // The schema grew by the four columns, each documented with its key.
    let table = catalog.load_table(&flow.stream).await.expect("load");
    assert_ne!(table.metadata().current_schema_id(), schema_before);
    let schema = table.metadata().current_schema();
    for (column, key) in [
        ("attr_http_status_code", "http.status_code"),
        ("attr_duration_ms", "duration_ms"),
        ("attr_cache_hit", "cache.hit"),
        ("attr_started_at", "started_at"),
    ] {
        let field = schema
            .field_by_name(column)
            .unwrap_or_else(|| panic!("{column}"));
        assert_eq!(
            field.doc.as_deref(),
            Some(format!("promoted attribute: {key}").as_str())
        );
        assert!(!field.required);
    }

    // Old rows (first 500 ids): null columns, the values in the map.
    let old_ids: HashSet<String> = old
        .iter()
        .map(|e| e.event_id.iter().map(|b| format!("{b:02X}")).collect())
        .collect();
    let by_id = sql(
        &flow.stream,
        "hex(event_id), \
         coalesce(attr_http_status_code::VARCHAR, 'null'), \
         coalesce(attributes['http.status_code'], 'absent'), \
         coalesce(attr_duration_ms::VARCHAR, 'null'), coalesce(attributes['duration_ms'], 'absent'), \
         coalesce(attr_cache_hit::VARCHAR, 'null'), \
         coalesce(epoch_us(attr_started_at)::VARCHAR, 'null'), \
         coalesce(attributes['user.id'], 'absent')",
    );
    assert_eq!(by_id.len(), 1000);
    let (mut old_seen, mut new_typed, mut new_kept_in_map) = (0, 0, 0);
    for row in &by_id {
        let (id, column, map) = (&row[0], &row[1], &row[2]);
        assert_ne!(
            row[7], "absent",
            "user.id is not promoted: always in the map"
        );
        if old_ids.contains(id) {
            old_seen += 1;
            assert_eq!(column, "null", "old rows have no value in the new column");
            assert_ne!(map, "absent", "old rows keep the value in the map");
            assert_eq!(
                (row[3].as_str(), row[5].as_str(), row[6].as_str()),
                ("null", "null", "null")
            );
            assert_eq!(row[4], "1.5");
        } else if map == "n/a" {
            new_kept_in_map += 1;
            assert_eq!(
                column, "null",
                "a value that does not parse stays in the map only"
            );
        } else {
            new_typed += 1;
            assert!(column == "200" || column == "404", "{row:?}");
            assert_eq!(map, "absent", "a promoted value is not repeated in the map");
            assert_eq!((row[3].as_str(), row[4].as_str()), ("1.5", "absent"));
            assert!(row[5] == "true" || row[5] == "false", "{row:?}");
            assert_eq!(row[6], "1796292000000000", "2026-12-03T10:00:00Z in µs");
        }
    }
    assert_eq!((old_seen, new_typed, new_kept_in_map), (500, 450, 50));

    // The documented query over both: typed column, else the map.
    let both = sql(
        &flow.stream,
        "count(*) FILTER (WHERE coalesce(attr_http_status_code, \
         TRY_CAST(attributes['http.status_code'] AS BIGINT)) = 404), count(*), count(DISTINCT event_id)",
    );
    assert_eq!(
        both,
        vec![vec!["400".to_owned(), "1000".to_owned(), "1000".to_owned()]],
        "4 of 10 are 404, old and new"
    );

    // iceberg-rust reads the evolved table too.
    assert_eq!(scan_event_ids(&catalog, &flow.stream).await.len(), 1000);

    // A fresh view builds its Kafka tail with the table's promotion: 100
    // events acknowledged but not committed (the compactor is stopped).
    compactor.sigterm();
    let status = compactor.wait(Duration::from_secs(60)).expect("exits");
    assert!(status.success(), "{}", compactor.log());
    let tail = events(&mut generator, 100);
    flow.send_events(&tail).await;
    let query = format!(
        "SELECT count(*) FILTER (WHERE attr_http_status_code = 404) AS typed_404, \
         count(*) FILTER (WHERE attributes['http.status_code'] IS NOT NULL) AS in_map, \
         count(*) AS events, count(DISTINCT event_id) AS ids FROM \"{}\"",
        flow.stream
    );
    let output = tlake_command()
        .args(["sql", "--fresh", "--format", "csv", &query])
        .output()
        .expect("run tlake");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // 404s: 200 committed + 40 in the tail; in the map: the 500 old rows and
    // the 50 + 10 unparsable values.
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "typed_404,in_map,events,ids\n240,560,1100,1100\n"
    );
    eprintln!(
        "promoted: 500 old rows (map only), 450 new rows typed, 50 unparsable kept in the map; 1000 acked = rows = distinct"
    );
}

#[test]
fn a_wrong_promotion_stops_the_compactor_with_the_reason() {
    let options = CompactorOptions {
        extra_toml: "[promote.app]\n\"http.status_code\" = \"integer\"\n".into(),
        ..CompactorOptions::new("127.0.0.1:9092", "telemetry-logs")
    };
    let run = tlake_tests::compactor::maintain(&options, "", &["--dry-run"]);
    assert_ne!(run.code, Some(0));
    assert!(
        run.stderr.contains("integer") && run.stderr.contains("long"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
}
