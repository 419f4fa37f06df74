//! promoted: attribute keys a table stores in typed columns of their own. The
//! table says which: a column whose Iceberg doc is `promoted attribute: <key>`
//! (`tlake_proto::contract::PROMOTED_ATTRIBUTE_DOC`, carried into the Arrow
//! field's `doc` metadata by iceberg-rust) takes that key's value —
//! out of the `attributes` map — when the value has the column's type; a
//! value that does not parse stays in the map and the column is null, so
//! nothing is lost and the map never holds a value twice.
//!
//! Values are parsed from the attribute's text (what the map would hold):
//! an OTLP int, double or bool renders as its JSON text, so `200` and `"200"`
//! both fill a `long` column. Timestamps are RFC 3339 text or integer
//! nanoseconds since the epoch (OTLP's unit for times).

use std::sync::Arc;

use arrow_array::ArrayRef;
use arrow_array::builder::{
    BooleanBuilder, Float64Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_schema::{DataType, Schema, TimeUnit};

use tlake_proto::contract::PROMOTED_ATTRIBUTE_DOC as DOC_PREFIX;

/// The Arrow field metadata key iceberg-rust puts an Iceberg doc under.
const ARROW_DOC_KEY: &str = "doc";

#[derive(Debug)]
enum Values {
    String(StringBuilder),
    Long(Int64Builder),
    Double(Float64Builder),
    Bool(BooleanBuilder),
    Timestamp(TimestampMicrosecondBuilder),
}

impl Values {
    fn for_type(data_type: &DataType) -> Option<Self> {
        Some(match data_type {
            DataType::Utf8 => Values::String(StringBuilder::new()),
            DataType::Int64 => Values::Long(Int64Builder::new()),
            DataType::Float64 => Values::Double(Float64Builder::new()),
            DataType::Boolean => Values::Bool(BooleanBuilder::new()),
            DataType::Timestamp(TimeUnit::Microsecond, _) => {
                Values::Timestamp(TimestampMicrosecondBuilder::new())
            }
            _ => return None,
        })
    }

    /// Appends `text` if it has this column's type.
    fn push(&mut self, text: &[u8]) -> bool {
        let Ok(text) = std::str::from_utf8(text) else {
            return false;
        };
        match self {
            Values::String(b) => b.append_value(text),
            Values::Long(b) => match text.trim().parse::<i64>() {
                Ok(v) => b.append_value(v),
                Err(_) => return false,
            },
            Values::Double(b) => match text.trim().parse::<f64>() {
                Ok(v) => b.append_value(v),
                Err(_) => return false,
            },
            Values::Bool(b) => match text.trim() {
                "true" => b.append_value(true),
                "false" => b.append_value(false),
                _ => return false,
            },
            Values::Timestamp(b) => match timestamp_us(text.trim()) {
                Some(v) => b.append_value(v),
                None => return false,
            },
        }
        true
    }

    fn push_null(&mut self) {
        match self {
            Values::String(b) => b.append_null(),
            Values::Long(b) => b.append_null(),
            Values::Double(b) => b.append_null(),
            Values::Bool(b) => b.append_null(),
            Values::Timestamp(b) => b.append_null(),
        }
    }

    fn finish(self) -> ArrayRef {
        match self {
            Values::String(mut b) => Arc::new(b.finish()),
            Values::Long(mut b) => Arc::new(b.finish()),
            Values::Double(mut b) => Arc::new(b.finish()),
            Values::Bool(mut b) => Arc::new(b.finish()),
            Values::Timestamp(mut b) => Arc::new(b.finish()),
        }
    }
}

/// Microseconds since the epoch of RFC 3339 text or integer nanoseconds.
fn timestamp_us(text: &str) -> Option<i64> {
    if let Ok(nanos) = text.parse::<i64>() {
        return Some(nanos.div_euclid(1000));
    }
    // Only full date-times: a bare number or date is not a time of day.
    if !text.contains('T') && !text.contains(' ') {
        return None;
    }
    arrow_cast::parse::string_to_timestamp_nanos(text)
        .ok()
        .map(|n| n.div_euclid(1000))
}

#[derive(Debug)]
struct Column {
    key: Vec<u8>,
    name: String,
    values: Values,
    filled: bool,
}

/// The promoted columns of one batch under construction.
#[derive(Debug, Default)]
pub(crate) struct Promoted {
    columns: Vec<Column>,
}

impl Promoted {
    /// The columns of `schema` that promote an attribute (by their doc), of
    /// a type a value can be parsed into.
    pub(crate) fn of(schema: &Schema) -> Self {
        let columns = schema
            .fields()
            .iter()
            .filter_map(|f| {
                let key = f.metadata().get(ARROW_DOC_KEY)?.strip_prefix(DOC_PREFIX)?;
                Some(Column {
                    key: key.as_bytes().to_vec(),
                    name: f.name().clone(),
                    values: Values::for_type(f.data_type())?,
                    filled: false,
                })
            })
            .collect();
        Self { columns }
    }

    /// Takes attribute `key`'s value `text` into its column if `key` is
    /// promoted and `text` has the column's type; `false`: it stays in the map.
    #[inline]
    pub(crate) fn take(&mut self, key: &[u8], text: &[u8]) -> bool {
        if self.columns.is_empty() {
            return false;
        }
        let Some(column) = self.columns.iter_mut().find(|c| !c.filled && c.key == key) else {
            return false;
        };
        column.filled = column.values.push(text);
        column.filled
    }

    /// Ends a row: columns its attributes did not fill are null.
    #[inline]
    pub(crate) fn end_row(&mut self) {
        for column in &mut self.columns {
            if !std::mem::take(&mut column.filled) {
                column.values.push_null();
            }
        }
    }

    /// The columns, by name.
    pub(crate) fn finish(self) -> impl Iterator<Item = (String, ArrayRef)> {
        self.columns
            .into_iter()
            .map(|c| (c.name, c.values.finish()))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int64Type, TimestampMicrosecondType};
    use arrow_schema::Field;

    use super::*;

    fn field(name: &str, data_type: DataType, key: Option<&str>) -> Field {
        let field = Field::new(name, data_type, true);
        match key {
            Some(k) => field.with_metadata(HashMap::from([(
                ARROW_DOC_KEY.to_owned(),
                format!("{DOC_PREFIX}{k}"),
            )])),
            None => field,
        }
    }

    #[test]
    fn typed_values_are_taken_and_the_rest_left_in_the_map() {
        let schema = Schema::new(vec![
            field("body", DataType::Utf8, None),
            field("attr_code", DataType::Int64, Some("http.status_code")),
            field("attr_ms", DataType::Float64, Some("duration_ms")),
            field("attr_ok", DataType::Boolean, Some("ok")),
            field("attr_user", DataType::Utf8, Some("user.id")),
            field(
                "attr_at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
                Some("at"),
            ),
            // A doc on a type nothing parses into: not promoted.
            field("attr_list", DataType::Binary, Some("list")),
        ]);
        let mut p = Promoted::of(&schema);
        assert_eq!(p.columns.len(), 5);
        // Row 0: every key, well typed.
        for (k, v) in [
            ("http.status_code", "200"),
            ("duration_ms", "1.5"),
            ("ok", "true"),
            ("user.id", "u-1"),
            ("at", "2026-12-03T10:00:00Z"),
        ] {
            assert!(p.take(k.as_bytes(), v.as_bytes()), "{k}={v}");
        }
        assert!(!p.take(b"list", b"[1]"), "not a promoted type");
        assert!(!p.take(b"other", b"x"), "not promoted");
        p.end_row();
        // Row 1: values of the wrong type stay in the map; a repeated key
        // fills once; missing keys are null.
        assert!(!p.take(b"http.status_code", b"abc"));
        assert!(!p.take(b"ok", b"yes"));
        assert!(!p.take(b"at", b"soon"));
        assert!(p.take(b"duration_ms", b"7"));
        assert!(
            !p.take(b"duration_ms", b"8"),
            "filled already: stays in the map"
        );
        p.end_row();
        // Row 2: a time as integer nanoseconds; a date alone is not a time.
        assert!(p.take(b"at", b"1764763200000000000"));
        assert!(!p.take(b"user.id", &[0xff]), "not UTF-8");
        p.end_row();
        let mut p = Promoted::of(&schema);
        assert!(!p.take(b"at", b"2026-12-03"));
        p.end_row();
    }

    #[test]
    fn finished_columns_have_a_value_or_a_null_per_row() {
        let schema = Schema::new(vec![
            field("attr_code", DataType::Int64, Some("code")),
            field("attr_ms", DataType::Float64, Some("ms")),
            field(
                "attr_at",
                DataType::Timestamp(TimeUnit::Microsecond, None),
                Some("at"),
            ),
        ]);
        let mut p = Promoted::of(&schema);
        p.take(b"code", b" 404 ");
        p.take(b"at", b"1764763200000000999");
        p.end_row();
        p.take(b"code", b"x");
        p.take(b"ms", b"2.25");
        p.end_row();
        let columns: HashMap<String, ArrayRef> = p.finish().collect();
        let code = columns["attr_code"].as_primitive::<Int64Type>();
        assert_eq!((code.len(), code.value(0), code.is_null(1)), (2, 404, true));
        let ms = columns["attr_ms"].as_primitive::<Float64Type>();
        assert!(ms.is_null(0));
        assert_eq!(ms.value(1), 2.25);
        let at = columns["attr_at"].as_primitive::<TimestampMicrosecondType>();
        assert_eq!(at.value(0), 1_764_763_200_000_000);
        assert!(at.is_null(1));
    }
}
