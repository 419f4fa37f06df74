//! The ack ledger: which event ids a client was told are durable, and the
//! assertion that what came out matches it exactly.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

/// Event ids acknowledged to a client (thread-safe).
#[derive(Debug, Default)]
pub struct AckLedger {
    acked: Mutex<Vec<[u8; 16]>>,
}

impl AckLedger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records ids whose request was answered OK.
    pub fn ack<'a>(&self, ids: impl IntoIterator<Item = &'a [u8]>) {
        let mut acked = self.acked.lock().expect("ledger lock");
        acked.extend(
            ids.into_iter()
                .map(|id| <[u8; 16]>::try_from(id).expect("16-byte id")),
        );
    }

    /// All acknowledged ids.
    pub fn ids(&self) -> Vec<[u8; 16]> {
        self.acked.lock().expect("ledger lock").clone()
    }

    /// Number of acknowledged ids.
    pub fn len(&self) -> usize {
        self.acked.lock().expect("ledger lock").len()
    }

    /// Whether nothing was acknowledged.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Asserts that every acknowledged id was observed, and (when `exactly`)
/// that nothing else was and nothing twice: count == distinct == acked.
pub fn assert_no_loss_no_dup(acked: &[[u8; 16]], observed: &[[u8; 16]], exactly: bool) {
    let acked_set: HashSet<_> = acked.iter().collect();
    assert_eq!(
        acked_set.len(),
        acked.len(),
        "the ledger itself holds duplicate ids"
    );
    let mut seen: HashMap<&[u8; 16], usize> = HashMap::new();
    for id in observed {
        *seen.entry(id).or_default() += 1;
    }
    let lost: Vec<_> = acked.iter().filter(|id| !seen.contains_key(id)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged events are missing (first: {})",
        lost.len(),
        acked.len(),
        uuid::Uuid::from_bytes(*lost[0])
    );
    if exactly {
        let doubled = seen.values().filter(|&&n| n > 1).count();
        assert_eq!(doubled, 0, "{doubled} event ids appear more than once");
        let extra = seen.keys().filter(|id| !acked_set.contains(*id)).count();
        assert_eq!(extra, 0, "{extra} events were never acknowledged");
        assert_eq!(observed.len(), acked.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "missing")]
    fn loss_is_caught() {
        assert_no_loss_no_dup(&[[1; 16], [2; 16]], &[[1; 16]], false);
    }

    #[test]
    #[should_panic(expected = "more than once")]
    fn duplicates_are_caught() {
        assert_no_loss_no_dup(&[[1; 16]], &[[1; 16], [1; 16]], true);
    }

    #[test]
    fn exact_match_passes() {
        assert_no_loss_no_dup(&[[1; 16], [2; 16]], &[[2; 16], [1; 16]], true);
        // Duplicates of acknowledged ids are allowed when not exact.
        assert_no_loss_no_dup(&[[1; 16]], &[[1; 16], [1; 16]], false);
    }
}
