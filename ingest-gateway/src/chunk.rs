//! Chunking: turns the validated events of one request into Kafka record
//! payloads (`LogBatch`), each at most `chunk_bytes`, so that the broker is
//! bound by bytes and never by record count, and no record nears Kafka's
//! message size limit. Pure functions, no I/O.
//!
//! Each record is keyed by the id of its first event. Chunking depends only
//! on the events, so a client re-sending a request whose outcome it never
//! learnt (a gateway killed mid-call, a Kafka timeout) produces records with
//! the same keys, which the partitioner sends to the same partitions: the
//! copies meet in one compactor's stream of that partition, where its id
//! window drops them. Keyless records would land on any partition, and a
//! copy read by another compactor than the first could become a second row.

use std::ops::Range;

use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint};
use tlake_proto::contract::tags::{log_batch, log_event};
use tlake_proto::v1::{LogBatch, LogEvent, Resource, Source};

use crate::scan;

/// Bytes reserved in every chunk for the envelope (stream, resource, times).
const ENVELOPE_SLACK: usize = 64;

/// Size of the observed time the gateway adds to an event without a time:
/// its key (1 byte) and the fixed64.
const STAMP_BYTES: usize = 9;

/// One Kafka record of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The record key: the id of the chunk's first event.
    pub key: Vec<u8>,
    /// The encoded `LogBatch`.
    pub payload: Vec<u8>,
}

/// Splits decoded `events` into encoded `LogBatch` payloads of at most
/// `chunk_bytes` (plus the resource, which every chunk repeats).
///
/// Events keep their order. An event with no time of its own gets the time the
/// gateway received it as its observed time, so every row has a time.
pub fn chunks(
    stream: &str,
    resource: Option<&Resource>,
    mut events: Vec<LogEvent>,
    source: Source,
    received_unix_nano: u64,
    chunk_bytes: usize,
) -> Vec<Chunk> {
    for event in &mut events {
        if event.time_unix_nano == 0 && event.observed_time_unix_nano == 0 {
            event.observed_time_unix_nano = received_unix_nano;
        }
    }
    let runs = runs(events.iter().map(Message::encoded_len), chunk_bytes);
    let mut events = events.into_iter();
    runs.into_iter()
        .map(|run| {
            let events: Vec<LogEvent> = events.by_ref().take(run.len()).collect();
            Chunk {
                key: events[0].event_id.to_vec(),
                payload: LogBatch {
                    stream: stream.to_owned(),
                    resource: resource.cloned(),
                    events,
                    received_unix_nano,
                    source: source as i32,
                }
                .encode_to_vec(),
            }
        })
        .collect()
}

/// [`chunks`] for a request read in place: the events' bytes are copied as
/// they came into the payloads, and an event without a time gets the
/// receive time inserted where prost would write it. For a request prost
/// wrote, the payloads are byte for byte the ones [`chunks`] makes.
pub fn forwarded(
    stream: &str,
    request: &scan::Request<'_>,
    source: Source,
    received_unix_nano: u64,
    chunk_bytes: usize,
) -> Vec<Chunk> {
    let events = &request.events;
    let sizes = events.iter().map(|e| stamped_len(e));
    runs(sizes, chunk_bytes)
        .into_iter()
        .map(|run| {
            let events = &events[run];
            let body: usize = events.iter().map(|e| framed(stamped_len(e))).sum();
            let resource = request.resource.map_or(0, |r| framed(r.len()));
            let mut payload = Vec::with_capacity(body + resource + stream.len() + 24);
            put_bytes(&mut payload, log_batch::STREAM, stream.as_bytes());
            if let Some(resource) = request.resource {
                put_bytes(&mut payload, log_batch::RESOURCE, resource);
            }
            for event in events {
                encode_key(log_batch::EVENTS, WireType::LengthDelimited, &mut payload);
                encode_varint(stamped_len(event) as u64, &mut payload);
                if event.untimed {
                    let (before, after) = event.bytes.split_at(event.stamp_at);
                    payload.extend_from_slice(before);
                    encode_key(
                        log_event::OBSERVED_TIME_UNIX_NANO,
                        WireType::SixtyFourBit,
                        &mut payload,
                    );
                    payload.extend_from_slice(&received_unix_nano.to_le_bytes());
                    payload.extend_from_slice(after);
                } else {
                    payload.extend_from_slice(event.bytes);
                }
            }
            // As prost writes them: proto3 leaves zero values out.
            if received_unix_nano != 0 {
                encode_key(
                    log_batch::RECEIVED_UNIX_NANO,
                    WireType::SixtyFourBit,
                    &mut payload,
                );
                payload.extend_from_slice(&received_unix_nano.to_le_bytes());
            }
            if source as i32 != 0 {
                encode_key(log_batch::SOURCE, WireType::Varint, &mut payload);
                encode_varint(source as u64, &mut payload);
            }
            Chunk {
                key: events[0].event_id.to_vec(),
                payload,
            }
        })
        .collect()
}

/// The size of an event as it goes into its chunk.
fn stamped_len(event: &scan::Event<'_>) -> usize {
    event.bytes.len() + if event.untimed { STAMP_BYTES } else { 0 }
}

/// A length-delimited field of `len` bytes: key (1 byte for fields below
/// 16), length prefix, value.
fn framed(len: usize) -> usize {
    1 + prost::length_delimiter_len(len) + len
}

fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    encode_key(field, WireType::LengthDelimited, out);
    encode_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// Splits events of the given encoded sizes into consecutive runs whose
