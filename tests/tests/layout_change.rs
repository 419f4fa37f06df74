//! A stream's layout changed in the compactor's config, against the real
//! stack. `[partition_by]` `<stream> = "hour"` evolves the table's spec with
//! one catalog commit, new files are written per hour, the day files written
//! before stay as they are and readable, and switching back reuses the day
//! spec; `tlake-compactor maintain --relayout`, and only it, then rewrites
//! the hour files into the day spec. `[sort_by]` `<stream> = "event_time"`
//! evolves the sort order the
//! same way: new files are in time order across services, old ones keep
//! (service, event_time). Every acknowledged event is one row for DuckDB
//! and iceberg-rust throughout.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMicrosecondType;
use tlake_catalog_client::iceberg::spec::Transform;
use tlake_catalog_client::{LakeCatalog, SortBy};
use tlake_maintenance::live_data_files;
use tlake_maintenance::read_files;
use tlake_proto::v1::LogEvent;
use tlake_tests::assert_no_loss_no_dup;
use tlake_tests::compactor::{Compactor, CompactorOptions};
use tlake_tests::events::EventGen;
use tlake_tests::flow::Flow;
use tlake_tests::lake::{catalog, duckdb_csv, scan_event_ids, wait_for_rows};

const WAIT: Duration = Duration::from_secs(90);
const HOUR_NS: u64 = 3_600 * 1_000_000_000;

/// 100 events each at now, 3 h and 6 h ago.
fn events(generator: &mut EventGen) -> Vec<LogEvent> {
    let mut out = Vec::new();
    for hours in [0, 3, 6] {
        let mut batch = generator.batch(100);
        for e in &mut batch {
            e.time_unix_nano -= hours * HOUR_NS;
        }
        out.extend(batch);
    }
    out
}

/// Runs a compactor with `toml` until the ledger's events are rows, then stops it.
async fn compact(flow: &Flow, options: &mut CompactorOptions, toml: String, events: &[LogEvent]) {
    options.extra_toml = toml;
    let mut compactor = Compactor::start(options);
    for chunk in events.chunks(100) {
        flow.send_events(chunk).await;
    }
    let catalog = catalog().await;
    wait_for_rows(&catalog, &flow.stream, flow.ledger.len(), WAIT).await;
    compactor.sigterm();
    let status = compactor.wait(Duration::from_secs(60)).expect("exits");
    assert!(status.success(), "{}", compactor.log());
}

/// (path, spec id, partition value) of each live file.
async fn files(catalog: &LakeCatalog, table: &str) -> Vec<(String, i32, String)> {
    let table = catalog.load_table(table).await.expect("load");
    live_data_files(&table)
        .await
        .expect("live files")
        .into_iter()
        .map(|f| {
            (
                f.data_file.file_path().to_owned(),
                f.partition_spec_id,
                format!("{:?}", f.data_file.partition()),
            )
        })
        .collect()
}

fn count(table: &str, filter: &str) -> String {
    duckdb_csv(&format!(
        "SELECT count(*), count(DISTINCT event_id) FROM telemetrylake.logs.\"{table}\" WHERE {filter}"
    ))[0]
        .join(",")
}

