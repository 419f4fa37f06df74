//! `tlake send` (the producer SDK underneath) against the real gateway and
//! Kafka: a bulk send waits out a gateway restart and every event lands, by
//! distinct id; what cannot be delivered ends in a non-zero exit that says why.

use std::collections::HashSet;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use tlake_tests::gateway::{Gateway, GatewayOptions, binary};
use tlake_tests::kafka::{create_topic, event_ids, unique_topic};
use tlake_tests::stack::Stack;

/// A port that was free a moment ago, so a restarted gateway can take it again.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn gateway_on(stack: &Stack, topic: &str, port: u16) -> Gateway {
    let mut options = GatewayOptions::new(&stack.kafka_brokers, topic);
    options
        .env
        .push(("TLAKE_GATEWAY_LISTEN".into(), format!("127.0.0.1:{port}")));
    Gateway::start(&options)
}

fn tlake_send(args: &[&str]) -> Command {
    let mut command = Command::new(binary("tlake"));
    command
        .arg("send")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Runs to the end in a blocking thread, at most `timeout`.
async fn finish(mut command: Command, timeout: Duration) -> Output {
    let child = command.spawn().expect("start tlake send");
    tokio::time::timeout(
        timeout,
        tokio::task::spawn_blocking(move || child.wait_with_output()),
    )
    .await
    .expect("tlake send finished in time")
    .expect("join")
    .expect("tlake send output")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_send_waits_out_a_gateway_restart_and_every_event_lands() {
    let stack = Stack::get();
    let topic = unique_topic("clisend");
    create_topic(&stack.kafka_brokers, &topic, 3).await;
    let port = free_port();
    let mut gateway = gateway_on(&stack, &topic, port);
    let endpoint = format!("http://127.0.0.1:{port}");
    let count = 20_000;
    // 4000 events/s: the send lasts ~5 s, and the gateway is away for 2 of them.
    let child = tlake_send(&[
        "--gateway",
        &endpoint,
        "--count",
        &count.to_string(),
        "--batch",
        "500",
        "--rate",
        "4000",
        "--give-up-after",
        "60",
    ]);
    let sending = tokio::spawn(finish(child, Duration::from_secs(120)));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    gateway.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _gateway = gateway_on(&stack, &topic, port);
    let output = sending.await.expect("join");
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert!(output.status.success(), "tlake send failed:\n{stderr}");
    assert_eq!(stdout.trim(), count.to_string(), "acknowledged, on stdout");
    assert!(
        stderr.contains(&format!("{count} acknowledged")) && stderr.contains("0 failed, 0 dropped"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(" 0 re-sent"),
        "the outage must have made the SDK re-send: {stderr}"
    );
    // Every event once by id (a re-sent request whose first try did land is a duplicate
    // record that the compactor removes; none may be missing).
    let ids = event_ids(&stack.kafka_brokers, &topic);
    let distinct: HashSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), count, "distinct event ids in Kafka");
}

#[tokio::test]
async fn an_unreachable_gateway_fails_with_a_reason_and_exit_1() {
    let started = Instant::now();
    let output = finish(
        tlake_send(&[
            "--gateway",
            "http://127.0.0.1:1",
            "--count",
            "10",
            "--give-up-after",
            "2",
        ]),
        Duration::from_secs(60),
    )
    .await;
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("10 of 10 events were not acknowledged"),
        "{stderr}"
    );
    assert_eq!(text(&output.stdout).trim(), "0");
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn refused_events_and_bad_flags_are_clear_errors() {
    let stack = Stack::get();
    let topic = unique_topic("clisend-bad");
    create_topic(&stack.kafka_brokers, &topic, 1).await;
    let gateway = gateway_on(&stack, &topic, free_port());
    let endpoint = format!("http://{}", gateway.grpc);
    let output = finish(
        tlake_send(&["--gateway", &endpoint, "--stream", "nope", "--count", "5"]),
        Duration::from_secs(60),
    )
    .await;
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("5 of 5 events were not acknowledged"),
        "{stderr}"
    );
    assert!(stderr.contains("unknown stream"), "{stderr}");
    for (flags, says) in [
        (vec!["--rate", "0"], "--rate must be a positive number"),
        (vec!["--batch", "0"], "--batch must be at least 1"),
        (
            vec!["--gateway", "127.0.0.1:4317"],
            "must start with http:// or https://",
        ),
    ] {
        let output = finish(tlake_send(&flags), Duration::from_secs(30)).await;
        let stderr = text(&output.stderr);
        assert!(!output.status.success(), "{flags:?}: {stderr}");
        assert!(stderr.contains(says), "{flags:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{flags:?}: {stderr}");
    }
    assert!(event_ids(&stack.kafka_brokers, &topic).is_empty());
}
