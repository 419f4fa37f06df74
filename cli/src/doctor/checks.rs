//! The checks: pure functions from fetched facts (a [`Snapshot`], the [`Layout`] read from it,
//! HTTP and exec replies) to rows of the table. Each failing row says what to try, in the words
//! of the seed's troubleshooting section where it has some.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

use super::chart::{
    COMPONENTS, Component, Kind, Layout, ObjectStore, Presence, VERSITYGW_ENDPOINT, component,
    workload,
};
use super::cluster::{ApiError, ExecReply, HttpReply, Snapshot};
use super::{Check, Probe};

/// `helm upgrade --install` with the chart, for rows whose fix is "the release is incomplete".
fn reinstall(ns: &str) -> String {
    format!(
        "restore the release: helm upgrade --install telemetry-lake deploy/helm/telemetry-lake -n {ns}"
    )
}

/// The row for a failed request to the API server itself.
pub(crate) fn api_failure(api_server: &str, what: &str, err: &ApiError) -> Check {
    let check = "kubernetes api";
    match err {
        ApiError::Unreachable(m) => Check::fail(
            check,
            format!("cannot reach the API server {api_server}: {m}"),
            "is the cluster running (Docker Desktop: Kubernetes enabled)? `kubectl cluster-info`; \
             pick another kubeconfig context with --context",
        ),
        ApiError::Unauthorized(m) => Check::fail(
            check,
            format!("{what}: credentials rejected (401): {m}"),
            "refresh the kubeconfig's credentials; `kubectl config current-context`",
        ),
        ApiError::Forbidden(m) => Check::fail(
            check,
            format!("{what}: forbidden: {m}"),
            "doctor needs get/list on namespaces, pods, services, endpointslices, deployments, \
             statefulsets, get on services/proxy and create on pods/exec",
        ),
        ApiError::NotFound(m) | ApiError::Other(m) => Check::fail(
            check,
            format!("{what}: {m}"),
            "`kubectl get --raw /version` shows whether the API server answers",
        ),
    }
}

/// The namespace row.
pub(crate) fn namespace(ns: &str, exists: bool) -> Check {
    if exists {
        Check::ok("namespace", format!("{ns} exists"))
    } else {
        Check::fail(
            "namespace",
            format!("{ns} not found"),
            format!(
                "install: helm install telemetry-lake deploy/helm/telemetry-lake (creates {ns}), \
                 or pass the release's namespace with --namespace"
            ),
        )
    }
}

/// One "pods <component>" row per component of the chart.
pub(crate) fn pods(ns: &str, layout: &Layout, snapshot: &Snapshot) -> Vec<Check> {
    COMPONENTS
        .iter()
        .filter_map(|c| component_pods(ns, layout, snapshot, c))
        .collect()
}

