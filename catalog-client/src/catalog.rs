//! The connection to Nessie's Iceberg REST catalog: tables, progress, and
//! commits that carry Kafka offsets (ARCHITECTURE §2).

use std::collections::{BTreeMap, HashMap};

use std::sync::Arc;
use std::time::Duration;

use iceberg::io::{
    S3_ACCESS_KEY_ID, S3_ENDPOINT, S3_PATH_STYLE_ACCESS, S3_REGION, S3_SECRET_ACCESS_KEY,
};
use iceberg::spec::{
    DataFile, FormatVersion, MapType, NestedField, NestedFieldRef, Schema, TableMetadata, Type,
};
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::{Catalog, CatalogBuilder, ErrorKind, NamespaceIdent, TableCreation, TableIdent};
use iceberg_catalog_rest::{
    REST_CATALOG_PROP_URI, REST_CATALOG_PROP_WAREHOUSE, RestCatalogBuilder,
};
use iceberg_storage_opendal::OpenDalStorageFactory;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::offsets::{self, Fence, Offsets};
use crate::pinned::PinnedCatalog;
use crate::schema::{
    EVENT_TIME, Layout, SortBy, TableKind, TimePartition, check_compatibility, sort_order_id,
    time_spec_id,
};

/// Snapshot summary key: the full merged offsets map (JSON).
pub const SUMMARY_OFFSETS: &str = "tlake.offsets";
/// Snapshot summary key: the commit's id (UUID), for reconciling unknown outcomes.
pub const SUMMARY_COMMIT_ID: &str = "tlake.commit-id";
/// Snapshot summary key: the committing process's writer epoch.
pub const SUMMARY_WRITER_EPOCH: &str = "tlake.writer-epoch";
/// Snapshot summary key: newest event time committed so far (µs since epoch).
pub const SUMMARY_MAX_EVENT_TIME: &str = "tlake.max-event-time-us";
/// Table property: iceberg-rust's own commit retries. We set 0: retries are ours.
const PROP_COMMIT_RETRIES: &str = "commit.retry.num-retries";

/// S3 settings the client itself uses for data and metadata files.
#[derive(Clone)]
pub struct S3Settings {
    /// e.g. `http://127.0.0.1:9000`.
    pub endpoint: String,
    /// e.g. `us-east-1`.
    pub region: String,
    /// Path-style addressing (needed by most self-hosted S3 servers).
    pub path_style: bool,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
}

impl std::fmt::Debug for S3Settings {
    /// Never the keys: a catalog (which holds these) is printed in logs and
    /// errors.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .finish_non_exhaustive()
    }
}

/// Where the catalog is.
#[derive(Debug, Clone)]
pub struct CatalogSettings {
    /// Iceberg REST base URI, e.g. `http://127.0.0.1:19120/iceberg/`.
    pub uri: String,
    /// Warehouse name, e.g. `telemetrylake`.
    pub warehouse: String,
    /// Namespace holding one table per stream, e.g. `logs`.
    pub namespace: String,
    /// Object storage settings.
    pub s3: S3Settings,
    /// Upper bound of one HTTP request to the catalog.
    pub request_timeout: Duration,
}

/// What a commit did. `Unknown` is never "failed": the same request must be
/// retried (it reconciles first) before its data may be dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    /// The snapshot is in the table (its id).
    Committed(i64),
    /// Another writer moved a partition of this flush: drop it, re-seek.
    Fenced(Fence),
    /// The catalog could not be reached to learn what happened.
    Unknown,
}

/// One flush to commit.
#[derive(Debug, Clone)]
pub struct CommitRequest {
    /// Table name in the namespace.
    pub table: String,
    /// topic → partition → offset the table held when this flush started
    /// (None: nothing stored). Only partitions this flush moves.
    pub expected: BTreeMap<String, BTreeMap<i32, Option<i64>>>,
    /// topic → partition → next offset after this flush.
    pub next: Offsets,
    /// Data files already written.
    pub files: Vec<DataFile>,
    /// Unique per flush; the same on every retry of it.
    pub commit_id: Uuid,
    /// The writer's epoch (process start, ms).
    pub writer_epoch: u64,
    /// Newest event time in the flush (µs).
    pub max_event_time_us: Option<i64>,
}

