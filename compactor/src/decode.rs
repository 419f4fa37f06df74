//! decode: one Kafka record (a gateway `LogBatch`) → Arrow rows of the
//! buffer layout, or the reason it cannot be mapped (→ dead letters).
//!
//! Kept free of I/O so it can be tested and fuzzed on bytes alone.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use arrow_array::builder::{
    BinaryBuilder, FixedSizeBinaryBuilder, Int32Builder, Int64Builder, MapBuilder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use prost::Message as _;
use tlake_proto::v1::{AnyValue, KeyValue, LogBatch, any_value};

/// Stream used when a batch leaves `stream` empty (as the gateway does).
pub const DEFAULT_STREAM: &str = "default";

/// Where a record came from.
#[derive(Debug, Clone, Copy)]
pub struct Origin {
    /// Kafka partition.
    pub partition: i32,
    /// Kafka offset.
    pub offset: i64,
}

/// A decoded record: the stream (table) and its rows.
#[derive(Debug)]
pub struct Decoded {
    /// Stream name = table name.
    pub stream: String,
    /// Rows in [`buffer_schema`] layout (without `seq`).
    pub rows: RecordBatch,
    /// Newest event time among the rows (µs).
    pub max_event_time_us: i64,
}

fn map_type() -> DataType {
    DataType::Map(
        Arc::new(Field::new(
            "entries",
            DataType::Struct(
                vec![
                    Field::new("keys", DataType::Utf8, false),
                    Field::new("values", DataType::Utf8, true),
                ]
                .into(),
            ),
            false,
        )),
        false,
    )
}

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let ts = || DataType::Timestamp(TimeUnit::Microsecond, None);
    Arc::new(Schema::new(vec![
        Field::new("event_id", DataType::FixedSizeBinary(16), false),
        Field::new("event_time", ts(), false),
        Field::new("observed_time", ts(), true),
        Field::new("severity_number", DataType::Int32, true),
        Field::new("severity_text", DataType::Utf8, true),
        Field::new("body", DataType::Utf8, true),
        Field::new("event_name", DataType::Utf8, true),
        Field::new("scope_name", DataType::Utf8, true),
        Field::new("service", DataType::Utf8, true),
        Field::new("trace_id", DataType::Binary, true),
        Field::new("span_id", DataType::Binary, true),
        Field::new("flags", DataType::Int64, true),
        Field::new("attributes", map_type(), true),
        Field::new("resource", map_type(), true),
        Field::new("received_at", ts(), true),
        Field::new("kafka_partition", DataType::Int32, true),
        Field::new("kafka_offset", DataType::Int64, true),
    ]))
});

/// The Arrow layout rows are buffered in (names match the table's columns).
pub fn buffer_schema() -> SchemaRef {
    SCHEMA.clone()
}

