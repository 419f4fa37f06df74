//! rows: the encoded events a flush chose, in output order → Arrow columns
//! in the table's own layout (its Arrow schema's names, types and field
//! ids), built once with no per-value allocation on the common path.
//!
//! Every byte reaching here was validated by [`crate::decode::scan`], so an
//! error is a bug, reported and never a panic.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use arrow_array::builder::{
    FixedSizeBinaryBuilder, LargeBinaryBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMicrosecondType;
use arrow_array::{
    Array, ArrayRef, Int32Array, Int64Array, MapArray, RecordBatch, StringArray, StructArray,
    TimestampMicrosecondArray, new_null_array,
};
use arrow_buffer::{Buffer, NullBufferBuilder, OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, Field, FieldRef, Fields, SchemaRef, TimeUnit};

use tlake_proto::contract::columns::logs::{
    ALL, ATTRIBUTES, BODY, EVENT_ID, EVENT_NAME, EVENT_TIME, FLAGS, KAFKA_OFFSET, KAFKA_PARTITION,
    OBSERVED_TIME, RECEIVED_AT, RESOURCE, SCOPE_NAME, SERVICE, SEVERITY_NUMBER, SEVERITY_TEXT,
    SPAN_ID, TRACE_ID,
};
use tlake_proto::contract::tags;

use crate::decode::{RecordInfo, any_text, nanos_to_micros};
use crate::promoted::Promoted;
use crate::wire::{self, Any, Reader, Wire};

/// A string column under construction: values appended as bytes, checked
/// as UTF-8 once for the whole column when it is finished (the events were
/// validated when they arrived; this keeps Arrow's promise without a
/// check per value).
#[derive(Debug)]
struct TextColumn {
    offsets: Vec<i32>,
    values: Vec<u8>,
    nulls: NullBufferBuilder,
}

impl TextColumn {
    fn with_capacity(rows: usize, bytes: usize) -> Self {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        Self {
            offsets,
            values: Vec::with_capacity(bytes),
            nulls: NullBufferBuilder::new(rows),
        }
    }

    fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    #[inline]
    fn push(&mut self, value: &[u8]) -> Result<(), String> {
        self.values.extend_from_slice(value);
        let end = i32::try_from(self.values.len()).map_err(|_| "string column over 2 GiB")?;
        self.offsets.push(end);
        self.nulls.append_non_null();
        Ok(())
    }

    #[inline]
    fn push_option(&mut self, value: Option<&[u8]>) -> Result<(), String> {
        match value {
            Some(v) => self.push(v),
            None => {
                self.offsets
                    .push(*self.offsets.last().expect("starts with 0"));
                self.nulls.append_null();
                Ok(())
            }
        }
    }

    fn finish(mut self) -> Result<StringArray, String> {
        // Offsets start at 0 and never decrease: a valid offset buffer.
        let offsets = OffsetBuffer::new(ScalarBuffer::from(self.offsets));
        StringArray::try_new(offsets, Buffer::from_vec(self.values), self.nulls.finish())
            .map_err(|e| format!("string column: {e}"))
    }
}

/// A `map<string,string>` column under construction.
#[derive(Debug)]
struct MapColumn {
    keys: TextColumn,
    values: TextColumn,
    offsets: Vec<i32>,
}

impl MapColumn {
    fn with_capacity(rows: usize, entries: usize, bytes: usize) -> Self {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        Self {
            keys: TextColumn::with_capacity(entries, bytes / 2),
            values: TextColumn::with_capacity(entries, bytes / 2),
            offsets,
        }
    }

    #[inline]
    fn push(&mut self, key: &[u8], value: &[u8]) -> Result<(), String> {
        self.keys.push(key)?;
        self.values.push(value)
    }

    fn end_row(&mut self) -> Result<(), String> {
        let len = i32::try_from(self.keys.len()).map_err(|_| "map column over 2^31 entries")?;
        self.offsets.push(len);
        Ok(())
    }

    fn finish(self) -> Result<ArrayRef, String> {
        let fields = Fields::from(vec![
            Field::new("key", DataType::Utf8, false),
            Field::new("value", DataType::Utf8, true),
        ]);
        let entries = StructArray::try_new(
            fields.clone(),
            vec![
                Arc::new(self.keys.finish()?),
                Arc::new(self.values.finish()?),
            ],
            None,
        )
        .map_err(|e| e.to_string())?;
        let field = Arc::new(Field::new("key_value", DataType::Struct(fields), false));
        let map = MapArray::try_new(
            field,
            OffsetBuffer::new(self.offsets.into()),
            entries,
            None,
            false,
        )
        .map_err(|e| e.to_string())?;
        Ok(Arc::new(map))
    }
}

