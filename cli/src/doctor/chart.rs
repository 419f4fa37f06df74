//! What `deploy/helm/telemetry-lake` deploys, as doctor expects to find it: the workloads and
//! services of each component (their names are fixed by the chart because they are the DNS
//! contract), and the [`Layout`] read back from the workloads' own specs — which object store
//! Nessie uses, which topics the Kafka pod creates, whether the MinIO console is on — so that
//! doctor checks what this release actually enabled rather than the chart's defaults.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{EnvVar, PodSpec};

use super::cluster::Snapshot;

/// The S3 endpoint Nessie is given when the chart runs MinIO (`tlake.s3.endpoint`).
pub(crate) const MINIO_ENDPOINT: &str = "http://minio:9000";
/// The S3 endpoint Nessie is given when the chart runs versitygw (`objectStore.type: versitygw`).
pub(crate) const VERSITYGW_ENDPOINT: &str = "http://versitygw:9000";
/// Secret the chart creates when `objectStore.existingSecret` is empty.
pub(crate) const DEFAULT_S3_SECRET: &str = "s3-credentials";
/// `kafka.topics.logs`, used when the Kafka pod does not say which topics it creates.
pub(crate) const DEFAULT_TOPIC: &str = "telemetry-logs";
/// `minio.bucket`, used when neither Nessie nor MinIO says which bucket.
pub(crate) const DEFAULT_BUCKET: &str = "telemetrylake";

/// Service proxy targets (`<service>:<port>`) of the HTTP checks.
pub(crate) const NESSIE_PROXY: &str = "nessie:19120";
pub(crate) const MINIO_PROXY: &str = "minio:9000";

/// Kubernetes workload kinds the chart uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Deployment,
    StatefulSet,
}

impl Kind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Deployment => "Deployment",
            Kind::StatefulSet => "StatefulSet",
        }
    }

    /// `kubectl` resource name, as in `kubectl describe statefulset/kafka`.
    pub(crate) fn kubectl(self) -> &'static str {
        match self {
            Kind::Deployment => "deployment",
            Kind::StatefulSet => "statefulset",
        }
    }
}

/// When a component belongs in the namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Presence {
    /// Always rendered by the chart.
    Always,
    /// The object store the chart runs in the namespace when Nessie's S3 endpoint is this one
    /// (`objectStore.type` `minio` or `versitygw`).
    StoreAt(&'static str),
    /// Rendered unless the named value turns it off.
    Optional(&'static str),
}

/// One component of the chart: its workload (named like its `app` label) and services.
#[derive(Debug)]
pub(crate) struct Component {
    pub(crate) name: &'static str,
    pub(crate) kind: Kind,
    pub(crate) services: &'static [&'static str],
    pub(crate) presence: Presence,
    /// What the seed's troubleshooting (and our chart's notes) suggest when it is unhealthy.
    pub(crate) tip: &'static str,
}

/// Every component of the chart, in the order the table lists them.
pub(crate) const COMPONENTS: &[Component] = &[
    Component {
        name: "kafka",
        kind: Kind::StatefulSet,
        services: &["kafka", "kafka-headless"],
        presence: Presence::Optional("kafka.enabled=false"),
        tip: "Kafka not starting: check the KRaft settings (ConfigMap kafka-config) and that a \
              StorageClass provisions its PVC (kubectl get pvc)",
    },
    Component {
        name: "minio",
        kind: Kind::StatefulSet,
        services: &["minio", "minio-console"],
        presence: Presence::StoreAt(MINIO_ENDPOINT),
        tip: "MinIO serves only after its create-bucket init container made the bucket \
              (kubectl logs minio-0 -c create-bucket)",
    },
    Component {
        name: "versitygw",
        kind: Kind::StatefulSet,
        services: &["versitygw"],
        presence: Presence::StoreAt(VERSITYGW_ENDPOINT),
        tip: "versitygw serves the bucket directory its create-bucket init container made \
              (kubectl logs versitygw-0 -c create-bucket); its root keys are the object store's Secret",
    },
    Component {
        name: "nessie",
        kind: Kind::Deployment,
        services: &["nessie"],
        presence: Presence::Always,
        tip: "Nessie unhealthy (503): its probes must use the management port 9000, and the S3 \
              keys come from the object store's Secret through the quarkus secrets syntax",
    },
    Component {
        name: "duckdb",
        kind: Kind::StatefulSet,
        services: &["duckdb"],
        presence: Presence::Optional("duckdb.enabled=false"),
        tip: "the install init container downloads the DuckDB CLI and extensions (needs egress, or \
              duckdb.cliUrl/extensionRepository mirrors); the image must be glibc-based, not Alpine",
    },
    Component {
        name: "ingest-gateway",
        kind: Kind::Deployment,
        services: &["ingest-gateway"],
        presence: Presence::Optional("gateway.enabled=false"),
        tip: "the gateway needs Kafka at kafka:9092 and, with auth or TLS on, its Secrets",
    },
    Component {
        name: "compactor",
        kind: Kind::Deployment,
        services: &["compactor"],
        presence: Presence::Optional("compactor.enabled=false"),
        tip: "the compactor needs Kafka, Nessie and the S3 keys of the object store's Secret",
    },
];

