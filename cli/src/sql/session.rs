//! A DuckDB session attached to the lake: the extensions loaded from a local
//! extension directory, an S3 secret from the environment's keys, and the
//! Nessie catalog attached under the warehouse's name with the stream
//! namespace as the current schema, so `SELECT … FROM "default"` works as
//! well as the fully qualified `telemetrylake.logs."default"`.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use duckdb::arrow::record_batch::RecordBatch;
use duckdb::{Config, Connection};

use super::fresh::{self, Fresh};
use crate::lake::{LakeArgs, S3Keys};

/// Extensions a lake session loads, in load order (iceberg needs avro and httpfs).
pub const EXTENSIONS: [&str; 3] = ["avro", "httpfs", "iceberg"];

/// Where DuckDB's extensions are looked for: `TLAKE_DUCKDB_EXTENSIONS`, else the
/// directory `deploy/local/libduckdb` fills (`~/.cache/telemetry-lake/duckdb-extensions`).
pub fn default_extension_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TLAKE_DUCKDB_EXTENSIONS") {
        return dir.into();
    }
    let cache = std::env::var_os("TLAKE_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/telemetry-lake")
        });
    cache.join("duckdb-extensions")
}

/// A DuckDB connection with the lake attached.
pub struct Session {
    conn: Connection,
    /// With `--fresh`: the views refreshed before each query.
    fresh: Option<RefCell<Fresh>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").finish_non_exhaustive()
    }
}

impl Session {
    /// An in-memory DuckDB with the extensions from `extension_dir` loaded;
    /// nothing attached. DuckDB never downloads anything: autoinstall and
    /// autoload are off, and a missing extension file is an error naming the fix.
    pub fn open(extension_dir: &Path) -> Result<Self> {
        let config = Config::default()
            .with("autoinstall_known_extensions", "false")
            .and_then(|c| c.with("autoload_known_extensions", "false"))
            .and_then(|c| c.with("extension_directory", extension_dir.to_string_lossy()))
            .map_err(one_line)?;
        let conn = Connection::open_in_memory_with_flags(config).map_err(one_line)?;
        let session = Self { conn, fresh: None };
        let (version, platform) = session.version_and_platform()?;
        for name in EXTENSIONS {
            let file = extension_dir
                .join(&version)
                .join(&platform)
                .join(format!("{name}.duckdb_extension"));
            if !file.is_file() {
                bail!(
                    "DuckDB's {name} extension is not at {}: run deploy/local/libduckdb (it fetches \
                     avro, httpfs and iceberg for DuckDB {version}), or point --extension-dir / \
                     TLAKE_DUCKDB_EXTENSIONS at a DuckDB extension directory that has them",
                    file.display()
                );
            }
            session
                .conn
                .execute_batch(&format!("LOAD {name}"))
                .map_err(one_line)
                .with_context(|| {
                    format!("loading DuckDB's {name} extension from {}", file.display())
                })?;
        }
        Ok(session)
    }

    /// [`Session::open`], then the S3 secret and the catalog attached as
    /// `lake.warehouse`, its `lake.namespace` the current schema.
    pub fn attach(extension_dir: &Path, lake: &LakeArgs, keys: &S3Keys) -> Result<Self> {
        let session = Self::open(extension_dir)?;
        let (host, use_ssl) = endpoint_host(&lake.s3_endpoint)?;
        session
            .conn
            .execute_batch(&format!(
                "CREATE SECRET tlake_s3 (TYPE S3, KEY_ID {}, SECRET {}, REGION {}, ENDPOINT {}, \
                 USE_SSL {use_ssl}, URL_STYLE 'path')",
                literal(&keys.access_key_id),
                literal(&keys.secret_access_key),
                literal(&lake.s3_region),
                literal(host),
            ))
            .map_err(one_line)
            .context("creating the S3 secret")?;
        // ACCESS_DELEGATION_MODE 'none': use the secret above, not the table config Nessie
        // returns (endpoint and region but no keys: anonymous, so 403 on a private bucket).
        // DEFAULT_SCHEMA 'main': DuckDB 1.5 maps the schema "main" to the catalog's default
        // schema, which is empty unless set. DuckDB checks the catalog when attaching, so an
        // unreachable or wrong catalog fails here.
        session
            .conn
            .execute_batch(&format!(
                "ATTACH {} AS {} (TYPE ICEBERG, ENDPOINT {}, AUTHORIZATION_TYPE 'NONE', \
                 ACCESS_DELEGATION_MODE 'none', DEFAULT_SCHEMA 'main')",
                literal(&lake.warehouse),
                identifier(&lake.warehouse),
                literal(&lake.catalog_uri),
            ))
            .map_err(one_line)
            .with_context(|| {
                format!(
                    "attaching the Iceberg catalog {} (warehouse {}); is Nessie up? (local stack: \
                     deploy/local/stack status)",
                    lake.catalog_uri, lake.warehouse
                )
            })?;
        session
            .conn
            .execute_batch(&format!(
                "USE {}.{}",
                identifier(&lake.warehouse),
                identifier(&lake.namespace)
            ))
            .map_err(one_line)
            .with_context(|| {
                format!(
                    "namespace {} is not in warehouse {} (no stream written yet, or another \
                     --namespace)",
                    lake.namespace, lake.warehouse
                )
            })?;
        Ok(session)
    }

