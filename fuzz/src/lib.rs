//! What the fuzz targets share: the gateway's path from a decoded request to
//! Kafka records, checked against the compactor's reader of those records.
//!
//! The property: **whatever the gateway accepts, the compactor reads** —
//! every chunk of an accepted request scans without a dead-letter reason,
//! under the request's stream, and the chunks hold exactly the request's
//! event ids, in order, once. A request the gateway refuses must be refused
//! with an error, never a panic.

use std::collections::BTreeMap;

use tlake_ingest_gateway::config::Limits;
use tlake_ingest_gateway::{chunk, validate};
use tlake_proto::v1::{LogEvent, Resource, Source};
use tlake_record_reader::decode::{Origin, scan};

/// Limits small enough that fuzzed requests are split into several chunks
/// and meet every bound (the defaults are MiB-sized).
pub fn limits() -> Limits {
    Limits {
        max_request_bytes: 1 << 20,
        max_events_per_request: 2_000,
        max_event_bytes: 4 << 10,
        chunk_bytes: 8 << 10,
        max_inflight_bytes: 1 << 20,
    }
}

/// The routes of the fuzzed gateway: the default stream and one more.
pub fn streams() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("default".to_owned(), "telemetry-logs".to_owned()),
        ("app".to_owned(), "app-logs".to_owned()),
    ])
}

/// Runs a decoded request through the gateway's validation and chunking
/// (`Ingest::accept` without Kafka) and reads every chunk back with the
/// compactor's reader; panics where the two disagree.
pub fn accept_and_read_back(
    stream: &str,
    groups: Vec<(Option<Resource>, Vec<LogEvent>)>,
    source: Source,
) {
    let limits = limits();
    let streams = streams();
    let Ok((stream, _topic)) = validate::route(&streams, stream) else {
        return;
    };
    let Ok((count, _bytes)) = validate::request(&groups, &limits) else {
        return;
    };
    let sent: Vec<Vec<u8>> = groups
        .iter()
        .flat_map(|(_, events)| events.iter().map(|e| e.event_id.to_vec()))
        .collect();
    assert_eq!(sent.len(), count);
    let received = 1_700_000_000_000_000_000;
    let mut read = Vec::with_capacity(count);
    let mut keys = Vec::new();
    for (resource, events) in groups {
        let envelope = resource.as_ref().map_or(0, prost::Message::encoded_len) + 128;
        for chunk in chunk::chunks(
            stream,
            resource.as_ref(),
            events,
            source,
            received,
            limits.chunk_bytes,
        ) {
            assert!(
                chunk.payload.len() <= limits.chunk_bytes + envelope,
                "a chunk of {} bytes for chunk_bytes {} and a {envelope}-byte envelope",
                chunk.payload.len(),
                limits.chunk_bytes
            );
            let scanned = scan(
                &chunk.payload,
                Origin {
                    partition: 0,
                    offset: 0,
                },
                &mut keys,
            )
            .unwrap_or_else(|reason| {
                panic!("the compactor dead-letters a record the gateway accepted: {reason}")
            });
            assert_eq!(scanned.stream, stream, "the record's stream");
            assert_eq!(
                keys.first().map(|k| k.id.to_vec()),
                Some(chunk.key.clone()),
                "a record is keyed by its first event's id"
            );
            read.extend(keys.iter().map(|k| k.id.to_vec()));
        }
    }
    assert_eq!(
        read, sent,
        "the records hold the request's events, once, in order"
    );
}