fn component_pods(ns: &str, layout: &Layout, snapshot: &Snapshot, c: &Component) -> Option<Check> {
    if layout.excludes(c) {
        return None;
    }
    let check = format!("pods {}", c.name);
    let kind = c.kind.as_str();
    let Some(w) = workload(snapshot, c) else {
        return Some(match c.presence {
            Presence::Always => {
                Check::fail(check, format!("{kind} {} not found", c.name), reinstall(ns))
            }
            Presence::StoreAt(endpoint) if layout.requires(c) => Check::fail(
                check,
                format!(
                    "{kind} {} not found, but Nessie's S3 endpoint is {endpoint}",
                    c.name
                ),
                reinstall(ns),
            ),
            // Nessie is not there to say which store this release uses.
            Presence::StoreAt(_) => Check::warn(
                check,
                format!("{kind} {} not found; the object store is unknown", c.name),
                format!(
                    "fix Nessie first: its S3 settings say whether {} belongs here",
                    c.name
                ),
            ),
            Presence::Optional(value) => Check::warn(
                check,
                format!("{kind} {} not found (disabled with {value}?)", c.name),
                format!("if it should run: upgrade the release without {value}"),
            ),
        });
    };
    if w.replicas == 0 {
        let detail = format!("{kind} {} is scaled to 0", c.name);
        let tip = format!(
            "kubectl scale -n {ns} {}/{} --replicas=1",
            c.kind.kubectl(),
            c.name
        );
        // Nothing works without the catalog or the release's object store; an optional
        // component at 0 may be deliberate.
        return Some(if layout.requires(c) {
            Check::fail(check, detail, tip)
        } else {
            Check::warn(check, detail, tip)
        });
    }

    let mut pods: Vec<&Pod> = snapshot
        .pods
        .iter()
        .filter(|p| selects(w.selector, c.name, p))
        .collect();
    pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut states: Vec<PodState> = pods.iter().map(|p| diagnose(ns, p)).collect();
    let describe = format!("kubectl describe -n {ns} {}/{}", c.kind.kubectl(), c.name);
    match c.kind {
        Kind::StatefulSet => {
            for i in 0..w.replicas {
                let name = format!("{}-{i}", c.name);
                if !pods.iter().any(|p| p.metadata.name.as_deref() == Some(&name)) {
                    states.push(PodState::problem(
                        format!("{name} does not exist"),
                        format!("{describe}: its events say why the pod was not created (Pod Security admission, quota)"),
                    ));
                }
            }
        }
        Kind::Deployment if pods.is_empty() => states.push(PodState::problem(
            format!("no pods (want {})", w.replicas),
            format!("{describe} and its ReplicaSet: their events say why no pod was created (Pod Security admission, quota)"),
        )),
        Kind::Deployment => {}
    }

    let ready = states.iter().filter(|s| s.ready).count();
    let failing: Vec<&PodState> = states.iter().filter(|s| !s.ready).collect();
    Some(if failing.is_empty() && ready >= w.replicas as usize {
        let detail = states
            .iter()
            .map(|s| s.detail.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        Check::ok(check, detail)
    } else {
        let mut detail = failing
            .iter()
            .map(|s| s.detail.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        if ready > 0 {
            detail = format!("{ready}/{} ready; {detail}", w.replicas);
        }
        let hint = match failing.first() {
            Some(PodState {
                hint: Some(h),
                tip: true,
                ..
            }) => format!("{h}; {}", c.tip),
            Some(PodState { hint: Some(h), .. }) => h.clone(),
            _ => c.tip.to_owned(),
        };
        Check::fail(check, detail, hint)
    })
}

/// Whether the workload's selector selects `pod` (the `app` label when it has none).
fn selects(selector: Option<&BTreeMap<String, String>>, app: &str, pod: &Pod) -> bool {
    let labels = pod.metadata.labels.as_ref();
    let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
    match selector {
        Some(sel) if !sel.is_empty() => sel.iter().all(|(k, v)| label(k) == Some(v.as_str())),
        _ => label("app") == Some(app),
    }
}

/// One pod, judged.
#[derive(Debug)]
struct PodState {
    ready: bool,
    detail: String,
    hint: Option<String>,
    /// Whether the component's own tip helps: for what its process does, not for scheduling,
    /// image pulls or missing Secrets, whose hints are complete.
    tip: bool,
}

impl PodState {
    fn problem(detail: String, hint: String) -> PodState {
        PodState {
            ready: false,
            detail,
            hint: Some(hint),
            tip: false,
        }
    }

    /// A problem of the component's own process (crash, failed init, failing probe).
    fn process(detail: String, hint: String) -> PodState {
        PodState {
            tip: true,
            ..PodState::problem(detail, hint)
        }
    }
}

/// Why a pod is not Ready, with the `kubectl` command or value that shows or fixes it.
fn diagnose(ns: &str, pod: &Pod) -> PodState {
    let name = pod.metadata.name.as_deref().unwrap_or("?");
    let status = pod.status.as_ref();
    let containers = status
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or_default();
    let describe = format!("kubectl describe pod -n {ns} {name}");
    let condition = |t: &str| {
        status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == t))
    };

    if pod.metadata.deletion_timestamp.is_some() {
        return PodState::problem(
            format!("{name} terminating"),
            "wait for its replacement and re-run".into(),
        );
    }
    if condition("Ready").is_some_and(|c| c.status == "True") {
        let restarts: i32 = containers.iter().map(|c| c.restart_count).sum();
        let detail = match restarts {
            0 => format!("{name} ready"),
            1 => format!("{name} ready (1 restart)"),
            n => format!("{name} ready ({n} restarts)"),
        };
        return PodState {
            ready: true,
            detail,
            hint: None,
            tip: false,
        };
    }
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Unknown");
    if phase == "Failed" {
        let reason = status.and_then(|s| s.reason.as_deref()).unwrap_or("Failed");
        let message = status
            .and_then(|s| s.message.as_deref())
            .unwrap_or_default();
        return PodState::problem(
            format!("{name} {reason}: {message}"),
            format!("{describe}; delete the pod so that its controller makes a new one"),
        );
    }
    if let Some(c) = condition("PodScheduled").filter(|c| c.status == "False") {
        let message = c.message.as_deref().unwrap_or_default();
        return PodState::problem(
            format!("{name} Pending, not scheduled: {message}"),
            scheduling_hint(ns, message),
        );
    }
    // Init containers run in order: the first unfinished one is what the pod waits for.
    for cs in status
        .and_then(|s| s.init_container_statuses.as_deref())
        .unwrap_or_default()
    {
        let state = cs.state.as_ref();
        if let Some(t) = state.and_then(|s| s.terminated.as_ref()) {
            if t.exit_code == 0 {
                continue;
            }
            return PodState::process(
                format!(
                    "{name}: init container {} failed (exit {}{})",
                    cs.name,
                    t.exit_code,
                    t.reason
                        .as_deref()
                        .map(|r| format!(", {r}"))
                        .unwrap_or_default()
                ),
                format!("kubectl logs -n {ns} {name} -c {}", cs.name),
            );
        }
        if state.and_then(|s| s.running.as_ref()).is_some() {
            return PodState::process(
                format!("{name}: init container {} still running", cs.name),
                format!(
                    "wait and re-run; follow it with kubectl logs -n {ns} {name} -c {} -f",
                    cs.name
                ),
            );
        }
        return container_problem(ns, name, cs, "init container");
    }
    if let Some(cs) = containers.iter().find(|c| !c.ready) {
        return container_problem(ns, name, cs, "container");
    }
    PodState::problem(format!("{name} {phase}, not ready"), describe)
}