/// An attribute value as read back: the bytes of a plain string (the
/// common case), or a value that needs rendering.
#[derive(Debug, Clone, Copy)]
enum Text<'a> {
    Bytes(&'a [u8]),
    Value(Option<Any<'a>>),
}

impl<'a> Text<'a> {
    fn resolve(self) -> Result<Cow<'a, [u8]>, String> {
        match self {
            Text::Bytes(b) => Ok(Cow::Borrowed(b)),
            Text::Value(None) => Ok(Cow::Borrowed(b"")),
            Text::Value(Some(v)) => Ok(match any_text(v)? {
                Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
                Cow::Owned(s) => Cow::Owned(s.into_bytes()),
            }),
        }
    }
}

/// An encoded `KeyValue` read back: key bytes and value. The common shape
/// ([`wire::plain_key_value`]) takes the short way; anything else is read by
/// the validating reader.
#[inline]
fn key_value(bytes: &[u8]) -> wire::WireResult<(&[u8], Text<'_>)> {
    if let Some((key, text)) = wire::plain_key_value(bytes) {
        return Ok((key, Text::Bytes(text)));
    }
    let (key, value) = wire::key_value(bytes, wire::PROST_DEPTH)?;
    Ok((key.as_bytes(), Text::Value(value)))
}

/// Rows under construction.
#[derive(Debug)]
pub struct Rows<'a> {
    len: usize,
    event_id: FixedSizeBinaryBuilder,
    event_time: Vec<i64>,
    observed: TimestampMicrosecondBuilder,
    severity_number: Vec<i32>,
    severity_text: TextColumn,
    body: TextColumn,
    event_name: TextColumn,
    scope_name: TextColumn,
    service: TextColumn,
    trace_id: LargeBinaryBuilder,
    span_id: LargeBinaryBuilder,
    flags: Vec<i64>,
    attributes: MapColumn,
    resource: MapColumn,
    received: Vec<i64>,
    kafka_partition: Vec<i32>,
    kafka_offset: Vec<i64>,
    promoted: Promoted,
    scratch: Vec<(&'a [u8], Text<'a>)>,
}

impl<'a> Rows<'a> {
    /// Room for `rows` rows of about `bytes` encoded bytes in all.
    pub fn with_capacity(rows: usize, bytes: usize) -> Self {
        Self {
            len: 0,
            event_id: FixedSizeBinaryBuilder::with_capacity(rows, 16),
            event_time: Vec::with_capacity(rows),
            observed: TimestampMicrosecondBuilder::with_capacity(rows),
            severity_number: Vec::with_capacity(rows),
            severity_text: TextColumn::with_capacity(rows, rows * 5),
            body: TextColumn::with_capacity(rows, bytes / 2),
            event_name: TextColumn::with_capacity(rows, 0),
            scope_name: TextColumn::with_capacity(rows, rows * 12),
            service: TextColumn::with_capacity(rows, rows * 12),
            trace_id: LargeBinaryBuilder::with_capacity(rows, rows * 16),
            span_id: LargeBinaryBuilder::with_capacity(rows, rows * 8),
            flags: Vec::with_capacity(rows),
            attributes: MapColumn::with_capacity(rows, rows * 4, bytes / 2),
            resource: MapColumn::with_capacity(rows, rows * 2, rows * 32),
            received: Vec::with_capacity(rows),
            kafka_partition: Vec::with_capacity(rows),
            kafka_offset: Vec::with_capacity(rows),
            promoted: Promoted::default(),
            scratch: Vec::new(),
        }
    }

    /// Moves the attributes `target` promotes (columns whose doc names an
    /// attribute key, [`crate::promoted`]) into their own columns: pass the
    /// schema [`Rows::finish`] will get.
    pub fn promoting(mut self, target: &SchemaRef) -> Self {
        self.promoted = Promoted::of(target);
        self
    }

