//! Back-pressure from lag against the real gateway, Kafka, compactor, Nessie
//! and S3: with the compactor stopped, a bulk `tlake send` fills the topic up
//! to the gateway's lag bound and is then refused (RESOURCE_EXHAUSTED / 429
//! with a retry hint) instead of filling Kafka; once the compactor runs, the
//! lag drains, the send finishes, and every acknowledged event is a row, once.

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use prost::Message;
use tlake_proto::v1::SendLogsRequest;
use tlake_tests::compactor::{Compactor, CompactorOptions};
use tlake_tests::events::{EventGen, otlp_request};
use tlake_tests::flow::Flow;
use tlake_tests::gateway::binary;
use tlake_tests::kafka::records_written;
use tlake_tests::lake::{catalog, wait_for_rows};
use tonic::Code;

/// `backpressure.max_lag_records` of the test's gateway.
const BOUND: i64 = 40;
/// Events sent, in requests of `BATCH` (one Kafka record each): 5× the bound.
const COUNT: usize = 20_000;
const BATCH: usize = 100;

/// The value of one sample (`name{labels}`) in a Prometheus text exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_compactor_holds_producers_back_and_every_event_lands_once_it_returns() {
    let group = format!("tlake-test-bp-{}", uuid::Uuid::new_v4().simple());
    let flow = Flow::with_gateway_toml(
        "backpressure",
        3,
        &format!(
            "[backpressure]\ncompactor_group = \"{group}\"\nmax_lag_records = {BOUND}\n\
             check_interval_ms = 200\nretry_after_ms = 300\n"
        ),
    )
    .await;
    let brokers = flow.stack.kafka_brokers.clone();
    let refusals = format!(
        "tlake_gateway_lag_refusals_total{{stream=\"{}\"}}",
        flow.stream
    );
    let lag = format!("tlake_gateway_lag_records{{stream=\"{}\"}}", flow.stream);

    // The gate admits everything while the lag cannot be read (-1), e.g. while
    // a new broker's group coordinator loads: the bound below holds from the
    // first check that reads it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while sample(&flow.gateway.metrics_text(), &lag).is_none_or(|records| records < 0.0) {
        assert!(
            Instant::now() < deadline,
            "the gateway could not read the compactor group's lag within 30 s:\n{}",
            flow.gateway.metrics_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The compactor is not running: nothing commits the group's offsets.
    let endpoint = format!("http://{}", flow.gateway.grpc);
    let sending = Command::new(binary("tlake"))
        .args(["send", "--gateway", &endpoint, "--stream", &flow.stream])
        .args(["--count", &COUNT.to_string(), "--batch", &BATCH.to_string()])
        .args(["--rate", "4000", "--give-up-after", "240"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tlake send");
    let sending = tokio::task::spawn_blocking(move || sending.wait_with_output());

    let deadline = Instant::now() + Duration::from_secs(60);
    while sample(&flow.gateway.metrics_text(), &refusals).unwrap_or(0.0) < 1.0 {
        assert!(
            Instant::now() < deadline,
            "no request was refused within 60 s of sending with the compactor stopped:\n{}",
            flow.gateway.metrics_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Requests admitted before the check saw the bound finish; after that the
    // topic must not grow while the compactor is away (nothing lowers the lag).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let held = records_written(&brokers, &flow.topic);
    let mut max_written = held;
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        max_written = max_written.max(records_written(&brokers, &flow.topic));
    }
    assert_eq!(
        max_written, held,
        "the topic grew while the stream was past its lag bound"
    );
    assert!(
        (BOUND..=2 * BOUND).contains(&held),
        "records in Kafka while refused: {held}, bound {BOUND} (overshoot is one check interval of traffic)"
    );

    // Each entry point refuses with a retryable answer and a hint.
    let mut client = flow.gateway.client().await;
    let status = client
        .send_logs(SendLogsRequest {
            stream: flow.stream.clone(),
            resource: None,
            events: EventGen::new().batch(1),
        })
        .await
        .expect_err("refused while lagging");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("behind its table"), "{status:?}");
    assert_eq!(
        status
            .metadata()
            .get("retry-after-ms")
            .and_then(|v| v.to_str().ok()),
        Some("300")
    );
    let request: ExportLogsServiceRequest = otlp_request(&["refused"], 1);
    let answer = reqwest::Client::new()
        .post(format!("http://{}/v1/logs", flow.gateway.otlp_http))
        .header("content-type", "application/x-protobuf")
        .header("x-tlake-stream", &flow.stream)
        .body(request.encode_to_vec())
        .send()
        .await
        .expect("the gateway answers HTTP");
    assert_eq!(answer.status(), reqwest::StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        answer
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()),
        Some("1"),
        "Retry-After in whole seconds, rounded up"
    );

    // The compactor comes back in the group the gateway watches.
    let mut options = CompactorOptions::new(&brokers, &flow.topic);
    options.group_id = group;
    let _compactor = Compactor::start(&options);
    let output = tokio::time::timeout(Duration::from_secs(240), sending)
        .await
        .expect("tlake send finished once the compactor returned")
        .expect("join")
        .expect("tlake send output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "tlake send failed:\n{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        COUNT.to_string(),
        "acknowledged, on stdout"
    );
    assert!(
        !stderr.contains(" 0 re-sent"),
        "refused requests must have been re-sent: {stderr}"
    );

    let catalog = catalog().await;
    let ids = wait_for_rows(&catalog, &flow.stream, COUNT, Duration::from_secs(120)).await;
    let distinct: HashSet<_> = ids.iter().collect();
    assert_eq!(
        (ids.len(), distinct.len()),
        (COUNT, COUNT),
        "rows and distinct ids == acknowledged"
    );

    // The lag drained below the bound, and the gauge says so.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = flow.gateway.metrics_text();
        let now = sample(&text, &lag);
        if now.is_some_and(|records| records < BOUND as f64) {
            let refused = sample(&text, &refusals).unwrap_or(0.0);
            eprintln!(
                "backpressure: bound {BOUND} records, held at {held} records while refused, \
                 {refused} requests refused, acked {COUNT} = rows {} = distinct {}, lag now {now:?}",
                ids.len(),
                distinct.len()
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "lag gauge never fell below the bound: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn a_bad_backpressure_config_is_refused_at_start() {
    for (toml, key) in [
        (
            "[backpressure]\ncompactor_group = \" \"\n",
            "backpressure.compactor_group",
        ),
        (
            "[backpressure]\ncheck_interval_ms = 1\n",
            "backpressure.check_interval_ms",
        ),
        ("[backpressure]\nmax_lag_records = -5\n", "max_lag_records"),
    ] {
        let dir = tlake_tests::process::temp_dir("tlake-bpcfg");
        let path = dir.join("gateway.toml");
        std::fs::write(&path, toml).expect("write");
        let output = Command::new(binary("tlake-gateway"))
            .arg("--config")
            .arg(&path)
            .arg("--check-config")
            .output()
            .expect("run tlake-gateway");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{toml}: {stderr}");
        assert!(stderr.contains(key), "{toml}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
