//! `tlake_catalog_client::recent` against the real local stack (Nessie, S3 server):
//! the event ids the newest appends added, rebuilt from a table whose
//! snapshots were written with the compactor's own writer and committed
//! through `LakeCatalog::commit` (and `replace_files` for maintenance).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tlake_catalog_client::write::Part;

use arrow_array::{Array, ArrayRef, FixedSizeBinaryArray, RecordBatch, TimestampMicrosecondArray};
use tlake_catalog_client::iceberg::spec::DataFile;
use tlake_catalog_client::recent::{RecentIds, recent_event_ids};
use tlake_catalog_client::{CommitOutcome, CommitRequest, LakeCatalog, TableKind};
use tlake_maintenance::{Maintainer, ReplaceOutcome};
use tlake_tests::lake::{catalog, scan_event_ids, settings, unique_stream};

const DAY_US: i64 = 86_400_000_000;

/// `n` fresh events of one day (0 or 1).
fn rows(n: usize, day: i64) -> (Vec<[u8; 16]>, RecordBatch) {
    let ids: Vec<[u8; 16]> = (0..n).map(|_| *uuid::Uuid::now_v7().as_bytes()).collect();
    let base = 1_780_000_000_000_000i64 + day * DAY_US; // 2026-05-28, µs
    let times: Vec<i64> = (0..n as i64).map(|i| base + i).collect();
    let event_id = FixedSizeBinaryArray::try_from_iter(ids.iter()).expect("ids");
    let event_time = TimestampMicrosecondArray::from(times).with_timezone("+00:00");
    let batch = RecordBatch::try_from_iter([
        ("event_id", Arc::new(event_id) as ArrayRef),
        ("event_time", Arc::new(event_time) as ArrayRef),
    ])
    .expect("batch");
    (ids, batch)
}

/// Data files written by the compactor's writer (nothing committed).
async fn write(catalog: &LakeCatalog, table: &str, batches: &[RecordBatch]) -> Vec<DataFile> {
    let loaded = catalog.load_table(table).await.expect("load");
    let flush_id = uuid::Uuid::now_v7().to_string();
    let parts = batches.iter().map(|rows| {
        Ok(Part {
            day: None,
            rows: rows.clone(),
        })
    });
    tlake_catalog_client::write::write_files(&loaded, parts, &flush_id, 128 << 20)
        .await
        .expect("write data files")
        .files
}

/// One flush's commit with offsets of a pretend topic; returns the snapshot id.
async fn commit(catalog: &LakeCatalog, table: &str, files: Vec<DataFile>, turn: i64) -> i64 {
    let request = CommitRequest {
        table: table.to_owned(),
        expected: BTreeMap::from([(
            "t".to_owned(),
            BTreeMap::from([(0, (turn > 0).then_some(turn * 10))]),
        )]),
        next: BTreeMap::from([("t".to_owned(), BTreeMap::from([(0, (turn + 1) * 10)]))]),
        files,
        commit_id: uuid::Uuid::now_v7(),
        writer_epoch: 1,
        max_event_time_us: None,
    };
    match tlake_tests::lake::commit_known(catalog, &request)
        .await
        .expect("commit")
    {
        CommitOutcome::Committed(id) => id,
        other => panic!("commit did not land: {other:?}"),
    }
}

/// One append of the test: a file per day, its ids by day.
#[derive(Debug)]
struct Append {
    ids: [Vec<[u8; 16]>; 2],
    batches: [RecordBatch; 2],
    files: [DataFile; 2],
}

impl Append {
    fn all(&self) -> Vec<[u8; 16]> {
        self.ids.concat()
    }
}

