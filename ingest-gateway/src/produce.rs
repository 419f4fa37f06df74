//! Producing to Kafka: an idempotent producer (acks=all) and the one rule the
//! gateway lives by — a chunk counts as written only when Kafka's delivery
//! report says so.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tokio::sync::RwLock;

use crate::chunk::Chunk;
use crate::config::KafkaConfig;

/// What Kafka said about one chunk.
#[derive(Debug)]
pub enum Delivery {
    /// Acknowledged by all in-sync replicas, at (partition, offset).
    Delivered(i32, i64),
    /// Kafka refused it or it never left the gateway: it is not in the topic.
    NotPersisted(String),
    /// No answer in time: it may or may not be in the topic.
    PossiblyPersisted(String),
}

/// The outcome of producing all chunks of one request.
#[derive(Debug)]
pub enum RequestDelivery {
    /// Every chunk was acknowledged; per partition, the highest offset written.
    Delivered(BTreeMap<i32, i64>),
    /// At least one chunk was not; the first reason, and whether some chunk
    /// may have been written anyway.
    Incomplete {
        /// Why (the first failure seen).
        reason: String,
        /// True when the failure was a timeout or lost connection.
        possibly_persisted: bool,
    },
}

/// A Kafka producer that is rebuilt when librdkafka reports a fatal error
/// (an idempotent producer can hit one, e.g. after a sequence gap).
pub struct Kafka {
    config: KafkaConfig,
    producer: RwLock<Arc<FutureProducer>>,
}

impl Kafka {
    /// Creates the producer. Connection happens in the background; an
    /// unreachable broker shows up as failed deliveries, not as an error here.
    pub fn new(config: &KafkaConfig) -> Result<Self, KafkaError> {
        let producer = build(config)?;
        Ok(Self {
            config: config.clone(),
            producer: RwLock::new(Arc::new(producer)),
        })
    }

    /// Produces every chunk to `topic` (keyed, see [`crate::chunk`]) and
    /// waits for all delivery reports, at most the configured delivery timeout.
    pub async fn produce_all(&self, topic: &str, payloads: &[Chunk]) -> RequestDelivery {
        let producer = self.producer.read().await.clone();
        let timeout = self.config.delivery_timeout_ms;
        let sends = payloads.iter().map(|payload| {
            let producer = &producer;
            async move {
                let record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic)
                    .key(payload.key.as_slice())
                    .payload(payload.payload.as_slice());
                // `send` waits out a full local queue for at most `timeout`.
                match producer.send(record, timeout).await {
                    Ok(done) => Delivery::Delivered(done.partition, done.offset),
                    Err((err, _)) => classify(err),
                }
            }
        });
        // librdkafka enforces message.timeout.ms itself; this outer bound only
        // guards against a delivery report that never arrives.
        let outcomes = match tokio::time::timeout(timeout * 2, join_all(sends)).await {
            Ok(outcomes) => outcomes,
            Err(_) => {
                return RequestDelivery::Incomplete {
                    reason: format!("no delivery report within {} ms", (timeout * 2).as_millis()),
                    possibly_persisted: true,
                };
            }
        };
        let mut written = Vec::with_capacity(outcomes.len());
        let mut result = RequestDelivery::Delivered(BTreeMap::new());
        for outcome in outcomes {
            let (reason, possibly) = match outcome {
                Delivery::Delivered(partition, offset) => {
                    written.push((partition, offset));
                    continue;
                }
                Delivery::NotPersisted(r) => (r, false),
                Delivery::PossiblyPersisted(r) => (r, true),
            };
            match &mut result {
                RequestDelivery::Delivered(_) => {
                    result = RequestDelivery::Incomplete {
                        reason,
                        possibly_persisted: possibly,
                    }
                }
                RequestDelivery::Incomplete {
                    possibly_persisted, ..
                } => *possibly_persisted |= possibly,
            }
        }
        match &mut result {
            RequestDelivery::Delivered(highest) => {
                *highest = tlake_proto::positions::highest(written)
            }
            RequestDelivery::Incomplete { .. } => self.rebuild_if_fatal(&producer).await,
        }
        result
    }

    /// Asks the cluster for metadata: true when a broker answered in time.
    pub async fn reachable(&self, timeout: Duration) -> bool {
        let producer = self.producer.read().await.clone();
        tokio::task::spawn_blocking(move || producer.client().fetch_metadata(None, timeout).is_ok())
            .await
            .unwrap_or(false)
    }

    /// Waits until everything produced is acknowledged, or `timeout` passes.
    pub async fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        let producer = self.producer.read().await.clone();
        let started = Instant::now();
        tokio::task::spawn_blocking(move || producer.flush(timeout))
            .await
            .unwrap_or(Err(KafkaError::Canceled))
            .inspect(|()| {
                tracing::info!(ms = started.elapsed().as_millis(), "kafka producer flushed")
            })
    }

    async fn rebuild_if_fatal(&self, used: &Arc<FutureProducer>) {
        let Some((code, reason)) = used.client().fatal_error() else {
            return;
        };
        let mut slot = self.producer.write().await;
        if !Arc::ptr_eq(&slot, used) {
            return; // another request already rebuilt it
        }
        tracing::error!(?code, %reason, "fatal Kafka producer error; rebuilding the producer");
        match build(&self.config) {
            Ok(fresh) => *slot = Arc::new(fresh),
            Err(err) => tracing::error!(%err, "cannot rebuild the Kafka producer"),
        }
    }
}