    /// Rows so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// No rows yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends one encoded `LogEvent` of record `info`, with its event time.
    pub fn push(&mut self, event: &'a [u8], info: &RecordInfo, time_us: i64) -> Result<(), String> {
        let mut r = Reader::new(event);
        let mut id: &[u8] = &[];
        let mut observed_ns = 0u64;
        let mut severity_number = 0i32;
        let (mut severity_text, mut event_name, mut scope_name): (&[u8], &[u8], &[u8]) =
            (&[], &[], &[]);
        let mut body: Option<&'a [u8]> = None;
        let (mut trace_id, mut span_id): (&[u8], &[u8]) = (&[], &[]);
        let mut flags = 0u32;
        self.scratch.clear();
        let bug = |e: wire::WireError| format!("validated event does not read back: {}", e.0);
        let len = |r: &mut Reader<'a>, w| r.expect(w, Wire::Len).and_then(Reader::bytes);
        while let Some((field, w)) = r.field().map_err(bug)? {
            match field {
                tags::log_event::EVENT_ID => id = len(&mut r, w).map_err(bug)?,
                tags::log_event::OBSERVED_TIME_UNIX_NANO => {
                    observed_ns = r
                        .expect(w, Wire::I64)
                        .and_then(Reader::fixed64)
                        .map_err(bug)?
                }
                // The protobuf rule for int32: the varint's low 32 bits.
                tags::log_event::SEVERITY_NUMBER => {
                    severity_number = r
                        .expect(w, Wire::Varint)
                        .and_then(Reader::varint)
                        .map_err(bug)? as i32
                }
                tags::log_event::SEVERITY_TEXT => severity_text = len(&mut r, w).map_err(bug)?,
                tags::log_event::BODY => body = Some(len(&mut r, w).map_err(bug)?),
                tags::log_event::ATTRIBUTES => {
                    let kv = len(&mut r, w).map_err(bug)?;
                    self.scratch.push(key_value(kv).map_err(bug)?);
                }
                tags::log_event::TRACE_ID => trace_id = len(&mut r, w).map_err(bug)?,
                tags::log_event::SPAN_ID => span_id = len(&mut r, w).map_err(bug)?,
                tags::log_event::FLAGS => {
                    flags = r
                        .expect(w, Wire::I32)
                        .and_then(Reader::fixed32)
                        .map_err(bug)?
                }
                tags::log_event::EVENT_NAME => event_name = len(&mut r, w).map_err(bug)?,
                tags::log_event::SCOPE_NAME => scope_name = len(&mut r, w).map_err(bug)?,
                _ => r.skip(w).map_err(bug)?,
            }
        }
        self.event_id.append_value(id).map_err(|e| e.to_string())?;
        self.event_time.push(time_us);
        self.observed.append_option(nanos_to_micros(observed_ns));
        self.severity_number.push(severity_number);
        self.severity_text.push_option(non_empty(severity_text))?;
        match body {
            None => self.body.push_option(None)?,
            Some(bytes) => match wire::plain_string(bytes) {
                Some(text) => self.body.push(text)?,
                None => match wire::any_value(bytes, wire::PROST_DEPTH).map_err(bug)? {
                    Any::Empty => self.body.push_option(None)?,
                    value => self.body.push(any_text(value)?.as_bytes())?,
                },
            },
        }
        self.event_name.push_option(non_empty(event_name))?;
        self.scope_name.push_option(non_empty(scope_name))?;
        self.service
            .push_option(info.service.as_deref().map(str::as_bytes))?;
        self.trace_id.append_option(non_empty(trace_id));
        self.span_id.append_option(non_empty(span_id));
        self.flags.push(i64::from(flags));
        if has_repeated_keys(&self.scratch) {
            // The last value of a repeated key wins; keys in order.
            let mut unique: BTreeMap<&[u8], Text<'_>> = BTreeMap::new();
            for &(k, v) in &self.scratch {
                unique.insert(k, v);
            }
            for (k, v) in unique {
                let text = v.resolve()?;
                if !self.promoted.take(k, &text) {
                    self.attributes.push(k, &text)?;
                }
            }
        } else {
            for &(k, v) in &self.scratch {
                let text = v.resolve()?;
                if !self.promoted.take(k, &text) {
                    self.attributes.push(k, &text)?;
                }
            }
        }
        self.promoted.end_row();
        self.attributes.end_row()?;
        for (k, v) in &info.resource {
            self.resource.push(k.as_bytes(), v.as_bytes())?;
        }
        self.resource.end_row()?;
        self.received.push(info.received_us);
        self.kafka_partition.push(info.partition);
        self.kafka_offset.push(info.offset);
        self.len += 1;
        Ok(())
    }

