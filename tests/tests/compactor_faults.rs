//! The compactor while parts of the stack are down. Stops shared stack
//! components, so it runs as its own test binary (one test at a time).

use std::time::Duration;

use tlake_tests::assert_no_loss_no_dup;
use tlake_tests::compactor::{Compactor, CompactorOptions};
use tlake_tests::flow::Flow;
use tlake_tests::lake::{catalog, scan_event_ids, wait_for_rows};
use tlake_tests::stack::stack_ctl;

/// The two outages must not overlap (tests in one binary run in parallel).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn outage(component: &str) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut flow = Flow::new(&format!("{component}_down"), 2).await;
    let _compactor = Compactor::start(&CompactorOptions::new(
        &flow.stack.kafka_brokers,
        &flow.topic,
    ));
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
