//! decode: one Kafka record (a gateway `LogBatch`) → its stream (table), the
//! facts its events share, and per event the key the flush deduplicates and
//! sorts on plus where the event's bytes lie — or the reason the record
//! cannot be mapped (→ dead letters).
//!
//! Events stay encoded until a flush has decided which ones to write and in
//! which order; the compactor's `rows` then turns exactly those into Arrow,
//! once.
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
        || stream == tlake_proto::contract::DEAD_LETTER_TABLE
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
                r.expect(w, Wire::Len)?.check_string()?;
            }
            log_event::BODY => {
                if body {
                    return Err(WireError("body set twice").into());
                }
                body = true;
                wire::check_any_value(r.expect(w, Wire::Len)?.bytes()?, max_depth)?;
            }
            log_event::ATTRIBUTES => {
                wire::check_key_value(r.expect(w, Wire::Len)?.bytes()?, max_depth)?;
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