/// A container that is not ready: waiting (with the kubelet's reason), running, or exited.
fn container_problem(ns: &str, pod: &str, cs: &ContainerStatus, what: &str) -> PodState {
    let c = &cs.name;
    let state = cs.state.as_ref();
    let logs = format!("kubectl logs -n {ns} {pod} -c {c}");
    let describe = format!("kubectl describe pod -n {ns} {pod}");
    if let Some(w) = state.and_then(|s| s.waiting.as_ref()) {
        let reason = w.reason.as_deref().unwrap_or("Waiting");
        let message = w.message.as_deref().unwrap_or_default();
        return match reason {
            "CrashLoopBackOff" => {
                let last = cs.last_state.as_ref().and_then(|s| s.terminated.as_ref());
                let exit = last
                    .map(|t| {
                        format!(
                            ", last exit {}{}",
                            t.exit_code,
                            t.reason
                                .as_deref()
                                .map(|r| format!(" {r}"))
                                .unwrap_or_default()
                        )
                    })
                    .unwrap_or_default();
                let oom = last.and_then(|t| t.reason.as_deref()) == Some("OOMKilled");
                PodState::process(
                    format!(
                        "{pod}: {what} {c} CrashLoopBackOff ({} restarts{exit})",
                        cs.restart_count
                    ),
                    if oom {
                        format!(
                            "it ran out of memory: raise its resources.limits.memory; {logs} --previous"
                        )
                    } else {
                        format!("read why it exits: {logs} --previous")
                    },
                )
            }
            "ImagePullBackOff" | "ErrImagePull" | "InvalidImageName" | "ErrImageNeverPull" => {
                PodState::problem(
                    format!("{pod}: {reason} for image {}", cs.image),
                    image_hint(&cs.image, &describe),
                )
            }
            "CreateContainerConfigError" | "CreateContainerError" => PodState::problem(
                format!("{pod}: {what} {c} {reason}: {message}"),
                if message.contains("secret") {
                    "create the Secret it names, with the keys it names (objectStore.existingSecret \
                     needs access-key and secret-key), or fix the value that names it"
                        .to_owned()
                } else {
                    describe
                },
            ),
            "ContainerCreating" | "PodInitializing" => PodState::problem(
                format!("{pod}: {what} {c} {reason}"),
                format!(
                    "still starting: wait and re-run; if it stays, kubectl get events -n {ns} \
                     --field-selector involvedObject.name={pod} (volumes, PVCs, image pulls)"
                ),
            ),
            _ => PodState::problem(
                format!(
                    "{pod}: {what} {c} {reason}{}",
                    if message.is_empty() {
                        String::new()
                    } else {
                        format!(": {message}")
                    }
                ),
                describe,
            ),
        };
    }
    if let Some(t) = state.and_then(|s| s.terminated.as_ref()) {
        return PodState::process(
            format!(
                "{pod}: {what} {c} exited ({}{})",
                t.exit_code,
                t.reason
                    .as_deref()
                    .map(|r| format!(" {r}"))
                    .unwrap_or_default()
            ),
            logs,
        );
    }
    PodState::process(
        format!("{pod}: {what} {c} running but not ready (readiness probe failing)"),
        format!("{describe} shows the probe's last error; {logs}"),
    )
}

