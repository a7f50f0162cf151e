//! `backup-cli backup …`: create, list, validate, export, delete and sync backups.

use crate::cli::BackupCommand;
use crate::output::{
    self, BackupCreated, Backups, DeleteDryRun, Exported, Outcome, Synced, Validation,
};
use crate::settings::Settings;
use larder::repository::{Repository, signing};
use larder::{Error, Result, engine};

pub async fn run(settings: &Settings, command: BackupCommand) -> Result<Outcome> {
    match command {
        BackupCommand::Export(args) => {
            let repo = settings.repository().await?;
            let manifest = repo
                .resolve(&args.backup_id, &settings.database_name()?)
                .await?;
            let until = args.point.until();
            let signature =
                engine::recovery::provenance::check(&repo, &manifest, until, args.allow_unsigned)
                    .await?;
            let (out, compress): (Box<dyn std::io::Write + Send>, bool) = if args.output == "-" {
                (Box::new(std::io::stdout()), false)
            } else {
                let file = std::fs::File::create(&args.output)
                    .map_err(Error::io(format!("creating {}", args.output)))?;
                (
                    Box::new(std::io::BufWriter::with_capacity(1 << 20, file)),
                    args.output.ends_with(".zst"),
                )
            };
            let report = engine::export::export(&repo, &manifest, until, out, compress).await?;
            if args.output == "-" {
                return Ok(Outcome::Done); // stdout holds the SQL
            }
            let exported = Exported {
                report,
                file: args.output,
                signature,
            };
            Ok(output::report(settings.json, &exported, None))
        }
        BackupCommand::Create(args) => {
            let schedule = match &args.schedule {
                Some(name) => Some(settings.loaded.config.schedule(name)?),
                None => None,
            };
            let backup_type = match schedule {
                Some(schedule) => schedule.backup_type()?,
                None => args.backup_type,
            };
            let db = match (schedule.and_then(|s| s.database.as_deref()), &settings.db) {
                (Some(theirs), Some(given)) if theirs != given => {
                    return Err(Error::Config(format!(
                        "--schedule {}: that schedule backs up database '{theirs}', not '{given}' (--db); leave out --db",
                        args.schedule.as_deref().unwrap_or_default()
                    )));
                }
                (Some(theirs), _) => Some(theirs),
                (None, given) => given.as_deref(),
            };
            let database = settings.database_of(db)?;
            let config = &settings.loaded.config.backup;
            let set = settings.targets().await?;
            let selected = match schedule {
                Some(schedule) => settings.schedule_targets(&set, schedule)?,
                None if args.targets.is_empty() && !settings.repo_override => {
                    set.select(&config.targets)?
                }
                None => set.select(&args.targets)?,
            };
            // A repository is started where someone chose one (flag, environment, config),
            // never at the default path nobody chose (cron's working directory).
            let repo = if set.unchosen {
                Repository::open(selected[0].clone()).await?
            } else {
                Repository::open_or_init(selected[0].clone()).await?
            };
            let opts = engine::backup::BackupOptions {
                name: args.name,
                backup_type,
                jobs: settings.jobs(args.jobs.or(config.jobs)),
                compression_level: args.compression_level.unwrap_or(config.compression_level),
                pg_dump: config.pg_dump.clone(),
                split_bytes: None,
                retain_for: engine::prune::retention_period(
                    &settings.loaded.config,
                    &settings.database_names()?,
                    backup_type,
                    args.schedule.as_deref(),
                    &database.dbname,
                )?,
                schedule: args.schedule,
                validators: larder::plugin::validator::open_configured(&settings.loaded).await?,
                incremental: settings.loaded.config.incremental.clone(),
            };
            let created = engine::backup::create_with_copies(
                &database,
                &repo,
                &selected[1..],
                &opts,
                &settings.progress,
            )
            .await?;
            let failure = created.verdict();
            let created_suspect = created.manifest.is_suspect();
            // The validators' verdict through the alert room ("Backup Validation Failed");
            // delivery never fails the backup.
            let alerted = match settings.alert_scope_at(repo.target().location()) {
                Ok(scope) => {
                    engine::alerts::observe_backup(&settings.loaded, &scope, &created.manifest)
                        .await
                }
                Err(e) => {
                    output::note!("warning: alerts were not delivered: {e}");
                    None
                }
            };
            let outcome = if settings.quiet && !settings.json {
                Outcome::of(failure)
            } else {
                let created = BackupCreated::new(created, repo.target().location());
                output::report(settings.json, &created, failure)
            };
            if let Some(report) = alerted {
                output::alert_report(&report, created_suspect);
            }
            Ok(outcome)
        }
        BackupCommand::List(args) => {
            let set = settings.targets().await?;
            // Fails with a hint when no target holds a repository at all.
            let repo = Repository::open_for_reading(&set.targets).await?;
            let database = match settings.db {
                Some(_) => Some(settings.database_name()?),
                None => None,
            };
            let backups = engine::list::list(
                &set.targets,
                args.limit,
                args.backup_type,
                database.as_deref(),
                args.verify,
            )
            .await;
            let backups = Backups {
                backups,
                repository: repo.target().location(),
            };
            Ok(output::report(settings.json, &backups, None))
        }
        BackupCommand::Validate(args) => {
            let set = settings.targets().await?;
            // Each copy on its own, without fallback, so a bad object on one is reported.
            let targets = match &args.target {
                Some(name) => vec![set.get(name)?],
                None => set.select(&settings.expected_targets())?,
            };
            let manifest = Repository::open_for_reading(&set.targets)
                .await?
                .resolve(&args.backup_id, &settings.database_name()?)
                .await?;
            signing::check_configured(&manifest, args.allow_unsigned)?;
            let (report, copies) = engine::validate::validate_copies(
                &targets,
                &manifest,
                &settings.loaded.config.objectives,
                &larder::plugin::validator::open_configured(&settings.loaded).await?,
                settings.jobs(args.jobs),
                &settings.progress,
            )
            .await?;
            let failure =
                engine::validate::verdict(&manifest.id, report.as_ref(), &copies, args.any_copy);
            // Through the alert room, as the daemon's validations go: Backup Corruption for a
            // damaged copy, Backup Validation Failed for suspect rows; a pass resolves them.
            let alerted = match settings.alert_scope().await {
                Ok(scope) => {
                    let runs = report.as_ref().map_or(&[][..], |r| &r.validators);
                    engine::alerts::observe_validation(
                        &settings.loaded,
                        &scope,
                        &manifest.id,
                        &copies,
                        runs,
                    )
                    .await
                }
                Err(e) => {
                    output::note!("warning: alerts were not delivered: {e}");
                    None
                }
            };
            let failing = failure.is_some();
            let outcome = output::report(settings.json, &Validation { report, copies }, failure);
            if let Some(report) = alerted {
                output::alert_report(&report, failing);
            }
            Ok(outcome)
        }
        BackupCommand::Delete(args) => {
            let set = settings.targets().await?;
            let scope = engine::delete::Scope {
                only: args.targets.clone(),
                all_targets: args.all_targets,
            };
            let plan = engine::delete::plan(
                &set.targets,
                &args.backup_id,
                &settings.database_name()?,
                &scope,
            )
            .await?;
            if args.dry_run {
                return Ok(output::report(
                    settings.json,
                    &DeleteDryRun { plan: &plan },
                    None,
                ));
            }
            let report = engine::delete::execute(&plan, args.force).await?;
            retire_orphaned_slot(settings, &set.targets).await;
            Ok(output::report(settings.json, &report, None))
        }
        BackupCommand::Sync(args) => {
            let set = settings.targets().await?;
            let targets = set.select(&args.targets)?;
            let reports = engine::sync::sync(
                &targets,
                settings.jobs(args.jobs),
                args.verify,
                &settings.progress,
            )
            .await?;
            Ok(output::report(settings.json, &Synced(reports), None))
        }
        BackupCommand::Prune(args) => {
            let set = settings.targets().await?;
            let only = match settings.db {
                Some(_) => Some(settings.database_name()?),
                None => None,
            };
            let report = engine::prune::prune(
                &set.targets,
                &settings.loaded.config,
                &settings.database_names()?,
                only.as_deref(),
                args.dry_run,
                chrono::Utc::now(),
            )
            .await?;
            if !args.dry_run {
                retire_orphaned_slot(settings, &set.targets).await;
            }
            Ok(output::report(settings.json, &report, None))
        }
        BackupCommand::Pin(args) => {
            let set = settings.targets().await?;
            let report = engine::pin::pin(
                &set.targets,
                &args.backup_id,
                &settings.database_name()?,
                args.until,
                args.reason,
                chrono::Utc::now(),
            )
            .await?;
            Ok(output::report(settings.json, &report, None))
        }
        BackupCommand::Unpin(args) => {
            let set = settings.targets().await?;
            let report = engine::pin::unpin(&set.targets, &args.backup_id).await?;
            Ok(output::report(settings.json, &report, None))
        }
        BackupCommand::VerifyHistory => {
            let repo = settings.repository().await?;
            let trusted = larder::repository::keys::source().trusted_signers;
            let history = signing::verify_history(&repo, &trusted).await?;
            let failure = history.problems.first().map(|first| {
                Error::SignatureRefused(format!(
                    "the history of the repository at {} has {} problem(s), first: backup {}: {}",
                    repo.target().location(),
                    history.problems.len(),
                    first.backup_id,
                    first.problem
                ))
            });
            let report = output::VerifiedHistory {
                repository: repo.target().location(),
                history,
            };
            Ok(output::report(settings.json, &report, failure))
        }
    }
}

/// [`engine::incremental::slot::retire_after_deleting`] for the configured database.
async fn retire_orphaned_slot(
    settings: &Settings,
    targets: &[std::sync::Arc<dyn larder::targets::Target>],
) {
    let config = &settings.loaded.config.incremental;
    match settings.database() {
        Ok(database) => {
            engine::incremental::slot::retire_after_deleting(&database, config, targets).await
        }
        Err(e) if config.enabled => {
            tracing::warn!("could not check the replication slot of incremental backups: {e}")
        }
        Err(_) => {}
    }
}
