//! When to stop: SIGTERM (Kubernetes, systemd, `kill`) or SIGINT (Ctrl-C).

/// Completes on the first SIGTERM or SIGINT. If SIGTERM cannot be watched
/// (it always can on Linux; the case is here so a failure is said, not
/// silently turned into a process that never stops), it logs why and
/// waits for SIGINT alone.
pub async fn signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGTERM; only SIGINT stops this process");
            if let Err(e) = tokio::signal::ctrl_c().await {
                tracing::error!(error = %e, "cannot watch SIGINT either");
                std::future::pending::<()>().await;
            }
        }
    }
    tracing::info!("shutdown signal received");
}