fn image_hint(image: &str, describe: &str) -> String {
    if image.starts_with("telemetry-lake:") {
        format!(
            "build our image where the cluster sees it: docker build -f deploy/docker/Dockerfile -t {image} . \
             (or set image.repository to a registry that has it)"
        )
    } else {
        format!(
            "check that {image} exists and the nodes can pull it (registry reachable, \
             imagePullSecrets for a private one): {describe}"
        )
    }
}

fn scheduling_hint(ns: &str, message: &str) -> String {
    if message.contains("PersistentVolumeClaim") {
        format!(
            "its PVC is not bound: kubectl get pvc -n {ns}; install a default StorageClass \
             (kubectl get storageclass) or set the component's storageClass"
        )
    } else if message.contains("Insufficient") {
        "the nodes lack CPU or memory for its requests: lower its resources.requests or add capacity".to_owned()
    } else {
        format!("kubectl get events -n {ns} --sort-by=.lastTimestamp")
    }
}

/// One "service <name>" row per service of every component that is (or must be) deployed.
pub(crate) fn services(ns: &str, layout: &Layout, snapshot: &Snapshot) -> Vec<Check> {
    let mut checks = Vec::new();
    for c in COMPONENTS {
        if layout.excludes(c) || (workload(snapshot, c).is_none() && !layout.requires(c)) {
            continue;
        }
        for name in layout.services(c) {
            checks.push(service(ns, snapshot, name, c));
        }
    }
    checks
}

fn service(ns: &str, snapshot: &Snapshot, name: &str, c: &Component) -> Check {
    let check = format!("service {name}");
    let Some(svc) = snapshot
        .services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(name))
    else {
        return Check::fail(
            check,
            "not found",
            format!("{}; kubectl get svc -n {ns}", reinstall(ns)),
        );
    };
    let spec = svc.spec.as_ref();
    let address = match spec.and_then(|s| s.cluster_ip.as_deref()) {
        Some("None") => "headless".to_owned(),
        Some(ip) => format!("ClusterIP {ip}"),
        None => "no ClusterIP".to_owned(),
    };
    let ports: Vec<String> = spec
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .map(|p| p.port.to_string())
        .collect();
    let ready = snapshot
        .endpoint_slices
        .iter()
        .filter(|s| {
            s.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("kubernetes.io/service-name"))
                .is_some_and(|n| n == name)
        })
        .flat_map(|s| &s.endpoints)
        // An unset `ready` means unknown, which consumers are told to treat as ready.
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
        .count();
    let ports = match ports.len() {
        0 => String::new(),
        1 => format!(", port {}", ports[0]),
        _ => format!(", ports {}", ports.join(",")),
    };
    if ready == 0 {
        let selector = spec
            .and_then(|s| s.selector.as_ref())
            .and_then(|s| s.get("app"))
            .map(|app| format!("app={app}"))
            .unwrap_or_else(|| "its selector".to_owned());
        Check::fail(
            check,
            format!("{address}{ports}, no ready endpoints"),
            format!("no ready pod matches {selector}: see `pods {}`", c.name),
        )
    } else {
        let s = if ready == 1 { "" } else { "s" };
        Check::ok(
            check,
            format!("{address}{ports}, {ready} ready endpoint{s}"),
        )
    }
}

