//! The ingest gateway against the real Kafka of the local stack: what goes
//! in comes out, once; what is bad is refused with the right code and never
//! reaches Kafka.

use std::io::Write as _;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use prost::Message;
use tlake_proto::v1::{LogEvent, SendLogsRequest, Source};
use tlake_tests::events::{EventGen, otlp_request, resource};
use tlake_tests::gateway::{Gateway, GatewayOptions, binary};
use tlake_tests::kafka::{create_topic, event_ids, read_all, unique_topic};
use tlake_tests::stack::Stack;
use tlake_tests::{AckLedger, assert_no_loss_no_dup, gzip, raw};
use tonic::{Code, Request};

async fn setup(name: &str) -> (Stack, String, Gateway) {
    let stack = Stack::get();
    let topic = unique_topic(name);
    create_topic(&stack.kafka_brokers, &topic, 3).await;
    let gateway = Gateway::start(&GatewayOptions::new(&stack.kafka_brokers, &topic));
    (stack, topic, gateway)
}

fn ids(events: &[LogEvent]) -> impl Iterator<Item = &[u8]> {
    events.iter().map(|e| e.event_id.as_ref())
}

/// Every acknowledged event is among `observed`, once.
fn assert_exactly_once(ledger: &AckLedger, observed: &[LogEvent]) {
    let observed_ids: Vec<[u8; 16]> = observed
        .iter()
        .map(|e| e.event_id.as_ref().try_into().expect("id"))
        .collect();
    assert_no_loss_no_dup(&ledger.ids(), &observed_ids, true);
}

#[tokio::test]
async fn send_logs_arrive_intact_and_exactly_once() {
    let (stack, topic, gateway) = setup("sendlogs").await;
    let mut client = gateway.client().await;
    let mut generator = EventGen::new();
    let ledger = AckLedger::new();
    let mut sent = Vec::new();
    for batch_size in [1, 10, 500, 1000, 2489] {
        let events = generator.batch(batch_size);
        let response = client
            .send_logs(SendLogsRequest {
                stream: String::new(),
                resource: Some(resource("checkout")),
                events: events.clone(),
            })
            .await
            .expect("SendLogs OK");
        assert_eq!(response.into_inner().accepted_events as usize, batch_size);
        ledger.ack(ids(&events));
        sent.extend(events);
    }
    let records = read_all(&stack.kafka_brokers, &topic);
    // One record per request chunk: the 2489-event request is split, small
    // ones are not.
    assert!(records.len() >= 6, "{} records", records.len());
    assert!(
        records.len() < 40,
        "{} records: chunks too small",
        records.len()
    );
    let mut observed = Vec::new();
    for record in &records {
        assert!(
            record.payload.len() <= 512 << 10,
            "record of {} bytes",
            record.payload.len()
        );
        let batch = record.batch();
        assert_eq!(batch.stream, "default");
        assert_eq!(batch.source, Source::SendLogs as i32);
        assert_eq!(batch.resource, Some(resource("checkout")));
        assert!(batch.received_unix_nano > 0);
        observed.extend(batch.events);
    }
    assert_exactly_once(&ledger, &observed);
    // Intact: every event comes out byte for byte as it went in.
    let by_id: std::collections::HashMap<_, _> =
        observed.iter().map(|e| (e.event_id.clone(), e)).collect();
    for event in &sent {
        assert_eq!(
            by_id[&event.event_id].encode_to_vec(),
            event.encode_to_vec()
        );
    }
}

#[tokio::test]
async fn otlp_export_arrives_intact_and_exactly_once() {
    let (stack, topic, gateway) = setup("otlp").await;
    let mut client = LogsServiceClient::new(gateway.channel().await);
    client
        .export(otlp_request(&["checkout", "payments"], 700))
        .await
        .expect("Export OK");
    let records = read_all(&stack.kafka_brokers, &topic);
    let mut per_service = std::collections::BTreeMap::<String, Vec<LogEvent>>::new();
    for record in &records {
        let batch = record.batch();
        assert_eq!(batch.source, Source::Otlp as i32);
        let service = batch.resource.expect("resource").attributes[0]
            .value
            .clone()
            .and_then(|v| v.value)
            .map(|v| format!("{v:?}"))
            .expect("service.name");
        per_service.entry(service).or_default().extend(batch.events);
    }
    assert_eq!(per_service.len(), 2);
    for events in per_service.values() {
        assert_eq!(events.len(), 700);
        let distinct: std::collections::HashSet<_> = events.iter().map(|e| &e.event_id).collect();
        assert_eq!(distinct.len(), 700);
        for e in events {
            assert_eq!(e.severity_text, "INFO");
            assert!(e.time_unix_nano >= 1_764_000_000_000_000_000);
            assert_eq!(e.attributes[0].key, "i");
        }
    }
    // A retried Export produces the same ids, so downstream dedup removes it.
    client
        .export(otlp_request(&["checkout", "payments"], 700))
        .await
        .expect("retry OK");
    let ids = event_ids(&stack.kafka_brokers, &topic);
    assert_eq!(ids.len(), 2800);
    assert_eq!(
        ids.iter().collect::<std::collections::HashSet<_>>().len(),
        1400
    );
}

