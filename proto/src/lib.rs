//! The telemetry.v1 wire contract: generated protobuf types and the
//! `LogIngest` gRPC service (client and server).
//!
//! Only this crate sees generated code; the SDK and binaries re-export what
//! they need under their own names.
#![deny(missing_docs)]

pub mod codec;
pub mod contract;
pub mod positions;
pub mod wire;

/// `telemetry.v1` messages and the `LogIngest` service.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("telemetry.v1");
}

/// The `LogIngest` server as the gateway runs it: the routes of
/// [`v1::log_ingest_server`], but SendLogs receives its request as bytes
/// ([`codec::RawRequest`]) so that the gateway can check the events in
/// place and forward them without decoding and encoding them again.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod raw {
    include!(concat!(env!("OUT_DIR"), "/telemetry.v1.LogIngest.rs"));
}
