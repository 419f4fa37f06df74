//! `tlake tables`: every table in the stream namespace with its size and how
//! far it is committed, read from the catalog (the current snapshot's summary
//! and the `tlake.offsets` the compactor commits with each append).

use anyhow::{Context, Result};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use tlake_catalog_client::iceberg::table::Table;
use tlake_catalog_client::{Offsets, progress_of};

use crate::lake::{LakeArgs, S3Keys};

/// One table's line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TableInfo {
    /// Table name (the stream's name; `dead_letters` for undecodable records).
    pub table: String,
    /// Rows in the current snapshot.
    pub rows: u64,
    /// Data files in the current snapshot.
    pub files: u64,
    /// Bytes of those files.
    pub bytes: u64,
    /// Newest event time committed (RFC 3339), if any.
    pub newest_event_time: Option<String>,
    /// When the current snapshot was committed (RFC 3339), if any.
    pub committed_at: Option<String>,
    /// Committed watermark: topic → partition → next Kafka offset not yet in the table.
    pub committed_offsets: Offsets,
    /// Why the watermark could not be read (a table another writer wrote).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// Every table of the namespace, by name.
pub async fn list(lake: &LakeArgs, keys: &S3Keys) -> Result<Vec<TableInfo>> {
    let catalog = lake.connect(keys).await?;
    let mut names = catalog.list_tables().await.context("listing tables")?;
    names.sort();
    let mut infos = Vec::with_capacity(names.len());
    for name in names {
        let table = catalog
            .load_table(&name)
            .await
            .with_context(|| format!("loading table {name}"))?;
        infos.push(info(&name, &table));
    }
    Ok(infos)
}

/// `table`'s line, from its metadata (no data read).
pub fn info(name: &str, table: &Table) -> TableInfo {
    let metadata = table.metadata();
    let snapshot = metadata.current_snapshot();
    let total = |key: &str| {
        snapshot
            .and_then(|s| s.summary().additional_properties.get(key))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let (offsets, newest, problem) = match progress_of(name, metadata) {
        Ok(p) => (p.offsets, p.newest_event_time_us, None),
        Err(e) => (Offsets::new(), None, Some(e.to_string())),
    };
    TableInfo {
        table: name.to_owned(),
        rows: total("total-records"),
        files: total("total-data-files"),
        bytes: total("total-files-size"),
        newest_event_time: newest
            .and_then(DateTime::<Utc>::from_timestamp_micros)
            .map(rfc3339),
        committed_at: snapshot
            .and_then(|s| DateTime::<Utc>::from_timestamp_millis(s.timestamp_ms()))
            .map(rfc3339),
        committed_offsets: offsets,
        problem,
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `topic p:o p:o; topic …`, or `-`.
fn offsets_text(offsets: &Offsets) -> String {
    if offsets.is_empty() {
        return "-".into();
    }
    offsets
        .iter()
        .map(|(topic, parts)| {
            let parts: Vec<String> = parts.iter().map(|(p, o)| format!("{p}:{o}")).collect();
            format!("{topic} {}", parts.join(" "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// An aligned table, one line per table; problems listed below it.
pub fn text(infos: &[TableInfo]) -> String {
    let header = [
        "TABLE",
        "ROWS",
        "FILES",
        "BYTES",
        "NEWEST EVENT",
        "COMMITTED AT",
        "COMMITTED OFFSETS",
    ];
    let rows: Vec<[String; 7]> = infos
        .iter()
        .map(|i| {
            [
                i.table.clone(),
                i.rows.to_string(),
                i.files.to_string(),
                i.bytes.to_string(),
                i.newest_event_time.clone().unwrap_or_else(|| "-".into()),
                i.committed_at.clone().unwrap_or_else(|| "-".into()),
                offsets_text(&i.committed_offsets),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else if (1..=3).contains(&i) {
                s.push_str(&format!("{cell:>w$}  "));
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        s.trim_end().to_owned() + "\n"
    };
    let mut out = line(&header);
    for row in &rows {
        out.push_str(&line(&row.each_ref().map(String::as_str)));
    }
    if infos.is_empty() {
        out.push_str("(no tables yet: nothing has been committed to this namespace)\n");
    }
    for i in infos.iter().filter(|i| i.problem.is_some()) {
        out.push_str(&format!(
            "{}: {}\n",
            i.table,
            i.problem.as_deref().unwrap_or_default()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn info(table: &str, offsets: &[(i32, i64)]) -> TableInfo {
        TableInfo {
            table: table.into(),
            rows: 12345,
            files: 3,
            bytes: 678901,
            newest_event_time: Some("2026-12-02T10:00:00.000Z".into()),
            committed_at: Some("2026-12-02T10:00:01.000Z".into()),
            committed_offsets: BTreeMap::from([(
                "telemetry-logs".to_owned(),
                offsets.iter().copied().collect(),
            )]),
            problem: None,
        }
    }

    #[test]
    fn columns_line_up_and_offsets_read_as_partition_colon_offset() {
        let t = text(&[
            info("default", &[(0, 10), (1, 7)]),
            info("payments_eu", &[(2, 5)]),
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(lines[1].starts_with("default      12345"), "{t}");
        assert!(lines[1].ends_with("telemetry-logs 0:10 1:7"), "{t}");
        let rows_end = lines[0].find("ROWS").unwrap() + 4;
        assert_eq!(&lines[2][rows_end - 5..rows_end], "12345", "{t}");
    }

    #[test]
    fn no_tables_and_problems_are_said() {
        assert!(text(&[]).contains("no tables yet"));
        let mut bad = info("foreign", &[]);
        bad.committed_offsets.clear();
        bad.problem = Some("no snapshot carries tlake.offsets".into());
        let t = text(&[bad]);
        assert!(
            t.contains("foreign: no snapshot carries tlake.offsets"),
            "{t}"
        );
    }
}
