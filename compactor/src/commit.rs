//! commit: one table's share of a flush — its rows written as data files,
//! then committed with the offsets the flush's cut moves, fenced on what the
//! table held. The outcomes (ARCHITECTURE §2):
//! - committed: the table now holds the rows and the offsets;
//! - fenced: another writer moved one of these partitions — everything is
//!   re-read from the tables ([`FlushStop::Resync`]);
//! - unknown (the catalog did not answer, or a 5xx): the same request is
//!   tried again, and the next call looks for its commit id first; after
//!   [`COMMIT_DEADLINE`] the tables say what happened (resync);
//! - too many conflicts in a row: resync too — the catalog already retried
//!   them ([`LakeCatalog::commit`](tlake_catalog_client::LakeCatalog::commit)),
//!   so they are not retried again here.

use std::time::{Duration, Instant};

use arrow_schema::SchemaRef;
use tlake_catalog_client::iceberg::table::Table;
use tlake_catalog_client::retry::COMMIT_DEADLINE;
use tlake_catalog_client::{CommitOutcome, CommitRequest};

use crate::buffer::{Batch, FlushOrder, OrderRun, PartLimits};
use crate::lake::{GiveUp, Lake};
use crate::metrics::{Metrics, TableLabels};
use crate::pipeline::PipelineError;
use crate::progress::Moves;
use tlake_catalog_client::write::{Part, Written, write_files};

/// Env var naming a point where the process aborts (tests only):
/// `after-upload` (files written, not committed) or `after-commit`.
pub const FAILPOINT_ENV: &str = "TLAKE_COMPACTOR_FAILPOINT";

fn failpoint(name: &str) {
    if std::env::var(FAILPOINT_ENV).is_ok_and(|v| v == name) {
        eprintln!("tlake-compactor: failpoint {name}: aborting");
        std::process::abort();
    }
}

/// The rows a flush writes to one table.
#[derive(Debug)]
pub enum Source<'a> {
    /// A table's batch taken from its buffer, in `order`, built in
    /// `target`'s layout as they are written (and again if the write is
    /// retried).
    Taken {
        /// The buffered events.
        batch: &'a Batch,
        /// Which rows, in which order.
        order: &'a FlushOrder,
        /// The table's Arrow schema.
        target: &'a SchemaRef,
        /// How big a part may get.
        limits: PartLimits,
    },
    /// Rows already built (dead letters).
    Batch(Part),
}

impl Source<'_> {
    fn rows(&self) -> usize {
        match self {
            Source::Taken { order, .. } => order.len(),
            Source::Batch(part) => part.rows.num_rows(),
        }
    }
}

/// Why a table's flush stopped early.
#[derive(Debug)]
pub enum FlushStop {
    /// The tables' offsets are the authority on what happened: re-read from them.
    Resync,
    /// Cannot continue at all.
    Fatal(Box<PipelineError>),
}

impl From<PipelineError> for FlushStop {
    fn from(e: PipelineError) -> Self {
        FlushStop::Fatal(Box::new(e))
    }
}

/// What a table's flush committed.
#[derive(Debug)]
pub struct Committed {
    /// The snapshot holding it.
    pub snapshot: i64,
    /// Parquet bytes written.
    pub bytes: u64,
}

/// One commit call: what the catalog answers for `request` (a trait so the
/// outcome handling is tested against a fake).
pub trait Catalog {
    /// Commits `request` once (conflicts retried inside).
    fn commit(&self, request: &CommitRequest) -> tlake_catalog_client::Result<CommitOutcome>;
}

impl Catalog for Lake {
    fn commit(&self, request: &CommitRequest) -> tlake_catalog_client::Result<CommitOutcome> {
        self.block_on(self.catalog.commit(request))
    }
}

/// What every table's flush shares.
#[derive(Debug, Clone, Copy)]
pub struct FlushContext<'a> {
    /// The catalog.
    pub lake: &'a Lake,
    /// Counters.
    pub metrics: &'a Metrics,
    /// This process's writer epoch (recorded in each snapshot).
    pub writer_epoch: u64,
    /// Target data file size.
    pub target_file_bytes: u64,
    /// Threads a large batch is split across ([`FlushOrder::runs`]).
    pub writers: usize,
    /// Rows each of them gets at least.
    pub min_rows_per_writer: usize,
}