/// Committed progress of one table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    /// Snapshot the offsets were read from.
    pub snapshot_id: Option<i64>,
    /// topic → partition → next offset.
    pub offsets: Offsets,
    /// Newest event time committed (µs since epoch).
    pub newest_event_time_us: Option<i64>,
}

/// A connected catalog client.
#[derive(Debug, Clone)]
pub struct LakeCatalog {
    rest: Arc<dyn Catalog>,
    namespace: NamespaceIdent,
    /// For the one call iceberg-rust cannot make against Nessie (schema updates).
    http: reqwest::Client,
    uri: String,
    warehouse: String,
    /// Every catalog request's timeout: what the orphan grace floor is computed from.
    request_timeout: Duration,
    /// S3 settings, for those who list and delete objects (maintenance).
    s3: S3Settings,
}

impl LakeCatalog {
    /// Connects and makes sure the namespace exists.
    pub async fn connect(settings: &CatalogSettings) -> Result<Self> {
        if settings.uri.trim().is_empty() {
            return Err(Error::Config("catalog uri is empty".into()));
        }
        if settings.namespace.trim().is_empty() {
            return Err(Error::Config("namespace is empty".into()));
        }
        let props = HashMap::from([
            (REST_CATALOG_PROP_URI.to_owned(), settings.uri.clone()),
            (
                REST_CATALOG_PROP_WAREHOUSE.to_owned(),
                settings.warehouse.clone(),
            ),
            (S3_ENDPOINT.to_owned(), settings.s3.endpoint.clone()),
            (S3_REGION.to_owned(), settings.s3.region.clone()),
            (
                S3_PATH_STYLE_ACCESS.to_owned(),
                settings.s3.path_style.to_string(),
            ),
            (
                S3_ACCESS_KEY_ID.to_owned(),
                settings.s3.access_key_id.clone(),
            ),
            (
                S3_SECRET_ACCESS_KEY.to_owned(),
                settings.s3.secret_access_key.clone(),
            ),
        ]);
        let http = reqwest::Client::builder()
            .timeout(settings.request_timeout)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| Error::Config(format!("HTTP client: {e}")))?;
        let rest = RestCatalogBuilder::default()
            .with_client(http.clone())
            .with_storage_factory(Arc::new(OpenDalStorageFactory::S3 {
                customized_credential_load: None,
            }))
            .load("tlake", props)
            .await?;
        let catalog = Self {
            rest: Arc::new(rest),
            namespace: NamespaceIdent::new(settings.namespace.clone()),
            http,
            uri: settings.uri.trim_end_matches('/').to_owned(),
            warehouse: settings.warehouse.clone(),
            request_timeout: settings.request_timeout,
            s3: settings.s3.clone(),
        };
        catalog.ensure_namespace().await?;
        Ok(catalog)
    }

    /// The underlying iceberg-rust catalog, for reads and tools. Commits to
    /// compactor tables must go through [`LakeCatalog::commit`].
    pub fn iceberg(&self) -> &Arc<dyn Catalog> {
        &self.rest
    }

    /// Every catalog request's timeout (the orphan grace floor is computed
    /// from it: `retry::orphan_grace_floor`).
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// The object storage settings this catalog was connected with.
    pub fn s3(&self) -> &S3Settings {
        &self.s3
    }

    /// The namespace holding the tables.
    pub fn namespace(&self) -> &NamespaceIdent {
        &self.namespace
    }

    /// The identifier of `table` in our namespace.
    pub fn ident(&self, table: &str) -> TableIdent {
        TableIdent::new(self.namespace.clone(), table.to_owned())
    }

    async fn ensure_namespace(&self) -> Result<()> {
        if self.rest.namespace_exists(&self.namespace).await? {
            return Ok(());
        }
        match self
            .rest
            .create_namespace(&self.namespace, HashMap::new())
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NamespaceAlreadyExists => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Names of the tables in the namespace.
    pub async fn list_tables(&self) -> Result<Vec<String>> {
        Ok(self
            .rest
            .list_tables(&self.namespace)
            .await?
            .into_iter()
            .map(|t| t.name().to_owned())
            .collect())
    }

    /// Loads a table.
    pub async fn load_table(&self, table: &str) -> Result<Table> {
        Ok(self.rest.load_table(&self.ident(table)).await?)
    }

    /// Creates `table` with `kind`'s layout, or checks the existing one and
    /// adds missing optional columns. Refuses tables it cannot write to.
    pub async fn ensure_table(&self, table: &str, kind: TableKind) -> Result<Table> {
        self.ensure_layout(table, &kind.into()).await
    }

    /// [`Self::ensure_table`] for a layout with promoted attributes: their
    /// columns are added (new files fill them; old rows read null).
    pub async fn ensure_layout(&self, table: &str, layout: &Layout) -> Result<Table> {
        let kind = layout.kind;
        let ident = self.ident(table);
        let existing = match self.rest.load_table(&ident).await {
            Ok(t) => t,
            Err(e) if e.kind() == ErrorKind::TableNotFound => {
                let creation = TableCreation::builder()
                    .name(table.to_owned())
                    .schema(kind.schema())
                    .partition_spec(kind.partition_spec())
                    .sort_order(kind.sort_order())
                    .format_version(FormatVersion::V2)
                    .properties([
                        (PROP_COMMIT_RETRIES.to_owned(), "0".to_owned()),
                        (
                            "write.parquet.compression-codec".to_owned(),
                            "zstd".to_owned(),
                        ),
                    ])
                    .build();
                match self.rest.create_table(&self.namespace, creation).await {
                    Ok(t) => t,
                    // Another compactor created it first.
                    Err(e) if e.kind() == ErrorKind::TableAlreadyExists => {
                        self.rest.load_table(&ident).await?
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        };
        self.check_and_evolve(existing, layout).await
    }

    /// Checks a loaded table against `layout`; evolves it additively if needed.
    pub async fn check_and_evolve(&self, table: Table, layout: &Layout) -> Result<Table> {
        let name = table.identifier().to_string();
        let evolution = check_compatibility(layout, table.metadata()).map_err(|reason| {
            Error::Incompatible {
                table: name.clone(),
                reason,
            }
        })?;
        if evolution.add_columns.is_empty()
            && evolution.partition.is_none()
            && evolution.sort.is_none()
        {
            return Ok(table);
        }
        let mut table = table;
        if !evolution.add_columns.is_empty() {
            tracing::info!(table = %name, columns = ?evolution.add_columns.iter().map(|c| &c.name).collect::<Vec<_>>(), "adding missing optional columns");
            self.add_columns(&table, &evolution.add_columns).await?;
            table = self.rest.load_table(table.identifier()).await?;
        }
        if let Some(partition) = evolution.partition {
            tracing::info!(table = %name, ?partition, "new files get a new time partitioning; old files keep theirs");
            self.set_time_partition(&table, partition).await?;
            table = self.rest.load_table(table.identifier()).await?;
        }
        if let Some(sort) = evolution.sort {
            tracing::info!(table = %name, ?sort, "new files are written in a new sort order; old files keep theirs");
            self.set_sort_order(&table, sort).await?;
            table = self.rest.load_table(table.identifier()).await?;
        }
        check_compatibility(layout, table.metadata()).map_err(|reason| Error::Incompatible {
            table: name,
            reason,
        })?;
        Ok(table)
    }

    /// Adds optional columns with one REST commit of our own: iceberg-rust's
    /// `AddSchema` update omits `last-column-id`, which Nessie requires.
    async fn add_columns(&self, table: &Table, columns: &[NestedFieldRef]) -> Result<()> {
        let metadata = table.metadata();
        let current = metadata.current_schema();
        let mut next_id = metadata.last_column_id();
        let mut fields: Vec<NestedFieldRef> = current.as_struct().fields().to_vec();
        for column in columns {
            next_id += 1;
            let id = next_id;
            let ty = renumber(&column.field_type, &mut next_id);
            let mut field = NestedField::optional(id, column.name.clone(), ty);
            field.doc = column.doc.clone();
            fields.push(field.into());
        }
        let schema_id = metadata
            .schemas_iter()
            .map(|s| s.schema_id())
            .max()
            .unwrap_or(0)
            + 1;
        let schema = Schema::builder()
            .with_schema_id(schema_id)
            .with_fields(fields)
            .build()?;
        let body = serde_json::json!({
            "identifier": {"namespace": self.namespace.as_ref(), "name": table.identifier().name()},
            "requirements": [
                {"type": "assert-table-uuid", "uuid": metadata.uuid().to_string()},
                {"type": "assert-current-schema-id", "current-schema-id": metadata.current_schema_id()},
                {"type": "assert-last-assigned-field-id", "last-assigned-field-id": metadata.last_column_id()},
            ],
            "updates": [
                {"action": "add-schema", "schema": schema, "last-column-id": next_id},
                {"action": "set-current-schema", "schema-id": -1},
            ],
        });
        self.post_metadata_update(table, "schema", &body).await
    }

    /// Makes `partition` of event time the default spec with one REST commit
    /// of our own (an existing spec of that shape is reused, so switching
    /// back adds nothing). Files already written keep their spec.
    async fn set_time_partition(&self, table: &Table, partition: TimePartition) -> Result<()> {
        let metadata = table.metadata();
        let event_time = metadata
            .current_schema()
            .field_by_name(EVENT_TIME)
            .ok_or_else(|| {
                Error::unexpected(format!("{} has no {EVENT_TIME} column", table.identifier()))
            })?
            .id;
        let mut updates = Vec::new();
        let spec_id = match time_spec_id(metadata, partition) {
            Some(id) => id,
            None => {
                updates.push(serde_json::json!({"action": "add-spec", "spec": {
                    "spec-id": metadata.partition_specs_iter().map(|s| s.spec_id()).max().unwrap_or(0) + 1,
                    "fields": [{
                        "source-id": event_time,
                        // Nessie requires the partition field id.
                        "field-id": metadata.last_partition_id() + 1,
                        "name": partition.field_name(),
                        "transform": partition.transform().to_string(),
                    }],
                }}));
                -1
            }
        };
        updates.push(serde_json::json!({"action": "set-default-spec", "spec-id": spec_id}));
        let body = serde_json::json!({
            "identifier": {"namespace": self.namespace.as_ref(), "name": table.identifier().name()},
            "requirements": [
                {"type": "assert-table-uuid", "uuid": metadata.uuid().to_string()},
                {"type": "assert-default-spec-id", "default-spec-id": metadata.default_partition_spec_id()},
                {"type": "assert-last-assigned-partition-id", "last-assigned-partition-id": metadata.last_partition_id()},
            ],
            "updates": updates,
        });
        self.post_metadata_update(table, "partition spec", &body)
            .await
    }

    /// Makes `sort` the default sort order with one REST commit of our own
    /// (an existing order of that shape is reused).
    async fn set_sort_order(&self, table: &Table, sort: SortBy) -> Result<()> {
        let metadata = table.metadata();
        let schema = metadata.current_schema();
        let mut updates = Vec::new();
        let order_id = match sort_order_id(metadata, sort) {
            Some(id) => id,
            None => {
                let mut fields = Vec::new();
                for column in sort.columns() {
                    let field = schema.field_by_name(column).ok_or_else(|| {
                        Error::unexpected(format!("{} has no {column} column", table.identifier()))
                    })?;
                    fields.push(serde_json::json!({
                        "source-id": field.id, "transform": "identity",
                        "direction": "asc", "null-order": "nulls-first",
                    }));
                }
                updates.push(serde_json::json!({"action": "add-sort-order", "sort-order": {
                    "order-id": metadata.sort_orders_iter().map(|o| o.order_id).max().unwrap_or(0) + 1,
                    "fields": fields,
                }}));
                -1
            }
        };
        updates.push(
            serde_json::json!({"action": "set-default-sort-order", "sort-order-id": order_id}),
        );
        let body = serde_json::json!({
            "identifier": {"namespace": self.namespace.as_ref(), "name": table.identifier().name()},
            "requirements": [
                {"type": "assert-table-uuid", "uuid": metadata.uuid().to_string()},
                {"type": "assert-current-schema-id", "current-schema-id": metadata.current_schema_id()},
            ],
            "updates": updates,
        });
        self.post_metadata_update(table, "sort order", &body).await
    }

    /// Posts a metadata-only commit (schema, partition spec): applied, or an
    /// error — a 409 as a retryable conflict, anything else naming `what`.
    async fn post_metadata_update(
        &self,
        table: &Table,
        what: &str,
        body: &serde_json::Value,
    ) -> Result<()> {
        match self
            .post_table_update(table.identifier().name(), body)
            .await?
        {
            Posted::Applied => Ok(()),
            Posted::Conflict(text) => Err(iceberg::Error::new(
                ErrorKind::CatalogCommitConflicts,
                format!("{what} update answered 409: {text}"),
            )
            .into()),
            Posted::Refused(status, text) | Posted::Unknown(status, text) => Err(
                Error::unexpected(format!("{what} update answered {status}: {text}")),
            ),
        }
    }

    /// Posts one table commit (`{identifier, requirements, updates}`) to the
    /// REST catalog ourselves, for the updates iceberg-rust cannot send to
    /// Nessie (schema changes) or has no action for (replace, expiry).
    pub async fn post_table_update(&self, table: &str, body: &serde_json::Value) -> Result<Posted> {
        let prefix = self.prefix().await?;
        let url = format!(
            "{}/v1/{prefix}/namespaces/{}/tables/{}",
            self.uri,
            self.namespace.to_url_string(),
            table
        );
        let response = match self
            .http
            .post(url)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(body).unwrap_or_default())
            .send()
            .await
        {
            Ok(r) => r,
            // Sent or not, we cannot tell: the caller reconciles.
            Err(e) => return Ok(Posted::Unknown(0, format!("request failed: {e}"))),
        };
        let status = response.status();
        if status.is_success() {
            return Ok(Posted::Applied);
        }
        let text = response.text().await.unwrap_or_default();
        Ok(match status.as_u16() {
            409 => Posted::Conflict(text),
            code @ 400..=499 => Posted::Refused(code, text),
            code => Posted::Unknown(code, text),
        })
    }

    /// The REST path prefix the catalog announces for our warehouse.
    async fn prefix(&self) -> Result<String> {
        let url = format!("{}/v1/config?warehouse={}", self.uri, self.warehouse);
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| Error::unexpected(format!("config request: {e}")))?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| Error::unexpected(format!("config response: {e}")))?;
        let config: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::unexpected(format!("config response: {e}")))?;
        Ok(["overrides", "defaults"]
            .iter()
            .find_map(|k| config[k]["prefix"].as_str())
            .unwrap_or_default()
            .to_owned())
    }

    /// Committed offsets and newest event time of `table`.
    pub async fn progress(&self, table: &str) -> Result<Progress> {
        let table = self.load_table(table).await?;
        progress_of(&table.identifier().to_string(), table.metadata())
    }

    /// Commits `request` as one fast-append snapshot. Conflicts are retried
    /// here (on 409: reload, re-check fencing, re-merge, try again, paced by
    /// [`retry::conflicts`](crate::retry::conflicts)); an unknown outcome is
    /// returned as [`CommitOutcome::Unknown`] for the caller to retry with
    /// the same request, whose next call reloads and looks for the commit id
    /// first.
    pub async fn commit(&self, request: &CommitRequest) -> Result<CommitOutcome> {
        let ident = self.ident(&request.table);
        let name = ident.to_string();
        let mut conflict_waits = crate::retry::conflicts();
        let mut conflicts = 0u32;
        loop {
            let table = match self.rest.load_table(&ident).await {
                Ok(t) => t,
                Err(e) if Error::from(e.clone_shallow()).retryable() => {
                    tracing::warn!(table = %name, error = %e, "cannot reload table before commit");
                    return Ok(CommitOutcome::Unknown);
                }
                Err(e) => return Err(e.into()),
            };
            if let Some(id) = find_commit(table.metadata(), request.commit_id) {
                return Ok(CommitOutcome::Committed(id));
            }
            let progress = progress_of(&name, table.metadata())?;
            for (topic, expected) in &request.expected {
                if let Some(fence) = offsets::check_fence(&progress.offsets, topic, expected) {
                    return Ok(CommitOutcome::Fenced(fence));
                }
            }
            let mut merged = progress.offsets.clone();
            for (topic, next) in &request.next {
                merged = offsets::merge(&merged, topic, next);
            }
            let newest = match (progress.newest_event_time_us, request.max_event_time_us) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            let mut summary = HashMap::from([
                (SUMMARY_OFFSETS.to_owned(), offsets::to_json(&merged)),
                (SUMMARY_COMMIT_ID.to_owned(), request.commit_id.to_string()),
                (
                    SUMMARY_WRITER_EPOCH.to_owned(),
                    request.writer_epoch.to_string(),
                ),
            ]);
            if let Some(t) = newest {
                summary.insert(SUMMARY_MAX_EVENT_TIME.to_owned(), t.to_string());
            }
            let tx = Transaction::new(&table);
            let action = tx
                .fast_append()
                // File names are unique per flush and commit ids are checked
                // above, so the per-commit scan of every manifest is not needed.
                .with_check_duplicate(false)
                .set_commit_uuid(request.commit_id)
                .set_snapshot_properties(summary)
                .add_data_files(request.files.iter().cloned());
            let tx = action.apply(tx)?;
            let pinned = PinnedCatalog {
                inner: self.rest.clone(),
                table: table.clone(),
            };
            match tx.commit(&pinned).await {
                Ok(committed) => {
                    let id = find_commit(committed.metadata(), request.commit_id)
                        .or_else(|| committed.metadata().current_snapshot_id())
                        .unwrap_or_default();
                    return Ok(CommitOutcome::Committed(id));
                }
                Err(e) if e.kind() == ErrorKind::CatalogCommitConflicts => {
                    conflicts += 1;
                    tracing::info!(table = %name, conflicts, "commit conflict, reloading");
                    let Some(wait) = conflict_waits.next() else {
                        return Err(Error::TooManyConflicts {
                            table: name,
                            attempts: conflicts,
                        });
                    };
                    tokio::time::sleep(wait).await;
                }
                Err(e) => {
                    // 5xx, timeout, dropped connection, or a failed manifest
                    // upload: the outcome is unknown. The caller's next call
                    // reloads and looks for our commit id (and the fence
                    // catches it even if the snapshot was replaced).
                    tracing::warn!(table = %name, error = %e, "commit outcome unknown");
                    return Ok(CommitOutcome::Unknown);
                }
            }
        }
    }
}

