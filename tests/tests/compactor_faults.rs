//! The compactor while parts of the stack are down. Stops shared stack
//! components, so it runs as its own test binary (one test at a time).

use std::time::Duration;

use tlake_tests::assert_no_loss_no_dup;
use tlake_tests::compactor::{Compactor, CompactorOptions};
use tlake_tests::flow::Flow;
use tlake_tests::lake::{
    catalog, nessie_main_hash, nessie_reset_main, scan_event_ids, wait_for_rows,
};
use tlake_tests::stack::stack_ctl;

/// The two outages must not overlap (tests in one binary run in parallel).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A fresh stream on a 2-partition topic with a compactor reading it.
async fn flow_with_compactor(name: &str) -> (Flow, Compactor) {
    let flow = Flow::new(name, 2).await;
    let compactor = Compactor::start(&CompactorOptions::new(
        &flow.stack.kafka_brokers,
        &flow.topic,
    ));
    (flow, compactor)
}

async fn outage(component: &str) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let (mut flow, _compactor) = flow_with_compactor(&format!("{component}_down")).await;
    let catalog = catalog().await;
    flow.send(1000, 250).await;
    wait_for_rows(&catalog, &flow.stream, 1000, Duration::from_secs(60)).await;
    stack_ctl(&["stop", component]);
    // Kafka still takes events; the compactor cannot write or commit them.
    flow.send(1000, 250).await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    stack_ctl(&["start", component]);
    flow.send(500, 250).await;
    let ids = wait_for_rows(
        &catalog,
        &flow.stream,
        flow.ledger.len(),
        Duration::from_secs(120),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ids_after = scan_event_ids(&catalog, &flow.stream).await;
    assert_eq!(ids.len(), ids_after.len());
    assert_no_loss_no_dup(&flow.ledger.ids(), &ids_after, true);
}

#[tokio::test(flavor = "multi_thread")]
async fn nessie_down_for_a_while_loses_nothing() {
    outage("nessie").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_down_for_a_while_loses_nothing() {
    outage("s3").await;
}

/// Nessie's `main` put back to before a commit of the compactor's — what the
/// catalog did on Kubernetes when two compactors made the first commits of a
/// new table at once, keeping only the second: the compactor finds its
/// commit gone (it compares its offsets with the table's every 15 s) and
/// writes those events again instead of dropping them as copies of rows it
/// committed, though no new event arrives to trip a fence.
#[tokio::test(flavor = "multi_thread")]
async fn a_commit_the_catalog_lost_is_written_again() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let (mut flow, _compactor) = flow_with_compactor("lost_commit").await;
    let catalog = catalog().await;
    flow.send(100, 50).await;
    wait_for_rows(&catalog, &flow.stream, 100, Duration::from_secs(60)).await;
    let before = nessie_main_hash();
    flow.send(400, 100).await;
    wait_for_rows(&catalog, &flow.stream, 500, Duration::from_secs(60)).await;

    nessie_reset_main(&before);
    assert_eq!(
        scan_event_ids(&catalog, &flow.stream).await.len(),
        100,
        "the branch is back to before the second commit"
    );
    wait_for_rows(&catalog, &flow.stream, 500, Duration::from_secs(90)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ids = scan_event_ids(&catalog, &flow.stream).await;
    assert_no_loss_no_dup(&flow.ledger.ids(), &ids, true);
}
