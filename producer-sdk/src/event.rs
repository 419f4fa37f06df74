//! Events as an application builds them. The id and the time are fixed when
//! the event is created, so every retry of it carries the same idempotency
//! key. Nothing here touches the wire format: conversion to protobuf happens
//! on the background task (see `encode`), off the caller's thread.

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

/// OpenTelemetry severity of an event (the `SeverityNumber` of the first
/// level in each range; `text()` gives the matching `SeverityText`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// TRACE (1).
    Trace,
    /// DEBUG (5).
    Debug,
    /// INFO (9).
    Info,
    /// WARN (13).
    Warn,
    /// ERROR (17).
    Error,
    /// FATAL (21).
    Fatal,
}

impl Severity {
    /// The OpenTelemetry `SeverityNumber`.
    pub fn number(self) -> i32 {
        match self {
            Self::Trace => 1,
            Self::Debug => 5,
            Self::Info => 9,
            Self::Warn => 13,
            Self::Error => 17,
            Self::Fatal => 21,
        }
    }

    /// The OpenTelemetry `SeverityText`.
    pub fn text(self) -> &'static str {
        match self {
            Self::Trace => "TRACE",
            Self::Debug => "DEBUG",
            Self::Info => "INFO",
            Self::Warn => "WARN",
            Self::Error => "ERROR",
            Self::Fatal => "FATAL",
        }
    }
}

/// An attribute value or an event body.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Text. Static strings are kept borrowed, so field names and literal
    /// messages cost no allocation on the caller's thread.
    Str(Cow<'static, str>),
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// A floating-point number.
    Double(f64),
    /// Raw bytes.
    Bytes(Vec<u8>),
}

impl From<&'static str> for Value {
    fn from(v: &'static str) -> Self {
        Self::Str(Cow::Borrowed(v))
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Self::Str(Cow::Owned(v))
    }
}

impl From<Cow<'static, str>> for Value {
    fn from(v: Cow<'static, str>) -> Self {
        Self::Str(v)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Self::Bool(v)
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}

impl From<i32> for Value {
    fn from(v: i32) -> Self {
        Self::Int(v.into())
    }
}

impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Self::Int(v.into())
    }
}

impl From<u64> for Value {
    /// Values above `i64::MAX` become text: OpenTelemetry has no unsigned
    /// integer, and a wrapped negative number would be a lie.
    fn from(v: u64) -> Self {
        i64::try_from(v).map_or_else(|_| Self::Str(Cow::Owned(v.to_string())), Self::Int)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Self::Double(v)
    }
}

impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Self::Bytes(v)
    }
}

impl Value {
    /// Rough encoded size, for queue accounting (exact sizes are computed
    /// when the batch is encoded).
    fn approx_size(&self) -> usize {
        match self {
            Self::Str(s) => s.len() + 4,
            Self::Bytes(b) => b.len() + 4,
            Self::Bool(_) => 3,
            Self::Int(_) | Self::Double(_) => 11,
        }
    }
}

/// W3C trace context of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TraceContext {
    pub(crate) trace_id: [u8; 16],
    pub(crate) span_id: [u8; 8],
    pub(crate) flags: u32,
}

/// One log event, following the OpenTelemetry log data model.
///
/// Created with [`Event::new`], which assigns a UUIDv7 id and the current
/// time; both stay the same however often the SDK has to resend it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub(crate) id: [u8; 16],
    pub(crate) time_unix_nano: u64,
    pub(crate) observed_unix_nano: u64,
    pub(crate) severity: Severity,
    pub(crate) body: Value,
    pub(crate) attributes: Vec<(Cow<'static, str>, Value)>,
    pub(crate) trace: Option<TraceContext>,
    pub(crate) name: Cow<'static, str>,
    pub(crate) scope: Cow<'static, str>,
}