/// Decodes one record. `Err` is the dead-letter reason.
pub fn decode(payload: &[u8], origin: Origin) -> Result<Decoded, String> {
    let batch = LogBatch::decode(payload).map_err(|e| format!("not a LogBatch: {e}"))?;
    let stream = if batch.stream.is_empty() {
        DEFAULT_STREAM.to_owned()
    } else {
        batch.stream.clone()
    };
    if !crate::config::valid_identifier(&stream) || stream == tlake_catalog::DEAD_LETTER_TABLE {
        return Err(format!("stream {stream:?} is not a valid table name"));
    }
    let n = batch.events.len();
    let received_us = (batch.received_unix_nano / 1000) as i64;
    let resource: Vec<(String, String)> = batch
        .resource
        .as_ref()
        .map(|r| dedup_attributes(&r.attributes))
        .unwrap_or_default();
    let service = resource
        .iter()
        .find(|(k, _)| k == "service.name")
        .map(|(_, v)| v.clone());

    let mut event_id = FixedSizeBinaryBuilder::with_capacity(n, 16);
    let mut event_time = TimestampMicrosecondBuilder::with_capacity(n);
    let mut observed = TimestampMicrosecondBuilder::with_capacity(n);
    let mut severity_number = Int32Builder::with_capacity(n);
    let mut severity_text = StringBuilder::new();
    let mut body = StringBuilder::new();
    let mut event_name = StringBuilder::new();
    let mut scope_name = StringBuilder::new();
    let mut service_col = StringBuilder::new();
    let mut trace_id = BinaryBuilder::new();
    let mut span_id = BinaryBuilder::new();
    let mut flags = Int64Builder::with_capacity(n);
    let mut attributes = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
    let mut resource_col = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
    let mut received = TimestampMicrosecondBuilder::with_capacity(n);
    let mut kafka_partition = Int32Builder::with_capacity(n);
    let mut kafka_offset = Int64Builder::with_capacity(n);
    let mut max_event_time_us = i64::MIN;

    for (i, e) in batch.events.iter().enumerate() {
        if e.event_id.len() != 16 {
            return Err(format!(
                "event {i} has a {}-byte event_id (16 required)",
                e.event_id.len()
            ));
        }
        event_id
            .append_value(&e.event_id)
            .map_err(|e| e.to_string())?;
        // Unknown event time (0) falls back to observed, then received time,
        // so every row has a partition.
        let observed_us = nanos_to_micros(e.observed_time_unix_nano);
        let time_us = nanos_to_micros(e.time_unix_nano)
            .or(observed_us)
            .unwrap_or(received_us);
        max_event_time_us = max_event_time_us.max(time_us);
        event_time.append_value(time_us);
        observed.append_option(observed_us);
        severity_number.append_value(e.severity_number);
        severity_text.append_option(non_empty(&e.severity_text));
        match e.body.as_ref().map(|v| &v.value) {
            Some(Some(any_value::Value::StringValue(text))) => body.append_value(text),
            Some(_) => body.append_value(render(e.body.as_ref().expect("some"))),
            None => body.append_null(),
        }
        event_name.append_option(non_empty(&e.event_name));
        scope_name.append_option(non_empty(&e.scope_name));
        service_col.append_option(service.as_deref());
        trace_id.append_option((!e.trace_id.is_empty()).then_some(&e.trace_id[..]));
        span_id.append_option((!e.span_id.is_empty()).then_some(&e.span_id[..]));
        flags.append_value(i64::from(e.flags));
        if has_duplicate_keys(&e.attributes) {
            for (k, v) in dedup_attributes(&e.attributes) {
                attributes.keys().append_value(k);
                attributes.values().append_value(v);
            }
        } else {
            // The common case: no repeated keys, string values appended as they are.
            for kv in &e.attributes {
                attributes.keys().append_value(&kv.key);
                match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(any_value::Value::StringValue(text)) => {
                        attributes.values().append_value(text)
                    }
                    Some(_) => attributes
                        .values()
                        .append_value(render(kv.value.as_ref().expect("some"))),
                    None => attributes.values().append_value(""),
                }
            }
        }
        attributes.append(true).map_err(|e| e.to_string())?;
        for (k, v) in &resource {
            resource_col.keys().append_value(k);
            resource_col.values().append_value(v);
        }
        resource_col.append(true).map_err(|e| e.to_string())?;
        received.append_value(received_us);
        kafka_partition.append_value(origin.partition);
        kafka_offset.append_value(origin.offset);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(event_id.finish()),
        Arc::new(event_time.finish()),
        Arc::new(observed.finish()),
        Arc::new(severity_number.finish()),
        Arc::new(severity_text.finish()),
        Arc::new(body.finish()),
        Arc::new(event_name.finish()),
        Arc::new(scope_name.finish()),
        Arc::new(service_col.finish()),
        Arc::new(trace_id.finish()),
        Arc::new(span_id.finish()),
        Arc::new(flags.finish()),
        Arc::new(attributes.finish()),
        Arc::new(resource_col.finish()),
        Arc::new(received.finish()),
        Arc::new(kafka_partition.finish()),
        Arc::new(kafka_offset.finish()),
    ];
    let rows = RecordBatch::try_new(buffer_schema(), columns)
        .map_err(|e| format!("cannot map events to rows: {e}"))?;
    Ok(Decoded {
        stream,
        rows,
        max_event_time_us,
    })
}

