//! SendLogs: bytes as tonic hands them to the gateway (a protobuf
//! `SendLogsRequest`), read in place or decoded by prost as the gateway
//! does, through validation and chunking, read back by the compactor's
//! reader — and where the scan reads them, checked against prost
//! (`tlake_fuzz::send_logs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tlake_fuzz::send_logs(data));
