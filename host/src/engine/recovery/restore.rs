//! `recovery execute`: carry out a recovery plan, then prove the result.
//!
//! The strategy (`new_database`, `replace`, `missing_rows`) runs its list of [`Step`]s in
//! order, each logged and timed through a [`Progression`]; the steps' SQL lives in the files
//! named after them (`schema`, `load`, `post_data`, `sequences`, `vacuum`, `verify`). This file
//! holds the report and the transaction frame of the strategies that restore into an existing
//! database; `job` the context they all share.
//!
//! Failure leaves nothing half-done: `new-database` builds under a temporary name (see
//! [`partial_name`]), renames it only once verified, and drops it on failure or on SIGINT and
//! SIGTERM; `replace` and `missing-rows` run in one transaction that is rolled back.

use super::job::Replayed;
use super::job::{Job, Outcome};
use super::plan::{RecoveryPlan, Strategy, Verification};
use super::step::{Progression, Step, StepReport, steps};
use super::{missing_rows, new_database, replace, vacuum, verify};
use crate::engine::Progress;
use crate::engine::interrupt::{CleanupGuard, interruptible};
use crate::error::{Error, Result};
use crate::pg::session;
use crate::repository::Repository;
use crate::repository::history::RestoreRecord;
use crate::repository::manifest::Manifest;
use serde::Serialize;
use std::sync::Arc;
use std::time::Instant;

pub use super::job::{LargeObjectResult, TableResult};
pub use new_database::partial_name;

#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub backup_id: String,
    pub strategy: Strategy,
    pub destination_database: String,
    /// What the per-table check compared (`rows`, or `checksums` too).
    pub verification: Verification,
    /// With `--verify checksums`, the tables checked by row count only: the replay changed
    /// them, and no checksum of a table at the point reached exists (a change set does not
    /// hold the whole rows its updates and deletes replace). Their chunks and change sets
    /// were checked (SHA-256), and every replayed update and delete matched exactly its rows.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checksums_not_compared: Vec<String>,
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
    /// in the destination beforehand) and stay so, as `pg_dump`/`pg_restore` would leave them.
    pub not_valid_as_before: Vec<String>,
    /// Objects missing or corrupt on the first destination that were read from another.
    pub fallbacks: Vec<String>,
    /// Who signed the backup's manifest (its signature verified), or the risk
    /// `--allow-unsigned` took.
    pub signature: crate::repository::signing::Checked,
    /// The steps run, in order, each with its duration (see [`super::steps`]).
    pub steps: Vec<StepReport>,
    /// A partial database an interrupted or killed earlier restore left, dropped before this one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leftover_dropped: Option<String>,
    /// Roles `--create-roles` created.
    pub roles_created: Vec<String>,
    /// What is left for the operator (passwords not in the backup, settings that failed).
    pub by_hand: Vec<String>,
    /// The incremental chain replayed after the base full, and the point in time reached.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replayed: Option<Replayed>,
    pub ok: bool,
}

/// Checks every chunk the plan reads (the base's and the chain's change sets); the dry run
/// stops here.
pub async fn preflight(
    repo: &Repository,
    manifest: &Manifest,
    plan: &RecoveryPlan,
    jobs: usize,
    progress: &Progress,
) -> Result<usize> {
    plan.check_ready()?;
    verify::chunks(repo, restored(manifest, plan), plan, jobs, progress).await
}

/// What the plan restores: `requested` itself, or for a chain the base's schema and data under
/// the requested backup's identity.
fn restored<'a>(requested: &'a Manifest, plan: &'a RecoveryPlan) -> &'a Manifest {
    plan.replay.as_ref().map_or(requested, |r| &r.restored)
}

