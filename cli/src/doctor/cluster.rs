//! Everything doctor asks the Kubernetes API: the namespace's objects in one [`Snapshot`], GETs
//! through the API server's service proxy, and commands run in pods ([`PodExec`]). Nothing here
//! judges what it fetched; that is `checks`.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, AttachParams, ListParams};
use kube::client::Body;
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::io::AsyncReadExt;
use tokio::time::timeout;

/// Longest wait for one list or GET: the API server answers these in milliseconds when healthy.
const API_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest wait for a command in a pod (`kafka-topics.sh` starts a JVM).
const EXEC_TIMEOUT: Duration = Duration::from_secs(90);

/// The namespace's objects, listed once; every check reads from this.
#[derive(Debug, Default, Clone)]
pub(crate) struct Snapshot {
    pub(crate) pods: Vec<Pod>,
    pub(crate) services: Vec<Service>,
    pub(crate) endpoint_slices: Vec<EndpointSlice>,
    pub(crate) deployments: Vec<Deployment>,
    pub(crate) statefulsets: Vec<StatefulSet>,
}

/// Why a request to the API server itself failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ApiError {
    /// No answer: connection refused, DNS, TLS, timeout.
    Unreachable(String),
    /// 401: the kubeconfig's credentials were rejected.
    Unauthorized(String),
    /// 403: RBAC does not allow the request.
    Forbidden(String),
    /// 404.
    NotFound(String),
    /// Any other answer.
    Other(String),
}

impl ApiError {
    fn from_kube(err: kube::Error) -> ApiError {
        match err {
            kube::Error::Api(status) => {
                let message = if status.message.is_empty() {
                    format!("HTTP {}", status.code)
                } else {
                    status.message.clone()
                };
                match status.code {
                    401 => ApiError::Unauthorized(message),
                    403 => ApiError::Forbidden(message),
                    404 => ApiError::NotFound(message),
                    _ => ApiError::Other(format!("HTTP {}: {message}", status.code)),
                }
            }
            kube::Error::SerdeError(e) => {
                ApiError::Other(format!("unexpected answer from the API server: {e}"))
            }
            // Everything else failed before an HTTP answer arrived.
            other => ApiError::Unreachable(chain(&other)),
        }
    }
}

/// An error and its sources on one line ("a: b: c"), without repeats: kube's and hyper's
/// messages often embed their source's text.
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = e.source();
    }
    text
}

/// The Kubernetes API of one namespace.
#[derive(Clone)]
pub(crate) struct Cluster {
    client: Client,
    namespace: String,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    pub(crate) fn new(client: Client, namespace: &str) -> Cluster {
        Cluster {
            client,
            namespace: namespace.to_owned(),
        }
    }