/// The component called `name`.
pub(crate) fn component(name: &str) -> &'static Component {
    COMPONENTS
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| unreachable!("no component {name}"))
}

/// A Deployment or StatefulSet of the snapshot, reduced to what the checks use.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Workload<'a> {
    pub(crate) replicas: i32,
    pub(crate) selector: Option<&'a BTreeMap<String, String>>,
    pub(crate) pod: Option<&'a PodSpec>,
}

/// The workload of `component` in the snapshot, if the chart rendered it.
pub(crate) fn workload<'a>(snapshot: &'a Snapshot, component: &Component) -> Option<Workload<'a>> {
    match component.kind {
        Kind::Deployment => snapshot
            .deployments
            .iter()
            .find(|d| d.metadata.name.as_deref() == Some(component.name))
            .map(deployment),
        Kind::StatefulSet => snapshot
            .statefulsets
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(component.name))
            .map(statefulset),
    }
}

fn deployment(d: &Deployment) -> Workload<'_> {
    let spec = d.spec.as_ref();
    Workload {
        replicas: spec.and_then(|s| s.replicas).unwrap_or(1),
        selector: spec.and_then(|s| s.selector.match_labels.as_ref()),
        pod: spec.and_then(|s| s.template.spec.as_ref()),
    }
}

fn statefulset(s: &StatefulSet) -> Workload<'_> {
    let spec = s.spec.as_ref();
    Workload {
        replicas: spec.and_then(|s| s.replicas).unwrap_or(1),
        selector: spec.and_then(|s| s.selector.match_labels.as_ref()),
        pod: spec.and_then(|s| s.template.spec.as_ref()),
    }
}

/// The environment variable `name` of container (or init container) `container`.
fn env<'a>(pod: Option<&'a PodSpec>, container: &str, name: &str) -> Option<&'a EnvVar> {
    let pod = pod?;
    pod.containers
        .iter()
        .chain(pod.init_containers.iter().flatten())
        .filter(|c| c.name == container)
        .flat_map(|c| c.env.iter().flatten())
        .find(|e| e.name == name)
}

fn env_value<'a>(pod: Option<&'a PodSpec>, container: &str, name: &str) -> Option<&'a str> {
    env(pod, container, name)?.value.as_deref()
}

/// Where Iceberg data lives, as Nessie is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ObjectStore {
    /// MinIO in the namespace (`objectStore.type: minio`).
    Minio { bucket: String, secret: String },
    /// An existing S3 endpoint (`objectStore.type: external`).
    External {
        endpoint: String,
        bucket: String,
        secret: String,
    },
    /// Nessie's Deployment is missing, so its S3 settings are unknown.
    Unknown,
}

impl ObjectStore {
    pub(crate) fn bucket(&self) -> Option<&str> {
        match self {
            ObjectStore::Minio { bucket, .. } | ObjectStore::External { bucket, .. } => {
                Some(bucket)
            }
            ObjectStore::Unknown => None,
        }
    }

    pub(crate) fn secret(&self) -> &str {
        match self {
            ObjectStore::Minio { secret, .. } | ObjectStore::External { secret, .. } => secret,
            ObjectStore::Unknown => DEFAULT_S3_SECRET,
        }
    }

    /// Nessie's S3 endpoint, when known.
    pub(crate) fn endpoint(&self) -> Option<&str> {
        match self {
            ObjectStore::Minio { .. } => Some(MINIO_ENDPOINT),
            ObjectStore::External { endpoint, .. } => Some(endpoint.trim_end_matches('/')),
            ObjectStore::Unknown => None,
        }
    }
}

/// What this release enabled, read from the workloads' specs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    pub(crate) object_store: ObjectStore,
    /// Topics the Kafka pod's `topics` sidecar creates (`kafka.topics` + the gateway's streams).
    pub(crate) topics: Vec<String>,
    /// `minio.console.enabled` (the chart sets `MINIO_BROWSER=off` when it is not).
    pub(crate) minio_console: bool,
}

