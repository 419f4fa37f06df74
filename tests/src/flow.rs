//! End-to-end setups for compactor tests: a topic, a gateway routing a
//! unique stream to it, and sending acknowledged events.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tlake_catalog_client::{LakeCatalog, Offsets};
use tlake_proto::v1::{LogEvent, SendLogsRequest};
use tokio::sync::watch;

use crate::AckLedger;
use crate::events::{EventGen, resource};
use crate::gateway::{Gateway, GatewayOptions};
use crate::kafka::{create_topic, unique_topic};
use crate::stack::Stack;

/// A topic, a stream routed to it, and a gateway.
#[derive(Debug)]
pub struct Flow {
    /// The stack.
    pub stack: Stack,
    /// Kafka topic.
    pub topic: String,
    /// Stream = table name.
    pub stream: String,
    /// The gateway.
    pub gateway: Gateway,
    /// Acknowledged ids.
    pub ledger: AckLedger,
    generator: EventGen,
    requests: std::sync::atomic::AtomicUsize,
}

impl Flow {
    /// Creates a topic with `partitions` and a gateway routing a fresh stream to it.
    pub async fn new(name: &str, partitions: i32) -> Self {
        Self::with_gateway_toml(name, partitions, "").await
    }

    /// [`Flow::new`], with `gateway_toml` added to the gateway's config file.
    pub async fn with_gateway_toml(name: &str, partitions: i32, gateway_toml: &str) -> Self {
        let stack = Stack::get();
        let topic = unique_topic(name);
        create_topic(&stack.kafka_brokers, &topic, partitions).await;
        let stream = crate::lake::unique_stream(name);
        let mut options = GatewayOptions::new(&stack.kafka_brokers, &topic);
        options.streams = BTreeMap::from([(stream.clone(), topic.clone())]);
        options.extra_toml = gateway_toml.to_owned();
        let gateway = Gateway::start(&options);
        Self {
            stack,
            topic,
            stream,
            gateway,
            ledger: AckLedger::new(),
            generator: EventGen::new(),
            requests: Default::default(),
        }
    }

    /// Sends `count` new events in requests of `per_request`; every OK is
    /// recorded in the ledger. Returns the events sent.
    pub async fn send(&mut self, count: usize, per_request: usize) -> Vec<LogEvent> {
        let mut sent = Vec::new();
        let mut left = count;
        while left > 0 {
            let n = left.min(per_request);
            let events = self.generator.batch(n);
            self.send_events(&events).await;
            sent.extend(events);
            left -= n;
        }
        sent
    }

    /// Sends exactly these events (retrying until OK); acks them once.
    pub async fn send_events(&self, events: &[LogEvent]) {
        let mut client = self.gateway.client().await;
        let services = ["checkout", "payments", "search"];
        let n = self
            .requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let service = services[n % services.len()];
        for attempt in 0.. {
            let result = client
                .send_logs(SendLogsRequest {
                    stream: self.stream.clone(),
                    resource: Some(resource(service)),
                    events: events.to_vec(),
                })
                .await;
            match result {
                Ok(_) => break,
                Err(status) if attempt < 20 => {
                    eprintln!("SendLogs retry after {status}");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(status) => panic!("SendLogs failed: {status}"),
            }
        }
        let already: std::collections::HashSet<[u8; 16]> = self.ledger.ids().into_iter().collect();
        self.ledger.ack(
            events
                .iter()
                .map(|e| e.event_id.as_ref())
                .filter(|id| !already.contains(&<[u8; 16]>::try_from(*id).expect("16 bytes"))),
        );
    }

    /// Produces raw bytes directly to partition `partition` of the topic.
    pub async fn produce_raw(&self, partition: i32, payload: &[u8]) -> i64 {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &self.stack.kafka_brokers)
            .create()
            .expect("producer");
        let delivery = producer
            .send(
                FutureRecord::<(), [u8]>::to(&self.topic)
                    .partition(partition)
                    .payload(payload),
                Duration::from_secs(10),
            )
            .await
            .expect("produce raw record");
        delivery.offset
    }
}

/// Watches a table's stored offsets in the background and records every
/// decrease it ever sees (there must be none).
#[derive(Debug)]
pub struct OffsetWatch {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<(usize, Vec<String>)>,
}

impl OffsetWatch {
    /// Starts polling `table` every 100 ms.
    pub fn start(catalog: LakeCatalog, table: String) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut last: HashMap<(String, i32), i64> = HashMap::new();
            let mut samples = 0;
            let mut decreases = Vec::new();
            while !*stopped.borrow() {
                if let Ok(progress) = catalog.progress(&table).await {
                    samples += 1;
                    let offsets: Offsets = progress.offsets;
                    for (topic, parts) in offsets {
                        for (p, o) in parts {
                            let key = (topic.clone(), p);
                            if let Some(&prev) = last.get(&key)
                                && o < prev
                            {
                                decreases.push(format!("{topic}/{p}: {prev} -> {o}"));
                            }
                            last.insert(key, o);
                        }
                    }
                }
                let _ = tokio::time::timeout(Duration::from_millis(100), stopped.changed()).await;
            }
            (samples, decreases)
        });
        Self { stop, task }
    }

    /// Stops and returns (samples taken, decreases seen).
    pub async fn finish(self) -> (usize, Vec<String>) {
        let _ = self.stop.send(true);
        self.task.await.expect("watch task")
    }
}
