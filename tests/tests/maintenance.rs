//! Table maintenance against the real local stack (Kafka, S3 server,
//! Nessie): small files rewritten by a `replace` commit that keeps every row
//! once and the Kafka progress unchanged, old table versions expired,
//! orphans deleted after the grace period, and a compactor append landing
//! between plan and commit retried without a duplicate.

use std::collections::BTreeMap;
use std::time::Duration;

use arrow_array::Array;
use arrow_array::cast::AsArray;
use tlake_catalog_client::LakeCatalog;
use tlake_maintenance::{
    Maintainer, ReplaceOutcome, Retention, Settings, live_data_files, plan_rewrites, read_files,
    rewrite_group,
};
use tlake_tests::assert_no_loss_no_dup;
use tlake_tests::compactor::{Compactor, CompactorOptions, MaintainRun, maintain};
use tlake_tests::flow::Flow;
use tlake_tests::lake::{catalog, duckdb_csv, scan_event_ids, wait_for_rows};

const WAIT: Duration = Duration::from_secs(90);

/// A flow whose table holds many small files: `rounds` flushes of `per_round` events.
async fn small_files(name: &str, rounds: usize, per_round: usize) -> (Flow, CompactorOptions) {
    let mut flow = Flow::new(name, 2).await;
    let mut options = CompactorOptions::new(&flow.stack.kafka_brokers, &flow.topic);
    options.max_latency_ms = 200;
    let mut compactor = Compactor::start(&options);
    let catalog = catalog().await;
    for _ in 0..rounds {
        flow.send(per_round, per_round / 2).await;
        let n = flow.ledger.len();
        wait_for_rows(&catalog, &flow.stream, n, WAIT).await;
    }
    compactor.sigterm();
    let status = compactor.wait(Duration::from_secs(60)).expect("exits");
    assert!(status.success(), "{}", compactor.log());
    (flow, options)
}

fn assert_ok(run: &MaintainRun) {
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
}

async fn data_files(
    catalog: &LakeCatalog,
    table: &str,
) -> Vec<tlake_catalog_client::iceberg::spec::DataFile> {
    let table = catalog.load_table(table).await.expect("load");
    live_data_files(&table)
        .await
        .expect("live files")
        .into_iter()
        .map(|f| f.data_file)
        .collect()
}

fn duckdb_counts(table: &str) -> Vec<Vec<String>> {
    duckdb_csv(&format!(
        "SELECT count(*), count(DISTINCT event_id) FROM telemetrylake.logs.\"{table}\""
    ))
}

/// After maintenance: every acknowledged row once (iceberg-rust and DuckDB),
/// a new snapshot, and the committed progress carried forward unchanged.
async fn assert_rows_and_progress_unchanged(
    flow: &Flow,
    catalog: &LakeCatalog,
    before: &tlake_catalog_client::Progress,
) {
    let n = flow.ledger.len();
    let ids = scan_event_ids(catalog, &flow.stream).await;
    assert_no_loss_no_dup(&flow.ledger.ids(), &ids, true);
    assert_eq!(
        duckdb_counts(&flow.stream),
        vec![vec![n.to_string(), n.to_string()]]
    );
    let after = catalog.progress(&flow.stream).await.expect("progress");
    assert_ne!(after.snapshot_id, before.snapshot_id);
    assert_eq!(after.offsets, before.offsets);
    assert_eq!(after.newest_event_time_us, before.newest_event_time_us);
}

