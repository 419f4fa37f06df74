//! What the compactor writes: the logs and dead-letter table layouts
//! (ARCHITECTURE §3), and the check of an existing table against them.
//!
//! Field ids here are only the ones we propose; the catalog may reassign
//! them on create, so every check below goes by name and type.

use tlake_proto::contract::PROMOTED_ATTRIBUTE_DOC;
use tlake_proto::contract::columns::{dead_letters as dl, logs};

use iceberg::spec::{
    FormatVersion, MapType, NestedField, NestedFieldRef, NullOrder, PrimitiveType, Schema,
    SortDirection, SortField, SortOrder, TableMetadata, Transform, Type, UnboundPartitionField,
    UnboundPartitionSpec,
};

/// The logs columns this crate's callers filter, sort and key on (all of
/// them: `tlake_proto::contract::columns`).
pub use tlake_proto::contract::columns::logs::{EVENT_ID, EVENT_TIME, SERVICE};
/// Name of the partition field, `day(event_time)`.
pub const EVENT_DAY: &str = "event_day";

/// Which layout a table has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    /// One stream's log events.
    Logs,
    /// Records that could not be decoded or mapped.
    DeadLetters,
}

fn string_map(key_id: i32, value_id: i32) -> Type {
    Type::Map(MapType::new(
        NestedField::map_key_element(key_id, Type::Primitive(PrimitiveType::String)).into(),
        NestedField::map_value_element(value_id, Type::Primitive(PrimitiveType::String), false)
            .into(),
    ))
}

fn prim(p: PrimitiveType) -> Type {
    Type::Primitive(p)
}

/// The columns of a logs table, in order.
pub fn logs_fields() -> Vec<NestedFieldRef> {
    use PrimitiveType as P;
    vec![
        // fixed[16]: DuckDB reads it as BLOB, iceberg-rust as FixedSizeBinary(16).
        NestedField::required(1, EVENT_ID, prim(P::Fixed(16))).into(),
        NestedField::required(2, EVENT_TIME, prim(P::Timestamptz)).into(),
        NestedField::optional(3, logs::OBSERVED_TIME, prim(P::Timestamptz)).into(),
        NestedField::optional(4, logs::SEVERITY_NUMBER, prim(P::Int)).into(),
        NestedField::optional(5, logs::SEVERITY_TEXT, prim(P::String)).into(),
        NestedField::optional(6, logs::BODY, prim(P::String)).into(),
        NestedField::optional(7, logs::EVENT_NAME, prim(P::String)).into(),
        NestedField::optional(8, logs::SCOPE_NAME, prim(P::String)).into(),
        NestedField::optional(9, SERVICE, prim(P::String)).into(),
        NestedField::optional(10, logs::TRACE_ID, prim(P::Binary)).into(),
        NestedField::optional(11, logs::SPAN_ID, prim(P::Binary)).into(),
        NestedField::optional(12, logs::FLAGS, prim(P::Long)).into(),
        NestedField::optional(13, logs::ATTRIBUTES, string_map(20, 21)).into(),
        NestedField::optional(14, logs::RESOURCE, string_map(22, 23)).into(),
        NestedField::optional(15, logs::RECEIVED_AT, prim(P::Timestamptz)).into(),
        NestedField::optional(16, logs::KAFKA_PARTITION, prim(P::Int)).into(),
        NestedField::optional(17, logs::KAFKA_OFFSET, prim(P::Long)).into(),
    ]
}

/// The columns of the dead-letter table.
pub fn dead_letter_fields() -> Vec<NestedFieldRef> {
    use PrimitiveType as P;
    vec![
        NestedField::optional(1, dl::RAW, prim(P::Binary)).into(),
        NestedField::required(2, dl::TOPIC, prim(P::String)).into(),
        NestedField::required(3, dl::KAFKA_PARTITION, prim(P::Int)).into(),
        NestedField::required(4, dl::KAFKA_OFFSET, prim(P::Long)).into(),
        NestedField::required(5, dl::REASON, prim(P::String)).into(),
        NestedField::required(6, dl::DEAD_LETTERED_AT, prim(P::Timestamptz)).into(),
    ]
}