/// framed sizes fit a chunk; an event larger than a chunk gets its own.
fn runs(sizes: impl Iterator<Item = usize>, chunk_bytes: usize) -> Vec<Range<usize>> {
    let budget = chunk_bytes.saturating_sub(ENVELOPE_SLACK).max(1);
    let mut out = Vec::new();
    let (mut start, mut size) = (0, 0);
    let mut end = 0;
    for len in sizes {
        let framed = framed(len);
        if end > start && size + framed > budget {
            out.push(start..end);
            (start, size) = (end, 0);
        }
        size += framed;
        end += 1;
    }
    if end > start {
        out.push(start..end);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u8, body_len: usize) -> LogEvent {
        LogEvent {
            event_id: vec![n; 16].into(),
            severity_text: "x".repeat(body_len),
            ..LogEvent::default()
        }
    }

    fn decode(chunks: &[Chunk]) -> Vec<LogBatch> {
        chunks
            .iter()
            .map(|c| LogBatch::decode(c.payload.as_slice()).expect("decodes"))
            .collect()
    }

    #[test]
    fn every_event_lands_once_in_order() {
        let events: Vec<_> = (0..200).map(|n| event(n, 300)).collect();
        let chunks = chunks("s", None, events, Source::SendLogs, 42, 4096);
        assert!(chunks.len() > 10, "{}", chunks.len());
        let batches = decode(&chunks);
        let ids: Vec<u8> = batches
            .iter()
            .flat_map(|b| b.events.iter().map(|e| e.event_id[0]))
            .collect();
        assert_eq!(ids, (0..200).collect::<Vec<u8>>());
        for (c, b) in chunks.iter().zip(&batches) {
            assert!(
                c.payload.len() <= 4096,
                "chunk of {} bytes",
                c.payload.len()
            );
            assert_eq!(
                c.key,
                b.events[0].event_id.to_vec(),
                "keyed by its first event"
            );
            assert_eq!(b.stream, "s");
            assert_eq!(b.received_unix_nano, 42);
            assert_eq!(b.source, Source::SendLogs as i32);
        }
    }

    #[test]
    fn missing_times_get_the_receive_time() {
        let mut timed = event(1, 0);
        timed.time_unix_nano = 5;
        let batches = decode(&chunks(
            "s",
            None,
            vec![event(0, 0), timed],
            Source::Otlp,
            99,
            4096,
        ));
        assert_eq!(batches[0].events[0].observed_time_unix_nano, 99);
        assert_eq!(batches[0].events[1].observed_time_unix_nano, 0);
        assert_eq!(batches[0].events[1].time_unix_nano, 5);
    }

    #[test]
    fn an_event_larger_than_a_chunk_gets_its_own() {
        let events = vec![event(0, 10), event(1, 9000), event(2, 10)];
        let batches = decode(&chunks("s", None, events, Source::SendLogs, 0, 4096));
        assert_eq!(
            batches.iter().map(|b| b.events.len()).collect::<Vec<_>>(),
            [1, 1, 1]
        );
    }

    #[test]
    fn the_same_events_give_the_same_keys() {
        // A re-sent request (another receive time) must map to the same partitions.
        let events: Vec<_> = (0..50).map(|n| event(n, 300)).collect();
        let keys = |received| -> Vec<Vec<u8>> {
            chunks("s", None, events.clone(), Source::SendLogs, received, 4096)
                .into_iter()
                .map(|c| c.key)
                .collect()
        };
        assert!(keys(1).len() > 1);
        assert_eq!(keys(1), keys(2));
    }

    #[test]
    fn forwarded_bytes_are_the_ones_prost_writes() {
        // The byte-for-byte round trip: a request as prost writes it, read in
        // place and forwarded, gives the very payloads of decode + re-encode.
        let resource = Resource {
            attributes: vec![tlake_proto::v1::KeyValue {
                key: "service.name".into(),
                value: Some(tlake_proto::v1::AnyValue {
                    value: Some(tlake_proto::v1::any_value::Value::StringValue("x".into())),
                }),
            }],
        };
        let mut events: Vec<_> = (0..120).map(|n| event(n, usize::from(n) * 7)).collect();
        for (n, e) in events.iter_mut().enumerate() {
            match n % 3 {
                0 => e.time_unix_nano = 1_000 + n as u64,
                1 => e.observed_time_unix_nano = 2_000 + n as u64,
                _ => e.severity_number = 9, // untimed: stamped between id and severity
            }
        }
        for resource in [None, Some(resource), Some(Resource::default())] {
            let request = tlake_proto::v1::SendLogsRequest {
                stream: String::new(),
                resource: resource.clone(),
                events: events.clone(),
            };
            let bytes = request.encode_to_vec();
            let scanned = scan::request(&bytes).expect("scans");
            for chunk_bytes in [1, 700, 4096, 1 << 20] {
                let decoded = chunks(
                    "default",
                    resource.as_ref(),
                    events.clone(),
                    Source::SendLogs,
                    77,
                    chunk_bytes,
                );
                let forwarded = forwarded("default", &scanned, Source::SendLogs, 77, chunk_bytes);
                assert_eq!(forwarded, decoded, "chunk_bytes {chunk_bytes}");
            }
        }
    }

    #[test]
    fn no_events_no_chunks() {
        assert!(chunks("s", None, Vec::new(), Source::SendLogs, 0, 4096).is_empty());
    }
}
