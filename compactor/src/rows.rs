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

use tlake_proto::contract::tags;

use crate::decode::{RecordInfo, any_text, nanos_to_micros};
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

/// The string of an encoded `AnyValue` that holds only a string (field 1
/// once, nothing else) — as prost reads it; anything else is `None`.
#[inline]
fn plain_string(any_value: &[u8]) -> Option<&[u8]> {
    let mut r = Reader::new(any_value);
    match r.field() {
        Ok(Some((tags::any_value::STRING, Wire::Len))) => {}
        _ => return None,
    }
    let s = r.bytes().ok()?;
    matches!(r.field(), Ok(None)).then_some(s)
}

/// An encoded `KeyValue` read back: key bytes and value. Exactly
/// `key, value` in that order with a plain string takes the short way;
/// anything else is read by the validating reader.
#[inline]
fn key_value(bytes: &[u8]) -> wire::WireResult<(&[u8], Text<'_>)> {
    let mut r = Reader::new(bytes);
    if let Ok(Some((1, Wire::Len))) = r.field()
        && let Ok(key) = r.bytes()
        && let Ok(Some((2, Wire::Len))) = r.field()
        && let Ok(value) = r.bytes()
        && let Ok(None) = r.field()
        && let Some(text) = plain_string(value)
    {
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
            scratch: Vec::new(),
        }
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
            Some(bytes) => match plain_string(bytes) {
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
                self.attributes.push(k, &v.resolve()?)?;
            }
        } else {
            for &(k, v) in &self.scratch {
                self.attributes.push(k, &v.resolve()?)?;
            }
        }
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
        let mut built: Vec<(&str, ArrayRef)> = vec![
            ("event_id", Arc::new(self.event_id.finish())),
            ("event_time", ts(self.event_time)),
            ("observed_time", Arc::new(self.observed.finish())),
            (
                "severity_number",
                Arc::new(Int32Array::from(self.severity_number)),
            ),
            ("severity_text", Arc::new(self.severity_text.finish()?)),
            ("body", Arc::new(self.body.finish()?)),
            ("event_name", Arc::new(self.event_name.finish()?)),
            ("scope_name", Arc::new(self.scope_name.finish()?)),
            ("service", Arc::new(self.service.finish()?)),
            ("trace_id", Arc::new(self.trace_id.finish())),
            ("span_id", Arc::new(self.span_id.finish())),
            ("flags", Arc::new(Int64Array::from(self.flags))),
            ("attributes", self.attributes.finish()?),
            ("resource", self.resource.finish()?),
            ("received_at", ts(self.received)),
            (
                "kafka_partition",
                Arc::new(Int32Array::from(self.kafka_partition)),
            ),
            (
                "kafka_offset",
                Arc::new(Int64Array::from(self.kafka_offset)),
            ),
        ];
        let mut columns = Vec::with_capacity(target.fields().len());
        for field in target.fields() {
            let column = match built.iter().position(|(name, _)| name == field.name()) {
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
