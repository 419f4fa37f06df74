//! storage: listing and deleting objects under a table's location (opendal; iceberg-rust's
//! FileIO cannot list), and the location forms the orphan check compares.

use tlake_catalog_client::S3Settings;
use tlake_catalog_client::{Error, Result};

/// S3 settings for listing and deleting objects (FileIO cannot list).
#[derive(Clone)]
pub(crate) struct Storage(pub(crate) S3Settings);

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the keys.
        f.debug_struct("Storage")
            .field("endpoint", &self.0.endpoint)
            .finish_non_exhaustive()
    }
}

impl Storage {
    pub(crate) fn operator(&self, bucket: &str) -> Result<opendal::Operator> {
        let s = &self.0;
        let mut builder = opendal::services::S3::default()
            .bucket(bucket)
            .endpoint(&s.endpoint)
            .region(&s.region)
            .access_key_id(&s.access_key_id)
            .secret_access_key(&s.secret_access_key)
            .disable_config_load()
            .disable_ec2_metadata();
        if !s.path_style {
            builder = builder.enable_virtual_host_style();
        }
        Ok(opendal::Operator::new(builder)
            .map_err(storage_error)?
            .finish())
    }
}

pub(crate) fn storage_error(e: opendal::Error) -> Error {
    Error::Storage(e.to_string())
}

/// `s3://bucket/key` → (`bucket`, `key`). Any `scheme://` is accepted.
pub fn split_location(location: &str) -> Option<(&str, &str)> {
    let (_, rest) = location.split_once("://")?;
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    (!bucket.is_empty()).then_some((bucket, key))
}

/// A location without its scheme (`bucket/key`), so `s3://` and `s3a://`
/// spellings of one object compare equal.
pub fn normalize(location: &str) -> String {
    match split_location(location) {
        Some((bucket, key)) => format!("{bucket}/{key}"),
        None => location.to_owned(),
    }
}

/// An object in storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    /// `bucket/key`.
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// Last modified, ms since the epoch.
    pub modified_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_split_and_normalize() {
        assert_eq!(
            split_location("s3://b/t/x.parquet"),
            Some(("b", "t/x.parquet"))
        );
        assert_eq!(split_location("s3a://b"), Some(("b", "")));
        assert_eq!(split_location("/local/path"), None);
        assert_eq!(normalize("s3a://b/k"), normalize("s3://b/k"));
        assert_eq!(normalize("s3://b/k"), "b/k");
    }
}
