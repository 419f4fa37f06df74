//! decode: one Kafka record (a gateway `LogBatch`) → its stream (table), the
//! facts its events share, and per event the key the flush deduplicates and
//! sorts on plus where the event's bytes lie — or the reason the record
//! cannot be mapped (→ dead letters).
//!
//! Events stay encoded until a flush has decided which ones to write and in
//! which order; [`crate::rows`] then turns exactly those into Arrow, once.
//! This pass validates everything the second one relies on, so a record
//! accepted here always materializes. Free of I/O.

use std::borrow::Cow;
use std::collections::BTreeMap;

use prost::Message as _;
use tlake_proto::contract::DEFAULT_STREAM;
use tlake_proto::contract::tags::{log_batch, log_event, resource};
use tlake_proto::v1::{AnyValue, LogBatch, any_value};

use crate::wire::{self, Any, Reader, Wire, WireError};

/// Where a record came from.
#[derive(Debug, Clone, Copy)]
pub struct Origin {
    /// Kafka partition.
    pub partition: i32,
    /// Kafka offset.
    pub offset: i64,
}

/// What every event of one record shares.
#[derive(Debug, Clone)]
pub struct RecordInfo {
    /// Kafka partition.
    pub partition: i32,
    /// Kafka offset.
    pub offset: i64,
    /// When the gateway received the batch (µs).
    pub received_us: i64,
    /// `service.name` of the resource.
    pub service: Option<String>,
    /// Resource attributes, unique keys in key order, values as text.
    pub resource: Vec<(String, String)>,
}

/// One event of a record: its dedup/sort key and its encoded bytes' range.
#[derive(Debug, Clone, Copy)]
pub struct EventKey {
    /// Start of the `LogEvent` message in [`Scanned::bytes`].
    pub start: u32,
    /// Its length.
    pub len: u32,
    /// Event id.
    pub id: [u8; 16],
    /// Event time (µs); unknown falls back to observed, then received time.
    pub time_us: i64,
}

/// A record that maps to rows.
#[derive(Debug)]
pub struct Scanned<'a> {
    /// Stream name = table name.
    pub stream: String,
    /// Facts shared by its events.
    pub info: RecordInfo,
    /// The bytes [`EventKey`] ranges point into: the record itself, or its
    /// canonical re-encoding when the fast reader left it to prost.
    pub bytes: Cow<'a, [u8]>,
    /// Newest event time (µs), `i64::MIN` without events.
    pub max_event_time_us: i64,
}

enum ScanError {
    /// The fast reader cannot tell: let prost decide.
    Wire(WireError),
    /// Decodes, but cannot be mapped to rows: the dead-letter reason.
    Invalid(String),
}

impl From<WireError> for ScanError {
    fn from(e: WireError) -> Self {
        Self::Wire(e)
    }
}

/// Reads one record; `keys` receives its events (cleared first). `Err` is
/// the dead-letter reason.
pub fn scan<'a>(
    payload: &'a [u8],
    origin: Origin,
    keys: &mut Vec<EventKey>,
) -> Result<Scanned<'a>, String> {
    keys.clear();
    match scan_batch(payload, origin, keys, wire::MAX_DEPTH) {
        Ok((stream, info, max)) => Ok(Scanned {
            stream,
            info,
            bytes: Cow::Borrowed(payload),
            max_event_time_us: max,
        }),
        Err(ScanError::Invalid(reason)) => Err(reason),
        Err(ScanError::Wire(_)) => {
            // prost is the authority: it rejects the record, or its
            // canonical encoding (no repeated singular fields, no groups)
            // is read by the fast reader. prost bounds nesting at 100.
            keys.clear();
            let batch = LogBatch::decode(payload).map_err(|e| format!("not a LogBatch: {e}"))?;
            let canonical = batch.encode_to_vec();
            match scan_batch(&canonical, origin, keys, wire::PROST_DEPTH) {
                Ok((stream, info, max)) => Ok(Scanned {
                    stream,
                    info,
                    bytes: Cow::Owned(canonical),
                    max_event_time_us: max,
                }),
                Err(ScanError::Invalid(reason)) => Err(reason),
                Err(ScanError::Wire(e)) => Err(format!("cannot read the record: {}", e.0)),
            }
        }
    }
}

