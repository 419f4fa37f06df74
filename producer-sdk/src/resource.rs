//! The resource every batch carries (service.name, deployment, host, ...),
//! built from the OpenTelemetry environment variables and builder settings.

use std::borrow::Cow;

use tlake_proto::v1::Resource;

use crate::encode::key_value;
use crate::event::Value;

/// Environment variable naming the service (OpenTelemetry).
pub const ENV_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
/// Environment variable with extra resource attributes, `key=value` pairs
/// separated by commas, values percent-encoded (OpenTelemetry).
pub const ENV_RESOURCE_ATTRIBUTES: &str = "OTEL_RESOURCE_ATTRIBUTES";

/// Resource attributes in the order they will be sent; later settings of
/// the same key replace earlier ones.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ResourceAttrs {
    attrs: Vec<(String, Value)>,
}

impl ResourceAttrs {
    /// Sets `key`, replacing an earlier value.
    pub(crate) fn set(&mut self, key: impl Into<String>, value: Value) {
        let key = key.into();
        match self.attrs.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.attrs.push((key, value)),
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        self.attrs.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Applies the two OpenTelemetry variables: `OTEL_RESOURCE_ATTRIBUTES`
    /// first, then `OTEL_SERVICE_NAME`, which wins for `service.name` (as
    /// the OpenTelemetry specification says).
    pub(crate) fn apply_env(
        &mut self,
        service_name: Option<&str>,
        attributes: Option<&str>,
    ) -> Result<(), String> {
        if let Some(list) = attributes {
            for (key, value) in parse_attributes(list)? {
                self.set(key, Value::Str(Cow::Owned(value)));
            }
        }
        if let Some(name) = service_name.map(str::trim).filter(|n| !n.is_empty()) {
            self.set("service.name", Value::Str(Cow::Owned(name.to_owned())));
        }
        Ok(())
    }

    /// The wire form, with `service.name` defaulted as OpenTelemetry
    /// prescribes (`unknown_service:<executable>`) and the SDK identified.
    pub(crate) fn build(mut self) -> Resource {
        if self.get("service.name").is_none() {
            let exe = std::env::current_exe()
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_default();
            self.set(
                "service.name",
                Value::from(format!("unknown_service:{exe}")),
            );
        }
        for (key, value) in [
            ("telemetry.sdk.name", "tlake-sdk"),
            ("telemetry.sdk.language", "rust"),
            ("telemetry.sdk.version", env!("CARGO_PKG_VERSION")),
        ] {
            if self.get(key).is_none() {
                self.set(key, Value::from(value));
            }
        }
        Resource {
            attributes: self
                .attrs
                .into_iter()
                .map(|(k, v)| key_value(k, v))
                .collect(),
        }
    }
}

/// Parses `OTEL_RESOURCE_ATTRIBUTES`: `k1=v1,k2=v2`, whitespace around keys
/// and values ignored, values percent-decoded.
fn parse_attributes(list: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for pair in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(format!("{pair:?} is not key=value"));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(format!("{pair:?} has an empty key"));
        }
        out.push((key.to_owned(), percent_decode(value.trim())?));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("{s:?} has a bad percent escape"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} does not decode to UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs_of(resource: &Resource) -> Vec<(String, String)> {
        resource
            .attributes
            .iter()
            .map(|kv| {
                let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(tlake_proto::v1::any_value::Value::StringValue(s)) => s.clone(),
                    other => format!("{other:?}"),
                };
                (kv.key.clone(), v)
            })
            .collect()
    }

    #[test]
    fn env_attributes_and_service_name() {
        let mut r = ResourceAttrs::default();
        r.apply_env(
            Some("checkout"),
            Some("service.name=ignored, deployment.environment = prod,team=a%2Cb%20c"),
        )
        .expect("valid");
        let attrs = attrs_of(&r.build());
        assert_eq!(attrs[0], ("service.name".into(), "checkout".into()));
        assert!(attrs.contains(&("deployment.environment".into(), "prod".into())));
        assert!(attrs.contains(&("team".into(), "a,b c".into())));
        assert!(attrs.contains(&("telemetry.sdk.name".into(), "tlake-sdk".into())));
    }

    #[test]
    fn service_name_from_attributes_when_no_service_var() {
        let mut r = ResourceAttrs::default();
        r.apply_env(None, Some("service.name=api")).expect("valid");
        assert_eq!(r.get("service.name"), Some(&Value::from("api".to_owned())));
    }

    #[test]
    fn default_service_name_is_unknown_service() {
        let attrs = attrs_of(&ResourceAttrs::default().build());
        assert!(attrs[0].1.starts_with("unknown_service:"), "{attrs:?}");
    }

    #[test]
    fn builder_settings_win_when_applied_after_env() {
        let mut r = ResourceAttrs::default();
        r.apply_env(Some("from-env"), None).expect("valid");
        r.set("service.name", Value::from("explicit"));
        assert_eq!(r.get("service.name"), Some(&Value::from("explicit")));
    }

    #[test]
    fn malformed_lists_are_errors() {
        for bad in ["novalue", "=x", "k=%zz", "k=%e2%28"] {
            assert!(
                ResourceAttrs::default().apply_env(None, Some(bad)).is_err(),
                "{bad}"
            );
        }
    }
}
