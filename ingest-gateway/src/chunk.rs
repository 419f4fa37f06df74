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

use prost::Message;
use tlake_proto::v1::{LogBatch, LogEvent, Resource, Source};

/// Bytes reserved in every chunk for the envelope (stream, resource, times).
const ENVELOPE_SLACK: usize = 64;

/// One Kafka record of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The record key: the id of the chunk's first event.
    pub key: Vec<u8>,
    /// The encoded `LogBatch`.
    pub payload: Vec<u8>,
}

/// Splits `events` into encoded `LogBatch` payloads of at most `chunk_bytes`
/// (plus the resource, which every chunk repeats).
///
/// Events keep their order. An event with no time of its own gets the time the
/// gateway received it as its observed time, so every row has a time.
pub fn chunks(
    stream: &str,
    resource: Option<&Resource>,
    events: Vec<LogEvent>,
    source: Source,
    received_unix_nano: u64,
    chunk_bytes: usize,
) -> Vec<Chunk> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    let mut size = 0usize;
    let budget = chunk_bytes.saturating_sub(ENVELOPE_SLACK).max(1);
    let seal = |events: Vec<LogEvent>| Chunk {
        key: events[0].event_id.to_vec(),
        payload: LogBatch {
            stream: stream.to_owned(),
            resource: resource.cloned(),
            events,
            received_unix_nano,
            source: source as i32,
        }
        .encode_to_vec(),
    };
    for mut event in events {
        if event.time_unix_nano == 0 && event.observed_time_unix_nano == 0 {
            event.observed_time_unix_nano = received_unix_nano;
        }
        let len = event.encoded_len();
        // Field tag (1 byte) + length prefix (up to 10) + the event.
        let framed = 1 + prost::length_delimiter_len(len) + len;
        if !current.is_empty() && size + framed > budget {
            out.push(seal(std::mem::take(&mut current)));
            size = 0;
        }
        size += framed;
        current.push(event);
    }
    if !current.is_empty() {
        out.push(seal(current));
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
    fn no_events_no_chunks() {
        assert!(chunks("s", None, Vec::new(), Source::SendLogs, 0, 4096).is_empty());
    }
}