impl TableKind {
    /// The schema we create the table with.
    pub fn schema(self) -> Schema {
        let fields = match self {
            TableKind::Logs => logs_fields(),
            TableKind::DeadLetters => dead_letter_fields(),
        };
        Schema::builder()
            .with_fields(fields)
            .build()
            .expect("static schema is valid")
    }

    /// `day(event_time)` for logs; dead letters are few and unpartitioned.
    pub fn partition_spec(self) -> UnboundPartitionSpec {
        match self {
            // Nessie requires the partition field id in create requests.
            TableKind::Logs => UnboundPartitionSpec::builder()
                .with_spec_id(0)
                .add_partition_fields([UnboundPartitionField {
                    source_id: 2,
                    field_id: Some(1000),
                    name: EVENT_DAY.to_owned(),
                    transform: Transform::Day,
                }])
                .expect("static spec is valid")
                .build(),
            TableKind::DeadLetters => UnboundPartitionSpec::builder().with_spec_id(0).build(),
        }
    }

    /// `(service, event_time)` for logs.
    pub fn sort_order(self) -> SortOrder {
        let field = |source_id| SortField {
            source_id,
            transform: Transform::Identity,
            direction: SortDirection::Ascending,
            null_order: NullOrder::First,
        };
        match self {
            TableKind::Logs => SortOrder::builder()
                .with_order_id(1)
                .with_sort_field(field(9))
                .with_sort_field(field(2))
                .build_unbound()
                .expect("static sort order is valid"),
            TableKind::DeadLetters => SortOrder::unsorted_order(),
        }
    }
}

/// The type of a promoted attribute's column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttributeType {
    /// `string`.
    String,
    /// `long` (64-bit integer).
    Long,
    /// `double`.
    Double,
    /// `boolean`.
    Bool,
    /// `timestamptz` (µs, UTC), from RFC 3339 text or integer nanoseconds.
    Timestamp,
}

impl AttributeType {
    fn iceberg(self) -> PrimitiveType {
        match self {
            AttributeType::String => PrimitiveType::String,
            AttributeType::Long => PrimitiveType::Long,
            AttributeType::Double => PrimitiveType::Double,
            AttributeType::Bool => PrimitiveType::Boolean,
            AttributeType::Timestamp => PrimitiveType::Timestamptz,
        }
    }
}

/// An attribute key a stream stores in a typed column of its own
/// (`record-reader`'s `promoted` fills it), named by [`promoted_column`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromotedAttribute {
    /// The attribute key, e.g. `http.status_code`.
    pub key: String,
    /// Its column's type.
    pub kind: AttributeType,
}

impl PromotedAttribute {
    /// The column's name, [`promoted_column`] of the key.
    pub fn column(&self) -> String {
        promoted_column(&self.key)
    }

    fn field(&self) -> NestedField {
        NestedField::optional(0, self.column(), prim(self.kind.iceberg()))
            .with_doc(format!("{PROMOTED_ATTRIBUTE_DOC}{}", self.key))
    }
}

/// The column promoting attribute `key`: `attr_` and the key with every
/// character but `a-z0-9_` (lower-cased) as `_` — a plain SQL identifier
/// that cannot collide with the table's own columns.
pub fn promoted_column(key: &str) -> String {
    let mut name = String::with_capacity(key.len() + 5);
    name.push_str("attr_");
    name.extend(key.chars().map(|c| match c.to_ascii_lowercase() {
        c @ ('a'..='z' | '0'..='9' | '_') => c,
        _ => '_',
    }));
    name
}

/// How a logs table partitions its files: by the day or the hour of the
/// event time. Changing it evolves the table's spec; files written before
/// keep theirs and stay valid.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimePartition {
    /// `day(event_time)`, field `event_day` (the default).
    #[default]
    Day,
    /// `hour(event_time)`, field `event_hour`: for streams whose queries
    /// look at the last hours, or whose days make too many files per partition.
    Hour,
}

impl TimePartition {
    /// The partition transform.
    pub fn transform(self) -> Transform {
        match self {
            TimePartition::Day => Transform::Day,
            TimePartition::Hour => Transform::Hour,
        }
    }