/// Asserts nothing at all was written to `topic`.
fn assert_topic_empty(stack: &Stack, topic: &str) {
    assert_eq!(
        read_all(&stack.kafka_brokers, topic).len(),
        0,
        "rejected input reached Kafka"
    );
}

/// The gateway reads SendLogs in place and leaves anything unusual to prost:
/// both kinds arrive, whole and once. An event without a time gets the
/// receive time as its observed time on either path.
#[tokio::test]
async fn requests_read_in_place_or_left_to_prost_both_arrive() {
    let (stack, topic, gateway) = setup("inplace").await;
    let mut generator = EventGen::new();
    let ledger = AckLedger::new();
    let mut untimed = Vec::new();
    for unusual in [false, true] {
        let mut events = generator.batch(200);
        events[0].time_unix_nano = 0;
        events[0].observed_time_unix_nano = 0;
        untimed.push(events[0].event_id.clone());
        let mut body = SendLogsRequest {
            stream: String::new(),
            resource: Some(resource("checkout")),
            events: events.clone(),
        }
        .encode_to_vec();
        if unusual {
            // A field this version does not know (number 15, a varint):
            // prost skips it, the scan leaves the request to prost.
            body.extend_from_slice(&[0x78, 0x01]);
        }
        raw::call(
            gateway.channel().await,
            "/telemetry.v1.LogIngest/SendLogs",
            body,
        )
        .await
        .unwrap_or_else(|s| panic!("unusual={unusual}: {s:?}"));
        ledger.ack(ids(&events));
    }
    let mut observed = Vec::new();
    for record in read_all(&stack.kafka_brokers, &topic) {
        let batch = record.batch();
        for event in &batch.events {
            if untimed.contains(&event.event_id) {
                assert_eq!(event.observed_time_unix_nano, batch.received_unix_nano);
            }
        }
        observed.extend(batch.events);
    }
    assert_exactly_once(&ledger, &observed);
}

#[tokio::test]
async fn malformed_protobuf_is_invalid_argument_and_writes_nothing() {
    let (stack, topic, gateway) = setup("malformed").await;
    // Each body is cut or corrupted inside a field the service's message
    // defines (unknown fields are skipped whole, as protobuf requires).
    let cases: [(&str, [&[u8]; 3]); 2] = [
        (
            "/telemetry.v1.LogIngest/SendLogs",
            [
                &[0xff, 0xff, 0xff, 0xff, 0xff], // unterminated varint tag
                &[0x1a, 0x7f, 0x01],             // events: length past the end
                &[0x12, 0x03, 0x0a, 0x05, 0x41], // resource: nested attribute truncated
            ],
        ),
        (
            "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
            [
                &[0xff, 0xff, 0xff, 0xff, 0xff],
                &[0x0a, 0x7f, 0x01], // resource_logs: length past the end
                &[0x0a, 0x03, 0x0a, 0x05, 0x41], // resource_logs.resource truncated
            ],
        ),
    ];
    for (path, bodies) in cases {
        for body in bodies {
            let status = raw::call(gateway.channel().await, path, body.to_vec())
                .await
                .expect_err(&format!("garbage must be refused: {path} {body:?}"));
            assert_eq!(
                status.code(),
                Code::InvalidArgument,
                "{path} {body:?}: {status:?}"
            );
        }
    }
    // Well-formed protobuf, but invalid UTF-8 in a string field.
    let status = raw::call(
        gateway.channel().await,
        "/telemetry.v1.LogIngest/SendLogs",
        vec![0x0a, 0x02, 0xc3, 0x28],
    )
    .await
    .expect_err("bad utf-8");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_topic_empty(&stack, &topic);
    assert!(gateway.metrics_text().contains("code=\"InvalidArgument\""));
}

#[tokio::test]
async fn invalid_events_are_invalid_argument_and_write_nothing() {
    let (stack, topic, gateway) = setup("invalid").await;
    let mut client = gateway.client().await;
    let mut generator = EventGen::new();
    let mut events = generator.batch(10);
    events[7].event_id = vec![1, 2, 3].into();
    let status = client
        .send_logs(SendLogsRequest {
            stream: String::new(),
            resource: None,
            events,
        })
        .await
        .expect_err("bad id");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("events[7].event_id"),
        "{}",
        status.message()
    );
    assert_topic_empty(&stack, &topic);
}

