//! Kafka positions as SendLogs answers and Watermark requests carry them
//! (`Position { partition, offset }`): what the gateway waits for and the
//! SDK collects is, per partition, the highest offset — one rule for both.

use std::collections::BTreeMap;

/// Adds `positions` to `highest`, keeping per partition the highest offset.
pub fn fold_highest(
    highest: &mut BTreeMap<i32, i64>,
    positions: impl IntoIterator<Item = (i32, i64)>,
) {
    for (partition, offset) in positions {
        let at = highest.entry(partition).or_insert(offset);
        *at = (*at).max(offset);
    }
}

/// Per partition, the highest of `positions` (several per partition allowed).
pub fn highest(positions: impl IntoIterator<Item = (i32, i64)>) -> BTreeMap<i32, i64> {
    let mut out = BTreeMap::new();
    fold_highest(&mut out, positions);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_highest_offset_per_partition_wins() {
        assert_eq!(
            highest([(0, 5), (1, 2), (0, 9), (0, 7)]),
            BTreeMap::from([(0, 9), (1, 2)])
        );
        let mut seen = BTreeMap::from([(0, 10)]);
        fold_highest(&mut seen, [(0, 3), (2, 1)]);
        assert_eq!(seen, BTreeMap::from([(0, 10), (2, 1)]));
    }
}
