//! `tlake sql --fresh` against the real gateway, Kafka, compactor, Nessie and
//! S3: the fresh view counts every acknowledged event exactly once — while
//! events keep arriving and the compactor commits under the queries, while
//! the compactor is killed, and after it caught up — with copies (an SDK's
//! re-send) dropped whether the first copy is committed or still in the tail.
//! An unreachable Kafka is a one-line error.

use std::collections::HashSet;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use tlake_cli::lake::{LakeArgs, S3Keys};
use tlake_cli::sql::{FreshOptions, Session};
use tlake_tests::compactor::{Compactor, CompactorOptions};
use tlake_tests::flow::Flow;
use tlake_tests::lake::{catalog, env, tlake_command, wait_for_rows};

const WAIT: Duration = Duration::from_secs(90);

fn lake() -> LakeArgs {
    LakeArgs {
        catalog_uri: env("TLAKE_CATALOG_URI"),
        warehouse: env("TLAKE_WAREHOUSE"),
        namespace: "logs".into(),
        s3_endpoint: env("TLAKE_S3_ENDPOINT"),
        s3_region: env("TLAKE_S3_REGION"),
    }
}

fn keys() -> S3Keys {
    S3Keys {
        access_key_id: env("TLAKE_S3_ACCESS_KEY"),
        secret_access_key: env("TLAKE_S3_SECRET_KEY"),
    }
}

/// A fresh session, opened on the calling (blocking) thread.
fn fresh_session(runtime: &tokio::runtime::Handle, brokers: &str) -> Session {
    let lake = lake();
    let keys = keys();
    let catalog = runtime.block_on(lake.connect(&keys)).expect("catalog up");
    Session::attach(
        &tlake_cli::sql::session::default_extension_dir(),
        &lake,
        &keys,
    )
    .expect("attached: run deploy/local/libduckdb if the extensions are missing")
    .with_fresh(
        &lake,
        catalog,
        runtime.clone(),
        &FreshOptions {
            kafka_brokers: brokers.to_owned(),
            timeout: Duration::from_secs(30),
        },
    )
    .expect("fresh views")
}

/// (rows, distinct ids) of `table` in `session`.
fn counts(session: &Session, table: &str) -> (usize, usize) {
    let batches = session
        .query(&format!(
            "SELECT count(*), count(DISTINCT event_id) FROM {table}"
        ))
        .unwrap_or_else(|e| panic!("query {table}: {e:#}"));
    let value = |i: usize| batches[0].column(i).as_primitive::<Int64Type>().value(0) as usize;
    (value(0), value(1))
}

