//! load: an offered load for the benchmarks that need one — SendLogs
//! requests of new events at a fixed rate against a gateway, at most a
//! bounded number in flight, each OK kept with where its records were
//! written (partition → highest offset).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use bytes::{Bytes, BytesMut};
use tlake_proto::codec::{PreEncoded, SEND_LOGS_PATH};
use tlake_proto::v1::log_ingest_client::LogIngestClient;
use tlake_proto::v1::{Resource, SendLogsResponse};
use tonic::Status;
use tonic::transport::Channel;

use crate::events::{Source, resource};

/// The offered-load flags `tlake bench fresh` and `tlake bench soak` share.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Gateway URL.
    #[arg(long, default_value = "http://127.0.0.1:4317")]
    pub gateway: String,
    /// Stream to send to (a compactor must be compacting its topic).
    #[arg(long, default_value = "default")]
    pub stream: String,
    /// Offered events per second.
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,
    /// Events per request.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Requests in flight at most.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Seconds to send.
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// Use lines of these log files as event bodies.
    #[arg(long)]
    pub lines: Option<PathBuf>,
}

impl LoadArgs {
    /// The load these flags ask for.
    pub fn offered(&self) -> OfferedLoad {
        OfferedLoad {
            stream: self.stream.clone(),
            rate: self.rate,
            batch: self.batch,
            concurrency: self.concurrency,
            duration: Duration::from_secs(self.seconds),
        }
    }
}

/// What to offer.
#[derive(Debug, Clone)]
pub struct OfferedLoad {
    /// Stream to send to.
    pub stream: String,
    /// Offered events per second.
    pub rate: u64,
    /// Events per request.
    pub batch: usize,
    /// Requests in flight at most.
    pub concurrency: usize,
    /// How long to send.
    pub duration: Duration,
}

/// One SendLogs OK: when, and the highest offset per partition it wrote.
#[derive(Debug, Clone)]
pub struct Ack {
    /// When the OK arrived.
    pub at: Instant,
    /// Events the request carried.
    pub events: usize,
    /// (partition, highest offset) of its records.
    pub written: Vec<(i32, i64)>,
}

/// What the load did.
#[derive(Debug, Default)]
pub struct Offered {
    /// Every OK, in arrival order.
    pub acks: Vec<Ack>,
    /// Requests that failed.
    pub failed: u64,
    /// Ticks skipped because `concurrency` requests were in flight (the
    /// gateway was behind the offered rate): counted, not queued.
    pub late: u64,
    /// How long sending took, to the last answer.
    pub sent_for: Duration,
}

impl Offered {
    /// Events acknowledged.
    pub fn events(&self) -> u64 {
        self.acks.iter().map(|a| a.events as u64).sum()
    }
}

/// A channel to the gateway at `url`.
pub async fn connect(url: &str) -> Result<Channel> {
    Channel::from_shared(url.to_owned())?
        .connect()
        .await
        .map_err(|e| anyhow!("cannot connect to the gateway at {url}: {e}"))
}

/// A LogIngest client on `channel` that takes large messages (for the
/// calls other than the load's SendLogs: Watermark).
pub fn client(channel: Channel) -> LogIngestClient<Channel> {
    LogIngestClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
}

/// An encoded SendLogs request of events numbered from `*n + 1`, so every
/// run's ids are new. Each event is encoded as soon as it is made and
/// dropped: holding a request's thousand events (a dozen allocations each)
/// until it was sent, and freeing them on another thread, made glibc's
/// malloc ~40 % of this generator's CPU in a 10-minute soak, which grew
/// from 0.5 to 0.9 cores meanwhile (BENCHMARKS.md, soak).
pub fn request(stream: &str, batch: usize, source: &Source, n: &mut u64) -> Bytes {
    use tlake_proto::contract::tags::log_batch;
    // The same for every request; made once (it reads /etc/hostname).
    static RESOURCE: OnceLock<Resource> = OnceLock::new();
    let resource = RESOURCE.get_or_init(|| resource("bench-load"));
    let mut body = BytesMut::with_capacity(batch * 320 + 256);
    prost::encoding::string::encode(log_batch::STREAM, &stream.to_owned(), &mut body);
    prost::encoding::message::encode(log_batch::RESOURCE, resource, &mut body);
    for _ in 0..batch {
        *n += 1;
        prost::encoding::message::encode(log_batch::EVENTS, &source.event(*n), &mut body);
    }
    body.freeze()
}

