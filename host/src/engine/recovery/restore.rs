//! `recovery execute`: carry out a recovery plan, then prove the result.
//!
//! The strategy (`new_database`, `replace`, `missing_rows`) runs its list of [`Step`]s in
//! order, each logged and timed through a [`Progression`]; the steps' SQL lives in the files
//! named after them (`schema`, `load`, `post_data`, `sequences`, `vacuum`, `verify`). This file
//! holds what they share: the report, the restore's context, and the transaction frame of the
//! strategies that restore into an existing database.
//!
//! Failure leaves nothing half-done: `new-database` builds under a temporary name (see
//! [`partial_name`]), renames it only once verified, and drops it on failure or on SIGINT and
//! SIGTERM; `replace` and `missing-rows` run in one transaction that is rolled back.

use super::plan::{RecoveryPlan, Strategy, Verification};
use super::step::{Progression, Step, StepReport, steps};
use super::{missing_rows, new_database, replace, vacuum, verify};
use crate::engine::Progress;
use crate::engine::interrupt::{CleanupGuard, interruptible};
use crate::error::{Error, Result};
use crate::pg::{ConnectionSettings, pool, session};
use crate::repository::Repository;
use crate::repository::history::RestoreRecord;
use crate::repository::manifest::{Manifest, TableEntry};
use indicatif::ProgressBar;
use serde::Serialize;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;
use tokio_postgres::Client;

pub use new_database::partial_name;

#[derive(Debug, Clone, Serialize)]
pub struct TableResult {
    pub name: String,
    /// Rows in the backup.
    pub backup_rows: u64,
    /// Rows in the target after the restore.
    pub target_rows: i64,
    /// Rows inserted by `missing-rows`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inserted_rows: Option<u64>,
    /// Whether the table's data checksum equals the one recorded at backup time
    /// (null for `missing-rows`, where the target keeps rows of its own).
    pub checksum_ok: Option<bool>,
    pub ok: bool,
}

/// The large objects a restore wrote, checked as tables are.
#[derive(Debug, Clone, Serialize)]
pub struct LargeObjectResult {
    /// Large objects in the backup.
    pub backup_count: u64,
    /// Of those, how many the target holds after the restore.
    pub target_count: u64,
    /// Bytes of content in the backup and in the target.
    pub backup_bytes: u64,
    pub target_bytes: u64,
    /// Whether the content's checksum equals the backup's (`--verify checksums`; else null).
    pub checksum_ok: Option<bool>,
    pub ok: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub backup_id: String,
    pub strategy: Strategy,
    pub target_database: String,
    /// What the per-table check compared (`rows`, or `checksums` too).
    pub verification: Verification,
    /// The measured recovery time (the real RTO of this restore).
    pub duration_seconds: f64,
    pub chunks_verified: usize,
    pub tables: Vec<TableResult>,
    /// Large objects restored (null when the backup has none or the strategy leaves them:
    /// `replace -t` and `missing-rows` restore tables only).
    pub large_objects: Option<LargeObjectResult>,
    pub rows: u64,
    pub bytes: u64,
    /// Constraints the restore left NOT VALID (a failure; empty in a finished restore).
    pub unvalidated_constraints: Vec<String>,
    /// Constraints that were NOT VALID in the backup (or, for `replace -t` and `missing-rows`,
    /// in the target beforehand) and stay so, as `pg_dump`/`pg_restore` would leave them.
    pub not_valid_as_before: Vec<String>,
    /// Objects missing or corrupt on the first target that were read from another.
    pub fallbacks: Vec<String>,
    /// The steps run, in order, each with its duration (see [`super::steps`]).
    pub steps: Vec<StepReport>,
    /// A partial database an interrupted or killed earlier restore left, dropped before this one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leftover_dropped: Option<String>,
    /// Roles `--create-roles` created.
    pub roles_created: Vec<String>,
    /// What is left for the operator (passwords not in the backup, settings that failed).
    pub by_hand: Vec<String>,
    pub ok: bool,
}

/// Checks every chunk the plan reads; the dry run stops here.
pub async fn preflight(
    repo: &Repository,
    manifest: &Manifest,
    plan: &RecoveryPlan,
    jobs: usize,
    progress: &Progress,
) -> Result<usize> {
    plan.check_ready()?;
    verify::chunks(repo, manifest, plan, jobs, progress).await
}

