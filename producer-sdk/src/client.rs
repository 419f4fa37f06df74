//! The handle applications hold: `log()` on the hot path, `flush()`,
//! `shutdown()` and counters. Cloning is cheap; all clones share one queue
//! and one background task.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::runtime::RuntimeFlavor;
use tokio::sync::{mpsc, oneshot};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::batcher::{Batcher, Batching, Command};
use crate::config::ClientBuilder;
use crate::error::Error;
use crate::event::Event;
use crate::queue::{Limits, OverflowPolicy, Queue};
use crate::send::{Counters, MAX_REQUEST_BYTES, Sender, Written};

/// What [`Client::flush_until_queryable`] found: the stream's table holds
/// every event this client had acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queryable {
    /// The newest event time the table holds as of the commits waited for
    /// (of any producer's events, not only this client's); `None` until a
    /// compactor has reported one.
    pub committed_event_time: Option<SystemTime>,
}

/// Counters since the client started. Every accepted event ends up in
/// exactly one of `sent` or `failed`; until then it is `pending`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Events accepted by `log()`.
    pub accepted: u64,
    /// Events the gateway confirmed durable in Kafka.
    pub sent: u64,
    /// Event re-sends: a batch of `n` events retried once adds `n`.
    pub retried: u64,
    /// Events refused by `log()` (queue full, block timeout, shut down).
    pub dropped: u64,
    /// Accepted events that will not be delivered (final error, retries
    /// exhausted, shutdown deadline). If the last attempt's outcome was
    /// unknown, such an event may still have reached Kafka.
    pub failed: u64,
    /// Accepted events not yet settled (queued or in flight).
    pub pending: u64,
    /// SendLogs requests made, retries included.
    pub requests: u64,
}

/// How `shutdown()` ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Shutdown {
    /// Every accepted event was confirmed durable.
    Complete(Stats),
    /// Some events were dropped or failed; `last_error` says why.
    Incomplete {
        /// Final counters: `accepted == sent + failed`.
        stats: Stats,
        /// The most recent delivery error, if any event failed.
        last_error: Option<Error>,
    },
}

impl Shutdown {
    /// The final counters.
    pub fn stats(&self) -> Stats {
        match self {
            Self::Complete(stats) | Self::Incomplete { stats, .. } => *stats,
        }
    }

    /// Whether every event handed to `log()` was delivered.
    pub fn is_complete(&self) -> bool {
        matches!(self, Self::Complete(_))
    }
}

/// A telemetry-lake client. See the [crate docs](crate) for a quick start.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    queue: Arc<Queue>,
    counters: Arc<Counters>,
    last_error: Arc<Mutex<Option<Error>>>,
    commands: mpsc::UnboundedSender<Command>,
    overflow: OverflowPolicy,
    shutdown_timeout: Duration,
    /// The SDK's own runtime thread, when it runs one.
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Where acknowledged requests were written, and what the Watermark
    /// call needs to ask about them.
    written: Arc<Written>,
    endpoint: Endpoint,
    authorization: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    stream: String,
}

