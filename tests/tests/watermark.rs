//! Watermarks against the real gateway, Kafka, compactor, Nessie and S3: a
//! SendLogs OK says where its records were written, the Watermark RPC (and
//! `GET /v1/watermark`) says how far the table is committed and waits for
//! positions, and the SDK's `flush_until_queryable` returns only when a plain
//! DuckDB query sees every event logged — across a compactor kill, with the
//! watermark never going back.

use std::collections::BTreeMap;
use std::time::Duration;

use tlake_producer_sdk::{Client, Error, Event, RetryPolicy, Severity};
use tlake_proto::v1::{Position, SendLogsRequest, WatermarkRequest};
use tlake_tests::compactor::{Compactor, CompactorOptions};
use tlake_tests::events::EventGen;
use tlake_tests::flow::Flow;
use tlake_tests::kafka::records_written;
use tlake_tests::lake::duckdb_csv;
use tonic::Code;

fn client(flow: &Flow) -> Client {
    Client::builder()
        .endpoint(format!("http://{}", flow.gateway.grpc))
        .stream(flow.stream.clone())
        .resource_from_env(false)
        .service_name("watermark-e2e")
        .retry(RetryPolicy {
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(500),
            give_up_after: Some(Duration::from_secs(60)),
        })
        .build()
        .expect("client")
}

fn log(client: &Client, from: u64, count: u64) {
    for i in from..from + count {
        client
            .log(Event::new(Severity::Info, "order placed").attr("seq", i))
            .expect("queued");
    }
}

/// rows and distinct ids of the stream's table, by the seed's DuckDB.
fn duckdb_counts(stream: &str) -> (u64, u64) {
    let rows = duckdb_csv(&format!(
        "SELECT count(*), count(DISTINCT event_id) FROM telemetrylake.logs.\"{stream}\""
    ));
    let parse = |i: usize| rows[0][i].parse().expect("a count");
    (parse(0), parse(1))
}

/// The committed watermark by the gateway's HTTP endpoint (the test's
/// independent read of the same answer).
async fn http_watermark(flow: &Flow, query: &str) -> (reqwest::StatusCode, serde_json::Value) {
    let response = reqwest::Client::new()
        .get(format!(
            "http://{}/v1/watermark?stream={}{query}",
            flow.gateway.otlp_http, flow.stream
        ))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("the gateway answers HTTP");
    let status = response.status();
    let body = response.json().await.expect("a JSON body");
    (status, body)
}

/// The newest event time in the stream's table by DuckDB, in ns.
fn duckdb_newest_event_ns(stream: &str) -> u64 {
    let rows = duckdb_csv(&format!(
        "SELECT epoch_us(max(event_time)) FROM telemetrylake.logs.\"{stream}\""
    ));
    rows[0][0].parse::<u64>().expect("a time") * 1000
}

