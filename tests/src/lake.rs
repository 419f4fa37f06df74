//! The lake side of the local stack: catalog settings from `deploy/local/stack env`,
//! reading a table back with iceberg-rust, and querying it with the DuckDB CLI.

use std::collections::HashMap;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use arrow_array::Array;
use arrow_array::cast::AsArray;
use futures::TryStreamExt;
use tlake_catalog_client::{
    CatalogSettings, CommitOutcome, CommitRequest, LakeCatalog, S3Settings,
};

use crate::stack::repo_root;

/// `deploy/local/stack env` as a map (TLAKE_* variables); env vars win.
pub fn stack_env() -> &'static HashMap<String, String> {
    static ENV: OnceLock<HashMap<String, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let output = Command::new(repo_root().join("deploy/local/stack"))
            .arg("env")
            .output()
            .expect("run deploy/local/stack env");
        let mut map: HashMap<String, String> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| {
                (
                    k.to_owned(),
                    v.trim_matches('"').trim_matches('\'').to_owned(),
                )
            })
            .collect();
        for (k, v) in std::env::vars().filter(|(k, _)| k.starts_with("TLAKE_")) {
            map.insert(k, v);
        }
        map
    })
}

/// One value of the stack's environment.
pub fn env(key: &str) -> String {
    stack_env()
        .get(key)
        .cloned()
        .unwrap_or_else(|| panic!("{key} missing from `deploy/local/stack env`"))
}

/// Environment a compactor process needs besides its config file (S3 keys).
pub fn compactor_env() -> Vec<(String, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID".into(), env("TLAKE_S3_ACCESS_KEY")),
        ("AWS_SECRET_ACCESS_KEY".into(), env("TLAKE_S3_SECRET_KEY")),
    ]
}

/// Catalog settings for the local stack, namespace `logs`.
pub fn settings() -> CatalogSettings {
    crate::stack::require_port("Nessie", "127.0.0.1:19120");
    CatalogSettings {
        uri: env("TLAKE_CATALOG_URI"),
        warehouse: env("TLAKE_WAREHOUSE"),
        namespace: "logs".into(),
        s3: S3Settings {
            endpoint: env("TLAKE_S3_ENDPOINT"),
            region: env("TLAKE_S3_REGION"),
            path_style: true,
            access_key_id: env("TLAKE_S3_ACCESS_KEY"),
            secret_access_key: env("TLAKE_S3_SECRET_KEY"),
        },
        request_timeout: Duration::from_secs(30),
    }
}

/// A connected catalog client.
pub async fn catalog() -> LakeCatalog {
    LakeCatalog::connect(&settings())
        .await
        .expect("connect to the Nessie catalog")
}

/// `LakeCatalog::commit` until the outcome is known, as the compactor calls
/// it: an unknown outcome (a catalog blip) is asked again with the same
/// request, and the next call reconciles by commit id. At most 20 calls.
pub async fn commit_known(
    catalog: &LakeCatalog,
    request: &CommitRequest,
) -> tlake_catalog_client::Result<CommitOutcome> {
    for _ in 0..20 {
        match catalog.commit(request).await? {
            CommitOutcome::Unknown => tokio::time::sleep(Duration::from_millis(200)).await,
            known => return Ok(known),
        }
    }
    Ok(CommitOutcome::Unknown)
}