    /// The partition field's name.
    pub fn field_name(self) -> &'static str {
        match self {
            TimePartition::Day => EVENT_DAY,
            TimePartition::Hour => EVENT_HOUR,
        }
    }

    fn of(transform: Transform) -> Option<Self> {
        match transform {
            Transform::Day => Some(TimePartition::Day),
            Transform::Hour => Some(TimePartition::Hour),
            _ => None,
        }
    }
}

/// Name of the partition field `hour(event_time)`.
pub const EVENT_HOUR: &str = "event_hour";

/// The order rows are written in within a partition (a logs table's sort
/// order). Changing it evolves the table's default sort order; files
/// written before keep the order they were written in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SortBy {
    /// `(service, event_time)` (the default): a service's rows together,
    /// so a filter on `service` reads few row groups.
    #[default]
    #[serde(rename = "service,event_time")]
    ServiceTime,
    /// `(event_time)` alone: for streams queried by time across services.
    #[serde(rename = "event_time")]
    Time,
}

impl SortBy {
    /// The sort columns, in order.
    pub fn columns(self) -> &'static [&'static str] {
        match self {
            SortBy::ServiceTime => &[SERVICE, EVENT_TIME],
            SortBy::Time => &[EVENT_TIME],
        }
    }

    /// The table's default sort order as one of ours (anything else, e.g.
    /// unsorted, is taken as the default the compactor writes).
    pub fn of(metadata: &TableMetadata) -> Self {
        let order = metadata.default_sort_order();
        let schema = metadata.current_schema();
        let names: Vec<&str> = order
            .fields
            .iter()
            .filter_map(|f| schema.field_by_id(f.source_id).map(|c| c.name.as_str()))
            .collect();
        if names == SortBy::Time.columns() {
            SortBy::Time
        } else {
            SortBy::ServiceTime
        }
    }

    /// Whether `order` is exactly this one (identity, ascending, nulls first).
    fn is(self, order: &SortOrder, schema: &Schema) -> bool {
        let columns = self.columns();
        order.fields.len() == columns.len()
            && order.fields.iter().zip(columns).all(|(f, c)| {
                f.transform == Transform::Identity
                    && f.direction == SortDirection::Ascending
                    && f.null_order == NullOrder::First
                    && schema
                        .field_by_id(f.source_id)
                        .is_some_and(|x| x.name == *c)
            })
    }
}

/// The id of a sort order of `metadata` that is exactly `sort`, if any.
pub fn sort_order_id(metadata: &TableMetadata, sort: SortBy) -> Option<i64> {
    let schema = metadata.current_schema();
    metadata
        .sort_orders_iter()
        .find(|o| sort.is(o, schema))
        .map(|o| o.order_id)
}

/// What a table must hold: its kind's columns, the stream's promoted
/// attributes and (logs) its time partitioning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Logs or dead letters.
    pub kind: TableKind,
    /// Attributes in columns of their own (logs only).
    pub promoted: Vec<PromotedAttribute>,
    /// Day or hour partitions (logs only).
    pub partition: TimePartition,
    /// The order rows are written in (logs only).
    pub sort: SortBy,
}

impl From<TableKind> for Layout {
    fn from(kind: TableKind) -> Self {
        Self {
            kind,
            promoted: Vec::new(),
            partition: TimePartition::Day,
            sort: SortBy::ServiceTime,
        }
    }
}

/// What must change for an existing table to hold what we write.
#[derive(Debug, Clone, PartialEq)]
pub struct Evolution {
    /// Optional columns to add (their ids are assigned when added).
    pub add_columns: Vec<NestedFieldRef>,
    /// The time partitioning new files must get, when it is not the
    /// table's default spec yet.
    pub partition: Option<TimePartition>,
    /// The sort order new files are written in, when it is not the table's
    /// default sort order yet.
    pub sort: Option<SortBy>,
}

