//! The HTTP/2 edge, around every gRPC service: normalizes the statuses tonic
//! answers by itself (before a handler runs) to the codes our clients rely
//! on, and counts every answer by method and code.
//!
//! tonic answers an undecodable body with INTERNAL and a decompression bomb
//! with RESOURCE_EXHAUSTED. For a client both mean "this request is bad, do
//! not retry it", so they become INVALID_ARGUMENT and OUT_OF_RANGE.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::HeaderValue;
use tonic::Code;

use crate::metrics::{Metrics, RpcLabels};

/// Maps a status tonic produced on its own to the one we answer with.
pub fn normalize(code: Code, message: &str) -> Code {
    match code {
        Code::Internal if message.starts_with("failed to decode Protobuf message") => {
            Code::InvalidArgument
        }
        Code::ResourceExhausted if message.starts_with("Error decompressing: size limit") => {
            Code::OutOfRange
        }
        other => other,
    }
}

/// The layer; see the module docs.
#[derive(Clone, Debug)]
pub struct Edge(pub Arc<Metrics>);

impl<S> tower::Layer<S> for Edge {
    type Service = EdgeService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        EdgeService {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// The service of [`Edge`].
#[derive(Clone, Debug)]
pub struct EdgeService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, RB> tower::Service<http::Request<B>> for EdgeService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let rpc = request
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let metrics = self.metrics.clone();
        let response = self.inner.call(request);
        Box::pin(async move {
            let mut response = response.await?;
            // Errors are answered "trailers-only", with the status in the
            // headers; a unary success carries its status in the trailers.
            let headers = response.headers_mut();
            let code = match headers
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i32>().ok())
            {
                None => Code::Ok,
                Some(raw) => {
                    let code = Code::from(raw);
                    let message = headers
                        .get("grpc-message")
                        .and_then(|v| v.to_str().ok())
                        .map(percent_decode)
                        .unwrap_or_default();
                    let normalized = normalize(code, &message);
                    if normalized != code {
                        headers.insert("grpc-status", HeaderValue::from(normalized as i32));
                    }
                    normalized
                }
            };
            metrics
                .requests
                .get_or_create(&RpcLabels {
                    rpc,
                    code: format!("{code:?}"),
                })
                .inc();
            Ok(response)
        })
    }
}

/// grpc-message is percent-encoded; only the prefix matters to `normalize`,
/// so a lossy decode is enough.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_statuses_are_normalized() {
        assert_eq!(
            normalize(
                Code::Internal,
                "failed to decode Protobuf message: invalid wire type"
            ),
            Code::InvalidArgument
        );
        assert_eq!(
            normalize(
                Code::ResourceExhausted,
                "Error decompressing: size limit, of 8 bytes, exceeded"
            ),
            Code::OutOfRange
        );
        // Our own retryable overload answer stays retryable.
        assert_eq!(
            normalize(Code::ResourceExhausted, "gateway is at its in-flight limit"),
            Code::ResourceExhausted
        );
        assert_eq!(normalize(Code::Internal, "something else"), Code::Internal);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("failed%20to%20decode"), "failed to decode");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