    /// The rows as a batch of `target` (the table's Arrow schema): columns
    /// matched by name and given the table's exact types; columns the table
    /// has and we do not fill are null.
    pub fn finish(mut self, target: &SchemaRef) -> Result<RecordBatch, String> {
        let n = self.len;
        let ts = |v: Vec<i64>| -> ArrayRef { Arc::new(TimestampMicrosecondArray::from(v)) };
        let built: Vec<(&str, ArrayRef)> = vec![
            (EVENT_ID, Arc::new(self.event_id.finish())),
            (EVENT_TIME, ts(self.event_time)),
            (OBSERVED_TIME, Arc::new(self.observed.finish())),
            (
                SEVERITY_NUMBER,
                Arc::new(Int32Array::from(self.severity_number)),
            ),
            (SEVERITY_TEXT, Arc::new(self.severity_text.finish()?)),
            (BODY, Arc::new(self.body.finish()?)),
            (EVENT_NAME, Arc::new(self.event_name.finish()?)),
            (SCOPE_NAME, Arc::new(self.scope_name.finish()?)),
            (SERVICE, Arc::new(self.service.finish()?)),
            (TRACE_ID, Arc::new(self.trace_id.finish())),
            (SPAN_ID, Arc::new(self.span_id.finish())),
            (FLAGS, Arc::new(Int64Array::from(self.flags))),
            (ATTRIBUTES, self.attributes.finish()?),
            (RESOURCE, self.resource.finish()?),
            (RECEIVED_AT, ts(self.received)),
            (
                KAFKA_PARTITION,
                Arc::new(Int32Array::from(self.kafka_partition)),
            ),
            (KAFKA_OFFSET, Arc::new(Int64Array::from(self.kafka_offset))),
        ];
        debug_assert!(built.iter().map(|c| c.0).eq(ALL), "every column, in order");
        let mut built: Vec<(Cow<'_, str>, ArrayRef)> = built
            .into_iter()
            .map(|(name, column)| (Cow::Borrowed(name), column))
            .chain(self.promoted.finish().map(|(n, c)| (Cow::Owned(n), c)))
            .collect();
        let mut columns = Vec::with_capacity(target.fields().len());
        for field in target.fields() {
            let column = match built
                .iter()
                .position(|(name, _)| name.as_ref() == field.name())
            {
                Some(i) => fit(built.swap_remove(i).1, field)?,
                None => new_null_array(field.data_type(), n),
            };
            columns.push(column);
        }
        RecordBatch::try_new(target.clone(), columns).map_err(|e| e.to_string())
    }
}

/// `array` with exactly `field`'s type: as is, relabelled without copying
/// (time zone, map field names and ids), or cast.
pub fn fit(array: ArrayRef, field: &FieldRef) -> Result<ArrayRef, String> {
    let want = field.data_type();
    if array.data_type() == want {
        return Ok(array);
    }
    let relabelled: Option<ArrayRef> = match (array.data_type(), want) {
        (
            DataType::Timestamp(TimeUnit::Microsecond, _),
            DataType::Timestamp(TimeUnit::Microsecond, tz),
        ) => Some(Arc::new(
            array
                .as_primitive::<TimestampMicrosecondType>()
                .clone()
                .with_timezone_opt(tz.clone()),
        )),
        (DataType::Map(_, _), DataType::Map(entries_field, sorted)) => {
            match entries_field.data_type() {
                DataType::Struct(fields) if fields.len() == 2 => {
                    let (_, offsets, entries, nulls, _) = array.as_map().clone().into_parts();
                    let (_, children, entry_nulls) = entries.into_parts();
                    StructArray::try_new(fields.clone(), children, entry_nulls)
                        .and_then(|e| {
                            MapArray::try_new(entries_field.clone(), offsets, e, nulls, *sorted)
                        })
                        .ok()
                        .map(|m| Arc::new(m) as ArrayRef)
                }
                _ => None,
            }
        }
        _ => None,
    };
    match relabelled {
        Some(a) if a.data_type() == want => Ok(a),
        _ => arrow_cast::cast(&array, want)
            .map_err(|e| format!("column {} cannot take the table's type: {e}", field.name())),
    }
}

fn non_empty(b: &[u8]) -> Option<&[u8]> {
    (!b.is_empty()).then_some(b)
}

fn has_repeated_keys(kvs: &[(&[u8], Text<'_>)]) -> bool {
    if kvs.len() <= 16 {
        kvs.iter()
            .enumerate()
            .any(|(i, a)| kvs[..i].iter().any(|b| b.0 == a.0))
    } else {
        let mut seen = HashSet::with_capacity(kvs.len());
        !kvs.iter().all(|(k, _)| seen.insert(*k))
    }
}

/// A record scanned by [`crate::decode`] and materialized here, the way a
/// flush does it: the reader's rules and the rows' layout tested together.
#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::cast::AsArray;
    use arrow_array::types::{Int32Type, TimestampMicrosecondType};
    use arrow_array::{Array, RecordBatch};
    use tlake_catalog_client::TableKind;
    use tlake_catalog_client::iceberg::arrow::schema_to_arrow_schema;
    use tlake_proto::v1::{ArrayValue, KeyValue, KeyValueList, LogEvent, Resource};

    use crate::decode::{Origin, render, scan};
    use prost::Message as _;
    use tlake_proto::contract::DEFAULT_STREAM;
    use tlake_proto::v1::{AnyValue, LogBatch, any_value};

    use super::*;

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
