//! The official OpenTelemetry Python SDK (deploy/local/otel-python) as the
//! client: stdlib `logging` through its LoggingHandler and OTLP exporters,
//! over OTLP/HTTP (plain and gzip) and OTLP/gRPC, into the gateway, Kafka,
//! the compactor and the stream's Iceberg table. Every record the SDK
//! reports exported is a row, once, with its resource and attributes.

use std::process::Command;
use std::time::Duration;

use tlake_tests::compactor::{Compactor, CompactorOptions};
use tlake_tests::flow::Flow;
use tlake_tests::lake::{catalog, duckdb_csv, wait_for_rows};
use tlake_tests::stack::repo_root;

const PER_CLIENT: usize = 2000;

/// The venv's python (created on first use by deploy/local/otel-python/venv).
fn otel_python() -> String {
    let output = Command::new(repo_root().join("deploy/local/otel-python/venv"))
        .output()
        .expect("run deploy/local/otel-python/venv");
    assert!(
        output.status.success(),
        "the OpenTelemetry Python venv could not be made:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("a path")
        .trim()
        .to_owned()
}

/// Runs the SDK sender; returns its JSON summary after checking every record was exported.
fn send(python: &str, args: &[&str]) -> serde_json::Value {
    let output = Command::new(python)
        .arg(repo_root().join("deploy/local/otel-python/send_logs.py"))
        .args(args)
        .output()
        .expect("run send_logs.py");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "send_logs.py {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).expect("a JSON summary line")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_opentelemetry_python_sdk_lands_every_record_once() {
    let python = otel_python();
    let flow = Flow::new("otelpy", 3).await;
    let _compactor = Compactor::start(&CompactorOptions::new(
        &flow.stack.kafka_brokers,
        &flow.topic,
    ));
    let http = format!("http://{}", flow.gateway.otlp_http);
    let grpc = format!("http://{}", flow.gateway.grpc);
    let count = PER_CLIENT.to_string();
    let clients: [(&str, &str, &str, bool); 3] = [
        ("otel-http", "http", &http, false),
        ("otel-http-gzip", "http", &http, true),
        ("otel-grpc", "grpc", &grpc, false),
    ];
    for (service, protocol, endpoint, gzip) in clients {
        let mut args = vec![
            "--protocol",
            protocol,
            "--endpoint",
            endpoint,
            "--count",
            &count,
            "--stream",
            &flow.stream,
            "--service",
            service,
        ];
        if gzip {
            args.push("--gzip");
        }
        let summary = send(&python, &args);
        assert_eq!(summary["exported"], PER_CLIENT, "{service}: {summary}");
    }

    let total = PER_CLIENT * clients.len();
    let ids = wait_for_rows(
        &catalog().await,
        &flow.stream,
        total,
        Duration::from_secs(90),
    )
    .await;
    let distinct: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(
        (ids.len(), distinct.len()),
        (total, total),
        "rows and distinct ids for {total} exported records"
    );

    // Per client: every `seq` once, its resource and the logging level kept.
    let rows = duckdb_csv(&format!(
        "SELECT service, count(*), count(DISTINCT event_id), count(DISTINCT attributes['seq']), \
                min(CAST(attributes['seq'] AS INTEGER)), max(CAST(attributes['seq'] AS INTEGER)), \
                count(*) FILTER (WHERE severity_text = 'WARN' OR severity_text = 'WARNING'), \
                count(*) FILTER (WHERE resource['deployment.environment'] = 'test'), \
                count(*) FILTER (WHERE body = 'otel-python record ' || attributes['seq']) \
         FROM telemetrylake.logs.\"{}\" GROUP BY service ORDER BY service",
        flow.stream
    ));
    let n = PER_CLIENT.to_string();
    let want = |service: &str| {
        vec![
            service.to_owned(),
            n.clone(),
            n.clone(),
            n.clone(),
            "0".to_owned(),
            (PER_CLIENT - 1).to_string(),
            (PER_CLIENT / 10).to_string(),
            n.clone(),
            n.clone(),
        ]
    };
    assert_eq!(
        rows,
        vec![want("otel-grpc"), want("otel-http"), want("otel-http-gzip")]
    );
}