impl std::fmt::Debug for Kafka {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kafka")
            .field("brokers", &self.config.brokers)
            .finish_non_exhaustive()
    }
}

fn build(config: &KafkaConfig) -> Result<FutureProducer, KafkaError> {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set(
            "message.timeout.ms",
            config.delivery_timeout_ms.as_millis().to_string(),
        )
        .set("linger.ms", config.linger_ms.to_string())
        .set("compression.type", &config.compression)
        .set("batch.size", (1 << 20).to_string())
        // Nagle's algorithm plus delayed ACKs adds ~40 ms to every small
        // produce; the gateway's answer waits on it.
        .set("socket.nagle.disable", "true")
        .set("client.id", "tlake-gateway");
    for (key, value) in &config.properties {
        client.set(key, value);
    }
    client.create()
}

fn classify(err: KafkaError) -> Delivery {
    let code = err.rdkafka_error_code();
    let reason = err.to_string();
    match code {
        // The broker may have written it before the answer was lost.
        Some(
            RDKafkaErrorCode::MessageTimedOut
            | RDKafkaErrorCode::RequestTimedOut
            | RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::AllBrokersDown
            | RDKafkaErrorCode::NotEnoughReplicasAfterAppend,
        ) => Delivery::PossiblyPersisted(reason),
        _ => Delivery::NotPersisted(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::mocking::MockCluster;

    fn chunk(payload: &[u8]) -> Chunk {
        Chunk {
            key: vec![7; 16],
            payload: payload.to_vec(),
        }
    }

    fn config(brokers: String) -> KafkaConfig {
        KafkaConfig {
            brokers,
            delivery_timeout_ms: Duration::from_millis(1500),
            ..KafkaConfig::default()
        }
    }

    // Fault injection with librdkafka's mock cluster: the happy path is
    // tested against the real broker in tests/.
    #[tokio::test]
    async fn broker_errors_are_never_delivered() {
        let mock = MockCluster::new(1).expect("mock cluster");
        mock.create_topic("t", 1, 1).expect("topic");
        let kafka = Kafka::new(&config(mock.bootstrap_servers())).expect("producer");
        assert!(matches!(
            kafka.produce_all("t", &[chunk(b"ok")]).await,
            RequestDelivery::Delivered(_)
        ));
        // Every produce fails with a non-retriable error.
        mock.request_errors(
            rdkafka::types::RDKafkaApiKey::Produce,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE; 4],
        );
        match kafka.produce_all("t", &[chunk(b"no")]).await {
            RequestDelivery::Incomplete { .. } => {}
            other => panic!("expected Incomplete, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn unreachable_broker_times_out_as_possibly_persisted() {
        // Nothing listens on port 1.
        let kafka = Kafka::new(&config("127.0.0.1:1".into())).expect("producer");
        let started = Instant::now();
        match kafka.produce_all("t", &[chunk(b"x")]).await {
            RequestDelivery::Incomplete {
                possibly_persisted, ..
            } => assert!(possibly_persisted),
            other => panic!("expected Incomplete, got {other:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
        assert!(!kafka.reachable(Duration::from_millis(300)).await);
    }

    use rdkafka::types::RDKafkaRespErr;
}