fn nanos_to_micros(ns: u64) -> Option<i64> {
    (ns != 0).then_some((ns / 1000) as i64)
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

fn has_duplicate_keys(kvs: &[KeyValue]) -> bool {
    kvs.iter()
        .enumerate()
        .any(|(i, a)| kvs[..i].iter().any(|b| b.key == a.key))
}

/// Attributes as unique string pairs (the last value of a repeated key
/// wins); non-string values are JSON-encoded.
fn dedup_attributes(kvs: &[KeyValue]) -> Vec<(String, String)> {
    let map: BTreeMap<&str, String> = kvs
        .iter()
        .map(|kv| {
            (
                kv.key.as_str(),
                kv.value.as_ref().map(render).unwrap_or_default(),
            )
        })
        .collect();
    map.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
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
    use arrow_array::cast::AsArray;
    use arrow_array::types::TimestampMicrosecondType;
    use tlake_proto::v1::{ArrayValue, KeyValueList, LogEvent, Resource};

    use super::*;

    fn s(v: &str) -> Option<AnyValue> {
        Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        })
    }

    fn event(id: u8) -> LogEvent {
        LogEvent {
            event_id: vec![id; 16].into(),
            time_unix_nano: 1_700_000_000_123_456_789,
            severity_number: 9,
            severity_text: "INFO".into(),
            body: s("hello"),
            attributes: vec![
                KeyValue {
                    key: "a".into(),
                    value: s("1"),
                },
                KeyValue {
                    key: "n".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::IntValue(7)),
                    }),
                },
                KeyValue {
                    key: "a".into(),
                    value: s("2"),
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn a_batch_becomes_rows() {
        let batch = LogBatch {
            stream: String::new(),
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: s("checkout"),
                }],
            }),
            events: vec![event(1), event(2)],
            received_unix_nano: 1_700_000_001_000_000_000,
            source: 1,
        };
        let d = decode(
            &batch.encode_to_vec(),
            Origin {
                partition: 3,
                offset: 42,
            },
        )
        .expect("decodes");
        assert_eq!(d.stream, "default");
        assert_eq!(d.rows.num_rows(), 2);
        let t = d.rows.column(1).as_primitive::<TimestampMicrosecondType>();
        assert_eq!(t.value(0), 1_700_000_000_123_456);
        assert_eq!(d.max_event_time_us, 1_700_000_000_123_456);
        // Repeated attribute keys collapse (last wins); ints are JSON.
        let attrs = d.rows.column(12).as_map();
        let entries = attrs.value(0);
        let keys = entries.column(0).as_string::<i32>();
        let values = entries.column(1).as_string::<i32>();
        assert_eq!((keys.value(0), values.value(0)), ("a", "2"));
        assert_eq!((keys.value(1), values.value(1)), ("n", "7"));
        assert_eq!(d.rows.column(8).as_string::<i32>().value(0), "checkout");
    }

    #[test]
    fn garbage_and_bad_ids_are_dead_letters() {
        let origin = Origin {
            partition: 0,
            offset: 0,
        };
        assert!(decode(b"\xff\xff\xff garbage", origin).is_err());
        let mut bad = event(1);
        bad.event_id = vec![1; 3].into();
        let batch = LogBatch {
            events: vec![bad],
            ..Default::default()
        };
        let err = decode(&batch.encode_to_vec(), origin).expect_err("bad id");
        assert!(err.contains("event_id"), "{err}");
        let batch = LogBatch {
            stream: "Bad-Name".into(),
            ..Default::default()
        };
        assert!(decode(&batch.encode_to_vec(), origin).is_err());
    }

    #[test]
    fn any_values_render_as_text_or_json() {
        assert_eq!(render(&s("plain").expect("v")), "plain");
        let v = AnyValue {
            value: Some(any_value::Value::KvlistValue(KeyValueList {
                values: vec![KeyValue {
                    key: "k".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::ArrayValue(ArrayValue {
                            values: vec![
                                AnyValue {
                                    value: Some(any_value::Value::BoolValue(true)),
                                },
                                AnyValue {
                                    value: Some(any_value::Value::BytesValue(vec![1, 255].into())),
                                },
                            ],
                        })),
                    }),
                }],
            })),
        };
        assert_eq!(render(&v), r#"{"k":[true,"01ff"]}"#);
    }
}
