//! Configuration layering: `T::default()` ← a TOML file ← `<PREFIX>*`
//! environment variables (`__` nests: `TLAKE_COMPACTOR_CATALOG__URI` is
//! `catalog.uri`) ← flags. Each binary then validates the result and reports
//! what is wrong as a [`ConfigError`] naming the key.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file, environment or flags could not be parsed (an unknown key, a
    /// wrong type); figment's message names the key and where it came from.
    #[error("cannot read configuration: {0}")]
    Parse(#[from] Box<figment::Error>),
    /// A value parsed but makes no sense.
    #[error("invalid configuration: {key}: {reason}")]
    Invalid {
        /// Dotted key, e.g. `limits.chunk_bytes`.
        key: &'static str,
        /// What is wrong and what would be accepted.
        reason: String,
    },
    /// A file the configuration names could not be read.
    #[error("cannot read {key} file {path}: {source}")]
    File {
        /// The key (or flag) naming the file.
        key: &'static str,
        /// The path given.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl ConfigError {
    /// [`ConfigError::Invalid`] for `key`.
    pub fn invalid(key: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            key,
            reason: reason.into(),
        }
    }
}

/// Loads `T::default()` ← `file` (if given; it must exist) ← the environment
/// variables starting with `env_prefix` ← `overrides` (the flags). `not_keys`
/// are variables under the prefix that are no configuration keys, such as
/// the `…_CONFIG` that names the file. Validation is the caller's.
pub fn load<T>(
    env_prefix: &str,
    not_keys: &[&str],
    file: Option<&Path>,
    overrides: Figment,
) -> Result<T, ConfigError>
where
    T: Serialize + DeserializeOwned + Default,
{
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if let Some(path) = file {
        if !path.is_file() {
            return Err(ConfigError::File {
                key: "--config",
                path: path.to_owned(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            });
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    Ok(figment
        .merge(Env::prefixed(env_prefix).split("__").ignore(not_keys))
        .merge(overrides)
        .extract()
        .map_err(Box::new)?)
}

/// `T::default()` ← the TOML `text`, without the environment (tests, and
/// configurations held in a string).
pub fn from_toml<T>(text: &str) -> Result<T, ConfigError>
where
    T: Serialize + DeserializeOwned + Default,
{
    Ok(Figment::from(Serialized::defaults(T::default()))
        .merge(Toml::string(text))
        .extract()
        .map_err(Box::new)?)
}

#[cfg(test)]
// figment's Jail closures return its (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::providers::Serialized;
    use serde::Deserialize;

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Settings {
        name: String,
        inner: Inner,
    }

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Inner {
        size: u32,
    }

    #[test]
    fn layers_file_environment_and_flags_in_that_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.toml", "name = \"file\"\n[inner]\nsize = 1\n")?;
            jail.set_env("TLAKE_KIT_TEST_INNER__SIZE", "2");
            jail.set_env("TLAKE_KIT_TEST_CONFIG", "c.toml");
            let s: Settings = load(
                "TLAKE_KIT_TEST_",
                &["config"],
                Some(Path::new("c.toml")),
                Figment::new(),
            )
            .map_err(|e| e.to_string())?;
            assert_eq!(s.name, "file");
            assert_eq!(s.inner.size, 2, "the environment overrides the file");
            let s: Settings = load(
                "TLAKE_KIT_TEST_",
                &["config"],
                Some(Path::new("c.toml")),
                Figment::new().merge(Serialized::global("inner.size", 3)),
            )
            .map_err(|e| e.to_string())?;
            assert_eq!(s.inner.size, 3, "flags override the environment");
            Ok(())
        });
    }

    #[test]
    fn a_missing_file_or_an_unknown_key_is_named() {
        let err = load::<Settings>(
            "TLAKE_KIT_NONE_",
            &[],
            Some(Path::new("/nonexistent/c.toml")),
            Figment::new(),
        )
        .expect_err("missing file");
        assert!(err.to_string().contains("/nonexistent/c.toml"), "{err}");
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.toml", "nmae = \"typo\"\n")?;
            let err = load::<Settings>(
                "TLAKE_KIT_NONE_",
                &[],
                Some(Path::new("c.toml")),
                Figment::new(),
            )
            .expect_err("unknown key");
            assert!(err.to_string().contains("nmae"), "{err}");
            Ok(())
        });
    }
}
