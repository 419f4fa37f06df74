//! OTLP/HTTP: a `POST /v1/logs` body as the gateway's HTTP handler reads it —
//! the first byte picks the Content-Type (bit 0: protobuf or JSON) and the
//! Content-Encoding (bit 1: gzip, inflated under the request limit) — then
//! decoded, mapped from OTLP, validated, chunked and read back by the
//! compactor's reader (`tlake_fuzz::accept_and_read_back`).
#![no_main]

use bytes::Bytes;
use http::HeaderValue;
use libfuzzer_sys::fuzz_target;
use tlake_ingest_gateway::{http as otlp_http, otlp};
use tlake_proto::v1::Source;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let encoding = if mode & 1 == 0 {
        otlp_http::Encoding::Protobuf
    } else {
        otlp_http::Encoding::Json
    };
    let gzip = HeaderValue::from_static("gzip");
    let content_encoding = (mode & 2 != 0).then_some(&gzip);
    let max = tlake_fuzz::limits().max_request_bytes;
    let Ok(body) = otlp_http::decompress(content_encoding, Bytes::copy_from_slice(body), max)
    else {
        return;
    };
    assert!(body.len() <= max, "inflated past the limit: {}", body.len());
    let Ok(request) = otlp_http::decode(encoding, &body) else {
        return;
    };
    let groups = otlp::decode(request)
        .into_iter()
        .map(|group| (group.resource, group.events))
        .collect();
    tlake_fuzz::accept_and_read_back("", groups, Source::Otlp);
});