pub async fn execute(
    repo: &Repository,
    manifest: &Manifest,
    plan: &RecoveryPlan,
    jobs: usize,
    progress: &Progress,
) -> Result<RestoreReport> {
    let manifest = restored(manifest, plan);
    let progression = Progression::new(steps(plan.strategy, plan.subset, plan.replay.is_some()));
    let chunks_verified = match plan.strategy {
        // The load checks each chunk before sending its rows, and a failure drops the new
        // database, so a separate pass over every chunk would only cost time.
        Strategy::NewDatabase => {
            plan.check_ready()?;
            plan.selected_tables(manifest)
                .iter()
                .flat_map(|t| &t.parts)
                .chain(manifest.large_objects.as_ref().map(|lo| &lo.data))
                .chain(
                    plan.replay
                        .iter()
                        .flat_map(|r| &r.links)
                        .filter_map(|l| l.incremental.as_ref().map(|i| &i.changes)),
                )
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
        plan: Arc::new(plan.clone()),
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
        replayed,
    } = match plan.strategy {
        Strategy::NewDatabase => new_database::run(&job, &progression).await?,
        Strategy::Replace | Strategy::MissingRows => in_transaction(&job, &progression).await?,
    };
    let duration = started.elapsed().as_secs_f64();
    let selected = plan.selected_tables(&manifest);
    let rows = match &replayed {
        Some(r) => plan
            .selected
            .iter()
            .map(|&t| {
                r.rows
                    .get(&t)
                    .map_or(manifest.tables[t].rows, |&n| n.max(0) as u64)
            })
            .sum(),
        None => selected.iter().map(|t| t.rows).sum(),
    };
    let checksums_not_compared = match (&replayed, plan.verification) {
        (Some(r), Verification::Checksums) if plan.strategy != Strategy::MissingRows => plan
            .selected
            .iter()
            .filter(|t| r.changed.contains(*t))
            .map(|&t| manifest.tables[t].display_name())
            .collect(),
        _ => Vec::new(),
    };
    let report = RestoreReport {
        backup_id: manifest.id.clone(),
        strategy: plan.strategy,
        destination_database: plan.destination_settings.dbname.clone(),
        verification: plan.verification,
        checksums_not_compared,
        duration_seconds: duration,
        chunks_verified,
        rows,
        bytes: selected.iter().map(|t| t.logical_bytes).sum(),
        ok: tables.iter().all(|t| t.ok)
            && large_objects.as_ref().is_none_or(|lo| lo.ok)
            && unvalidated.is_empty(),
        tables,
        large_objects,
        unvalidated_constraints: unvalidated,
        not_valid_as_before,
        fallbacks: repo.notices(),
        signature: Default::default(),
        steps: progression.reports(),
        leftover_dropped,
        roles_created: if plan.create_roles {
            plan.globals.roles_to_create.clone()
        } else {
            Vec::new()
        },
        by_hand,
        replayed,
    };
    repo.record_restore(&RestoreRecord {
        backup_id: report.backup_id.clone(),
        strategy: report.strategy.to_string(),
        destination_database: report.destination_database.clone(),
        finished_at: chrono::Utc::now(),
        tables: report.tables.len(),
        rows: report.rows,
        bytes: report.bytes,
        seconds: duration,
    })
    .await?;
    Ok(report)
}

/// Runs the strategy's steps inside one transaction on the destination, committing only if
/// they succeed and verification passes, then analyzes the restored tables.
async fn in_transaction(job: &Job, steps: &Progression) -> Result<Outcome> {
    let _cleanup = CleanupGuard::new();
    let session = session::restore(&job.plan.destination_settings).await?;
    let client = &session;
    // Only a superuser may set session_replication_role; the owner's restore switches
    // off user triggers by name instead (`post_data::user_triggers_off`), and a
    // whole-database replace needs neither: its tables get their triggers after the load.
    let begin = if job.plan.skip_foreign_key_triggers {
        "BEGIN; SET LOCAL lock_timeout = '60s'; SET LOCAL session_replication_role = replica"
    } else {
        "BEGIN; SET LOCAL lock_timeout = '60s'"
    };
    client
        .batch_execute(begin)
        .await
        .map_err(Error::db("starting the recovery transaction"))?;
    let body = async {
        match (job.plan.strategy, job.plan.subset) {
            (Strategy::Replace, false) => replace::all(job, client, steps).await,
            (Strategy::Replace, true) => replace::tables(job, client, steps).await,
            _ => missing_rows::run(job, client, steps).await,
        }
    };
    match interruptible(body).await {
        Ok(mut outcome) => {
            outcome.by_hand = job.plan.globals.by_hand.clone();
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
                    vacuum::analyze(client, &job.selected_names()),
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
                    job.plan.destination_settings.dbname
                ),
                _ => format!(
                    "the connection was closed before commit, so PostgreSQL discarded the changes: {} is as it was",
                    job.plan.destination_settings.dbname
                ),
            };
            Err(match e {
                Error::Interrupted { signal, .. } => Error::Interrupted {
                    signal,
                    state: format!(
                        "the {} restore of backup {} stopped before commit\n  {state}",
                        job.plan.strategy, job.manifest.id
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