/// Progress recorded in the newest snapshot (or its nearest ancestor) that
/// carries `tlake.offsets`. A table with snapshots but none carrying offsets
/// (written by someone else, or an ancestor the catalog no longer lists —
/// Nessie returns only the current snapshot) is an error: guessing "nothing
/// consumed" would re-read and duplicate everything.
pub fn progress_of(table: &str, metadata: &TableMetadata) -> Result<Progress> {
    let mut snapshot = metadata.current_snapshot().cloned();
    let Some(current) = snapshot.as_ref().map(|s| s.snapshot_id()) else {
        return Ok(Progress::default());
    };
    while let Some(s) = snapshot {
        let props = &s.summary().additional_properties;
        if let Some(text) = props.get(SUMMARY_OFFSETS) {
            let offsets = offsets::from_json(text).map_err(|reason| Error::CorruptOffsets {
                table: table.to_owned(),
                snapshot_id: s.snapshot_id(),
                reason,
            })?;
            return Ok(Progress {
                snapshot_id: Some(s.snapshot_id()),
                offsets,
                newest_event_time_us: props
                    .get(SUMMARY_MAX_EVENT_TIME)
                    .and_then(|t| t.parse().ok()),
            });
        }
        snapshot = s
            .parent_snapshot_id()
            .and_then(|p| metadata.snapshot_by_id(p))
            .cloned();
    }
    Err(Error::CorruptOffsets {
        table: table.to_owned(),
        snapshot_id: current,
        reason: format!(
            "no snapshot the catalog lists carries {SUMMARY_OFFSETS}: the table was written \
             by another writer that did not carry the offsets forward"
        ),
    })
}

