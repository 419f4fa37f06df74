//! `tlake doctor`: checks a telemetry-lake namespace the way the design's troubleshooting section
//! does by hand — pods ready, services with endpoints, Kafka's topics, Nessie's
//! `/api/v2/config`, MinIO's health and the bucket — and reports one row per check with what to
//! try when it fails.
//!
//! The API is read once into a snapshot; HTTP checks go through the API server's service proxy
//! and the Kafka and bucket checks run a command in the pod that has the tool and the keys, so
//! doctor needs nothing but a kubeconfig and never reads a Secret. Judging the facts is pure
//! (`checks`), and so is reading what the release enabled from its workloads (`chart`).

mod chart;
mod checks;
mod cluster;
#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

use std::fmt::Write as _;
use std::time::Duration;

use kube::config::KubeConfigOptions;
use kube::{Client, Config};
use serde::Serialize;

use chart::{Layout, MINIO_PROXY, NESSIE_PROXY, ObjectStore, component, workload};
use cluster::{ApiError, Cluster, ExecReply, KubeExec, PodExec, Snapshot, chain};

/// Namespace the chart installs into by default.
pub const DEFAULT_NAMESPACE: &str = "telemetry-lake";

/// What to check.
#[derive(Debug, Clone)]
pub struct Options {
    /// Namespace of the release.
    pub namespace: String,
    /// kubeconfig context; `None`: the current one (or in-cluster config), as `kubectl` does.
    pub context: Option<String>,
}

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Works.
    Ok,
    /// Not checked, or not necessarily wrong: read the detail.
    Warn,
    /// Broken: the deployment does not work as it is.
    Fail,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

/// One row of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What was checked, e.g. `pods kafka` or `service nessie`.
    pub check: String,
    /// Its outcome.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to try; empty when the check passed.
    #[serde(rename = "try")]
    pub hint: String,
}

impl Check {
    fn ok(check: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            check: check.into(),
            status: Status::Ok,
            detail: detail.into(),
            hint: String::new(),
        }
    }

    fn warn(check: impl Into<String>, detail: impl Into<String>, hint: impl Into<String>) -> Check {
        Check {
            check: check.into(),
            status: Status::Warn,
            detail: detail.into(),
            hint: hint.into(),
        }
    }

    fn fail(check: impl Into<String>, detail: impl Into<String>, hint: impl Into<String>) -> Check {
        Check {
            check: check.into(),
            status: Status::Fail,
            detail: detail.into(),
            hint: hint.into(),
        }
    }
}

/// Every check of one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The namespace checked.
    pub namespace: String,
    /// The rows, in the order they were checked.
    pub checks: Vec<Check>,
}

/// Width of the wrapped DETAIL column of the table.
const DETAIL_WIDTH: usize = 64;
/// Width of the wrapped WHAT TO TRY column.
const HINT_WIDTH: usize = 72;

impl Report {
    fn new(namespace: &str) -> Report {
        Report {
            namespace: namespace.to_owned(),
            checks: Vec::new(),
        }
    }

    /// Whether any check failed: `tlake doctor` then exits non-zero.
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.status == Status::Fail)
    }

    fn count(&self, status: Status) -> usize {
        self.checks.iter().filter(|c| c.status == status).count()
    }

    /// The report as an aligned table (detail and hint wrapped) and a summary line.
    pub fn table(&self) -> String {
        let name_width = self
            .checks
            .iter()
            .map(|c| c.check.chars().count())
            .chain(["CHECK".len()])
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        let mut line = |check: &str, status: &str, detail: &str, hint: &str| {
            let row = format!("{check:<name_width$}  {status:<6}  {detail:<DETAIL_WIDTH$}  {hint}");
            let _ = writeln!(out, "{}", row.trim_end());
        };
        line("CHECK", "STATUS", "DETAIL", "WHAT TO TRY");
        for c in &self.checks {
            let detail = wrap(&c.detail, DETAIL_WIDTH);
            let hint = wrap(&c.hint, HINT_WIDTH);
            for i in 0..detail.len().max(hint.len()).max(1) {
                let (check, status) = if i == 0 {
                    (c.check.as_str(), c.status.label())
                } else {
                    ("", "")
                };
                let d = detail.get(i).map(String::as_str).unwrap_or_default();
                let h = hint.get(i).map(String::as_str).unwrap_or_default();
                line(check, status, d, h);
            }
        }
        let _ = writeln!(
            out,
            "\n{} ok, {} WARN, {} FAIL in namespace {}",
            self.count(Status::Ok),
            self.count(Status::Warn),
            self.count(Status::Fail),
            self.namespace
        );
        out
    }

    /// The report as JSON: `{namespace, ok, counts, checks: [{check, status, detail, try}]}`.
    pub fn json(&self) -> String {
        #[derive(Serialize)]
        struct Counts {
            ok: usize,
            warn: usize,
            fail: usize,
        }
        #[derive(Serialize)]
        struct Json<'a> {
            namespace: &'a str,
            ok: bool,
            counts: Counts,
            checks: &'a [Check],
        }
        let json = Json {
            namespace: &self.namespace,
            ok: !self.failed(),
            counts: Counts {
                ok: self.count(Status::Ok),
                warn: self.count(Status::Warn),
                fail: self.count(Status::Fail),
            },
            checks: &self.checks,
        };
        serde_json::to_string_pretty(&json).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }
}