#[tokio::test(flavor = "multi_thread")]
async fn day_to_hour_and_back_evolves_the_spec_and_old_files_stay_valid() {
    let flow = Flow::new("partition_change", 2).await;
    let catalog = catalog().await;
    let mut generator = EventGen::new();
    let mut options = CompactorOptions::new(&flow.stack.kafka_brokers, &flow.topic);
    options.max_latency_ms = 200;

    compact(&flow, &mut options, String::new(), &events(&mut generator)).await;
    let day_files = files(&catalog, &flow.stream).await;
    let day_spec = catalog
        .load_table(&flow.stream)
        .await
        .expect("load")
        .metadata()
        .default_partition_spec_id();

    let hourly = format!("[partition_by]\n{} = \"hour\"\n", flow.stream);
    compact(&flow, &mut options, hourly, &events(&mut generator)).await;
    let table = catalog.load_table(&flow.stream).await.expect("load");
    let spec = table.metadata().default_partition_spec();
    assert_ne!(spec.spec_id(), day_spec);
    assert_eq!(
        spec.fields()
            .iter()
            .map(|f| (f.name.as_str(), f.transform))
            .collect::<Vec<_>>(),
        [("event_hour", Transform::Hour)]
    );
    let after = files(&catalog, &flow.stream).await;
    let old: HashSet<_> = day_files.iter().collect();
    assert!(
        day_files.iter().all(|f| after.contains(f)),
        "the day files stay, unchanged"
    );
    let new: Vec<_> = after.iter().filter(|f| !old.contains(f)).collect();
    assert!(new.iter().all(|f| f.1 == spec.spec_id()), "{new:?}");
    let hours: BTreeSet<_> = new.iter().map(|f| &f.2).collect();
    assert!(hours.len() >= 3, "one file per hour at least: {hours:?}");

    // Every reader sees both generations, once, and filters on time across them.
    assert_eq!(count(&flow.stream, "true"), "600,600");
    assert_eq!(
        count(&flow.stream, "event_time < now() - INTERVAL 2 HOUR"),
        "400,400"
    );
    assert_no_loss_no_dup(
        &flow.ledger.ids(),
        &scan_event_ids(&catalog, &flow.stream).await,
        true,
    );

    // Back to days: the day spec is the default again, no third spec.
    compact(&flow, &mut options, String::new(), &events(&mut generator)).await;
    let table = catalog.load_table(&flow.stream).await.expect("load");
    assert_eq!(table.metadata().default_partition_spec_id(), day_spec);
    assert_eq!(table.metadata().partition_specs_iter().len(), 2);
    assert_eq!(count(&flow.stream, "true"), "900,900");
    assert_no_loss_no_dup(
        &flow.ledger.ids(),
        &scan_event_ids(&catalog, &flow.stream).await,
        true,
    );

    // The hour files stay hour files until maintenance is asked to move them.
    let maintain = |args: &[&str]| {
        let mut all = vec!["--table", flow.stream.as_str()];
        all.extend_from_slice(args);
        let run = tlake_tests::compactor::maintain(&options, "", &all);
        assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
        run.stdout
    };
    let older_spec =
        |files: &[(String, i32, String)]| files.iter().filter(|f| f.1 != day_spec).count();
    let plain = maintain(&[]);
    assert!(!plain.contains("relayout"), "{plain}");
    assert_eq!(older_spec(&files(&catalog, &flow.stream).await), new.len());
    let dry = maintain(&["--relayout", "--dry-run"]);
    assert!(
        dry.contains(&format!(
            "relayout (older partition specs): {} partition group(s), files {} -> 0",
            hours.len(),
            new.len()
        )),
        "{dry}"
    );
    assert_eq!(older_spec(&files(&catalog, &flow.stream).await), new.len());
    let moved = maintain(&["--relayout"]);
    assert!(
        moved.contains(&format!(
            "relayout (older partition specs): {} partition group(s), files {} -> ",
            hours.len(),
            new.len()
        )),
        "{moved}"
    );
    let relaid = files(&catalog, &flow.stream).await;
    assert_eq!(older_spec(&relaid), 0, "{relaid:?}");
    assert_eq!(count(&flow.stream, "true"), "900,900");
    assert_eq!(
        count(&flow.stream, "event_time < now() - INTERVAL 2 HOUR"),
        "600,600"
    );
    assert_no_loss_no_dup(
        &flow.ledger.ids(),
        &scan_event_ids(&catalog, &flow.stream).await,
        true,
    );
    eprintln!(
        "partition change: day -> hour -> day, {} day files kept, {} hour files over {} hours, 900 acked = rows = distinct; after --relayout all {} live files are day-spec",
        day_files.len(),
        new.len(),
        hours.len(),
        relaid.len()
    );
}

