//! lake: the consume thread's handle on the catalog — blocking calls into
//! the async catalog client, whether the process is stopping, and the one
//! way those calls are retried (`tlake_catalog_client::retry`'s policy).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tlake_catalog_client::LakeCatalog;
use tokio::runtime::Handle;

/// How long a flush keeps retrying its writes once a stop was asked: long
/// enough to ride out a blip while the last flush drains, short enough to
/// stay inside the pod's termination grace.
pub const RETRY_PAST_STOP: Duration = Duration::from_secs(10);

/// When a retried call gives up on its own (besides a non-retryable error).
#[derive(Debug, Clone, Copy)]
pub enum GiveUp {
    /// As soon as a stop is asked.
    AtStop,
    /// [`RETRY_PAST_STOP`] after a stop is asked (the last flush's writes).
    AfterStop,
}

/// The catalog, the runtime its calls run on, and the stop flag.
#[derive(Debug)]
pub struct Lake {
    rt: Handle,
    /// The catalog (public for calls that are not retried).
    pub catalog: LakeCatalog,
    stop: Arc<AtomicBool>,
}

impl Lake {
    /// A handle for blocking calls from the consume thread.
    pub fn new(rt: Handle, catalog: LakeCatalog, stop: Arc<AtomicBool>) -> Self {
        Self { rt, catalog, stop }
    }

    /// Runs `future` to completion on the runtime (from the consume thread).
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.rt.block_on(future)
    }

    /// Whether a stop was asked.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Runs `attempt` until it succeeds, fails in a way `retry_if` does not
    /// retry, or `give_up` says so — then returns the last error. Waits per
    /// [`tlake_catalog_client::retry::transient`], logging each failure with
    /// `what`.
    pub fn retry<T, E, F, Fut>(
        &self,
        what: &str,
        give_up: GiveUp,
        retry_if: impl Fn(&E) -> bool,
        mut attempt: F,
    ) -> Result<T, E>
    where
        E: std::fmt::Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut waits = tlake_catalog_client::retry::transient();
        let mut stop_seen: Option<Instant> = None;
        loop {
            let e = match self.block_on(attempt()) {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            if self.stopping() {
                let since = *stop_seen.get_or_insert_with(Instant::now);
                let done = match give_up {
                    GiveUp::AtStop => true,
                    GiveUp::AfterStop => since.elapsed() >= RETRY_PAST_STOP,
                };
                if done {
                    return Err(e);
                }
            }
            if !retry_if(&e) {
                return Err(e);
            }
            // `transient` never runs out.
            let wait = waits
                .next()
                .unwrap_or(tlake_catalog_client::retry::MAX_DELAY);
            tracing::warn!(error = %e, "{what} failed; retrying in {wait:?}");
            std::thread::sleep(wait);
        }
    }
}
