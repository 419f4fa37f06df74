//! The `tlake` command line: send events to a gateway, benchmark it.
//!
//! Kept as a library too so its event sources are reusable by benchmarks.
#![deny(missing_docs)]

pub mod bench;
pub mod doctor;
pub mod events;
pub mod send;
