//! A fake Kubernetes API for doctor's tests: a `tower` service answering the paths doctor calls
//! (namespace, lists, service proxy) with canned JSON, a namespace that looks like a healthy
//! default install of the chart, and canned answers for commands run in pods.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};

use super::cluster::{Cluster, ExecReply, PodExec};
use super::{Report, Status, diagnose};

pub(crate) const NS: &str = "telemetry-lake";

/// The namespace's objects and the answers of the service proxy and of exec.
#[derive(Debug, Clone)]
pub(crate) struct Fake {
    pub(crate) namespace_exists: bool,
    pub(crate) pods: Vec<Value>,
    pub(crate) services: Vec<Value>,
    pub(crate) endpoint_slices: Vec<Value>,
    pub(crate) deployments: Vec<Value>,
    pub(crate) statefulsets: Vec<Value>,
    /// Proxy path after `/proxy` on `<service>:<port>` → (status, body).
    pub(crate) proxy: HashMap<String, (u16, String)>,
    /// (pod, container) → what the command returns.
    pub(crate) exec: HashMap<(String, String), Result<ExecReply, String>>,
}

fn labels(app: &str) -> Value {
    json!({ "app": app, "app.kubernetes.io/name": app, "app.kubernetes.io/instance": "telemetry-lake" })
}

fn selector(app: &str) -> Value {
    json!({ "matchLabels": labels(app) })
}

fn env(pairs: &[(&str, &str)]) -> Value {
    Value::Array(
        pairs
            .iter()
            .map(|(k, v)| json!({ "name": k, "value": v }))
            .collect(),
    )
}

fn statefulset(name: &str, containers: Value, init: Value) -> Value {
    json!({
        "metadata": { "name": name, "namespace": NS },
        "spec": {
            "serviceName": name, "replicas": 1, "selector": selector(name),
            "template": { "metadata": { "labels": labels(name) },
                          "spec": { "containers": containers, "initContainers": init } }
        }
    })
}

fn deployment(name: &str, containers: Value) -> Value {
    json!({
        "metadata": { "name": name, "namespace": NS },
        "spec": {
            "replicas": 1, "selector": selector(name),
            "template": { "metadata": { "labels": labels(name) }, "spec": { "containers": containers } }
        }
    })
}

/// A Running pod whose containers are all ready.
pub(crate) fn ready_pod(name: &str, app: &str, containers: &[(&str, &str)]) -> Value {
    json!({
        "metadata": { "name": name, "namespace": NS, "labels": labels(app) },
        "spec": { "containers": containers.iter().map(|(c, image)| json!({ "name": c, "image": image })).collect::<Vec<_>>() },
        "status": {
            "phase": "Running",
            "conditions": [
                { "type": "PodScheduled", "status": "True" },
                { "type": "Ready", "status": "True" }
            ],
            "containerStatuses": containers.iter().map(|(c, image)| json!({
                "name": c, "image": image, "imageID": "", "ready": true, "restartCount": 0,
                "started": true, "state": { "running": { "startedAt": "2026-01-01T00:00:00Z" } }
            })).collect::<Vec<_>>()
        }
    })
}

fn service(name: &str, app: &str, cluster_ip: &str, ports: &[i32]) -> Value {
    json!({
        "metadata": { "name": name, "namespace": NS },
        "spec": {
            "clusterIP": cluster_ip, "selector": labels(app),
            "ports": ports.iter().map(|p| json!({ "port": p })).collect::<Vec<_>>()
        }
    })
}

fn slice(service: &str, ready: bool) -> Value {
    json!({
        "metadata": { "name": format!("{service}-abcde"), "namespace": NS,
                      "labels": { "kubernetes.io/service-name": service } },
        "addressType": "IPv4",
        "endpoints": [ { "addresses": ["10.1.0.7"], "conditions": { "ready": ready } } ]
    })
}