pub async fn execute(
    repo: &Repository,
    manifest: &Manifest,
    plan: &RecoveryPlan,
    jobs: usize,
    progress: &Progress,
) -> Result<RestoreReport> {
    let progression = Progression::new(steps(plan.strategy, plan.subset));
    let chunks_verified = match plan.strategy {
        // The load checks each chunk before sending its rows, and a failure drops the new
        // database, so a separate pass over every chunk would only cost time.
        Strategy::NewDatabase => {
            plan.check_ready()?;
            plan.selected_tables(manifest)
                .iter()
                .flat_map(|t| &t.parts)
                .chain(manifest.large_objects.as_ref().map(|lo| &lo.data))
                .map(|p| p.chunks.len())
                .sum()
        }
        Strategy::Replace | Strategy::MissingRows => {
            progression
                .run(
                    Step::VerifyChunks,
                    preflight(repo, manifest, plan, jobs, progress),
                )
                .await?
        }
    };
    let started = Instant::now();
    let manifest = Arc::new(manifest.clone());
    let job = Job {
        repo: repo.clone(),
        manifest: manifest.clone(),
        plan: plan.clone(),
        jobs: jobs.max(1),
        progress: progress.clone(),
    };
    let Outcome {
        tables,
        large_objects,
        unvalidated,
        not_valid_as_before,
        leftover_dropped,
        by_hand,
    } = match plan.strategy {
        Strategy::NewDatabase => new_database::run(&job, &progression).await?,
        Strategy::Replace | Strategy::MissingRows => job.in_transaction(&progression).await?,
    };
    let duration = started.elapsed().as_secs_f64();
    let selected = plan.selected_tables(&manifest);
    let report = RestoreReport {
        backup_id: manifest.id.clone(),
        strategy: plan.strategy,
        target_database: plan.destination_settings.dbname.clone(),
        verification: plan.verification,
        duration_seconds: duration,
        chunks_verified,
        rows: selected.iter().map(|t| t.rows).sum(),
        bytes: selected.iter().map(|t| t.logical_bytes).sum(),
        ok: tables.iter().all(|t| t.ok)
            && large_objects.as_ref().is_none_or(|lo| lo.ok)
            && unvalidated.is_empty(),
        tables,
        large_objects,
        unvalidated_constraints: unvalidated,
        not_valid_as_before,
        fallbacks: repo.notices(),
        steps: progression.reports(),
        leftover_dropped,
        roles_created: if plan.create_roles {
            plan.globals.roles_to_create.clone()
        } else {
            Vec::new()
        },
        by_hand,
    };
    repo.record_restore(&RestoreRecord {
        backup_id: report.backup_id.clone(),
        strategy: report.strategy.to_string(),
        target_database: report.target_database.clone(),
        finished_at: chrono::Utc::now(),
        tables: report.tables.len(),
        rows: report.rows,
        bytes: report.bytes,
        seconds: duration,
    })
    .await?;
    Ok(report)
}

/// Everything one restore needs, cheap to clone into workers.
#[derive(Clone)]
pub(super) struct Job {
    pub repo: Repository,
    pub manifest: Arc<Manifest>,
    pub plan: RecoveryPlan,
    pub jobs: usize,
    pub progress: Progress,
}

/// What a strategy's steps found, for the report.
pub(super) struct Outcome {
    pub tables: Vec<TableResult>,
    pub large_objects: Option<LargeObjectResult>,
    /// NOT VALID constraints that were not so before the restore.
    pub unvalidated: Vec<String>,
    /// NOT VALID constraints that were so before (in the backup, or in the target).
    pub not_valid_as_before: Vec<String>,
    /// See [`RestoreReport::leftover_dropped`].
    pub leftover_dropped: Option<String>,
    /// Steps left for the operator.
    pub by_hand: Vec<String>,
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

    /// Runs `work` over `items` on `--jobs` restore sessions to `target`; the first error
    /// stops the rest.
    pub async fn in_parallel<T, R, F, Fut>(
        &self,
        target: &ConnectionSettings,
        items: Vec<T>,
        work: F,
    ) -> Result<Vec<R>>
    where
        T: Send + 'static,
        R: Send + 'static,
        F: Fn(Arc<Client>, T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R>> + Send,
    {
        let target = target.clone();
        let open = move || {
            let target = target.clone();
            async move { session::restore(&target).await }
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

    /// Runs the strategy's steps inside one transaction on the target, committing only if
    /// they succeed and verification passes, then analyzes the restored tables.
    async fn in_transaction(&self, steps: &Progression) -> Result<Outcome> {
        let _cleanup = CleanupGuard::new();
        let session = session::restore(&self.plan.destination_settings).await?;
        let client = &session;
        // Only a superuser may set session_replication_role; the owner's restore switches
        // off user triggers by name instead (`post_data::user_triggers_off`), and a
        // whole-database replace needs neither: its tables get their triggers after the load.
        let begin = if self.plan.skip_foreign_key_triggers {
            "BEGIN; SET LOCAL lock_timeout = '60s'; SET LOCAL session_replication_role = replica"
        } else {
            "BEGIN; SET LOCAL lock_timeout = '60s'"
        };
        client
            .batch_execute(begin)
            .await
            .map_err(Error::db("starting the recovery transaction"))?;
        let body = async {
            match (self.plan.strategy, self.plan.subset) {
                (Strategy::Replace, false) => replace::all(self, client, steps).await,
                (Strategy::Replace, true) => replace::tables(self, client, steps).await,
                _ => missing_rows::run(self, client, steps).await,
            }
        };
        match interruptible(body).await {
            Ok(mut outcome) => {
                outcome.by_hand = self.plan.globals.by_hand.clone();
                steps
                    .run(Step::Commit, async {
                        client
                            .batch_execute("COMMIT")
                            .await
                            .map_err(Error::db("committing the recovery"))
                    })
                    .await?;
                steps
                    .run(
                        Step::Analyze,
                        vacuum::analyze(client, &self.selected_names()),
                    )
                    .await?;
                Ok(outcome)
            }
            Err(e) => {
                // A stopped statement may still be running on the server; closing the
                // connection discards the transaction just as surely as waiting for it.
                let rolled_back = tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    client.batch_execute("ROLLBACK"),
                )
                .await;
                let state = match rolled_back {
                    Ok(Ok(())) => format!(
                        "the transaction was rolled back: {} is exactly as it was",
                        self.plan.destination_settings.dbname
                    ),
                    _ => format!(
                        "the connection was closed before commit, so PostgreSQL discarded the changes: {} is as it was",
                        self.plan.destination_settings.dbname
                    ),
                };
                Err(match e {
                    Error::Interrupted { signal, .. } => Error::Interrupted {
                        signal,
                        state: format!(
                            "the {} restore of backup {} stopped before commit\n  {state}",
                            self.plan.strategy, self.manifest.id
                        ),
                    },
                    other => Error::Recovery {
                        source: Box::new(other),
                        state,
                    },
                })
            }
        }
    }
}