const UNKNOWN_TIME: i64 = i64::MIN;

fn scan_batch(
    bytes: &[u8],
    origin: Origin,
    keys: &mut Vec<EventKey>,
    max_depth: u32,
) -> Result<(String, RecordInfo, i64), ScanError> {
    let mut r = Reader::new(bytes);
    let mut stream = "";
    let mut resource: Option<Vec<(String, String)>> = None;
    let mut received_ns = 0u64;
    while let Some((field, w)) = r.field()? {
        match field {
            log_batch::STREAM => stream = r.expect(w, Wire::Len)?.string()?,
            log_batch::RESOURCE => {
                if resource.is_some() {
                    return Err(WireError("resource set twice").into());
                }
                resource = Some(scan_resource(r.expect(w, Wire::Len)?.bytes()?, max_depth)?);
            }
            log_batch::EVENTS => {
                let event = r.expect(w, Wire::Len)?.bytes()?;
                let start = event.as_ptr() as usize - bytes.as_ptr() as usize;
                let (id, time_us) = scan_event(event, keys.len(), max_depth)?;
                let (Ok(start), Ok(len)) = (u32::try_from(start), u32::try_from(event.len()))
                else {
                    return Err(ScanError::Invalid("record larger than 4 GiB".into()));
                };
                keys.push(EventKey {
                    start,
                    len,
                    id,
                    time_us,
                });
            }
            log_batch::RECEIVED_UNIX_NANO => received_ns = r.expect(w, Wire::I64)?.fixed64()?,
            log_batch::SOURCE => {
                r.expect(w, Wire::Varint)?.varint()?;
            }
            _ => r.skip(w)?,
        }
    }
    let stream = if stream.is_empty() {
        DEFAULT_STREAM
    } else {
        stream
    };
    if !tlake_proto::contract::is_stream_name(stream)
        || stream == tlake_catalog_client::DEAD_LETTER_TABLE
    {
        return Err(ScanError::Invalid(format!(
            "stream {stream:?} is not a valid table name"
        )));
    }
    let received_us = (received_ns / 1000) as i64;
    let mut max = i64::MIN;
    for key in keys.iter_mut() {
        if key.time_us == UNKNOWN_TIME {
            key.time_us = received_us;
        }
        max = max.max(key.time_us);
    }
    let resource = resource.unwrap_or_default();
    let service = resource
        .iter()
        .find(|(k, _)| k == "service.name")
        .map(|(_, v)| v.clone());
    let info = RecordInfo {
        partition: origin.partition,
        offset: origin.offset,
        received_us,
        service,
        resource,
    };
    Ok((stream.to_owned(), info, max))
}

/// `Resource { repeated KeyValue attributes = 1 }` → unique keys (the last
/// of a repeated key wins), in key order, values as text.
fn scan_resource(bytes: &[u8], max_depth: u32) -> Result<Vec<(String, String)>, ScanError> {
    let mut r = Reader::new(bytes);
    let mut attributes: BTreeMap<&str, String> = BTreeMap::new();
    while let Some((field, w)) = r.field()? {
        if field == resource::ATTRIBUTES {
            let (key, value) = wire::key_value(r.expect(w, Wire::Len)?.bytes()?, max_depth)?;
            let text = match value {
                None => String::new(),
                Some(v) => any_text(v).map_err(ScanError::Invalid)?.into_owned(),
            };
            attributes.insert(key, text);
        } else {
            r.skip(w)?;
        }
    }
    Ok(attributes
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect())
}

