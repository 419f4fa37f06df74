//! What the fuzz targets share: the gateway's path from a request to Kafka
//! records, checked against the compactor's reader of those records.
//!
//! The property: **whatever the gateway accepts, the compactor reads** —
//! every chunk of an accepted request scans without a dead-letter reason,
//! under the request's stream, and the chunks hold exactly the request's
//! event ids, in order, once. A request the gateway refuses must be refused
//! with an error, never a panic. SendLogs' requests read in place
//! ([`send_logs`]) must also agree with prost on every byte string.

use std::collections::BTreeMap;

use prost::Message as _;
use tlake_ingest_gateway::config::Limits;
use tlake_ingest_gateway::{chunk, scan, validate};
use tlake_proto::v1::{LogBatch, LogEvent, Resource, SendLogsRequest, Source};
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
    let mut read = Vec::with_capacity(count);
    for (resource, events) in groups {
        let envelope = resource.as_ref().map_or(0, prost::Message::encoded_len) + 128;
        let chunks = chunk::chunks(
            stream,
            resource.as_ref(),
            events,
            source,
            RECEIVED,
            limits.chunk_bytes,
        );
        read.extend(read_back(stream, &chunks, envelope));
    }
    assert_eq!(
        read, sent,
        "the records hold the request's events, once, in order"
    );
}

/// The receive time the fuzzed gateway stamps.
const RECEIVED: u64 = 1_700_000_000_000_000_000;

/// SendLogs as the gateway serves it: the request read in place when the
/// scan can (forwarded, then read back), and decoded by prost otherwise.
/// Where the scan reads the bytes, prost must decode them too, the rules
/// must give the same verdict, and the records must hold the same events
/// as decode + re-encode would write.
pub fn send_logs(data: &[u8]) {
    let Ok(scanned) = scan::request(data) else {
        if let Ok(request) = SendLogsRequest::decode(data) {
            accept_and_read_back(
                &request.stream,
                vec![(request.resource, request.events)],
                Source::SendLogs,
            );
        }
        return;
    };
    let decoded = SendLogsRequest::decode(data)
        .unwrap_or_else(|e| panic!("the scan reads a request prost refuses: {e}"));
    assert_eq!(scanned.stream, decoded.stream, "the stream");
    let limits = limits();
    let streams = streams();
    let Ok((stream, _topic)) = validate::route(&streams, scanned.stream) else {
        return;
    };
    let groups = vec![(decoded.resource, decoded.events)];
    let verdict = validate::scanned(&scanned, &limits);
    // An event's size as sent may exceed its size re-encoded (e.g. a varint
    // written long), never fall below it: the size rule is the one that may differ.
    match (&verdict, validate::request(&groups, &limits)) {
        (Ok((n, sent)), Ok((m, canonical))) => {
            assert_eq!(n, &m, "event counts");
            assert!(
                *sent >= canonical,
                "{sent} bytes as sent, {canonical} re-encoded"
            );
        }
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "the refusals"),
        (Err(a), Ok(_)) => assert!(
            a.to_string().contains("bytes encoded"),
            "only the scan refuses: {a}"
        ),
        (Ok(_), Err(b)) => panic!("only prost refuses: {b}"),
    }
    if verdict.is_err() {
        return;
    }
    let forwarded = chunk::forwarded(
        stream,
        &scanned,
        Source::SendLogs,
        RECEIVED,
        limits.chunk_bytes,
    );
    let envelope = scanned.resource.map_or(0, <[u8]>::len) + 128;
    let read = read_back(stream, &forwarded, envelope);
    let sent: Vec<Vec<u8>> = scanned.events.iter().map(|e| e.event_id.to_vec()).collect();
    assert_eq!(
        read, sent,
        "the records hold the request's events, once, in order"
    );
    let (resource, events) = groups.into_iter().next().expect("one group");
    let reencoded = chunk::chunks(
        stream,
        resource.as_ref(),
        events,
        Source::SendLogs,
        RECEIVED,
        limits.chunk_bytes,
    );
    // Each event as prost encodes it, not the value: a NaN double is not
    // equal to itself, its bits are.
    let events_of = |chunks: &[chunk::Chunk]| -> Vec<Vec<u8>> {
        chunks
            .iter()
            .flat_map(|c| {
                LogBatch::decode(c.payload.as_slice())
                    .expect("a record prost reads")
                    .events
            })
            .map(|e| e.encode_to_vec())
            .collect()
    };
    assert_eq!(
        events_of(&forwarded),
        events_of(&reencoded),
        "forwarded and re-encoded records hold the same events"
    );
}

/// Reads every chunk with the compactor's reader; returns the event ids in
/// record order. Panics on a record the compactor would dead-letter.
fn read_back(stream: &str, chunks: &[chunk::Chunk], envelope: usize) -> Vec<Vec<u8>> {
    let limits = limits();
    let mut read = Vec::new();
    let mut keys = Vec::new();
    {
        for chunk in chunks {
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
    read
}
