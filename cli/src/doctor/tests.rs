//! doctor against the fake API of `fake`: one healthy namespace, then one fault at a time.

use serde_json::json;

use super::cluster::{Cluster, ExecReply};
use super::fake::{Fake, FakeExec, NS, doctor, not_found, row, statuses};
use super::{Status, diagnose};

#[tokio::test]
async fn healthy_namespace_is_all_ok() {
    let (report, paths, ran) = doctor(Fake::healthy()).await;
    println!("{}", report.table());

    assert!(!report.failed());
    assert!(
        statuses(&report, Status::Fail).is_empty(),
        "{}",
        report.table()
    );
    assert!(
        statuses(&report, Status::Warn).is_empty(),
        "{}",
        report.table()
    );
    let names: Vec<&str> = report.checks.iter().map(|c| c.check.as_str()).collect();
    assert_eq!(
        names,
        [
            "namespace",
            "pods kafka",
            "pods minio",
            "pods nessie",
            "pods duckdb",
            "pods ingest-gateway",
            "pods compactor",
            "service kafka",
            "service kafka-headless",
            "service minio",
            "service minio-console",
            "service nessie",
            "service duckdb",
            "service ingest-gateway",
            "service compactor",
            "kafka topics",
            "nessie /api/v2/config",
            "object store",
            "minio /minio/health/live",
            "bucket telemetrylake",
        ]
    );
    assert_eq!(
        row(&report, "nessie /api/v2/config").detail,
        "defaultBranch main, API v1–v2"
    );
    assert_eq!(row(&report, "pods kafka").detail, "kafka-0 ready");
    assert!(paths.contains(&format!(
        "/api/v1/namespaces/{NS}/services/nessie:19120/proxy/api/v2/config"
    )));
    assert!(paths.contains(&format!(
        "/api/v1/namespaces/{NS}/services/minio:9000/proxy/minio/health/live"
    )));
    // The seed's `kafka-topics.sh --list` in the broker; `mc ls` of the bucket in MinIO.
    assert!(ran.iter().any(|(pod, container, cmd)| pod == "kafka-0"
        && container == "kafka"
        && cmd[..2] == ["/bin/bash", "-c"]
        && cmd[2].ends_with(
            "exec /opt/kafka/bin/kafka-topics.sh --list --bootstrap-server localhost:9092"
        )));
    assert!(ran.iter().any(|(pod, container, cmd)| pod == "minio-0"
        && container == "minio"
        && cmd.last().map(String::as_str) == Some("telemetrylake")));

    let json: serde_json::Value = serde_json::from_str(&report.json()).expect("valid JSON");
    assert_eq!(json["ok"], true);
    assert_eq!(json["counts"]["fail"], 0);
    assert_eq!(json["checks"][0]["check"], "namespace");
    assert_eq!(json["checks"][0]["status"], "ok");
}

#[tokio::test]
async fn crash_looping_kafka_fails_with_its_logs_to_read() {
    let mut fake = Fake::healthy();
    let pod = fake.pod_mut("kafka-0");
    pod["status"]["conditions"][1]["status"] = json!("False");
    pod["status"]["containerStatuses"][0] = json!({
        "name": "kafka", "image": "apache/kafka:4.1.1", "imageID": "", "ready": false, "restartCount": 5,
        "state": { "waiting": { "reason": "CrashLoopBackOff", "message": "back-off 2m40s restarting failed container" } },
        "lastState": { "terminated": { "exitCode": 1, "reason": "Error" } }
    });
    fake.endpoints_not_ready("kafka");
    let (report, _, ran) = doctor(fake).await;
    println!("{}", report.table());

    assert!(report.failed());
    let pods = row(&report, "pods kafka");
    assert_eq!(pods.status, Status::Fail);
    assert_eq!(
        pods.detail,
        "kafka-0: container kafka CrashLoopBackOff (5 restarts, last exit 1 Error)"
    );
    assert!(
        pods.hint
            .contains("kubectl logs -n telemetry-lake kafka-0 -c kafka --previous"),
        "{}",
        pods.hint
    );
    assert!(
        pods.hint.contains("KRaft"),
        "the seed's 'Kafka not starting' advice: {}",
        pods.hint
    );
    assert_eq!(row(&report, "service kafka").status, Status::Fail);
    // Not run in a pod that is not ready: unknown, not failed.
    let topics = row(&report, "kafka topics");
    assert_eq!(topics.status, Status::Warn);
    assert_eq!(topics.detail, "not checked: kafka-0 is not ready");
    assert!(!ran.iter().any(|(pod, ..)| pod == "kafka-0"));
    assert_eq!(
        statuses(&report, Status::Fail),
        ["pods kafka", "service kafka"]
    );
}