impl Client {
    /// A builder with the defaults.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    pub(crate) fn start(config: ClientBuilder) -> Result<Self, Error> {
        let queue = Arc::new(Queue::new(Limits {
            capacity: config.queue_capacity,
            max_bytes: config.queue_max_bytes,
            batch_events: config.max_batch_events,
            batch_bytes: config.max_batch_bytes,
        }));
        let counters = Arc::new(Counters::default());
        let last_error = Arc::new(Mutex::new(None));
        let (commands, command_rx) = mpsc::unbounded_channel();
        let batching = Batching {
            max_events: config.max_batch_events,
            max_bytes: config.max_batch_bytes,
            linger: config.linger,
            max_in_flight: config.max_in_flight,
            shutdown_timeout: config.shutdown_timeout,
        };
        let endpoint = endpoint(&config)?;
        let authorization = match &config.token {
            Some(token) => Some(
                format!("Bearer {token}")
                    .parse()
                    .map_err(|_| Error::Config {
                        key: "bearer_token",
                        reason: "must be printable ASCII".into(),
                    })?,
            ),
            None => None,
        };
        let resource = config.resource_attrs()?.build();
        let written = Arc::new(Written::default());
        let watermark_endpoint = endpoint.clone();
        let watermark_authorization = authorization.clone();
        let stream = config.stream.clone();
        let make_sender = {
            let counters = counters.clone();
            let last_error = last_error.clone();
            let written = written.clone();
            move || Sender {
                // Lazy: the first request connects, and a lost connection is
                // remade on the next one.
                channel: endpoint.connect_lazy(),
                compression: config.compression.encoding(),
                authorization,
                stream: config.stream,
                resource,
                retry: config.retry,
                request_timeout: config.request_timeout,
                max_event_bytes: config.max_event_bytes,
                max_request_bytes: MAX_REQUEST_BYTES,
                counters,
                last_error,
                on_failure: config.on_failure,
                written,
            }
        };
        let runtime = config.runtime.clone().or_else(|| {
            tokio::runtime::Handle::try_current()
                .ok()
                .filter(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread)
        });
        let batcher_queue = queue.clone();
        let thread = match runtime {
            Some(handle) => {
                let _entered = handle.enter();
                let batcher =
                    Batcher::new(batcher_queue, Arc::new(make_sender()), batching, command_rx);
                handle.spawn(batcher.run());
                None
            }
            None => {
                // No suitable runtime: the SDK runs its own on one thread,
                // so plain synchronous programs can use it too.
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| Error::Start(e.to_string()))?;
                let thread = std::thread::Builder::new()
                    .name("tlake-sdk".into())
                    .spawn(move || {
                        rt.block_on(async move {
                            let sender = Arc::new(make_sender());
                            Batcher::new(batcher_queue, sender, batching, command_rx)
                                .run()
                                .await;
                        });
                    })
                    .map_err(|e| Error::Start(e.to_string()))?;
                Some(thread)
            }
        };
        Ok(Self {
            inner: Arc::new(Inner {
                queue,
                counters,
                last_error,
                commands,
                overflow: config.overflow,
                shutdown_timeout: config.shutdown_timeout,
                thread: Mutex::new(thread),
                written,
                endpoint: watermark_endpoint,
                authorization: watermark_authorization,
                stream,
            }),
        })
    }

    /// Queues an event for delivery. Cheap: no encoding or I/O happens on
    /// the caller's thread. When the queue is full the configured
    /// [`OverflowPolicy`] applies: `Drop` returns [`Error::QueueFull`] at
    /// once; `Block` waits (blocking this thread) up to its timeout, then
    /// returns [`Error::BlockTimeout`]. Either way the event is counted in
    /// [`Stats::dropped`]. After `shutdown()` it returns [`Error::Closed`].
    ///
    /// `Ok` means accepted, not yet delivered: delivery problems surface
    /// through [`Client::flush`], [`Client::stats`], [`Client::last_error`]
    /// and the `on_failure` hook.
    pub fn log(&self, event: Event) -> Result<(), Error> {
        self.inner.queue.push(event, self.inner.overflow)
    }

    /// Like [`Client::log`], but a `Block` policy waits asynchronously
    /// instead of blocking the executor thread.
    pub async fn log_async(&self, event: Event) -> Result<(), Error> {
        self.inner
            .queue
            .push_async(event, self.inner.overflow)
            .await
    }

    /// Sends everything accepted so far without waiting for the linger
    /// time, and waits until each of those events is delivered or failed.
    ///
    /// Returns [`Error::Undelivered`] if events failed meanwhile (events
    /// logged concurrently by other threads are included in that count).
    pub async fn flush(&self) -> Result<(), Error> {
        let failed_before = self.inner.counters.failed.load(Ordering::Relaxed);
        let (reply, done) = oneshot::channel();
        let upto = self.inner.queue.pushed();
        self.inner
            .commands
            .send(Command::Flush { upto, reply })
            .map_err(|_| Error::Closed)?;
        // A dropped reply means the background task ended, which happens
        // only after it settled every event.
        let _ = done.await;
        self.flush_result(failed_before)
    }

    /// [`Client::flush`], then waits until everything this client had
    /// acknowledged is committed to the stream's table — after `Ok`, a query
    /// that starts now sees every event logged before the call. Asks the
    /// gateway's Watermark RPC with the positions its answers reported.
    ///
    /// Returns [`Error::NotYetQueryable`] when the table does not get there
    /// within `timeout` (the events are durable in Kafka and will land), or
    /// the error of the flush or of the Watermark call.
    pub async fn flush_until_queryable(&self, timeout: Duration) -> Result<Queryable, Error> {
        let started = Instant::now();
        self.flush().await?;
        let wait_for = self.inner.written.positions();
        // A channel per call, not one cached: a channel's worker task lives on the runtime
        // that made it, and callers may come from any runtime (one that ends, too). One
        // connection per wait costs little against a wait of seconds.
        let channel = self
            .inner
            .endpoint
            .connect()
            .await
            .map_err(|e| Error::from_status(&tonic::Status::from_error(e.into())))?;
        let mut client = tlake_proto::v1::log_ingest_client::LogIngestClient::new(channel);
        loop {
            let left = timeout.saturating_sub(started.elapsed());
            let mut request = tonic::Request::new(tlake_proto::v1::WatermarkRequest {
                stream: self.inner.stream.clone(),
                wait_for: wait_for.clone(),
                timeout_ms: u32::try_from(left.as_millis()).unwrap_or(u32::MAX),
            });
            if let Some(token) = &self.inner.authorization {
                request
                    .metadata_mut()
                    .insert("authorization", token.clone());
            }
            let answer = client
                .watermark(request)
                .await
                .map_err(|status| Error::from_status(&status))?
                .into_inner();
            if answer.reached {
                return Ok(Queryable {
                    committed_event_time: (answer.committed_event_time_unix_nano > 0).then(|| {
                        UNIX_EPOCH + Duration::from_nanos(answer.committed_event_time_unix_nano)
                    }),
                });
            }
            // The gateway caps one call's wait; call again while time is left.
            if started.elapsed() >= timeout {
                return Err(Error::NotYetQueryable {
                    waited: started.elapsed(),
                });
            }
        }
    }

    /// [`Client::flush`] for synchronous code. Must not be called from
    /// within an async context (it would block the executor).
    pub fn flush_blocking(&self) -> Result<(), Error> {
        let failed_before = self.inner.counters.failed.load(Ordering::Relaxed);
        let (reply, done) = oneshot::channel();
        let upto = self.inner.queue.pushed();
        self.inner
            .commands
            .send(Command::Flush { upto, reply })
            .map_err(|_| Error::Closed)?;
        let _ = done.blocking_recv();
        self.flush_result(failed_before)
    }

    /// Asks for everything accepted so far to be sent now, without waiting.
    pub(crate) fn flush_nowait(&self) {
        let (reply, _) = oneshot::channel();
        let upto = self.inner.queue.pushed();
        let _ = self.inner.commands.send(Command::Flush { upto, reply });
    }

    fn flush_result(&self, failed_before: u64) -> Result<(), Error> {
        let failed = self.inner.counters.failed.load(Ordering::Relaxed) - failed_before;
        if failed == 0 {
            return Ok(());
        }
        Err(Error::Undelivered {
            failed,
            last: Box::new(self.last_error().unwrap_or(Error::ShutdownTimeout)),
        })
    }

    /// Stops accepting events, delivers everything queued (for at most the
    /// configured shutdown timeout; whatever is left then is reported
    /// failed) and reports the outcome. Later `log()` calls return
    /// [`Error::Closed`]. Safe to call more than once, from any clone.
    pub async fn shutdown(&self) -> Shutdown {
        if let Some(done) = self.begin_shutdown() {
            let _ = done.await;
        }
        self.join_thread();
        self.outcome()
    }

    /// [`Client::shutdown`] for synchronous code. Must not be called from
    /// within an async context.
    pub fn shutdown_blocking(&self) -> Shutdown {
        if let Some(done) = self.begin_shutdown() {
            let _ = done.blocking_recv();
        }
        self.join_thread();
        self.outcome()
    }

    fn begin_shutdown(&self) -> Option<oneshot::Receiver<()>> {
        self.inner.queue.close();
        let (reply, done) = oneshot::channel();
        self.inner
            .commands
            .send(Command::Shutdown {
                deadline: Instant::now() + self.inner.shutdown_timeout,
                reply: Some(reply),
            })
            .ok()
            .map(|()| done)
    }

    fn join_thread(&self) {
        let thread = self
            .inner
            .thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(thread) = thread {
            // The runtime thread ends right after answering; joining makes
            // sure its last counters are written.
            let _ = thread.join();
        }
    }

    fn outcome(&self) -> Shutdown {
        let stats = self.stats();
        if stats.dropped == 0 && stats.failed == 0 && stats.pending == 0 {
            Shutdown::Complete(stats)
        } else {
            Shutdown::Incomplete {
                stats,
                last_error: self.last_error(),
            }
        }
    }

    /// Current counters.
    pub fn stats(&self) -> Stats {
        let c = &self.inner.counters;
        let accepted = self.inner.queue.pushed();
        let sent = c.sent.load(Ordering::Relaxed);
        let failed = c.failed.load(Ordering::Relaxed);
        Stats {
            accepted,
            sent,
            retried: c.retried.load(Ordering::Relaxed),
            dropped: self.inner.queue.dropped.load(Ordering::Relaxed),
            failed,
            pending: accepted.saturating_sub(sent + failed),
            requests: c.requests.load(Ordering::Relaxed),
        }
    }

    /// The most recent delivery error (retried or final), if any.
    pub fn last_error(&self) -> Option<Error> {
        self.inner
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

fn endpoint(config: &ClientBuilder) -> Result<Endpoint, Error> {
    let invalid = |key, reason: String| Error::Config { key, reason };
    let mut endpoint = Endpoint::from_shared(config.endpoint.clone())
        .map_err(|e| invalid("endpoint", e.to_string()))?
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true)
        // Notices a silently dead connection (e.g. a gateway host gone)
        // well before the request timeout.
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    if config.endpoint.starts_with("https://") {
        let tls = config.tls.clone().unwrap_or_default();
        let mut tls_config = ClientTlsConfig::new();
        tls_config = match &tls.ca_pem {
            Some(pem) => tls_config.ca_certificate(Certificate::from_pem(pem)),
            None => tls_config.with_native_roots(),
        };
        if let Some(domain) = &tls.domain {
            tls_config = tls_config.domain_name(domain.clone());
        }
        if let Some((cert, key)) = &tls.identity {
            tls_config = tls_config.identity(Identity::from_pem(cert, key));
        }
        endpoint = endpoint
            .tls_config(tls_config)
            .map_err(|e| invalid("tls", e.to_string()))?;
    }
    Ok(endpoint)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::atomic::AtomicUsize;

    use tonic::Status;

    use super::*;
    use crate::event::Severity;
    use crate::send::RetryPolicy;
    use crate::testing::{accept_all, start, with_retry_after};

    fn builder(addr: std::net::SocketAddr) -> ClientBuilder {
        Client::builder()
            .endpoint(format!("http://{addr}"))
            .resource_from_env(false)
            .service_name("unit-test")
            .retry(RetryPolicy {
                initial_backoff: Duration::from_millis(10),
                max_backoff: Duration::from_millis(100),
                give_up_after: Some(Duration::from_secs(20)),
            })
    }

    fn events(n: usize) -> Vec<Event> {
        (0..n)
            .map(|i| Event::new(Severity::Info, format!("event {i}")).attr("i", i as i64))
            .collect()
    }

    fn log_all(client: &Client, events: &[Event]) {
        for e in events {
            client.log(e.clone()).expect("accepted");
        }
    }

    fn ids(events: &[Event]) -> HashSet<[u8; 16]> {
        events.iter().map(|e| *e.id().as_bytes()).collect()
    }

    fn wire_ids(events: &[tlake_proto::v1::LogEvent]) -> HashSet<[u8; 16]> {
        events
            .iter()
            .map(|e| e.event_id.as_ref().try_into().expect("16 bytes"))
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batches_by_count_and_flush_waits_for_delivery() {
        let (addr, fake) = start(accept_all).await;
        let client = builder(addr)
            .max_batch_events(10)
            .linger(Duration::from_secs(30))
            .build()
            .expect("client");
        let sent = events(25);
        log_all(&client, &sent);
        client.flush().await.expect("all delivered");
        let seen = fake.seen();
        let sizes: Vec<_> = seen.iter().map(|s| s.request.events.len()).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 25);
        assert!(sizes.iter().all(|&n| n <= 10), "{sizes:?}");
        assert_eq!(wire_ids(&fake.accepted()), ids(&sent));
        let stats = client.stats();
        assert_eq!(
            (stats.accepted, stats.sent, stats.failed, stats.pending),
            (25, 25, 0, 0)
        );
        // The resource travels with every request.
        let resource = seen[0].request.resource.clone().expect("resource");
        assert_eq!(resource.attributes[0].key, "service.name");
        assert!(client.shutdown().await.is_complete());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn linger_sends_a_partial_batch() {
        let (addr, fake) = start(accept_all).await;
        let client = builder(addr)
            .linger(Duration::from_millis(50))
            .build()
            .expect("client");
        log_all(&client, &events(3));
        let deadline = Instant::now() + Duration::from_secs(5);
        while fake.accepted().len() < 3 {
            assert!(Instant::now() < deadline, "linger never fired");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(fake.seen().len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batches_by_bytes() {
        let (addr, fake) = start(accept_all).await;
        let client = builder(addr)
            .max_batch_bytes(8 << 10)
            .linger(Duration::from_secs(30))
            .build()
            .expect("client");
        let big: Vec<_> = (0..20)
            .map(|_| Event::new(Severity::Info, "x".repeat(1000)))
            .collect();
        log_all(&client, &big);
        client.flush().await.expect("delivered");
        let seen = fake.seen();
        assert!(seen.len() >= 3, "{} requests", seen.len());
        for s in &seen {
            assert!(s.request.events.len() <= 8, "{}", s.request.events.len());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retries_unavailable_with_the_same_ids_honouring_retry_after() {
        let (addr, fake) = start(|n, _| match n {
            0 => Err(with_retry_after(Status::unavailable("kafka slow"), 150)),
            1 => Err(with_retry_after(Status::resource_exhausted("busy"), 150)),
            _ => Ok(()),
        })
        .await;
        let client = builder(addr).build().expect("client");
        let sent = events(5);
        log_all(&client, &sent);
        let started = Instant::now();
        client.flush().await.expect("delivered after retries");
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "{:?}",
            started.elapsed()
        );
        let seen = fake.seen();
        assert_eq!(seen.len(), 3);
        for s in &seen {
            assert_eq!(
                wire_ids(&s.request.events),
                ids(&sent),
                "every attempt resends the same ids"
            );
        }
        let stats = client.stats();
        assert_eq!(
            (stats.sent, stats.retried, stats.failed, stats.requests),
            (5, 10, 0, 3)
        );
        assert!(matches!(
            client.last_error(),
            Some(Error::Unavailable { .. })
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unauthenticated_is_final_and_reported() {
        let (addr, fake) = start(|_, _| Err(Status::unauthenticated("bad token"))).await;
        let failures = Arc::new(Mutex::new(Vec::new()));
        let hook = failures.clone();
        let client = builder(addr)
            .bearer_token("wrong")
            .on_failure(move |f| hook.lock().expect("lock").push(f.clone()))
            .build()
            .expect("client");
        log_all(&client, &events(4));
        let err = client.flush().await.expect_err("refused");
        match &err {
            Error::Undelivered { failed: 4, last } => {
                assert!(matches!(**last, Error::Unauthenticated { .. }), "{last:?}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(fake.seen().len(), 1, "not retried");
        assert_eq!(
            fake.seen()[0].authorization.as_deref(),
            Some("Bearer wrong")
        );
        let failures = failures.lock().expect("lock").clone();
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].events, 4);
        assert!(matches!(failures[0].error, Error::Unauthenticated { .. }));
        let outcome = client.shutdown().await;
        assert!(!outcome.is_complete());
        assert_eq!(outcome.stats().failed, 4);
        assert_eq!(outcome.stats().retried, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn invalid_argument_is_final() {
        let (addr, fake) = start(|_, _| Err(Status::invalid_argument("unknown stream"))).await;
        let client = builder(addr).build().expect("client");
        log_all(&client, &events(2));
        let err = client.flush().await.expect_err("refused");
        assert!(err.to_string().contains("unknown stream"), "{err}");
        assert_eq!(fake.seen().len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn out_of_range_splits_the_batch() {
        let (addr, fake) = start(|_, r| {
            if r.events.len() > 3 {
                Err(Status::out_of_range("too many events"))
            } else {
                Ok(())
            }
        })
        .await;
        let client = builder(addr)
            .linger(Duration::from_secs(30))
            .build()
            .expect("client");
        let sent = events(10);
        log_all(&client, &sent);
        client.flush().await.expect("delivered in parts");
        assert_eq!(wire_ids(&fake.accepted()), ids(&sent));
        assert_eq!(fake.accepted().len(), 10);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_oversized_event_fails_alone() {
        let (addr, fake) = start(accept_all).await;
        let client = builder(addr)
            .max_event_bytes(1024)
            .linger(Duration::from_secs(30))
            .build()
            .expect("client");
        let mut sent = events(3);
        let big = Event::new(Severity::Info, "y".repeat(4096));
        let big_id = big.id();
        sent.push(big);
        log_all(&client, &sent);
        match client.flush().await {
            Err(Error::Undelivered { failed: 1, last }) => {
                assert!(matches!(*last, Error::EventTooLarge { id, .. } if id == big_id));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(fake.accepted().len(), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn compression_and_stream_are_sent() {
        for (compression, name) in [
            (crate::Compression::Gzip, "gzip"),
            (crate::Compression::Zstd, "zstd"),
        ] {
            let (addr, fake) = start(accept_all).await;
            let client = builder(addr)
                .compression(compression)
                .stream("audit")
                .build()
                .expect("client");
            log_all(&client, &events(50));
            client.flush().await.expect("delivered");
            let seen = fake.seen();
            assert_eq!(seen[0].encoding.as_deref(), Some(name));
            assert_eq!(seen[0].request.stream, "audit");
            assert_eq!(fake.accepted().len(), 50);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_reports_what_it_could_not_deliver() {
        // Nothing listens on this port: every attempt fails with UNAVAILABLE.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port");
        let client = builder(port)
            .shutdown_timeout(Duration::from_millis(500))
            .build()
            .expect("client");
        log_all(&client, &events(7));
        let started = Instant::now();
        let outcome = client.shutdown().await;
        assert!(started.elapsed() < Duration::from_secs(5));
        let Shutdown::Incomplete { stats, last_error } = outcome else {
            panic!("{outcome:?}");
        };
        assert_eq!(
            (stats.accepted, stats.sent, stats.failed, stats.pending),
            (7, 0, 7, 0)
        );
        assert!(last_error.is_some());
        assert_eq!(client.log(events(1).remove(0)), Err(Error::Closed));
        assert_eq!(client.stats().dropped, 1);
        // Shutting down twice is harmless.
        assert_eq!(client.shutdown().await.stats().failed, 7);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_delivers_everything_queued() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let (addr, fake) = start(move |_, _| {
            counter.fetch_add(1, Ordering::Relaxed);
            Ok(())
        })
        .await;
        let client = builder(addr)
            .linger(Duration::from_secs(30))
            .max_batch_events(100)
            .build()
            .expect("client");
        let sent = events(1234);
        log_all(&client, &sent);
        let outcome = client.shutdown().await;
        assert!(outcome.is_complete(), "{outcome:?}");
        assert_eq!(outcome.stats().sent, 1234);
        assert_eq!(wire_ids(&fake.accepted()), ids(&sent));
        assert!(calls.load(Ordering::Relaxed) >= 13);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn gives_up_after_the_configured_time() {
        let (addr, _fake) = start(|_, _| Err(Status::unavailable("down"))).await;
        let client = builder(addr)
            .retry(RetryPolicy {
                initial_backoff: Duration::from_millis(10),
                max_backoff: Duration::from_millis(50),
                give_up_after: Some(Duration::from_millis(300)),
            })
            .build()
            .expect("client");
        log_all(&client, &events(2));
        match client.flush().await {
            Err(Error::Undelivered { failed: 2, last }) => {
                assert!(matches!(*last, Error::GaveUp { .. }), "{last:?}");
            }
            other => panic!("{other:?}"),
        }
        assert!(client.stats().retried >= 2);
    }

    #[test]
    fn works_without_a_runtime_on_its_own_thread() {
        let server_rt = tokio::runtime::Runtime::new().expect("runtime");
        let (addr, fake) = server_rt.block_on(start(accept_all));
        let client = builder(addr).build().expect("client");
        log_all(&client, &events(100));
        client.flush_blocking().expect("delivered");
        assert_eq!(fake.accepted().len(), 100);
        assert!(client.shutdown_blocking().is_complete());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_tracing_layer_sends_fields_and_span_fields() {
        use tracing_subscriber::layer::SubscriberExt as _;

        let (addr, fake) = start(accept_all).await;
        let client = builder(addr).build().expect("client");
        let subscriber =
            tracing_subscriber::registry().with(crate::TracingLayer::new(client.clone()));
        tracing::subscriber::with_default(subscriber, || {
            // An explicit target: this module's own one is excluded as the SDK's.
            let span = tracing::info_span!(target: "shop", "request", http.route = "/orders", user.id = "u-1");
            let _guard = span.enter();
            tracing::warn!(target: "shop::orders", ratio = 0.5, order.id = 42, ok = false, user.id = "u-2", "order {} stuck", 42);
            tracing::info!(target: "tlake_producer_sdk::internal", "never sent");
        });
        client.flush().await.expect("delivered");
        let events = fake.accepted();
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e.severity_number, 13);
        assert_eq!(e.scope_name, "shop::orders");
        let body = e.body.clone().and_then(|b| b.value);
        assert_eq!(
            body,
            Some(tlake_proto::v1::any_value::Value::StringValue(
                "order 42 stuck".into()
            ))
        );
        let attr = |key: &str| {
            e.attributes
                .iter()
                .find(|kv| kv.key == key)
                .and_then(|kv| kv.value.clone())
                .and_then(|v| v.value)
        };
        use tlake_proto::v1::any_value::Value as V;
        assert_eq!(attr("order.id"), Some(V::IntValue(42)));
        assert_eq!(attr("ratio"), Some(V::DoubleValue(0.5)));
        assert_eq!(attr("ok"), Some(V::BoolValue(false)));
        assert_eq!(
            attr("user.id"),
            Some(V::StringValue("u-2".into())),
            "the event's own field wins"
        );
        assert_eq!(attr("http.route"), Some(V::StringValue("/orders".into())));
    }
}
