//! The producer SDK against the real gateway and the local stack's Kafka:
//! what an application logs arrives, through gateway restarts too; a full
//! queue, a shutdown and a bad token behave as configured and are counted.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tlake_producer_sdk::{
    Client, ClientBuilder, Compression, DeliveryFailure, Error, Event, OverflowPolicy, RetryPolicy,
    Severity, Shutdown, Tls,
};
use tlake_tests::assert_no_loss_no_dup;
use tlake_tests::gateway::{Gateway, GatewayOptions};
use tlake_tests::kafka::{create_topic, event_ids, read_all, unique_topic};
use tlake_tests::stack::Stack;

async fn setup(name: &str) -> (Stack, String) {
    let stack = Stack::get();
    let topic = unique_topic(name);
    create_topic(&stack.kafka_brokers, &topic, 3).await;
    (stack, topic)
}

fn client_for(endpoint: String) -> ClientBuilder {
    Client::builder()
        .endpoint(endpoint)
        .resource_from_env(false)
        .service_name("sdk-e2e")
        .retry(RetryPolicy {
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(500),
            give_up_after: Some(Duration::from_secs(60)),
        })
}

fn http(gateway: &Gateway) -> String {
    format!("http://{}", gateway.grpc)
}

fn event(i: u64) -> Event {
    Event::new(Severity::Info, "request completed")
        .attr("http.route", "/api/v1/orders/{id}")
        .attr("seq", i)
}