#[tokio::test(flavor = "multi_thread")]
async fn small_files_are_rewritten_sorted_with_rows_and_progress_unchanged() {
    let (mut flow, options) = small_files("rewrite", 6, 300).await;
    let catalog = catalog().await;
    let before = data_files(&catalog, &flow.stream).await;
    let progress_before = catalog.progress(&flow.stream).await.expect("progress");
    assert!(before.len() >= 6, "{} files", before.len());

    // A dry run changes nothing.
    let dry = maintain(&options, "", &["--table", &flow.stream, "--dry-run"]);
    assert_ok(&dry);
    assert!(dry.stdout.contains("(dry run)"), "{}", dry.stdout);
    assert_eq!(data_files(&catalog, &flow.stream).await.len(), before.len());

    let run = maintain(&options, "", &["--table", &flow.stream]);
    assert_ok(&run);
    eprintln!("{}", run.stdout);
    let after = data_files(&catalog, &flow.stream).await;
    let bytes = |files: &[tlake_catalog_client::iceberg::spec::DataFile]| {
        files.iter().map(|f| f.file_size_in_bytes()).sum::<u64>()
    };
    eprintln!(
        "files {} -> {}, bytes {} -> {}",
        before.len(),
        after.len(),
        bytes(&before),
        bytes(&after)
    );
    assert!(
        after.len() < before.len(),
        "{} -> {}",
        before.len(),
        after.len()
    );
    assert!(
        run.stdout
            .contains(&format!("files {} -> {}", before.len(), after.len())),
        "{}",
        run.stdout
    );

    assert_rows_and_progress_unchanged(&flow, &catalog, &progress_before).await;

    // Rewritten files are sorted by (service, event_time).
    let table = catalog.load_table(&flow.stream).await.expect("load");
    let rewritten: Vec<_> = after
        .iter()
        .filter(|f| f.file_path().contains("/rewrite-"))
        .cloned()
        .collect();
    assert!(!rewritten.is_empty());
    for file in &rewritten {
        let batches = read_files(&table, std::slice::from_ref(file))
            .await
            .expect("read");
        let mut keys = Vec::new();
        for b in &batches {
            let service = b
                .column_by_name("service")
                .expect("service")
                .as_string::<i32>();
            let time = b
                .column_by_name("event_time")
                .expect("event_time")
                .as_primitive::<arrow_array::types::TimestampMicrosecondType>();
            for i in 0..b.num_rows() {
                keys.push((
                    service.is_valid(i).then(|| service.value(i).to_owned()),
                    time.value(i),
                ));
            }
        }
        assert!(keys.is_sorted(), "{} is not sorted", file.file_path());
    }

    // The compactor goes on from the carried-forward offsets: no re-read, no loss.
    let _compactor = Compactor::start(&options);
    flow.send(200, 100).await;
    let ids = wait_for_rows(&catalog, &flow.stream, flow.ledger.len(), WAIT).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ids_after = scan_event_ids(&catalog, &flow.stream).await;
    assert_eq!(ids.len(), ids_after.len());
    assert_no_loss_no_dup(&flow.ledger.ids(), &ids_after, true);
}