/// The object store row: which one this release uses, so the reader knows what was checked.
pub(crate) fn object_store(layout: &Layout) -> Check {
    match &layout.object_store {
        ObjectStore::Minio { bucket, secret } => Check::ok(
            "object store",
            format!(
                "MinIO in the namespace (http://minio:9000), bucket {bucket}, keys in Secret {secret}"
            ),
        ),
        ObjectStore::External {
            endpoint,
            bucket,
            secret,
        } if endpoint.trim_end_matches('/') == VERSITYGW_ENDPOINT => Check::ok(
            "object store",
            format!(
                "versitygw in the namespace ({VERSITYGW_ENDPOINT}), bucket {bucket}, keys in Secret {secret}"
            ),
        ),
        ObjectStore::External {
            endpoint,
            bucket,
            secret,
        } => Check::ok(
            "object store",
            format!(
                "external S3 {endpoint}, bucket {bucket}, keys in Secret {secret}; no MinIO expected"
            ),
        ),
        ObjectStore::Unknown => Check::warn(
            "object store",
            "unknown: Deployment nessie not found, so its S3 settings cannot be read",
            "fix the nessie rows first",
        ),
    }
}

/// `kafka-topics.sh --list` run in the broker pod: the broker answers and our topics exist.
pub(crate) fn kafka_topics(ns: &str, layout: &Layout, probe: &Probe<ExecReply>) -> Check {
    let check = "kafka topics";
    let by_hand = format!(
        "kubectl exec -n {ns} kafka-0 -c kafka -- /opt/kafka/bin/kafka-topics.sh --list --bootstrap-server localhost:9092"
    );
    let reply = match probe {
        Probe::Skipped { why, hint } => {
            return Check::warn(check, format!("not checked: {why}"), hint.clone());
        }
        Probe::Ran(Err(e)) => {
            return Check::warn(
                check,
                format!("could not run kafka-topics.sh in kafka-0: {e}"),
                format!("doctor needs create on pods/exec; by hand: {by_hand}"),
            );
        }
        Probe::Ran(Ok(reply)) => reply,
    };
    if reply.exit_code != 0 {
        return Check::fail(
            check,
            format!(
                "kafka-topics.sh --list failed (exit {}): {}",
                reply.exit_code,
                last_error_line(&reply.stderr)
            ),
            format!(
                "the broker does not answer on localhost:9092: kubectl logs -n {ns} kafka-0 -c kafka; {}",
                component("kafka").tip
            ),
        );
    }
    let listed: Vec<&str> = reply
        .stdout
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let missing: Vec<&str> = layout
        .topics
        .iter()
        .map(String::as_str)
        .filter(|t| !listed.contains(t))
        .collect();
    if missing.is_empty() {
        Check::ok(
            check,
            format!(
                "kafka-0 answers; {} present ({} listed)",
                layout.topics.join(", "),
                listed.len()
            ),
        )
    } else {
        let listed = if listed.is_empty() {
            "none".to_owned()
        } else {
            listed.join(", ")
        };
        Check::fail(
            check,
            format!("missing: {}; listed: {listed}", missing.join(", ")),
            format!(
                "the topics sidecar creates them at start: kubectl logs -n {ns} kafka-0 -c topics; by hand: \
                 kubectl exec -n {ns} kafka-0 -c kafka -- /opt/kafka/bin/kafka-topics.sh --bootstrap-server \
                 localhost:9092 --create --if-not-exists --topic {}",
                missing[0]
            ),
        )
    }
}

/// The last line of a tool's stderr that looks like the error (JVM tools log a lot first).
fn last_error_line(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let line = lines
        .iter()
        .rev()
        .find(|l| l.contains("Exception") || l.contains("Error") || l.contains("ERROR"))
        .or(lines.last())
        .copied()
        .unwrap_or("no output");
    shorten(line)
}

/// A body, an error or a line on one row: whitespace collapsed, at most 160 characters.
fn shorten(text: &str) -> String {
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match text.char_indices().nth(160) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text,
    }
}

/// What an HTTP error body says: a JSON `message` (the API server's Status, Nessie's errors) or
/// the text itself.
fn body_summary(body: &str) -> String {
    let message = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message")?.as_str().map(str::to_owned));
    let text = message.unwrap_or_else(|| body.to_owned());
    if text.trim().is_empty() {
        "empty body".to_owned()
    } else {
        shorten(&text)
    }
}

