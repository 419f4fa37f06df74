//! Scan: a SendLogs request read in place — its stream, its resource's bytes
//! and, per event, the bytes and the facts the rules need — so that its
//! events can be checked (`validate`) and copied into Kafka records
//! (`chunk::forwarded`) without decoding them into messages and encoding
//! them again. Pure functions, no I/O.
//!
//! Why: decoding a request of 1000 events with prost and encoding its
//! chunks again was ~97 % of the gateway's own instructions per event
//! (BENCHMARKS.md, "Instruction counts"). The events go to Kafka as they
//! came; only an event without a time gets the receive time inserted.
//!
//! The scan is *sound but not complete*, like the compactor's reader: it
//! accepts only requests whose every field it knows, each singular field
//! once, nesting within [`wire::MAX_DEPTH`] and strings in UTF-8 — exactly
//! what prost accepts for those bytes, and decoded to the same values. On
//! anything else (an unknown field, a field sent twice, a wrong wire type,
//! malformed bytes) it answers [`Unusual`] and the caller lets prost decode
//! the request, so prost stays the authority on what a valid request is and
//! which error a malformed one gets.

use tlake_proto::contract::tags::{log_batch, log_event, resource};
use tlake_proto::wire::{self, Reader, Wire, WireError};

/// The request is not one the scan reads: decode it with prost instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unusual(pub &'static str);

impl From<WireError> for Unusual {
    fn from(e: WireError) -> Self {
        Self(e.0)
    }
}

/// A SendLogs request, borrowed from its bytes.
#[derive(Debug)]
pub struct Request<'a> {
    /// `stream` as sent ("" when absent).
    pub stream: &'a str,
    /// The `Resource` message's bytes, when the field is present.
    pub resource: Option<&'a [u8]>,
    /// The events, in order.
    pub events: Vec<Event<'a>>,
}

/// One `LogEvent` of a request, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    /// The whole message.
    pub bytes: &'a [u8],
    /// `event_id` (any length: the rules check it).
    pub event_id: &'a [u8],
    /// Length of `trace_id`.
    pub trace_id_len: usize,
    /// Length of `span_id`.
    pub span_id_len: usize,
    /// `severity_number`, as prost decodes an `int32` (the varint truncated).
    pub severity_number: i32,
    /// Neither `time_unix_nano` nor `observed_time_unix_nano` is set (or
    /// both are 0): the gateway stamps the receive time as observed time.
    pub untimed: bool,
    /// Where in `bytes` an observed time goes so the fields stay in number
    /// order (as prost writes them): before the first field numbered above it.
    pub stamp_at: usize,
}

/// Reads a SendLogs request (whose fields have the numbers of `LogBatch`'s
/// first three: `stream`, `resource`, `events`).
pub fn request(bytes: &[u8]) -> Result<Request<'_>, Unusual> {
    let mut r = Reader::new(bytes);
    let mut stream = None;
    let mut resource = None;
    let mut events = Vec::new();
    while let Some((field, w)) = r.field()? {
        match field {
            log_batch::STREAM => once(&mut stream, r.expect(w, Wire::Len)?.string()?)?,
            log_batch::RESOURCE => {
                let bytes = r.expect(w, Wire::Len)?.bytes()?;
                check_resource(bytes)?;
                once(&mut resource, bytes)?;
            }
            log_batch::EVENTS => events.push(event(r.expect(w, Wire::Len)?.bytes()?)?),
            _ => return Err(Unusual("unknown field in the request")),
        }
    }
    Ok(Request {
        stream: stream.unwrap_or(""),
        resource,
        events,
    })
}

/// Sets a singular field; a second occurrence is left to prost (which keeps
/// the last value, or merges a message).
fn once<T>(slot: &mut Option<T>, value: T) -> Result<(), Unusual> {
    match slot.replace(value) {
        None => Ok(()),
        Some(_) => Err(Unusual("singular field sent twice")),
    }
}

/// `Resource { repeated KeyValue attributes = 1 }`.
fn check_resource(bytes: &[u8]) -> Result<(), Unusual> {
    let mut r = Reader::new(bytes);
    while let Some((field, w)) = r.field()? {
        if field != resource::ATTRIBUTES {
            return Err(Unusual("unknown field in the resource"));
        }
        wire::check_key_value(r.expect(w, Wire::Len)?.bytes()?, wire::MAX_DEPTH)?;
    }
    Ok(())
}

