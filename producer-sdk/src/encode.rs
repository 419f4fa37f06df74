//! Events to the wire: the one place the SDK's own types become
//! `telemetry.v1` protobuf. Pure code, no I/O, run on the background task so
//! the caller's thread never pays for it.
//!
//! Events are written straight from [`Event`] into one request buffer
//! instead of being converted to the generated `LogEvent` first: that
//! conversion costs several small allocations per event (keys, values,
//! texts), which dominated the background task's time. The unit tests hold
//! the output byte-for-byte equal to prost's encoding of the generated type.

use bytes::{BufMut, Bytes};
use prost::Message as _;
use prost::encoding::{encode_varint, encoded_len_varint};
use tlake_proto::v1::{AnyValue, KeyValue, Resource, SendLogsRequest, any_value};

use crate::event::{Event, Value};

/// A batch encoded as one SendLogs request: the head (stream, resource)
/// followed by each event as field 3. Any contiguous run of its events can
/// be turned into a request of its own, for splitting after OUT_OF_RANGE.
#[derive(Debug)]
pub(crate) struct EncodedBatch {
    buf: Bytes,
    head_len: usize,
    /// End offset in `buf` of each event's field.
    ends: Vec<usize>,
}

/// An event that is too large to send.
#[derive(Debug)]
pub(crate) struct Oversized {
    pub(crate) id: uuid::Uuid,
    pub(crate) size: usize,
}

impl EncodedBatch {
    /// Encodes `events`, leaving out (and returning) those whose encoded
    /// size is above `max_event_bytes`.
    pub(crate) fn new(
        stream: &str,
        resource: &Resource,
        events: Vec<Event>,
        max_event_bytes: usize,
    ) -> (Self, Vec<Oversized>) {
        let head = SendLogsRequest {
            stream: stream.to_owned(),
            resource: Some(resource.clone()),
            events: Vec::new(),
        };
        let estimate: usize = events.iter().map(|e| e.approx_size() + 8).sum();
        let mut buf = Vec::with_capacity(head.encoded_len() + estimate);
        head.encode_raw(&mut buf);
        let head_len = buf.len();
        let mut ends = Vec::with_capacity(events.len());
        let mut oversized = Vec::new();
        for event in &events {
            let len = event_len(event);
            if len > max_event_bytes {
                oversized.push(Oversized {
                    id: event.id(),
                    size: len,
                });
                continue;
            }
            buf.put_u8(field_key(3, LEN));
            encode_varint(len as u64, &mut buf);
            encode_event(event, &mut buf);
            ends.push(buf.len());
        }
        let batch = Self {
            buf: Bytes::from(buf),
            head_len,
            ends,
        };
        (batch, oversized)
    }

    /// Number of events.
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    fn start(&self, index: usize) -> usize {
        if index == 0 {
            self.head_len
        } else {
            self.ends[index - 1]
        }
    }

    /// Encoded size of the request holding events `from..to`.
    pub(crate) fn request_len(&self, from: usize, to: usize) -> usize {
        self.head_len + self.start(to) - self.start(from)
    }

    /// The request holding events `from..to`.
    pub(crate) fn request(&self, from: usize, to: usize) -> Bytes {
        if from == 0 && to == self.len() {
            return self.buf.clone();
        }
        let mut out = Vec::with_capacity(self.request_len(from, to));
        out.extend_from_slice(&self.buf[..self.head_len]);
        out.extend_from_slice(&self.buf[self.start(from)..self.start(to)]);
        Bytes::from(out)
    }
}

/// Protobuf wire types.
const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;
const I32: u8 = 5;

fn field_key(field: u8, wire_type: u8) -> u8 {
    // Every field number used here is below 16: the key is one byte.
    (field << 3) | wire_type
}