async fn append(catalog: &LakeCatalog, table: &str, n: usize, turn: i64) -> Append {
    let (ids0, b0) = rows(n / 2, 0);
    let (ids1, b1) = rows(n - n / 2, 1);
    let f0 = write(catalog, table, std::slice::from_ref(&b0)).await;
    let f1 = write(catalog, table, std::slice::from_ref(&b1)).await;
    assert_eq!((f0.len(), f1.len()), (1, 1), "one file per day");
    commit(catalog, table, vec![f0[0].clone(), f1[0].clone()], turn).await;
    Append {
        ids: [ids0, ids1],
        batches: [b0, b1],
        files: [f0[0].clone(), f1[0].clone()],
    }
}

async fn recent(catalog: &LakeCatalog, table: &str, appends: usize, max_ids: usize) -> RecentIds {
    let table = catalog.load_table(table).await.expect("load");
    recent_event_ids(&table, appends, max_ids)
        .await
        .expect("recent event ids")
}

fn as_vec(r: &RecentIds) -> Vec<[u8; 16]> {
    r.ids
        .iter()
        .map(|id| <[u8; 16]>::try_from(id.expect("no null ids")).expect("16 bytes"))
        .collect()
}

fn set(ids: &[[u8; 16]]) -> HashSet<[u8; 16]> {
    ids.iter().copied().collect()
}