#[tokio::test]
async fn missing_service_fails() {
    let mut fake = Fake::healthy();
    Fake::remove(&mut fake.services, "kafka-headless");
    let (report, _, _) = doctor(fake).await;

    assert!(report.failed());
    let svc = row(&report, "service kafka-headless");
    assert_eq!(svc.status, Status::Fail);
    assert_eq!(svc.detail, "not found");
    assert!(svc.hint.contains("helm upgrade --install"), "{}", svc.hint);
    assert_eq!(statuses(&report, Status::Fail), ["service kafka-headless"]);
}

#[tokio::test]
async fn nessie_answering_503_fails_with_the_seeds_advice() {
    let mut fake = Fake::healthy();
    fake.proxy.insert(
        "nessie:19120/api/v2/config".into(),
        (
            503,
            json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 503,
                    "message": "no endpoints available for service \"nessie\"", "reason": "ServiceUnavailable" })
            .to_string(),
        ),
    );
    let (report, _, _) = doctor(fake).await;
    println!("{}", report.table());

    let nessie = row(&report, "nessie /api/v2/config");
    assert_eq!(nessie.status, Status::Fail);
    assert_eq!(
        nessie.detail,
        "HTTP 503 through the service proxy: no endpoints available for service \"nessie\""
    );
    assert!(
        nessie.hint.contains("management port 9000"),
        "{}",
        nessie.hint
    );
    assert!(
        nessie
            .hint
            .contains("kubectl logs -n telemetry-lake deployment/nessie"),
        "{}",
        nessie.hint
    );
    assert!(report.failed());
}

#[tokio::test]
async fn unreachable_api_server_is_one_clear_failure() {
    let service = tower::service_fn(|_: http::Request<kube::client::Body>| async {
        Err::<http::Response<kube::client::Body>, _>(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "tcp connect error: Connection refused (os error 111)",
        ))
    });
    let client = kube::Client::new(service, NS);
    let report = diagnose(
        &Cluster::new(client, NS),
        &FakeExec::default(),
        "https://127.0.0.1:6443/",
        NS,
    )
    .await;
    println!("{}", report.table());

    assert!(report.failed());
    assert_eq!(report.checks.len(), 1, "{}", report.table());
    let api = &report.checks[0];
    assert_eq!(api.check, "kubernetes api");
    assert_eq!(api.status, Status::Fail);
    assert!(
        api.detail
            .starts_with("cannot reach the API server https://127.0.0.1:6443/"),
        "{}",
        api.detail
    );
    assert!(api.detail.contains("Connection refused"), "{}", api.detail);
    assert!(api.hint.contains("--context"), "{}", api.hint);
}

