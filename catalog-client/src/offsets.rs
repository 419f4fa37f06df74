//! Kafka progress stored in snapshot summaries, and the two pure decisions
//! made on it: merging a flush's offsets into the stored map, and fencing.
//!
//! The map is `topic → partition → next offset to read`. It is always the
//! full map (every partition any writer ever committed), so any snapshot
//! alone says where every partition stands.

use std::collections::BTreeMap;

/// `topic → partition → next offset`.
pub type Offsets = BTreeMap<String, BTreeMap<i32, i64>>;

/// Why a flush may not be committed: another writer moved a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset the table holds now.
    pub stored: Option<i64>,
    /// Offset the flush started from (what we believed the table held).
    pub expected: Option<i64>,
}

/// Checks that, for every partition of the flush, the table still holds the
/// offset the flush started from. Any difference means another writer
/// committed that partition (or ours is stale): the flush must be dropped
/// and the partition re-read from the stored offset.
pub fn check_fence(
    stored: &Offsets,
    topic: &str,
    expected: &BTreeMap<i32, Option<i64>>,
) -> Option<Fence> {
    let current = stored.get(topic);
    for (&partition, &expected) in expected {
        let stored = current.and_then(|m| m.get(&partition)).copied();
        if stored != expected {
            return Some(Fence {
                topic: topic.to_owned(),
                partition,
                stored,
                expected,
            });
        }
    }
    None
}

/// The stored map with this flush's `next` offsets for `topic` applied.
/// Offsets only ever move forward: a smaller value never replaces a larger one.
pub fn merge(stored: &Offsets, topic: &str, next: &BTreeMap<i32, i64>) -> Offsets {
    let mut merged = stored.clone();
    let entry = merged.entry(topic.to_owned()).or_default();
    for (&partition, &offset) in next {
        let slot = entry.entry(partition).or_insert(offset);
        *slot = (*slot).max(offset);
    }
    merged
}

/// Serializes the map for a snapshot summary (`{"topic":{"0":42}}`).
pub fn to_json(offsets: &Offsets) -> String {
    serde_json::to_string(offsets).unwrap_or_else(|_| "{}".to_owned())
}

/// Parses a snapshot summary value.
pub fn from_json(text: &str) -> Result<Offsets, String> {
    serde_json::from_str(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(entries: &[(&str, i32, i64)]) -> Offsets {
        let mut o = Offsets::new();
        for &(t, p, n) in entries {
            o.entry(t.to_owned()).or_default().insert(p, n);
        }
        o
    }

    #[test]
    fn merge_keeps_other_partitions_and_topics() {
        let stored = offsets(&[("a", 0, 10), ("a", 1, 20), ("b", 0, 5)]);
        let merged = merge(&stored, "a", &BTreeMap::from([(1, 30), (2, 7)]));
        assert_eq!(
            merged,
            offsets(&[("a", 0, 10), ("a", 1, 30), ("a", 2, 7), ("b", 0, 5)])
        );
    }

    #[test]
    fn merge_never_moves_backwards() {
        let stored = offsets(&[("a", 0, 10)]);
        assert_eq!(merge(&stored, "a", &BTreeMap::from([(0, 4)])), stored);
    }

    #[test]
    fn fence_passes_when_the_table_holds_what_we_started_from() {
        let stored = offsets(&[("a", 0, 10), ("a", 1, 20)]);
        let expected = BTreeMap::from([(0, Some(10)), (2, None)]);
        assert_eq!(check_fence(&stored, "a", &expected), None);
        assert_eq!(
            check_fence(&Offsets::new(), "a", &BTreeMap::from([(0, None)])),
            None
        );
    }

    #[test]
    fn fence_trips_when_another_writer_moved_a_partition() {
        let stored = offsets(&[("a", 0, 15)]);
        let fence = check_fence(&stored, "a", &BTreeMap::from([(0, Some(10))])).expect("fenced");
        assert_eq!(
            (fence.partition, fence.stored, fence.expected),
            (0, Some(15), Some(10))
        );
        // A partition someone committed for the first time after we read it.
        let fence = check_fence(&stored, "a", &BTreeMap::from([(0, None)])).expect("fenced");
        assert_eq!(fence.stored, Some(15));
    }

    #[test]
    fn json_round_trips() {
        let o = offsets(&[("telemetry-logs", 0, 10), ("telemetry-logs", 11, 3)]);
        let text = to_json(&o);
        assert_eq!(text, r#"{"telemetry-logs":{"0":10,"11":3}}"#);
        assert_eq!(from_json(&text).expect("parse"), o);
        assert!(from_json("{\"t\":{\"x\":1}}").is_err());
    }
}
