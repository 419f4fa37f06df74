//! The test kit for end-to-end and fault tests against the local stack
//! (`deploy/local/stack up`): where the stack is, how to start our binaries,
//! an event generator, an ack ledger, a Kafka reader, and the no-loss /
//! no-duplicate assertion every acknowledging path is held to.
//!
//! Tests never skip: when the stack is not up they fail and say how to start it.

pub mod events;
pub mod gateway;
pub mod kafka;
pub mod ledger;
pub mod process;
pub mod raw;
pub mod stack;

pub use ledger::{AckLedger, assert_no_loss_no_dup};
pub mod compactor;
pub mod flow;
pub mod lake;

/// `data` gzip-compressed at the best ratio: small bodies for the OTLP/HTTP
/// tests, and gzip bombs (a long run of one byte shrinks about 1000:1).
pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(data).expect("gzip into memory");
    encoder.finish().expect("gzip into memory")
}