impl Event {
    /// A new event with a fresh UUIDv7 id, stamped with the current time.
    pub fn new(severity: Severity, body: impl Into<Value>) -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let nanos = u64::try_from(now.as_nanos()).unwrap_or(u64::MAX);
        Self {
            id: new_id(nanos / 1_000_000),
            time_unix_nano: nanos,
            observed_unix_nano: nanos,
            severity,
            body: body.into(),
            attributes: Vec::new(),
            trace: None,
            name: Cow::Borrowed(""),
            scope: Cow::Borrowed(""),
        }
    }

    /// Adds an attribute. Keys should follow OpenTelemetry semantic
    /// conventions where one applies (`http.route`, `user.id`, ...).
    #[must_use]
    pub fn attr(mut self, key: impl Into<Cow<'static, str>>, value: impl Into<Value>) -> Self {
        self.attributes.push((key.into(), value.into()));
        self
    }

    /// Sets when the event happened (default: when it was created). The
    /// observed time stays the creation time.
    #[must_use]
    pub fn at(mut self, time: SystemTime) -> Self {
        self.time_unix_nano = time
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        self
    }

    /// Links the event to a trace: W3C trace id, span id and trace flags
    /// (bit 0 = sampled).
    #[must_use]
    pub fn trace(mut self, trace_id: [u8; 16], span_id: [u8; 8], flags: u32) -> Self {
        self.trace = Some(TraceContext {
            trace_id,
            span_id,
            flags,
        });
        self
    }

    /// Sets the event name (OpenTelemetry `EventName`), for events that
    /// have a fixed shape.
    #[must_use]
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.name = name.into();
        self
    }

    /// Sets the instrumentation scope (module or component that emitted it).
    #[must_use]
    pub fn scope(mut self, scope: impl Into<Cow<'static, str>>) -> Self {
        self.scope = scope.into();
        self
    }

    /// The event id: a UUIDv7, the idempotency key downstream.
    pub fn id(&self) -> uuid::Uuid {
        uuid::Uuid::from_bytes(self.id)
    }

    /// The event's severity.
    pub fn severity(&self) -> Severity {
        self.severity
    }

    /// When the event happened, in ns since the Unix epoch.
    pub fn time_unix_nano(&self) -> u64 {
        self.time_unix_nano
    }

    /// The attributes added so far.
    pub fn attributes(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.attributes.iter().map(|(k, v)| (k.as_ref(), v))
    }

    /// The body.
    pub fn body(&self) -> &Value {
        &self.body
    }

    pub(crate) fn push_attr(&mut self, key: Cow<'static, str>, value: Value) {
        self.attributes.push((key, value));
    }

    /// Rough encoded size, used to bound the queue by bytes.
    pub(crate) fn approx_size(&self) -> usize {
        let attrs: usize = self
            .attributes
            .iter()
            .map(|(k, v)| k.len() + v.approx_size() + 6)
            .sum();
        64 + self.body.approx_size() + attrs + self.name.len() + self.scope.len()
    }
}

/// A UUIDv7 for the given Unix time in ms: 48 bits of time, then random
/// bits from a thread-local generator. No shared state and no system call,
/// which keeps event creation cheap on the caller's thread; 74 random bits
/// per millisecond make collisions practically impossible.
fn new_id(unix_ms: u64) -> [u8; 16] {
    let random = fastrand::u128(..).to_le_bytes();
    let mut tail = [0u8; 10];
    tail.copy_from_slice(&random[..10]);
    *uuid::Builder::from_unix_timestamp_millis(unix_ms, &tail)
        .into_uuid()
        .as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_v7_unique_and_time_ordered() {
        let a = Event::new(Severity::Info, "a");
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = Event::new(Severity::Info, "b");
        assert_eq!(a.id().get_version_num(), 7);
        assert_eq!(a.id().get_variant(), uuid::Variant::RFC4122);
        assert_ne!(a.id(), b.id());
        assert!(a.id() < b.id(), "v7 ids sort by creation time");
        let (secs, _) = a.id().get_timestamp().expect("v7 has a time").to_unix();
        assert_eq!(secs, a.time_unix_nano() / 1_000_000_000);
    }

    #[test]
    fn many_ids_are_distinct() {
        let ids: std::collections::HashSet<_> = (0..100_000)
            .map(|_| Event::new(Severity::Info, "x").id())
            .collect();
        assert_eq!(ids.len(), 100_000);
    }

    #[test]
    fn a_clone_keeps_its_id() {
        let e = Event::new(Severity::Warn, "x").attr("k", 1i64);
        assert_eq!(e.clone().id(), e.id());
    }

    #[test]
    fn large_unsigned_values_become_text() {
        assert_eq!(Value::from(5u64), Value::Int(5));
        assert_eq!(
            Value::from(u64::MAX),
            Value::Str(u64::MAX.to_string().into())
        );
    }

    #[test]
    fn builder_methods_set_fields() {
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let e = Event::new(Severity::Error, String::from("boom"))
            .attr("user.id", "u-1")
            .at(t)
            .trace([1; 16], [2; 8], 1)
            .name("order.failed")
            .scope("shop::orders");
        assert_eq!(e.time_unix_nano(), 1_700_000_000_000_000_000);
        assert!(e.observed_unix_nano > e.time_unix_nano);
        assert_eq!(e.severity().number(), 17);
        assert_eq!(e.attributes().count(), 1);
        assert_eq!(e.body(), &Value::from("boom".to_owned()));
        assert!(e.approx_size() > 64);
    }
}