/// What the catalog answered to a table commit we posted ourselves
/// ([`LakeCatalog::post_table_update`]).
#[derive(Debug)]
pub enum Posted {
    /// 2xx: the commit is in.
    Applied,
    /// 409: a requirement failed (the table moved); reload and retry.
    Conflict(String),
    /// Another 4xx: the catalog refuses this request for good.
    Refused(u16, String),
    /// 5xx or no answer (status 0): it may or may not have been applied.
    Unknown(u16, String),
}

/// `ty` with fresh field ids for nested fields (a new column's map key and value).
fn renumber(ty: &Type, next_id: &mut i32) -> Type {
    match ty {
        Type::Map(map) => {
            *next_id += 1;
            let key_id = *next_id;
            *next_id += 1;
            let value_id = *next_id;
            let key = renumber(&map.key_field.field_type, next_id);
            let value = renumber(&map.value_field.field_type, next_id);
            Type::Map(MapType::new(
                NestedField::map_key_element(key_id, key).into(),
                NestedField::map_value_element(value_id, value, map.value_field.required).into(),
            ))
        }
        other => other.clone(),
    }
}

/// The snapshot carrying `commit_id`, among those the metadata still lists.
pub fn find_commit(metadata: &TableMetadata, commit_id: Uuid) -> Option<i64> {
    let id = commit_id.to_string();
    metadata
        .snapshots()
        .find(|s| s.summary().additional_properties.get(SUMMARY_COMMIT_ID) == Some(&id))
        .map(|s| s.snapshot_id())
}

trait CloneShallow {
    fn clone_shallow(&self) -> iceberg::Error;
}

impl CloneShallow for iceberg::Error {
    fn clone_shallow(&self) -> iceberg::Error {
        let e = iceberg::Error::new(self.kind(), self.message().to_owned());
        e.with_retryable(self.retryable())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_never_print_the_keys() {
        let settings = CatalogSettings {
            uri: "http://127.0.0.1:19120/iceberg/".into(),
            warehouse: "telemetrylake".into(),
            namespace: "logs".into(),
            s3: S3Settings {
                endpoint: "http://127.0.0.1:9000".into(),
                region: "us-east-1".into(),
                path_style: true,
                access_key_id: "AKIAEXAMPLEKEYID".into(),
                secret_access_key: "wJalrXUtnFEMIsecretEXAMPLE".into(),
            },
            request_timeout: Duration::from_secs(30),
        };
        let printed = format!("{settings:?}");
        assert!(printed.contains("127.0.0.1:9000"), "{printed}");
        for key in ["AKIAEXAMPLEKEYID", "wJalrXUtnFEMIsecretEXAMPLE"] {
            assert!(!printed.contains(key), "{printed}");
        }
    }
}
