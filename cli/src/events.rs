//! Event sources for `send` and `bench`: synthetic events shaped like
//! service logs, or lines of real log files (e.g. the loghub corpus).

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use tlake_proto::v1::{AnyValue, KeyValue, LogEvent, Resource, any_value};

fn text(s: impl Into<String>) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(s.into())),
    })
}

fn attr(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: text(value),
    }
}

/// A resource naming the sending service and host.
pub fn resource(service: &str) -> Resource {
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_else(|_| "localhost".into());
    Resource {
        attributes: vec![
            attr("service.name", service),
            attr("host.name", host.trim()),
        ],
    }
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Where events come from.
#[derive(Debug)]
pub enum Source {
    /// Synthetic events of about 300 encoded bytes.
    Synthetic,
    /// One event per non-empty line of these files, cycling.
    Lines(Vec<String>),
}

impl Source {
    /// Lines of every `*.log` file under `path` (a file or a folder).
    pub fn lines(path: &Path) -> anyhow::Result<Self> {
        let mut files = Vec::new();
        if path.is_dir() {
            for entry in std::fs::read_dir(path)? {
                let p = entry?.path();
                if p.extension().is_some_and(|e| e == "log") {
                    files.push(p);
                }
            }
            files.sort();
        } else {
            files.push(path.to_owned());
        }
        let mut lines = Vec::new();
        for f in &files {
            let bytes = std::fs::read(f)?;
            lines.extend(
                String::from_utf8_lossy(&bytes)
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(str::to_owned),
            );
        }
        anyhow::ensure!(
            !lines.is_empty(),
            "no log lines found under {}",
            path.display()
        );
        Ok(Self::Lines(lines))
    }

    /// The `n`-th event of this source, with a fresh UUIDv7 id.
    pub fn event(&self, n: u64) -> LogEvent {
        let now = now_nanos();
        let i = n as usize;
        let (severity_number, severity_text) = [
            (9, "INFO"),
            (9, "INFO"),
            (9, "INFO"),
            (13, "WARN"),
            (17, "ERROR"),
        ][i % 5];
        let (body, attributes) = match self {
            Self::Lines(lines) => (lines[i % lines.len()].clone(), Vec::new()),
            Self::Synthetic => (
                format!(
                    "{} seq={n}",
                    [
                        "request completed method=GET path=/api/v1/orders status=200",
                        "cache miss for key user:profile, falling back to database",
                        "retrying upstream call after connection reset by peer",
                        "slow query detected on table orders: full scan of partition",
                    ][i % 4]
                ),
                vec![
                    attr("http.route", "/api/v1/orders/{id}"),
                    attr("user.id", format!("u-{:06}", n % 100_000)),
                    attr("service.component", ["db", "cache", "http", "queue"][i % 4]),
                    attr(
                        "k8s.pod.name",
                        format!("checkout-7d9f8b6c5-{:05}", n % 100_000),
                    ),
                ],
            ),
        };
        LogEvent {
            event_id: uuid::Uuid::now_v7().as_bytes().to_vec().into(),
            time_unix_nano: now,
            observed_time_unix_nano: now,
            severity_number,
            severity_text: severity_text.to_owned(),
            body: text(body),
            attributes,
            trace_id: uuid::Uuid::new_v4().as_bytes().to_vec().into(),
            span_id: (n.wrapping_mul(0x9e37_79b9_7f4a_7c15))
                .to_be_bytes()
                .to_vec()
                .into(),
            flags: 1,
            event_name: String::new(),
            scope_name: "tlake::cli".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn synthetic_events_are_about_300_bytes() {
        let source = Source::Synthetic;
        let sizes: Vec<usize> = (0..100).map(|n| source.event(n).encoded_len()).collect();
        let mean = sizes.iter().sum::<usize>() / sizes.len();
        assert!((250..=350).contains(&mean), "mean {mean}");
    }

    #[test]
    fn ids_are_unique() {
        let source = Source::Synthetic;
        let ids: std::collections::HashSet<_> =
            (0..1000).map(|n| source.event(n).event_id).collect();
        assert_eq!(ids.len(), 1000);
    }
}
