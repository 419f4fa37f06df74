//! The rules every component applies to the same names and numbers: stream
//! names (they become Iceberg table names), the default stream, the
//! dead-letter table, Kafka topic names, the tables' column names, and the
//! `LogEvent` field tags that the compactor's hand-written decoder reads
//! without the generated code. One copy here; the SDK, the gateway, the
//! catalog client and the compactor call it, the tests below check the tags
//! against the `.proto` itself, and the catalog client's and the row
//! builders' tests check their columns against [`columns`].

/// The stream of a request that names none.
pub const DEFAULT_STREAM: &str = "default";

/// The table records that cannot be mapped to rows go to, in every stream's
/// namespace; no stream may take its name.
pub const DEAD_LETTER_TABLE: &str = "dead_letters";

/// Longest stream name: it becomes an Iceberg table name and part of topic names.
pub const MAX_STREAM_NAME: usize = 63;

/// Checks a stream name: `[a-z][a-z0-9_]*`, at most [`MAX_STREAM_NAME`]
/// characters. The reason names the rule broken, for error messages.
pub fn stream_name(name: &str) -> Result<(), String> {
    let mut bytes = name.bytes();
    match bytes.next() {
        None => return Err("must not be empty".into()),
        Some(b) if !b.is_ascii_lowercase() => {
            return Err("must start with a lower-case letter".into());
        }
        Some(_) => {}
    }
    if name.len() > MAX_STREAM_NAME {
        return Err(format!("must be at most {MAX_STREAM_NAME} characters"));
    }
    if !bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        return Err("may only contain a-z, 0-9 and '_'".into());
    }
    Ok(())
}

/// Whether `name` is a valid stream (and so table or namespace) name.
pub fn is_stream_name(name: &str) -> bool {
    stream_name(name).is_ok()
}