    /// The fresh views ([`super::fresh`]) first on the search path, so a
    /// stream's bare name means its committed rows plus the Kafka tail; the
    /// committed table stays `<warehouse>.<namespace>."<stream>"`.
    pub fn with_fresh(
        mut self,
        lake: &LakeArgs,
        catalog: tlake_catalog_client::LakeCatalog,
        runtime: tokio::runtime::Handle,
        options: &super::FreshOptions,
    ) -> Result<Self> {
        let fresh = Fresh::new(&self.conn, catalog, runtime, options)?;
        let path = format!(
            "{}.main,{}.{}",
            identifier(fresh::DATABASE),
            identifier(&lake.warehouse),
            identifier(&lake.namespace)
        );
        self.conn
            .execute_batch(&format!("SET search_path = {}", literal(&path)))
            .map_err(one_line)?;
        self.fresh = Some(RefCell::new(fresh));
        Ok(self)
    }

    /// Runs `sql` (one statement or a script; a script's statements run in
    /// order) and returns the last statement's result. With fresh views, they
    /// are brought up to date first.
    pub fn query(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        if sql.trim().trim_end_matches(';').trim().is_empty() {
            bail!("no SQL given");
        }
        if let Some(fresh) = &self.fresh {
            fresh.borrow_mut().refresh(&self.conn, sql)?;
        }
        let mut statement = self.conn.prepare(sql).map_err(one_line)?;
        let arrow = statement.query_arrow([]).map_err(one_line)?;
        let schema = arrow.get_schema();
        let mut batches: Vec<RecordBatch> = arrow.collect();
        // An empty result still has columns: every format writes them (a header, a schema).
        if batches.is_empty() {
            batches.push(RecordBatch::new_empty(schema));
        }
        Ok(batches)
    }

    fn version_and_platform(&self) -> Result<(String, String)> {
        self.conn
            .query_row(
                "SELECT library_version, (SELECT platform FROM pragma_platform()) FROM pragma_version()",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .map_err(one_line)
    }
}

/// DuckDB's message on one line: its errors carry the statement and a caret
/// on following lines, which a one-line error report drops.
pub(super) fn one_line(err: duckdb::Error) -> anyhow::Error {
    let text = err.to_string();
    anyhow!("{}", text.lines().next().unwrap_or("DuckDB error").trim())
}

/// `http(s)://host:port[/]` → (`host:port`, whether TLS).
fn endpoint_host(endpoint: &str) -> Result<(&str, bool)> {
    let (scheme, rest) = endpoint
        .split_once("://")
        .ok_or_else(|| anyhow!("--s3-endpoint {endpoint:?} is not a URL (http://host:port)"))?;
    let host = rest.trim_end_matches('/');
    match scheme {
        _ if host.is_empty() || host.contains('/') => {
            bail!("--s3-endpoint {endpoint:?} must be http(s)://host:port, without a path")
        }
        "http" => Ok((host, false)),
        "https" => Ok((host, true)),
        _ => bail!("--s3-endpoint {endpoint:?}: the scheme must be http or https"),
    }
}

/// A SQL string literal.
pub(super) fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A quoted SQL identifier.
pub(super) fn identifier(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::Format;

    #[test]
    fn endpoints_are_host_and_port_with_tls_from_the_scheme() {
        assert_eq!(
            endpoint_host("http://127.0.0.1:9000").unwrap(),
            ("127.0.0.1:9000", false)
        );
        assert_eq!(
            endpoint_host("https://s3.example:443/").unwrap(),
            ("s3.example:443", true)
        );
        for bad in [
            "127.0.0.1:9000",
            "ftp://h:1",
            "http://",
            "http://h:1/bucket",
        ] {
            assert!(endpoint_host(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn quoting_doubles_the_quote() {
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(identifier("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn a_missing_extension_names_the_command_that_fetches_it() {
        let dir =
            std::env::temp_dir().join(format!("tlake-no-ext-{}", uuid::Uuid::new_v4().simple()));
        let err = Session::open(&dir).unwrap_err().to_string();
        assert!(err.contains("avro extension is not at"), "{err}");
        assert!(err.contains("deploy/local/libduckdb"), "{err}");
    }

    #[test]
    fn bad_sql_is_one_line_naming_the_problem() {
        let dir = default_extension_dir();
        let session = Session::open(&dir).expect("extensions in place: run deploy/local/libduckdb");
        let err = session.query("SELEC 1").unwrap_err().to_string();
        assert!(err.starts_with("Parser Error"), "{err}");
        assert!(!err.contains('\n'), "{err}");
        assert_eq!(
            session.query(" ; ").unwrap_err().to_string(),
            "no SQL given"
        );
        let batches = session
            .query("CREATE TABLE t AS SELECT 41 AS x; SELECT x + 1 AS y FROM t")
            .unwrap();
        assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 1);
        // A TIMESTAMPTZ arrives with the session's named zone; every format must print it.
        let zoned = session
            .query(
                "SET TimeZone = 'Europe/Berlin'; SELECT TIMESTAMPTZ '2026-12-01 10:00:00+00' AS t",
            )
            .unwrap();
        for format in [Format::Table, Format::Csv, Format::Jsonl] {
            let mut out = Vec::new();
            crate::sql::output::write(&zoned, format, &mut out, None).unwrap();
            let text = String::from_utf8(out).unwrap();
            assert!(
                text.contains("2026-12-01T11:00:00+01:00"),
                "{format:?}: {text}"
            );
        }
        let empty = session
            .query("SELECT 1 AS a, 'x' AS b WHERE false")
            .unwrap();
        assert_eq!(empty.iter().map(RecordBatch::num_rows).sum::<usize>(), 0);
        assert_eq!(empty[0].schema().fields().len(), 2);
    }
}
