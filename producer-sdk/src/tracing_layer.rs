//! A `tracing-subscriber` [`Layer`] that sends every event to a [`Client`]:
//! the `message` becomes the body, other fields become attributes (typed:
//! integers stay integers), the target becomes the instrumentation scope,
//! and fields of the enclosing spans are added unless the event has its own.

use std::borrow::Cow;
use std::fmt::Write as _;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use crate::client::Client;
use crate::event::{Event, Severity, Value};

/// Crates whose events are never sent: the SDK's own diagnostics and the
/// transport it sends with. Sending them would feed the SDK's work back into
/// its own queue, an endless loop under load.
pub const EXCLUDED_TARGETS: &[&str] = &[
    "tlake_producer_sdk",
    "tonic",
    "h2",
    "hyper",
    "hyper_util",
    "tower",
    "tower_http",
    "rustls",
    "tokio_rustls",
];

/// Whether events of `target` are kept away from the SDK (see [`EXCLUDED_TARGETS`]).
pub fn is_excluded(target: &str) -> bool {
    EXCLUDED_TARGETS.iter().any(|prefix| {
        target
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    })
}

/// Sends `tracing` events to telemetry-lake. Filter it like any layer
/// (`.with_filter(LevelFilter::INFO)`); it drops nothing on its own except
/// the SDK's and its transport's events.
#[derive(Debug, Clone)]
pub struct TracingLayer {
    client: Client,
    span_fields: bool,
    source_location: bool,
}

impl TracingLayer {
    /// A layer sending through `client`, with span fields and without
    /// source locations.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            span_fields: true,
            source_location: false,
        }
    }

    /// Whether fields of enclosing spans become attributes (default true).
    #[must_use]
    pub fn with_span_fields(mut self, on: bool) -> Self {
        self.span_fields = on;
        self
    }

    /// Whether to add `code.file.path` and `code.line.number` (default false).
    #[must_use]
    pub fn with_source_location(mut self, on: bool) -> Self {
        self.source_location = on;
        self
    }
}

/// Fields recorded on a span, kept in its extensions.
#[derive(Debug, Default)]
struct SpanFields(Vec<(Cow<'static, str>, Value)>);

/// Collects fields: `message` into the body, the rest into attributes.
#[derive(Debug, Default)]
struct Fields {
    message: Option<Value>,
    attrs: Vec<(Cow<'static, str>, Value)>,
    take_message: bool,
}

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        if self.take_message && field.name() == "message" {
            self.message = Some(value);
        } else {
            self.attrs.push((Cow::Borrowed(field.name()), value));
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::Str(Cow::Owned(value.to_owned())));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::Int(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::Double(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }

    fn record_bytes(&mut self, field: &Field, value: &[u8]) {
        self.put(field, Value::Bytes(value.to_vec()));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::Str(Cow::Owned(value.to_string())));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        // `format_args!` messages arrive here; a plain literal is printed
        // as-is by `Debug` of `Arguments`.
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        self.put(field, Value::Str(Cow::Owned(text)));
    }
}

fn severity(level: &Level) -> Severity {
    match *level {
        Level::TRACE => Severity::Trace,
        Level::DEBUG => Severity::Debug,
        Level::INFO => Severity::Info,
        Level::WARN => Severity::Warn,
        Level::ERROR => Severity::Error,
    }
}

impl<S> Layer<S> for TracingLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if !self.span_fields || is_excluded(attrs.metadata().target()) {
            return;
        }
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(fields.attrs));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if !self.span_fields {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Fields::default();
        values.record(&mut fields);
        let mut extensions = span.extensions_mut();
        if let Some(existing) = extensions.get_mut::<SpanFields>() {
            for (key, value) in fields.attrs {
                match existing.0.iter_mut().find(|(k, _)| *k == key) {
                    Some(slot) => slot.1 = value,
                    None => existing.0.push((key, value)),
                }
            }
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        if is_excluded(meta.target()) {
            return;
        }
        let mut fields = Fields {
            take_message: true,
            attrs: Vec::with_capacity(meta.fields().len()),
            ..Fields::default()
        };
        event.record(&mut fields);
        let body = fields.message.unwrap_or(Value::Str(Cow::Borrowed("")));
        let mut out = Event::new(severity(meta.level()), body).scope(meta.target());
        out.attributes = fields.attrs;
        if self.source_location {
            if let Some(file) = meta.file() {
                out.push_attr(Cow::Borrowed("code.file.path"), Value::from(file));
            }
            if let Some(line) = meta.line() {
                out.push_attr(Cow::Borrowed("code.line.number"), Value::from(line));
            }
        }
        if self.span_fields
            && let Some(scope) = ctx.event_scope(event)
        {
            // Innermost span first, so the nearest value of a key wins.
            for span in scope {
                let extensions = span.extensions();
                let Some(fields) = extensions.get::<SpanFields>() else {
                    continue;
                };
                for (key, value) in &fields.0 {
                    if !out.attributes.iter().any(|(k, _)| k == key) {
                        out.push_attr(key.clone(), value.clone());
                    }
                }
            }
        }
        // Refusals are counted by the client (`Stats::dropped`); a logging
        // call has nowhere to report them.
        let _ = self.client.log(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusions_match_whole_crate_names() {
        assert!(is_excluded("tlake_producer_sdk"));
        assert!(is_excluded("tlake_producer_sdk::send"));
        assert!(is_excluded("h2::proto::streams"));
        assert!(is_excluded("hyper_util::client"));
        assert!(!is_excluded("h2o_app"));
        assert!(!is_excluded("my_app::tonic_handlers"));
        assert!(!is_excluded("towering"));
    }

    #[test]
    fn levels_map_to_otel_severities() {
        assert_eq!(severity(&Level::TRACE).number(), 1);
        assert_eq!(severity(&Level::DEBUG).number(), 5);
        assert_eq!(severity(&Level::INFO).number(), 9);
        assert_eq!(severity(&Level::WARN).number(), 13);
        assert_eq!(severity(&Level::ERROR).number(), 17);
    }
}
