//! Validation and routing: the rules a request must meet before anything is
//! produced to Kafka. Pure functions, no I/O.

use std::collections::BTreeMap;

use prost::Message;
use tlake_proto::contract::{DEFAULT_STREAM, stream_name};
use tlake_proto::v1::{LogEvent, Resource};

use crate::config::Limits;
use crate::error::GatewayError;
use crate::scan;

/// Highest OpenTelemetry severity number (FATAL4).
pub const MAX_SEVERITY: i32 = 24;

/// Resolves a request's stream to its Kafka topic.
pub fn route<'a>(
    streams: &'a BTreeMap<String, String>,
    stream: &str,
) -> Result<(&'a str, &'a str), GatewayError> {
    let stream = if stream.is_empty() {
        DEFAULT_STREAM
    } else {
        stream
    };
    if let Err(reason) = stream_name(stream) {
        return Err(GatewayError::InvalidArgument(format!(
            "stream {stream:?} is not a valid stream name: {reason}"
        )));
    }
    streams
        .get_key_value(stream)
        .map(|(s, t)| (s.as_str(), t.as_str()))
        .ok_or_else(|| GatewayError::UnknownStream {
            stream: stream.to_owned(),
            known: streams.keys().cloned().collect::<Vec<_>>().join(", "),
        })
}

/// Checks a whole request — its events in groups by resource, as SendLogs
/// (one group) and OTLP (one per resource) bring them — against the limits
/// and field rules. Returns (events, their total encoded size).
pub fn request(
    groups: &[(Option<Resource>, Vec<LogEvent>)],
    limits: &Limits,
) -> Result<(usize, usize), GatewayError> {
    let count: usize = groups.iter().map(|(_, events)| events.len()).sum();
    count_within(count, limits)?;
    let mut bytes = 0;
    for (_, events) in groups {
        bytes += self::events(events, limits)?;
    }
    Ok((count, bytes))
}

/// [`request`] for a request read in place ([`scan`]): the same rules, on
/// the same values; an event's size is its size as sent.
pub fn scanned(
    request: &scan::Request<'_>,
    limits: &Limits,
) -> Result<(usize, usize), GatewayError> {
    count_within(request.events.len(), limits)?;
    let mut total = 0;
    for (i, event) in request.events.iter().enumerate() {
        total += check(i, &Shape::scanned(event), limits)?;
    }
    Ok((request.events.len(), total))
}

/// Checks the events of one request against the field rules and limits.
/// Returns the total encoded size of the events.
pub fn events(events: &[LogEvent], limits: &Limits) -> Result<usize, GatewayError> {
    count_within(events.len(), limits)?;
    let mut total = 0;
    for (i, event) in events.iter().enumerate() {
        total += check(i, &Shape::decoded(event), limits)?;
    }
    Ok(total)
}

fn count_within(count: usize, limits: &Limits) -> Result<(), GatewayError> {
    if count > limits.max_events_per_request {
        return Err(GatewayError::TooLarge(format!(
            "request has {count} events; the limit is {} per request — split the batch",
            limits.max_events_per_request
        )));
    }
    Ok(())
}

/// What the rules look at in one event, decoded or read in place.
struct Shape {
    event_id_len: usize,
    trace_id_len: usize,
    span_id_len: usize,
    severity_number: i32,
    size: usize,
}

impl Shape {
    fn decoded(event: &LogEvent) -> Self {
        Self {
            event_id_len: event.event_id.len(),
            trace_id_len: event.trace_id.len(),
            span_id_len: event.span_id.len(),
            severity_number: event.severity_number,
            size: event.encoded_len(),
        }
    }

    fn scanned(event: &scan::Event<'_>) -> Self {
        Self {
            event_id_len: event.event_id.len(),
            trace_id_len: event.trace_id_len,
            span_id_len: event.span_id_len,
            severity_number: event.severity_number,
            size: event.bytes.len(),
        }
    }
}

