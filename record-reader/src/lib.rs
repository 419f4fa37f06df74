//! tlake-record-reader: one Kafka record as the gateway writes it (a
//! telemetry.v1 `LogBatch`) read in place, without I/O and without the
//! compactor's heavy dependencies, so it can be fuzzed on its own
//! (`fuzz/`) and reused by any reader of the topic.
//!
//! [`wire`] is a zero-copy cursor over the protobuf wire format; [`decode`]
//! reads a whole record with it into the stream, the facts its events share
//! and one dedup/sort key per event, falling back to prost (the authority
//! on what a valid record is) for anything the cursor does not handle.
#![deny(missing_docs)]

pub mod decode;
pub mod wire;
