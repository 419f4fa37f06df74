//! plan: which files a rewrite takes — the small files of the default
//! spec by partition ([`plan_rewrites`]), or every file of an older spec
//! ([`plan_relayout`]) — cut into groups of one replace commit each.

use std::collections::HashMap;

use iceberg::spec::{DataFile, Struct};

use crate::{LiveFile, Settings};

/// One partition's files (small ones, or ones of an older partition spec),
/// rewritten by one replace commit.
#[derive(Debug, Clone, PartialEq)]
pub struct RewriteGroup {
    /// The partition tuple.
    pub partition: Struct,
    /// The files to read and replace.
    pub files: Vec<DataFile>,
}

impl RewriteGroup {
    /// Bytes of the small files.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(DataFile::file_size_in_bytes).sum()
    }

    /// Rows of the small files.
    pub fn rows(&self) -> u64 {
        self.files.iter().map(DataFile::record_count).sum()
    }
}

/// Groups of small files worth rewriting: live files of the default spec
/// below `small_file_bytes`, by partition, cut into chunks of at most
/// `max_rewrite_bytes`, each with at least `min_files` files. Deterministic
/// (files by path, groups by their first path).
pub fn plan_rewrites(
    files: &[LiveFile],
    default_spec_id: i32,
    settings: &Settings,
) -> Vec<RewriteGroup> {
    let mut by_partition: HashMap<&Struct, Vec<&DataFile>> = HashMap::new();
    for file in files {
        let f = &file.data_file;
        if file.partition_spec_id == default_spec_id
            && f.file_size_in_bytes() < settings.small_file_bytes
        {
            by_partition.entry(f.partition()).or_default().push(f);
        }
    }
    let mut groups: Vec<RewriteGroup> = by_partition
        .into_iter()
        .flat_map(|(partition, files)| chunks(partition, files, settings.max_rewrite_bytes))
        .collect();
    groups.retain(|g| g.files.len() >= settings.min_files);
    groups.sort_by(|a, b| a.files[0].file_path().cmp(b.files[0].file_path()));
    groups
}

/// Groups of the live files written under another partition spec than
/// `default_spec_id` — every one, whatever its size — by (spec, partition),
/// cut into chunks of at most `max_rewrite_bytes`. Their rewrite is split
/// by the current spec (e.g. a day's file into hour files). Deterministic.
pub fn plan_relayout(
    files: &[LiveFile],
    default_spec_id: i32,
    settings: &Settings,
) -> Vec<RewriteGroup> {
    let mut by_partition: HashMap<(i32, &Struct), Vec<&DataFile>> = HashMap::new();
    for file in files {
        if file.partition_spec_id != default_spec_id {
            let f = &file.data_file;
            by_partition
                .entry((file.partition_spec_id, f.partition()))
                .or_default()
                .push(f);
        }
    }
    let mut groups: Vec<RewriteGroup> = by_partition
        .into_iter()
        .flat_map(|((_, partition), files)| chunks(partition, files, settings.max_rewrite_bytes))
        .collect();
    groups.sort_by(|a, b| a.files[0].file_path().cmp(b.files[0].file_path()));
    groups
}

/// One partition's `files`, by path, cut into groups of at most
/// `max_bytes` (a file larger than that is a group of its own).
fn chunks(partition: &Struct, mut files: Vec<&DataFile>, max_bytes: u64) -> Vec<RewriteGroup> {
    files.sort_by(|a, b| a.file_path().cmp(b.file_path()));
    let mut groups = Vec::new();
    let mut chunk: Vec<DataFile> = Vec::new();
    let mut bytes = 0u64;
    for file in files {
        if !chunk.is_empty() && bytes + file.file_size_in_bytes() > max_bytes {
            groups.push(RewriteGroup {
                partition: partition.clone(),
                files: std::mem::take(&mut chunk),
            });
            bytes = 0;
        }
        bytes += file.file_size_in_bytes();
        chunk.push(file.clone());
    }
    groups.push(RewriteGroup {
        partition: partition.clone(),
        files: chunk,
    });
    groups
}

#[cfg(test)]
mod tests {
    use iceberg::spec::{DataContentType, DataFileBuilder, Literal};

    use super::*;

    fn file(path: &str, day: i32, size: u64, spec: i32) -> LiveFile {
        LiveFile {
            data_file: DataFileBuilder::default()
                .content(DataContentType::Data)
                .file_path(path.to_owned())
                .file_format(iceberg::spec::DataFileFormat::Parquet)
                .partition(Struct::from_iter([Some(Literal::int(day))]))
                .record_count(10)
                .file_size_in_bytes(size)
                .partition_spec_id(spec)
                .build()
                .expect("data file"),
            partition_spec_id: spec,
        }
    }

    fn settings() -> Settings {
        Settings {
            small_file_bytes: 100,
            min_files: 2,
            target_file_bytes: 1 << 20,
            max_rewrite_bytes: 250,
            ..Settings::default()
        }
    }

    fn paths(groups: &[RewriteGroup]) -> Vec<Vec<&str>> {
        groups
            .iter()
            .map(|g| g.files.iter().map(|f| f.file_path()).collect())
            .collect()
    }

    #[test]
    fn only_partitions_with_enough_small_files_are_rewritten() {
        let files = [
            file("d1/b", 1, 50, 0),
            file("d1/a", 1, 50, 0),
            file("d1/big", 1, 500, 0), // not small
            file("d2/a", 2, 50, 0),    // alone in its partition
            file("d2/old", 2, 50, 7),  // another spec
            file("d3/a", 3, 99, 0),
            file("d3/b", 3, 99, 0),
        ];
        let groups = plan_rewrites(&files, 0, &settings());
        assert_eq!(
            paths(&groups),
            vec![vec!["d1/a", "d1/b"], vec!["d3/a", "d3/b"]]
        );
        assert_eq!(groups[0].bytes(), 100);
        assert_eq!(groups[0].rows(), 20);
    }

    #[test]
    fn large_partitions_are_cut_at_the_rewrite_bound() {
        let files: Vec<LiveFile> = (0..7).map(|i| file(&format!("d1/{i}"), 1, 90, 0)).collect();
        // 250 bytes per group: 2 files each; the last single file is left.
        let groups = plan_rewrites(&files, 0, &settings());
        assert_eq!(
            paths(&groups),
            vec![
                vec!["d1/0", "d1/1"],
                vec!["d1/2", "d1/3"],
                vec!["d1/4", "d1/5"]
            ]
        );
    }

    #[test]
    fn relayout_takes_every_file_of_other_specs_by_spec_and_partition() {
        let files = [
            file("d1/new", 1, 50, 2),  // the current spec: left alone
            file("d1/old", 1, 500, 0), // large, but of an older spec
            file("h1/x", 1, 90, 1),    // same partition value, another old spec
            file("h1/y", 1, 90, 1),
            file("h1/z", 1, 90, 1),
            file("d2/old", 2, 10, 0), // alone: still rewritten
        ];
        let groups = plan_relayout(&files, 2, &settings());
        assert_eq!(
            paths(&groups),
            vec![
                vec!["d1/old"],
                vec!["d2/old"],
                vec!["h1/x", "h1/y"],
                vec!["h1/z"]
            ]
        );
        assert!(plan_relayout(&files[..1], 2, &settings()).is_empty());
    }
}
