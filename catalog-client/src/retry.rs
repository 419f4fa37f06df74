//! retry: the one retry policy of everything that talks to the catalog and
//! the object store — the compactor's loop, its commits, maintenance. The
//! delays come from backon's exponential backoff; the named durations here
//! are the only ones, and the orphan grace floor is computed from them, so
//! changing a timeout cannot silently make orphan removal unsafe.
//!
//! Who retries what, once each:
//! - a commit conflict (409: the table moved) — [`LakeCatalog::commit`] and
//!   maintenance's commits, which must reload and re-merge before the next
//!   try; [`conflicts`] paces them;
//! - a transient failure or an unknown commit outcome — the caller's loop
//!   (the compactor's flush, its table and progress reads), paced by
//!   [`transient`]; an unknown commit is reconciled by the next attempt,
//!   which looks for the commit id first;
//! - a flush whose commit is still unknown after [`COMMIT_DEADLINE`] —
//!   nobody: the compactor re-reads from the tables' offsets, which say what
//!   happened.
//!
//! [`LakeCatalog::commit`]: crate::LakeCatalog::commit

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// First wait after a transient failure.
pub const FIRST_DELAY: Duration = Duration::from_millis(200);
/// Longest wait between two attempts after transient failures.
pub const MAX_DELAY: Duration = Duration::from_secs(5);
/// First wait after a commit conflict: the winner has just committed.
pub const FIRST_CONFLICT_DELAY: Duration = Duration::from_millis(20);
/// Longest wait between two conflicting commit attempts.
pub const MAX_CONFLICT_DELAY: Duration = Duration::from_millis(200);
/// Conflicts in a row one commit absorbs before it gives up with
/// [`Error::TooManyConflicts`](crate::Error::TooManyConflicts).
pub const MAX_CONFLICTS: usize = 20;
/// How long the compactor keeps trying one flush's commit (unknown outcomes,
/// catalog errors) before it stops and takes the outcome from the tables.
pub const COMMIT_DEADLINE: Duration = Duration::from_secs(300);

/// Tests only: when set, [`orphan_grace_floor`] is one second, so tests can
/// watch orphans being removed without waiting an hour.
pub const SHORT_GRACE_ENV: &str = "TLAKE_TEST_SHORT_ORPHAN_GRACE";

/// Waits between attempts after transient failures: [`FIRST_DELAY`] doubling
/// up to [`MAX_DELAY`], without end — each caller stops on its own condition
/// (a shutdown, a deadline, an error that is not retryable).
pub fn transient() -> ExponentialBackoff {
    ExponentialBuilder::new()
        .with_min_delay(FIRST_DELAY)
        .with_max_delay(MAX_DELAY)
        .with_factor(2.0)
        .without_max_times()
        .build()
}

/// Waits between commit attempts that conflicted: [`MAX_CONFLICTS`] of them,
/// from [`FIRST_CONFLICT_DELAY`] up to [`MAX_CONFLICT_DELAY`], with jitter so
/// writers that collided do not collide again in step.
pub fn conflicts() -> ExponentialBackoff {
    ExponentialBuilder::new()
        .with_min_delay(FIRST_CONFLICT_DELAY)
        .with_max_delay(MAX_CONFLICT_DELAY)
        .with_factor(1.5)
        .with_jitter()
        .with_max_times(MAX_CONFLICTS)
        .build()
}

/// The longest a flush's uploaded data files can stay unreferenced before
/// their commit lands: the [`COMMIT_DEADLINE`], plus the attempt running
/// when it passes (every conflict retried, each a table load and a commit of
/// at most `request_timeout`), plus one last [`MAX_DELAY`]. Orphan removal
/// must not delete younger files, so it refuses a grace shorter than this
/// doubled.
pub fn orphan_grace_floor(request_timeout: Duration) -> Duration {
    if std::env::var_os(SHORT_GRACE_ENV).is_some() {
        return Duration::from_secs(1);
    }
    let conflict_waits = MAX_CONFLICT_DELAY * u32::try_from(MAX_CONFLICTS).unwrap_or(u32::MAX);
    let attempt = request_timeout * 2 * (u32::try_from(MAX_CONFLICTS).unwrap_or(u32::MAX) + 1)
        + conflict_waits;
    (COMMIT_DEADLINE + attempt + MAX_DELAY) * 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_waits_double_up_to_the_cap_and_never_end() {
        let waits: Vec<Duration> = transient().take(10).collect();
        assert_eq!(waits[0], FIRST_DELAY);
        // backon multiplies in f32: 400.000006 ms.
        assert_eq!(waits[1].as_millis(), (FIRST_DELAY * 2).as_millis());
        assert!(waits.iter().all(|w| *w <= MAX_DELAY));
        assert_eq!(waits[9], MAX_DELAY);
        assert_eq!(transient().take(1000).count(), 1000);
    }

    #[test]
    fn conflicts_are_bounded() {
        let waits: Vec<Duration> = conflicts().collect();
        assert_eq!(waits.len(), MAX_CONFLICTS);
        // Jitter adds up to one delay on top.
        assert!(
            waits.iter().all(|w| *w <= MAX_CONFLICT_DELAY * 2),
            "{waits:?}"
        );
    }

    #[test]
    fn the_orphan_grace_floor_covers_the_longest_commit() {
        let timeout = Duration::from_secs(30);
        let floor = orphan_grace_floor(timeout);
        assert!(floor > COMMIT_DEADLINE + timeout * 2 * 21, "{floor:?}");
        // The configured default (1 hour) stays above it for the default timeout.
        assert!(floor < Duration::from_secs(3600), "{floor:?}");
    }
}