/// Nessie's `/api/v2/config`, the seed's "Test Nessie", through the service proxy.
pub(crate) fn nessie_config(ns: &str, reply: &Result<HttpReply, ApiError>) -> Check {
    let check = "nessie /api/v2/config";
    let by_hand = format!(
        "kubectl get --raw /api/v1/namespaces/{ns}/services/nessie:19120/proxy/api/v2/config"
    );
    let logs = format!("kubectl logs -n {ns} deployment/nessie");
    let reply = match reply {
        Ok(reply) => reply,
        Err(e) => return proxy_error(check, e, &by_hand),
    };
    match reply.status {
        200 => {
            let config = serde_json::from_str::<serde_json::Value>(&reply.body).ok();
            let field = |k: &str| config.as_ref().and_then(|c| c.get(k)).cloned();
            match field("defaultBranch").as_ref().and_then(|b| b.as_str()) {
                Some(branch) => {
                    let versions = match (
                        field("minSupportedApiVersion"),
                        field("maxSupportedApiVersion"),
                    ) {
                        (Some(min), Some(max)) => format!(", API v{min}–v{max}"),
                        _ => String::new(),
                    };
                    Check::ok(check, format!("defaultBranch {branch}{versions}"))
                }
                None => Check::fail(
                    check,
                    format!(
                        "HTTP 200 without defaultBranch: {}",
                        body_summary(&reply.body)
                    ),
                    format!("is Nessie what answers behind service nessie? {logs}"),
                ),
            }
        }
        401 | 403 => forbidden_proxy(check, reply, &by_hand),
        code => Check::fail(
            check,
            format!(
                "HTTP {code} through the service proxy: {}",
                body_summary(&reply.body)
            ),
            if code == 503 {
                format!(
                    "no ready Nessie behind service nessie, or Nessie is failing: {logs}; {}",
                    component("nessie").tip
                )
            } else {
                logs
            },
        ),
    }
}

/// MinIO's `/minio/health/live`, the seed's "Test MinIO", through the service proxy.
pub(crate) fn minio_live(ns: &str, reply: &Result<HttpReply, ApiError>) -> Check {
    let check = "minio /minio/health/live";
    let by_hand = format!(
        "kubectl get --raw /api/v1/namespaces/{ns}/services/minio:9000/proxy/minio/health/live"
    );
    let reply = match reply {
        Ok(reply) => reply,
        Err(e) => return proxy_error(check, e, &by_hand),
    };
    match reply.status {
        200 => Check::ok(check, "live (HTTP 200)"),
        401 | 403 => forbidden_proxy(check, reply, &by_hand),
        code => Check::fail(
            check,
            format!(
                "HTTP {code} through the service proxy: {}",
                body_summary(&reply.body)
            ),
            format!(
                "kubectl logs -n {ns} minio-0 -c minio; {}",
                component("minio").tip
            ),
        ),
    }
}

fn proxy_error(check: &str, err: &ApiError, by_hand: &str) -> Check {
    let (ApiError::Unreachable(m)
    | ApiError::Unauthorized(m)
    | ApiError::Forbidden(m)
    | ApiError::NotFound(m)
    | ApiError::Other(m)) = err;
    Check::fail(
        check,
        format!("request through the API server failed: {m}"),
        format!("by hand: {by_hand}"),
    )
}

fn forbidden_proxy(check: &str, reply: &HttpReply, by_hand: &str) -> Check {
    Check::warn(
        check,
        format!(
            "not checked: HTTP {}: {}",
            reply.status,
            body_summary(&reply.body)
        ),
        format!("doctor needs get on services/proxy; by hand: {by_hand}"),
    )
}

/// Shell run in the MinIO pod with MinIO's own root keys (the seed's Step 7, `mc ls`). `$1` is
/// the bucket, passed as an argument so that no name is ever parsed by the shell.
pub(crate) const MINIO_BUCKET_SCRIPT: &str = r#"mc alias set doctor http://127.0.0.1:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null && mc ls "doctor/$1" >/dev/null"#;