/// Three requests (one service each: the flow cycles checkout, payments,
/// search) whose event times interleave: time order is not service order.
fn interleaved(generator: &mut EventGen) -> Vec<Vec<LogEvent>> {
    let base = generator.batch(1)[0].time_unix_nano;
    let mut requests = Vec::new();
    for r in 0..3u64 {
        let mut batch = generator.batch(100);
        for (j, e) in batch.iter_mut().enumerate() {
            e.time_unix_nano = base + (j as u64 * 3 + r) * 1_000_000;
        }
        requests.push(batch);
    }
    requests
}

async fn send_all(flow: &Flow, requests: Vec<Vec<LogEvent>>) {
    for request in &requests {
        flow.send_events(request).await;
    }
}

/// (service, event time µs) of every row of `path`, in file order.
async fn rows_of(catalog: &LakeCatalog, table: &str, path: &str) -> Vec<(String, i64)> {
    let table = catalog.load_table(table).await.expect("load");
    let file = live_data_files(&table)
        .await
        .expect("live files")
        .into_iter()
        .map(|f| f.data_file)
        .find(|f| f.file_path() == path)
        .expect("the file is live");
    let mut rows = Vec::new();
    for batch in read_files(&table, &[file]).await.expect("read") {
        let service = batch
            .column_by_name("service")
            .expect("service")
            .as_string::<i32>();
        let time = batch
            .column_by_name("event_time")
            .expect("event_time")
            .as_primitive::<TimestampMicrosecondType>();
        for i in 0..batch.num_rows() {
            rows.push((service.value(i).to_owned(), time.value(i)));
        }
    }
    rows
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sort_order_change_evolves_the_table_and_new_files_follow_it() {
    let flow = Flow::new("sort_change", 2).await;
    let catalog = catalog().await;
    let mut generator = EventGen::new();
    let mut options = CompactorOptions::new(&flow.stack.kafka_brokers, &flow.topic);
    // The three requests of a round land in one flush, one file.
    options.max_latency_ms = 3000;

    let mut compactor = Compactor::start(&options);
    send_all(&flow, interleaved(&mut generator)).await;
    wait_for_rows(&catalog, &flow.stream, 300, WAIT).await;
    compactor.sigterm();
    assert!(
        compactor
            .wait(Duration::from_secs(60))
            .expect("exits")
            .success()
    );
    let before = files(&catalog, &flow.stream).await;

    options.extra_toml = format!("[sort_by]\n{} = \"event_time\"\n", flow.stream);
    let _compactor = Compactor::start(&options);
    send_all(&flow, interleaved(&mut generator)).await;
    wait_for_rows(&catalog, &flow.stream, 600, WAIT).await;
    let table = catalog.load_table(&flow.stream).await.expect("load");
    assert_eq!(SortBy::of(table.metadata()), SortBy::Time);
    assert_eq!(table.metadata().sort_orders_iter().len(), 2);

    let old: HashSet<_> = before.iter().map(|f| f.0.clone()).collect();
    let after = files(&catalog, &flow.stream).await;
    assert!(before.iter().all(|f| after.contains(f)), "old files stay");
    for (path, ..) in &after {
        let rows = rows_of(&catalog, &flow.stream, path).await;
        let services: BTreeSet<_> = rows.iter().map(|r| &r.0).collect();
        assert_eq!(
            services.len(),
            3,
            "{path}: every service's rows in one flush file"
        );
        if old.contains(path) {
            assert!(rows.is_sorted(), "{path}: (service, event_time) order");
        } else {
            assert!(
                rows.iter().map(|r| r.1).is_sorted(),
                "{path}: event_time order across services"
            );
            assert!(!rows.is_sorted(), "{path}: not grouped by service any more");
        }
    }
    assert_eq!(count(&flow.stream, "true"), "600,600");
    assert_no_loss_no_dup(
        &flow.ledger.ids(),
        &scan_event_ids(&catalog, &flow.stream).await,
        true,
    );
}
