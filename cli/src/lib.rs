//! The `tlake` command line: send events to a gateway, query the lake, list
//! its tables, check a deployment, benchmark the gateway.
//!
//! Kept as a library too so its event sources are reusable by benchmarks.
#![deny(missing_docs)]

pub mod bench;
pub mod doctor;
pub mod events;
pub mod freshness;
pub mod lake;
pub mod load;
pub mod plot;
pub mod send;
pub mod soak;
pub mod sql;
pub mod tables;
