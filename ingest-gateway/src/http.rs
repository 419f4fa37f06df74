//! OTLP/HTTP: `POST /v1/logs` (default port 4318) with a binary protobuf or
//! an OTLP/JSON body, optionally gzip-compressed, answered by the OTLP
//! specification's HTTP rules (200 with an `ExportLogsServiceResponse`; 4xx
//! final; 429/503 retryable with `Retry-After`; errors carry a
//! `google.rpc.Status` body in the request's encoding).
//!
//! Only the body is this file's: once decoded, the request takes the gRPC
//! Export's path ([`Ingest::export_request`]) — the same auth, limits,
//! validation, stream header, event ids, and OK only after Kafka's ack.
//!
//! The same listener answers `GET /v1/watermark` (ours, not OTLP's): the
//! Watermark RPC for HTTP clients, in JSON. A 200 says where the records
//! were written in its `x-tlake-written` header, the positions to wait for.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use prost::Message;
use tlake_proto::positions::{self, WRITTEN_HEADER};
use tonic::Code;

use crate::auth::BearerAuth;
use crate::error::GatewayError;
use crate::metrics::{Metrics, RpcLabels};
use crate::service::{Ingest, STREAM_HEADER, stream_header};

/// The OTLP/HTTP logs path.
pub const LOGS_PATH: &str = "/v1/logs";
/// The `rpc` label of OTLP/HTTP requests in `tlake_gateway_requests_total`.
pub const RPC_LABEL: &str = "http:/v1/logs";
/// The watermark path: `?stream=S&wait_for=P:O,P:O&timeout_ms=N`.
pub const WATERMARK_PATH: &str = "/v1/watermark";

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

/// The body encodings OTLP/HTTP defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `application/x-protobuf`.
    Protobuf,
    /// `application/json`: the OTLP/JSON mapping.
    Json,
}

impl Encoding {
    /// From a `Content-Type` header (parameters such as `charset` ignored).
    pub fn from_content_type(value: Option<&HeaderValue>) -> Result<Self, GatewayError> {
        let essence = value
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase());
        match essence.as_deref() {
            Some(PROTOBUF) => Ok(Self::Protobuf),
            Some(JSON) => Ok(Self::Json),
            other => Err(GatewayError::UnsupportedMedia(format!(
                "Content-Type {}: OTLP/HTTP takes {PROTOBUF} or {JSON}",
                other.unwrap_or("missing")
            ))),
        }
    }

    fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Self::Protobuf => PROTOBUF,
            Self::Json => JSON,
        })
    }
}

#[derive(Debug)]
struct Shared {
    ingest: Arc<Ingest>,
    auth: BearerAuth,
    metrics: Arc<Metrics>,
    max_request_bytes: usize,
}

impl Shared {
    /// The request's bearer token, checked as the gRPC interceptor does.
    fn authorize(&self, headers: &HeaderMap) -> Result<(), GatewayError> {
        self.auth.check(
            headers
                .get(header::AUTHORIZATION)
                .map(HeaderValue::as_bytes),
        )
    }
}

/// The OTLP/HTTP routes. `max_request_bytes` bounds the body both as sent
/// and decompressed (the gRPC listener's `limits.max_request_bytes`).
pub fn router(
    ingest: Arc<Ingest>,
    auth: BearerAuth,
    metrics: Arc<Metrics>,
    max_request_bytes: usize,
) -> Router {
    Router::new()
        .route(LOGS_PATH, post(export_logs))
        .route(WATERMARK_PATH, get(watermark))
        .layer(DefaultBodyLimit::max(max_request_bytes))
        .with_state(Arc::new(Shared {
            ingest,
            auth,
            metrics,
            max_request_bytes,
        }))
}

async fn export_logs(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let encoding = Encoding::from_content_type(headers.get(header::CONTENT_TYPE));
    // An unreadable Content-Type is answered in JSON, the readable one.
    let answer_in = encoding.as_ref().copied().unwrap_or(Encoding::Json);
    let result = export(&shared, &headers, encoding, body).await;
    let code = result
        .as_ref()
        .map_or_else(GatewayError::code, |_| Code::Ok);
    shared
        .metrics
        .requests
        .get_or_create(&RpcLabels {
            rpc: RPC_LABEL.to_owned(),
            code: format!("{code:?}"),
        })
        .inc();
    match result {
        Ok(written) => success(answer_in, &written),
        Err(err) => failure(answer_in, &err),
    }
}

/// `GET /v1/watermark`'s query.
#[derive(Debug, serde::Deserialize)]
struct WatermarkQuery {
    #[serde(default)]
    stream: String,
    /// `partition:offset`, comma separated.
    #[serde(default)]
    wait_for: String,
    #[serde(default)]
    timeout_ms: u32,
}