#[tokio::test(flavor = "multi_thread")]
async fn old_versions_expire_and_orphans_past_the_grace_are_deleted() {
    let (flow, options) = small_files("orphans", 4, 200).await;
    let catalog = catalog().await;
    let n = flow.ledger.len();
    let table = catalog.load_table(&flow.stream).await.expect("load");
    let location = table.metadata().location().trim_end_matches('/').to_owned();
    let io = table.file_io().clone();
    // What a crashed flush leaves: a data file and a manifest nobody references.
    let stray_data = format!("{location}/data/event_day=2020-01-01/crashed-00000.parquet");
    let stray_manifest = format!("{location}/metadata/crashed-m0.avro");
    for path in [&stray_data, &stray_manifest] {
        io.new_output(path)
            .expect("output")
            .write(b"left by a crash".to_vec().into())
            .await
            .expect("write stray");
    }
    let referenced_before = data_files(&catalog, &flow.stream).await;
    tokio::time::sleep(Duration::from_millis(8500)).await;

    let settings = "keep_snapshots = 1\nsnapshot_max_age_ms = 0\norphan_grace_ms = 8000\n";
    let dry = maintain(&options, settings, &["--table", &flow.stream, "--dry-run"]);
    assert_ok(&dry);
    assert!(
        io.exists(&stray_data).await.expect("exists"),
        "a dry run deletes nothing"
    );
    // In-flight: written just now, younger than the grace, must survive.
    let young = format!("{location}/data/event_day=2020-01-01/in-flight-00000.parquet");
    io.new_output(&young)
        .expect("output")
        .write(b"being committed".to_vec().into())
        .await
        .expect("write young");

    let run = maintain(&options, settings, &["--table", &flow.stream]);
    assert_ok(&run);
    eprintln!("{}", run.stdout);
    assert!(
        !io.exists(&stray_data).await.expect("exists"),
        "{}",
        run.stdout
    );
    assert!(
        !io.exists(&stray_manifest).await.expect("exists"),
        "{}",
        run.stdout
    );
    assert!(
        io.exists(&young).await.expect("exists"),
        "younger than the grace"
    );

    // The current version and everything it references are untouched.
    let table = catalog.load_table(&flow.stream).await.expect("load");
    let current = table
        .metadata_location()
        .expect("metadata location")
        .to_owned();
    assert!(io.exists(&current).await.expect("exists"));
    let live: Vec<String> = data_files(&catalog, &flow.stream)
        .await
        .iter()
        .map(|f| f.file_path().to_owned())
        .collect();
    for path in &live {
        assert!(io.exists(path).await.expect("exists"), "{path}");
    }
    // The small files the rewrite replaced went with the expired versions.
    let replaced: Vec<_> = referenced_before
        .iter()
        .filter(|f| !live.iter().any(|p| p == f.file_path()))
        .collect();
    assert!(!replaced.is_empty(), "{}", run.stdout);
    for file in replaced {
        assert!(
            !io.exists(file.file_path()).await.expect("exists"),
            "{}",
            file.file_path()
        );
    }
    let ids = scan_event_ids(&catalog, &flow.stream).await;
    assert_no_loss_no_dup(&flow.ledger.ids(), &ids, true);
    assert_eq!(
        duckdb_counts(&flow.stream),
        vec![vec![n.to_string(), n.to_string()]]
    );

    // Only the newest version is left (keep_snapshots = 1, age 0).
    let again = maintain(&options, settings, &["--table", &flow.stream, "--dry-run"]);
    assert_ok(&again);
    assert!(
        again.stdout.contains("table versions 1 found, 1 retained"),
        "{}",
        again.stdout
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_append_between_plan_and_commit_is_retried_without_duplicates() {
    let mut flow = Flow::new("race", 2).await;
    let mut options = CompactorOptions::new(&flow.stack.kafka_brokers, &flow.topic);
    options.max_latency_ms = 200;
    let _compactor = Compactor::start(&options);
    let catalog = catalog().await;
    for _ in 0..4 {
        flow.send(200, 100).await;
        wait_for_rows(&catalog, &flow.stream, flow.ledger.len(), WAIT).await;
    }
    // Plan and write the rewrite on the table as it is now ...
    let planned = catalog.load_table(&flow.stream).await.expect("load");
    let files = live_data_files(&planned).await.expect("files");
    let settings = Settings::default();
    let groups = plan_rewrites(
        &files,
        planned.metadata().default_partition_spec_id(),
        &settings,
    );
    assert!(!groups.is_empty(), "{} files", files.len());
    let group = &groups[0];
    let written = rewrite_group(&planned, group, settings.target_file_bytes)
        .await
        .expect("rewrite");
    // ... then the compactor appends before the replace commits.
    flow.send(300, 100).await;
    wait_for_rows(&catalog, &flow.stream, flow.ledger.len(), WAIT).await;
    let progress = catalog.progress(&flow.stream).await.expect("progress");
    assert_ne!(
        progress.snapshot_id,
        planned.metadata().current_snapshot_id()
    );

    let outcome = Maintainer::new(catalog.clone())
        .replace_files(&planned, &group.files, &written.files)
        .await
        .expect("replace");
    match outcome {
        ReplaceOutcome::Committed { conflicts, .. } => assert!(conflicts >= 1, "{outcome:?}"),
        other => panic!("expected Committed after a conflict, got {other:?}"),
    }
    // The append survived, nothing doubled, and progress is the append's.
    let ids = scan_event_ids(&catalog, &flow.stream).await;
    assert_no_loss_no_dup(&flow.ledger.ids(), &ids, true);
    let after = catalog.progress(&flow.stream).await.expect("progress");
    // The compactor may have committed again meanwhile; offsets never go back.
    for (topic, parts) in &progress.offsets {
        for (p, o) in parts {
            assert!(after.offsets[topic][p] >= *o);
        }
    }

    // The same files replaced again (a second maintenance run that planned on
    // the old table): they are gone, so nothing is committed.
    let again = rewrite_group(&planned, group, settings.target_file_bytes)
        .await
        .expect("rewrite");
    let outcome = Maintainer::new(catalog.clone())
        .replace_files(&planned, &group.files, &again.files)
        .await
        .expect("replace");
    assert!(
        matches!(outcome, ReplaceOutcome::Abandoned { .. }),
        "{outcome:?}"
    );
    let ids = scan_event_ids(&catalog, &flow.stream).await;
    assert_no_loss_no_dup(&flow.ledger.ids(), &ids, true);
}

#[tokio::test(flavor = "multi_thread")]
async fn nessie_refuses_remove_snapshots_and_expiry_says_so() {
    use std::collections::BTreeMap;
    use tlake_catalog_client::{CommitOutcome, CommitRequest, Error, TableKind};

    let catalog = catalog().await;
    let table = tlake_tests::lake::unique_stream("expire");
    catalog
        .ensure_table(&table, TableKind::Logs)
        .await
        .expect("create");
    let mut first = None;
    for (i, next) in [10, 20].into_iter().enumerate() {
        let request = CommitRequest {
            table: table.clone(),
            expected: BTreeMap::from([(
                "t".to_owned(),
                BTreeMap::from([(0, (i > 0).then_some(10))]),
            )]),
            next: BTreeMap::from([("t".to_owned(), BTreeMap::from([(0, next)]))]),
            files: Vec::new(),
            commit_id: uuid::Uuid::now_v7(),
            writer_epoch: 1,
            max_event_time_us: None,
        };
        let CommitOutcome::Committed(id) = tlake_tests::lake::commit_known(&catalog, &request)
            .await
            .expect("commit")
        else {
            panic!("commit must land");
        };
        first.get_or_insert(id);
    }
    let loaded = catalog.load_table(&table).await.expect("load");
    // Nessie lists only the current snapshot: nothing for remove-snapshots to do.
    assert_eq!(loaded.metadata().snapshots().len(), 1);
    let report = Maintainer::new(catalog.clone())
        .expire_snapshots(
            &table,
            Retention {
                max_age: Duration::ZERO,
                keep_last: 1,
            },
            false,
        )
        .await
        .expect("expire");
    assert_eq!((report.listed, report.expired.len()), (1, 0));
    // And asked anyway, it refuses, clearly and for good.
    match Maintainer::new(catalog.clone())
        .remove_snapshots(&loaded, &[first.expect("first snapshot")])
        .await
    {
        Err(e @ Error::Refused { .. }) => {
            assert!(!e.retryable());
            assert!(
                e.to_string()
                    .contains("does not allow external snapshot management"),
                "{e}"
            );
        }
        other => panic!("expected Refused, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_tables_and_bad_settings_are_refused_with_clear_errors() {
    let stack = tlake_tests::stack::Stack::get();
    let options = CompactorOptions::new(&stack.kafka_brokers, "unused-topic");
    let missing = tlake_tests::lake::unique_stream("missing");
    let run = maintain(&options, "", &["--table", &missing]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("logs.{missing} does not exist")),
        "{}",
        run.stderr
    );
    let run = maintain(&options, "", &["--table", "Not A Table"]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("--table"), "{}", run.stderr);
    let run = maintain(&options, "min_files = 1", &["--table", &missing]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr.contains("maintenance.min_files"),
        "{}",
        run.stderr
    );
    let run = maintain(&options, "grace = 1", &[]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("grace"), "{}", run.stderr);
}

/// Live entries of the current snapshot, read with iceberg-rust:
/// path → (adding snapshot, data seq, file seq, rows); and how many
/// manifests the manifest list holds.
async fn live_entries(
    table: &tlake_catalog_client::iceberg::table::Table,
) -> (usize, BTreeMap<String, (i64, i64, i64, u64)>) {
    let snapshot = table.metadata().current_snapshot().expect("snapshot");
    let list = table
        .manifest_list_reader(snapshot)
        .load()
        .await
        .expect("manifest list");
    let mut live = BTreeMap::new();
    for manifest in list.entries() {
        for e in manifest
            .load_manifest(table.file_io())
            .await
            .expect("manifest")
            .entries()
            .iter()
            .filter(|e| e.is_alive())
        {
            let previous = live.insert(
                e.file_path().to_owned(),
                (
                    e.snapshot_id().expect("snapshot id"),
                    e.sequence_number().expect("seq"),
                    e.file_sequence_number.expect("file seq"),
                    e.record_count(),
                ),
            );
            assert!(previous.is_none(), "{} listed twice", e.file_path());
        }
    }
    (list.entries().len(), live)
}

async fn recent_ids(table: &tlake_catalog_client::iceberg::table::Table) -> (usize, Vec<Vec<u8>>) {
    let recent = tlake_catalog_client::recent::recent_event_ids(table, 2, 1_000_000)
        .await
        .expect("recent ids");
    let mut ids: Vec<Vec<u8>> = (0..recent.ids.len())
        .map(|i| recent.ids.value(i).to_vec())
        .collect();
    ids.sort();
    (recent.appends, ids)
}

#[tokio::test(flavor = "multi_thread")]
async fn flush_manifests_are_merged_with_rows_progress_and_recent_ids_unchanged() {
    let (flow, options) = small_files("merge", 8, 200).await;
    let catalog = catalog().await;
    let table = catalog.load_table(&flow.stream).await.expect("load");
    let (manifests_before, entries_before) = live_entries(&table).await;
    assert!(manifests_before >= 8, "{manifests_before} manifests");
    let progress_before = catalog.progress(&flow.stream).await.expect("progress");
    let (appends_before, recent_before) = recent_ids(&table).await;
    assert_eq!(appends_before, 2);
    assert!(!recent_before.is_empty());

    // The rewrite is held off (min_files beyond the file count) so that the
    // merge alone changes the table.
    let settings = "min_files = 100000\nmax_manifests = 2\n";
    let dry = maintain(&options, settings, &["--table", &flow.stream, "--dry-run"]);
    assert_ok(&dry);
    assert!(
        dry.stdout.contains(&format!(
            "manifests {manifests_before} -> {manifests_before}, due, commits 0"
        )),
        "{}",
        dry.stdout
    );
    let run = maintain(&options, settings, &["--table", &flow.stream]);
    assert_ok(&run);
    eprintln!("{}", run.stdout);

    let table = catalog.load_table(&flow.stream).await.expect("load");
    let (manifests_after, entries_after) = live_entries(&table).await;
    eprintln!("manifests {manifests_before} -> {manifests_after}");
    assert!(manifests_after <= 2, "{manifests_after} manifests");
    assert!(
        run.stdout.contains(&format!(
            "manifests {manifests_before} -> {manifests_after}, due, commits 1"
        )),
        "{}",
        run.stdout
    );
    // The same live files, each with its adding snapshot, sequence numbers and rows.
    assert_eq!(entries_after, entries_before);
    let snapshot = table.metadata().current_snapshot().expect("snapshot");
    assert_eq!(
        snapshot.summary().operation,
        tlake_catalog_client::iceberg::spec::Operation::Replace
    );
    let summary = &snapshot.summary().additional_properties;
    assert_eq!(summary["tlake.maintenance"], "merge-manifests");
    assert_eq!(summary["added-records"], "0");
    assert_eq!(summary["deleted-records"], "0");

    assert_rows_and_progress_unchanged(&flow, &catalog, &progress_before).await;

    // The newest appends' ids are still found from the merged manifest.
    assert_eq!(recent_ids(&table).await, (2, recent_before));

    // Nothing more to merge.
    let again = maintain(&options, settings, &["--table", &flow.stream]);
    assert_ok(&again);
    assert!(
        again.stdout.contains(&format!(
            "manifests {manifests_after} -> {manifests_after}, not due, commits 0"
        )),
        "{}",
        again.stdout
    );
}