/// Words of `text` in lines of at most `width` characters (longer words get a line each).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for word in text.split_whitespace() {
        let len = current.chars().count();
        if len > 0 && len + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(word);
    }
    if !current.is_empty() {
        lines.push(current);
    }
    lines
}

/// A check that runs something in the cluster, or why it was not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Probe<T> {
    /// Not run: an earlier row already explains why it cannot work, or nothing to run it with.
    Skipped { why: String, hint: String },
    /// Run; `Err` when its outcome is unknown (e.g. exec not allowed).
    Ran(Result<T, String>),
}

/// Checks the namespace of `options` with the cluster of the kubeconfig (or in-cluster config).
/// Never fails: a kubeconfig that cannot be loaded or an API server that does not answer is a
/// failed row like any other.
pub async fn run(options: &Options) -> Report {
    let ns = &options.namespace;
    let (client, api_server) = match connect(options).await {
        Ok(connected) => connected,
        Err(message) => {
            let mut report = Report::new(ns);
            report.checks.push(Check::fail(
                "kubeconfig",
                message,
                "set KUBECONFIG or pick a context with --context (kubectl config get-contexts)",
            ));
            return report;
        }
    };
    let cluster = Cluster::new(client, ns);
    diagnose(&cluster, &KubeExec(cluster.clone()), &api_server, ns).await
}

async fn connect(options: &Options) -> Result<(Client, String), String> {
    // kube asks rustls for the process's default crypto provider, and rustls refuses to choose
    // when a build (the Docker image's, with the S3 clients) compiles in a second one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut config = match &options.context {
        Some(context) => Config::from_kubeconfig(&KubeConfigOptions {
            context: Some(context.clone()),
            ..KubeConfigOptions::default()
        })
        .await
        .map_err(|e| {
            format!(
                "cannot load context {context} from the kubeconfig: {}",
                chain(&e)
            )
        })?,
        None => Config::infer().await.map_err(|e| {
            format!(
                "no Kubernetes config (KUBECONFIG, ~/.kube/config or in-cluster): {}",
                chain(&e)
            )
        })?,
    };
    // A 503 from a proxied backend is a finding to report, not something to retry for minutes.
    config.default_retry = false;
    config.connect_timeout = Some(Duration::from_secs(10));
    let api_server = config.cluster_url.to_string();
    let client = Client::try_from(config)
        .map_err(|e| format!("cannot build a Kubernetes client: {}", chain(&e)))?;
    Ok((client, api_server))
}

/// Every check, against `cluster`; `api_server` only names it in messages.
pub(crate) async fn diagnose(
    cluster: &Cluster,
    exec: &impl PodExec,
    api_server: &str,
    ns: &str,
) -> Report {
    let mut report = Report::new(ns);
    match cluster.namespace_exists().await {
        Ok(exists) => {
            report.checks.push(checks::namespace(ns, exists));
            if !exists {
                return report;
            }
        }
        // A user whose role is only namespaced may not read Namespace objects: go on.
        Err(ApiError::Forbidden(_)) => {}
        Err(e) => {
            report
                .checks
                .push(checks::api_failure(api_server, "reading the namespace", &e));
            return report;
        }
    }
    let snapshot = match cluster.snapshot().await {
        Ok(snapshot) => snapshot,
        Err(e) => {
            let what = format!("listing the objects of {ns}");
            report
                .checks
                .push(checks::api_failure(api_server, &what, &e));
            return report;
        }
    };
    let layout = Layout::read(&snapshot);
    report.checks.extend(checks::pods(ns, &layout, &snapshot));
    report
        .checks
        .extend(checks::services(ns, &layout, &snapshot));

    let kafka = run_probe(exec, kafka_target(&snapshot));
    let bucket = run_probe(exec, bucket_target(&layout, &snapshot));
    let nessie = cluster.proxy_get(NESSIE_PROXY, "/api/v2/config");
    let minio = async {
        match layout.object_store {
            ObjectStore::Minio { .. } => {
                Some(cluster.proxy_get(MINIO_PROXY, "/minio/health/live").await)
            }
            _ => None,
        }
    };
    let (kafka, bucket, nessie, minio) = tokio::join!(kafka, bucket, nessie, minio);

    report
        .checks
        .push(checks::kafka_topics(ns, &layout, &kafka));
    report.checks.push(checks::nessie_config(ns, &nessie));
    report.checks.push(checks::object_store(&layout));
    if let Some(minio) = minio {
        report.checks.push(checks::minio_live(ns, &minio));
    }
    report.checks.extend(checks::bucket(ns, &layout, &bucket));
    report
}