/// A stream / table name unique to this test run.
pub fn unique_stream(prefix: &str) -> String {
    format!(
        "t_{prefix}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

/// Every event id in `table`, read with iceberg-rust's scan (empty if the
/// table does not exist yet).
pub async fn scan_event_ids(catalog: &LakeCatalog, table: &str) -> Vec<[u8; 16]> {
    let Ok(table) = catalog.load_table(table).await else {
        return Vec::new();
    };
    if table.metadata().current_snapshot().is_none() {
        return Vec::new();
    }
    let stream = table
        .scan()
        .select(["event_id"])
        .build()
        .expect("scan")
        .to_arrow()
        .await
        .expect("scan to arrow");
    let batches: Vec<arrow_array::RecordBatch> = stream.try_collect().await.expect("read batches");
    let mut ids = Vec::new();
    for batch in batches {
        let column = batch.column(0).as_fixed_size_binary();
        for i in 0..column.len() {
            ids.push(<[u8; 16]>::try_from(column.value(i)).expect("16-byte id"));
        }
    }
    ids
}

/// Rows of the dead-letter table from `topic`: (partition, offset, reason, raw).
pub async fn dead_letters(catalog: &LakeCatalog, topic: &str) -> Vec<(i32, i64, String, Vec<u8>)> {
    let Ok(table) = catalog
        .load_table(tlake_catalog_client::DEAD_LETTER_TABLE)
        .await
    else {
        return Vec::new();
    };
    if table.metadata().current_snapshot().is_none() {
        return Vec::new();
    }
    let batches: Vec<arrow_array::RecordBatch> = table
        .scan()
        .select(["topic", "kafka_partition", "kafka_offset", "reason", "raw"])
        .build()
        .expect("scan")
        .to_arrow()
        .await
        .expect("scan to arrow")
        .try_collect()
        .await
        .expect("read batches");
    let mut out = Vec::new();
    for b in batches {
        let topics = b.column(0).as_string::<i32>();
        let partitions = b.column(1).as_primitive::<arrow_array::types::Int32Type>();
        let offsets = b.column(2).as_primitive::<arrow_array::types::Int64Type>();
        let reasons = b.column(3).as_string::<i32>();
        let raw = b.column(4).as_binary::<i64>();
        for i in 0..b.num_rows() {
            if topics.value(i) == topic {
                out.push((
                    partitions.value(i),
                    offsets.value(i),
                    reasons.value(i).to_owned(),
                    raw.value(i).to_vec(),
                ));
            }
        }
    }
    out
}

/// Waits until `table` holds at least `n` rows (by iceberg-rust scan); returns its ids.
pub async fn wait_for_rows(
    catalog: &LakeCatalog,
    table: &str,
    n: usize,
    timeout: Duration,
) -> Vec<[u8; 16]> {
    let deadline = Instant::now() + timeout;
    loop {
        let ids = scan_event_ids(catalog, table).await;
        if ids.len() >= n || Instant::now() > deadline {
            return ids;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The `tlake` CLI with the local stack's catalog, object store, Kafka and
/// keys in its environment (and no `AWS_*` keys, so it shows it reads its own).
pub fn tlake_command() -> Command {
    let mut command = Command::new(crate::process::binary("tlake"));
    for key in [
        "TLAKE_CATALOG_URI",
        "TLAKE_WAREHOUSE",
        "TLAKE_S3_ENDPOINT",
        "TLAKE_S3_REGION",
        "TLAKE_S3_ACCESS_KEY",
        "TLAKE_S3_SECRET_KEY",
        "TLAKE_KAFKA_BROKERS",
    ] {
        command.env(key, env(key));
    }
    command
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY");
    command
}

/// Runs SQL with DuckDB (the seed's `deploy/local/duckdb-sql --csv`) and
/// returns the CSV rows without the header.
pub fn duckdb_csv(sql: &str) -> Vec<Vec<String>> {
    let output = Command::new(repo_root().join("deploy/local/duckdb-sql"))
        .arg("--csv")
        .arg(sql)
        .output()
        .expect("run deploy/local/duckdb-sql");
    assert!(
        output.status.success(),
        "duckdb-sql failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect()
}

/// `curl ARGS… <TLAKE_NESSIE_URI>/<path>` against Nessie's native API: the body, or a panic
/// naming the call.
fn nessie_api(args: &[&str], path: &str) -> Vec<u8> {
    let out = Command::new("curl")
        .arg("-sSf")
        .args(args)
        .arg(format!("{}/{path}", env("TLAKE_NESSIE_URI")))
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "Nessie {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The commit hash of Nessie's `main` branch.
pub fn nessie_main_hash() -> String {
    let body: serde_json::Value =
        serde_json::from_slice(&nessie_api(&[], "trees/main")).expect("Nessie reference JSON");
    body["reference"]["hash"]
        .as_str()
        .expect("reference.hash")
        .to_owned()
}

/// Puts Nessie's `main` back to `hash`: every table commit since is gone, as
/// when the catalog keeps another writer's commit instead of one of ours.
pub fn nessie_reset_main(hash: &str) {
    let current = nessie_main_hash();
    let body = format!(r#"{{"type":"BRANCH","name":"main","hash":"{hash}"}}"#);
    nessie_api(
        &[
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/json",
            "-d",
            &body,
        ],
        &format!("trees/main@{current}"),
    );
}
