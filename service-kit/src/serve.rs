//! The metrics and health endpoint every binary of ours serves on its own
//! port: `GET /metrics` (OpenMetrics text) and `GET /healthz` (200 `ok` when
//! healthy, 503 `starting` before).

use std::future::Future;
use std::sync::Arc;

use axum::http::{StatusCode, header};
use axum::routing::get;
use tokio::net::TcpListener;

/// What the endpoint shows: the metrics, and whether the process is ready.
pub trait Exposition: Send + Sync + 'static {
    /// The OpenMetrics text of every metric.
    fn encode(&self) -> String;
    /// Whether `/healthz` answers 200 (else 503).
    fn healthy(&self) -> bool;
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `/metrics` and `/healthz` on `listener` until `shutdown` completes.
pub async fn metrics_and_health(
    listener: TcpListener,
    exposition: Arc<dyn Exposition>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let metrics = exposition.clone();
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move { ([(header::CONTENT_TYPE, OPENMETRICS)], metrics.encode()) }
            }),
        )
        .route(
            "/healthz",
            get(move || {
                let exposition = exposition.clone();
                async move {
                    if exposition.healthy() {
                        (StatusCode::OK, "ok")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "starting")
                    }
                }
            }),
        );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    struct Fixed(AtomicBool);

    impl Exposition for Fixed {
        fn encode(&self) -> String {
            "# EOF\n".into()
        }
        fn healthy(&self) -> bool {
            self.0.load(Ordering::Relaxed)
        }
    }

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        out
    }

    #[tokio::test]
    async fn metrics_and_health_answer_until_shutdown() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Fixed(AtomicBool::new(false)));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(metrics_and_health(listener, state.clone(), async {
            let _ = stopped.await;
        }));
        let metrics = get(addr, "/metrics").await;
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        assert!(
            metrics.contains(OPENMETRICS) && metrics.ends_with("# EOF\n"),
            "{metrics}"
        );
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 503"));
        state.0.store(true, Ordering::Relaxed);
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        stop.send(()).expect("server running");
        server.await.expect("join").expect("served");
    }
}