fn committed_sum(body: &serde_json::Value) -> i64 {
    body["committed"]
        .as_array()
        .expect("committed")
        .iter()
        .map(|p| p["offset"].as_i64().expect("offset"))
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn flush_until_queryable_returns_when_duckdb_sees_every_event() {
    let group = format!("tlake-test-wm-{}", uuid::Uuid::new_v4().simple());
    let flow = Flow::with_gateway_toml(
        "watermark",
        3,
        &format!("[backpressure]\ncompactor_group = \"{group}\"\n"),
    )
    .await;
    let mut options = CompactorOptions::new(&flow.stack.kafka_brokers, &flow.topic);
    options.group_id = group;
    let mut compactor = Compactor::start(&options);
    let sdk = client(&flow);

    // Twice: each time DuckDB sees everything the moment the call returns.
    let mut sent = 0;
    let mut previous = 0;
    for round in 0..2 {
        log(&sdk, sent, 3000);
        sent += 3000;
        let queryable = sdk
            .flush_until_queryable(Duration::from_secs(90))
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(duckdb_counts(&flow.stream), (sent, sent), "round {round}");
        // Only this client writes the stream: the table's newest is its newest.
        assert_eq!(
            queryable.committed_event_time,
            Some(
                std::time::UNIX_EPOCH + Duration::from_nanos(duckdb_newest_event_ns(&flow.stream))
            ),
            "round {round}"
        );
        let (status, body) = http_watermark(&flow, "").await;
        assert_eq!(status, reqwest::StatusCode::OK, "{body}");
        let committed = committed_sum(&body);
        assert!(
            committed >= previous,
            "the watermark went back: {previous} → {committed}"
        );
        assert_eq!(
            committed,
            records_written(&flow.stack.kafka_brokers, &flow.topic),
            "every record written is committed: {body}"
        );
        previous = committed;
        // The event time committed through: the table's newest, as DuckDB sees it.
        assert_eq!(
            body["committed_event_time_unix_nano"].as_u64(),
            Some(duckdb_newest_event_ns(&flow.stream)),
            "round {round}: {body}"
        );
    }

    // The compactor away: delivered, durable, not yet queryable — said so in time.
    compactor.kill();
    log(&sdk, sent, 100);
    sent += 100;
    let err = sdk
        .flush_until_queryable(Duration::from_secs(2))
        .await
        .expect_err("nothing commits while the compactor is down");
    assert!(matches!(err, Error::NotYetQueryable { .. }), "{err}");
    assert!(err.retryable());
    assert_eq!(sdk.stats().sent, sent, "delivered all the same");

    // Back: the table catches up, the watermark moved only forward.
    let _compactor = Compactor::start(&options);
    sdk.flush_until_queryable(Duration::from_secs(90))
        .await
        .expect("queryable once the compactor is back");
    assert_eq!(duckdb_counts(&flow.stream), (sent, sent));
    let (_, body) = http_watermark(&flow, "").await;
    assert!(committed_sum(&body) > previous, "{body}");
    assert_eq!(
        body["committed_event_time_unix_nano"].as_u64(),
        Some(duckdb_newest_event_ns(&flow.stream)),
        "after the restart: {body}"
    );
    eprintln!(
        "watermark: {sent} events sent = rows = distinct ids; committed {}",
        body["committed"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn send_logs_says_where_it_wrote_and_bad_watermark_requests_are_refused() {
    let flow = Flow::new("wmrpc", 3).await;
    let mut client = flow.gateway.client().await;
    let answer = client
        .send_logs(SendLogsRequest {
            stream: flow.stream.clone(),
            resource: None,
            events: EventGen::new().batch(50),
        })
        .await
        .expect("OK")
        .into_inner();
    assert_eq!(answer.accepted_events, 50);
    let written: BTreeMap<i32, i64> = answer
        .written
        .iter()
        .map(|p| (p.partition, p.offset))
        .collect();
    assert!(!written.is_empty(), "an OK says where it wrote: {answer:?}");
    assert!(written.keys().all(|p| (0..3).contains(p)), "{written:?}");

    // No compactor runs for this group: nothing is committed, and a wait times out.
    let answer = client
        .watermark(WatermarkRequest {
            stream: flow.stream.clone(),
            wait_for: answer.written.clone(),
            timeout_ms: 500,
        })
        .await
        .expect("OK")
        .into_inner();
    assert!(!answer.reached);
    assert_eq!(
        answer.committed_event_time_unix_nano, 0,
        "nothing committed yet"
    );
    assert_eq!(answer.committed.len(), 3, "{answer:?}");
    assert!(answer.committed.iter().all(|p| p.offset == 0), "{answer:?}");

    for (request, says) in [
        (
            WatermarkRequest {
                stream: "nope".into(),
                ..Default::default()
            },
            "unknown stream",
        ),
        (
            WatermarkRequest {
                stream: flow.stream.clone(),
                wait_for: vec![Position {
                    partition: 7,
                    offset: 1,
                }],
                timeout_ms: 0,
            },
            "partition 7",
        ),
    ] {
        let status = client.watermark(request).await.expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(says), "{status:?}");
    }
    let (status, body) = http_watermark(&flow, "&wait_for=0:1,x").await;
    assert_eq!(status, reqwest::StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"].as_str().unwrap_or("").contains("\"x\""),
        "{body}"
    );
    let (status, body) = http_watermark(&flow, "&timeout_ms=0").await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    assert_eq!(body["reached"], true, "nothing waited for: {body}");
}

/// OTLP's Export answer has no field for positions: both of its transports
/// say where the records went in the `x-tlake-written` header, and waiting on
/// those positions ends with DuckDB seeing every record.
#[tokio::test(flavor = "multi_thread")]
async fn otlp_exports_say_where_they_wrote_and_can_wait_until_queryable() {
    use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
    use prost::Message as _;
    use tlake_proto::positions::{self, WRITTEN_HEADER};
    use tlake_tests::events::otlp_request;

    let group = format!("tlake-test-wmotlp-{}", uuid::Uuid::new_v4().simple());
    let flow = Flow::with_gateway_toml(
        "wmotlp",
        3,
        &format!("[backpressure]\ncompactor_group = \"{group}\"\n"),
    )
    .await;
    let mut options = CompactorOptions::new(&flow.stack.kafka_brokers, &flow.topic);
    options.group_id = group;
    let _compactor = Compactor::start(&options);

    // gRPC: the positions come back in the answer's metadata.
    let mut otlp = LogsServiceClient::new(flow.gateway.channel().await);
    let mut request = tonic::Request::new(otlp_request(&["checkout", "payments"], 400));
    request.metadata_mut().insert(
        tlake_ingest_gateway::service::STREAM_HEADER,
        flow.stream.parse().expect("ascii"),
    );
    let answer = otlp.export(request).await.expect("OK");
    let grpc_written = answer
        .metadata()
        .get(WRITTEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .expect("an Export answer says where it wrote");
    // HTTP: in the answer's header.
    let response = reqwest::Client::new()
        .post(format!("http://{}/v1/logs", flow.gateway.otlp_http))
        .header("content-type", "application/x-protobuf")
        .header(tlake_ingest_gateway::service::STREAM_HEADER, &flow.stream)
        .body(otlp_request(&["search"], 300).encode_to_vec())
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("the gateway answers HTTP");
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let http_written = response
        .headers()
        .get(WRITTEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .expect("a POST /v1/logs answer says where it wrote");

    let mut written = positions::parse(&grpc_written).expect("partition:offset");
    positions::fold_highest(
        &mut written,
        positions::parse(&http_written).expect("partition:offset"),
    );
    assert!(
        !written.is_empty() && written.keys().all(|p| (0..3).contains(p)),
        "{grpc_written} / {http_written}"
    );
    let (status, body) = http_watermark(
        &flow,
        &format!(
            "&wait_for={}&timeout_ms=30000",
            positions::to_text(&written)
        ),
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    assert_eq!(body["reached"], true, "committed within 30 s: {body}");
    // Reached means queryable: 800 + 300 records, each once.
    assert_eq!(duckdb_counts(&flow.stream), (1100, 1100));
}
