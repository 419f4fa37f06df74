//! Kafka positions as SendLogs answers and Watermark requests carry them
//! (`Position { partition, offset }`): what the gateway waits for and the
//! SDK collects is, per partition, the highest offset — one rule for both.
//!
//! Where there is no message field for them — an OTLP Export's answer, the
//! watermark's HTTP query — positions are text: `0:12,1:40`
//! ([`to_text`], [`parse`]).

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

/// The answer header (gRPC metadata of an OTLP Export, HTTP header of an
/// OTLP/HTTP `POST /v1/logs`) that says where the request's records were
/// written, as [`to_text`]; OTLP's answer message has no field for it.
pub const WRITTEN_HEADER: &str = "x-tlake-written";

/// `{0: 12, 1: 40}` → `0:12,1:40`.
pub fn to_text(positions: &BTreeMap<i32, i64>) -> String {
    positions
        .iter()
        .map(|(partition, offset)| format!("{partition}:{offset}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// `0:12, 1:40,0:3` → the highest offset per partition; the error names the
/// part that is not `partition:offset`.
pub fn parse(text: &str) -> Result<BTreeMap<i32, i64>, String> {
    let positions = text
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            p.split_once(':')
                .and_then(|(partition, offset)| {
                    Some((partition.trim().parse().ok()?, offset.trim().parse().ok()?))
                })
                .ok_or_else(|| format!("{p:?} is not partition:offset (e.g. 0:12,1:40)"))
        })
        .collect::<Result<Vec<(i32, i64)>, _>>()?;
    Ok(highest(positions))
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

    #[test]
    fn text_round_trips_and_names_the_bad_part() {
        let positions = BTreeMap::from([(0, 12), (1, 40)]);
        assert_eq!(to_text(&positions), "0:12,1:40");
        assert_eq!(parse(&to_text(&positions)), Ok(positions));
        assert_eq!(
            parse("0:12, 1:40,0:3"),
            Ok(BTreeMap::from([(0, 12), (1, 40)]))
        );
        assert_eq!(parse(""), Ok(BTreeMap::new()));
        let err = parse("0:12,x").expect_err("bad");
        assert!(err.contains("\"x\""), "{err}");
    }
}