/// Compares an existing table with `layout`. `Ok` lists the additive
/// changes needed (possibly none); `Err` says why the table cannot be used.
pub fn check_compatibility(layout: &Layout, metadata: &TableMetadata) -> Result<Evolution, String> {
    let kind = layout.kind;
    if metadata.format_version() != FormatVersion::V2 {
        return Err(format!(
            "format version is {}, the compactor writes v2",
            metadata.format_version()
        ));
    }
    let ours = kind.schema();
    let theirs = metadata.current_schema();
    let mut add_columns = Vec::new();
    for promoted in &layout.promoted {
        let field = promoted.field();
        match theirs.field_by_name(&field.name) {
            None => add_columns.push(field.into()),
            Some(existing) => {
                if existing.doc != field.doc {
                    return Err(format!(
                        "column {} exists but does not promote attribute {:?} (its doc is {:?})",
                        field.name, promoted.key, existing.doc
                    ));
                }
                if !same_shape(&existing.field_type, &field.field_type) {
                    return Err(format!(
                        "attribute {:?} is promoted as {} but its column {} has type {}: a \
                         promoted column's type cannot change",
                        promoted.key, field.field_type, field.name, existing.field_type
                    ));
                }
            }
        }
    }
    for field in ours.as_struct().fields() {
        match theirs.field_by_name(&field.name) {
            None if field.required => {
                return Err(format!("required column {} is missing", field.name));
            }
            None => add_columns.push(field.clone()),
            Some(existing) => {
                if !same_shape(&existing.field_type, &field.field_type) {
                    return Err(format!(
                        "column {} has type {}, expected {}",
                        field.name, existing.field_type, field.field_type
                    ));
                }
                if existing.required && !field.required {
                    return Err(format!(
                        "column {} is required in the table but may be null in our rows",
                        field.name
                    ));
                }
            }
        }
    }
    // Extra columns are fine if optional: we write nulls into them.
    for field in theirs.as_struct().fields() {
        if field.required && ours.field_by_name(&field.name).is_none() {
            return Err(format!(
                "the table has a required column {} the compactor does not write",
                field.name
            ));
        }
    }
    let spec = metadata.default_partition_spec();
    let mut partition = None;
    let spec_ok = match kind {
        TableKind::Logs => match spec.fields() {
            [field]
                if theirs
                    .field_by_id(field.source_id)
                    .is_some_and(|f| f.name == EVENT_TIME) =>
            {
                match TimePartition::of(field.transform) {
                    Some(current) => {
                        partition = (current != layout.partition).then_some(layout.partition);
                        true
                    }
                    None => false,
                }
            }
            _ => false,
        },
        TableKind::DeadLetters => spec.fields().is_empty(),
    };
    if !spec_ok {
        return Err(format!(
            "partition spec is {:?}, expected {}",
            spec.fields()
                .iter()
                .map(|f| format!("{}({})", f.transform, f.source_id))
                .collect::<Vec<_>>(),
            match kind {
                TableKind::Logs => "day(event_time) or hour(event_time)",
                TableKind::DeadLetters => "unpartitioned",
            }
        ));
    }
    let sort = (kind == TableKind::Logs && !layout.sort.is(metadata.default_sort_order(), theirs))
        .then_some(layout.sort);
    Ok(Evolution {
        add_columns,
        partition,
        sort,
    })
}

/// The id of a spec of `metadata` that is exactly `partition` of event
/// time, if the table has one (switching back reuses it).
pub fn time_spec_id(metadata: &TableMetadata, partition: TimePartition) -> Option<i32> {
    let event_time = metadata.current_schema().field_by_name(EVENT_TIME)?.id;
    metadata
        .partition_specs_iter()
        .find_map(|spec| match spec.fields() {
            [f] if f.source_id == event_time && f.transform == partition.transform() => {
                Some(spec.spec_id())
            }
            _ => None,
        })
}

