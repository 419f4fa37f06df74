//! The compactor against the real local stack (Kafka, S3 server, Nessie):
//! what the gateway acknowledges lands in the stream's Iceberg table exactly
//! once — read back with iceberg-rust and with DuckDB — across crashes,
//! rebalances, duplicates and poison records.

use std::time::Duration;

use tlake_catalog_client::LakeCatalog;

use tlake_tests::assert_no_loss_no_dup;
use tlake_tests::compactor::{Compactor, CompactorOptions, http_get};
use tlake_tests::flow::{Flow, OffsetWatch};
use tlake_tests::kafka::read_all;
use tlake_tests::lake::{catalog, dead_letters, duckdb_csv, scan_event_ids, wait_for_rows};

const WAIT: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread")]
async fn events_land_exactly_once_and_duckdb_reads_them() {
    let mut flow = Flow::new("exact", 3).await;
    let compactor = Compactor::start(&CompactorOptions::new(
        &flow.stack.kafka_brokers,
        &flow.topic,
    ));
    assert!(http_get(compactor.metrics, "/healthz").contains("200 OK"));
    flow.send(6000, 1000).await;
    flow.send(1, 1).await;
    let n = flow.ledger.len();
    let catalog = catalog().await;
    let ids = wait_for_rows(&catalog, &flow.stream, n, WAIT).await;
    assert_no_loss_no_dup(&flow.ledger.ids(), &ids, true);

    // The seed's DuckDB (1.5.5 + iceberg/httpfs/avro) sees the same rows.
    let rows = duckdb_csv(&format!(
        "SELECT count(*), count(DISTINCT event_id), count(DISTINCT service), min(octet_length(event_id)) \
         FROM telemetrylake.logs.\"{}\"",
        flow.stream
    ));
    assert_eq!(
        rows,
        vec![vec![
            n.to_string(),
            n.to_string(),
            "3".to_owned(),
            "16".to_owned()
        ]]
    );

    // Progress: offsets of every partition, and a recent event time.
    let progress = catalog.progress(&flow.stream).await.expect("progress");
    let mut ends = std::collections::BTreeMap::new();
    for r in read_all(&flow.stack.kafka_brokers, &flow.topic) {
        let end = ends.entry(r.partition).or_insert(0);
        *end = (r.offset + 1).max(*end);
    }
    assert_eq!(
        progress.offsets[&flow.topic], ends,
        "stored offsets = end of every partition with data"
    );
    assert!(progress.newest_event_time_us.is_some());

    // The lag comes from librdkafka's statistics (every second) and is
    // recorded every 5 s: it may take that long to appear.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = compactor.metrics_text();
        let missing: Vec<&str> = [
            "tlake_compactor_flush_rows",
            "tlake_compactor_freshness_seconds",
            "tlake_compactor_consumer_lag",
            "tlake_compactor_commits",
        ]
        .into_iter()
        .filter(|name| !metrics.contains(name))
        .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{missing:?} missing:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_flushes_and_commits_what_is_buffered() {
    let mut flow = Flow::new("sigterm", 2).await;
    let mut options = CompactorOptions::new(&flow.stack.kafka_brokers, &flow.topic);
    options.max_latency_ms = 600_000; // only the shutdown flushes
    let mut compactor = Compactor::start(&options);
    flow.send(500, 250).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    compactor.sigterm();
    let status = compactor
        .wait(Duration::from_secs(60))
        .expect("exits after SIGTERM");
    assert!(status.success(), "{status:?}\n{}", compactor.log());
    let ids = scan_event_ids(&catalog().await, &flow.stream).await;
    assert_no_loss_no_dup(&flow.ledger.ids(), &ids, true);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backlog_is_written_without_waiting_for_the_latency_cap() {
    let mut flow = Flow::new("backlog", 2).await;
    flow.send(3000, 500).await;
    // Consumed over a second after Kafka stamped them: a backlog.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut options = CompactorOptions::new(&flow.stack.kafka_brokers, &flow.topic);
    options.max_latency_ms = 600_000;
    let compactor = Compactor::start(&options);
    let catalog = catalog().await;
    // 30 s: far below the 10-minute cap.
    let ids = wait_for_rows(&catalog, &flow.stream, flow.ledger.len(), WAIT / 3).await;
    assert_eq!(
        ids.len(),
        flow.ledger.len(),
        "the backlog waits for the cap:\n{}",
        compactor.log()
    );
    assert_no_loss_no_dup(&flow.ledger.ids(), &ids, true);
    // New events arrive on time again: they wait for the cap (10 min).
    flow.send(10, 10).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = scan_event_ids(&catalog, &flow.stream).await;
    assert_eq!(after.len(), ids.len(), "fresh events are not flushed early");
}

/// After re-sent events: 10 new ones land, the table then holds `rows`
/// rows (== distinct == acknowledged) and keeps holding them.
async fn ten_new_events_and_still_no_duplicate(
    flow: &mut Flow,
    catalog: &LakeCatalog,
    rows: usize,
) {
    flow.send(10, 10).await;
    let ids = wait_for_rows(catalog, &flow.stream, rows, WAIT).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ids_after = scan_event_ids(catalog, &flow.stream).await;
    assert_eq!(ids.len(), ids_after.len());
    assert_no_loss_no_dup(&flow.ledger.ids(), &ids_after, true);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_event_id_twice_is_one_row() {
    let mut flow = Flow::new("dup", 2).await;
    let _compactor = Compactor::start(&CompactorOptions::new(
        &flow.stack.kafka_brokers,
        &flow.topic,
    ));
    let events = flow.send(300, 300).await;
    // Resent at once (same flush) and again after it was committed (recent window).
    flow.send_events(&events[..100]).await;
    let catalog = catalog().await;
    let ids = wait_for_rows(&catalog, &flow.stream, 300, WAIT).await;
    assert_no_loss_no_dup(&flow.ledger.ids(), &ids, true);
    flow.send_events(&events[100..200]).await;
    ten_new_events_and_still_no_duplicate(&mut flow, &catalog, 310).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_committed_event_resent_after_a_restart_is_still_one_row() {
    let mut flow = Flow::new("duprestart", 2).await;
    let options = CompactorOptions::new(&flow.stack.kafka_brokers, &flow.topic);
    let first = Compactor::start(&options);
    let events = flow.send(300, 100).await;
    let catalog = catalog().await;
    let ids = wait_for_rows(&catalog, &flow.stream, 300, WAIT).await;
    assert_no_loss_no_dup(&flow.ledger.ids(), &ids, true);
    drop(first); // SIGKILL: the new process starts with nothing in memory
    let _second = Compactor::start(&options);
    // An app re-sends committed events (say, after a gateway timeout).
    flow.send_events(&events[..150]).await;
    ten_new_events_and_still_no_duplicate(&mut flow, &catalog, 310).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_poison_record_becomes_one_dead_letter_and_the_rest_flows() {
    let mut flow = Flow::new("poison", 1).await;
    let _compactor = Compactor::start(&CompactorOptions::new(
        &flow.stack.kafka_brokers,
        &flow.topic,
    ));
    flow.send(200, 100).await;
    let garbage = b"\x0a\xff\xff\xff\xff not a LogBatch".to_vec();
    let offset = flow.produce_raw(0, &garbage).await;
    flow.send(200, 100).await;
    let catalog = catalog().await;
    let ids = wait_for_rows(&catalog, &flow.stream, 400, WAIT).await;
    assert_no_loss_no_dup(&flow.ledger.ids(), &ids, true);
    let deadline = std::time::Instant::now() + WAIT;
    let dead = loop {
        let dead = dead_letters(&catalog, &flow.topic).await;
        if !dead.is_empty() || std::time::Instant::now() > deadline {
            break dead;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!((dead[0].0, dead[0].1), (0, offset));
    assert_eq!(dead[0].3, garbage);
    assert!(dead[0].2.contains("LogBatch"), "{}", dead[0].2);
}

async fn crash_at(failpoint: &str) {
    let mut flow = Flow::new(&failpoint.replace('-', "_"), 2).await;
    let mut options = CompactorOptions::new(&flow.stack.kafka_brokers, &flow.topic);
    // Flushes of 400+ rows are split across writer threads (a file set
    // each, committed together): the crash lands between or after them.
    options.extra_toml = "writers = 3\nmin_rows_per_writer = 200\n".into();
    let mut crashing = Compactor::start(
        &options
            .clone()
            .with_env("TLAKE_COMPACTOR_FAILPOINT", failpoint),
    );
    flow.send(2000, 500).await;
    let status = crashing
        .wait(WAIT)
        .expect("the failpoint aborts the compactor");
    assert!(!status.success(), "{status:?}");
    assert!(
        crashing.log().contains(&format!("failpoint {failpoint}")),
        "{}",
        crashing.log()
    );
    assert!(
        crashing.log().contains("writing in parallel"),
        "the crashed flush was written by several threads: {}",
        crashing.log()
    );
    let catalog = catalog().await;
    let before = scan_event_ids(&catalog, &flow.stream).await;
    if failpoint == "after-commit" {
        assert!(
            !before.is_empty(),
            "the commit before the crash must be visible"
        );
    } else {
        assert!(
            before.is_empty(),
            "nothing may be visible before the first commit"
        );
    }
    flow.send(500, 500).await;
    let _restarted = Compactor::start(&options);
    let ids = wait_for_rows(&catalog, &flow.stream, flow.ledger.len(), WAIT).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ids_after = scan_event_ids(&catalog, &flow.stream).await;
    assert_eq!(ids.len(), ids_after.len());
    assert_no_loss_no_dup(&flow.ledger.ids(), &ids_after, true);
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_after_upload_before_commit_loses_and_duplicates_nothing() {
    crash_at("after-upload").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_right_after_commit_loses_and_duplicates_nothing() {
    crash_at("after-commit").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_compactors_with_rebalances_write_no_duplicate() {
    let mut flow = Flow::new("rebalance", 4).await;
    let catalog = catalog().await;
    let options = CompactorOptions::new(&flow.stack.kafka_brokers, &flow.topic);
    let mut first = Compactor::start(&options);
    flow.send(2000, 250).await;
    let watch = OffsetWatch::start(catalog.clone(), flow.stream.clone());
    wait_for_rows(&catalog, &flow.stream, 1, WAIT).await;
    // A second member joins: partitions move while both hold buffers.
    let _second = Compactor::start(&options);
    flow.send(2000, 250).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    flow.send(1000, 250).await;
    // The first dies without a goodbye: its partitions move after the session timeout.
    first.kill();
    flow.send(1000, 250).await;
    let ids = wait_for_rows(&catalog, &flow.stream, flow.ledger.len(), WAIT).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ids_after = scan_event_ids(&catalog, &flow.stream).await;
    assert_eq!(ids.len(), ids_after.len());
    assert_no_loss_no_dup(&flow.ledger.ids(), &ids_after, true);
    let (samples, decreases) = watch.finish().await;
    assert!(samples > 10, "{samples} samples");
    assert!(
        decreases.is_empty(),
        "stored offsets went backwards: {decreases:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn catalog_commits_fence_merge_and_reconcile() {
    use std::collections::BTreeMap;
    use tlake_catalog_client::{CommitOutcome, CommitRequest, TableKind};

    let catalog = catalog().await;
    let table = tlake_tests::lake::unique_stream("commit");
    catalog
        .ensure_table(&table, TableKind::Logs)
        .await
        .expect("create");
    // Ours again: the check passes, nothing to evolve.
    catalog
        .ensure_table(&table, TableKind::Logs)
        .await
        .expect("check");
    let request = |partition: i32, expected: Option<i64>, next: i64| CommitRequest {
        table: table.clone(),
        expected: BTreeMap::from([("t".to_owned(), BTreeMap::from([(partition, expected)]))]),
        next: BTreeMap::from([("t".to_owned(), BTreeMap::from([(partition, next)]))]),
        files: Vec::new(),
        commit_id: uuid::Uuid::now_v7(),
        writer_epoch: 1,
        max_event_time_us: Some(next),
    };
    let first = request(0, None, 10);
    let CommitOutcome::Committed(snapshot) = tlake_tests::lake::commit_known(&catalog, &first)
        .await
        .expect("commit")
    else {
        panic!("first commit must land");
    };
    // The same request again (an unknown outcome retried): found, not re-applied.
    assert_eq!(
        tlake_tests::lake::commit_known(&catalog, &first)
            .await
            .expect("retry"),
        CommitOutcome::Committed(snapshot)
    );
    // A writer that still believes partition 0 is unclaimed is fenced.
    match tlake_tests::lake::commit_known(&catalog, &request(0, None, 20))
        .await
        .expect("commit")
    {
        CommitOutcome::Fenced(f) => {
            assert_eq!((f.partition, f.stored, f.expected), (0, Some(10), None))
        }
        other => panic!("expected Fenced, got {other:?}"),
    }
    // Concurrent writers of distinct partitions: 409s are retried by
    // reloading and re-merging, so the full map keeps every partition.
    let commits = (1..=6).map(|p| {
        let catalog = catalog.clone();
        let r = request(p, None, 100 + i64::from(p));
        tokio::spawn(async move { tlake_tests::lake::commit_known(&catalog, &r).await })
    });
    for c in futures::future::join_all(commits).await {
        assert!(matches!(
            c.expect("task").expect("commit"),
            CommitOutcome::Committed(_)
        ));
    }
    let progress = catalog.progress(&table).await.expect("progress");
    let expected: BTreeMap<i32, i64> = std::iter::once((0, 10))
        .chain((1..=6).map(|p| (p, 100 + i64::from(p))))
        .collect();
    assert_eq!(progress.offsets["t"], expected);
    assert_eq!(progress.newest_event_time_us, Some(106));
}

#[test]
fn bad_configuration_is_refused_with_the_key_named() {
    let dir = std::env::temp_dir().join(format!("tlake-cfg-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let run = |toml: &str, with_keys: bool| {
        let path = dir.join("c.toml");
        std::fs::write(&path, toml).expect("write");
        let mut cmd = std::process::Command::new(tlake_tests::gateway::binary("tlake-compactor"));
        cmd.arg("--config")
            .arg(&path)
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY");
        if with_keys {
            cmd.envs(tlake_tests::lake::compactor_env());
        }
        let out = cmd.output().expect("run tlake-compactor");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run("[flush]\nmax_latency_ms = 0\n", true);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("flush.max_latency_ms"), "{err}");
    let (code, err) = run("[kafka]\ntopic = \"typo\"\n", true);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("topic"), "{err}");
    let (code, err) = run("", false);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("AWS_ACCESS_KEY_ID"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn existing_tables_are_evolved_additively_or_refused() {
    use tlake_catalog_client::iceberg::TableCreation;
    use tlake_catalog_client::iceberg::spec::{
        Schema, Transform, UnboundPartitionField, UnboundPartitionSpec,
    };
    use tlake_catalog_client::schema::logs_fields;
    use tlake_catalog_client::{Error, TableKind};

    let catalog = catalog().await;
    let create = |name: &str, drop_columns: &[&str], transform: Transform| {
        let fields: Vec<_> = logs_fields()
            .into_iter()
            .filter(|f| !drop_columns.contains(&f.name.as_str()))
            .collect();
        TableCreation::builder()
            .name(name.to_owned())
            .schema(
                Schema::builder()
                    .with_fields(fields)
                    .build()
                    .expect("schema"),
            )
            .partition_spec(
                UnboundPartitionSpec::builder()
                    .with_spec_id(0)
                    .add_partition_fields([UnboundPartitionField {
                        source_id: 2,
                        field_id: Some(1000),
                        name: "p".into(),
                        transform,
                    }])
                    .expect("spec")
                    .build(),
            )
            .build()
    };
    // An older layout without two optional columns: they are added.
    let old = tlake_tests::lake::unique_stream("evolve");
    catalog
        .iceberg()
        .create_table(
            catalog.namespace(),
            create(&old, &["kafka_offset", "attributes"], Transform::Day),
        )
        .await
        .expect("create old layout");
    let table = catalog
        .ensure_table(&old, TableKind::Logs)
        .await
        .expect("evolved");
    let schema = table.metadata().current_schema();
    assert!(
        schema.field_by_name("kafka_offset").is_some()
            && schema.field_by_name("attributes").is_some()
    );
    // A layout we cannot write (monthly partitions; day and hour are ours) is
    // refused, clearly.
    let wrong = tlake_tests::lake::unique_stream("refuse");
    catalog
        .iceberg()
        .create_table(catalog.namespace(), create(&wrong, &[], Transform::Month))
        .await
        .expect("create wrong layout");
    match catalog.ensure_table(&wrong, TableKind::Logs).await {
        Err(e @ Error::Incompatible { .. }) => {
            assert!(!e.retryable());
            assert!(
                e.to_string()
                    .contains("day(event_time) or hour(event_time)"),
                "{e}"
            );
        }
        other => panic!("expected Incompatible, got {other:?}"),
    }
}