fn nessie_env(endpoint: &str, bucket: &str, secret: &str) -> Value {
    let mut env = env(&[
        ("NESSIE_VERSION_STORE_TYPE", "ROCKSDB"),
        ("NESSIE_CATALOG_DEFAULT-WAREHOUSE", "telemetrylake"),
        (
            "NESSIE_CATALOG_WAREHOUSES_TELEMETRYLAKE_LOCATION",
            &format!("s3://{bucket}"),
        ),
        (
            "NESSIE_CATALOG_SERVICE_S3_DEFAULT-OPTIONS_ENDPOINT",
            endpoint,
        ),
    ]);
    for (name, key) in [
        ("MY-SECRETS_S3-DEFAULT_NAME", "access-key"),
        ("MY-SECRETS_S3-DEFAULT_SECRET", "secret-key"),
    ] {
        env.as_array_mut()
            .unwrap_or_else(|| unreachable!())
            .push(json!({
                "name": name, "valueFrom": { "secretKeyRef": { "name": secret, "key": key } }
            }));
    }
    env
}

fn ok_exec(stdout: &str) -> Result<ExecReply, String> {
    Ok(ExecReply {
        exit_code: 0,
        stdout: stdout.to_owned(),
        stderr: String::new(),
    })
}

impl Fake {
    /// The chart's default install, every pod ready, Nessie and MinIO answering.
    pub(crate) fn healthy() -> Fake {
        let kafka_image = "apache/kafka:4.1.1";
        let minio_image = "quay.io/minio/minio:RELEASE.2025-09-07T16-13-09Z";
        let ours = "telemetry-lake:0.1.0";
        let statefulsets = vec![
            statefulset(
                "kafka",
                json!([
                    { "name": "kafka", "image": kafka_image },
                    { "name": "topics", "image": kafka_image, "env": env(&[("TOPICS", "telemetry-logs")]) }
                ]),
                json!([]),
            ),
            statefulset(
                "minio",
                json!([{ "name": "minio", "image": minio_image }]),
                json!([{ "name": "create-bucket", "image": minio_image, "env": env(&[("BUCKET", "telemetrylake")]) }]),
            ),
            statefulset(
                "duckdb",
                json!([{ "name": "duckdb", "image": "debian:bookworm-20260824-slim" }]),
                json!([{ "name": "install", "image": "debian:bookworm-20260824-slim" }]),
            ),
        ];
        let deployments = vec![
            deployment(
                "nessie",
                json!([{ "name": "nessie", "image": "ghcr.io/projectnessie/nessie:0.108.3",
                         "env": nessie_env("http://minio:9000", "telemetrylake", "s3-credentials") }]),
            ),
            deployment(
                "ingest-gateway",
                json!([{ "name": "ingest-gateway", "image": ours }]),
            ),
            deployment("compactor", json!([{ "name": "compactor", "image": ours }])),
        ];
        let pods = vec![
            ready_pod(
                "kafka-0",
                "kafka",
                &[("kafka", kafka_image), ("topics", kafka_image)],
            ),
            ready_pod("minio-0", "minio", &[("minio", minio_image)]),
            ready_pod(
                "nessie-6f7c9d8b5-x2x9q",
                "nessie",
                &[("nessie", "ghcr.io/projectnessie/nessie:0.108.3")],
            ),
            ready_pod(
                "duckdb-0",
                "duckdb",
                &[("duckdb", "debian:bookworm-20260824-slim")],
            ),
            ready_pod(
                "ingest-gateway-7d4b9c6f5-k8m2p",
                "ingest-gateway",
                &[("ingest-gateway", ours)],
            ),
            ready_pod(
                "compactor-5c8f7b9d4-q7w3r",
                "compactor",
                &[("compactor", ours)],
            ),
        ];
        let services = vec![
            service("kafka", "kafka", "10.96.12.1", &[9092]),
            service("kafka-headless", "kafka", "None", &[9092, 9093]),
            service("minio", "minio", "10.96.12.2", &[9000]),
            service("minio-console", "minio", "10.96.12.3", &[9001]),
            service("nessie", "nessie", "10.96.12.4", &[19120]),
            service("duckdb", "duckdb", "None", &[]),
            service(
                "ingest-gateway",
                "ingest-gateway",
                "10.96.12.5",
                &[4317, 9464],
            ),
            service("compactor", "compactor", "10.96.12.6", &[9465]),
        ];
        let endpoint_slices = [
            "kafka",
            "kafka-headless",
            "minio",
            "minio-console",
            "nessie",
            "duckdb",
            "ingest-gateway",
            "compactor",
        ]
        .iter()
        .map(|s| slice(s, true))
        .collect();
        let proxy = HashMap::from([
            (
                "nessie:19120/api/v2/config".to_owned(),
                (
                    200,
                    r#"{"defaultBranch":"main","minSupportedApiVersion":1,"maxSupportedApiVersion":2,"actualApiVersion":2,"specVersion":"2.2.0"}"#.to_owned(),
                ),
            ),
            ("minio:9000/minio/health/live".to_owned(), (200, String::new())),
        ]);
        let exec = HashMap::from([
            (
                ("kafka-0".to_owned(), "kafka".to_owned()),
                ok_exec("__consumer_offsets\ntelemetry-logs\n"),
            ),
            (("minio-0".to_owned(), "minio".to_owned()), ok_exec("")),
        ]);
        Fake {
            namespace_exists: true,
            pods,
            services,
            endpoint_slices,
            deployments,
            statefulsets,
            proxy,
            exec,
        }
    }

