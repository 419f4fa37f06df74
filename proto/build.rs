//! Generates the telemetry.v1 types with protox (a pure-Rust protobuf
//! compiler), so the build needs no protoc binary and no network; and a
//! second `LogIngest` server, the gateway's, whose SendLogs receives its
//! request as bytes (`tlake_proto::raw`).

use tonic_build::manual::{Builder, Method, Service};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "telemetry/v1/logs.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["."])?;
    tonic_prost_build::configure()
        .bytes(".telemetry.v1")
        .compile_fds(descriptors)?;

    // The same service and routes as logs.proto declares; only SendLogs'
    // request type differs (bytes, read in place by the gateway).
    let log_ingest = Service::builder()
        .name("LogIngest")
        .package("telemetry.v1")
        .method(
            Method::builder()
                .name("send_logs")
                .route_name("SendLogs")
                .input_type("bytes::Bytes")
                .output_type("crate::v1::SendLogsResponse")
                .codec_path("crate::codec::RawRequest")
                .build(),
        )
        .method(
            Method::builder()
                .name("watermark")
                .route_name("Watermark")
                .input_type("crate::v1::WatermarkRequest")
                .output_type("crate::v1::WatermarkResponse")
                .codec_path("tonic_prost::ProstCodec")
                .build(),
        )
        .build();
    Builder::new()
        .build_client(false)
        .build_transport(false)
        .compile(&[log_ingest]);
    Ok(())
}
