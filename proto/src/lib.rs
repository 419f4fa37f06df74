//! The telemetry.v1 wire contract: generated protobuf types and the
//! `LogIngest` gRPC service (client and server).
//!
//! Only this crate sees generated code; the SDK and binaries re-export what
//! they need under their own names.
#![deny(missing_docs)]

pub mod codec;
pub mod contract;
pub mod positions;

/// `telemetry.v1` messages and the `LogIngest` service.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("telemetry.v1");
}