#[tokio::test]
async fn closed_port_through_a_real_client_is_reported_not_panicked() {
    // A real kube client and connector against a loopback port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let mut config = kube::Config::new(format!("http://127.0.0.1:{port}").parse().expect("uri"));
    config.default_retry = false;
    let client = {
        let _ = rustls::crypto::ring::default_provider().install_default();
        kube::Client::try_from(config)
    }
    .expect("client");
    let report = diagnose(
        &Cluster::new(client, NS),
        &FakeExec::default(),
        "http://127.0.0.1",
        NS,
    )
    .await;

    assert_eq!(report.checks.len(), 1, "{}", report.table());
    assert_eq!(report.checks[0].status, Status::Fail);
    assert!(
        report.checks[0]
            .detail
            .contains("cannot reach the API server"),
        "{}",
        report.checks[0].detail
    );
}

#[tokio::test]
async fn missing_namespace_stops_at_the_first_row() {
    let mut fake = Fake::healthy();
    fake.namespace_exists = false;
    let (report, paths, _) = doctor(fake).await;

    assert_eq!(report.checks.len(), 1);
    assert_eq!(report.checks[0].check, "namespace");
    assert_eq!(report.checks[0].status, Status::Fail);
    assert!(report.checks[0].hint.contains("--namespace"));
    assert_eq!(paths, [format!("/api/v1/namespaces/{NS}")]);
}

#[tokio::test]
async fn image_pull_backoff_of_our_image_says_how_to_build_it() {
    let mut fake = Fake::healthy();
    let pod = fake.pod_mut("ingest-gateway-7d4b9c6f5-k8m2p");
    pod["status"]["phase"] = json!("Pending");
    pod["status"]["conditions"][1]["status"] = json!("False");
    pod["status"]["containerStatuses"][0]["ready"] = json!(false);
    pod["status"]["containerStatuses"][0]["state"] = json!({
        "waiting": { "reason": "ImagePullBackOff", "message": "Back-off pulling image \"telemetry-lake:0.1.0\"" }
    });
    fake.endpoints_not_ready("ingest-gateway");
    let (report, _, _) = doctor(fake).await;

    let pods = row(&report, "pods ingest-gateway");
    assert_eq!(pods.status, Status::Fail);
    assert_eq!(
        pods.detail,
        "ingest-gateway-7d4b9c6f5-k8m2p: ImagePullBackOff for image telemetry-lake:0.1.0"
    );
    assert!(
        pods.hint
            .contains("docker build -f deploy/docker/Dockerfile -t telemetry-lake:0.1.0 ."),
        "{}",
        pods.hint
    );
}

#[tokio::test]
async fn pending_on_an_unbound_pvc_points_at_the_storage_class() {
    let mut fake = Fake::healthy();
    let pod = fake.pod_mut("minio-0");
    pod["status"] = json!({
        "phase": "Pending",
        "conditions": [{ "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims." }]
    });
    fake.endpoints_not_ready("minio");
    fake.endpoints_not_ready("minio-console");
    fake.proxy.insert(
        "minio:9000/minio/health/live".into(),
        (503, "no endpoints available for service \"minio\"".into()),
    );
    let (report, _, ran) = doctor(fake).await;
    println!("{}", report.table());

    let pods = row(&report, "pods minio");
    assert_eq!(pods.status, Status::Fail);
    assert!(
        pods.detail
            .starts_with("minio-0 Pending, not scheduled: 0/1 nodes are available"),
        "{}",
        pods.detail
    );
    assert!(
        pods.hint.contains("kubectl get pvc -n telemetry-lake"),
        "{}",
        pods.hint
    );
    assert_eq!(
        row(&report, "minio /minio/health/live").status,
        Status::Fail
    );
    assert_eq!(row(&report, "bucket telemetrylake").status, Status::Warn);
    assert!(!ran.iter().any(|(pod, ..)| pod == "minio-0"));
}