/// `got` holds exactly the ids of `newest` (newest first), each once; with
/// `runs`, each append's ids in one run, in order.
fn assert_window(got: &RecentIds, newest: &[&Append], runs: bool, what: &str) {
    let ids = as_vec(got);
    let expected: Vec<[u8; 16]> = newest.iter().flat_map(|a| a.all()).collect();
    assert_eq!(
        ids.len(),
        expected.len(),
        "{what}: no id twice, none missing"
    );
    assert!(
        set(&ids) == set(&expected),
        "{what}: other ids than expected"
    );
    assert_eq!(got.appends, newest.len(), "{what}");
    assert!(!got.capped, "{what}");
    let mut at = 0;
    for (i, a) in newest.iter().enumerate().filter(|_| runs) {
        let run = &ids[at..at + a.all().len()];
        assert!(set(run) == set(&a.all()), "{what}: run of append {i}");
        at += a.all().len();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn recent_ids_are_those_the_newest_appends_added() {
    let catalog = catalog().await;
    let table = unique_stream("recent");
    catalog
        .ensure_table(&table, TableKind::Logs)
        .await
        .expect("create");

    // No snapshot yet.
    let empty = recent(&catalog, &table, 5, 1_000_000).await;
    assert_eq!((empty.ids.len(), empty.appends), (0, 0));
    assert_eq!(empty.ids.data_type().to_string(), "FixedSizeBinary(16)");

    // An offsets-only commit adds no data file: nothing to return.
    let mut turn = 0;
    commit(&catalog, &table, Vec::new(), turn).await;
    turn += 1;
    assert_eq!(recent(&catalog, &table, 5, 1_000_000).await.ids.len(), 0);

    // Six appends (two files each, one per day), oldest first.
    let mut appends = Vec::new();
    for n in [15_000, 25_000, 20_000, 10_000, 30_000, 20_000] {
        appends.push(append(&catalog, &table, n, turn).await);
        turn += 1;
    }
    // Another offsets-only commit on top: it must not hide the appends below.
    commit(&catalog, &table, Vec::new(), turn).await;
    turn += 1;
    let newest: Vec<&Append> = appends.iter().rev().collect();

    for n in [1, 3, 6, 10] {
        let got = recent(&catalog, &table, n, 1_000_000).await;
        assert_window(
            &got,
            &newest[..n.min(newest.len())],
            true,
            &format!("newest {n}"),
        );
    }
    // All six together are the whole table.
    let all = as_vec(&recent(&catalog, &table, 100, 1_000_000).await);
    assert!(set(&all) == set(&scan_event_ids(&catalog, &table).await));

    // The cap: newest appends win, the one reaching the cap is cut.
    let newest_two: Vec<[u8; 16]> = newest[..2].iter().flat_map(|a| a.all()).collect();
    let cap = newest_two.len() + 100;
    let got = recent(&catalog, &table, 6, cap).await;
    let ids = as_vec(&got);
    assert_eq!(ids.len(), cap);
    assert!(got.capped);
    assert_eq!(got.appends, 3);
    assert!(set(&ids[..newest_two.len()]) == set(&newest_two));
    assert!(set(&ids[newest_two.len()..]).is_subset(&set(&newest[2].all())));
    // A cap exactly at an append's end reads no further.
    let got = recent(&catalog, &table, 2, newest_two.len()).await;
    assert_eq!((got.ids.len(), got.capped), (newest_two.len(), false));
    assert_eq!(recent(&catalog, &table, 0, 10).await.ids.len(), 0);
    assert_eq!(recent(&catalog, &table, 5, 0).await.ids.len(), 0);

    // Cost: 100K ids from the newest appends (5 appends, 10 files).
    let loaded = catalog.load_table(&table).await.expect("load");
    let started = Instant::now();
    let got = recent_event_ids(&loaded, 100, 100_000)
        .await
        .expect("recent event ids");
    let took = started.elapsed();
    assert_eq!(got.ids.len(), 100_000);
    eprintln!(
        "read {} ids of {} appends in {took:?}",
        got.ids.len(),
        got.appends
    );
    assert_eq!(got.ids.value_length(), 16);

    // Maintenance rewrites both files of the newest append and the day-0
    // file of the one before into one file per day; then one more append.
    // The replace does not count, but the rows it moved are still found:
    // the rewritten ones through its output (where two appends share a file,
    // so ids no longer come in one run per append), the kept day-1 file of
    // the older append through the manifest the replace rewrote.
    let (a5, a6) = (&appends[4], &appends[5]);
    let remove = [
        a6.files[0].clone(),
        a6.files[1].clone(),
        a5.files[0].clone(),
    ];
    let day0 = [a6.batches[0].clone(), a5.batches[0].clone()];
    let mut add = write(&catalog, &table, &day0).await;
    add.extend(write(&catalog, &table, std::slice::from_ref(&a6.batches[1])).await);
    let planned = catalog.load_table(&table).await.expect("load");
    match Maintainer::new(catalog.clone())
        .replace_files(&planned, &remove, &add)
        .await
        .expect("replace")
    {
        ReplaceOutcome::Committed { .. } => {}
        other => panic!("replace did not land: {other:?}"),
    }
    let a7 = append(&catalog, &table, 5_000, turn).await;
    let got = recent(&catalog, &table, 3, 1_000_000).await;
    assert_window(&got, &[&a7, a6, a5], false, "after a replace");
    let got = recent(&catalog, &table, 4, 1_000_000).await;
    let ids = as_vec(&got);
    let expected: Vec<[u8; 16]> = [&a7, a6, a5, &appends[3]]
        .iter()
        .flat_map(|a| a.all())
        .collect();
    assert_eq!(ids.len(), expected.len());
    assert!(set(&ids) == set(&expected), "after a replace, 4 appends");
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_storage_is_a_retryable_error() {
    let good = catalog().await;
    let table = unique_stream("recent_down");
    good.ensure_table(&table, TableKind::Logs)
        .await
        .expect("create");
    append(&good, &table, 10, 0).await;

    // Same catalog, but object storage where nothing listens.
    let mut unreachable = settings();
    unreachable.s3.endpoint = "http://127.0.0.1:9".into();
    let catalog = LakeCatalog::connect(&unreachable).await.expect("connect");
    let loaded = catalog.load_table(&table).await.expect("load");
    let err = tokio::time::timeout(Duration::from_secs(120), recent_event_ids(&loaded, 5, 100))
        .await
        .expect("gives up within 2 minutes")
        .expect_err("storage is unreachable");
    assert!(err.retryable(), "{err}");
    assert!(err.to_string().contains("manifest list"), "{err}");
}
