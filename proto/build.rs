//! Generates the telemetry.v1 types with protox (a pure-Rust protobuf
//! compiler), so the build needs no protoc binary and no network.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "telemetry/v1/logs.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["."])?;
    tonic_prost_build::configure()
        .bytes(".telemetry.v1")
        .compile_fds(descriptors)?;
    Ok(())
}