/// Whether Kafka accepts `topic` as a topic name: 1–249 of `[a-zA-Z0-9._-]`,
/// neither `.` nor `..`.
pub fn is_topic_name(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= 249
        && topic != "."
        && topic != ".."
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// The start of the Iceberg doc of a column that promotes an attribute to a
/// typed column of its own; the rest of the doc is the attribute's key. The
/// compactor writes it when it adds the column, and every reader of the topic
/// (the flush, `tlake sql --fresh`) finds the table's promoted keys by it.
pub const PROMOTED_ATTRIBUTE_DOC: &str = "promoted attribute: ";

/// Column names of the tables, in the tables' field order. The Iceberg
/// schemas (`catalog-client/src/schema.rs`), the row builders that fill them
/// (`record-reader/src/rows.rs`, `compactor/src/dead_letters.rs`) and the
/// readers that filter on them use these names; their tests check that each
/// side has exactly [`columns::logs::ALL`] / [`columns::dead_letters::ALL`].
pub mod columns {
    /// An event stream's table (one per stream).
    pub mod logs {
        /// The event's id (16 bytes): the deduplication key.
        pub const EVENT_ID: &str = "event_id";
        /// When the event happened: the partition and sort source.
        pub const EVENT_TIME: &str = "event_time";
        /// When the emitter observed it.
        pub const OBSERVED_TIME: &str = "observed_time";
        /// OpenTelemetry severity number.
        pub const SEVERITY_NUMBER: &str = "severity_number";
        /// Severity as text.
        pub const SEVERITY_TEXT: &str = "severity_text";
        /// The log line.
        pub const BODY: &str = "body";
        /// OpenTelemetry event name.
        pub const EVENT_NAME: &str = "event_name";
        /// Instrumentation scope name.
        pub const SCOPE_NAME: &str = "scope_name";
        /// `service.name` of the resource: the first sort key.
        pub const SERVICE: &str = "service";
        /// W3C trace id.
        pub const TRACE_ID: &str = "trace_id";
        /// W3C span id.
        pub const SPAN_ID: &str = "span_id";
        /// W3C trace flags.
        pub const FLAGS: &str = "flags";
        /// The event's attributes not promoted to columns of their own.
        pub const ATTRIBUTES: &str = "attributes";
        /// The resource's attributes.
        pub const RESOURCE: &str = "resource";
        /// When the gateway received the request.
        pub const RECEIVED_AT: &str = "received_at";
        /// The Kafka partition the event was read from.
        pub const KAFKA_PARTITION: &str = "kafka_partition";
        /// Its Kafka offset.
        pub const KAFKA_OFFSET: &str = "kafka_offset";
        /// Every column, in the table's field order.
        pub const ALL: [&str; 17] = [
            EVENT_ID,
            EVENT_TIME,
            OBSERVED_TIME,
            SEVERITY_NUMBER,
            SEVERITY_TEXT,
            BODY,
            EVENT_NAME,
            SCOPE_NAME,
            SERVICE,
            TRACE_ID,
            SPAN_ID,
            FLAGS,
            ATTRIBUTES,
            RESOURCE,
            RECEIVED_AT,
            KAFKA_PARTITION,
            KAFKA_OFFSET,
        ];
    }

    /// The dead-letter table ([`super::DEAD_LETTER_TABLE`]).
    pub mod dead_letters {
        /// The record's bytes as read from Kafka.
        pub const RAW: &str = "raw";
        /// The topic it was read from.
        pub const TOPIC: &str = "topic";
        /// Its partition.
        pub const KAFKA_PARTITION: &str = "kafka_partition";
        /// Its offset.
        pub const KAFKA_OFFSET: &str = "kafka_offset";
        /// Why it could not become rows.
        pub const REASON: &str = "reason";
        /// When the compactor set it aside.
        pub const DEAD_LETTERED_AT: &str = "dead_lettered_at";
        /// Every column, in the table's field order.
        pub const ALL: [&str; 6] = [
            RAW,
            TOPIC,
            KAFKA_PARTITION,
            KAFKA_OFFSET,
            REASON,
            DEAD_LETTERED_AT,
        ];
    }
}

/// Field tags of the messages the compactor decodes by hand (`record-reader/src/wire.rs`,
/// `decode.rs` and `rows.rs`), as `telemetry/v1/logs.proto` numbers them.
pub mod tags {
    /// `LogBatch`: the Kafka record the gateway writes.
    pub mod log_batch {
        /// `string stream = 1`
        pub const STREAM: u32 = 1;
        /// `Resource resource = 2`
        pub const RESOURCE: u32 = 2;
        /// `repeated LogEvent events = 3`
        pub const EVENTS: u32 = 3;
        /// `fixed64 received_unix_nano = 4`
        pub const RECEIVED_UNIX_NANO: u32 = 4;
        /// `Source source = 5`
        pub const SOURCE: u32 = 5;
    }
    /// `Resource`.
    pub mod resource {
        /// `repeated KeyValue attributes = 1`
        pub const ATTRIBUTES: u32 = 1;
    }
    /// `LogEvent`.
    pub mod log_event {
        /// `bytes event_id = 1`
        pub const EVENT_ID: u32 = 1;
        /// `fixed64 time_unix_nano = 2`
        pub const TIME_UNIX_NANO: u32 = 2;
        /// `fixed64 observed_time_unix_nano = 3`
        pub const OBSERVED_TIME_UNIX_NANO: u32 = 3;
        /// `int32 severity_number = 4`
        pub const SEVERITY_NUMBER: u32 = 4;
        /// `string severity_text = 5`
        pub const SEVERITY_TEXT: u32 = 5;
        /// `AnyValue body = 6`
        pub const BODY: u32 = 6;
        /// `repeated KeyValue attributes = 7`
        pub const ATTRIBUTES: u32 = 7;
        /// `bytes trace_id = 8`
        pub const TRACE_ID: u32 = 8;
        /// `bytes span_id = 9`
        pub const SPAN_ID: u32 = 9;
        /// `fixed32 flags = 10`
        pub const FLAGS: u32 = 10;
        /// `string event_name = 11`
        pub const EVENT_NAME: u32 = 11;
        /// `string scope_name = 12`
        pub const SCOPE_NAME: u32 = 12;
    }
    /// `AnyValue` (a oneof).
    pub mod any_value {
        /// `string string_value = 1`
        pub const STRING: u32 = 1;
        /// `bool bool_value = 2`
        pub const BOOL: u32 = 2;
        /// `int64 int_value = 3`
        pub const INT: u32 = 3;
        /// `double double_value = 4`
        pub const DOUBLE: u32 = 4;
        /// `ArrayValue array_value = 5`
        pub const ARRAY: u32 = 5;
        /// `KeyValueList kvlist_value = 6`
        pub const KVLIST: u32 = 6;
        /// `bytes bytes_value = 7`
        pub const BYTES: u32 = 7;
    }
    /// `ArrayValue` and `KeyValueList`: `repeated … values = 1`.
    pub const VALUES: u32 = 1;
    /// `KeyValue`.
    pub mod key_value {
        /// `string key = 1`
        pub const KEY: u32 = 1;
        /// `AnyValue value = 2`
        pub const VALUE: u32 = 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names() {
        for good in ["default", "app_2", "a", &"x".repeat(MAX_STREAM_NAME)] {
            assert!(is_stream_name(good), "{good}");
        }
        for bad in [
            "",
            "2app",
            "App",
            "_x",
            "a-b",
            "a.b",
            "ä",
            &"x".repeat(MAX_STREAM_NAME + 1),
        ] {
            assert!(!is_stream_name(bad), "{bad}");
        }
        assert!(is_stream_name(DEFAULT_STREAM));
    }

    #[test]
    fn topic_names() {
        for good in ["telemetry.logs", "a", "A-b_c.1", &"t".repeat(249)] {
            assert!(is_topic_name(good), "{good}");
        }
        for bad in ["", ".", "..", "a b", "a/b", &"t".repeat(250)] {
            assert!(!is_topic_name(bad), "{bad}");
        }
    }

    /// The tag of the one field `message` encodes (its first key byte).
    fn tag_of(message: impl prost::Message) -> u32 {
        let bytes = message.encode_to_vec();
        assert!(!bytes.is_empty(), "the message sets a field");
        u32::from(bytes[0] >> 3)
    }

    /// The hand decoder's tags are the generated code's (so the `.proto`'s).
    #[test]
    fn tags_match_the_proto() {
        use crate::v1::{self, any_value::Value};
        let any = |value| v1::AnyValue { value: Some(value) };
        let event = || v1::LogEvent::default();
        let batch = || v1::LogBatch::default();
        let kv = v1::KeyValue {
            key: "k".into(),
            value: None,
        };

        assert_eq!(
            tag_of(v1::LogBatch {
                stream: "s".into(),
                ..batch()
            }),
            tags::log_batch::STREAM
        );
        assert_eq!(
            tag_of(v1::LogBatch {
                resource: Some(v1::Resource::default()),
                ..batch()
            }),
            tags::log_batch::RESOURCE
        );
        assert_eq!(
            tag_of(v1::LogBatch {
                events: vec![event()],
                ..batch()
            }),
            tags::log_batch::EVENTS
        );
        assert_eq!(
            tag_of(v1::LogBatch {
                received_unix_nano: 1,
                ..batch()
            }),
            tags::log_batch::RECEIVED_UNIX_NANO
        );
        assert_eq!(
            tag_of(v1::LogBatch {
                source: v1::Source::Otlp.into(),
                ..batch()
            }),
            tags::log_batch::SOURCE
        );
        assert_eq!(
            tag_of(v1::Resource {
                attributes: vec![kv.clone()]
            }),
            tags::resource::ATTRIBUTES
        );

        use tags::log_event as e;
        assert_eq!(
            tag_of(v1::LogEvent {
                event_id: vec![1].into(),
                ..event()
            }),
            e::EVENT_ID
        );
        assert_eq!(
            tag_of(v1::LogEvent {
                time_unix_nano: 1,
                ..event()
            }),
            e::TIME_UNIX_NANO
        );
        assert_eq!(
            tag_of(v1::LogEvent {
                observed_time_unix_nano: 1,
                ..event()
            }),
            e::OBSERVED_TIME_UNIX_NANO
        );
        assert_eq!(
            tag_of(v1::LogEvent {
                severity_number: 1,
                ..event()
            }),
            e::SEVERITY_NUMBER
        );
        assert_eq!(
            tag_of(v1::LogEvent {
                severity_text: "x".into(),
                ..event()
            }),
            e::SEVERITY_TEXT
        );
        assert_eq!(
            tag_of(v1::LogEvent {
                body: Some(any(Value::BoolValue(true))),
                ..event()
            }),
            e::BODY
        );
        assert_eq!(
            tag_of(v1::LogEvent {
                attributes: vec![kv.clone()],
                ..event()
            }),
            e::ATTRIBUTES
        );
        assert_eq!(
            tag_of(v1::LogEvent {
                trace_id: vec![1].into(),
                ..event()
            }),
            e::TRACE_ID
        );
        assert_eq!(
            tag_of(v1::LogEvent {
                span_id: vec![1].into(),
                ..event()
            }),
            e::SPAN_ID
        );
        assert_eq!(
            tag_of(v1::LogEvent {
                flags: 1,
                ..event()
            }),
            e::FLAGS
        );
        assert_eq!(
            tag_of(v1::LogEvent {
                event_name: "n".into(),
                ..event()
            }),
            e::EVENT_NAME
        );
        assert_eq!(
            tag_of(v1::LogEvent {
                scope_name: "s".into(),
                ..event()
            }),
            e::SCOPE_NAME
        );

        use tags::any_value as a;
        assert_eq!(tag_of(any(Value::StringValue("s".into()))), a::STRING);
        assert_eq!(tag_of(any(Value::BoolValue(true))), a::BOOL);
        assert_eq!(tag_of(any(Value::IntValue(1))), a::INT);
        assert_eq!(tag_of(any(Value::DoubleValue(1.0))), a::DOUBLE);
        assert_eq!(
            tag_of(any(Value::ArrayValue(v1::ArrayValue::default()))),
            a::ARRAY
        );
        assert_eq!(
            tag_of(any(Value::KvlistValue(v1::KeyValueList::default()))),
            a::KVLIST
        );
        assert_eq!(tag_of(any(Value::BytesValue(vec![1].into()))), a::BYTES);
        assert_eq!(
            tag_of(v1::ArrayValue {
                values: vec![any(Value::IntValue(1))]
            }),
            tags::VALUES
        );
        assert_eq!(
            tag_of(v1::KeyValueList {
                values: vec![kv.clone()]
            }),
            tags::VALUES
        );
        assert_eq!(tag_of(kv), tags::key_value::KEY);
        assert_eq!(
            tag_of(v1::KeyValue {
                key: String::new(),
                value: Some(any(Value::IntValue(1)))
            }),
            tags::key_value::VALUE
        );
    }
}