fn len_field_len(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

fn put_len_field(buf: &mut Vec<u8>, field: u8, bytes: &[u8]) {
    buf.put_u8(field_key(field, LEN));
    encode_varint(bytes.len() as u64, buf);
    buf.put_slice(bytes);
}

/// Encoded length of an `AnyValue` message's contents.
fn any_value_len(value: &Value) -> usize {
    match value {
        Value::Str(s) => len_field_len(s.len()),
        Value::Bytes(b) => len_field_len(b.len()),
        Value::Bool(_) => 2,
        // int64 is a varint of the two's complement.
        Value::Int(i) => 1 + encoded_len_varint(*i as u64),
        Value::Double(_) => 9,
    }
}

fn encode_any_value(value: &Value, buf: &mut Vec<u8>) {
    match value {
        Value::Str(s) => put_len_field(buf, 1, s.as_bytes()),
        Value::Bool(b) => {
            buf.put_u8(field_key(2, VARINT));
            buf.put_u8(u8::from(*b));
        }
        Value::Int(i) => {
            buf.put_u8(field_key(3, VARINT));
            encode_varint(*i as u64, buf);
        }
        Value::Double(d) => {
            buf.put_u8(field_key(4, I64));
            buf.put_f64_le(*d);
        }
        Value::Bytes(b) => put_len_field(buf, 7, b),
    }
}

fn key_value_len(key: &str, value: &Value) -> usize {
    len_field_len(key.len()) + len_field_len(any_value_len(value))
}

/// Encoded length of a `LogEvent` message's contents. Fields at their
/// default value are left out, as proto3 (and prost) do.
fn event_len(e: &Event) -> usize {
    let text = e.severity.text();
    let mut len = len_field_len(16) // event_id
        + len_field_len(text.len())
        + 1 + encoded_len_varint(e.severity.number() as u64)
        + len_field_len(any_value_len(&e.body));
    if e.time_unix_nano != 0 {
        len += 9;
    }
    if e.observed_unix_nano != 0 {
        len += 9;
    }
    for (key, value) in &e.attributes {
        len += len_field_len(key_value_len(key, value));
    }
    if let Some(t) = &e.trace {
        len += len_field_len(16) + len_field_len(8);
        if t.flags != 0 {
            len += 5;
        }
    }
    if !e.name.is_empty() {
        len += len_field_len(e.name.len());
    }
    if !e.scope.is_empty() {
        len += len_field_len(e.scope.len());
    }
    len
}

fn encode_event(e: &Event, buf: &mut Vec<u8>) {
    put_len_field(buf, 1, &e.id);
    if e.time_unix_nano != 0 {
        buf.put_u8(field_key(2, I64));
        buf.put_u64_le(e.time_unix_nano);
    }
    if e.observed_unix_nano != 0 {
        buf.put_u8(field_key(3, I64));
        buf.put_u64_le(e.observed_unix_nano);
    }
    buf.put_u8(field_key(4, VARINT));
    encode_varint(e.severity.number() as u64, buf);
    put_len_field(buf, 5, e.severity.text().as_bytes());
    buf.put_u8(field_key(6, LEN));
    encode_varint(any_value_len(&e.body) as u64, buf);
    encode_any_value(&e.body, buf);
    for (key, value) in &e.attributes {
        buf.put_u8(field_key(7, LEN));
        encode_varint(key_value_len(key, value) as u64, buf);
        put_len_field(buf, 1, key.as_bytes());
        buf.put_u8(field_key(2, LEN));
        encode_varint(any_value_len(value) as u64, buf);
        encode_any_value(value, buf);
    }
    if let Some(t) = &e.trace {
        put_len_field(buf, 8, &t.trace_id);
        put_len_field(buf, 9, &t.span_id);
        if t.flags != 0 {
            buf.put_u8(field_key(10, I32));
            buf.put_u32_le(t.flags);
        }
    }
    if !e.name.is_empty() {
        put_len_field(buf, 11, e.name.as_bytes());
    }
    if !e.scope.is_empty() {
        put_len_field(buf, 12, e.scope.as_bytes());
    }
}

/// Converts a value to its generated wire type (used for the resource).
pub(crate) fn any_value(value: Value) -> AnyValue {
    let value = match value {
        Value::Str(s) => any_value::Value::StringValue(s.into_owned()),
        Value::Bool(b) => any_value::Value::BoolValue(b),
        Value::Int(i) => any_value::Value::IntValue(i),
        Value::Double(d) => any_value::Value::DoubleValue(d),
        Value::Bytes(b) => any_value::Value::BytesValue(b.into()),
    };
    AnyValue { value: Some(value) }
}

/// A key/value attribute as its generated wire type.
pub(crate) fn key_value(key: String, value: Value) -> KeyValue {
    KeyValue {
        key,
        value: Some(any_value(value)),
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use tlake_proto::v1::LogEvent;

    use super::*;
    use crate::event::Severity;

    /// The reference: the event as the generated type, encoded by prost.
    fn reference(event: &Event) -> LogEvent {
        let (trace_id, span_id, flags) = match event.trace {
            Some(t) => (
                Bytes::copy_from_slice(&t.trace_id),
                Bytes::copy_from_slice(&t.span_id),
                t.flags,
            ),
            None => (Bytes::new(), Bytes::new(), 0),
        };
        LogEvent {
            event_id: Bytes::copy_from_slice(&event.id),
            time_unix_nano: event.time_unix_nano,
            observed_time_unix_nano: event.observed_unix_nano,
            severity_number: event.severity.number(),
            severity_text: event.severity.text().to_owned(),
            body: Some(any_value(event.body.clone())),
            attributes: event
                .attributes
                .iter()
                .map(|(k, v)| key_value(k.to_string(), v.clone()))
                .collect(),
            trace_id,
            span_id,
            flags,
            event_name: event.name.to_string(),
            scope_name: event.scope.to_string(),
        }
    }

    fn resource() -> Resource {
        Resource {
            attributes: vec![key_value("service.name".into(), "svc".into())],
        }
    }

    fn varied_events() -> Vec<Event> {
        let t = std::time::UNIX_EPOCH;
        vec![
            Event::new(Severity::Info, "plain"),
            Event::new(Severity::Warn, "disk almost full")
                .attr("disk", "/dev/sda1")
                .attr("used.ratio", 0.93)
                .attr("retries", 3i64)
                .attr("negative", -5i64)
                .attr("min", i64::MIN)
                .attr("ok", false)
                .attr("yes", true)
                .attr("raw", vec![1u8, 2, 0, 255])
                .attr("empty", "")
                .trace([7; 16], [8; 8], 1)
                .name("disk.full")
                .scope("storage"),
            Event::new(Severity::Fatal, 42i64).trace([1; 16], [2; 8], 0),
            Event::new(Severity::Trace, "").at(t),
            Event::new(Severity::Debug, "x".repeat(300)).attr("k".repeat(200), "v".repeat(20_000)),
        ]
    }

    #[test]
    fn events_encode_exactly_like_prost() {
        for event in varied_events() {
            let expected = reference(&event).encode_to_vec();
            assert_eq!(event_len(&event), expected.len(), "{event:?}");
            let mut buf = Vec::new();
            encode_event(&event, &mut buf);
            assert_eq!(buf, expected, "{event:?}");
        }
    }

    #[test]
    fn a_batch_is_one_request_and_splits_into_valid_requests() {
        let events = varied_events();
        let wire: Vec<_> = events.iter().map(reference).collect();
        for stream in ["", "audit"] {
            let (batch, oversized) =
                EncodedBatch::new(stream, &resource(), events.clone(), 1 << 20);
            assert!(oversized.is_empty());
            assert_eq!(batch.len(), events.len());
            let expected = SendLogsRequest {
                stream: stream.into(),
                resource: Some(resource()),
                events: wire.clone(),
            };
            let whole = batch.request(0, batch.len());
            assert_eq!(whole.as_ref(), expected.encode_to_vec().as_slice());
            assert_eq!(batch.request_len(0, batch.len()), whole.len());
            let part = batch.request(1, 3);
            assert_eq!(batch.request_len(1, 3), part.len());
            let decoded = SendLogsRequest::decode(part).expect("valid");
            assert_eq!(decoded.stream, stream);
            assert_eq!(decoded.events, wire[1..3]);
        }
    }

    #[test]
    fn oversized_events_are_left_out() {
        let small = Event::new(Severity::Info, "small");
        let big = Event::new(Severity::Info, "b".repeat(5000));
        let big_id = big.id();
        let (batch, oversized) =
            EncodedBatch::new("", &resource(), vec![small.clone(), big, small], 1024);
        assert_eq!(batch.len(), 2);
        assert_eq!(oversized.len(), 1);
        assert_eq!(oversized[0].id, big_id);
        assert!(oversized[0].size > 5000);
        let decoded = SendLogsRequest::decode(batch.request(0, 2)).expect("valid");
        assert_eq!(decoded.events.len(), 2);
    }
}