#[tokio::test]
async fn oversized_batches_are_refused_and_write_nothing() {
    let (stack, topic, gateway) = setup("oversized").await;
    let mut client = gateway.client().await;
    let mut generator = EventGen::new();
    // More events than allowed per request.
    let status = client
        .send_logs(SendLogsRequest {
            stream: String::new(),
            resource: None,
            events: generator.batch(10_001),
        })
        .await
        .expect_err("too many events");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(
        status.message().contains("10001 events"),
        "{}",
        status.message()
    );
    // One event above the per-event limit.
    let mut big = generator.next_event();
    big.body = tlake_tests::events::text("x".repeat(300 << 10));
    let status = client
        .send_logs(SendLogsRequest {
            stream: String::new(),
            resource: None,
            events: vec![big],
        })
        .await
        .expect_err("event too large");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    // A message above the decoded size limit (8 MiB) is refused by size alone.
    let huge = SendLogsRequest {
        stream: String::new(),
        resource: None,
        events: (0..40)
            .map(|_| {
                let mut e = generator.next_event();
                e.body = tlake_tests::events::text("y".repeat(250 << 10));
                e
            })
            .collect(),
    };
    let status = client
        .clone()
        .max_encoding_message_size(64 << 20)
        .send_logs(huge)
        .await
        .expect_err("request too large");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert_topic_empty(&stack, &topic);
}

#[tokio::test]
async fn a_gzip_bomb_is_refused_without_inflating() {
    let (stack, topic, gateway) = setup("bomb").await;
    // 64 MiB of zeros in one string field compresses to ~64 KiB.
    let mut body = vec![0x2a]; // field 5 (severity_text of LogEvent), wire type 2
    let payload = vec![b'a'; 64 << 20];
    let mut len = Vec::new();
    prost::encoding::encode_varint(payload.len() as u64, &mut len);
    body.extend(len);
    body.extend(payload);
    let mut gz = gzip(&body);
    // gRPC frame: compressed flag 1 + big-endian length + gzip data.
    let mut frame = vec![1u8];
    frame.extend((gz.len() as u32).to_be_bytes());
    frame.append(&mut gz);
    let status = http2_post(gateway.grpc, "/telemetry.v1.LogIngest/SendLogs", frame).await;
    assert_eq!(status, Code::OutOfRange as i32);
    assert_topic_empty(&stack, &topic);
}

/// Posts one pre-framed gRPC message with `grpc-encoding: gzip` and returns
/// the grpc-status.
async fn http2_post(addr: std::net::SocketAddr, path: &'static str, frame: Vec<u8>) -> i32 {
    use tower::ServiceExt as _;
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-encoding", "gzip")
        .body(tonic::body::Body::new(http_body_util::Full::new(
            bytes::Bytes::from(frame),
        )))
        .expect("request");
    let response = channel.oneshot(request).await.expect("http response");
    let (parts, body) = response.into_parts();
    if let Some(status) = parts.headers.get("grpc-status") {
        return status.to_str().expect("ascii").parse().expect("number");
    }
    use http_body_util::BodyExt as _;
    let collected = body.collect().await.expect("body");
    collected
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .map(|s| s.to_str().expect("ascii").parse().expect("number"))
        .expect("grpc-status in trailers")
}

#[tokio::test]
async fn unknown_and_invalid_streams_are_invalid_argument() {
    let (stack, topic, gateway) = setup("streams").await;
    let mut client = gateway.client().await;
    let mut generator = EventGen::new();
    for (stream, expect) in [
        ("nope", "unknown stream \"nope\""),
        ("Bad-Name", "not a valid stream name"),
    ] {
        let status = client
            .send_logs(SendLogsRequest {
                stream: stream.into(),
                resource: None,
                events: generator.batch(3),
            })
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains(expect), "{}", status.message());
    }
    let mut otlp = LogsServiceClient::new(gateway.channel().await);
    let mut request = Request::new(otlp_request(&["a"], 3));
    request
        .metadata_mut()
        .insert("x-tlake-stream", "nope".parse().expect("ascii"));
    assert_eq!(
        otlp.export(request).await.expect_err("refused").code(),
        Code::InvalidArgument
    );
    assert_topic_empty(&stack, &topic);
}

