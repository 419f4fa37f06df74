//! progress: what the tables hold — their committed Kafka offsets — and what
//! follows for this process: where each partition starts, which records a
//! table already holds, what a flush's commit moves and fences on, and
//! whether a commit of ours was lost. Pure, but for [`load_all`].

use std::collections::{BTreeMap, HashMap, HashSet};

use tlake_catalog_client::{LakeCatalog, Offsets, Progress};

use crate::consume::Tp;
use crate::lake::{GiveUp, Lake};

/// Where each partition starts: an offset, or `None` for the beginning.
pub type Seeks = BTreeMap<Tp, Option<i64>>;

/// Every table's progress, retried until the catalog answers (or a stop:
/// then nothing, and the loop ends without reading).
pub fn load_all(lake: &Lake) -> HashMap<String, Progress> {
    lake.retry(
        "reading the tables' progress",
        GiveUp::AtStop,
        |_| true,
        || load_all_once(&lake.catalog),
    )
    .unwrap_or_default()
}

async fn load_all_once(
    catalog: &LakeCatalog,
) -> tlake_catalog_client::Result<HashMap<String, Progress>> {
    let mut out = HashMap::new();
    for name in catalog.list_tables().await? {
        match catalog.load_table(&name).await {
            Ok(t) => match tlake_catalog_client::progress_of(&name, t.metadata()) {
                Ok(p) => {
                    out.insert(name.clone(), p);
                }
                // Not ours to seek by; committing to it stops us with this error.
                Err(e) => {
                    tracing::warn!(table = %name, error = %e, "ignoring table for start offsets")
                }
            },
            // Dropped between list and load.
            Err(e) if !e.retryable() => tracing::warn!(table = %name, error = %e, "skipping table"),
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Where to start reading each partition, from every table's progress.
///
/// A partition starts at the lowest offset any table stored for it. A
/// table that may hold rows of it but never committed it — no committed
/// snapshot at all, or the topic but not this partition — sends it back to
/// the beginning; the per-table skip filter then drops what is committed.
pub fn seek_offsets(tables: &HashMap<String, Progress>, parts: &[Tp]) -> Seeks {
    let mut seeks = BTreeMap::new();
    for (topic, partition) in parts {
        let mut lowest: Option<i64> = None;
        let mut beginning = false;
        let mut any = false;
        for progress in tables.values() {
            if progress.snapshot_id.is_none() {
                beginning = true;
                continue;
            }
            if let Some(by_partition) = progress.offsets.get(topic) {
                any = true;
                match by_partition.get(partition) {
                    Some(&o) => lowest = Some(lowest.map_or(o, |l| l.min(o))),
                    None => beginning = true,
                }
            }
        }
        let seek = if beginning || !any { None } else { lowest };
        seeks.insert((topic.clone(), *partition), seek);
    }
    seeks
}

/// The first partition (among those `only` admits) for which `theirs` (a
/// table's stored offsets, `None` without any) holds less than `ours`:
/// offsets only grow, so a commit of ours was lost there.
pub fn lost_partition(
    theirs: Option<&Offsets>,
    ours: &Offsets,
    only: impl Fn(&str, i32) -> bool,
) -> Option<Tp> {
    ours.iter().find_map(|(topic, parts)| {
        parts.iter().find_map(|(&partition, &mine)| {
            let stored = theirs
                .and_then(|t| t.get(topic))
                .and_then(|m| m.get(&partition));
            (only(topic, partition) && stored.is_none_or(|&s| s < mine))
                .then(|| (topic.clone(), partition))
        })
    })
}

/// Whether `theirs` holds less than `ours` for some partition.
pub fn holds_less(theirs: Option<&Offsets>, ours: &Offsets) -> bool {
    lost_partition(theirs, ours, |_, _| true).is_some()
}

/// What one table's commit moves: per partition whose cut is past what the
/// table holds, the offset it held (the fencing base; `None`: nothing) and
/// the offset it will hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Moves {
    /// topic → partition → the stored offset the commit expects.
    pub expected: BTreeMap<String, BTreeMap<i32, Option<i64>>>,
    /// topic → partition → the offset after the commit.
    pub next: Offsets,
}

/// The partitions `cut` moves past `stored` (what the table holds); `None`
/// when it moves none (nothing to commit).
pub fn moves(cut: &BTreeMap<Tp, i64>, stored: impl Fn(&Tp) -> Option<i64>) -> Option<Moves> {
    let mut moves = Moves::default();
    for (tp, &to) in cut {
        let held = stored(tp);
        if held.is_none_or(|s| to > s) {
            moves
                .expected
                .entry(tp.0.clone())
                .or_default()
                .insert(tp.1, held);
            moves.next.entry(tp.0.clone()).or_default().insert(tp.1, to);
        }
    }
    (!moves.next.is_empty()).then_some(moves)
}

/// This process's view of progress: the partitions it holds and how far it
/// has read them, the offsets it knows each table holds (the skip filter and
/// the fencing base), and the tables it committed to since the assignment.
#[derive(Debug, Default)]
pub struct Positions {
    assigned: HashSet<Tp>,
    /// Next offset to consume, per assigned partition.
    next: BTreeMap<Tp, i64>,
    /// table → offsets we know it holds.
    committed: HashMap<String, Offsets>,
    /// Tables this process committed to since its last assignment.
    committed_here: HashSet<String>,
}

impl Positions {
    /// A new assignment: `parts`, started at `seeks` by what `tables` hold.
    pub fn assign(&mut self, parts: Vec<Tp>, tables: HashMap<String, Progress>, seeks: Seeks) {
        self.assigned = parts.into_iter().collect();
        self.restart(tables, seeks);
    }

    /// The same partitions, restarted at `seeks` by what `tables` hold.
    pub fn restart(&mut self, tables: HashMap<String, Progress>, seeks: Seeks) {
        self.committed = tables.into_iter().map(|(t, p)| (t, p.offsets)).collect();
        self.committed_here.clear();
        self.next = seeks
            .into_iter()
            .filter_map(|(tp, s)| s.map(|o| (tp, o)))
            .collect();
    }

    /// Every partition was taken away.
    pub fn revoke(&mut self) {
        self.assigned.clear();
        self.next.clear();
    }

    /// Whether `tp` is ours.
    pub fn holds(&self, tp: &Tp) -> bool {
        self.assigned.contains(tp)
    }

    /// The partitions held, with the next offset to read (0 when unknown).
    pub fn assigned(&self) -> impl Iterator<Item = (&Tp, i64)> {
        self.assigned
            .iter()
            .map(|tp| (tp, self.next.get(tp).copied().unwrap_or(0)))
    }

    /// The record at `offset` of `tp` was read.
    pub fn consumed(&mut self, tp: &Tp, offset: i64) {
        self.next.insert(tp.clone(), offset + 1);
    }

    /// Whether `table` already holds the record at `offset` of `tp`.
    pub fn already_in(&self, table: &str, tp: &Tp, offset: i64) -> bool {
        self.stored(table, tp).is_some_and(|s| offset < s)
    }

    /// The offset `table` holds for `tp`, as far as this process knows.
    pub fn stored(&self, table: &str, tp: &Tp) -> Option<i64> {
        self.committed.get(table)?.get(&tp.0)?.get(&tp.1).copied()
    }

    /// The cut a flush commits: the next offset of every partition read.
    pub fn cut(&self) -> BTreeMap<Tp, i64> {
        self.next.clone()
    }

    /// What committing `cut` to `table` moves (`None`: nothing).
    pub fn moves(&self, table: &str, cut: &BTreeMap<Tp, i64>) -> Option<Moves> {
        moves(cut, |tp| self.stored(table, tp))
    }

    /// `table` committed `next`.
    pub fn committed(&mut self, table: &str, next: &Offsets) {
        self.committed_here.insert(table.to_owned());
        let offsets = self.committed.entry(table.to_owned()).or_default();
        for (topic, moved) in next {
            *offsets = tlake_catalog_client::offsets::merge(offsets, topic, moved);
        }
    }

    /// The tables this process committed to since the assignment.
    pub fn committed_here(&self) -> impl Iterator<Item = &str> {
        self.committed_here.iter().map(String::as_str)
    }

    /// Whether a table this process committed to holds less in `tables` (a
    /// new reading of every table) than this process committed: a commit
    /// the catalog lost.
    pub fn lost_in(&self, tables: &HashMap<String, Progress>) -> bool {
        self.committed_here.iter().any(|t| {
            self.committed
                .get(t)
                .is_some_and(|ours| holds_less(tables.get(t).map(|p| &p.offsets), ours))
        })
    }

    /// The held partition for which `table`, now holding `theirs`, holds
    /// less than this process committed to it.
    pub fn lost_at(&self, table: &str, theirs: &Offsets) -> Option<Tp> {
        let ours = self.committed.get(table)?;
        lost_partition(Some(theirs), ours, |topic, partition| {
            self.assigned.contains(&(topic.to_owned(), partition))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(snapshot: Option<i64>, entries: &[(&str, i32, i64)]) -> Progress {
        Progress {
            snapshot_id: snapshot,
            offsets: offsets(entries),
            newest_event_time_us: None,
        }
    }

    fn offsets(entries: &[(&str, i32, i64)]) -> Offsets {
        let mut offsets = Offsets::new();
        for &(t, p, o) in entries {
            offsets.entry(t.to_owned()).or_default().insert(p, o);
        }
        offsets
    }

    fn parts() -> Vec<Tp> {
        vec![("a".into(), 0), ("a".into(), 1)]
    }

    fn tp(t: &str, p: i32) -> Tp {
        (t.to_owned(), p)
    }

    #[test]
    fn a_table_holding_less_than_we_committed_lost_a_commit() {
        let ours = offsets(&[("t", 0, 10), ("t", 1, 5)]);
        let more = offsets(&[("t", 0, 12), ("t", 1, 5), ("t", 2, 3)]);
        let less = offsets(&[("t", 0, 12), ("t", 1, 4)]);
        let missing = offsets(&[("t", 0, 12)]);
        assert!(!holds_less(Some(&more), &ours));
        assert!(holds_less(Some(&less), &ours));
        assert!(holds_less(Some(&missing), &ours));
        assert!(
            holds_less(None, &ours),
            "the table is gone or has no snapshot"
        );
        assert!(!holds_less(None, &Offsets::new()));
        assert_eq!(
            lost_partition(Some(&less), &ours, |_, p| p == 1),
            Some(tp("t", 1))
        );
        assert_eq!(lost_partition(Some(&less), &ours, |_, p| p == 0), None);
    }

    #[test]
    fn seeks_to_the_lowest_table_offset() {
        let tables = HashMap::from([
            (
                "logs".to_owned(),
                progress(Some(1), &[("a", 0, 100), ("a", 1, 50)]),
            ),
            (
                "dead_letters".to_owned(),
                progress(Some(2), &[("a", 0, 7), ("a", 1, 60)]),
            ),
            ("other".to_owned(), progress(Some(3), &[("b", 0, 9)])),
        ]);
        let seeks = seek_offsets(&tables, &parts());
        assert_eq!(seeks[&tp("a", 0)], Some(7));
        assert_eq!(seeks[&tp("a", 1)], Some(50));
    }

    #[test]
    fn unknown_progress_means_the_beginning() {
        // Nothing committed anywhere.
        assert_eq!(seek_offsets(&HashMap::new(), &parts())[&tp("a", 0)], None);
        // A table created but never committed may hold rows of any partition.
        let tables = HashMap::from([
            (
                "logs".to_owned(),
                progress(Some(1), &[("a", 0, 100), ("a", 1, 50)]),
            ),
            ("new".to_owned(), progress(None, &[])),
        ]);
        assert_eq!(seek_offsets(&tables, &parts())[&tp("a", 0)], None);
        // A table that committed the topic but not this partition.
        let tables = HashMap::from([("logs".to_owned(), progress(Some(1), &[("a", 0, 100)]))]);
        let seeks = seek_offsets(&tables, &parts());
        assert_eq!(seeks[&tp("a", 0)], Some(100));
        assert_eq!(seeks[&tp("a", 1)], None);
    }

    #[test]
    fn a_commit_moves_only_partitions_past_what_the_table_holds() {
        let cut = BTreeMap::from([(tp("a", 0), 10), (tp("a", 1), 5), (tp("b", 0), 3)]);
        let held = offsets(&[("a", 0, 10), ("a", 1, 2)]);
        let stored = |tp: &Tp| held.get(&tp.0).and_then(|m| m.get(&tp.1)).copied();
        let m = moves(&cut, stored).expect("two partitions move");
        assert_eq!(m.next, offsets(&[("a", 1, 5), ("b", 0, 3)]));
        assert_eq!(m.expected["a"], BTreeMap::from([(1, Some(2))]));
        assert_eq!(
            m.expected["b"],
            BTreeMap::from([(0, None)]),
            "never committed: fence on none"
        );
        let all_held = offsets(&[("a", 0, 10), ("a", 1, 5), ("b", 0, 3)]);
        assert_eq!(
            moves(&cut, |tp| all_held
                .get(&tp.0)
                .and_then(|m| m.get(&tp.1))
                .copied()),
            None
        );
    }

    #[test]
    fn positions_follow_assignment_reads_and_commits() {
        let mut p = Positions::default();
        let tables = HashMap::from([("logs".to_owned(), progress(Some(1), &[("a", 0, 7)]))]);
        let seeks = seek_offsets(&tables, &parts());
        p.assign(parts(), tables.clone(), seeks);
        assert!(p.holds(&tp("a", 0)) && !p.holds(&tp("b", 0)));
        assert!(p.already_in("logs", &tp("a", 0), 6));
        assert!(!p.already_in("logs", &tp("a", 0), 7));
        assert!(!p.already_in("other", &tp("a", 0), 0));
        p.consumed(&tp("a", 0), 9);
        p.consumed(&tp("a", 1), 0);
        let cut = p.cut();
        assert_eq!(cut, BTreeMap::from([(tp("a", 0), 10), (tp("a", 1), 1)]));
        let m = p.moves("logs", &cut).expect("moves");
        p.committed("logs", &m.next);
        assert_eq!(p.stored("logs", &tp("a", 0)), Some(10));
        assert_eq!(p.committed_here().collect::<Vec<_>>(), ["logs"]);
        // The catalog lost that commit: the table still holds 7.
        assert!(p.lost_in(&tables));
        assert_eq!(
            p.lost_at("logs", &offsets(&[("a", 0, 7), ("a", 1, 1)])),
            Some(tp("a", 0))
        );
        assert_eq!(
            p.lost_at("logs", &offsets(&[("a", 0, 10), ("a", 1, 1)])),
            None
        );
        p.revoke();
        assert!(!p.holds(&tp("a", 0)));
        assert_eq!(p.lost_at("logs", &offsets(&[])), None, "no partition held");
    }
}