#[tokio::test]
async fn missing_bucket_and_topic_fail() {
    let mut fake = Fake::healthy();
    fake.exec.insert(
        ("minio-0".into(), "minio".into()),
        Ok(ExecReply {
            exit_code: 1,
            stdout: String::new(),
            stderr: "mc: <ERROR> Unable to list folder. Bucket `telemetrylake` does not exist.\n"
                .into(),
        }),
    );
    fake.exec.insert(
        ("kafka-0".into(), "kafka".into()),
        Ok(ExecReply {
            exit_code: 0,
            stdout: "__consumer_offsets\n".into(),
            stderr: String::new(),
        }),
    );
    let (report, _, _) = doctor(fake).await;

    let bucket = row(&report, "bucket telemetrylake");
    assert_eq!(bucket.status, Status::Fail);
    assert_eq!(bucket.detail, "missing in MinIO");
    assert!(bucket.hint.contains("-c create-bucket"));
    let topics = row(&report, "kafka topics");
    assert_eq!(topics.status, Status::Fail);
    assert_eq!(
        topics.detail,
        "missing: telemetry-logs; listed: __consumer_offsets"
    );
    assert!(
        topics
            .hint
            .contains("--create --if-not-exists --topic telemetry-logs")
    );
}

#[tokio::test]
async fn exec_not_allowed_is_a_warning_not_a_failure() {
    let mut fake = Fake::healthy();
    fake.exec.insert(
        ("kafka-0".into(), "kafka".into()),
        Err("forbidden: pods \"kafka-0\" is forbidden: User \"dev\" cannot create resource \"pods/exec\"".into()),
    );
    let (report, _, _) = doctor(fake).await;

    let topics = row(&report, "kafka topics");
    assert_eq!(topics.status, Status::Warn);
    assert!(topics.hint.contains("pods/exec"));
    assert!(!report.failed());
}

#[tokio::test]
async fn external_object_store_checks_the_bucket_from_duckdb_and_expects_no_minio() {
    let mut fake = Fake::healthy();
    fake.external_store(
        "https://s3.eu-west-1.amazonaws.com",
        "my-telemetry-lake",
        "lake-s3",
    );
    fake.exec.insert(
        ("duckdb-0".into(), "duckdb".into()),
        Ok(ExecReply {
            exit_code: 0,
            stdout: "200".into(),
            stderr: String::new(),
        }),
    );
    let (report, paths, ran) = doctor(fake.clone()).await;
    println!("{}", report.table());

    assert!(!report.failed(), "{}", report.table());
    assert!(
        statuses(&report, Status::Warn).is_empty(),
        "{}",
        report.table()
    );
    assert!(
        !report.checks.iter().any(|c| c.check.contains("minio")),
        "{}",
        report.table()
    );
    assert_eq!(
        row(&report, "object store").detail,
        "external S3 https://s3.eu-west-1.amazonaws.com, bucket my-telemetry-lake, keys in Secret lake-s3; no MinIO expected"
    );
    assert_eq!(row(&report, "bucket my-telemetry-lake").status, Status::Ok);
    assert!(!paths.iter().any(|p| p.contains("minio")));
    let (_, container, cmd) = ran
        .iter()
        .find(|(pod, ..)| pod == "duckdb-0")
        .expect("ran in duckdb-0");
    assert_eq!(container, "duckdb");
    assert_eq!(cmd.last().map(String::as_str), Some("my-telemetry-lake"));

    fake.exec.insert(
        ("duckdb-0".into(), "duckdb".into()),
        Ok(ExecReply {
            exit_code: 0,
            stdout: "403".into(),
            stderr: String::new(),
        }),
    );
    let (report, _, _) = doctor(fake).await;
    let bucket = row(&report, "bucket my-telemetry-lake");
    assert_eq!(bucket.status, Status::Fail);
    assert_eq!(bucket.detail, "access denied to the keys of Secret lake-s3");
}