/// The Watermark RPC over HTTP: `{"stream", "committed": [{"partition",
/// "offset"}], "reached"}`, or a JSON `google.rpc.Status`.
async fn watermark(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    query: Result<Query<WatermarkQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let result = async {
        shared.authorize(&headers)?;
        let Query(query) =
            query.map_err(|e| GatewayError::InvalidArgument(format!("query: {}", e.body_text())))?;
        let wait_for = tlake_proto::positions::parse(&query.wait_for)
            .map_err(|e| GatewayError::InvalidArgument(format!("wait_for: {e}")))?;
        let answer = shared
            .ingest
            .watermark(
                &query.stream,
                &wait_for,
                Duration::from_millis(u64::from(query.timeout_ms)),
            )
            .await?;
        Ok::<_, GatewayError>(serde_json::json!({
            "stream": if query.stream.is_empty() { tlake_proto::contract::DEFAULT_STREAM } else { &query.stream },
            "committed": answer.committed.iter()
                .map(|(p, o)| serde_json::json!({"partition": p, "offset": o}))
                .collect::<Vec<_>>(),
            "reached": answer.reached,
            "committed_event_time_unix_nano": answer.newest_event_unix_nano(),
        }))
    }
    .await;
    match result {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, HeaderValue::from_static(JSON))],
            body.to_string(),
        )
            .into_response(),
        Err(err) => failure(Encoding::Json, &err),
    }
}

/// Auth first (as the gRPC interceptor does), then the body, then the pipeline.
async fn export(
    shared: &Shared,
    headers: &HeaderMap,
    encoding: Result<Encoding, GatewayError>,
    body: Result<Bytes, BytesRejection>,
) -> Result<BTreeMap<i32, i64>, GatewayError> {
    shared.authorize(headers)?;
    let encoding = encoding?;
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            GatewayError::TooLarge(format!(
                "request body is larger than the limit of {} bytes — split the batch",
                shared.max_request_bytes
            ))
        } else {
            GatewayError::InvalidArgument(format!("reading the request body: {rejection}"))
        }
    })?;
    let body = decompress(
        headers.get(header::CONTENT_ENCODING),
        body,
        shared.max_request_bytes,
    )?;
    let request = decode(encoding, &body)?;
    let stream = stream_header(headers.get(STREAM_HEADER))?;
    let accepted = shared.ingest.export_request(&stream, request).await?;
    Ok(accepted.written)
}

/// The body as sent (no or `identity` encoding) or gunzipped, at most `max` bytes.
pub fn decompress(
    encoding: Option<&HeaderValue>,
    body: Bytes,
    max: usize,
) -> Result<Bytes, GatewayError> {
    let encoding = encoding
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase())
        .unwrap_or_default();
    match encoding.as_str() {
        "" | "identity" => Ok(body),
        "gzip" => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(body.as_ref())
                .take(max as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|err| GatewayError::InvalidArgument(format!("gzip body: {err}")))?;
            if out.len() > max {
                return Err(GatewayError::TooLarge(format!(
                    "decompressed request body is larger than the limit of {max} bytes — split the batch"
                )));
            }
            Ok(out.into())
        }
        other => Err(GatewayError::UnsupportedMedia(format!(
            "Content-Encoding {other}: OTLP/HTTP takes gzip or none"
        ))),
    }
}

/// An `ExportLogsServiceRequest` from protobuf or OTLP/JSON.
pub fn decode(encoding: Encoding, body: &[u8]) -> Result<ExportLogsServiceRequest, GatewayError> {
    match encoding {
        Encoding::Protobuf => ExportLogsServiceRequest::decode(body).map_err(|err| {
            GatewayError::InvalidArgument(format!(
                "body is not a protobuf ExportLogsServiceRequest: {err}"
            ))
        }),
        Encoding::Json => serde_json::from_slice(body).map_err(|err| {
            GatewayError::InvalidArgument(format!(
                "body is not an OTLP/JSON ExportLogsServiceRequest: {err}"
            ))
        }),
    }
}

/// 200: every record was accepted (the gateway accepts a request whole or
/// not at all), so there is no partial_success to report; where they were
/// written goes in the [`WRITTEN_HEADER`].
fn success(encoding: Encoding, written: &BTreeMap<i32, i64>) -> Response {
    let body = match encoding {
        Encoding::Protobuf => ExportLogsServiceResponse::default().encode_to_vec(),
        Encoding::Json => b"{}".to_vec(),
    };
    let mut response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, encoding.content_type())],
        body,
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&positions::to_text(written)) {
        response.headers_mut().insert(WRITTEN_HEADER, value);
    }
    response
}

