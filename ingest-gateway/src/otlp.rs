//! Decoding OTLP: maps an `ExportLogsServiceRequest` onto telemetry.v1
//! events without loss (the event model is OpenTelemetry's), one group per
//! resource.
//!
//! OTLP records carry no event id. A record's `log.record.uid` attribute is
//! used when it holds a UUID; otherwise the id is a 128-bit hash of the
//! record, its resource and scope, and its position in the request. A client
//! that retries an Export sends the same bytes, so the retry gets the same ids
//! and the compactor drops the copies; two equal records in one request keep
//! distinct ids because their positions differ.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1 as otlp;
use prost::Message;
use tlake_proto::v1::{
    AnyValue, ArrayValue, KeyValue, KeyValueList, LogEvent, Resource, any_value,
};
use xxhash_rust::xxh3::Xxh3;

/// OpenTelemetry semantic-convention attribute holding a record's unique id.
pub const RECORD_UID_ATTRIBUTE: &str = "log.record.uid";

/// The events of one OTLP `ResourceLogs`.
#[derive(Debug)]
pub struct ResourceGroup {
    /// The resource shared by the events.
    pub resource: Option<Resource>,
    /// The events, in request order.
    pub events: Vec<LogEvent>,
}

/// Converts a whole Export request.
pub fn decode(request: ExportLogsServiceRequest) -> Vec<ResourceGroup> {
    let mut groups = Vec::with_capacity(request.resource_logs.len());
    for (r, resource_logs) in request.resource_logs.into_iter().enumerate() {
        let resource_bytes = resource_logs
            .resource
            .as_ref()
            .map(Message::encode_to_vec)
            .unwrap_or_default();
        let resource = resource_logs.resource.map(|res| Resource {
            attributes: res.attributes.into_iter().map(key_value).collect(),
        });
        let mut events = Vec::new();
        for (s, scope_logs) in resource_logs.scope_logs.into_iter().enumerate() {
            let scope_name = scope_logs.scope.map(|s| s.name).unwrap_or_default();
            for (l, record) in scope_logs.log_records.into_iter().enumerate() {
                let event_id = record_uid(&record.attributes).unwrap_or_else(|| {
                    let mut hasher = Xxh3::new();
                    hasher.update(&resource_bytes);
                    hasher.update(scope_name.as_bytes());
                    hasher.update(&record.encode_to_vec());
                    for position in [r, s, l] {
                        hasher.update(&(position as u64).to_le_bytes());
                    }
                    uuid::Builder::from_custom_bytes(hasher.digest128().to_le_bytes())
                        .into_uuid()
                        .into_bytes()
                });
                events.push(LogEvent {
                    event_id: event_id.to_vec().into(),
                    time_unix_nano: record.time_unix_nano,
                    observed_time_unix_nano: record.observed_time_unix_nano,
                    severity_number: record.severity_number,
                    severity_text: record.severity_text,
                    body: record.body.map(any_value),
                    attributes: record.attributes.into_iter().map(key_value).collect(),
                    trace_id: record.trace_id.into(),
                    span_id: record.span_id.into(),
                    flags: record.flags,
                    event_name: record.event_name,
                    scope_name: scope_name.clone(),
                });
            }
        }
        groups.push(ResourceGroup { resource, events });
    }
    groups
}

fn record_uid(attributes: &[otlp::KeyValue]) -> Option<[u8; 16]> {
    let value = attributes
        .iter()
        .find(|kv| kv.key == RECORD_UID_ATTRIBUTE)?;
    match value.value.as_ref()?.value.as_ref()? {
        otlp::any_value::Value::StringValue(s) => {
            uuid::Uuid::parse_str(s).ok().map(|u| u.into_bytes())
        }
        otlp::any_value::Value::BytesValue(b) => b.as_slice().try_into().ok(),
        _ => None,
    }
}

fn key_value(kv: otlp::KeyValue) -> KeyValue {
    KeyValue {
        key: kv.key,
        value: kv.value.map(any_value),
    }
}