fn ids(session: &Session, table: &str) -> Vec<[u8; 16]> {
    let batches = session
        .query(&format!("SELECT event_id FROM {table}"))
        .expect("ids");
    batches
        .iter()
        .flat_map(|b| {
            let column = b.column(0).as_binary::<i32>().clone();
            (0..column.len())
                .map(move |i| column.value(i).try_into().expect("16 bytes"))
                .collect::<Vec<[u8; 16]>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn fresh_counts_every_acknowledged_event_once_under_load_and_across_a_compactor_kill() {
    let mut flow = Flow::new("fresh", 3).await;
    let mut options = CompactorOptions::new(&flow.stack.kafka_brokers, &flow.topic);
    // Commits every ~0.3 s: many land while queries run.
    options.max_latency_ms = 300;
    let mut compactor = Compactor::start(&options);
    // Something committed first: a fresh view covers tables with a snapshot.
    flow.send(200, 100).await;
    let catalog = catalog().await;
    assert_eq!(
        wait_for_rows(&catalog, &flow.stream, 200, WAIT).await.len(),
        200
    );

    // Started: events whose request was sent; acked: whose OK came back.
    let started = Arc::new(AtomicUsize::new(200));
    let acked = Arc::new(AtomicUsize::new(200));
    let stop = Arc::new(AtomicBool::new(false));
    let table = format!("\"{}\"", flow.stream);
    let runtime = tokio::runtime::Handle::current();
    let brokers = flow.stack.kafka_brokers.clone();
    let querier = {
        let (started, acked, stop, table) =
            (started.clone(), acked.clone(), stop.clone(), table.clone());
        std::thread::spawn(move || {
            let session = fresh_session(&runtime, &brokers);
            let mut queries = 0;
            let mut slowest = Duration::ZERO;
            while !stop.load(Ordering::SeqCst) {
                let before = acked.load(Ordering::SeqCst);
                let begun = Instant::now();
                let (rows, distinct) = counts(&session, &table);
                slowest = slowest.max(begun.elapsed());
                let after = started.load(Ordering::SeqCst);
                assert_eq!(rows, distinct, "query {queries}: a row counted twice");
                assert!(
                    rows >= before,
                    "query {queries}: {rows} rows, but {before} events were acknowledged before it began"
                );
                assert!(
                    rows <= after,
                    "query {queries}: {rows} rows, only {after} events sent"
                );
                queries += 1;
            }
            (session, queries, slowest)
        })
    };

    let mut send = async |batches: usize| {
        for _ in 0..batches {
            started.fetch_add(100, Ordering::SeqCst);
            flow.send(100, 100).await;
            acked.fetch_add(100, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    send(30).await;
    compactor.kill();
    send(20).await;
    let compactor = Compactor::start(&options);
    send(30).await;
    stop.store(true, Ordering::SeqCst);
    let (session, queries, slowest) = tokio::task::spawn_blocking(move || querier.join())
        .await
        .expect("joined")
        .expect("the querier's checks held");
    let total = 200 + 80 * 100;
    assert!(queries >= 5, "only {queries} queries ran during the load");

    // Everything, once, by id; then again once the compactor caught up (the tail emptied into
    // the table: still once).
    let acked_ids: HashSet<[u8; 16]> = flow.ledger.ids().into_iter().collect();
    assert_eq!(acked_ids.len(), total);
    let session = Arc::new(std::sync::Mutex::new(session));
    let check = |session: Arc<std::sync::Mutex<Session>>, table: String| {
        tokio::task::spawn_blocking(move || {
            let session = session.lock().expect("session");
            (counts(&session, &table), ids(&session, &table))
        })
    };
    let ((rows, distinct), seen) = check(session.clone(), table.clone()).await.expect("query");
    assert_eq!((rows, distinct), (total, total));
    assert_eq!(seen.into_iter().collect::<HashSet<_>>(), acked_ids);
    assert_eq!(
        wait_for_rows(&catalog, &flow.stream, total, WAIT)
            .await
            .len(),
        total
    );
    let ((rows, distinct), _) = check(session.clone(), table.clone()).await.expect("query");
    assert_eq!((rows, distinct), (total, total), "after the catch-up");
    drop(compactor);
    eprintln!(
        "fresh: {queries} queries during load (slowest {slowest:?}), {total} acknowledged = rows = distinct ids"
    );
}

/// `tlake ARGS` against the local stack.
fn tlake(args: &[&str]) -> Output {
    tlake_command().args(args).output().expect("run tlake")
}

fn csv(output: Output) -> String {
    assert!(
        output.status.success(),
        "tlake failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_fresh_view_adds_the_uncommitted_tail_once_and_names_an_unreachable_kafka() {
    let mut flow = Flow::new("freshcli", 2).await;
    let options = CompactorOptions::new(&flow.stack.kafka_brokers, &flow.topic);
    let mut compactor = Compactor::start(&options);
    let committed = flow.send(1000, 250).await;
    let catalog = catalog().await;
    assert_eq!(
        wait_for_rows(&catalog, &flow.stream, 1000, WAIT)
            .await
            .len(),
        1000
    );
    compactor.kill();

    // 500 more, acknowledged but not committed; then re-sends (an SDK retry after a lost OK)
    // of 100 committed and 100 uncommitted events.
    let tail = flow.send(500, 250).await;
    flow.send_events(&committed[..100]).await;
    flow.send_events(&tail[..100]).await;

    let count = format!(
        "SELECT count(*) AS events, count(DISTINCT event_id) AS ids FROM \"{}\"",
        flow.stream
    );
    let committed_only = format!(
        "SELECT count(*) AS events FROM telemetrylake.logs.\"{}\"",
        flow.stream
    );
    let named = format!("SELECT count(*) AS events FROM fresh.\"{}\"", flow.stream);
    assert_eq!(
        csv(tlake(&["sql", "--fresh", "--format", "csv", &count])),
        "events,ids\n1500,1500\n"
    );
    assert_eq!(
        csv(tlake(&["sql", "--format", "csv", &count])),
        "events,ids\n1000,1000\n",
        "without --fresh: the committed rows"
    );
    assert_eq!(
        csv(tlake(&[
            "sql",
            "--fresh",
            "--format",
            "csv",
            &committed_only
        ])),
        "events\n1000\n",
        "the full name is the committed table"
    );
    assert_eq!(
        csv(tlake(&["sql", "--fresh", "--format", "csv", &named])),
        "events\n1500\n"
    );

    // Kafka unreachable: one line naming it and how to check, exit 1, no panic.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let output = tlake(&[
        "sql",
        "--fresh",
        "--fresh-timeout",
        "3",
        "--kafka-brokers",
        &format!("127.0.0.1:{closed}"),
        &count,
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("Kafka tail") && stderr.contains(&format!("127.0.0.1:{closed}")),
        "{stderr}"
    );
}