#[tokio::test]
async fn versitygw_in_the_namespace_is_checked_like_minio_and_nessie_at_zero_fails() {
    let mut fake = Fake::healthy();
    fake.versitygw_store();
    let (report, _, _) = doctor(fake.clone()).await;
    println!("{}", report.table());
    assert!(!report.failed(), "{}", report.table());
    assert!(
        statuses(&report, Status::Warn).is_empty(),
        "{}",
        report.table()
    );
    assert_eq!(row(&report, "pods versitygw").status, Status::Ok);
    assert_eq!(row(&report, "service versitygw").status, Status::Ok);
    assert_eq!(
        row(&report, "object store").detail,
        "versitygw in the namespace (http://versitygw:9000), bucket telemetrylake, keys in Secret s3-credentials"
    );
    assert_eq!(row(&report, "bucket telemetrylake").status, Status::Ok);
    assert!(!report.checks.iter().any(|c| c.check.contains("minio")));

    // versitygw gone: its row fails, since Nessie still points at it.
    let mut gone = fake.clone();
    Fake::remove(&mut gone.statefulsets, "versitygw");
    Fake::remove(&mut gone.pods, "versitygw-0");
    let (report, _, _) = doctor(gone).await;
    let pods = row(&report, "pods versitygw");
    assert_eq!(pods.status, Status::Fail);
    assert_eq!(
        pods.detail,
        "StatefulSet versitygw not found, but Nessie's S3 endpoint is http://versitygw:9000"
    );

    // Nessie scaled to 0 is a failure (nothing works without the catalog), not a choice.
    fake.deployments[0]["spec"]["replicas"] = json!(0);
    Fake::remove(&mut fake.pods, "nessie-6f7c9d8b5-x2x9q");
    let (report, _, _) = doctor(fake).await;
    let nessie = row(&report, "pods nessie");
    assert_eq!(nessie.status, Status::Fail, "{}", report.table());
    assert_eq!(nessie.detail, "Deployment nessie is scaled to 0");
}

#[tokio::test]
async fn disabled_optional_component_warns_and_expects_no_service() {
    let mut fake = Fake::healthy();
    Fake::remove(&mut fake.deployments, "compactor");
    Fake::remove(&mut fake.pods, "compactor-5c8f7b9d4-q7w3r");
    Fake::remove(&mut fake.services, "compactor");
    let (report, _, _) = doctor(fake).await;

    let pods = row(&report, "pods compactor");
    assert_eq!(pods.status, Status::Warn);
    assert_eq!(
        pods.detail,
        "Deployment compactor not found (disabled with compactor.enabled=false?)"
    );
    assert!(!report.checks.iter().any(|c| c.check == "service compactor"));
    assert!(!report.failed());
}

#[tokio::test]
async fn missing_nessie_deployment_fails_even_though_it_is_never_optional() {
    let mut fake = Fake::healthy();
    Fake::remove(&mut fake.deployments, "nessie");
    Fake::remove(&mut fake.pods, "nessie-6f7c9d8b5-x2x9q");
    fake.proxy.insert(
        "nessie:19120/api/v2/config".into(),
        not_found("services \"nessie\" not found"),
    );
    let (report, _, _) = doctor(fake).await;

    assert_eq!(row(&report, "pods nessie").status, Status::Fail);
    assert_eq!(row(&report, "nessie /api/v2/config").status, Status::Fail);
    // MinIO's StatefulSet still tells which store this is.
    assert_eq!(row(&report, "object store").status, Status::Ok);
}

#[test]
fn table_wraps_long_cells_under_their_column() {
    let report = super::Report {
        namespace: NS.into(),
        checks: vec![
            super::Check::ok("namespace", "telemetry-lake exists"),
            super::Check::fail("pods kafka", "word ".repeat(20), "try ".repeat(30)),
        ],
    };
    let table = report.table();
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("CHECK       STATUS  DETAIL"),
        "{table}"
    );
    assert!(
        lines[2].starts_with("pods kafka  FAIL    word word"),
        "{table}"
    );
    // The continuation line leaves the CHECK and STATUS columns empty.
    assert!(lines[3].starts_with("                    word"), "{table}");
    assert!(
        table.ends_with("1 ok, 0 WARN, 1 FAIL in namespace telemetry-lake\n"),
        "{table}"
    );
}

