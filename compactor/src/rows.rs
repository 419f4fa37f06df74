//! rows: the encoded events a flush chose, in output order → Arrow columns
//! in the table's own layout (its Arrow schema's names, types and field
//! ids), built once with no per-value allocation on the common path.
//!
//! Every byte reaching here was validated by [`crate::decode::scan`], so an
//! error is a bug, reported and never a panic.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use arrow_array::builder::{
    ArrayBuilder, FixedSizeBinaryBuilder, Int32Builder, Int64Builder, LargeBinaryBuilder,
    StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMicrosecondType;
use arrow_array::{
    Array, ArrayRef, Int32Array, Int64Array, MapArray, RecordBatch, StructArray,
    TimestampMicrosecondArray, new_null_array,
};
use arrow_buffer::OffsetBuffer;
use arrow_schema::{DataType, Field, FieldRef, Fields, SchemaRef, TimeUnit};

use crate::decode::{RecordInfo, any_text, nanos_to_micros};
use crate::wire::{self, Any, Reader, Wire};

/// A `map<string,string>` column under construction.
#[derive(Debug)]
struct MapColumn {
    keys: StringBuilder,
    values: StringBuilder,
    offsets: Vec<i32>,
}

impl MapColumn {
    fn with_capacity(rows: usize) -> Self {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        Self {
            keys: StringBuilder::new(),
            values: StringBuilder::new(),
            offsets,
        }
    }

    fn push(&mut self, key: &str, value: &str) {
        self.keys.append_value(key);
        self.values.append_value(value);
    }

    fn end_row(&mut self) -> Result<(), String> {
        let len = i32::try_from(self.keys.len()).map_err(|_| "map column over 2^31 entries")?;
        self.offsets.push(len);
        Ok(())
    }