/// Writes `source`'s rows as data files of `table` (`name`) and commits them
/// with `moves`. Returns the snapshot and the Parquet bytes written.
pub fn write_and_commit(
    cx: FlushContext<'_>,
    table: &Table,
    name: &str,
    source: Source<'_>,
    moves: Moves,
    max_event_time_us: Option<i64>,
) -> Result<Committed, FlushStop> {
    let flush_id = uuid::Uuid::now_v7().to_string();
    let written = if source.rows() == 0 {
        Written::default()
    } else {
        write(cx, table, name, &source, &flush_id)?
    };
    failpoint("after-upload");
    let request = CommitRequest {
        table: name.to_owned(),
        expected: moves.expected,
        next: moves.next,
        files: written.files,
        commit_id: uuid::Uuid::now_v7(),
        writer_epoch: cx.writer_epoch,
        max_event_time_us,
    };
    let snapshot = commit_until_known(cx.lake, &request, cx.metrics, COMMIT_DEADLINE)?;
    failpoint("after-commit");
    tracing::info!(
        table = name,
        snapshot,
        rows = written.rows,
        bytes = written.bytes,
        "committed"
    );
    if let Some(t) = max_event_time_us {
        let age = (crate::dead_letters::now_us() - t) as f64 / 1e6;
        cx.metrics
            .freshness_seconds
            .get_or_create(&TableLabels {
                table: name.to_owned(),
            })
            .set(age.max(0.0));
    }
    Ok(Committed {
        snapshot,
        bytes: written.bytes,
    })
}

/// Writes the data files, retrying storage failures (the rows are rebuilt
/// from the buffer on each attempt).
fn write(
    cx: FlushContext<'_>,
    table: &Table,
    name: &str,
    source: &Source<'_>,
    flush_id: &str,
) -> Result<Written, FlushStop> {
    let written = cx.lake.retry(
        &format!("writing data files of {name}"),
        GiveUp::AfterStop,
        |e| matches!(e, tlake_catalog_client::Error::Iceberg(_)),
        || async {
            match source {
                Source::Taken {
                    batch,
                    order,
                    target,
                    limits,
                } => match order.runs(cx.writers, cx.min_rows_per_writer).as_slice() {
                    [run] => {
                        write_files(
                            table,
                            batch.parts(*run, target, *limits),
                            flush_id,
                            cx.target_file_bytes,
                        )
                        .await
                    }
                    runs => {
                        tracing::debug!(table = name, writers = runs.len(), "writing in parallel");
                        write_runs(cx, table, batch, runs, target, *limits, flush_id)
                    }
                },
                Source::Batch(part) => {
                    write_files(table, [Ok(part.clone())], flush_id, cx.target_file_bytes).await
                }
            }
        },
    );
    written.map_err(|e| FlushStop::from(PipelineError::from(e)))
}