/// A one-connection-per-reply `pods/exec` endpoint on loopback speaking the API server's
/// channel protocol (v4): stdout on channel 1, stderr on 2, the final Status on 3.
async fn exec_server(
    replies: Vec<(&'static str, &'static str, serde_json::Value)>,
) -> (u16, tokio::task::JoinHandle<Vec<String>>) {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = tokio::spawn(async move {
        let mut uris = Vec::new();
        for (stdout, stderr, status) in replies {
            let (tcp, _) = listener.accept().await.expect("accept");
            let uri = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
            let seen = std::sync::Arc::clone(&uri);
            // The signature is tungstenite's `Callback`, large error type included.
            #[allow(clippy::result_large_err)]
            let callback = move |request: &Request, mut response: Response| {
                *seen.lock().expect("lock") = request.uri().to_string();
                response.headers_mut().insert(
                    "sec-websocket-protocol",
                    http::HeaderValue::from_static("v4.channel.k8s.io"),
                );
                Ok(response)
            };
            let mut ws = tokio_tungstenite::accept_hdr_async(tcp, callback)
                .await
                .expect("handshake");
            for (channel, data) in [
                (1u8, stdout.as_bytes().to_vec()),
                (2, stderr.as_bytes().to_vec()),
                (3, status.to_string().into_bytes()),
            ] {
                let frame = [vec![channel], data].concat();
                ws.send(Message::binary(frame)).await.expect("send");
            }
            ws.close(None).await.expect("close");
            uris.push(uri.lock().expect("lock").clone());
        }
        uris
    });
    (port, server)
}

#[tokio::test]
async fn kube_exec_reads_stdout_stderr_and_exit_code_over_a_websocket() {
    use super::cluster::{KubeExec, PodExec};

    let failure = json!({
        "metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
        "message": "command terminated with non-zero exit code: error executing command, exit code 1",
        "details": { "causes": [{ "reason": "ExitCode", "message": "1" }] }
    });
    let (port, server) = exec_server(vec![
        (
            "__consumer_offsets\ntelemetry-logs\n",
            "",
            json!({ "metadata": {}, "status": "Success" }),
        ),
        (
            "",
            "mc: <ERROR> Bucket `telemetrylake` does not exist.\n",
            failure,
        ),
    ])
    .await;
    let mut config = kube::Config::new(format!("http://127.0.0.1:{port}").parse().expect("uri"));
    config.default_retry = false;
    let exec = KubeExec(Cluster::new(
        {
            let _ = rustls::crypto::ring::default_provider().install_default();
            kube::Client::try_from(config)
        }
        .expect("client"),
        NS,
    ));

    let topics = ["/opt/kafka/bin/kafka-topics.sh", "--list"]
        .map(String::from)
        .to_vec();
    let ok = exec.exec("kafka-0", "kafka", topics).await.expect("exec");
    assert_eq!(
        ok,
        ExecReply {
            exit_code: 0,
            stdout: "__consumer_offsets\ntelemetry-logs\n".into(),
            stderr: String::new()
        }
    );
    let failed = exec
        .exec("minio-0", "minio", vec!["mc".into()])
        .await
        .expect("exec");
    assert_eq!(failed.exit_code, 1);
    assert_eq!(
        failed.stderr,
        "mc: <ERROR> Bucket `telemetrylake` does not exist.\n"
    );

    let uris = server.await.expect("server");
    assert!(
        uris[0].starts_with(&format!("/api/v1/namespaces/{NS}/pods/kafka-0/exec?")),
        "{}",
        uris[0]
    );
    assert!(uris[0].contains("container=kafka"), "{}", uris[0]);
    assert!(
        uris[0].contains("command=%2Fopt%2Fkafka%2Fbin%2Fkafka-topics.sh&command=--list"),
        "{}",
        uris[0]
    );
}
