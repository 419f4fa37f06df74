//! The SDK's `tracing` layer and `log` bridge against the real gateway and
//! Kafka: an application's existing log calls arrive, with their fields as
//! attributes. A binary of its own because the `log` bridge is process-global.

use std::collections::HashMap;
use std::time::Duration;

use tlake_producer_sdk::{Client, LogBridge};
use tlake_proto::v1::{LogEvent, any_value};
use tlake_tests::gateway::{Gateway, GatewayOptions};
use tlake_tests::kafka::{create_topic, events, unique_topic};
use tlake_tests::stack::Stack;
use tracing_subscriber::prelude::*;

fn attrs(event: &LogEvent) -> HashMap<String, String> {
    event
        .attributes
        .iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                Some(any_value::Value::IntValue(i)) => i.to_string(),
                Some(any_value::Value::BoolValue(b)) => b.to_string(),
                Some(any_value::Value::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

fn body(event: &LogEvent) -> String {
    match event.body.as_ref().and_then(|b| b.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        other => format!("{other:?}"),
    }
}

async fn setup(name: &str) -> (Stack, String, Gateway, Client) {
    let stack = Stack::get();
    let topic = unique_topic(name);
    create_topic(&stack.kafka_brokers, &topic, 3).await;
    let gateway = Gateway::start(&GatewayOptions::new(&stack.kafka_brokers, &topic));
    let client = Client::builder()
        .endpoint(format!("http://{}", gateway.grpc))
        .resource_from_env(false)
        .service_name("bridges-e2e")
        .build()
        .expect("client");
    (stack, topic, gateway, client)
}

/// Flushes the client (every logged event acknowledged) and reads the topic back.
async fn flush_and_read(client: &Client, stack: &Stack, topic: &str) -> Vec<LogEvent> {
    tokio::time::timeout(Duration::from_secs(30), client.flush())
        .await
        .expect("flush in time")
        .expect("flush OK");
    events(&stack.kafka_brokers, topic)
}

#[tokio::test]
async fn tracing_events_arrive_with_their_fields() {
    let (stack, topic, _gateway, client) = setup("tracing").await;
    let subscriber =
        tracing_subscriber::registry().with(tlake_producer_sdk::TracingLayer::new(client.clone()));
    tracing::subscriber::with_default(subscriber, || {
        for i in 0..500u64 {
            tracing::warn!(order.id = i, user = "u-7", paid = true, "order placed");
        }
    });
    let events = flush_and_read(&client, &stack, &topic).await;
    assert_eq!(events.len(), 500);
    let mut orders: Vec<u64> = Vec::new();
    for e in &events {
        assert_eq!(body(e), "order placed");
        assert_eq!(e.severity_text, "WARN");
        let a = attrs(e);
        assert_eq!(a.get("user").map(String::as_str), Some("u-7"), "{a:?}");
        assert_eq!(a.get("paid").map(String::as_str), Some("true"), "{a:?}");
        orders.push(a["order.id"].parse().expect("order.id is a number"));
    }
    orders.sort_unstable();
    assert_eq!(orders, (0..500).collect::<Vec<_>>());
    client.shutdown().await;
}

#[tokio::test]
async fn log_crate_records_arrive_with_their_key_values() {
    let (stack, topic, _gateway, client) = setup("log").await;
    LogBridge::install(client.clone(), log::LevelFilter::Info).expect("install the log bridge");
    for i in 0..300 {
        log::info!(attempt = i, queue = "orders"; "retrying upstream call");
    }
    log::debug!("below the level: not sent");
    let events = flush_and_read(&client, &stack, &topic).await;
    assert_eq!(events.len(), 300);
    for e in &events {
        assert_eq!(body(e), "retrying upstream call");
        let a = attrs(e);
        assert_eq!(a.get("queue").map(String::as_str), Some("orders"), "{a:?}");
        assert!(a.contains_key("attempt"), "{a:?}");
    }
    client.shutdown().await;
}