/// Logs `count` events and returns the ids of those accepted.
fn log_n(client: &Client, count: u64) -> Vec<[u8; 16]> {
    let mut ids = Vec::with_capacity(count as usize);
    for i in 0..count {
        let e = event(i);
        let id = *e.id().as_bytes();
        if client.log(e).is_ok() {
            ids.push(id);
        }
    }
    ids
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_arrives_complete_and_exactly_once() {
    let (stack, topic) = setup("sdk-burst").await;
    let gateway = Gateway::start(&GatewayOptions::new(&stack.kafka_brokers, &topic));
    let client = client_for(http(&gateway))
        .compression(Compression::Zstd)
        .overflow(OverflowPolicy::Block {
            timeout: Duration::from_secs(30),
        })
        .build()
        .expect("client");
    let ids = log_n(&client, 50_000);
    assert_eq!(ids.len(), 50_000, "Block policy accepts every event");
    client.flush().await.expect("every event delivered");
    let stats = client.stats();
    assert_eq!(
        (stats.sent, stats.failed, stats.dropped, stats.pending),
        (50_000, 0, 0, 0)
    );
    assert!(
        stats.requests >= 10,
        "batched into several requests: {stats:?}"
    );

    let observed = event_ids(&stack.kafka_brokers, &topic);
    assert_no_loss_no_dup(&ids, &observed, true);
    let batch = read_all(&stack.kafka_brokers, &topic)[0].batch();
    let resource = batch.resource.expect("resource");
    assert!(
        resource
            .attributes
            .iter()
            .any(|kv| kv.key == "service.name")
    );
    assert!(client.shutdown().await.is_complete());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_restarts_mid_burst_lose_nothing() {
    let (stack, topic) = setup("sdk-restart").await;
    // Env overrides the kit's `listen = 127.0.0.1:0`, so each new gateway
    // comes back on the address the client knows.
    let port = free_port();
    let mut options = GatewayOptions::new(&stack.kafka_brokers, &topic);
    options
        .env
        .push(("TLAKE_GATEWAY_LISTEN".into(), format!("127.0.0.1:{port}")));
    let mut gateway = Gateway::start(&options);
    assert_eq!(gateway.grpc.port(), port);

    let client = client_for(format!("http://127.0.0.1:{port}"))
        .max_batch_events(1_000)
        .linger(Duration::from_millis(20))
        // A small queue keeps the producer logging across both restarts.
        .queue_capacity(5_000)
        .overflow(OverflowPolicy::Block {
            timeout: Duration::from_secs(60),
        })
        .build()
        .expect("client");
    let total = 120_000u64;
    let producer = {
        let client = client.clone();
        std::thread::spawn(move || log_n(&client, total))
    };

    let wait_for_sent = |at_least: u64| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while client.stats().sent < at_least {
            assert!(Instant::now() < deadline, "stuck at {:?}", client.stats());
            std::thread::sleep(Duration::from_millis(5));
        }
    };

    // Graceful: SIGTERM drains in-flight requests, then the port is free.
    wait_for_sent(total / 4);
    gateway.sigterm();
    assert!(
        gateway.wait(Duration::from_secs(30)),
        "gateway exits cleanly"
    );
    std::thread::sleep(Duration::from_millis(300));
    gateway = Gateway::start(&options);

    // Abrupt: SIGKILL with requests in flight; some may be in Kafka unacked.
    wait_for_sent(total / 2);
    drop(gateway);
    std::thread::sleep(Duration::from_millis(300));
    let after_kill = client.stats();
    assert!(
        after_kill.sent < total,
        "the kill happened mid-burst: {after_kill:?}"
    );
    let _gateway = Gateway::start(&options);

    let ids = producer.join().expect("producer");
    assert_eq!(ids.len() as u64, total, "nothing dropped at the caller");
    client
        .flush()
        .await
        .expect("every event delivered after the restarts");
    let stats = client.stats();
    assert_eq!(
        (stats.sent, stats.failed, stats.dropped),
        (total, 0, 0),
        "{stats:?}"
    );
    assert!(stats.retried > 0, "the outages were retried: {stats:?}");

    let observed = event_ids(&stack.kafka_brokers, &topic);
    // Duplicates may reach Kafka (a killed request can be written but not
    // acknowledged); they carry the same ids, and nothing else arrives.
    assert_no_loss_no_dup(&ids, &observed, false);
    let sent: HashSet<_> = ids.iter().collect();
    assert!(
        observed.iter().all(|id| sent.contains(id)),
        "only our events"
    );
    eprintln!(
        "restart test: {} events, {} records in Kafka ({} duplicates), {stats:?}",
        total,
        observed.len(),
        observed.len() as u64 - total
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_applies_the_policy_and_counts() {
    let (stack, topic) = setup("sdk-full").await;
    let gateway = Gateway::start(&GatewayOptions::new(&stack.kafka_brokers, &topic));
    // Batches are bigger than the queue and linger is long, so nothing
    // leaves the queue until flush(): exactly `capacity` events fit.
    let base = || {
        client_for(http(&gateway))
            .queue_capacity(1_000)
            .max_batch_events(5_000)
            .linger(Duration::from_secs(30))
    };

    let dropping = base()
        .overflow(OverflowPolicy::Drop)
        .build()
        .expect("client");
    let mut accepted = Vec::new();
    let mut refused = 0;
    for i in 0..1_500 {
        let e = event(i);
        let id = *e.id().as_bytes();
        match dropping.log(e) {
            Ok(()) => accepted.push(id),
            Err(Error::QueueFull {
                capacity: 1_000, ..
            }) => refused += 1,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((accepted.len(), refused), (1_000, 500));
    assert_eq!(dropping.stats().dropped, 500);
    dropping
        .flush()
        .await
        .expect("the accepted ones are delivered");

    let blocking = base()
        .overflow(OverflowPolicy::Block {
            timeout: Duration::from_millis(200),
        })
        .build()
        .expect("client");
    accepted.extend(log_n(&blocking, 1_000));
    let started = Instant::now();
    let err = blocking.log(event(0)).expect_err("still full");
    assert!(started.elapsed() >= Duration::from_millis(200), "it waited");
    assert!(matches!(err, Error::BlockTimeout { .. }), "{err:?}");
    assert!(err.retryable());
    assert_eq!(blocking.stats().dropped, 1);
    blocking.flush().await.expect("delivered");
    // Room is made as soon as batches go out: the same call now succeeds.
    let e = event(1);
    let id = *e.id().as_bytes();
    blocking.log(e).expect("room again");
    accepted.push(id);
    let outcome = blocking.shutdown().await;
    assert_eq!(outcome.stats().sent, 1_001);

    let observed = event_ids(&stack.kafka_brokers, &topic);
    assert_no_loss_no_dup(&accepted, &observed, true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_delivers_or_reports_every_queued_event() {
    let (stack, topic) = setup("sdk-shutdown").await;
    let gateway = Gateway::start(&GatewayOptions::new(&stack.kafka_brokers, &topic));
    let client = client_for(http(&gateway))
        .linger(Duration::from_secs(30))
        .max_batch_events(2_000)
        .build()
        .expect("client");
    let ids = log_n(&client, 30_000);
    assert_eq!(ids.len(), 30_000);
    assert!(client.stats().pending > 0, "events are still queued");
    let outcome = client.shutdown().await;
    let Shutdown::Complete(stats) = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!((stats.accepted, stats.sent), (30_000, 30_000));
    assert_eq!(client.log(event(0)), Err(Error::Closed));
    assert_no_loss_no_dup(&ids, &event_ids(&stack.kafka_brokers, &topic), true);

    // With no gateway at all, the same shutdown reports every event failed
    // within its timeout instead of hanging or losing count.
    let nowhere = client_for(format!("http://127.0.0.1:{}", free_port()))
        .shutdown_timeout(Duration::from_secs(1))
        .build()
        .expect("client");
    log_n(&nowhere, 500);
    let started = Instant::now();
    let outcome = nowhere.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let Shutdown::Incomplete { stats, last_error } = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(
        (stats.accepted, stats.sent, stats.failed, stats.pending),
        (500, 0, 500, 0)
    );
    assert!(
        matches!(
            last_error,
            Some(Error::ShutdownTimeout | Error::Unavailable { .. })
        ),
        "{last_error:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_is_a_typed_error_not_retried() {
    let (stack, topic) = setup("sdk-auth").await;
    let mut options = GatewayOptions::new(&stack.kafka_brokers, &topic);
    options
        .env
        .push(("TLAKE_GATEWAY_AUTH__TOKEN".into(), "correct-horse".into()));
    let gateway = Gateway::start(&options);

    let failures: Arc<Mutex<Vec<DeliveryFailure>>> = Arc::default();
    let hook = failures.clone();
    let client = client_for(http(&gateway))
        .bearer_token("wrong-horse")
        .on_failure(move |f| hook.lock().expect("lock").push(f.clone()))
        .build()
        .expect("client");
    log_n(&client, 10);
    let started = Instant::now();
    let err = client.flush().await.expect_err("refused");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "not retried for long"
    );
    let Error::Undelivered { failed: 10, last } = &err else {
        panic!("{err:?}");
    };
    assert!(matches!(**last, Error::Unauthenticated { .. }), "{last:?}");
    assert!(!last.retryable());
    let stats = client.stats();
    assert_eq!(
        (stats.failed, stats.retried, stats.requests),
        (10, 0, 1),
        "{stats:?}"
    );
    assert!(matches!(
        client.last_error(),
        Some(Error::Unauthenticated { .. })
    ));
    {
        let failures = failures.lock().expect("lock");
        assert_eq!(failures.len(), 1);
        assert!(matches!(failures[0].error, Error::Unauthenticated { .. }));
    }
    assert!(!client.shutdown().await.is_complete());
    assert!(
        read_all(&stack.kafka_brokers, &topic).is_empty(),
        "nothing reached Kafka"
    );

    let good = client_for(http(&gateway))
        .bearer_token("correct-horse")
        .build()
        .expect("client");
    let ids = log_n(&good, 10);
    good.flush().await.expect("the right token is accepted");
    assert_no_loss_no_dup(&ids, &event_ids(&stack.kafka_brokers, &topic), true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_gzip_and_a_private_ca() {
    let (stack, topic) = setup("sdk-tls").await;
    let dir = std::env::temp_dir().join(format!("tlake-sdk-tls-{}", uuid::Uuid::new_v4().simple()));
    let pki = Pki::create(&dir);
    let mut options = GatewayOptions::new(&stack.kafka_brokers, &topic);
    options.extra_toml = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        pki.cert.display(),
        pki.key.display()
    );
    let gateway = Gateway::start(&options);
    let client = client_for(format!("https://localhost:{}", gateway.grpc.port()))
        .tls(Tls::new().ca_pem(std::fs::read(&pki.ca).expect("ca")))
        .compression(Compression::Gzip)
        .build()
        .expect("client");
    let ids = log_n(&client, 2_000);
    client.flush().await.expect("delivered over TLS");
    assert_no_loss_no_dup(&ids, &event_ids(&stack.kafka_brokers, &topic), true);

    // A client that does not trust the CA never gets through.
    let untrusting = client_for(format!("https://localhost:{}", gateway.grpc.port()))
        .tls(Tls::new().ca_pem(std::fs::read(&pki.other_ca).expect("ca")))
        .retry(RetryPolicy {
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(100),
            give_up_after: Some(Duration::from_millis(500)),
        })
        .build()
        .expect("client");
    log_n(&untrusting, 1);
    assert!(untrusting.flush().await.is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A throwaway CA and a server certificate for `localhost`, made with the
/// system's `openssl` (the tests add no certificate crate of their own).
struct Pki {
    ca: std::path::PathBuf,
    other_ca: std::path::PathBuf,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
}

impl Pki {
    fn create(dir: &std::path::Path) -> Self {
        std::fs::create_dir_all(dir).expect("dir");
        let run = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        for name in ["ca", "other-ca"] {
            let key = format!("{name}.key");
            let pem = format!("{name}.pem");
            let mut args = vec!["req", "-x509"];
            args.extend(ec);
            args.extend([
                "-keyout",
                &key,
                "-out",
                &pem,
                "-days",
                "1",
                "-subj",
                "/CN=tlake test ca",
            ]);
            run(&args);
        }
        let mut args = vec!["req"];
        args.extend(ec);
        args.extend([
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        run(&args);
        std::fs::write(
            dir.join("san.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .expect("ext");
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "1",
            "-extfile",
            "san.ext",
        ]);
        Self {
            ca: dir.join("ca.pem"),
            other_ca: dir.join("other-ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        }
    }
}