    /// Whether the namespace exists (`Ok(false)` on 404).
    pub(crate) async fn namespace_exists(&self) -> Result<bool, ApiError> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        match with_timeout(api.get_opt(&self.namespace)).await? {
            Ok(found) => Ok(found.is_some()),
            Err(e) => Err(ApiError::from_kube(e)),
        }
    }

    /// Lists everything the checks read, concurrently.
    pub(crate) async fn snapshot(&self) -> Result<Snapshot, ApiError> {
        let (pods, services, endpoint_slices, deployments, statefulsets) = futures::try_join!(
            self.list::<Pod>(),
            self.list::<Service>(),
            self.list::<EndpointSlice>(),
            self.list::<Deployment>(),
            self.list::<StatefulSet>(),
        )?;
        Ok(Snapshot {
            pods,
            services,
            endpoint_slices,
            deployments,
            statefulsets,
        })
    }

    async fn list<K>(&self) -> Result<Vec<K>, ApiError>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), &self.namespace);
        match with_timeout(api.list(&ListParams::default())).await? {
            Ok(list) => Ok(list.items),
            Err(e) => Err(ApiError::from_kube(e)),
        }
    }

    /// GET `path` of `service` (`name:port`) through the API server's service proxy, the way
    /// `kubectl get --raw` does: no port-forward, no route from this machine into the cluster.
    pub(crate) async fn proxy_get(&self, service: &str, path: &str) -> Result<HttpReply, ApiError> {
        let uri = format!(
            "/api/v1/namespaces/{}/services/{service}/proxy{path}",
            self.namespace
        );
        let request = http::Request::get(uri)
            .body(Body::empty())
            .map_err(|e| ApiError::Other(e.to_string()))?;
        // `send`, not `request_text`: the status and body are the backend's, and a backend's
        // JSON error would be mistaken for an API server Status.
        let response = match with_timeout(self.client.send(request)).await? {
            Ok(response) => response,
            Err(e) => return Err(ApiError::from_kube(e)),
        };
        let status = response.status().as_u16();
        let body = with_timeout(response.into_body().collect_bytes())
            .await?
            .map_err(|e| ApiError::Unreachable(chain(&e)))?;
        Ok(HttpReply {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

async fn with_timeout<T>(future: impl Future<Output = T>) -> Result<T, ApiError> {
    timeout(API_TIMEOUT, future)
        .await
        .map_err(|_| ApiError::Unreachable(format!("no answer within {} s", API_TIMEOUT.as_secs())))
}

/// An HTTP answer from a service behind the proxy (or the proxy's own error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpReply {
    pub(crate) status: u16,
    pub(crate) body: String,
}

/// A command that ran to completion in a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExecReply {
    pub(crate) exit_code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// Runs a command in a container, like `kubectl exec`. A trait so that tests can answer without
/// a WebSocket; `Err` means the command could not be run or its outcome is unknown.
pub(crate) trait PodExec: Sync {
    fn exec(
        &self,
        pod: &str,
        container: &str,
        command: Vec<String>,
    ) -> impl Future<Output = Result<ExecReply, String>> + Send;
}

/// [`PodExec`] over the API server's `pods/exec` WebSocket.
#[derive(Debug, Clone)]
pub(crate) struct KubeExec(pub(crate) Cluster);

impl PodExec for KubeExec {
    async fn exec(
        &self,
        pod: &str,
        container: &str,
        command: Vec<String>,
    ) -> Result<ExecReply, String> {
        let api: Api<Pod> = Api::namespaced(self.0.client.clone(), &self.0.namespace);
        let params = AttachParams::default().container(container);
        let run = async {
            let mut process = api.exec(pod, command, &params).await.map_err(|e| {
                match ApiError::from_kube(e) {
                    ApiError::Forbidden(m) => format!("forbidden: {m}"),
                    ApiError::Unreachable(m)
                    | ApiError::Unauthorized(m)
                    | ApiError::NotFound(m)
                    | ApiError::Other(m) => m,
                }
            })?;
            let mut stdout = process.stdout().ok_or("exec gave no stdout")?;
            let mut stderr = process.stderr().ok_or("exec gave no stderr")?;
            let status = process.take_status().ok_or("exec gave no status")?;
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let (read_out, read_err) =
                tokio::join!(stdout.read_to_end(&mut out), stderr.read_to_end(&mut err));
            read_out.and(read_err).map_err(|e| e.to_string())?;
            let status = status.await;
            process.join().await.map_err(|e| chain(&e))?;
            let exit_code = match status {
                Some(s) if s.status.as_deref() == Some("Success") => 0,
                // A non-zero exit is a Failure whose cause `ExitCode` carries the code.
                Some(s) => s
                    .details
                    .iter()
                    .flat_map(|d| d.causes.iter().flatten())
                    .find(|c| c.reason.as_deref() == Some("ExitCode"))
                    .and_then(|c| c.message.as_deref()?.parse().ok())
                    .ok_or_else(|| format!("exec failed: {}", s.message.unwrap_or_default()))?,
                None => return Err("exec ended without a status".to_owned()),
            };
            Ok(ExecReply {
                exit_code,
                stdout: String::from_utf8_lossy(&out).into_owned(),
                stderr: String::from_utf8_lossy(&err).into_owned(),
            })
        };
        timeout(EXEC_TIMEOUT, run)
            .await
            .map_err(|_| format!("no result within {} s", EXEC_TIMEOUT.as_secs()))?
    }
}
