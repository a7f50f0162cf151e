//! `backup-cli backup …`: create, list, validate, export, delete and sync backups.

use crate::cli::BackupCommand;
use crate::output;
use crate::settings::Settings;
use larder::repository::Repository;
use larder::{Error, Result, engine};

pub async fn run(settings: &Settings, command: BackupCommand) -> Result<()> {
    match command {
        BackupCommand::Export(args) => {
            let repo = settings.repository().await?;
            let manifest = repo
                .resolve(&args.backup_id, &settings.database_name()?)
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
            let report = engine::export::export(&repo, &manifest, out, compress).await?;
            if args.output != "-" {
                output::exported(&report, &args.output, settings.json);
            }
            Ok(())
        }
        BackupCommand::Create(args) => {
            let database = settings.database()?;
            let config = &settings.loaded.config.backup;
            let set = settings.targets().await?;
            let names = if args.targets.is_empty() && !settings.repo_override {
                config.targets.clone()
            } else {
                args.targets.clone()
            };
            let selected = set.select(&names)?;
            // A repository is started where someone chose one (flag, environment, config),
            // never at the default path nobody chose (cron's working directory).
            let repo = if set.unchosen {
                Repository::open(selected[0].clone()).await?
            } else {
                Repository::open_or_init(selected[0].clone()).await?
            };
            let opts = engine::backup::BackupOptions {
                name: args.name,
                backup_type: args.backup_type,
                jobs: settings.jobs(args.jobs.or(config.jobs)),
                compression_level: args.compression_level.unwrap_or(config.compression_level),
                pg_dump: config.pg_dump.clone(),
                split_bytes: None,
                schedule: None,
                validators: larder::plugin::validator::open_configured(&settings.loaded).await?,
            };
            let manifest =
                engine::backup::create(&database, &repo, &opts, &settings.progress).await?;
            // Then a copy on every other selected target; a failed copy leaves the backup safe
            // on the primary and says how to finish the job.
            let mut copies = Vec::new();
            let mut failures = Vec::new();
            for target in &selected[1..] {
                let copied = async {
                    let dest = Repository::open_or_init(target.clone()).await?;
                    engine::sync::copy_backup(
                        &repo,
                        &dest,
                        &manifest,
                        opts.jobs,
                        false,
                        &settings.progress,
                    )
                    .await
                }
                .await;
                match copied {
                    Ok(report) => copies.push(report),
                    Err(e) => failures.push(format!("target '{}': {e}", target.name())),
                }
            }
            if settings.json || !settings.quiet {
                output::backup_created(
                    &manifest,
                    &repo.target().location(),
                    &copies,
                    &failures,
                    settings.json,
                );
            }
            engine::validators::verdict(&manifest)?;
            match failures.first() {
                None => Ok(()),
                Some(first) => Err(Error::CopiesIncomplete(format!(
                    "backup {} is complete on '{}' but copying it failed on {} target(s), first {first}; run `backup-cli backup sync` when the target is back",
                    manifest.id,
                    selected[0].name(),
                    failures.len()
                ))),
            }
        }
        BackupCommand::List(args) => {
            let set = settings.targets().await?;
            // Fails with a hint when no target holds a repository at all.
            let repo = Repository::open_for_reading(&set.targets).await?;
            let mut backups =
                engine::list::list(&set.targets, args.limit, args.backup_type, args.verify).await;
            if settings.db.is_some() {
                let dbname = settings.database_name()?;
                backups.retain(|b| b.database == dbname);
            }
            output::backup_list(&backups, &repo.target().location(), settings.json);
            Ok(())
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
            let (report, copies) = engine::validate::validate_copies(
                &targets,
                &manifest,
                &settings.loaded.config.objectives,
                &larder::plugin::validator::open_configured(&settings.loaded).await?,
                settings.jobs(args.jobs),
                &settings.progress,
            )
            .await?;
            output::validation(report.as_ref(), &copies, settings.json);
            let intact: Vec<&str> = copies
                .iter()
                .filter(|c| c.status == engine::validate::CopyStatus::Intact)
                .map(|c| c.target.as_str())
                .collect();
            let bad: Vec<String> = copies
                .iter()
                .filter(|c| c.status != engine::validate::CopyStatus::Intact)
                .map(|c| {
                    format!(
                        "the copy on target '{}' is {} ({})",
                        c.target,
                        c.status.as_str(),
                        c.first_problem.as_deref().unwrap_or("no detail")
                    )
                })
                .collect();
            match (intact.first(), bad.first()) {
                (_, None) => match &report {
                    Some(report) => {
                        engine::validators::verdict_of(&report.backup_id, &report.validators)
                    }
                    None => Ok(()),
                },
                (Some(_), Some(_)) if args.any_copy => Ok(()),
                (Some(first_intact), Some(_)) => Err(Error::CopiesDamaged(format!(
                    "backup {}: {}; intact on {}: restore with `--from {first_intact}`, repair the others with `backup-cli backup sync` (or accept one intact copy with --any-copy)",
                    manifest.id,
                    bad.join("; "),
                    intact.join(", ")
                ))),
                (None, Some(first)) => Err(match report {
                    Some(report) => Error::ValidationFailed {
                        backup_id: report.backup_id.clone(),
                        first: report.first_error().unwrap_or_else(|| first.clone()),
                        problems: report.items.iter().map(|i| i.problems.len()).sum(),
                    },
                    None => Error::CopiesDamaged(format!(
                        "backup {}: no intact copy: {}",
                        manifest.id,
                        bad.join("; ")
                    )),
                }),
            }
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
                output::delete_plan(&plan, settings.json);
                return Ok(());
            }
            let report = engine::delete::execute(&plan, args.force).await?;
            output::deleted(&report, settings.json);
            Ok(())
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
            output::synced(&reports, settings.json);
            Ok(())
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
            output::pruned(&report, settings.json);
            Ok(())
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
            output::pinned(&report, settings.json);
            Ok(())
        }
        BackupCommand::Unpin(args) => {
            let set = settings.targets().await?;
            let report = engine::pin::unpin(&set.targets, &args.backup_id).await?;
            output::pinned(&report, settings.json);
            Ok(())
        }
    }
}