impl Layout {
    pub(crate) fn read(snapshot: &Snapshot) -> Layout {
        let nessie = workload(snapshot, component("nessie")).and_then(|w| w.pod);
        let minio = workload(snapshot, component("minio")).and_then(|w| w.pod);
        let versitygw = workload(snapshot, component("versitygw")).and_then(|w| w.pod);
        let kafka = workload(snapshot, component("kafka")).and_then(|w| w.pod);

        let minio_bucket = || {
            env_value(minio, "create-bucket", "BUCKET")
                .unwrap_or(DEFAULT_BUCKET)
                .to_owned()
        };
        let object_store = match nessie {
            Some(pod) => {
                let endpoint = env_value(
                    Some(pod),
                    "nessie",
                    "NESSIE_CATALOG_SERVICE_S3_DEFAULT-OPTIONS_ENDPOINT",
                )
                .unwrap_or(MINIO_ENDPOINT);
                let bucket = warehouse_bucket(pod);
                // The Secret Nessie's S3 access key comes from (`tlake.s3.secretName`).
                let secret = env(Some(pod), "nessie", "MY-SECRETS_S3-DEFAULT_NAME")
                    .and_then(|e| e.value_from.as_ref()?.secret_key_ref.as_ref())
                    .map(|r| r.name.clone())
                    .unwrap_or_else(|| DEFAULT_S3_SECRET.to_owned());
                if endpoint.trim_end_matches('/') == MINIO_ENDPOINT {
                    ObjectStore::Minio {
                        bucket: bucket.unwrap_or_else(minio_bucket),
                        secret,
                    }
                } else {
                    ObjectStore::External {
                        endpoint: endpoint.to_owned(),
                        bucket: bucket.unwrap_or_else(|| DEFAULT_BUCKET.to_owned()),
                        secret,
                    }
                }
            }
            // Without Nessie, a MinIO or versitygw StatefulSet is the best evidence of the
            // object store.
            None if minio.is_some() => ObjectStore::Minio {
                bucket: minio_bucket(),
                secret: DEFAULT_S3_SECRET.to_owned(),
            },
            None if versitygw.is_some() => ObjectStore::External {
                endpoint: VERSITYGW_ENDPOINT.to_owned(),
                bucket: env_value(versitygw, "create-bucket", "BUCKET")
                    .unwrap_or(DEFAULT_BUCKET)
                    .to_owned(),
                secret: DEFAULT_S3_SECRET.to_owned(),
            },
            None => ObjectStore::Unknown,
        };

        let topics = env_value(kafka, "topics", "TOPICS")
            .map(|t| t.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| vec![DEFAULT_TOPIC.to_owned()]);
        let minio_console = env_value(minio, "minio", "MINIO_BROWSER") != Some("off");

        Layout {
            object_store,
            topics,
            minio_console,
        }
    }

    /// Whether `component` belongs in the namespace whether or not its workload exists.
    pub(crate) fn requires(&self, component: &Component) -> bool {
        match component.presence {
            Presence::Always => true,
            Presence::StoreAt(endpoint) => self.object_store.endpoint() == Some(endpoint),
            Presence::Optional(_) => false,
        }
    }

    /// Whether `component` does not belong here at all (MinIO when Nessie uses another store).
    pub(crate) fn excludes(&self, component: &Component) -> bool {
        match component.presence {
            Presence::StoreAt(endpoint) => {
                self.object_store.endpoint().is_some_and(|e| e != endpoint)
            }
            _ => false,
        }
    }

    /// The services `component` should have.
    pub(crate) fn services(&self, component: &Component) -> Vec<&'static str> {
        component
            .services
            .iter()
            .copied()
            .filter(|s| *s != "minio-console" || self.minio_console)
            .collect()
    }
}

/// The bucket of the default warehouse: `NESSIE_CATALOG_WAREHOUSES_<WH>_LOCATION=s3://bucket`.
fn warehouse_bucket(pod: &PodSpec) -> Option<String> {
    let nessie = pod.containers.iter().find(|c| c.name == "nessie")?;
    let warehouse = nessie
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "NESSIE_CATALOG_DEFAULT-WAREHOUSE")
        .and_then(|e| e.value.as_deref())
        .map(str::to_uppercase);
    nessie
        .env
        .iter()
        .flatten()
        .filter(|e| {
            e.name
                .strip_prefix("NESSIE_CATALOG_WAREHOUSES_")
                .and_then(|rest| rest.strip_suffix("_LOCATION"))
                .is_some_and(|wh| warehouse.as_deref().is_none_or(|w| w == wh))
        })
        .find_map(|e| e.value.as_deref()?.strip_prefix("s3://"))
        .map(|rest| rest.split('/').next().unwrap_or(rest).to_owned())
}
