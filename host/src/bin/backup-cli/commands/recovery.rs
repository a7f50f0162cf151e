//! `backup-cli recovery …`: plan a recovery from a backup, and carry it out after asking
//! (or being told `--yes`) when it overwrites data; restore drills and their history.

use crate::cli::{DrillArgs, RecoveryArgs, RecoveryCommand};
use crate::output::{self, Drills, DryRun, Outcome, Report};
use crate::settings::Settings;
use larder::engine::recovery::plan::{PlanRequest, RecoveryPlan, Strategy};
use larder::engine::recovery::provenance;
use larder::pg::ConnectionSettings;
use larder::repository::latest::Selection;
use larder::{Error, Result, engine};
use std::io::IsTerminal;

pub async fn run(settings: &Settings, command: RecoveryCommand) -> Result<Outcome> {
    match command {
        RecoveryCommand::Plan(args) => {
            let repo = settings.repository_from(args.from.as_deref()).await?;
            let selection = repo
                .select(&args.backup_id, &settings.database_name()?)
                .await?;
            let manifest = &selection.manifest;
            let request = request(settings, &args, &selection)?;
            let checked =
                provenance::check(&repo, manifest, request.until, args.allow_unsigned).await?;
            let mut plan = engine::recovery::plan::plan(&repo, manifest, &request).await?;
            plan.risks.extend(checked.risks);
            Ok(output::report(settings.json, &plan, None))
        }
        RecoveryCommand::Execute(args) => {
            let repo = settings
                .repository_from(args.recovery.from.as_deref())
                .await?;
            let selection = repo
                .select(&args.recovery.backup_id, &settings.database_name()?)
                .await?;
            let manifest = &selection.manifest;
            let request = request(settings, &args.recovery, &selection)?;
            let checked =
                provenance::check(&repo, manifest, request.until, args.recovery.allow_unsigned)
                    .await?;
            let mut plan = engine::recovery::plan::plan(&repo, manifest, &request).await?;
            plan.risks.extend(checked.risks.clone());
            let jobs = settings.jobs(args.jobs);
            if !settings.json {
                plan.human();
            }
            if args.dry_run {
                let verified = engine::recovery::restore::preflight(
                    &repo,
                    manifest,
                    &plan,
                    jobs,
                    &settings.progress,
                )
                .await?;
                let dry_run = DryRun {
                    chunks_verified: verified,
                    plan: &plan,
                };
                return Ok(output::report(settings.json, &dry_run, None));
            }
            plan.check_ready()?;
            confirm(&plan, args.yes, settings.json)?;
            let mut report = engine::recovery::restore::execute(
                &repo,
                manifest,
                &plan,
                jobs,
                &settings.progress,
            )
            .await?;
            report.signature = checked;
            Ok(output::report(settings.json, &report, None))
        }
        RecoveryCommand::Drill(args) => {
            let repo = settings.repository_from(args.from.as_deref()).await?;
            let request = drill_request(settings, &args).await?;
            let scope = settings.alert_scope().await?;
            let report = engine::drill::run(
                &repo,
                &request,
                Some((&settings.loaded, &scope)),
                &settings.progress,
            )
            .await?;
            let failure = report.failure();
            Ok(output::report(settings.json, &report, failure))
        }
        RecoveryCommand::Drills(args) => {
            let repo = settings.repository().await?;
            let drills = repo.drills(args.limit).await?;
            Ok(output::report(settings.json, &Drills(drills), None))
        }
    }
}

/// The drill the flags and the configuration ask for.
async fn drill_request(
    settings: &Settings,
    args: &DrillArgs,
) -> Result<engine::drill::DrillRequest> {
    let config = &settings.loaded.config;
    let objectives = config.objectives_for(settings.db.as_deref())?;
    let choice = match &args.schedule {
        Some(name) => {
            let schedule = config.schedule(name)?;
            if schedule.backup_type().is_ok() {
                return Err(Error::Config(format!(
                    "--schedule {name}: that schedule takes {} backups, it is no drill; run it with `backup-cli backup create --schedule {name}`",
                    schedule.schedule_type
                )));
            }
            if let Some(theirs) = &schedule.database
                && settings.db.as_deref() != Some(theirs.as_str())
                && config.databases.len() > 1
            {
                return Err(Error::Config(format!(
                    "--schedule {name}: that schedule drills database '{theirs}'; add --db {theirs}"
                )));
            }
            engine::drill::Choice::of(schedule.backup.as_deref(), schedule.random_within)
        }
        None => engine::drill::Choice::of(args.backup_id.as_deref(), args.random_within),
    };
    let mut request = engine::drill::DrillRequest::configured(
        &config.drill,
        choice,
        settings.database_name()?,
        objectives,
        larder::plugin::validator::open_configured(&settings.loaded).await?,
        settings.jobs(args.jobs),
    )?;
    request.keep = args.keep;
    request.until = args.point.until();
    request.verification = args.verify;
    Ok(request)
}

/// The destination (the database restored into): `--dest-url`, else the configured
/// database (renamed by `--dest-db`).
fn request(settings: &Settings, args: &RecoveryArgs, selection: &Selection) -> Result<PlanRequest> {
    let destination = match &args.dest_url {
        Some(url) => ConnectionSettings::resolve(Some(url), &settings.loaded.config.database)?,
        None => {
            let configured = settings.database()?;
            match &args.dest_db {
                Some(name) => configured.with_dbname(name),
                None => configured,
            }
        }
    };
    Ok(PlanRequest {
        strategy: args.strategy,
        tables: args.tables.clone(),
        cascade: args.cascade,
        no_owner: args.no_owner,
        verification: args.verify,
        destination,
        destination_named: args.dest_db.is_some() || args.dest_url.is_some(),
        requested: selection.requested.clone(),
        passed_over: selection.passed_over.clone(),
        schema_only: args.schema_only,
        from_other_database: args.from_other_database,
        create_roles: args.create_roles,
        until: args.point.until(),
    })
}

/// Asks before a recovery that overwrites data; refuses when there is nobody to ask.
fn confirm(plan: &RecoveryPlan, yes: bool, json: bool) -> Result<()> {
    if yes || plan.strategy != Strategy::Replace {
        return Ok(());
    }
    let what = format!(
        "-s replace overwrites {} in database {} with {}",
        if plan.subset {
            plan.tables
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        } else {
            "every object of the backup's schemas".into()
        },
        plan.destination.database,
        plan.backup_summary()
    );
    if json || !std::io::stdin().is_terminal() {
        return Err(Error::Refused(format!(
            "{what}; there is no terminal to confirm on, so re-run with --yes to proceed"
        )));
    }
    output::err(format_args!(
        "{what}.\nType the database name ({}) to proceed: ",
        plan.destination.database
    ));
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(Error::io("reading the confirmation"))?;
    if answer.trim() != plan.destination.database {
        return Err(Error::Refused("not confirmed; nothing was changed".into()));
    }
    Ok(())
}