/// Type equality ignoring nested field ids (which the catalog assigns).
fn same_shape(a: &Type, b: &Type) -> bool {
    match (a, b) {
        (Type::Primitive(x), Type::Primitive(y)) => x == y,
        (Type::Map(x), Type::Map(y)) => {
            same_shape(&x.key_field.field_type, &y.key_field.field_type)
                && same_shape(&x.value_field.field_type, &y.value_field.field_type)
        }
        (Type::List(x), Type::List(y)) => {
            same_shape(&x.element_field.field_type, &y.element_field.field_type)
        }
        (Type::Struct(x), Type::Struct(y)) => {
            x.fields().len() == y.fields().len()
                && x.fields()
                    .iter()
                    .zip(y.fields())
                    .all(|(f, g)| f.name == g.name && same_shape(&f.field_type, &g.field_type))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Table metadata as the compactor creates it: a logs schema (one with
    /// `service` and `event_time`) gets the logs sort order.
    fn metadata(schema: Schema, spec: UnboundPartitionSpec) -> TableMetadata {
        let order = if schema.field_by_name(SERVICE).is_some()
            && schema.field_by_name(EVENT_TIME).is_some()
        {
            TableKind::Logs.sort_order()
        } else {
            SortOrder::unsorted_order()
        };
        iceberg::spec::TableMetadataBuilder::new(
            schema,
            spec,
            order,
            "s3://b/t".to_owned(),
            FormatVersion::V2,
            Default::default(),
        )
        .expect("builder")
        .build()
        .expect("metadata")
        .metadata
    }

    #[test]
    fn our_own_layout_is_compatible() {
        for kind in [TableKind::Logs, TableKind::DeadLetters] {
            let m = metadata(kind.schema(), kind.partition_spec());
            assert_eq!(
                check_compatibility(&kind.into(), &m),
                Ok(Evolution {
                    add_columns: vec![],
                    partition: None,
                    sort: None,
                })
            );
        }
    }

    #[test]
    fn missing_optional_columns_are_added() {
        let fields: Vec<_> = logs_fields()
            .into_iter()
            .filter(|f| f.name != "kafka_offset" && f.name != "attributes")
            .collect();
        let schema = Schema::builder()
            .with_fields(fields)
            .build()
            .expect("schema");
        let m = metadata(schema, TableKind::Logs.partition_spec());
        let evolution = check_compatibility(&TableKind::Logs.into(), &m).expect("compatible");
        let names: Vec<_> = evolution
            .add_columns
            .iter()
            .map(|f| f.name.as_str())
            .collect();
        assert_eq!(names, ["attributes", "kafka_offset"]);
    }

    #[test]
    fn wrong_type_is_refused() {
        let mut fields = logs_fields();
        fields[3] = NestedField::optional(4, "severity_number", prim(PrimitiveType::String)).into();
        let schema = Schema::builder()
            .with_fields(fields)
            .build()
            .expect("schema");
        let err = check_compatibility(
            &TableKind::Logs.into(),
            &metadata(schema, TableKind::Logs.partition_spec()),
        )
        .expect_err("must refuse");
        assert!(err.contains("severity_number"), "{err}");
    }

    #[test]
    fn wrong_partitioning_is_refused() {
        let spec = UnboundPartitionSpec::builder()
            .add_partition_field(2, "m", Transform::Month)
            .expect("spec")
            .build();
        let err = check_compatibility(
            &TableKind::Logs.into(),
            &metadata(TableKind::Logs.schema(), spec),
        )
        .expect_err("must refuse");
        assert!(err.contains("day(event_time) or hour(event_time)"), "{err}");
    }

    #[test]
    fn a_changed_time_partitioning_is_an_evolution_and_an_existing_spec_is_reused() {
        let hourly = Layout {
            partition: TimePartition::Hour,
            ..TableKind::Logs.into()
        };
        let daily_table = metadata(TableKind::Logs.schema(), TableKind::Logs.partition_spec());
        let evolution = check_compatibility(&hourly, &daily_table).expect("compatible");
        assert_eq!(evolution.partition, Some(TimePartition::Hour));
        assert_eq!(time_spec_id(&daily_table, TimePartition::Day), Some(0));
        assert_eq!(time_spec_id(&daily_table, TimePartition::Hour), None);

        let hour_spec = UnboundPartitionSpec::builder()
            .add_partition_field(2, EVENT_HOUR, Transform::Hour)
            .expect("spec")
            .build();
        let hourly_table = metadata(TableKind::Logs.schema(), hour_spec);
        assert_eq!(
            check_compatibility(&hourly, &hourly_table).map(|e| e.partition),
            Ok(None)
        );
        assert_eq!(
            check_compatibility(&TableKind::Logs.into(), &hourly_table).map(|e| e.partition),
            Ok(Some(TimePartition::Day))
        );
    }

    #[test]
    fn extra_required_column_is_refused() {
        let mut fields = logs_fields();
        fields.push(NestedField::required(30, "tenant", prim(PrimitiveType::String)).into());
        let schema = Schema::builder()
            .with_fields(fields)
            .build()
            .expect("schema");
        let err = check_compatibility(
            &TableKind::Logs.into(),
            &metadata(schema, TableKind::Logs.partition_spec()),
        )
        .expect_err("must refuse");
        assert!(err.contains("tenant"), "{err}");
    }

    #[test]
    fn promoted_attributes_are_added_with_their_key_as_doc_and_cannot_change_type() {
        let layout = |kind| Layout {
            promoted: vec![PromotedAttribute {
                key: "http.status_code".into(),
                kind,
            }],
            ..TableKind::Logs.into()
        };
        let m = metadata(TableKind::Logs.schema(), TableKind::Logs.partition_spec());
        let evolution = check_compatibility(&layout(AttributeType::Long), &m).expect("compatible");
        assert_eq!(evolution.add_columns.len(), 1);
        let added = &evolution.add_columns[0];
        assert_eq!(added.name, "attr_http_status_code");
        assert_eq!(
            added.doc.as_deref(),
            Some("promoted attribute: http.status_code")
        );
        assert!(!added.required);
        assert_eq!(*added.field_type, prim(PrimitiveType::Long));

        // The table has it: nothing to add; as another type or key: refused.
        let mut fields = logs_fields();
        fields.push(
            NestedField::optional(30, "attr_http_status_code", prim(PrimitiveType::Long))
                .with_doc("promoted attribute: http.status_code")
                .into(),
        );
        let schema = Schema::builder()
            .with_fields(fields)
            .build()
            .expect("schema");
        let m = metadata(schema, TableKind::Logs.partition_spec());
        assert_eq!(
            check_compatibility(&layout(AttributeType::Long), &m).map(|e| e.add_columns.len()),
            Ok(0)
        );
        let err = check_compatibility(&layout(AttributeType::String), &m).expect_err("type");
        assert!(err.contains("cannot change"), "{err}");
        let other = Layout {
            promoted: vec![PromotedAttribute {
                key: "http-status_code".into(),
                kind: AttributeType::Long,
            }],
            ..TableKind::Logs.into()
        };
        let err = check_compatibility(&other, &m).expect_err("another key's column");
        assert!(err.contains("does not promote"), "{err}");
    }

    #[test]
    fn a_changed_sort_order_is_an_evolution() {
        let by_time = Layout {
            sort: SortBy::Time,
            ..TableKind::Logs.into()
        };
        let m = metadata(TableKind::Logs.schema(), TableKind::Logs.partition_spec());
        assert_eq!(SortBy::of(&m), SortBy::ServiceTime);
        assert_eq!(sort_order_id(&m, SortBy::ServiceTime), Some(1));
        assert_eq!(sort_order_id(&m, SortBy::Time), None);
        assert_eq!(
            check_compatibility(&by_time, &m).map(|e| e.sort),
            Ok(Some(SortBy::Time))
        );
        assert_eq!(
            check_compatibility(&TableKind::Logs.into(), &m).map(|e| e.sort),
            Ok(None)
        );
    }

    /// The tables have exactly the contract's columns, in its order (the
    /// row builders' tests check theirs against the same lists).
    #[test]
    fn the_schemas_have_the_contracts_columns() {
        let names = |fields: Vec<NestedFieldRef>| -> Vec<String> {
            fields.iter().map(|f| f.name.clone()).collect()
        };
        assert_eq!(names(logs_fields()), logs::ALL);
        assert_eq!(names(dead_letter_fields()), dl::ALL);
    }

    #[test]
    fn promoted_column_names_are_plain_identifiers() {
        assert_eq!(promoted_column("http.status_code"), "attr_http_status_code");
        assert_eq!(promoted_column("K8s.Pod-Name"), "attr_k8s_pod_name");
        assert_eq!(promoted_column("ü"), "attr__");
    }
}
