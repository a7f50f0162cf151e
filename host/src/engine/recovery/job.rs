//! The shared context of one restore (`Job`: the repository, the manifest, the plan, the
//! sessions) that every strategy and step works with, and what they report back.

use super::chain::Lsn;
use super::plan::RecoveryPlan;
use crate::engine::Progress;
use crate::error::{Error, Result};
use crate::pg::{ConnectionSettings, pool, session};
use crate::repository::Repository;
use crate::repository::manifest::{Manifest, TableEntry};
use chrono::{DateTime, Utc};
use indicatif::ProgressBar;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use tokio_postgres::Client;

#[derive(Debug, Clone, Serialize)]
pub struct TableResult {
    pub name: String,
    /// Rows in the backup.
    pub backup_rows: u64,
    /// Rows in the destination after the restore.
    pub destination_rows: i64,
    /// Rows inserted by `missing-rows`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inserted_rows: Option<u64>,
    /// Whether the table's data checksum equals the one recorded at backup time
    /// (null for `missing-rows`, where the destination keeps rows of its own).
    pub checksum_ok: Option<bool>,
    pub ok: bool,
}

/// The large objects a restore wrote, checked as tables are.
#[derive(Debug, Clone, Serialize)]
pub struct LargeObjectResult {
    /// Large objects in the backup.
    pub backup_count: u64,
    /// Of those, how many the destination holds after the restore.
    pub destination_count: u64,
    /// Bytes of content in the backup and in the destination.
    pub backup_bytes: u64,
    pub destination_bytes: u64,
    /// Whether the content's checksum equals the backup's (`--verify checksums`; else null).
    pub checksum_ok: Option<bool>,
    pub ok: bool,
}

/// Everything one restore needs, cheap to clone into workers: the manifest and the plan are
/// shared (a clone per table of a plan of N tables was N² copies: 5,000 tables spent most of
/// the restore's client CPU in them).
#[derive(Clone)]
pub(super) struct Job {
    pub repo: Repository,
    pub manifest: Arc<Manifest>,
    pub plan: Arc<RecoveryPlan>,
    pub jobs: usize,
    pub progress: Progress,
}

/// What a strategy's steps found, for the report.
pub(super) struct Outcome {
    pub tables: Vec<TableResult>,
    pub large_objects: Option<LargeObjectResult>,
    /// NOT VALID constraints that were not so before the restore.
    pub unvalidated: Vec<String>,
    /// NOT VALID constraints that were so before (in the backup, or in the destination).
    pub not_valid_as_before: Vec<String>,
    /// See [`super::restore::RestoreReport::leftover_dropped`].
    pub leftover_dropped: Option<String>,
    /// Steps left for the operator.
    pub by_hand: Vec<String>,
    /// What the replay step applied (None without a chain).
    pub replayed: Option<Replayed>,
}

impl Job {
    pub fn selected(&self) -> Vec<&TableEntry> {
        self.plan.selected_tables(&self.manifest)
    }

    /// The selected tables' qualified names.
    pub fn selected_names(&self) -> Vec<String> {
        self.selected().iter().map(|t| t.qualified()).collect()
    }

    /// The progress bar over all the selected tables' bytes.
    pub fn overall(&self) -> ProgressBar {
        self.progress.overall(
            "restore",
            self.selected().iter().map(|t| t.logical_bytes).sum(),
        )
    }

    /// The `--create-roles` statements, as one script (empty without the flag).
    pub fn role_statements(&self) -> String {
        if self.plan.create_roles {
            self.plan.globals.role_sql.join(";\n")
        } else {
            String::new()
        }
    }

    /// Runs `work` over `items` on `--jobs` restore sessions to `destination`; the first error
    /// stops the rest.
    pub async fn in_parallel<T, R, F, Fut>(
        &self,
        destination: &ConnectionSettings,
        items: Vec<T>,
        work: F,
    ) -> Result<Vec<R>>
    where
        T: Send + 'static,
        R: Send + 'static,
        F: Fn(Arc<Client>, T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R>> + Send,
    {
        let destination = destination.clone();
        let open = move || {
            let destination = destination.clone();
            async move { session::restore(&destination).await }
        };
        pool::run(
            self.jobs,
            items,
            open,
            work,
            ("restore worker", Error::Internal),
        )
        .await
    }
}

/// What the replay did, for the report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Replayed {
    /// The incrementals read.
    pub backups: Vec<String>,
    pub transactions: u64,
    /// Row changes applied (of the restored tables).
    pub changes: u64,
    /// Statements (COPY, UPDATE, DELETE, TRUNCATE) they took.
    pub statements: u64,
    /// The last transaction replayed: the point in time reached.
    pub last_commit_time: Option<DateTime<Utc>>,
    pub last_commit_lsn: Option<Lsn>,
    /// Rows each replayed table should hold afterwards (its index in the manifest's tables).
    #[serde(skip)]
    pub rows: HashMap<usize, i64>,
    /// The tables a change was applied to.
    #[serde(skip)]
    pub changed: HashSet<usize>,
}