fn any_value(v: otlp::AnyValue) -> AnyValue {
    use otlp::any_value::Value as O;
    let value = v.value.map(|value| match value {
        O::StringValue(s) => any_value::Value::StringValue(s),
        O::BoolValue(b) => any_value::Value::BoolValue(b),
        O::IntValue(i) => any_value::Value::IntValue(i),
        O::DoubleValue(d) => any_value::Value::DoubleValue(d),
        O::BytesValue(b) => any_value::Value::BytesValue(b.into()),
        O::ArrayValue(a) => any_value::Value::ArrayValue(ArrayValue {
            values: a.values.into_iter().map(any_value).collect(),
        }),
        O::KvlistValue(kvs) => any_value::Value::KvlistValue(KeyValueList {
            values: kvs.values.into_iter().map(key_value).collect(),
        }),
        // The OTLP schema can grow; a value kind we do not know yet is kept
        // as its text form rather than dropped.
        #[allow(unreachable_patterns)]
        other => any_value::Value::StringValue(format!("{other:?}")),
    });
    AnyValue { value }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::resource::v1::Resource as OtlpResource;

    fn string(s: &str) -> Option<otlp::AnyValue> {
        Some(otlp::AnyValue {
            value: Some(otlp::any_value::Value::StringValue(s.into())),
        })
    }

    fn request(records: Vec<LogRecord>) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(OtlpResource {
                    attributes: vec![otlp::KeyValue {
                        key: "service.name".into(),
                        value: string("checkout"),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope {
                        name: "app::db".into(),
                        ..Default::default()
                    }),
                    log_records: records,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn record(body: &str) -> LogRecord {
        LogRecord {
            time_unix_nano: 1_700_000_000_000_000_000,
            severity_number: 9,
            severity_text: "INFO".into(),
            body: string(body),
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            attributes: vec![otlp::KeyValue {
                key: "nested".into(),
                value: Some(otlp::AnyValue {
                    value: Some(otlp::any_value::Value::KvlistValue(otlp::KeyValueList {
                        values: vec![otlp::KeyValue {
                            key: "n".into(),
                            value: Some(otlp::AnyValue {
                                value: Some(otlp::any_value::Value::IntValue(3)),
                            }),
                            ..Default::default()
                        }],
                    })),
                }),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn fields_map_without_loss() {
        let groups = decode(request(vec![record("hello")]));
        assert_eq!(groups.len(), 1);
        let resource = groups[0].resource.as_ref().expect("resource");
        assert_eq!(resource.attributes[0].key, "service.name");
        let e = &groups[0].events[0];
        assert_eq!(e.event_id.len(), 16);
        assert_eq!(e.time_unix_nano, 1_700_000_000_000_000_000);
        assert_eq!(e.severity_number, 9);
        assert_eq!(e.severity_text, "INFO");
        assert_eq!(e.scope_name, "app::db");
        assert_eq!(e.trace_id.as_ref(), [1; 16]);
        assert_eq!(e.span_id.as_ref(), [2; 8]);
        assert_eq!(
            e.body.as_ref().and_then(|b| b.value.clone()),
            Some(any_value::Value::StringValue("hello".into()))
        );
        let Some(any_value::Value::KvlistValue(kvs)) =
            e.attributes[0].value.as_ref().and_then(|v| v.value.clone())
        else {
            panic!("nested attribute lost: {:?}", e.attributes);
        };
        assert_eq!(kvs.values[0].key, "n");
    }

    #[test]
    fn ids_are_stable_across_retries_and_distinct_within_a_request() {
        let first = decode(request(vec![record("same"), record("same")]));
        let retry = decode(request(vec![record("same"), record("same")]));
        let ids = |g: &[ResourceGroup]| -> Vec<_> {
            g[0].events.iter().map(|e| e.event_id.clone()).collect()
        };
        assert_eq!(ids(&first), ids(&retry));
        assert_ne!(ids(&first)[0], ids(&first)[1]);
    }

    #[test]
    fn record_uid_attribute_is_the_id() {
        let mut r = record("x");
        r.attributes.push(otlp::KeyValue {
            key: RECORD_UID_ATTRIBUTE.into(),
            value: string("0190a0b2-1c3d-7e4f-8a9b-0c1d2e3f4a5b"),
            ..Default::default()
        });
        let groups = decode(request(vec![r]));
        assert_eq!(
            uuid::Uuid::from_slice(&groups[0].events[0].event_id)
                .expect("uuid")
                .to_string(),
            "0190a0b2-1c3d-7e4f-8a9b-0c1d2e3f4a5b"
        );
    }
}
