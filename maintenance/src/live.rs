//! live: the live data files of a table's current snapshot, as the rewrite and the merge see them.

use iceberg::io::FileIO;
use iceberg::spec::{DataFile, FormatVersion, ManifestContentType, ManifestList, Snapshot};
use iceberg::table::Table;

use tlake_catalog_client::Result;

/// One live data file of a table's current snapshot.
#[derive(Debug, Clone)]
pub struct LiveFile {
    /// The file as the manifest lists it.
    pub data_file: DataFile,
    /// Partition spec of the manifest listing it.
    pub partition_spec_id: i32,
}

pub(crate) async fn load_manifest_list(
    file_io: &FileIO,
    version: FormatVersion,
    snapshot: &Snapshot,
) -> Result<ManifestList> {
    let bytes = file_io.new_input(snapshot.manifest_list())?.read().await?;
    Ok(ManifestList::parse_with_version(&bytes, version)?)
}

/// The live data files of `table`'s current snapshot (none without one).
pub async fn live_data_files(table: &Table) -> Result<Vec<LiveFile>> {
    let metadata = table.metadata();
    let Some(snapshot) = metadata.current_snapshot() else {
        return Ok(Vec::new());
    };
    let list = load_manifest_list(table.file_io(), metadata.format_version(), snapshot).await?;
    let mut files = Vec::new();
    for manifest in list.entries() {
        if manifest.content != ManifestContentType::Data {
            continue;
        }
        for entry in manifest.load_manifest(table.file_io()).await?.entries() {
            if entry.is_alive() {
                files.push(LiveFile {
                    data_file: entry.data_file().clone(),
                    partition_spec_id: manifest.partition_spec_id,
                });
            }
        }
    }
    Ok(files)
}
