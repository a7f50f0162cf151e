//! What a plan says of replaying an incremental chain: the chain's links, per-table changes
//! and exactness, the point reached and an estimate. Pure: read by the plan, the export and
//! the replay step, importing none of them.

use super::chain::{Chain, Lsn, Until};
use crate::engine::progress::human_bytes;
use crate::repository::manifest::{Manifest, NotExact};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};

/// Change records replayed per second, for the plan's estimate.
pub const CHANGES_PER_SECOND: f64 = 20_000.0;

/// One incremental of the chain, as the plan shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ChainLink {
    pub backup_id: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub start_lsn: Lsn,
    pub end_lsn: Lsn,
    pub first_commit: Option<DateTime<Utc>>,
    pub last_commit: Option<DateTime<Utc>>,
    pub transactions: u64,
    /// Change records it holds.
    pub changes: u64,
}

/// What one table's changes in the replayed links are, and whether replay is exact for it.
#[derive(Debug, Clone, Serialize)]
pub struct TableReplay {
    pub table: String,
    pub inserts: u64,
    pub updates: u64,
    pub deletes: u64,
    pub truncates: u64,
    /// False when capture recorded that replay cannot apply its changes exactly (see
    /// `not_exact` for why and what to run).
    pub exact: bool,
}

/// The replay a recovery plan will run.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayPlan {
    /// The base full backup loaded first.
    pub base: String,
    /// The incrementals replayed after it, oldest first.
    pub chain: Vec<ChainLink>,
    pub until: Option<Until>,
    /// The point in time the restore reaches, in words.
    pub point: String,
    /// The schema the restore creates, in words ([`Chain::schema`]).
    pub schema: String,
    /// Change records in the replayed incrementals (all are replayed without `--until`).
    pub changes: u64,
    pub transactions: u64,
    /// Tables with changes in the chain (of those restored).
    pub tables: Vec<TableReplay>,
    /// Tables replay cannot apply exactly, as capture recorded them.
    pub not_exact: Vec<NotExact>,
    /// Seconds the replay is estimated to add.
    pub estimated_seconds: f64,
    #[serde(skip)]
    pub links: Vec<Manifest>,
    /// The backup as restored: the base's schema and data, the requested backup's identity,
    /// the sequences at the chain's end.
    #[serde(skip)]
    pub restored: Manifest,
}

impl ReplayPlan {
    /// The replay of `chain` into `restored` ([`Chain::restored`]), for its tables `selected`.
    pub fn new(chain: &Chain, restored: Manifest, selected: &[usize]) -> ReplayPlan {
        let chosen: HashSet<String> = selected
            .iter()
            .filter_map(|&i| restored.tables.get(i).map(|t| t.display_name()))
            .collect();
        let mut tables: BTreeMap<String, TableReplay> = BTreeMap::new();
        let mut not_exact: Vec<NotExact> = Vec::new();
        let (mut changes, mut transactions) = (0, 0);
        for info in chain.links.iter().filter_map(|l| l.incremental.as_ref()) {
            changes += info.changes.rows;
            transactions += info.transactions;
            for t in info.tables.iter().filter(|t| chosen.contains(&t.table)) {
                let entry = tables.entry(t.table.clone()).or_insert(TableReplay {
                    table: t.table.clone(),
                    inserts: 0,
                    updates: 0,
                    deletes: 0,
                    truncates: 0,
                    exact: true,
                });
                entry.inserts += t.inserts;
                entry.updates += t.updates;
                entry.deletes += t.deletes;
                entry.truncates += t.truncates;
            }
            for n in info.not_exact.iter().filter(|n| chosen.contains(&n.table)) {
                if !not_exact.iter().any(|e| e.table == n.table) {
                    not_exact.push(n.clone());
                }
            }
        }
        for n in &not_exact {
            if let Some(t) = tables.get_mut(&n.table) {
                t.exact = false;
            }
        }
        let chain_links = chain
            .links
            .iter()
            .map(|l| {
                let info = l.incremental.as_ref();
                ChainLink {
                    backup_id: l.id.clone(),
                    name: l.name.clone(),
                    created_at: l.created_at,
                    start_lsn: info.map(|i| i.start_lsn).unwrap_or_default(),
                    end_lsn: info.map(|i| i.end_lsn).unwrap_or_default(),
                    first_commit: info.and_then(|i| i.first_commit),
                    last_commit: info.and_then(|i| i.last_commit),
                    transactions: info.map_or(0, |i| i.transactions),
                    changes: info.map_or(0, |i| i.changes.rows),
                }
            })
            .collect();
        ReplayPlan {
            base: chain.base.id.clone(),
            chain: chain_links,
            until: chain.until,
            point: point(chain),
            schema: chain.schema(),
            changes,
            transactions,
            tables: tables.into_values().collect(),
            not_exact,
            estimated_seconds: changes as f64 / CHANGES_PER_SECOND,
            links: chain.links.clone(),
            restored,
        }
    }

