//! OTLP/HTTP (`POST /v1/logs`) against the real gateway and Kafka: protobuf,
//! JSON and gzip bodies arrive once and intact; every bad request gets the
//! status the OTLP specification gives it, a `google.rpc.Status` body, and
//! writes nothing.

use std::collections::HashSet;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use prost::Message;
use reqwest::StatusCode;
use tlake_proto::v1::{LogEvent, Source};
use tlake_tests::events::otlp_request;
use tlake_tests::gateway::{Gateway, GatewayOptions};
use tlake_tests::gzip;
use tlake_tests::kafka::{create_topic, read_all, unique_topic};
use tlake_tests::stack::Stack;

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

async fn setup(name: &str, options: impl FnOnce(&mut GatewayOptions)) -> (Stack, String, Gateway) {
    let stack = Stack::get();
    let topic = unique_topic(name);
    create_topic(&stack.kafka_brokers, &topic, 3).await;
    let mut gateway_options = GatewayOptions::new(&stack.kafka_brokers, &topic);
    options(&mut gateway_options);
    let gateway = Gateway::start(&gateway_options);
    (stack, topic, gateway)
}

/// What the gateway answered a POST.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    content_type: String,
    retry_after: Option<String>,
    body: Vec<u8>,
}

impl Answer {
    /// The `google.rpc.Status` message of an error answer, in either encoding.
    fn error_message(&self) -> String {
        if self.content_type == JSON {
            let value: serde_json::Value =
                serde_json::from_slice(&self.body).expect("a JSON Status body");
            value["message"].as_str().expect("message").to_owned()
        } else {
            // google.rpc.Status: code = 1, message = 2 (the gateway's RpcStatus).
            rpc_status_message(&self.body)
        }
    }
}

/// Decodes field 2 (message) of a protobuf `google.rpc.Status`.
fn rpc_status_message(body: &[u8]) -> String {
    #[derive(Clone, PartialEq, prost::Message)]
    struct Status {
        #[prost(int32, tag = "1")]
        code: i32,
        #[prost(string, tag = "2")]
        message: String,
    }
    let status = Status::decode(body).expect("a protobuf Status body");
    assert_ne!(status.code, 0, "an error Status carries a gRPC code");
    status.message
}

async fn post(
    gateway: &Gateway,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> Answer {
    let mut request = reqwest::Client::new()
        .post(format!("http://{}{path}", gateway.otlp_http))
        .timeout(Duration::from_secs(30))
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("the gateway answers HTTP");
    let header = |name| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().expect("ascii header").to_owned())
    };
    Answer {
        status: response.status(),
        content_type: header(reqwest::header::CONTENT_TYPE).unwrap_or_default(),
        retry_after: header(reqwest::header::RETRY_AFTER),
        body: response.bytes().await.expect("body").to_vec(),
    }
}

fn kafka_events(stack: &Stack, topic: &str) -> Vec<LogEvent> {
    let mut events = Vec::new();
    for record in read_all(&stack.kafka_brokers, topic) {
        let batch = record.batch();
        assert_eq!(
            batch.source,
            Source::Otlp as i32,
            "OTLP/HTTP batches are OTLP"
        );
        events.extend(batch.events);
    }
    events
}

fn assert_distinct(events: &[LogEvent], want: usize) {
    let distinct: HashSet<_> = events.iter().map(|e| e.event_id.clone()).collect();
    assert_eq!(events.len(), want, "events in Kafka");
    assert_eq!(distinct.len(), want, "distinct event ids in Kafka");
}