/// Validates one `LogEvent`; returns its id and time (µs, or unknown).
fn scan_event(bytes: &[u8], index: usize, max_depth: u32) -> Result<([u8; 16], i64), ScanError> {
    let mut r = Reader::new(bytes);
    let mut id: &[u8] = &[];
    let (mut time_ns, mut observed_ns) = (0u64, 0u64);
    let mut body = false;
    while let Some((field, w)) = r.field()? {
        match field {
            log_event::EVENT_ID => id = r.expect(w, Wire::Len)?.bytes()?,
            log_event::TIME_UNIX_NANO => time_ns = r.expect(w, Wire::I64)?.fixed64()?,
            log_event::OBSERVED_TIME_UNIX_NANO => {
                observed_ns = r.expect(w, Wire::I64)?.fixed64()?
            }
            log_event::SEVERITY_NUMBER => {
                r.expect(w, Wire::Varint)?.varint()?;
            }
            log_event::SEVERITY_TEXT | log_event::EVENT_NAME | log_event::SCOPE_NAME => {
                r.expect(w, Wire::Len)?.string()?;
            }
            log_event::BODY => {
                if body {
                    return Err(WireError("body set twice").into());
                }
                body = true;
                wire::any_value(r.expect(w, Wire::Len)?.bytes()?, max_depth)?;
            }
            log_event::ATTRIBUTES => {
                wire::key_value(r.expect(w, Wire::Len)?.bytes()?, max_depth)?;
            }
            log_event::TRACE_ID | log_event::SPAN_ID => {
                r.expect(w, Wire::Len)?.bytes()?;
            }
            log_event::FLAGS => {
                r.expect(w, Wire::I32)?.fixed32()?;
            }
            _ => r.skip(w)?,
        }
    }
    let id: [u8; 16] = id.try_into().map_err(|_| {
        ScanError::Invalid(format!(
            "event {index} has a {}-byte event_id (16 required)",
            id.len()
        ))
    })?;
    let time_us = nanos_to_micros(time_ns)
        .or(nanos_to_micros(observed_ns))
        .unwrap_or(UNKNOWN_TIME);
    Ok((id, time_us))
}

/// Nanoseconds since the epoch → µs; 0 means unknown.
pub fn nanos_to_micros(ns: u64) -> Option<i64> {
    (ns != 0).then_some((ns / 1000) as i64)
}

/// An `AnyValue` as text: a string as itself, anything else as JSON.
pub fn any_text(value: Any<'_>) -> Result<Cow<'_, str>, String> {
    match value {
        Any::Str(s) => Ok(Cow::Borrowed(s)),
        Any::Empty => Ok(Cow::Borrowed("")),
        Any::Other(bytes) => {
            // Validated by the reader, which is stricter than prost.
            let v = AnyValue::decode(bytes).map_err(|e| format!("AnyValue: {e}"))?;
            Ok(Cow::Owned(render(&v)))
        }
    }
}

/// A string value as itself; anything else as JSON (bytes as a hex string).
pub fn render(value: &AnyValue) -> String {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        _ => to_json(value).to_string(),
    }
}

