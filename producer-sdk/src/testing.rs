//! A scripted in-process gateway for unit tests: records what it receives
//! and answers what the test's script says. (End-to-end tests against the
//! real gateway and Kafka live in `tests/tests/sdk.rs`.)

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tlake_proto::v1::log_ingest_server::{LogIngest, LogIngestServer};
use tlake_proto::v1::{
    LogEvent, SendLogsRequest, SendLogsResponse, WatermarkRequest, WatermarkResponse,
};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};

/// One request as the fake gateway saw it.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) request: SendLogsRequest,
    pub(crate) authorization: Option<String>,
    pub(crate) encoding: Option<String>,
}

/// Decides the answer to call number `n` (0-based).
pub(crate) type Script = Box<dyn FnMut(usize, &SendLogsRequest) -> Result<(), Status> + Send>;

/// What the fake gateway saw and accepted.
pub(crate) struct FakeState {
    seen: Mutex<Vec<Seen>>,
    accepted: Mutex<Vec<LogEvent>>,
    script: Mutex<Script>,
}

impl FakeState {
    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    /// Events of every request answered OK, in arrival order.
    pub(crate) fn accepted(&self) -> Vec<LogEvent> {
        self.accepted.lock().expect("lock").clone()
    }
}

struct Service(Arc<FakeState>);

#[tonic::async_trait]
impl LogIngest for Service {
    async fn send_logs(
        &self,
        request: Request<SendLogsRequest>,
    ) -> Result<Response<SendLogsResponse>, Status> {
        let header = |key: &str| {
            request
                .metadata()
                .get(key)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let authorization = header("authorization");
        let encoding = header("grpc-encoding");
        let request = request.into_inner();
        let n = {
            let mut seen = self.0.seen.lock().expect("lock");
            seen.push(Seen {
                request: request.clone(),
                authorization,
                encoding,
            });
            seen.len() - 1
        };
        let answer = (self.0.script.lock().expect("lock"))(n, &request);
        answer?;
        let count = request.events.len();
        self.0.accepted.lock().expect("lock").extend(request.events);
        Ok(Response::new(SendLogsResponse {
            accepted_events: u32::try_from(count).unwrap_or(u32::MAX),
            written: Vec::new(),
        }))
    }

    async fn watermark(
        &self,
        _: Request<WatermarkRequest>,
    ) -> Result<Response<WatermarkResponse>, Status> {
        Err(Status::unimplemented(
            "the fake gateway has no table; watermarks are tested against the real one",
        ))
    }
}

/// Starts a fake gateway on a free loopback port of the current runtime.
pub(crate) async fn start(
    script: impl FnMut(usize, &SendLogsRequest) -> Result<(), Status> + Send + 'static,
) -> (SocketAddr, Arc<FakeState>) {
    let state = Arc::new(FakeState {
        seen: Mutex::new(Vec::new()),
        accepted: Mutex::new(Vec::new()),
        script: Mutex::new(Box::new(script)),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let service = LogIngestServer::new(Service(state.clone()))
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd)
        .max_decoding_message_size(16 << 20);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (addr, state)
}

/// A script that accepts everything.
pub(crate) fn accept_all(_: usize, _: &SendLogsRequest) -> Result<(), Status> {
    Ok(())
}

/// A status with a `retry-after-ms` hint.
pub(crate) fn with_retry_after(mut status: Status, ms: u64) -> Status {
    status.metadata_mut().insert(
        crate::error::RETRY_AFTER_MS,
        ms.to_string().parse().expect("ascii"),
    );
    status
}