/// Sends an encoded SendLogs request as it is; decodes the answer as `D`
/// (`()` to ignore it).
pub async fn send_logs<D: prost::Message + Default + Send + 'static>(
    channel: Channel,
    body: Bytes,
) -> Result<D, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let answer = grpc
        .unary(
            tonic::Request::new(body),
            http::uri::PathAndQuery::from_static(SEND_LOGS_PATH),
            PreEncoded::<D>::default(),
        )
        .await?;
    Ok(answer.into_inner())
}

/// Sends one request of `events` events and waits for its OK.
pub async fn send_one(channel: Channel, body: Bytes, events: usize) -> Result<Ack> {
    let answer: SendLogsResponse = send_logs(channel, body)
        .await
        .map_err(|s| anyhow!("SendLogs: {:?}: {}", s.code(), s.message()))?;
    Ok(Ack {
        at: Instant::now(),
        events,
        written: answer
            .written
            .iter()
            .map(|p| (p.partition, p.offset))
            .collect(),
    })
}

/// Offers `load`: one request every batch/rate seconds, at most
/// `concurrency` in flight; `on_ack` sees each OK as it arrives.
pub async fn offer(
    channel: &Channel,
    load: &OfferedLoad,
    source: &Source,
    n: &mut u64,
    on_ack: impl Fn(&Ack) + Send + Sync + 'static,
) -> Result<Offered> {
    if load.rate == 0 || load.batch == 0 || load.concurrency == 0 {
        bail!("--rate, --batch and --concurrency must be at least 1");
    }
    let acks: Arc<Mutex<Vec<Ack>>> = Arc::default();
    let on_ack = Arc::new(on_ack);
    let every = Duration::from_secs_f64(load.batch as f64 / load.rate as f64);
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let slots = Arc::new(tokio::sync::Semaphore::new(load.concurrency));
    let started = Instant::now();
    let mut requests = tokio::task::JoinSet::new();
    let (mut late, mut failed) = (0u64, 0u64);
    let mut reap = |done: std::result::Result<Result<()>, tokio::task::JoinError>| {
        if done.map_err(anyhow::Error::from).and_then(|r| r).is_err() {
            failed += 1;
        }
    };
    while started.elapsed() < load.duration {
        ticks.tick().await;
        // Finished requests are reaped as we go: a JoinSet keeps them until
        // joined (in a 10-minute soak that grew this process by ~170 MiB).
        while let Some(done) = requests.try_join_next() {
            reap(done);
        }
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            late += 1;
            continue;
        };
        let body = request(&load.stream, load.batch, source, n);
        let (channel, acks, on_ack, events) =
            (channel.clone(), acks.clone(), on_ack.clone(), load.batch);
        requests.spawn(async move {
            let ack = send_one(channel, body, events).await;
            drop(slot);
            let ack = ack?;
            on_ack(&ack);
            acks.lock().expect("acks").push(ack);
            anyhow::Ok(())
        });
    }
    while let Some(done) = requests.join_next().await {
        reap(done);
    }
    let sent_for = started.elapsed();
    let acks = std::mem::take(&mut *acks.lock().expect("acks"));
    Ok(Offered {
        acks,
        failed,
        late,
        sent_for,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use tlake_proto::v1::SendLogsRequest;

    #[test]
    fn a_request_decodes_to_its_stream_resource_and_new_events() {
        let source = Source::Synthetic;
        let mut n = 41;
        let body = request("app", 3, &source, &mut n);
        let decoded = SendLogsRequest::decode(body).expect("decodes");
        assert_eq!(decoded.stream, "app");
        assert_eq!(decoded.resource, Some(resource("bench-load")));
        assert_eq!(decoded.events.len(), 3);
        assert_eq!(n, 44);
        let bodies: Vec<String> = decoded
            .events
            .iter()
            .map(|e| format!("{:?}", e.body))
            .collect();
        for (seq, body) in (42..=44).zip(&bodies) {
            assert!(body.contains(&format!("seq={seq}")), "{body}");
        }
    }
}