/// Writes each run on a thread of its own (building its rows and encoding
/// its Parquet: ~73 % of a row's cost, BENCHMARKS.md), as files named after
/// `flush_id` and the run's number, so a retry writes the same names; all
/// of them are committed together. The first error wins.
fn write_runs(
    cx: FlushContext<'_>,
    table: &Table,
    batch: &Batch,
    runs: &[OrderRun<'_>],
    target: &SchemaRef,
    limits: PartLimits,
    flush_id: &str,
) -> tlake_catalog_client::Result<Written> {
    let results: Vec<tlake_catalog_client::Result<Written>> = std::thread::scope(|scope| {
        let writers: Vec<_> = runs
            .iter()
            .enumerate()
            .map(|(i, &run)| {
                scope.spawn(move || {
                    cx.lake.block_on(write_files(
                        table,
                        batch.parts(run, target, limits),
                        &format!("{flush_id}-{i}"),
                        cx.target_file_bytes,
                    ))
                })
            })
            .collect();
        writers
            .into_iter()
            .map(|w| {
                w.join().unwrap_or_else(|_| {
                    Err(tlake_catalog_client::Error::Rows(
                        "a writer thread panicked".into(),
                    ))
                })
            })
            .collect()
    });
    let mut all = Written::default();
    for written in results {
        let written = written?;
        all.files.extend(written.files);
        all.rows += written.rows;
        all.bytes += written.bytes;
    }
    Ok(all)
}

/// Commits `request` until the outcome is known or `deadline` has passed.
/// Returns the snapshot that holds it.
pub fn commit_until_known(
    catalog: &impl Catalog,
    request: &CommitRequest,
    metrics: &Metrics,
    deadline: Duration,
) -> Result<i64, FlushStop> {
    let name = request.table.as_str();
    let give_up = Instant::now() + deadline;
    let mut waits = tlake_catalog_client::retry::transient();
    loop {
        match catalog.commit(request) {
            Ok(CommitOutcome::Committed(snapshot)) => {
                metrics.outcome("committed");
                return Ok(snapshot);
            }
            Ok(CommitOutcome::Fenced(fence)) => {
                metrics.outcome("fenced");
                metrics.commit_conflicts.inc();
                tracing::warn!(
                    table = name,
                    ?fence,
                    "fenced: another writer moved a partition; re-reading"
                );
                return Err(FlushStop::Resync);
            }
            Ok(CommitOutcome::Unknown) => metrics.outcome("unknown"),
            Err(e @ tlake_catalog_client::Error::TooManyConflicts { .. }) => {
                metrics.outcome("error");
                tracing::warn!(table = name, error = %e, "re-reading from the tables");
                return Err(FlushStop::Resync);
            }
            Err(e) if e.retryable() => {
                metrics.outcome("error");
                tracing::warn!(table = name, error = %e, "commit failed; retrying");
            }
            Err(e) => return Err(PipelineError::from(e).into()),
        }
        if Instant::now() >= give_up {
            // Whatever happened is in the table's offsets; start over from them.
            tracing::warn!(
                table = name,
                "commit outcome still unknown; re-reading from the tables"
            );
            return Err(FlushStop::Resync);
        }
        metrics.commit_retries.inc();
        std::thread::sleep(
            waits
                .next()
                .unwrap_or(tlake_catalog_client::retry::MAX_DELAY),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::VecDeque;

    use tlake_catalog_client::{Error, Fence, Offsets};

    use super::*;

    /// Answers commits from a script, and counts the calls.
    struct Scripted(RefCell<VecDeque<tlake_catalog_client::Result<CommitOutcome>>>);

    impl Catalog for Scripted {
        fn commit(&self, _: &CommitRequest) -> tlake_catalog_client::Result<CommitOutcome> {
            self.0
                .borrow_mut()
                .pop_front()
                .expect("no more commits scripted")
        }
    }

    fn scripted(
        answers: impl IntoIterator<Item = tlake_catalog_client::Result<CommitOutcome>>,
    ) -> Scripted {
        Scripted(RefCell::new(answers.into_iter().collect()))
    }

    fn request() -> CommitRequest {
        CommitRequest {
            table: "logs".into(),
            expected: Default::default(),
            next: Offsets::new(),
            files: Vec::new(),
            commit_id: uuid::Uuid::now_v7(),
            writer_epoch: 1,
            max_event_time_us: None,
        }
    }

    fn transient() -> Error {
        Error::Storage("503 from the catalog".into())
    }

    fn outcomes(metrics: &Metrics) -> String {
        metrics
            .encode()
            .lines()
            .filter(|l| l.starts_with("tlake_compactor_commits_total"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn unknown_outcomes_and_errors_are_retried_until_the_commit_is_known() {
        let metrics = Metrics::new();
        let catalog = scripted([
            Ok(CommitOutcome::Unknown),
            Err(transient()),
            Ok(CommitOutcome::Committed(7)),
        ]);
        let snapshot =
            commit_until_known(&catalog, &request(), &metrics, COMMIT_DEADLINE).expect("committed");
        assert_eq!(snapshot, 7);
        assert!(catalog.0.borrow().is_empty(), "three calls");
        let counted = outcomes(&metrics);
        for outcome in ["committed", "unknown", "error"] {
            assert!(
                counted.contains(&format!("outcome=\"{outcome}\"}} 1")),
                "{counted}"
            );
        }
    }

    #[test]
    fn a_fence_or_too_many_conflicts_resyncs_without_retrying() {
        let fence = Fence {
            topic: "t".into(),
            partition: 0,
            stored: Some(2),
            expected: Some(1),
        };
        for answer in [
            Ok(CommitOutcome::Fenced(fence)),
            Err(Error::TooManyConflicts {
                table: "logs".into(),
                attempts: 20,
            }),
        ] {
            let catalog = scripted([answer]);
            let stop = commit_until_known(&catalog, &request(), &Metrics::new(), COMMIT_DEADLINE);
            assert!(matches!(stop, Err(FlushStop::Resync)), "{stop:?}");
        }
    }

    #[test]
    fn an_outcome_unknown_past_the_deadline_resyncs() {
        let catalog = scripted([Ok(CommitOutcome::Unknown)]);
        let stop = commit_until_known(&catalog, &request(), &Metrics::new(), Duration::ZERO);
        assert!(matches!(stop, Err(FlushStop::Resync)), "{stop:?}");
    }

    #[test]
    fn an_error_that_is_not_retryable_is_fatal() {
        let catalog = scripted([Err(Error::Config("bad".into()))]);
        let stop = commit_until_known(&catalog, &request(), &Metrics::new(), COMMIT_DEADLINE);
        assert!(matches!(stop, Err(FlushStop::Fatal(_))), "{stop:?}");
    }
}
