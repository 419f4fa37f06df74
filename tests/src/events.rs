//! Synthetic log events shaped like real ones: UUIDv7 ids, realistic
//! severity mix, services, trace context and attributes, ~300 bytes encoded.

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1 as otlp_common;
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource as OtlpResource;
use tlake_proto::v1::{AnyValue, KeyValue, LogEvent, Resource, any_value};

const SERVICES: [&str; 4] = ["checkout", "payments", "search", "inventory"];
const MESSAGES: [&str; 4] = [
    "request completed method=GET path=/api/v1/orders status=200",
    "cache miss for key user:profile, falling back to database",
    "retrying upstream call after connection reset by peer",
    "slow query detected on table orders: full scan of partition",
];

/// A string attribute or body value.
pub fn text(s: impl Into<String>) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(s.into())),
    })
}

/// A key/value attribute with a string value.
pub fn attr(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: text(value),
    }
}

/// A resource naming a service.
pub fn resource(service: &str) -> Resource {
    Resource {
        attributes: vec![
            attr("service.name", service),
            attr("host.name", "test-host-1"),
        ],
    }
}

/// Deterministic generator of synthetic events.
#[derive(Debug, Default)]
pub struct EventGen {
    n: u64,
}

impl EventGen {
    /// A new generator.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next event (about 300 bytes encoded).
    pub fn next_event(&mut self) -> LogEvent {
        let n = self.n;
        self.n += 1;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos() as u64;
        let i = n as usize;
        LogEvent {
            event_id: uuid::Uuid::now_v7().as_bytes().to_vec().into(),
            time_unix_nano: now,
            observed_time_unix_nano: now,
            severity_number: [9, 9, 9, 13, 17][i % 5],
            severity_text: ["INFO", "INFO", "INFO", "WARN", "ERROR"][i % 5].to_owned(),
            body: text(format!("{} seq={n}", MESSAGES[i % MESSAGES.len()])),
            attributes: vec![
                attr("http.route", "/api/v1/orders/{id}"),
                attr("user.id", format!("u-{:06}", n % 100_000)),
                attr("service.component", SERVICES[i % SERVICES.len()]),
            ],
            trace_id: uuid::Uuid::new_v4().as_bytes().to_vec().into(),
            span_id: n.to_be_bytes().to_vec().into(),
            flags: 1,
            event_name: String::new(),
            scope_name: "tlake::tests".to_owned(),
        }
    }

    /// `count` next events.
    pub fn batch(&mut self, count: usize) -> Vec<LogEvent> {
        (0..count).map(|_| self.next_event()).collect()
    }
}

fn otlp_string(s: &str) -> Option<otlp_common::AnyValue> {
    Some(otlp_common::AnyValue {
        value: Some(otlp_common::any_value::Value::StringValue(s.into())),
    })
}

/// An OTLP Export request: `per_service` INFO records for each service, as
/// resources with `service.name` (timestamps and an `i` attribute vary).
pub fn otlp_request(services: &[&str], per_service: usize) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: services
            .iter()
            .map(|service| ResourceLogs {
                resource: Some(OtlpResource {
                    attributes: vec![otlp_common::KeyValue {
                        key: "service.name".into(),
                        value: otlp_string(service),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    log_records: (0..per_service)
                        .map(|i| LogRecord {
                            time_unix_nano: 1_764_000_000_000_000_000 + i as u64,
                            severity_number: 9,
                            severity_text: "INFO".into(),
                            body: otlp_string(&format!("{service} record {i}")),
                            attributes: vec![otlp_common::KeyValue {
                                key: "i".into(),
                                value: Some(otlp_common::AnyValue {
                                    value: Some(otlp_common::any_value::Value::IntValue(i as i64)),
                                }),
                                ..Default::default()
                            }],
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}