#[tokio::test]
async fn missing_or_wrong_token_is_unauthenticated_and_writes_nothing() {
    let stack = Stack::get();
    let topic = unique_topic("auth");
    create_topic(&stack.kafka_brokers, &topic, 3).await;
    let mut options = GatewayOptions::new(&stack.kafka_brokers, &topic);
    options
        .env
        .push(("TLAKE_GATEWAY_AUTH__TOKEN".into(), "correct-horse".into()));
    let gateway = Gateway::start(&options);
    let mut generator = EventGen::new();
    let mut client = gateway.client().await;
    for token in [
        None,
        Some("Bearer wrong"),
        Some("correct-horse"),
        Some("Bearer correct-hors"),
    ] {
        let mut request = Request::new(SendLogsRequest {
            stream: String::new(),
            resource: None,
            events: generator.batch(5),
        });
        if let Some(t) = token {
            request
                .metadata_mut()
                .insert("authorization", t.parse().expect("ascii"));
        }
        let status = client.send_logs(request).await.expect_err("refused");
        assert_eq!(status.code(), Code::Unauthenticated, "{token:?}");
    }
    let mut otlp = LogsServiceClient::new(gateway.channel().await);
    assert_eq!(
        otlp.export(otlp_request(&["a"], 2))
            .await
            .expect_err("refused")
            .code(),
        Code::Unauthenticated
    );
    assert_topic_empty(&stack, &topic);

    let events = generator.batch(5);
    let mut request = Request::new(SendLogsRequest {
        stream: String::new(),
        resource: None,
        events: events.clone(),
    });
    request.metadata_mut().insert(
        "authorization",
        "Bearer correct-horse".parse().expect("ascii"),
    );
    client
        .send_logs(request)
        .await
        .expect("the right token is accepted");
    let observed = event_ids(&stack.kafka_brokers, &topic);
    let acked: Vec<[u8; 16]> = events
        .iter()
        .map(|e| e.event_id.as_ref().try_into().expect("id"))
        .collect();
    assert_no_loss_no_dup(&acked, &observed, true);
}

#[tokio::test]
async fn unreachable_kafka_answers_unavailable_within_the_timeout() {
    let stack = Stack::get();
    let mut options = GatewayOptions::new("127.0.0.1:1", "nowhere");
    options.extra_toml = String::new();
    options.env.push((
        "TLAKE_GATEWAY_KAFKA__DELIVERY_TIMEOUT_MS".into(),
        "2000".into(),
    ));
    drop(stack);
    let gateway = Gateway::start(&options);
    let mut client = gateway.client().await;
    let started = Instant::now();
    let status = client
        .send_logs(SendLogsRequest {
            stream: String::new(),
            resource: None,
            events: EventGen::new().batch(3),
        })
        .await
        .expect_err("no Kafka");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.metadata().get("retry-after-ms").is_some());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let mut health = tonic_health::pb::health_client::HealthClient::new(gateway.channel().await);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("health answers")
            .into_inner();
        if answer.status
            == tonic_health::pb::health_check_response::ServingStatus::NotServing as i32
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "health never reported NOT_SERVING"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn health_and_metrics_report_a_working_gateway() {
    let (_stack, _topic, gateway) = setup("health").await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(gateway.channel().await);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: "telemetry.v1.LogIngest".into(),
            })
            .await
            .map(|r| r.into_inner().status)
            .ok();
        if status == Some(tonic_health::pb::health_check_response::ServingStatus::Serving as i32) {
            break;
        }
        assert!(Instant::now() < deadline, "never SERVING: {status:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut client = gateway.client().await;
    client
        .send_logs(SendLogsRequest {
            stream: String::new(),
            resource: None,
            events: EventGen::new().batch(42),
        })
        .await
        .expect("OK");
    let text = gateway.metrics_text();
    for needle in [
        "tlake_gateway_events_total{stream=\"default\"} 42",
        "tlake_gateway_requests_total{rpc=\"SendLogs\",code=\"Ok\"} 1",
        "tlake_gateway_produce_seconds_bucket",
        "tlake_gateway_kafka_up 1",
    ] {
        assert!(text.contains(needle), "metrics lack {needle:?}:\n{text}");
    }
}

#[test]
fn wrong_config_fails_at_start_with_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("tlake-badcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    for (toml, expect) in [
        ("[kafka]\nbroker = \"x\"\n", "unknown field"),
        ("[limits]\nchunk_bytes = 10\n", "limits.chunk_bytes"),
        ("listen = \"not an address\"\n", "listen"),
    ] {
        let path = dir.join("bad.toml");
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(toml.as_bytes()))
            .expect("write");
        let output = std::process::Command::new(binary("tlake-gateway"))
            .arg("--config")
            .arg(&path)
            .output()
            .expect("run");
        assert_eq!(output.status.code(), Some(2), "{toml}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expect), "{toml}: {stderr}");
    }
}