/// `google.rpc.Status`, the body of an OTLP/HTTP error (`details` unused).
#[derive(Clone, PartialEq, Message)]
pub struct RpcStatus {
    /// The gRPC code.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// What went wrong, for a person.
    #[prost(string, tag = "2")]
    pub message: String,
}

fn failure(encoding: Encoding, err: &GatewayError) -> Response {
    let status = RpcStatus {
        code: err.code() as i32,
        message: err.to_string(),
    };
    let body = match encoding {
        Encoding::Protobuf => status.encode_to_vec(),
        Encoding::Json => serde_json::json!({ "code": status.code, "message": status.message })
            .to_string()
            .into_bytes(),
    };
    let mut response = (
        err.http_status(),
        [(header::CONTENT_TYPE, encoding.content_type())],
        body,
    )
        .into_response();
    if let Some(wait) = err.retry_after() {
        // Retry-After is in whole seconds; round up so a client never retries early.
        let seconds = wait.as_millis().div_ceil(1000).max(1);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds as u64));
    }
    response
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn content_types_are_the_two_otlp_defines() {
        let value = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(
            Encoding::from_content_type(Some(&value("application/x-protobuf"))).unwrap(),
            Encoding::Protobuf
        );
        assert_eq!(
            Encoding::from_content_type(Some(&value("Application/JSON; charset=utf-8"))).unwrap(),
            Encoding::Json
        );
        for bad in [Some(value("text/plain")), None] {
            let err = Encoding::from_content_type(bad.as_ref()).unwrap_err();
            assert_eq!(
                err.http_status(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{err}"
            );
        }
    }

    #[test]
    fn gzip_bodies_are_bounded_after_decompression() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&[b'a'; 1000]).unwrap();
        let zipped = Bytes::from(gz.finish().unwrap());
        let gzip = HeaderValue::from_static("gzip");
        assert_eq!(
            decompress(Some(&gzip), zipped.clone(), 1000).unwrap().len(),
            1000
        );
        let err = decompress(Some(&gzip), zipped, 999).unwrap_err();
        assert_eq!(err.http_status(), StatusCode::PAYLOAD_TOO_LARGE, "{err}");
        let err = decompress(Some(&gzip), Bytes::from_static(b"not gzip"), 1000).unwrap_err();
        assert_eq!(err.http_status(), StatusCode::BAD_REQUEST, "{err}");
        let br = HeaderValue::from_static("br");
        let err = decompress(Some(&br), Bytes::new(), 1000).unwrap_err();
        assert_eq!(
            err.http_status(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{err}"
        );
    }

    #[test]
    fn otlp_json_uses_hex_ids_and_string_integers() {
        let json = br#"{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"checkout"}}]},
            "scopeLogs":[{"scope":{"name":"s"},"logRecords":[{"timeUnixNano":"1764633600000000000","severityNumber":9,
            "severityText":"INFO","body":{"stringValue":"hello"},"traceId":"5b8efff798038103d269b633813fc60c",
            "spanId":"eee19b7ec3c1b174","attributes":[{"key":"n","value":{"intValue":"42"}}]}]}]}]}"#;
        let request = decode(Encoding::Json, json).unwrap();
        let record = &request.resource_logs[0].scope_logs[0].log_records[0];
        assert_eq!(record.time_unix_nano, 1_764_633_600_000_000_000);
        assert_eq!(record.severity_number, 9);
        assert_eq!(record.trace_id.len(), 16);
        assert_eq!(
            record.span_id,
            [0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x74]
        );
        let err = decode(Encoding::Json, b"{\"resourceLogs\": 5}").unwrap_err();
        assert_eq!(err.http_status(), StatusCode::BAD_REQUEST, "{err}");
        let err = decode(Encoding::Protobuf, b"\xff\xff\xff").unwrap_err();
        assert_eq!(err.http_status(), StatusCode::BAD_REQUEST, "{err}");
    }

    #[test]
    fn retryable_failures_say_when_to_retry() {
        let overloaded = GatewayError::Overloaded {
            inflight_limit: 1,
            retry_after: std::time::Duration::from_millis(200),
        };
        let response = failure(Encoding::Json, &overloaded);
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let response = failure(Encoding::Protobuf, &GatewayError::NotDelivered("t".into()));
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.headers().contains_key(header::RETRY_AFTER));
        let response = failure(Encoding::Protobuf, &GatewayError::Unauthenticated);
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(!response.headers().contains_key(header::RETRY_AFTER));
    }
}
