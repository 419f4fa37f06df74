//! Synthetic log events shaped like real ones: UUIDv7 ids, realistic
//! severity mix, services, trace context and attributes, ~300 bytes encoded.

use std::time::{SystemTime, UNIX_EPOCH};

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