fn check(i: usize, event: &Shape, limits: &Limits) -> Result<usize, GatewayError> {
    let invalid = |field: &str, rule: String| {
        Err(GatewayError::InvalidArgument(format!(
            "events[{i}].{field}: {rule}"
        )))
    };
    if event.event_id_len != 16 {
        return invalid(
            "event_id",
            format!("must be 16 bytes (a UUID), got {}", event.event_id_len),
        );
    }
    if event.trace_id_len != 0 && event.trace_id_len != 16 {
        return invalid(
            "trace_id",
            format!("must be empty or 16 bytes, got {}", event.trace_id_len),
        );
    }
    if event.span_id_len != 0 && event.span_id_len != 8 {
        return invalid(
            "span_id",
            format!("must be empty or 8 bytes, got {}", event.span_id_len),
        );
    }
    if !(0..=MAX_SEVERITY).contains(&event.severity_number) {
        return invalid(
            "severity_number",
            format!("must be 0..={MAX_SEVERITY}, got {}", event.severity_number),
        );
    }
    if event.size > limits.max_event_bytes {
        return Err(GatewayError::TooLarge(format!(
            "events[{i}] is {} bytes encoded; the limit is {} per event",
            event.size, limits.max_event_bytes
        )));
    }
    Ok(event.size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn ok_event() -> LogEvent {
        LogEvent {
            event_id: vec![7u8; 16].into(),
            time_unix_nano: 1,
            ..LogEvent::default()
        }
    }

    #[test]
    fn stream_names() {
        for good in ["default", "app", "a1_b2", &"a".repeat(63)] {
            assert!(stream_name(good).is_ok(), "{good}");
        }
        for bad in ["", "App", "1app", "_x", "a-b", "a.b", "ä", &"a".repeat(64)] {
            assert!(stream_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn routing() {
        let streams = BTreeMap::from([
            ("default".to_owned(), "telemetry-logs".to_owned()),
            ("audit".to_owned(), "audit-logs".to_owned()),
        ]);
        assert_eq!(
            route(&streams, "").ok(),
            Some(("default", "telemetry-logs"))
        );
        assert_eq!(route(&streams, "audit").ok(), Some(("audit", "audit-logs")));
        let unknown = route(&streams, "nope").expect_err("unknown");
        assert_eq!(unknown.code(), Code::InvalidArgument);
        assert!(unknown.to_string().contains("audit, default"), "{unknown}");
        assert_eq!(
            route(&streams, "Bad Name").expect_err("invalid").code(),
            Code::InvalidArgument
        );
    }

    #[test]
    fn event_rules() {
        let limits = Limits::default();
        assert!(events(&[ok_event()], &limits).is_ok());
        type Mutation = fn(&mut LogEvent);
        let cases: [(Mutation, &str); 5] = [
            (|e| e.event_id = vec![1; 15].into(), "events[0].event_id"),
            (|e| e.event_id = Default::default(), "events[0].event_id"),
            (|e| e.trace_id = vec![1; 8].into(), "events[0].trace_id"),
            (|e| e.span_id = vec![1; 16].into(), "events[0].span_id"),
            (|e| e.severity_number = 25, "events[0].severity_number"),
        ];
        for (mutate, field) in cases {
            let mut e = ok_event();
            mutate(&mut e);
            let err = events(&[e], &limits).expect_err(field);
            assert_eq!(err.code(), Code::InvalidArgument);
            assert!(err.to_string().starts_with(field), "{err}");
        }
    }

    #[test]
    fn limits_are_out_of_range() {
        let limits = Limits {
            max_events_per_request: 2,
            max_event_bytes: 100,
            ..Limits::default()
        };
        let three = vec![ok_event(), ok_event(), ok_event()];
        assert_eq!(
            events(&three, &limits).expect_err("count").code(),
            Code::OutOfRange
        );
        let mut big = ok_event();
        big.severity_text = "x".repeat(200);
        assert_eq!(
            events(&[big], &limits).expect_err("size").code(),
            Code::OutOfRange
        );
    }
}