    /// The pod called `name`, to change in a test.
    pub(crate) fn pod_mut(&mut self, name: &str) -> &mut Value {
        self.pods
            .iter_mut()
            .find(|p| p["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no pod {name}"))
    }

    /// Marks the endpoints of `service` not ready, as they are when its pods are not.
    pub(crate) fn endpoints_not_ready(&mut self, service: &str) {
        for s in &mut self.endpoint_slices {
            if s["metadata"]["labels"]["kubernetes.io/service-name"] == service {
                s["endpoints"][0]["conditions"]["ready"] = json!(false);
            }
        }
    }

    /// Drops every object called `name` of the given list.
    pub(crate) fn remove(list: &mut Vec<Value>, name: &str) {
        list.retain(|o| o["metadata"]["name"] != name);
    }

    /// Switches the fixture to `objectStore.type: external`: no MinIO, Nessie on another endpoint.
    pub(crate) fn external_store(&mut self, endpoint: &str, bucket: &str, secret: &str) {
        Fake::remove(&mut self.statefulsets, "minio");
        Fake::remove(&mut self.pods, "minio-0");
        Fake::remove(&mut self.services, "minio");
        Fake::remove(&mut self.services, "minio-console");
        self.endpoint_slices.retain(|s| {
            !s["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .starts_with("minio")
        });
        self.proxy.remove("minio:9000/minio/health/live");
        self.exec
            .remove(&("minio-0".to_owned(), "minio".to_owned()));
        self.deployments[0]["spec"]["template"]["spec"]["containers"][0]["env"] =
            nessie_env(endpoint, bucket, secret);
    }

    /// Switches the fixture to `objectStore.type: versitygw`: versitygw-0 and its Service where
    /// MinIO's were, Nessie at http://versitygw:9000, the bucket checked from duckdb-0.
    pub(crate) fn versitygw_store(&mut self) {
        let image = "local.telemetry-lake/versitygw:v1.8.0";
        self.external_store("http://versitygw:9000", "telemetrylake", "s3-credentials");
        self.statefulsets.push(statefulset(
            "versitygw",
            json!([{ "name": "versitygw", "image": image }]),
            json!([{ "name": "create-bucket", "image": image, "env": env(&[("BUCKET", "telemetrylake")]) }]),
        ));
        self.pods.push(ready_pod(
            "versitygw-0",
            "versitygw",
            &[("versitygw", image)],
        ));
        self.services
            .push(service("versitygw", "versitygw", "10.96.12.7", &[9000]));
        self.endpoint_slices.push(slice("versitygw", true));
        self.exec
            .insert(("duckdb-0".to_owned(), "duckdb".to_owned()), ok_exec("200"));
    }

    fn answer(&self, path: &str) -> (u16, String) {
        let base = format!("/api/v1/namespaces/{NS}");
        let list = |kind: &str, items: &[Value]| {
            (
                200,
                json!({ "kind": kind, "apiVersion": "v1", "metadata": {}, "items": items })
                    .to_string(),
            )
        };
        if path == base {
            return if self.namespace_exists {
                (
                    200,
                    json!({ "kind": "Namespace", "apiVersion": "v1", "metadata": { "name": NS } })
                        .to_string(),
                )
            } else {
                not_found(&format!("namespaces \"{NS}\" not found"))
            };
        }
        if !self.namespace_exists {
            return list("List", &[]);
        }
        match path {
            p if p == format!("{base}/pods") => list("PodList", &self.pods),
            p if p == format!("{base}/services") => list("ServiceList", &self.services),
            p if p == format!("/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices") => {
                list("EndpointSliceList", &self.endpoint_slices)
            }
            p if p == format!("/apis/apps/v1/namespaces/{NS}/deployments") => {
                list("DeploymentList", &self.deployments)
            }
            p if p == format!("/apis/apps/v1/namespaces/{NS}/statefulsets") => {
                list("StatefulSetList", &self.statefulsets)
            }
            p => match p
                .strip_prefix(&format!("{base}/services/"))
                .map(|rest| rest.replacen("/proxy", "", 1))
            {
                Some(target) => self.proxy.get(&target).cloned().unwrap_or_else(|| {
                    let service = target.split(':').next().unwrap_or_default().to_owned();
                    // What the API server says when the service is gone.
                    not_found(&format!("services \"{service}\" not found"))
                }),
                None => not_found(&format!(
                    "the server could not find the requested resource ({p})"
                )),
            },
        }
    }

    /// A client on this fake, recording the paths it was asked for.
    pub(crate) fn client(self) -> (Client, Arc<Mutex<Vec<String>>>) {
        let fake = Arc::new(self);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        let service = tower::service_fn(move |request: Request<Body>| {
            let fake = Arc::clone(&fake);
            let record = Arc::clone(&record);
            async move {
                let path = request.uri().path().to_owned();
                record
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(path.clone());
                let (status, body) = fake.answer(&path);
                Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Body::from(body.into_bytes()))
            }
        });
        (Client::new(service, NS), seen)
    }
}

