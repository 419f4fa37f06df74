//! Gateway fault tests that disturb the shared stack (Kafka stopped) or the
//! gateway process (SIGTERM under load). A separate test binary, so they
//! never run beside tests that need Kafka up; within it they run one by one.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tlake_proto::v1::SendLogsRequest;
use tlake_tests::events::EventGen;
use tlake_tests::gateway::{Gateway, GatewayOptions};
use tlake_tests::kafka::{create_topic, event_ids, unique_topic};
use tlake_tests::stack::{Stack, stack_ctl};
use tlake_tests::{AckLedger, assert_no_loss_no_dup};
use tokio::sync::Mutex;
use tonic::Code;

/// Serializes the tests of this binary: each one takes the stack apart.
static SERIAL: Mutex<()> = Mutex::const_new(());

/// Restarts Kafka when dropped, so a failing test leaves the stack whole.
struct KafkaBack;

impl Drop for KafkaBack {
    fn drop(&mut self) {
        stack_ctl(&["start", "kafka"]);
    }
}

fn request(events: Vec<tlake_proto::v1::LogEvent>) -> SendLogsRequest {
    SendLogsRequest {
        stream: String::new(),
        resource: None,
        events,
    }
}

#[tokio::test]
async fn kafka_down_answers_unavailable_in_time_and_the_gateway_recovers() {
    let _serial = SERIAL.lock().await;
    let stack = Stack::get();
    let topic = unique_topic("outage");
    create_topic(&stack.kafka_brokers, &topic, 3).await;
    let mut options = GatewayOptions::new(&stack.kafka_brokers, &topic);
    options.env.push((
        "TLAKE_GATEWAY_KAFKA__DELIVERY_TIMEOUT_MS".into(),
        "3000".into(),
    ));
    let gateway = Gateway::start(&options);
    let mut client = gateway.client().await;
    let mut generator = EventGen::new();
    let ledger = AckLedger::new();

    let before = generator.batch(100);
    client
        .send_logs(request(before.clone()))
        .await
        .expect("OK while Kafka is up");
    ledger.ack(before.iter().map(|e| e.event_id.as_ref()));

    stack_ctl(&["stop", "kafka"]);
    let guard = KafkaBack;
    let during = generator.batch(100);
    let started = Instant::now();
    let status = client
        .send_logs(request(during.clone()))
        .await
        .expect_err("must not be OK while Kafka is down");
    let waited = started.elapsed();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    // The configured delivery timeout (3 s) bounds the answer.
    assert!(waited < Duration::from_secs(7), "answered after {waited:?}");

    drop(guard); // Kafka starts again.
    // The client retries the same events (same ids) until the gateway takes them.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        match client.send_logs(request(during.clone())).await {
            Ok(_) => break,
            Err(s) if s.code() == Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(s) => panic!("gateway did not recover after Kafka returned: {s:?}"),
        }
    }
    ledger.ack(during.iter().map(|e| e.event_id.as_ref()));
    let after = generator.batch(100);
    client
        .send_logs(request(after.clone()))
        .await
        .expect("OK after recovery");
    ledger.ack(after.iter().map(|e| e.event_id.as_ref()));

    // Every acknowledged event is in Kafka; the refused batch may be there
    // twice (an unknown outcome), which downstream dedup by id absorbs.
    let observed = event_ids(&stack.kafka_brokers, &topic);
    assert_no_loss_no_dup(&ledger.ids(), &observed, false);
    let sent: HashSet<[u8; 16]> = ledger.ids().into_iter().collect();
    assert!(
        observed.iter().all(|id| sent.contains(id)),
        "Kafka holds events never sent"
    );
}

#[tokio::test]
async fn sigterm_under_load_keeps_every_acknowledged_event() {
    let _serial = SERIAL.lock().await;
    let stack = Stack::get();
    let topic = unique_topic("sigterm");
    create_topic(&stack.kafka_brokers, &topic, 3).await;
    let mut gateway = Gateway::start(&GatewayOptions::new(&stack.kafka_brokers, &topic));
    let ledger = Arc::new(AckLedger::new());
    let sent = Arc::new(std::sync::Mutex::new(HashSet::<[u8; 16]>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for _ in 0..8 {
        let channel = gateway.channel().await;
        let (ledger, sent, stop) = (ledger.clone(), sent.clone(), stop.clone());
        senders.push(tokio::spawn(async move {
            let mut client = tlake_proto::v1::log_ingest_client::LogIngestClient::new(channel);
            let mut generator = EventGen::new();
            let mut refused = 0;
            while !stop.load(Ordering::Relaxed) {
                let events = generator.batch(200);
                sent.lock().expect("lock").extend(
                    events
                        .iter()
                        .map(|e| <[u8; 16]>::try_from(e.event_id.as_ref()).expect("id")),
                );
                match client.send_logs(request(events.clone())).await {
                    Ok(_) => ledger.ack(events.iter().map(|e| e.event_id.as_ref())),
                    Err(_) => {
                        refused += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            refused
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let acked_before_term = ledger.len();
    assert!(acked_before_term > 0, "no request succeeded before SIGTERM");
    gateway.sigterm();
    assert!(
        gateway.wait(Duration::from_secs(30)),
        "gateway exited with an error:\n{}",
        gateway.log()
    );
    // Let the senders run into the closed gateway before stopping them.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let mut refused = 0;
    for s in senders {
        refused += s.await.expect("sender");
    }
    assert!(
        refused > 0,
        "no request was refused after shutdown: the test did not overlap the shutdown"
    );
    let log = gateway.log();
    assert!(log.contains("shutdown requested"), "{log}");
    assert!(log.contains("gateway stopped"), "{log}");

    let observed = event_ids(&stack.kafka_brokers, &topic);
    assert_no_loss_no_dup(&ledger.ids(), &observed, false);
    let sent = sent.lock().expect("lock");
    assert!(
        observed.iter().all(|id| sent.contains(id)),
        "Kafka holds events never sent"
    );
    eprintln!(
        "acked {} events ({} before SIGTERM), {} refused requests, {} in Kafka",
        ledger.len(),
        acked_before_term,
        refused,
        observed.len()
    );
}
