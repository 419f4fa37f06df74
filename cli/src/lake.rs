//! Where the lake is: the Iceberg REST catalog (Nessie) and the object store
//! its files live in. `tlake sql` and `tlake tables` take the same flags, so
//! they work against the local stack (the defaults, and the keys from
//! `deploy/local/stack env`) and against the chart's Services (port-forwarded,
//! or from inside the cluster) alike.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use tlake_catalog_client::{CatalogSettings, LakeCatalog, S3Settings};

/// Catalog and object-store flags.
#[derive(Debug, Clone, Args)]
pub struct LakeArgs {
    /// Iceberg REST catalog URI (Nessie's `/iceberg/` endpoint).
    #[arg(
        long,
        env = "TLAKE_CATALOG_URI",
        default_value = "http://127.0.0.1:19120/iceberg/"
    )]
    pub catalog_uri: String,
    /// Warehouse name in the catalog.
    #[arg(long, env = "TLAKE_WAREHOUSE", default_value = "telemetrylake")]
    pub warehouse: String,
    /// Namespace holding one table per stream (the compactor's `catalog.namespace`).
    #[arg(long, env = "TLAKE_NAMESPACE", default_value = "logs")]
    pub namespace: String,
    /// S3 endpoint of the object store.
    #[arg(
        long,
        env = "TLAKE_S3_ENDPOINT",
        default_value = "http://127.0.0.1:9000"
    )]
    pub s3_endpoint: String,
    /// S3 region.
    #[arg(long, env = "TLAKE_S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,
}

/// S3 keys, from `TLAKE_S3_ACCESS_KEY`/`TLAKE_S3_SECRET_KEY` or, failing
/// those, the AWS SDKs' `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`. Never
/// flags: a key on a command line is in the shell history and in `ps`.
#[derive(Clone)]
pub struct S3Keys {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
}

impl std::fmt::Debug for S3Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Keys")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl S3Keys {
    /// The keys from the environment (see the type's doc).
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// The keys from `lookup` (the environment, or a test's map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let pick = |ours: &str, aws: &str| {
            lookup(ours)
                .filter(|v| !v.is_empty())
                .or_else(|| lookup(aws).filter(|v| !v.is_empty()))
        };
        match (
            pick("TLAKE_S3_ACCESS_KEY", "AWS_ACCESS_KEY_ID"),
            pick("TLAKE_S3_SECRET_KEY", "AWS_SECRET_ACCESS_KEY"),
        ) {
            (Some(access_key_id), Some(secret_access_key)) => Ok(Self {
                access_key_id,
                secret_access_key,
            }),
            _ => bail!(
                "S3 keys missing: set TLAKE_S3_ACCESS_KEY and TLAKE_S3_SECRET_KEY (or AWS_ACCESS_KEY_ID \
                 and AWS_SECRET_ACCESS_KEY); for the local stack: eval \"$(deploy/local/stack env)\""
            ),
        }
    }
}

impl LakeArgs {
    /// Our catalog client, connected; an unreachable catalog says how to check it.
    pub async fn connect(&self, keys: &S3Keys) -> Result<LakeCatalog> {
        LakeCatalog::connect(&self.catalog_settings(keys))
            .await
            .with_context(|| {
                format!(
                    "connecting to the Iceberg catalog {} (warehouse {}); is Nessie up? (local \
                     stack: deploy/local/stack status)",
                    self.catalog_uri, self.warehouse
                )
            })
    }

    /// Settings for our catalog client (`tlake tables`).
    pub fn catalog_settings(&self, keys: &S3Keys) -> CatalogSettings {
        CatalogSettings {
            uri: self.catalog_uri.clone(),
            warehouse: self.warehouse.clone(),
            namespace: self.namespace.clone(),
            s3: S3Settings {
                endpoint: self.s3_endpoint.clone(),
                region: self.s3_region.clone(),
                path_style: true,
                access_key_id: keys.access_key_id.clone(),
                secret_access_key: keys.secret_access_key.clone(),
            },
            // A listing waits on one catalog answer per table; a catalog that
            // takes longer than this is reported as unreachable.
            request_timeout: Duration::from_secs(15),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn keys(vars: &[(&str, &str)]) -> Result<S3Keys> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        S3Keys::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn ours_win_over_the_aws_names() {
        let k = keys(&[
            ("TLAKE_S3_ACCESS_KEY", "a"),
            ("TLAKE_S3_SECRET_KEY", "s"),
            ("AWS_ACCESS_KEY_ID", "x"),
            ("AWS_SECRET_ACCESS_KEY", "y"),
        ])
        .unwrap();
        assert_eq!(
            (k.access_key_id.as_str(), k.secret_access_key.as_str()),
            ("a", "s")
        );
        let k = keys(&[("AWS_ACCESS_KEY_ID", "x"), ("AWS_SECRET_ACCESS_KEY", "y")]).unwrap();
        assert_eq!(
            (k.access_key_id.as_str(), k.secret_access_key.as_str()),
            ("x", "y")
        );
    }

    #[test]
    fn missing_or_empty_keys_say_how_to_set_them() {
        for vars in [
            &[][..],
            &[("TLAKE_S3_ACCESS_KEY", "a")][..],
            &[("TLAKE_S3_ACCESS_KEY", "a"), ("TLAKE_S3_SECRET_KEY", "")][..],
        ] {
            let err = keys(vars).unwrap_err().to_string();
            assert!(err.contains("TLAKE_S3_SECRET_KEY"), "{err}");
            assert!(err.contains("deploy/local/stack env"), "{err}");
        }
    }

    #[test]
    fn the_secret_is_not_in_debug_output() {
        let k = keys(&[
            ("TLAKE_S3_ACCESS_KEY", "a"),
            ("TLAKE_S3_SECRET_KEY", "hunter2"),
        ])
        .unwrap();
        assert!(!format!("{k:?}").contains("hunter2"));
    }
}