/// A command to run in a container.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ExecTarget {
    pod: &'static str,
    container: &'static str,
    command: Vec<String>,
}

type Target = Result<ExecTarget, (String, String)>;

async fn run_probe(exec: &impl PodExec, target: Target) -> Probe<ExecReply> {
    match target {
        Ok(t) => Probe::Ran(exec.exec(t.pod, t.container, t.command).await),
        Err((why, hint)) => Probe::Skipped { why, hint },
    }
}

/// `kafka-topics.sh --list` in the broker, as the seed's "Test Kafka" does.
fn kafka_target(snapshot: &Snapshot) -> Target {
    if workload(snapshot, component("kafka")).is_none() {
        return Err((
            "no Kafka StatefulSet here (kafka.enabled=false: external brokers are not checked)"
                .into(),
            "check kafka.externalBrokers from a pod that reaches them".into(),
        ));
    }
    if !checks::pod_ready(snapshot, "kafka-0") {
        return Err(("kafka-0 is not ready".into(), "see `pods kafka`".into()));
    }
    Ok(ExecTarget {
        pod: "kafka-0",
        container: "kafka",
        command: vec!["/bin/bash".into(), "-c".into(), KAFKA_TOPICS_LIST.into()],
    })
}

/// The seed's `kafka-topics.sh --list`, with the small heap the chart's `topics` sidecar uses:
/// the tool's default heap, beside the broker's, could push the container over its memory limit.
const KAFKA_TOPICS_LIST: &str = "KAFKA_HEAP_OPTS='-Xms32m -Xmx128m' LOG_DIR=/tmp/kafka-logs exec \
     /opt/kafka/bin/kafka-topics.sh --list --bootstrap-server localhost:9092";

/// Where the bucket check runs: in MinIO itself with `mc`, or, for an external store, from the
/// DuckDB pod, which has curl and the store's keys.
fn bucket_target(layout: &Layout, snapshot: &Snapshot) -> Target {
    match &layout.object_store {
        ObjectStore::Minio { bucket, .. } => {
            if !checks::pod_ready(snapshot, "minio-0") {
                return Err(("minio-0 is not ready".into(), "see `pods minio`".into()));
            }
            Ok(ExecTarget {
                pod: "minio-0",
                container: "minio",
                command: vec![
                    "/bin/bash".into(),
                    "-c".into(),
                    checks::MINIO_BUCKET_SCRIPT.into(),
                    "bucket-check".into(),
                    bucket.clone(),
                ],
            })
        }
        ObjectStore::External {
            endpoint, bucket, ..
        } => {
            if !checks::pod_ready(snapshot, "duckdb-0") {
                let why = if workload(snapshot, component("duckdb")).is_none() {
                    "no DuckDB pod to run it from (duckdb.enabled=false)"
                } else {
                    "duckdb-0, which runs it, is not ready"
                };
                return Err((
                    why.into(),
                    format!(
                        "by hand, with the Secret's keys: aws s3api head-bucket --bucket {bucket} --endpoint-url {endpoint}"
                    ),
                ));
            }
            Ok(ExecTarget {
                pod: "duckdb-0",
                container: "duckdb",
                command: vec![
                    "/bin/sh".into(),
                    "-c".into(),
                    checks::S3_BUCKET_SCRIPT.into(),
                    "bucket-check".into(),
                    bucket.clone(),
                ],
            })
        }
        ObjectStore::Unknown => Err(("the object store is unknown".into(), String::new())),
    }
}