fn to_json(value: &AnyValue) -> serde_json::Value {
    use serde_json::Value as J;
    match &value.value {
        None => J::Null,
        Some(any_value::Value::StringValue(s)) => J::String(s.clone()),
        Some(any_value::Value::BoolValue(b)) => J::Bool(*b),
        Some(any_value::Value::IntValue(i)) => J::from(*i),
        Some(any_value::Value::DoubleValue(d)) => {
            serde_json::Number::from_f64(*d).map_or_else(|| J::String(d.to_string()), J::Number)
        }
        Some(any_value::Value::ArrayValue(a)) => J::Array(a.values.iter().map(to_json).collect()),
        Some(any_value::Value::KvlistValue(kv)) => J::Object(
            kv.values
                .iter()
                .map(|kv| (kv.key.clone(), kv.value.as_ref().map_or(J::Null, to_json)))
                .collect(),
        ),
        Some(any_value::Value::BytesValue(b)) => {
            J::String(b.iter().map(|x| format!("{x:02x}")).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::cast::AsArray;
    use arrow_array::types::{Int32Type, TimestampMicrosecondType};
    use arrow_array::{Array, RecordBatch};
    use tlake_catalog_client::TableKind;
    use tlake_catalog_client::iceberg::arrow::schema_to_arrow_schema;
    use tlake_proto::v1::{ArrayValue, KeyValue, KeyValueList, LogEvent, Resource};

    use super::*;
    use crate::rows::Rows;

    const ORIGIN: Origin = Origin {
        partition: 3,
        offset: 42,
    };

    fn s(v: &str) -> Option<AnyValue> {
        Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        })
    }

    fn kv(k: &str, value: Option<AnyValue>) -> KeyValue {
        KeyValue {
            key: k.into(),
            value,
        }
    }

    fn int(i: i64) -> Option<AnyValue> {
        Some(AnyValue {
            value: Some(any_value::Value::IntValue(i)),
        })
    }

    /// Scans and materializes a record the way a flush does (arrival order).
    fn read(payload: &[u8]) -> Result<(String, RecordBatch), String> {
        let mut keys = Vec::new();
        let scanned = scan(payload, ORIGIN, &mut keys)?;
        let target =
            Arc::new(schema_to_arrow_schema(&TableKind::Logs.schema()).expect("arrow schema"));
        let mut rows = Rows::with_capacity(keys.len(), scanned.bytes.len());
        for k in &keys {
            let bytes = &scanned.bytes[k.start as usize..(k.start + k.len) as usize];
            rows.push(bytes, &scanned.info, k.time_us)
                .expect("validated events materialize");
        }
        Ok((scanned.stream, rows.finish(&target).expect("finish")))
    }

    /// One row as text, from our Arrow output.
    fn row_text(b: &RecordBatch, i: usize) -> Vec<String> {
        let col = |n: &str| b.column_by_name(n).expect(n).clone();
        let text = |n: &str| {
            let c = col(n);
            let a = c.as_string::<i32>();
            if a.is_null(i) {
                "∅".to_owned()
            } else {
                a.value(i).to_owned()
            }
        };
        let map = |n: &str| {
            let c = col(n);
            let m = c.as_map();
            let e = m.value(i);
            let (k, v) = (
                e.column(0).as_string::<i32>(),
                e.column(1).as_string::<i32>(),
            );
            (0..e.len())
                .map(|j| format!("{}={}", k.value(j), v.value(j)))
                .collect::<Vec<_>>()
                .join(",")
        };
        let bin = |n: &str| {
            let c = col(n);
            let a = c.as_binary::<i64>();
            if a.is_null(i) {
                "∅".to_owned()
            } else {
                format!("{:?}", a.value(i))
            }
        };
        vec![
            format!("{:?}", col("event_id").as_fixed_size_binary().value(i)),
            col("event_time")
                .as_primitive::<TimestampMicrosecondType>()
                .value(i)
                .to_string(),
            format!(
                "{:?}",
                col("observed_time")
                    .as_primitive::<TimestampMicrosecondType>()
                    .iter()
                    .nth(i)
                    .flatten()
            ),
            col("severity_number")
                .as_primitive::<Int32Type>()
                .value(i)
                .to_string(),
            text("severity_text"),
            text("body"),
            text("event_name"),
            text("scope_name"),
            text("service"),
            bin("trace_id"),
            bin("span_id"),
            map("attributes"),
            map("resource"),
        ]
    }

    fn opt_text(s: &str) -> String {
        if s.is_empty() { "∅".into() } else { s.into() }
    }

    fn text(v: &Option<AnyValue>) -> String {
        match v {
            None | Some(AnyValue { value: None }) => String::new(),
            Some(v) => render(v),
        }
    }

    fn pairs(kvs: &[KeyValue], sorted_unique: bool) -> String {
        let list: Vec<(String, String)> = if sorted_unique
            || kvs
                .iter()
                .enumerate()
                .any(|(i, a)| kvs[..i].iter().any(|b| b.key == a.key))
        {
            let m: BTreeMap<&str, String> = kvs
                .iter()
                .map(|kv| (kv.key.as_str(), text(&kv.value)))
                .collect();
            m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
        } else {
            kvs.iter()
                .map(|kv| (kv.key.clone(), text(&kv.value)))
                .collect()
        };
        list.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The same row as text, from prost's decoding (the reference).
    fn reference(batch: &LogBatch, e: &LogEvent) -> Vec<String> {
        let resource = batch
            .resource
            .as_ref()
            .map(|r| r.attributes.clone())
            .unwrap_or_default();
        let received = (batch.received_unix_nano / 1000) as i64;
        let observed = nanos_to_micros(e.observed_time_unix_nano);
        let service = resource
            .iter()
            .rev()
            .find(|kv| kv.key == "service.name")
            .map(|kv| text(&kv.value));
        vec![
            format!("{:?}", &e.event_id[..]),
            nanos_to_micros(e.time_unix_nano)
                .or(observed)
                .unwrap_or(received)
                .to_string(),
            format!("{observed:?}"),
            e.severity_number.to_string(),
            opt_text(&e.severity_text),
            match &e.body {
                None | Some(AnyValue { value: None }) => "∅".into(),
                Some(v) => render(v),
            },
            opt_text(&e.event_name),
            opt_text(&e.scope_name),
            service.unwrap_or_else(|| "∅".into()),
            if e.trace_id.is_empty() {
                "∅".into()
            } else {
                format!("{:?}", &e.trace_id[..])
            },
            if e.span_id.is_empty() {
                "∅".into()
            } else {
                format!("{:?}", &e.span_id[..])
            },
            pairs(&e.attributes, false),
            pairs(&resource, true),
        ]
    }

    fn sample() -> LogBatch {
        LogBatch {
            stream: String::new(),
            resource: Some(Resource {
                attributes: vec![kv("service.name", s("checkout")), kv("host", int(7))],
            }),
            events: vec![
                LogEvent {
                    event_id: vec![1; 16].into(),
                    time_unix_nano: 1_700_000_000_123_456_789,
                    severity_number: 9,
                    severity_text: "INFO".into(),
                    body: s("hello"),
                    attributes: vec![kv("a", s("1")), kv("n", int(7)), kv("a", s("2"))],
                    trace_id: vec![9; 16].into(),
                    ..Default::default()
                },
                LogEvent {
                    event_id: vec![2; 16].into(),
                    observed_time_unix_nano: 1_700_000_000_999_000_000,
                    body: int(5),
                    attributes: vec![kv("z", None), kv("y", s("é"))],
                    ..Default::default()
                },
                LogEvent {
                    event_id: vec![3; 16].into(),
                    ..Default::default()
                },
            ],
            received_unix_nano: 1_700_000_001_000_000_000,
            source: 1,
        }
    }

    fn check_against_prost(batch: &LogBatch, payload: &[u8]) {
        let (stream, rows) = read(payload).expect("reads");
        let want = if batch.stream.is_empty() {
            DEFAULT_STREAM
        } else {
            &batch.stream
        };
        assert_eq!(stream, want);
        assert_eq!(rows.num_rows(), batch.events.len());
        for (i, e) in batch.events.iter().enumerate() {
            assert_eq!(row_text(&rows, i), reference(batch, e), "event {i}");
        }
    }

    #[test]
    fn a_batch_becomes_keys_and_rows() {
        let batch = sample();
        let payload = batch.encode_to_vec();
        let mut keys = Vec::new();
        let scanned = scan(&payload, ORIGIN, &mut keys).expect("scans");
        assert!(matches!(scanned.bytes, Cow::Borrowed(_)), "fast path");
        assert_eq!(scanned.info.service.as_deref(), Some("checkout"));
        assert_eq!(
            scanned.info.resource,
            [
                ("host".into(), "7".into()),
                ("service.name".into(), "checkout".into())
            ]
        );
        assert_eq!(keys.len(), 3);
        assert_eq!(keys[0].time_us, 1_700_000_000_123_456);
        assert_eq!(keys[1].time_us, 1_700_000_000_999_000, "observed time");
        assert_eq!(keys[2].time_us, 1_700_000_001_000_000, "received time");
        assert_eq!(scanned.max_event_time_us, 1_700_000_001_000_000);
        check_against_prost(&batch, &payload);
        let (_, rows) = read(&payload).expect("reads");
        // Repeated attribute keys collapse (last wins, keys in order); ints are JSON.
        assert_eq!(row_text(&rows, 0)[11], "a=2,n=7");
        assert_eq!(row_text(&rows, 1)[5], "5");
        assert_eq!(row_text(&rows, 1)[11], "z=,y=é");
        let p = rows.column_by_name("kafka_partition").expect("col");
        assert_eq!(p.as_primitive::<Int32Type>().value(0), 3);
    }

    #[test]
    fn garbage_bad_ids_and_bad_streams_are_dead_letters() {
        assert!(scan(b"\xff\xff\xff garbage", ORIGIN, &mut Vec::new()).is_err());
        let mut batch = sample();
        batch.events[1].event_id = vec![1; 3].into();
        let err = scan(&batch.encode_to_vec(), ORIGIN, &mut Vec::new()).expect_err("bad id");
        assert!(err.contains("event 1 has a 3-byte event_id"), "{err}");
        for stream in ["Bad-Name", "dead_letters"] {
            let batch = LogBatch {
                stream: stream.into(),
                ..Default::default()
            };
            let err = scan(&batch.encode_to_vec(), ORIGIN, &mut Vec::new()).expect_err(stream);
            assert!(err.contains("not a valid table name"), "{err}");
        }
    }

    #[test]
    fn what_the_fast_reader_leaves_to_prost_reads_the_same() {
        // A body sent twice: prost merges the two AnyValue messages (the
        // second string wins); the fast reader hands the record to prost.
        let batch = sample();
        let mut event = batch.events[0].encode_to_vec();
        let body2 = AnyValue {
            value: Some(any_value::Value::StringValue("second".into())),
        }
        .encode_to_vec();
        event.push(0x32); // field 6, LEN
        event.push(body2.len() as u8);
        event.extend_from_slice(&body2);
        let mut payload = Vec::new();
        payload.push(0x1a); // field 3, LEN
        prost::encoding::encode_varint(event.len() as u64, &mut payload);
        payload.extend_from_slice(&event);
        let expected = LogBatch::decode(&payload[..]).expect("prost reads it");
        assert_eq!(expected.events[0].body, s("second"));
        let mut keys = Vec::new();
        let scanned = scan(&payload, ORIGIN, &mut keys).expect("scans");
        assert!(matches!(scanned.bytes, Cow::Owned(_)), "prost path");
        check_against_prost(&expected, &payload);
        // Deep nesting past the fast reader's budget, within prost's.
        let mut v = s("leaf").expect("v");
        for _ in 0..40 {
            v = AnyValue {
                value: Some(any_value::Value::ArrayValue(ArrayValue { values: vec![v] })),
            };
        }
        let mut deep = sample();
        deep.events[0].body = Some(v);
        check_against_prost(&deep, &deep.encode_to_vec());
    }

    /// A small deterministic generator of awkward batches.
    fn random_batch(rng: &mut fastrand::Rng) -> LogBatch {
        fn value(rng: &mut fastrand::Rng, depth: u32) -> Option<AnyValue> {
            let text = |rng: &mut fastrand::Rng| {
                ["", "a", "é√", "svc", "with \"quotes\""][rng.usize(..5)].to_owned()
            };
            let v = match rng.u8(..if depth > 2 { 5 } else { 8 }) {
                0 => None,
                1 => Some(any_value::Value::StringValue(text(rng))),
                2 => Some(any_value::Value::BoolValue(rng.bool())),
                3 => Some(any_value::Value::IntValue(rng.i64(..))),
                4 => Some(any_value::Value::DoubleValue(rng.f64() * 1e6)),
                5 => Some(any_value::Value::BytesValue(vec![rng.u8(..); 3].into())),
                6 => Some(any_value::Value::ArrayValue(ArrayValue {
                    values: (0..rng.usize(..3))
                        .filter_map(|_| value(rng, depth + 1))
                        .collect(),
                })),
                _ => Some(any_value::Value::KvlistValue(KeyValueList {
                    values: (0..rng.usize(..3))
                        .map(|_| kv(["k", "l"][rng.usize(..2)], value(rng, depth + 1)))
                        .collect(),
                })),
            };
            if rng.u8(..10) == 0 {
                None
            } else {
                Some(AnyValue { value: v })
            }
        }
        let keys = ["a", "b", "service.name", "c"];
        let attrs = |rng: &mut fastrand::Rng| {
            (0..rng.usize(..5))
                .map(|_| kv(keys[rng.usize(..4)], value(rng, 0)))
                .collect::<Vec<_>>()
        };
        LogBatch {
            stream: ["", "logs", "app_1"][rng.usize(..3)].into(),
            resource: rng.bool().then(|| Resource {
                attributes: attrs(rng),
            }),
            events: (0..rng.usize(..6))
                .map(|_| LogEvent {
                    event_id: vec![rng.u8(..); 16].into(),
                    time_unix_nano: if rng.bool() { rng.u64(..1 << 62) } else { 0 },
                    observed_time_unix_nano: if rng.bool() { rng.u64(..1 << 62) } else { 0 },
                    severity_number: rng.i32(..),
                    severity_text: ["", "INFO", "WARN"][rng.usize(..3)].into(),
                    body: value(rng, 0),
                    attributes: attrs(rng),
                    trace_id: vec![7; rng.usize(..17)].into(),
                    span_id: vec![8; rng.usize(..9)].into(),
                    flags: rng.u32(..),
                    event_name: ["", "evt"][rng.usize(..2)].into(),
                    scope_name: ["", "scope"][rng.usize(..2)].into(),
                })
                .collect(),
            received_unix_nano: rng.u64(..1 << 62),
            source: rng.i32(..3),
        }
    }

    #[test]
    fn random_batches_read_as_prost_reads_them() {
        let mut rng = fastrand::Rng::with_seed(0x7e1e);
        for _ in 0..2000 {
            let batch = random_batch(&mut rng);
            check_against_prost(&batch, &batch.encode_to_vec());
        }
    }

    #[test]
    fn mutated_records_never_panic_and_agree_with_prost() {
        let mut rng = fastrand::Rng::with_seed(0xbad);
        let (mut accepted, mut rejected) = (0, 0);
        for _ in 0..5000 {
            let mut payload = random_batch(&mut rng).encode_to_vec();
            if payload.is_empty() {
                continue;
            }
            match rng.u8(..3) {
                0 => payload.truncate(rng.usize(..payload.len())),
                1 => {
                    let i = rng.usize(..payload.len());
                    payload[i] = rng.u8(..);
                }
                _ => {
                    let i = rng.usize(..payload.len());
                    payload.insert(i, rng.u8(..));
                }
            }
            let ours = scan(&payload, ORIGIN, &mut Vec::new());
            match LogBatch::decode(&payload[..]) {
                Err(_) => {
                    assert!(ours.is_err(), "prost rejects what we accepted");
                    rejected += 1;
                }
                Ok(batch) => {
                    let semantic_ok = batch.events.iter().all(|e| e.event_id.len() == 16) && {
                        let s = if batch.stream.is_empty() {
                            DEFAULT_STREAM
                        } else {
                            &batch.stream
                        };
                        tlake_proto::contract::is_stream_name(s)
                            && s != tlake_catalog_client::DEAD_LETTER_TABLE
                    };
                    assert_eq!(ours.is_ok(), semantic_ok, "{ours:?}");
                    if semantic_ok {
                        check_against_prost(&batch, &payload);
                        accepted += 1;
                    }
                }
            }
        }
        assert!(
            accepted > 100 && rejected > 100,
            "{accepted} accepted, {rejected} rejected"
        );
    }
}