/// Shell run in the DuckDB pod for an external store: a SigV4-signed HEAD of the bucket with the
/// keys the pod has from the object store's Secret (doctor never reads the Secret), printing the
/// HTTP status. The keys go to curl on stdin, not on its command line. S3 wants the payload's
/// hash in a signed header (versitygw answers 403 without it; the local cluster found this).
pub(crate) const S3_BUCKET_SCRIPT: &str = r#"scheme=http; [ "$S3_USE_SSL" = true ] && scheme=https
if [ "$S3_URL_STYLE" = path ]; then url="$scheme://$S3_ENDPOINT/$1"; else url="$scheme://$1.$S3_ENDPOINT/"; fi
printf 'user = "%s:%s"\n' "$S3_ACCESS_KEY" "$S3_SECRET_KEY" | curl -sS -K - -o /dev/null -w '%{http_code}' --max-time 20 --head --aws-sigv4 "aws:amz:$S3_REGION:s3" -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' "$url""#;

/// The bucket row. `None` when the object store is unknown (its row says so already).
pub(crate) fn bucket(ns: &str, layout: &Layout, probe: &Probe<ExecReply>) -> Option<Check> {
    let name = layout.object_store.bucket()?;
    let check = format!("bucket {name}");
    let secret = layout.object_store.secret();
    let reply = match probe {
        Probe::Skipped { why, hint } => {
            return Some(Check::warn(
                check,
                format!("not checked: {why}"),
                hint.clone(),
            ));
        }
        Probe::Ran(Err(e)) => {
            return Some(Check::warn(
                check,
                format!("could not run the check in its pod: {e}"),
                "doctor needs create on pods/exec",
            ));
        }
        Probe::Ran(Ok(reply)) => reply,
    };
    Some(match &layout.object_store {
        ObjectStore::Minio { .. } => {
            if reply.exit_code == 0 {
                Check::ok(check, "exists (mc ls in minio-0)")
            } else if reply.stderr.contains("does not exist") {
                Check::fail(
                    check,
                    "missing in MinIO",
                    format!(
                        "the create-bucket init container makes it when minio-0 starts: kubectl logs -n {ns} minio-0 \
                         -c create-bucket; start it again with kubectl delete pod -n {ns} minio-0"
                    ),
                )
            } else {
                Check::fail(
                    check,
                    format!(
                        "mc failed (exit {}): {}",
                        reply.exit_code,
                        last_error_line(&reply.stderr)
                    ),
                    format!("kubectl logs -n {ns} minio-0 -c minio"),
                )
            }
        }
        ObjectStore::External { endpoint, .. } => match reply.stdout.trim() {
            "200" => Check::ok(
                check,
                format!(
                    "exists: signed HEAD from duckdb-0 with Secret {secret}'s keys answered 200"
                ),
            ),
            "404" => Check::fail(
                check,
                format!("does not exist at {endpoint}"),
                if endpoint.trim_end_matches('/') == VERSITYGW_ENDPOINT {
                    format!(
                        "versitygw-0's create-bucket init container makes it at start: kubectl delete pod -n {ns} versitygw-0"
                    )
                } else {
                    "create it: the chart only creates the bucket of MinIO or versitygw in the namespace \
                     (objectStore.external.bucket names it)"
                        .to_owned()
                },
            ),
            "403" => Check::fail(
                check,
                format!("access denied to the keys of Secret {secret}"),
                format!(
                    "check the keys in Secret {secret} (objectStore.secretKeys) and the bucket's policy: \
                     kubectl describe secret -n {ns} {secret}"
                ),
            ),
            code @ ("301" | "400") => Check::fail(
                check,
                format!("HTTP {code}: wrong region or addressing style for {endpoint}"),
                "set objectStore.region and objectStore.external.pathStyle for this endpoint",
            ),
            "000" | "" => Check::fail(
                check,
                format!(
                    "{endpoint} unreachable from the cluster: {}",
                    last_error_line(&reply.stderr)
                ),
                "check objectStore.external.endpoint, DNS and egress from the namespace (NetworkPolicies, proxies)",
            ),
            code => Check::warn(
                check,
                format!("HEAD answered HTTP {code}"),
                format!("by hand: kubectl exec -n {ns} duckdb-0 -- curl -I {endpoint}"),
            ),
        },
        ObjectStore::Unknown => return None,
    })
}

/// Whether pod `name` exists and is Ready (exec needs a running container).
pub(crate) fn pod_ready(snapshot: &Snapshot, name: &str) -> bool {
    snapshot
        .pods
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some(name))
        .and_then(|p| p.status.as_ref()?.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}
