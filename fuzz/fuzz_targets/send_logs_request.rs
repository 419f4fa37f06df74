//! SendLogs: bytes as tonic hands them to the gateway (a protobuf
//! `SendLogsRequest`), through validation and chunking, read back by the
//! compactor's reader (`tlake_fuzz::accept_and_read_back`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use tlake_proto::v1::{SendLogsRequest, Source};

fuzz_target!(|data: &[u8]| {
    let Ok(request) = SendLogsRequest::decode(data) else {
        return;
    };
    tlake_fuzz::accept_and_read_back(
        &request.stream,
        vec![(request.resource, request.events)],
        Source::SendLogs,
    );
});
