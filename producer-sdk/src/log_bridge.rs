//! A [`log`] backend: `log::info!(user_id = 7; "signed in")` reaches the
//! lake with the message as body, key-values as typed attributes and the
//! target as the instrumentation scope.

use std::borrow::Cow;

use log::kv::{self, VisitSource, VisitValue};

use crate::client::Client;
use crate::error::Error;
use crate::event::{Event, Severity, Value};
use crate::tracing_layer::is_excluded;

/// Sends `log` records to telemetry-lake.
#[derive(Debug)]
pub struct LogBridge {
    client: Client,
    level: log::LevelFilter,
}

impl LogBridge {
    /// A bridge sending records at `level` and above through `client`.
    pub fn new(client: Client, level: log::LevelFilter) -> Self {
        Self { client, level }
    }

    /// Installs the bridge as the process's `log` backend and sets the
    /// global maximum level. Fails if another backend is installed.
    pub fn install(client: Client, level: log::LevelFilter) -> Result<(), Error> {
        log::set_boxed_logger(Box::new(Self::new(client, level))).map_err(|e| Error::Config {
            key: "log",
            reason: e.to_string(),
        })?;
        log::set_max_level(level);
        Ok(())
    }

    /// Converts one record to an event.
    pub fn event(record: &log::Record<'_>) -> Event {
        let body = match record.args().as_str() {
            Some(literal) => Value::Str(Cow::Borrowed(literal)),
            None => Value::Str(Cow::Owned(record.args().to_string())),
        };
        // Targets default to the module path, which is `'static`: borrow it
        // rather than copying it for every record.
        let target = record.target();
        let scope = match record.module_path_static() {
            Some(path) if path == target => Cow::Borrowed(path),
            _ => Cow::Owned(target.to_owned()),
        };
        let mut event = Event::new(severity(record.level()), body).scope(scope);
        let mut visitor = Attrs(&mut event);
        let _ = record.key_values().visit(&mut visitor);
        event
    }
}

fn severity(level: log::Level) -> Severity {
    match level {
        log::Level::Error => Severity::Error,
        log::Level::Warn => Severity::Warn,
        log::Level::Info => Severity::Info,
        log::Level::Debug => Severity::Debug,
        log::Level::Trace => Severity::Trace,
    }
}

impl log::Log for LogBridge {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= self.level && !is_excluded(metadata.target())
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            // Refusals are counted by the client (`Stats::dropped`).
            let _ = self.client.log(Self::event(record));
        }
    }

    fn flush(&self) {
        // `log::logger().flush()` may be called from any context, async
        // ones included, so it must not block: ask for an early send only.
        self.client.flush_nowait();
    }
}

struct Attrs<'e>(&'e mut Event);

impl<'kvs> VisitSource<'kvs> for Attrs<'_> {
    fn visit_pair(&mut self, key: kv::Key<'kvs>, value: kv::Value<'kvs>) -> Result<(), kv::Error> {
        let mut typed = Typed(None);
        value.visit(&mut typed)?;
        let value = typed.0.unwrap_or_else(|| Value::from(value.to_string()));
        self.0.push_attr(Cow::Owned(key.as_str().to_owned()), value);
        Ok(())
    }
}

struct Typed(Option<Value>);

impl<'v> VisitValue<'v> for Typed {
    fn visit_any(&mut self, value: kv::Value<'_>) -> Result<(), kv::Error> {
        self.0 = Some(Value::from(value.to_string()));
        Ok(())
    }

    fn visit_i64(&mut self, value: i64) -> Result<(), kv::Error> {
        self.0 = Some(Value::Int(value));
        Ok(())
    }

    fn visit_u64(&mut self, value: u64) -> Result<(), kv::Error> {
        self.0 = Some(Value::from(value));
        Ok(())
    }

    fn visit_f64(&mut self, value: f64) -> Result<(), kv::Error> {
        self.0 = Some(Value::Double(value));
        Ok(())
    }

    fn visit_bool(&mut self, value: bool) -> Result<(), kv::Error> {
        self.0 = Some(Value::Bool(value));
        Ok(())
    }

    fn visit_str(&mut self, value: &str) -> Result<(), kv::Error> {
        self.0 = Some(Value::from(value.to_owned()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_become_events_with_typed_attributes() {
        let args = format_args!("payment {} failed", 42);
        let kvs: [(&str, kv::Value<'_>); 4] = [
            ("order.id", kv::Value::from(42i64)),
            ("amount", kv::Value::from(9.5f64)),
            ("retry", kv::Value::from(true)),
            ("user", kv::Value::from("u-7")),
        ];
        let record = log::Record::builder()
            .args(args)
            .level(log::Level::Warn)
            .target("shop::payments")
            .key_values(&kvs)
            .build();
        let event = LogBridge::event(&record);
        assert_eq!(event.severity(), Severity::Warn);
        assert_eq!(event.body(), &Value::from("payment 42 failed".to_owned()));
        assert_eq!(event.scope.as_ref(), "shop::payments");
        let attrs: Vec<_> = event.attributes().collect();
        assert_eq!(attrs[0], ("order.id", &Value::Int(42)));
        assert_eq!(attrs[1], ("amount", &Value::Double(9.5)));
        assert_eq!(attrs[2], ("retry", &Value::Bool(true)));
        assert_eq!(attrs[3], ("user", &Value::from("u-7".to_owned())));
    }

    #[test]
    fn static_messages_are_borrowed() {
        let record = log::Record::builder()
            .args(format_args!("plain"))
            .level(log::Level::Info)
            .build();
        assert!(matches!(
            LogBridge::event(&record).body(),
            Value::Str(Cow::Borrowed("plain"))
        ));
    }
}
