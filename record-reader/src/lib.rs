//! tlake-record-reader: one Kafka record as the gateway writes it (a
//! telemetry.v1 `LogBatch`) read in place, and its events turned into Arrow
//! rows in a table's layout — without I/O, DuckDB or Iceberg, so it can be
//! fuzzed on its own (`fuzz/`) and shared by every reader of the topic: the
//! compactor's flush and `tlake sql --fresh`.
//!
//! [`wire`] (from `tlake-proto`, shared with the gateway) is a zero-copy
//! cursor over the protobuf wire format; [`decode`]
//! reads a whole record with it into the stream, the facts its events share
//! and one dedup/sort key per event, falling back to prost (the authority
//! on what a valid record is) for anything the cursor does not handle;
//! [`rows`] materializes the events a reader chose as Arrow columns, with
//! the attributes a table promotes to columns of their own ([`promoted`]).
#![deny(missing_docs)]

pub mod decode;
pub mod promoted;
pub mod rows;
pub use tlake_proto::wire;
