//! Retention against the real stack (gateway, Kafka, compactor, Nessie, S3
//! server): `tlake-compactor maintain` drops the day partitions older than a
//! stream's bound with one metadata-only `delete` snapshot — gone for
//! iceberg-rust and DuckDB alike, newer rows untouched, the Kafka progress
//! carried forward, the dropped files left on storage for expiry and orphan
//! removal — a compactor commit landing between plan and drop is kept and
//! the drop retried, and a bound of 0 or below is refused.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, SystemTime};

use tlake_catalog_client::LakeCatalog;
use tlake_maintenance::{
    Maintainer, RetentionOutcome, SUMMARY_MAINTENANCE, first_kept_day, live_data_files,
};
use tlake_proto::v1::LogEvent;
use tlake_tests::assert_no_loss_no_dup;
use tlake_tests::compactor::{Compactor, CompactorOptions, maintain};
use tlake_tests::events::EventGen;
use tlake_tests::flow::Flow;
use tlake_tests::lake::{catalog, duckdb_csv, scan_event_ids, wait_for_rows};

const WAIT: Duration = Duration::from_secs(90);
const DAY_NS: u64 = 86_400 * 1_000_000_000;

/// `count` events whose event time is `days_ago` days before now.
fn events_days_ago(generator: &mut EventGen, count: usize, days_ago: u64) -> Vec<LogEvent> {
    let mut events = generator.batch(count);
    for e in &mut events {
        e.time_unix_nano -= days_ago * DAY_NS;
    }
    events
}

fn ids(events: &[LogEvent]) -> Vec<[u8; 16]> {
    events
        .iter()
        .map(|e| <[u8; 16]>::try_from(e.event_id.as_ref()).expect("16-byte id"))
        .collect()
}

/// Sends `events` in requests of 100 (each acknowledged into the ledger).
async fn send(flow: &Flow, events: &[LogEvent]) {
    for chunk in events.chunks(100) {
        flow.send_events(chunk).await;
    }
}

/// A flow with its compactor running (flushing every 200 ms).
async fn flow_with_compactor(name: &str) -> (Flow, CompactorOptions, Compactor) {
    let flow = Flow::new(name, 2).await;
    let mut options = CompactorOptions::new(&flow.stack.kafka_brokers, &flow.topic);
    options.max_latency_ms = 200;
    let compactor = Compactor::start(&options);
    (flow, options, compactor)
}

/// The paths of the table's live data files.
async fn live_paths(catalog: &LakeCatalog, table: &str) -> BTreeSet<String> {
    let table = catalog.load_table(table).await.expect("load");
    live_data_files(&table)
        .await
        .expect("live files")
        .into_iter()
        .map(|f| f.data_file.file_path().to_owned())
        .collect()
}

