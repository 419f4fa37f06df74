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

/// What the compactor attaches to its group offset commits, and the
/// gateway's watermark reads back: per table (stream), the newest event time
/// (µs since the epoch) the table held as of that commit, as
/// `tlake.newest_event_us=default:1733000000000000,audit:1733000000000001`.
/// Stream names are `[a-z0-9_]`, so the text needs no escaping.
const NEWEST_EVENT_PREFIX: &str = "tlake.newest_event_us=";

/// Kafka keeps at most 4096 bytes of metadata per committed offset by
/// default (`offset.metadata.max.bytes`); past this, nothing is attached.
pub const MAX_GROUP_METADATA: usize = 4000;

/// [`NEWEST_EVENT_PREFIX`] text for `newest` (table → µs); `None` when
/// empty or too long for the broker to keep.
pub fn newest_event_metadata(newest: &BTreeMap<String, i64>) -> Option<String> {
    if newest.is_empty() {
        return None;
    }
    let pairs: Vec<String> = newest.iter().map(|(t, us)| format!("{t}:{us}")).collect();
    let text = format!("{NEWEST_EVENT_PREFIX}{}", pairs.join(","));
    (text.len() <= MAX_GROUP_METADATA).then_some(text)
}

/// `stream`'s newest event time (µs) in a group commit's metadata, if the
/// committer reported one.
pub fn newest_event_of(metadata: &str, stream: &str) -> Option<i64> {
    metadata
        .strip_prefix(NEWEST_EVENT_PREFIX)?
        .split(',')
        .find_map(|pair| {
            let (table, us) = pair.split_once(':')?;
            (table == stream).then(|| us.parse().ok()).flatten()
        })
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

    #[test]
    fn newest_event_times_round_trip_through_group_metadata() {
        let newest = BTreeMap::from([
            ("audit".to_owned(), 7),
            ("default".to_owned(), 1_733_000_000_000_000),
        ]);
        let text = newest_event_metadata(&newest).expect("short enough");
        assert_eq!(
            newest_event_of(&text, "default"),
            Some(1_733_000_000_000_000)
        );
        assert_eq!(newest_event_of(&text, "audit"), Some(7));
        assert_eq!(newest_event_of(&text, "aud"), None);
        assert_eq!(
            newest_event_of("", "default"),
            None,
            "a commit without metadata"
        );
        assert_eq!(newest_event_of("something else", "default"), None);
        assert_eq!(newest_event_metadata(&BTreeMap::new()), None);
        let many: BTreeMap<String, i64> = (0..300).map(|i| (format!("stream_{i}"), i)).collect();
        assert_eq!(
            newest_event_metadata(&many),
            None,
            "over the broker's limit"
        );
    }
}