pub(crate) fn not_found(message: &str) -> (u16, String) {
    (
        404,
        json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
                "reason": "NotFound", "code": 404 })
        .to_string(),
    )
}

/// Canned answers for commands in pods, recording what ran where.
#[derive(Debug, Default)]
pub(crate) struct FakeExec {
    replies: HashMap<(String, String), Result<ExecReply, String>>,
    pub(crate) ran: Mutex<Vec<(String, String, Vec<String>)>>,
}

impl PodExec for FakeExec {
    async fn exec(
        &self,
        pod: &str,
        container: &str,
        command: Vec<String>,
    ) -> Result<ExecReply, String> {
        self.ran.lock().unwrap_or_else(|e| e.into_inner()).push((
            pod.to_owned(),
            container.to_owned(),
            command,
        ));
        self.replies
            .get(&(pod.to_owned(), container.to_owned()))
            .cloned()
            .unwrap_or_else(|| Err(format!("pods \"{pod}\" not found")))
    }
}

/// Runs every check against `fake`; returns the report, the API paths and the commands run.
pub(crate) async fn doctor(
    fake: Fake,
) -> (Report, Vec<String>, Vec<(String, String, Vec<String>)>) {
    let exec = FakeExec {
        replies: fake.exec.clone(),
        ran: Mutex::new(Vec::new()),
    };
    let (client, seen) = fake.client();
    let report = diagnose(&Cluster::new(client, NS), &exec, "https://fake:6443", NS).await;
    let paths = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let ran = exec.ran.into_inner().unwrap_or_else(|e| e.into_inner());
    (report, paths, ran)
}

/// The row called `name`.
pub(crate) fn row<'a>(report: &'a Report, name: &str) -> &'a super::Check {
    report
        .checks
        .iter()
        .find(|c| c.check == name)
        .unwrap_or_else(|| panic!("no row {name:?} in\n{}", report.table()))
}

pub(crate) fn statuses(report: &Report, status: Status) -> Vec<&str> {
    report
        .checks
        .iter()
        .filter(|c| c.status == status)
        .map(|c| c.check.as_str())
        .collect()
}