    /// The chain in one line: `base 2026… → 2026… → 2026…`.
    pub fn describe(&self) -> String {
        std::iter::once(format!("full {}", self.base))
            .chain(self.chain.iter().map(|l| l.backup_id.clone()))
            .collect::<Vec<_>>()
            .join(" → ")
    }

    /// Bytes of change sets the replay reads.
    pub fn bytes(&self) -> u64 {
        self.links
            .iter()
            .filter_map(|l| l.incremental.as_ref())
            .map(|i| i.changes.bytes)
            .sum()
    }

    /// The plan's risks of the replay.
    pub fn risks(&self) -> Vec<String> {
        let mut risks: Vec<String> = self
            .not_exact
            .iter()
            .map(|n| {
                format!(
                    "table {} cannot be replayed exactly ({}): its restored rows may differ from the source's; {}",
                    n.table, n.reason, n.fix
                )
            })
            .collect();
        if let (Some(Until::Time(t)), Some(last)) = (self.until, self.chain.last())
            && last.last_commit.is_some_and(|c| c < t)
        {
            risks.push(format!(
                "the chain's last recorded commit is {} (backup {}): changes between it and {} are in no backup yet and are not restored",
                last.last_commit.map_or(String::new(), |c| c.format("%Y-%m-%d %H:%M:%S UTC").to_string()),
                last.backup_id,
                Until::Time(t)
            ));
        }
        risks
    }

    /// What the replay step will do, as the plan's step says it: `strict` keeps the commit
    /// order across tables, `parallel` applies tables on several sessions (a new database).
    pub fn step_detail(&self, strict: bool, parallel: bool) -> String {
        format!(
            "replay {} change(s) in {} transaction(s) of {} incremental(s) ({}; {}) up to {}, whole transactions in commit order; \
             inserts batched into COPY, updates and deletes into multi-row statements{}{}",
            self.changes,
            self.transactions,
            self.chain.len(),
            self.describe(),
            human_bytes(self.bytes()),
            self.point,
            if strict {
                " (consecutive changes of one table at a time: the destination's foreign keys are live)"
            } else if parallel {
                ", grouped by table, tables in parallel on --jobs sessions (each table's changes in their order on one)"
            } else {
                ", grouped by table"
            },
            self.restored.large_objects.as_ref().map_or(String::new(), |lo| format!(
                "; the {} large object(s) as the base holds them (change sets do not carry large objects: \
                 each incremental was refused if they had changed since the base)",
                lo.oids.len()
            ))
        )
    }
}

/// The point a chain reaches, in words.
fn point(chain: &Chain) -> String {
    let last = chain.links.last();
    let end = last.map_or_else(
        || format!("full backup {}", chain.base.id),
        |l| {
            format!(
                "the end of backup {}{}",
                l.id,
                l.incremental.as_ref().and_then(|i| i.last_commit).map_or(
                    String::new(),
                    |c| format!(" (last commit {})", c.format("%Y-%m-%d %H:%M:%S%.6f UTC"))
                )
            )
        },
    );
    match chain.until {
        None => end,
        Some(until) => {
            format!("the last transaction committed at or before {until} (at most {end})")
        }
    }
}