/// One `LogEvent`: every field checked as prost would decode it.
fn event(bytes: &[u8]) -> Result<Event<'_>, Unusual> {
    let mut r = Reader::new(bytes);
    let mut event = Event {
        bytes,
        event_id: &[],
        trace_id_len: 0,
        span_id_len: 0,
        severity_number: 0,
        untimed: true,
        stamp_at: bytes.len(),
    };
    // Singular fields seen, by number: a second one is left to prost.
    let mut seen = 0u32;
    loop {
        let start = r.pos();
        let Some((field, w)) = r.field()? else { break };
        if field > log_event::OBSERVED_TIME_UNIX_NANO && event.stamp_at == bytes.len() {
            event.stamp_at = start;
        }
        if field != log_event::ATTRIBUTES {
            let bit = 1u32.checked_shl(field).unwrap_or(0);
            if seen & bit != 0 {
                return Err(Unusual("singular field sent twice"));
            }
            seen |= bit;
        }
        match field {
            log_event::EVENT_ID => event.event_id = r.expect(w, Wire::Len)?.bytes()?,
            log_event::TIME_UNIX_NANO | log_event::OBSERVED_TIME_UNIX_NANO => {
                if r.expect(w, Wire::I64)?.fixed64()? != 0 {
                    event.untimed = false;
                }
            }
            log_event::SEVERITY_NUMBER => {
                // prost decodes an int32 from a varint by truncation.
                event.severity_number = r.expect(w, Wire::Varint)?.varint()? as i32;
            }
            log_event::SEVERITY_TEXT | log_event::EVENT_NAME | log_event::SCOPE_NAME => {
                r.expect(w, Wire::Len)?.check_string()?;
            }
            log_event::BODY => {
                wire::check_any_value(r.expect(w, Wire::Len)?.bytes()?, wire::MAX_DEPTH)?;
            }
            log_event::ATTRIBUTES => {
                wire::check_key_value(r.expect(w, Wire::Len)?.bytes()?, wire::MAX_DEPTH)?;
            }
            log_event::TRACE_ID => event.trace_id_len = r.expect(w, Wire::Len)?.bytes()?.len(),
            log_event::SPAN_ID => event.span_id_len = r.expect(w, Wire::Len)?.bytes()?.len(),
            log_event::FLAGS => {
                r.expect(w, Wire::I32)?.fixed32()?;
            }
            _ => return Err(Unusual("unknown field in an event")),
        }
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use tlake_proto::v1::{AnyValue, KeyValue, LogEvent, SendLogsRequest, any_value};

    fn text(s: &str) -> Option<AnyValue> {
        Some(AnyValue {
            value: Some(any_value::Value::StringValue(s.to_owned())),
        })
    }

    fn full_event(n: u8) -> LogEvent {
        LogEvent {
            event_id: vec![n; 16].into(),
            time_unix_nano: 0,
            observed_time_unix_nano: 0,
            severity_number: 9,
            severity_text: "INFO".into(),
            body: text("hello"),
            attributes: vec![KeyValue {
                key: "k".into(),
                value: text("v"),
            }],
            trace_id: vec![1; 16].into(),
            span_id: vec![2; 8].into(),
            flags: 1,
            event_name: "e".into(),
            scope_name: "s".into(),
        }
    }

    #[test]
    fn reads_what_prost_writes() {
        let mut timed = full_event(2);
        timed.time_unix_nano = 5;
        let request = SendLogsRequest {
            stream: "app".into(),
            resource: Some(tlake_proto::v1::Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: text("x"),
                }],
            }),
            events: vec![full_event(1), timed],
        };
        let bytes = request.encode_to_vec();
        let scanned = request_of(&bytes);
        assert_eq!(scanned.stream, "app");
        let resource = scanned.resource.expect("resource");
        assert_eq!(
            tlake_proto::v1::Resource::decode(resource).expect("decodes"),
            request.resource.clone().expect("set")
        );
        assert_eq!(scanned.events.len(), 2);
        for (e, original) in scanned.events.iter().zip(&request.events) {
            assert_eq!(LogEvent::decode(e.bytes).expect("decodes"), *original);
            assert_eq!(e.event_id, &original.event_id[..]);
            assert_eq!((e.trace_id_len, e.span_id_len), (16, 8));
            assert_eq!(e.severity_number, 9);
        }
        assert!(scanned.events[0].untimed);
        assert!(!scanned.events[1].untimed);
        // The first field after observed time is severity_number (4): after the id.
        assert_eq!(scanned.events[0].stamp_at, 18);
    }

    fn request_of(bytes: &[u8]) -> Request<'_> {
        request(bytes).expect("a request the scan reads")
    }

    #[test]
    fn empty_and_absent_fields() {
        let scanned = request_of(&[]);
        assert_eq!(
            (scanned.stream, scanned.resource, scanned.events.len()),
            ("", None, 0)
        );
        // An event with nothing at all: no id (the rules refuse it), stamped at its end.
        let bytes = [0x1a, 0x00];
        let e = request_of(&bytes).events[0];
        assert_eq!((e.event_id.len(), e.stamp_at, e.untimed), (0, 0, true));
    }

    #[test]
    fn negative_severity_truncates_like_prost() {
        let event = LogEvent {
            event_id: vec![1; 16].into(),
            severity_number: -3,
            ..LogEvent::default()
        };
        let bytes = SendLogsRequest {
            events: vec![event],
            ..SendLogsRequest::default()
        }
        .encode_to_vec();
        assert_eq!(request_of(&bytes).events[0].severity_number, -3);
    }

    #[test]
    fn the_unusual_is_left_to_prost() {
        let id = |n: u8| [&[0x0a, 0x10][..], &[n; 16]].concat();
        let event = |fields: &[u8]| {
            let mut out = vec![0x1a, fields.len() as u8];
            out.extend_from_slice(fields);
            out
        };
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("unknown request field", vec![0x20, 0x01]),
            ("stream twice", vec![0x0a, 0x01, b'a', 0x0a, 0x01, b'b']),
            ("resource twice", vec![0x12, 0x00, 0x12, 0x00]),
            ("unknown resource field", vec![0x12, 0x02, 0x10, 0x01]),
            (
                "unknown event field",
                event(&[id(1), vec![0x68, 0x01]].concat()),
            ),
            ("event id twice", event(&[id(1), id(2)].concat())),
            (
                "severity twice",
                event(&[vec![0x20, 0x01, 0x20, 0x02]].concat()),
            ),
            ("wrong wire type", event(&[0x15, 1, 2, 3, 4])),
            ("stream not UTF-8", vec![0x0a, 0x02, 0xff, 0xfe]),
            ("truncated", vec![0x1a, 0x05, 0x0a]),
            ("group", vec![0x1b]),
        ];
        for (what, bytes) in cases {
            assert!(request(&bytes).is_err(), "{what}: {bytes:?}");
        }
    }

    #[test]
    fn repeated_attributes_are_not_twice() {
        let event = LogEvent {
            event_id: vec![1; 16].into(),
            attributes: vec![KeyValue::default(), KeyValue::default()],
            ..LogEvent::default()
        };
        let bytes = SendLogsRequest {
            events: vec![event],
            ..SendLogsRequest::default()
        }
        .encode_to_vec();
        assert!(request(&bytes).is_ok());
    }

    /// The differential check: bytes the scan reads, prost decodes too, to
    /// the same verdict of the rules and the same events in the records.
    /// Random mutations of a valid request (the fuzz target
    /// `send_logs_request` does the same with coverage guidance).
    #[test]
    fn agrees_with_prost_on_mutated_requests() {
        use crate::config::Limits;
        use crate::{chunk, validate};
        use tlake_proto::v1::{LogBatch, Source};

        let mut events: Vec<LogEvent> = (0..6).map(full_event).collect();
        events[1].time_unix_nano = 9;
        events[2].trace_id = Default::default();
        let original = SendLogsRequest {
            stream: "app".into(),
            resource: Some(tlake_proto::v1::Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: text("x"),
                }],
            }),
            events,
        }
        .encode_to_vec();
        // Sizes as sent and as prost re-encodes them may differ: leave size out.
        let limits = Limits {
            max_event_bytes: usize::MAX,
            chunk_bytes: 200,
            ..Limits::default()
        };
        // Each event as prost encodes it, not the value: a NaN double is not
        // equal to itself, its bits are.
        let events_of = |chunks: Vec<chunk::Chunk>| -> Vec<Vec<u8>> {
            chunks
                .iter()
                .flat_map(|c| {
                    LogBatch::decode(c.payload.as_slice())
                        .expect("a LogBatch")
                        .events
                })
                .map(|e| e.encode_to_vec())
                .collect()
        };
        let mut rng = fastrand::Rng::with_seed(7);
        let (mut scanned, mut tried) = (0, 0);
        for _ in 0..30_000 {
            let mut bytes = original.clone();
            for _ in 0..rng.usize(1..4) {
                let i = rng.usize(..bytes.len());
                match rng.u8(..3) {
                    0 => bytes[i] = rng.u8(..),
                    1 => bytes[i] ^= 1 << rng.u8(..8),
                    _ => bytes.truncate(i.max(1)),
                }
            }
            tried += 1;
            let Ok(request) = request(&bytes) else {
                continue;
            };
            scanned += 1;
            let decoded = SendLogsRequest::decode(bytes.as_slice())
                .unwrap_or_else(|e| panic!("the scan read what prost refuses ({e}): {bytes:?}"));
            assert_eq!(request.stream, decoded.stream);
            let groups = vec![(decoded.resource.clone(), decoded.events.clone())];
            let by_scan = validate::scanned(&request, &limits).map(|(n, _)| n);
            let by_prost = validate::request(&groups, &limits).map(|(n, _)| n);
            assert_eq!(
                by_scan.as_ref().map_err(ToString::to_string),
                by_prost.as_ref().map_err(ToString::to_string),
                "{bytes:?}"
            );
            if by_scan.is_err() || request.events.is_empty() {
                continue;
            }
            let forwarded =
                chunk::forwarded("app", &request, Source::SendLogs, 5, limits.chunk_bytes);
            let reencoded = chunk::chunks(
                "app",
                decoded.resource.as_ref(),
                decoded.events,
                Source::SendLogs,
                5,
                limits.chunk_bytes,
            );
            assert_eq!(events_of(forwarded), events_of(reencoded), "{bytes:?}");
        }
        // The mutations must reach both sides of the scan.
        assert!(
            scanned > 1_000 && scanned < tried,
            "{scanned} of {tried} scanned"
        );
    }
}