    fn finish(mut self) -> Result<ArrayRef, String> {
        let fields = Fields::from(vec![
            Field::new("key", DataType::Utf8, false),
            Field::new("value", DataType::Utf8, true),
        ]);
        let entries = StructArray::try_new(
            fields.clone(),
            vec![Arc::new(self.keys.finish()), Arc::new(self.values.finish())],
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

/// Rows under construction.
#[derive(Debug)]
pub struct Rows<'a> {
    len: usize,
    event_id: FixedSizeBinaryBuilder,
    event_time: Vec<i64>,
    observed: TimestampMicrosecondBuilder,
    severity_number: Int32Builder,
    severity_text: StringBuilder,
    body: StringBuilder,
    event_name: StringBuilder,
    scope_name: StringBuilder,
    service: StringBuilder,
    trace_id: LargeBinaryBuilder,
    span_id: LargeBinaryBuilder,
    flags: Int64Builder,
    attributes: MapColumn,
    resource: MapColumn,
    received: Vec<i64>,
    kafka_partition: Vec<i32>,
    kafka_offset: Vec<i64>,
    scratch: Vec<(&'a str, Option<Any<'a>>)>,
}

impl<'a> Rows<'a> {
    /// Room for `rows` rows.
    pub fn with_capacity(rows: usize) -> Self {
        Self {
            len: 0,
            event_id: FixedSizeBinaryBuilder::with_capacity(rows, 16),
            event_time: Vec::with_capacity(rows),
            observed: TimestampMicrosecondBuilder::with_capacity(rows),
            severity_number: Int32Builder::with_capacity(rows),
            severity_text: StringBuilder::with_capacity(rows, rows * 5),
            body: StringBuilder::with_capacity(rows, rows * 96),
            event_name: StringBuilder::with_capacity(rows, 0),
            scope_name: StringBuilder::with_capacity(rows, 0),
            service: StringBuilder::with_capacity(rows, rows * 12),
            trace_id: LargeBinaryBuilder::with_capacity(rows, rows * 16),
            span_id: LargeBinaryBuilder::with_capacity(rows, rows * 8),
            flags: Int64Builder::with_capacity(rows),
            attributes: MapColumn::with_capacity(rows),
            resource: MapColumn::with_capacity(rows),
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
        let (mut severity_text, mut event_name, mut scope_name) = ("", "", "");
        let mut body: Option<Any<'a>> = None;
        let (mut trace_id, mut span_id): (&[u8], &[u8]) = (&[], &[]);
        let mut flags = 0u32;
        self.scratch.clear();
        let bug = |e: wire::WireError| format!("validated event does not read back: {}", e.0);
        while let Some((field, w)) = r.field().map_err(bug)? {
            match field {
                1 => {
                    id = r
                        .expect(w, Wire::Len)
                        .and_then(Reader::bytes)
                        .map_err(bug)?
                }
                3 => {
                    observed_ns = r
                        .expect(w, Wire::I64)
                        .and_then(Reader::fixed64)
                        .map_err(bug)?
                }
                // The protobuf rule for int32: the varint's low 32 bits.
                4 => {
                    severity_number = r
                        .expect(w, Wire::Varint)
                        .and_then(Reader::varint)
                        .map_err(bug)? as i32
                }
                5 => {
                    severity_text = r
                        .expect(w, Wire::Len)
                        .and_then(Reader::string)
                        .map_err(bug)?
                }
                6 => {
                    let bytes = r
                        .expect(w, Wire::Len)
                        .and_then(Reader::bytes)
                        .map_err(bug)?;
                    body = Some(wire::any_value(bytes, wire::PROST_DEPTH).map_err(bug)?);
                }
                7 => {
                    let bytes = r
                        .expect(w, Wire::Len)
                        .and_then(Reader::bytes)
                        .map_err(bug)?;
                    self.scratch
                        .push(wire::key_value(bytes, wire::PROST_DEPTH).map_err(bug)?);
                }
                8 => {
                    trace_id = r
                        .expect(w, Wire::Len)
                        .and_then(Reader::bytes)
                        .map_err(bug)?
                }
                9 => {
                    span_id = r
                        .expect(w, Wire::Len)
                        .and_then(Reader::bytes)
                        .map_err(bug)?
                }
                10 => {
                    flags = r
                        .expect(w, Wire::I32)
                        .and_then(Reader::fixed32)
                        .map_err(bug)?
                }
                11 => {
                    event_name = r
                        .expect(w, Wire::Len)
                        .and_then(Reader::string)
                        .map_err(bug)?
                }
                12 => {
                    scope_name = r
                        .expect(w, Wire::Len)
                        .and_then(Reader::string)
                        .map_err(bug)?
                }
                _ => r.skip(w).map_err(bug)?,
            }
        }
        self.event_id.append_value(id).map_err(|e| e.to_string())?;
        self.event_time.push(time_us);
        self.observed.append_option(nanos_to_micros(observed_ns));
        self.severity_number.append_value(severity_number);
        self.severity_text.append_option(non_empty(severity_text));
        match body {
            Some(Any::Str(text)) => self.body.append_value(text),
            Some(value @ Any::Other(_)) => self.body.append_value(any_text(value)?),
            Some(Any::Empty) | None => self.body.append_null(),
        }
        self.event_name.append_option(non_empty(event_name));
        self.scope_name.append_option(non_empty(scope_name));
        self.service.append_option(info.service.as_deref());
        self.trace_id.append_option(non_empty_bytes(trace_id));
        self.span_id.append_option(non_empty_bytes(span_id));
        self.flags.append_value(i64::from(flags));
        if has_repeated_keys(&self.scratch) {
            // The last value of a repeated key wins; keys in order.
            let mut unique: BTreeMap<&str, Option<Any<'_>>> = BTreeMap::new();
            for &(k, v) in &self.scratch {
                unique.insert(k, v);
            }
            for (k, v) in unique {
                self.attributes.push(k, &value_text(v)?);
            }
        } else {
            for &(k, v) in &self.scratch {
                match v {
                    Some(Any::Str(text)) => self.attributes.push(k, text),
                    other => self.attributes.push(k, &value_text(other)?),
                }
            }
        }
        self.attributes.end_row()?;
        for (k, v) in &info.resource {
            self.resource.push(k, v);
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
            ("severity_number", Arc::new(self.severity_number.finish())),
            ("severity_text", Arc::new(self.severity_text.finish())),
            ("body", Arc::new(self.body.finish())),
            ("event_name", Arc::new(self.event_name.finish())),
            ("scope_name", Arc::new(self.scope_name.finish())),
            ("service", Arc::new(self.service.finish())),
            ("trace_id", Arc::new(self.trace_id.finish())),
            ("span_id", Arc::new(self.span_id.finish())),
            ("flags", Arc::new(self.flags.finish())),
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

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

fn non_empty_bytes(b: &[u8]) -> Option<&[u8]> {
    (!b.is_empty()).then_some(b)
}

fn value_text(value: Option<Any<'_>>) -> Result<std::borrow::Cow<'_, str>, String> {
    value.map_or(Ok(std::borrow::Cow::Borrowed("")), any_text)
}

fn has_repeated_keys(kvs: &[(&str, Option<Any<'_>>)]) -> bool {
    if kvs.len() <= 16 {
        kvs.iter()
            .enumerate()
            .any(|(i, a)| kvs[..i].iter().any(|b| b.0 == a.0))
    } else {
        let mut seen = HashSet::with_capacity(kvs.len());
        !kvs.iter().all(|(k, _)| seen.insert(*k))
    }
}
