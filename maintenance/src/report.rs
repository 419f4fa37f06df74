//! report: what each step did to a table, as `tlake-compactor maintain`
//! prints it (dry runs say what would be done).

use std::fmt;

use crate::{DropPlan, ExpireReport, OrphanReport};

/// What the rewrite step did to one table.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RewriteReport {
    /// Partition groups found worth rewriting.
    pub groups: usize,
    /// Small files replaced (dry run: that would be).
    pub files_before: usize,
    /// Their bytes.
    pub bytes_before: u64,
    /// Files written in their place.
    pub files_after: usize,
    /// Their bytes.
    pub bytes_after: u64,
    /// Rows moved.
    pub rows: u64,
    /// Replace commits made.
    pub commits: usize,
    /// 409s absorbed by the commits.
    pub conflicts: u32,
    /// Groups given up because their files changed under us.
    pub abandoned: usize,
    /// Groups whose commit outcome stayed unknown.
    pub unknown: usize,
}

/// What the retention step did to one table.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RetentionReport {
    /// The stream's bound in days (None: it keeps every event).
    pub days: Option<i64>,
    /// Whether the table has day partitions to drop at all.
    pub partitioned: bool,
    /// What was dropped (dry run: would be; unknown outcome: was tried).
    pub dropped: DropPlan,
    /// Delete commits made (0 or 1).
    pub commits: usize,
    /// 409s absorbed by the commit.
    pub conflicts: u32,
    /// Whether the commit outcome stayed unknown.
    pub unknown: bool,
}

impl fmt::Display for RetentionReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(days) = self.days else {
            return write!(f, "retention: none set, every event is kept");
        };
        if !self.partitioned {
            return write!(
                f,
                "retention: {days} day(s), but the table is not partitioned by event time; nothing dropped"
            );
        }
        let d = &self.dropped;
        let range = match d.day_range() {
            Some((first, last)) if first == last => format!(" ({first})"),
            Some((first, last)) => format!(" ({first} .. {last})"),
            None => String::new(),
        };
        write!(
            f,
            "retention: {days} day(s): {} day partition(s){range} dropped, files {}, rows {}, bytes {}, commits {}, conflicts retried {}, unknown {}",
            d.days.len(),
            d.files.len(),
            d.rows,
            d.bytes,
            self.commits,
            self.conflicts,
            u8::from(self.unknown)
        )
    }
}

/// What the manifest merge step did to one table.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MergeReport {
    /// Manifests the current snapshot listed before.
    pub manifests_before: usize,
    /// Manifests after (dry run or nothing due: the same).
    pub manifests_after: usize,
    /// Whether a merge was due (more data manifests than `max_manifests`).
    pub due: bool,
    /// Merge commits made (0 or 1).
    pub commits: usize,
    /// 409s absorbed by the commit.
    pub conflicts: u32,
    /// Whether the commit outcome stayed unknown.
    pub unknown: bool,
}

/// What maintenance did to one table.
#[derive(Debug, Clone)]
pub struct TableReport {
    /// Table name.
    pub table: String,
    /// Whether anything was changed.
    pub dry_run: bool,
    /// Step 0.
    pub retention: RetentionReport,
    /// Step 1a, when asked for (`--relayout`).
    pub relayout: Option<RewriteReport>,
    /// Step 1b.
    pub rewrite: RewriteReport,
    /// Step 2.
    pub merge: MergeReport,
    /// Step 3.
    pub expire: ExpireReport,
    /// Step 4.
    pub orphans: OrphanReport,
}

impl fmt::Display for RewriteReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} partition group(s), files {} -> {}, bytes {} -> {}, rows {}, commits {}, conflicts retried {}, abandoned {}, unknown {}",
            self.groups,
            self.files_before,
            self.files_after,
            self.bytes_before,
            self.bytes_after,
            self.rows,
            self.commits,
            self.conflicts,
            self.abandoned,
            self.unknown
        )
    }
}

impl fmt::Display for TableReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.rewrite;
        let o = &self.orphans;
        let would = if self.dry_run { " (dry run)" } else { "" };
        writeln!(f, "table {}{would}", self.table)?;
        writeln!(f, "  {}", self.retention)?;
        if let Some(relayout) = &self.relayout {
            writeln!(f, "  relayout (older partition specs): {relayout}")?;
        }
        writeln!(f, "  rewrite: {r}")?;
        let m = &self.merge;
        writeln!(
            f,
            "  merge manifests: manifests {} -> {}, {}, commits {}, conflicts retried {}, unknown {}",
            m.manifests_before,
            m.manifests_after,
            if m.due { "due" } else { "not due" },
            m.commits,
            m.conflicts,
            u8::from(m.unknown)
        )?;
        writeln!(
            f,
            "  expire: catalog lists {} snapshot(s), expired {}; table versions {} found, {} retained",
            self.expire.listed,
            self.expire.expired.len(),
            o.versions,
            o.versions_retained
        )?;
        let orphan_bytes: u64 = o.orphans.iter().map(|x| x.size).sum();
        write!(
            f,
            "  orphans: {} object(s) listed, {} referenced, {} orphan(s) ({} bytes) older than the grace, {} deleted, {} younger left alone",
            o.objects,
            o.referenced,
            o.orphans.len(),
            orphan_bytes,
            o.deleted,
            o.too_young
        )
    }
}
