//! tables: the tables this process writes — created, or checked against our
//! layout and evolved, on first use after each assignment — and their
//! dedup windows, seeded from their newest appends, so a late copy of an
//! event committed before this process started is still dropped.

use std::collections::{BTreeMap, HashMap, HashSet};

use tlake_catalog_client::iceberg::table::Table;
use tlake_catalog_client::{
    AttributeType, Layout, PromotedAttribute, SortBy, TableKind, TimePartition,
};

use crate::buffer::Buffers;
use crate::config::Config;
use crate::lake::{GiveUp, Lake};
use crate::pipeline::PipelineError;

/// Tables checked against our layout (the latest metadata we saw).
#[derive(Debug)]
pub struct Tables {
    loaded: HashMap<String, Table>,
    /// Log tables whose dedup window was seeded since the assignment.
    seeded: HashSet<String>,
    window_flushes: usize,
    window_ids: usize,
    /// `promote` of the configuration: stream → key → type.
    promote: BTreeMap<String, BTreeMap<String, AttributeType>>,
    /// `partition_by` of the configuration.
    partition_by: BTreeMap<String, TimePartition>,
    /// `sort_by` of the configuration.
    sort_by: BTreeMap<String, SortBy>,
}

impl Tables {
    /// No table loaded yet; windows seeded with `config`'s dedup window;
    /// log tables given the columns of the attributes it promotes, its
    /// time partitioning and sort order.
    pub fn new(config: &Config) -> Self {
        Self {
            loaded: HashMap::new(),
            seeded: HashSet::new(),
            window_flushes: config.flush.dedup_window_flushes as usize,
            window_ids: usize::try_from(config.flush.dedup_window_ids).unwrap_or(usize::MAX),
            promote: config.promote.clone(),
            partition_by: config.partition_by.clone(),
            sort_by: config.sort_by.clone(),
        }
    }

    /// What table `name` of `kind` must hold.
    fn layout(&self, name: &str, kind: TableKind) -> Layout {
        let promoted = match kind {
            TableKind::Logs => self
                .promote
                .get(name)
                .into_iter()
                .flatten()
                .map(|(key, &kind)| PromotedAttribute {
                    key: key.clone(),
                    kind,
                })
                .collect(),
            TableKind::DeadLetters => Vec::new(),
        };
        let partition = match kind {
            TableKind::Logs => self.partition_by.get(name).copied().unwrap_or_default(),
            TableKind::DeadLetters => TimePartition::Day,
        };
        Layout {
            kind,
            promoted,
            partition,
            sort: self.sort_by(name),
        }
    }

    /// The order log table `name`'s rows are written in.
    pub fn sort_by(&self, name: &str) -> SortBy {
        self.sort_by.get(name).copied().unwrap_or_default()
    }

    /// The table, created or checked (and evolved) on first use; a log
    /// table's window in `buffers` is seeded from it then.
    pub fn get(
        &mut self,
        lake: &Lake,
        buffers: &mut Buffers,
        name: &str,
        kind: TableKind,
    ) -> Result<Table, PipelineError> {
        if let Some(t) = self.loaded.get(name) {
            return Ok(t.clone());
        }
        let layout = self.layout(name, kind);
        let table = lake.retry(
            &format!("loading table {name}"),
            GiveUp::AtStop,
            tlake_catalog_client::Error::retryable,
            || lake.catalog.ensure_layout(name, &layout),
        )?;
        if kind == TableKind::Logs && self.seeded.insert(name.to_owned()) {
            self.seed_window(lake, buffers, name, &table)?;
        }
        self.loaded.insert(name.to_owned(), table.clone());
        Ok(table)
    }

    /// `name`'s metadata moved (we committed): reload it on next use.
    pub fn reload(&mut self, name: &str) {
        self.loaded.remove(name);
    }

    /// Forgets every table and window seeding: after an assignment or a
    /// resync, partitions may carry copies of events another instance
    /// committed since this one last read the tables.
    pub fn forget(&mut self) {
        self.loaded.clear();
        self.seeded.clear();
    }

    /// Seeds `name`'s dedup window with the ids its newest appends hold.
    fn seed_window(
        &self,
        lake: &Lake,
        buffers: &mut Buffers,
        name: &str,
        table: &Table,
    ) -> Result<(), PipelineError> {
        let recent = lake.retry(
            &format!("reading recent ids of {name}"),
            GiveUp::AtStop,
            tlake_catalog_client::Error::retryable,
            || {
                tlake_catalog_client::recent::recent_event_ids(
                    table,
                    self.window_flushes,
                    self.window_ids,
                )
            },
        );
        match recent {
            Ok(recent) => {
                tracing::info!(
                    table = name,
                    ids = arrow_array::Array::len(&recent.ids),
                    appends = recent.appends,
                    capped = recent.capped,
                    "dedup window seeded from the table"
                );
                buffers.remember(name, &recent.ids)?;
            }
            // Only late duplicates of already committed events could slip through.
            Err(e) => tracing::warn!(table = name, error = %e, "dedup window starts empty"),
        }
        Ok(())
    }
}
