//! Sending arbitrary bytes as a gRPC request body, to test how the gateway
//! treats input no well-behaved client would send.

use tlake_proto::codec::PreEncoded;
use tonic::transport::Channel;
use tonic::{Request, Status};

/// Calls `path` (e.g. `/telemetry.v1.LogIngest/SendLogs`) with `body` as the
/// encoded message; the answer's content is ignored.
pub async fn call(channel: Channel, path: &'static str, body: Vec<u8>) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    grpc.unary(
        Request::new(body.into()),
        http::uri::PathAndQuery::from_static(path),
        PreEncoded::<()>::default(),
    )
    .await
    .map(drop)
}