fn duckdb_count(table: &str, filter: &str) -> String {
    duckdb_csv(&format!(
        "SELECT count(*) FROM telemetrylake.logs.\"{table}\" WHERE {filter}"
    ))[0][0]
        .clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn day_partitions_past_the_bound_are_dropped_by_one_delete_and_newer_rows_stay() {
    let (flow, options, _compactor) = flow_with_compactor("retention").await;
    let catalog = catalog().await;
    let mut generator = EventGen::new();
    // Two old days (10 and 11 days ago), one inside the bound (3 days), today.
    let old: Vec<LogEvent> = [10, 11]
        .into_iter()
        .flat_map(|d| events_days_ago(&mut generator, 400, d))
        .collect();
    let recent = events_days_ago(&mut generator, 400, 3);
    let today = events_days_ago(&mut generator, 400, 0);
    for events in [&old, &recent, &today] {
        send(&flow, events).await;
    }
    let all = flow.ledger.ids();
    assert_eq!(all.len(), 1600);
    wait_for_rows(&catalog, &flow.stream, all.len(), WAIT).await;
    let before = catalog.progress(&flow.stream).await.expect("progress");
    let files_before = live_paths(&catalog, &flow.stream).await;

    // The default (1 day) would drop the 3-day-old events; the stream's own
    // bound (5 days) keeps them.
    let bounds = format!(
        "retention = {{ default_days = 1, streams = {{ {} = 5 }} }}",
        flow.stream
    );
    let dry = maintain(&options, &bounds, &["--table", &flow.stream, "--dry-run"]);
    assert_eq!(dry.code, Some(0), "{}\n{}", dry.stdout, dry.stderr);
    assert!(
        dry.stdout.contains("(dry run)")
            && dry
                .stdout
                .contains("retention: 5 day(s): 2 day partition(s)")
            && dry.stdout.contains("rows 800, ")
            && dry.stdout.contains("commits 0"),
        "{}",
        dry.stdout
    );
    assert_eq!(
        scan_event_ids(&catalog, &flow.stream).await.len(),
        1600,
        "a dry run drops nothing"
    );

    let run = maintain(&options, &bounds, &["--table", &flow.stream]);
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    eprintln!("{}", run.stdout);
    assert!(
        run.stdout
            .contains("retention: 5 day(s): 2 day partition(s)")
            && run.stdout.contains("rows 800, ")
            && run.stdout.contains("commits 1"),
        "{}",
        run.stdout
    );

    // Gone for every reader; the newer rows are all there, once.
    let old_ids: HashSet<[u8; 16]> = ids(&old).into_iter().collect();
    let kept: Vec<[u8; 16]> = all
        .iter()
        .filter(|id| !old_ids.contains(*id))
        .copied()
        .collect();
    let scanned = scan_event_ids(&catalog, &flow.stream).await;
    assert_no_loss_no_dup(&kept, &scanned, true);
    let cutoff_us = i64::from(first_kept_day(SystemTime::now(), 5)) * 86_400_000_000;
    assert_eq!(
        duckdb_count(&flow.stream, &format!("epoch_us(event_time) < {cutoff_us}")),
        "0"
    );
    assert_eq!(duckdb_count(&flow.stream, "true"), "800");
    assert_eq!(
        duckdb_csv(&format!(
            "SELECT count(DISTINCT event_id) FROM telemetrylake.logs.\"{}\"",
            flow.stream
        ))[0][0],
        "800"
    );

    // One metadata-only delete snapshot carrying the progress forward; the
    // dropped files are still on storage (orphan removal's grace is an hour).
    let table = catalog.load_table(&flow.stream).await.expect("load");
    let snapshot = table.metadata().current_snapshot().expect("a snapshot");
    assert_eq!(
        snapshot.summary().operation,
        tlake_catalog_client::iceberg::spec::Operation::Delete
    );
    assert_eq!(
        snapshot
            .summary()
            .additional_properties
            .get(SUMMARY_MAINTENANCE)
            .map(String::as_str),
        Some("retention")
    );
    assert_eq!(
        snapshot
            .summary()
            .additional_properties
            .get("added-data-files")
            .map(String::as_str),
        Some("0")
    );
    let files_after = live_paths(&catalog, &flow.stream).await;
    let dropped: Vec<&String> = files_before.difference(&files_after).collect();
    assert_eq!(
        dropped.len(),
        2,
        "one file per old day and flush: {dropped:?}"
    );
    assert!(
        files_after.is_subset(&files_before),
        "no file written by the drop"
    );
    for path in dropped {
        assert!(
            table.file_io().exists(path).await.expect("stat"),
            "{path} must stay until orphan removal"
        );
    }
    let after = catalog.progress(&flow.stream).await.expect("progress");
    assert_ne!(after.snapshot_id, before.snapshot_id);
    assert_eq!(after.offsets, before.offsets);
    assert_eq!(after.newest_event_time_us, before.newest_event_time_us);

    // Nothing left to drop: a second pass commits nothing.
    let again = maintain(&options, &bounds, &["--table", &flow.stream]);
    assert!(
        again
            .stdout
            .contains("retention: 5 day(s): 0 day partition(s) dropped")
            && again.stdout.contains("commits 0"),
        "{}",
        again.stdout
    );

    // The compactor commits on top of the delete; late events of an old day
    // land too, and the next pass drops them.
    let late = events_days_ago(&mut generator, 200, 12);
    let more = events_days_ago(&mut generator, 200, 0);
    send(&flow, &late).await;
    send(&flow, &more).await;
    wait_for_rows(&catalog, &flow.stream, 1200, WAIT).await;
    let last = maintain(&options, &bounds, &["--table", &flow.stream]);
    assert!(
        last.stdout.contains("1 day partition(s)") && last.stdout.contains("rows 200, "),
        "{}",
        last.stdout
    );
    let expected: Vec<[u8; 16]> = kept.iter().chain(&ids(&more)).copied().collect();
    assert_no_loss_no_dup(
        &expected,
        &scan_event_ids(&catalog, &flow.stream).await,
        true,
    );
    eprintln!(
        "retention: 800 of 1600 rows in 2 old days dropped by one delete, 800 kept; 200 late rows of an old day dropped by the next pass"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_compactor_commit_between_plan_and_drop_is_kept_and_the_drop_retried() {
    let (flow, _options, _compactor) = flow_with_compactor("retention_race").await;
    let catalog = catalog().await;
    let mut generator = EventGen::new();
    let old = events_days_ago(&mut generator, 500, 20);
    let first = events_days_ago(&mut generator, 500, 0);
    send(&flow, &old).await;
    send(&flow, &first).await;
    wait_for_rows(&catalog, &flow.stream, 1000, WAIT).await;

    // Planned on this table; the compactor then commits on top of it.
    let planned = catalog.load_table(&flow.stream).await.expect("load");
    let second = events_days_ago(&mut generator, 500, 0);
    send(&flow, &second).await;
    wait_for_rows(&catalog, &flow.stream, 1500, WAIT).await;

    let before_day = first_kept_day(SystemTime::now(), 7);
    let outcome = Maintainer::new(catalog.clone())
        .drop_days_before(&planned, before_day, false)
        .await
        .expect("drop");
    let RetentionOutcome::Committed {
        plan, conflicts, ..
    } = outcome
    else {
        panic!("expected a committed drop, got {outcome:?}");
    };
    assert!(
        conflicts >= 1,
        "the compactor's commit must have been a conflict"
    );
    assert_eq!((plan.rows, plan.days.len()), (500, 1), "{plan:?}");

    // Not blocked either: the compactor keeps committing on top.
    let third = events_days_ago(&mut generator, 500, 0);
    send(&flow, &third).await;
    let expected: Vec<[u8; 16]> = [&first, &second, &third]
        .into_iter()
        .flat_map(|e| ids(e))
        .collect();
    let scanned = wait_for_rows(&catalog, &flow.stream, expected.len(), WAIT).await;
    assert_no_loss_no_dup(&expected, &scanned, true);
    eprintln!(
        "retention race: {conflicts} conflict(s) retried, 500 old rows dropped, 1500 acked = rows = distinct"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bound_of_zero_or_below_is_refused_with_the_key() {
    let options = CompactorOptions::new("127.0.0.1:9092", "telemetry-logs");
    for (bounds, says) in [
        (
            "retention = { default_days = 0 }",
            "maintenance.retention.default_days",
        ),
        (
            "retention = { default_days = -7 }",
            "-7 days is not a retention",
        ),
        (
            "retention = { streams = { app = -1 } }",
            "app: -1 days is not a retention",
        ),
    ] {
        let run = maintain(&options, bounds, &["--dry-run"]);
        assert_ne!(run.code, Some(0), "{bounds}: {}", run.stdout);
        assert!(run.stderr.contains(says), "{bounds}: {}", run.stderr);
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    }
}