#[tokio::test]
async fn protobuf_json_and_gzip_bodies_arrive_once_and_intact() {
    let (stack, topic, gateway) = setup("otlphttp", |_| {}).await;

    // Binary protobuf: 2 services x 700 records; the answer is an ExportLogsServiceResponse.
    let answer = post(
        &gateway,
        "/v1/logs",
        &[("content-type", PROTOBUF)],
        otlp_request(&["checkout", "payments"], 700).encode_to_vec(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert_eq!(answer.content_type, PROTOBUF);
    let response = ExportLogsServiceResponse::decode(answer.body.as_slice()).expect("response");
    assert!(response.partial_success.is_none(), "{response:?}");

    // The same body gzip-compressed, with other services (so other event ids).
    let answer = post(
        &gateway,
        "/v1/logs",
        &[("content-type", PROTOBUF), ("content-encoding", "gzip")],
        gzip(&otlp_request(&["search"], 300).encode_to_vec()),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");

    // OTLP/JSON as the specification writes it: hex ids, 64-bit integers as strings.
    let json = r#"{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"json-svc"}}]},
        "scopeLogs":[{"scope":{"name":"my.library","version":"1.0.0"},"logRecords":[
          {"timeUnixNano":"1764633600000000000","observedTimeUnixNano":"1764633600000000001","severityNumber":17,
           "severityText":"ERROR","body":{"stringValue":"payment declined"},
           "traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
           "attributes":[{"key":"order.id","value":{"intValue":"4242"}},{"key":"retry","value":{"boolValue":true}}]},
          {"timeUnixNano":"1764633600000000002","severityNumber":9,"body":{"stringValue":"second"}}]}]}]}"#;
    let answer = post(
        &gateway,
        "/v1/logs",
        &[("content-type", "application/json; charset=utf-8")],
        json,
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert_eq!(answer.content_type, JSON);
    assert_eq!(answer.body, b"{}");

    let events = kafka_events(&stack, &topic);
    assert_distinct(&events, 700 * 2 + 300 + 2);
    let declined = events
        .iter()
        .find(|e| e.severity_text == "ERROR")
        .expect("the JSON record");
    assert_eq!(hex(&declined.trace_id), "5b8efff798038103d269b633813fc60c");
    assert_eq!(hex(&declined.span_id), "eee19b7ec3c1b174");
    assert_eq!(declined.time_unix_nano, 1_764_633_600_000_000_000);
    assert_eq!(declined.severity_number, 17);
    let keys: Vec<&str> = declined
        .attributes
        .iter()
        .map(|kv| kv.key.as_str())
        .collect();
    assert_eq!(keys, ["order.id", "retry"]);

    // A retried request carries the same ids (downstream dedup drops the copy).
    let answer = post(&gateway, "/v1/logs", &[("content-type", JSON)], json).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    let events = kafka_events(&stack, &topic);
    let distinct: HashSet<_> = events.iter().map(|e| e.event_id.clone()).collect();
    assert_eq!((events.len(), distinct.len()), (1704, 1702));

    let metrics = gateway.metrics_text();
    assert!(
        metrics.contains(r#"tlake_gateway_requests_total{rpc="http:/v1/logs",code="Ok"} 4"#),
        "{metrics}"
    );
}

/// POSTs to /v1/logs and checks the answer is `status` with a Status body that says `says`.
async fn expect_refused(
    gateway: &Gateway,
    what: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
    status: StatusCode,
    says: &str,
) {
    let answer = post(gateway, "/v1/logs", headers, body).await;
    assert_eq!(answer.status, status, "{what}: {answer:?}");
    let said = answer.error_message();
    assert!(said.contains(says), "{what}: {said:?} should say {says:?}");
    assert!(
        answer.retry_after.is_none(),
        "{what}: a final error has no Retry-After"
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn bad_requests_get_their_otlp_status_and_write_nothing() {
    let (stack, topic, gateway) = setup("otlphttp-bad", |options| {
        options.extra_toml = "[limits]\nmax_request_bytes = 65536\nmax_event_bytes = 4096\n".into();
    })
    .await;
    let good = otlp_request(&["a"], 3).encode_to_vec();
    // Protobuf truncated inside a field: not a message.
    let truncated = good[..good.len() - 3].to_vec();
    // 16 MiB of one byte gzips to ~16 KiB: under the limit as sent, far over it inflated.
    let bomb = gzip(&vec![b'a'; 16 << 20]);
    assert!(bomb.len() < 65536, "{} bytes", bomb.len());
    let large = otlp_request(&["big"], 2000).encode_to_vec();
    assert!(large.len() > 65536, "{} bytes", large.len());
    expect_refused(
        &gateway,
        "text/plain",
        &[("content-type", "text/plain")],
        good.clone(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "Content-Type text/plain",
    )
    .await;
    expect_refused(
        &gateway,
        "no content type",
        &[],
        good.clone(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "Content-Type missing",
    )
    .await;
    expect_refused(
        &gateway,
        "brotli",
        &[("content-type", PROTOBUF), ("content-encoding", "br")],
        good.clone(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "Content-Encoding br",
    )
    .await;
    expect_refused(
        &gateway,
        "truncated protobuf",
        &[("content-type", PROTOBUF)],
        truncated,
        StatusCode::BAD_REQUEST,
        "not a protobuf ExportLogsServiceRequest",
    )
    .await;
    expect_refused(
        &gateway,
        "bad JSON",
        &[("content-type", JSON)],
        b"{\"resourceLogs\": [".to_vec(),
        StatusCode::BAD_REQUEST,
        "not an OTLP/JSON ExportLogsServiceRequest",
    )
    .await;
    expect_refused(
        &gateway,
        "not gzip",
        &[("content-type", PROTOBUF), ("content-encoding", "gzip")],
        good.clone(),
        StatusCode::BAD_REQUEST,
        "gzip body",
    )
    .await;
    expect_refused(
        &gateway,
        "unknown stream",
        &[("content-type", PROTOBUF), ("x-tlake-stream", "nope")],
        good.clone(),
        StatusCode::BAD_REQUEST,
        "unknown stream \"nope\"",
    )
    .await;
    expect_refused(
        &gateway,
        "invalid stream",
        &[("content-type", PROTOBUF), ("x-tlake-stream", "Bad-Name")],
        good.clone(),
        StatusCode::BAD_REQUEST,
        "not a valid stream name",
    )
    .await;
    expect_refused(
        &gateway,
        "oversized",
        &[("content-type", PROTOBUF)],
        large,
        StatusCode::PAYLOAD_TOO_LARGE,
        "larger than the limit of 65536 bytes",
    )
    .await;
    expect_refused(
        &gateway,
        "gzip bomb",
        &[("content-type", PROTOBUF), ("content-encoding", "gzip")],
        bomb,
        StatusCode::PAYLOAD_TOO_LARGE,
        "decompressed request body is larger",
    )
    .await;
    // Other paths and methods are HTTP's own errors.
    let answer = post(
        &gateway,
        "/v1/traces",
        &[("content-type", PROTOBUF)],
        good.clone(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND, "{answer:?}");
    let response = reqwest::get(format!("http://{}/v1/logs", gateway.otlp_http))
        .await
        .expect("GET answered");
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);

    assert_eq!(
        read_all(&stack.kafka_brokers, &topic).len(),
        0,
        "a refused request reached Kafka"
    );
    // The gateway still takes a good request after all that.
    let answer = post(&gateway, "/v1/logs", &[("content-type", PROTOBUF)], good).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert_distinct(&kafka_events(&stack, &topic), 3);
}

#[tokio::test]
async fn missing_or_wrong_token_is_401_and_writes_nothing() {
    let (stack, topic, gateway) = setup("otlphttp-auth", |options| {
        options
            .env
            .push(("TLAKE_GATEWAY_AUTH__TOKEN".into(), "correct-horse".into()));
    })
    .await;
    let body = otlp_request(&["a"], 4).encode_to_vec();
    for token in [
        None,
        Some("Bearer wrong"),
        Some("correct-horse"),
        Some("Bearer correct-hors"),
    ] {
        let mut headers = vec![("content-type", PROTOBUF)];
        headers.extend(token.map(|t| ("authorization", t)));
        let answer = post(&gateway, "/v1/logs", &headers, body.clone()).await;
        assert_eq!(
            answer.status,
            StatusCode::UNAUTHORIZED,
            "{token:?}: {answer:?}"
        );
        assert!(!answer.error_message().is_empty());
    }
    assert_eq!(
        read_all(&stack.kafka_brokers, &topic).len(),
        0,
        "a refused request reached Kafka"
    );
    let answer = post(
        &gateway,
        "/v1/logs",
        &[
            ("content-type", PROTOBUF),
            ("authorization", "Bearer correct-horse"),
        ],
        body,
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert_distinct(&kafka_events(&stack, &topic), 4);
}

#[tokio::test]
async fn unreachable_kafka_is_503_with_retry_after() {
    let mut options = GatewayOptions::new("127.0.0.1:1", "nowhere");
    options.env.push((
        "TLAKE_GATEWAY_KAFKA__DELIVERY_TIMEOUT_MS".into(),
        "2000".into(),
    ));
    let gateway = Gateway::start(&options);
    let request: ExportLogsServiceRequest = otlp_request(&["a"], 2);
    let answer = post(
        &gateway,
        "/v1/logs",
        &[("content-type", JSON)],
        serde_json::to_vec(&request).expect("json"),
    )
    .await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{answer:?}");
    let wait: u64 = answer
        .retry_after
        .as_deref()
        .expect("Retry-After on a retryable error")
        .parse()
        .expect("Retry-After in seconds");
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    assert!(!answer.error_message().is_empty());
}

/// `curl` over TLS (the tests' HTTP client has no TLS of its own): the HTTP status, or 0
/// when no HTTP answer came. At most 8 s: less than the gateway's 10 s handshake timeout,
/// so a handshake queued behind a silent client would fail the request.
fn curl_status(args: &[&str]) -> u16 {
    let output = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "8",
        ])
        .args(args)
        .output()
        .expect("run curl");
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

#[tokio::test]
async fn tls_serves_otlp_http_and_a_silent_client_blocks_no_one() {
    let dir = std::env::temp_dir().join(format!("tlake-tls-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .args([
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(
        made.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let (stack, topic, gateway) = setup("otlphttp-tls", |options| {
        options.extra_toml = format!("[tls]\ncert = {:?}\nkey = {:?}\n", cert, key);
    })
    .await;
    let body = dir.join("body.pb");
    std::fs::write(&body, otlp_request(&["tls"], 5).encode_to_vec()).expect("body");
    let url = format!("https://{}/v1/logs", gateway.otlp_http);
    let data = format!("@{}", body.display());
    let cacert = cert.display().to_string();
    let post = [
        "-X",
        "POST",
        "-H",
        "content-type: application/x-protobuf",
        "--data-binary",
        &data,
    ];

    // A client that connects and never says anything must not hold up a real one.
    let silent = std::net::TcpStream::connect(gateway.otlp_http).expect("connect");
    let mut args = vec!["--cacert", &cacert, url.as_str()];
    args.extend(post);
    assert_eq!(curl_status(&args), 200, "POST over TLS");
    drop(silent);
    // An unknown certificate is refused by the client; plain HTTP gets no answer.
    let mut unverified = vec![url.as_str()];
    unverified.extend(post);
    assert_eq!(
        curl_status(&unverified),
        0,
        "curl must not trust a self-signed certificate"
    );
    let plain = url.replace("https://", "http://");
    let mut plain_args = vec![plain.as_str()];
    plain_args.extend(post);
    assert_ne!(curl_status(&plain_args), 200, "plain HTTP on the TLS port");
    assert_distinct(&kafka_events(&stack, &topic), 5);
}
