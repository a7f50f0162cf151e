//! `backup-cli`: the thin command-line layer over the Larder engine.
//!
//! Parses flags, loads the configuration, opens the repository and the database settings,
//! calls one engine operation and prints its result for people (tables) or machines (`--json`).
//! Exit codes: 0 success, 1 failure, 2 usage error or refusal.

mod cli;
mod output;

use clap::Parser;
use cli::{
    BackupCommand, Cli, Command, MonitorCommand, PluginCommand, RecoveryArgs, RecoveryCommand,
    ScheduleCommand,
};
use larder::config::Loaded;
use larder::engine::{self, Progress};
use larder::pg::ConnectionSettings;
use larder::repository::Repository;
use larder::targets::Target;
use larder::targets::configured::{self, TargetSet};
use larder::targets::fs::FsTarget;
use larder::{Error, Result};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.global.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let json = cli.global.json;
    let result = runtime.block_on(async {
        tokio::select! {
            result = run(cli) => result,
            _ = tokio::signal::ctrl_c() => Err(Error::Refused(
                "interrupted: nothing was recorded for the running operation; \
                 any chunks it wrote are reclaimed by the next garbage collection".into(),
            )),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A failed validation, health check or copy has already printed its JSON report.
            if json
                && !matches!(
                    e,
                    Error::ValidationFailed { .. }
                        | Error::HealthFailed(_)
                        | Error::CopiesIncomplete(_)
                )
            {
                output::json(&serde_json::json!({ "status": "error", "error": e.to_string() }));
            }
            eprintln!("error: {e}");
            ExitCode::from(if e.is_usage() { 2 } else { 1 })
        }
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

/// What every command needs, resolved once from flags, environment and config.
struct Context {
    loaded: Loaded,
    repo_flag: Option<std::path::PathBuf>,
    json: bool,
    progress: Progress,
    database_url: Option<String>,
}

impl Context {
    fn database(&self) -> Result<ConnectionSettings> {
        ConnectionSettings::resolve(self.database_url.as_deref(), &self.loaded.config.database)
    }

    /// Every configured storage target (plugins are loaded here).
    async fn targets(&self) -> Result<TargetSet> {
        configured::open(&self.loaded, self.repo_flag.as_deref()).await
    }

    /// The primary target: where backups are written first, locks and history live.
    async fn primary(&self) -> Result<Arc<dyn Target>> {
        let set = self.targets().await?;
        let names = &self.loaded.config.backup.targets;
        set.select(if self.repo_flag.is_some() { &[] } else { names })?
            .into_iter()
            .next()
            .ok_or_else(|| Error::Config("no storage target is configured".into()))
    }

    /// The repository for reading: `first` (or the first configured target), falling back to
    /// the other targets for objects that are missing or corrupt there.
    async fn repository_from(&self, first: Option<&str>) -> Result<Repository> {
        let set = self.targets().await?;
        let mut order = set.targets.clone();
        if let Some(name) = first {
            let chosen = set.get(name)?;
            order.retain(|t| t.name() != chosen.name());
            order.insert(0, chosen);
        }
        Repository::open_for_reading(&order).await
    }

    async fn repository(&self) -> Result<Repository> {
        self.repository_from(None).await
    }

    /// The recovery target: `--target-url`, else the configured database (renamed by `--target-db`).
    fn plan_request(&self, args: &RecoveryArgs) -> Result<engine::plan::PlanRequest> {
        let target = match &args.target_url {
            Some(url) => ConnectionSettings::resolve(Some(url), &self.loaded.config.database)?,
            None => {
                let configured = self.database()?;
                match &args.target_db {
                    Some(name) => configured.with_dbname(name),
                    None => configured,
                }
            }
        };
        Ok(engine::plan::PlanRequest {
            strategy: args.strategy,
            tables: args.tables.clone(),
            cascade: args.cascade,
            no_owner: args.no_owner,
            verification: args.verify,
            target,
            target_named: args.target_db.is_some() || args.target_url.is_some(),
        })
    }
}

/// Asks before a recovery that overwrites data; refuses when there is nobody to ask.
fn confirm(plan: &engine::plan::RecoveryPlan, yes: bool, json: bool) -> Result<()> {
    if yes || plan.strategy != engine::plan::Strategy::Replace {
        return Ok(());
    }
    let what = format!(
        "-s replace overwrites {} in database {}",
        if plan.subset {
            plan.tables
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        } else {
            "every object of the backup's schemas".into()
        },
        plan.target.database
    );
    if json || !std::io::stdin().is_terminal() {
        return Err(Error::Refused(format!(
            "{what}; there is no terminal to confirm on, so re-run with --yes to proceed"
        )));
    }
    eprint!(
        "{what}.\nType the database name ({}) to proceed: ",
        plan.target.database
    );
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(Error::io("reading the confirmation"))?;
    if answer.trim() != plan.target.database {
        return Err(Error::Refused("not confirmed; nothing was changed".into()));
    }
    Ok(())
}

async fn run(cli: Cli) -> Result<()> {
    // init runs before any configuration exists, so it is handled before reading one.
    let command = match cli.command {
        Command::Init(args) => {
            return init(
                cli.global.config.as_deref(),
                cli.global.repo.as_deref(),
                args.force,
                cli.global.json,
            )
            .await;
        }
        other => other,
    };
    let loaded = Loaded::discover(cli.global.config.as_deref())?;
    let interactive = std::io::stderr().is_terminal() && !cli.global.json && !cli.global.quiet;
    let ctx = Context {
        database_url: loaded.database_url(cli.global.database_url.as_deref()),
        loaded,
        repo_flag: cli.global.repo.clone(),
        json: cli.global.json,
        progress: Progress::new(interactive),
    };
    match command {
        Command::Init(_) => Ok(()), // handled above
        Command::Monitor(MonitorCommand::Health(args)) => {
            let health =
                engine::monitor::health(&ctx.database()?, ctx.primary().await?, &ctx.loaded.config)
                    .await;
            output::health(&health, ctx.json);
            if args.alert_on_failure && health.alerts().next().is_some() {
                match &ctx.loaded.config.monitor.alert_command {
                    Some(command) => {
                        let sent = engine::monitor::deliver(&health, command).await?;
                        eprintln!("{sent} alert(s) sent through `{command}`");
                    }
                    None => eprintln!(
                        "warning: no alert channel is configured ([monitor] alert_command in the config); \
                         the failing checks are only reported here and in the exit code"
                    ),
                }
            }
            match health.status {
                engine::monitor::Status::Fail => Err(Error::HealthFailed(
                    health
                        .alerts()
                        .map(|c| c.name.clone())
                        .collect::<Vec<_>>()
                        .join(", "),
                )),
                _ => Ok(()),
            }
        }
        Command::Monitor(MonitorCommand::Alerts) => {
            let health =
                engine::monitor::health(&ctx.database()?, ctx.primary().await?, &ctx.loaded.config)
                    .await;
            output::alerts(&health, ctx.json);
            Ok(())
        }
        Command::Schedule(ScheduleCommand::List) => {
            let manifests = match ctx.repository().await {
                Ok(repo) => repo.manifests().await?,
                Err(Error::Repository(_)) => Vec::new(), // no repository yet: nothing ran
                Err(e) => return Err(e),
            };
            let statuses = engine::schedule::status(
                &ctx.loaded.config.schedules,
                &manifests,
                chrono::Utc::now(),
            )?;
            output::schedules(&statuses, ctx.json);
            Ok(())
        }
        Command::Recovery(RecoveryCommand::Plan(args)) => {
            let repo = ctx.repository_from(args.from.as_deref()).await?;
            let manifest = repo.resolve(&args.backup_id).await?;
            let plan = engine::plan::plan(&repo, &manifest, &ctx.plan_request(&args)?).await?;
            output::plan(&plan, ctx.json);
            Ok(())
        }
        Command::Recovery(RecoveryCommand::Execute(args)) => {
            let repo = ctx.repository_from(args.recovery.from.as_deref()).await?;
            let manifest = repo.resolve(&args.recovery.backup_id).await?;
            let plan =
                engine::plan::plan(&repo, &manifest, &ctx.plan_request(&args.recovery)?).await?;
            let jobs = args.jobs.unwrap_or_else(engine::default_jobs);
            if !ctx.json {
                output::plan(&plan, false);
            }
            if args.dry_run {
                let verified =
                    engine::restore::preflight(&repo, &manifest, &plan, jobs, &ctx.progress)
                        .await?;
                output::dry_run(&plan, verified, ctx.json);
                return Ok(());
            }
            plan.check_ready()?;
            confirm(&plan, args.yes, ctx.json)?;
            let report =
                engine::restore::execute(&repo, &manifest, &plan, jobs, &ctx.progress).await?;
            output::restored(&report, ctx.json);
            Ok(())
        }
        Command::Backup(BackupCommand::Export(args)) => {
            let repo = ctx.repository().await?;
            let manifest = repo.resolve(&args.backup_id).await?;
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
                output::exported(&report, &args.output, ctx.json);
            }
            Ok(())
        }
        Command::Backup(BackupCommand::Create(args)) => {
            let settings = ctx.database()?;
            let config = &ctx.loaded.config.backup;
            let set = ctx.targets().await?;
            let names = if args.targets.is_empty() && ctx.repo_flag.is_none() {
                config.targets.clone()
            } else {
                args.targets.clone()
            };
            let selected = set.select(&names)?;
            let repo = Repository::open_or_init(selected[0].clone()).await?;
            let opts = engine::backup::BackupOptions {
                name: args.name,
                backup_type: args.backup_type,
                jobs: args
                    .jobs
                    .or(config.jobs)
                    .unwrap_or_else(engine::default_jobs)
                    .max(1),
                compression_level: args.compression_level.unwrap_or(config.compression_level),
                pg_dump: config.pg_dump.clone(),
                split_bytes: None,
            };
            let manifest = engine::backup::create(&settings, &repo, &opts, &ctx.progress).await?;
            // Then a copy on every other selected target; a failed copy leaves the backup safe
            // on the primary and says how to finish the job.
            let mut copies = Vec::new();
            let mut failures = Vec::new();
            for target in &selected[1..] {
                let copied = async {
                    let dest = Repository::open_or_init(target.clone()).await?;
                    engine::sync::copy_backup(&repo, &dest, &manifest, opts.jobs, &ctx.progress)
                        .await
                }
                .await;
                match copied {
                    Ok(report) => copies.push(report),
                    Err(e) => failures.push(format!("target '{}': {e}", target.name())),
                }
            }
            output::backup_created(
                &manifest,
                &repo.target().location(),
                &copies,
                &failures,
                ctx.json,
            );
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
        Command::Backup(BackupCommand::List(args)) => {
            let set = ctx.targets().await?;
            // Fails with a hint when no target holds a repository at all.
            let repo = Repository::open_for_reading(&set.targets).await?;
            let backups = engine::list::list(&set.targets, args.limit, args.backup_type).await;
            output::backup_list(&backups, &repo.target().location(), ctx.json);
            Ok(())
        }
        Command::Backup(BackupCommand::Validate(args)) => {
            let repo = match &args.target {
                // One copy only: no fallback, so a bad object on it is reported.
                Some(name) => Repository::open(ctx.targets().await?.get(name)?).await?,
                None => ctx.repository().await?,
            };
            let manifest = repo.resolve(&args.backup_id).await?;
            let jobs = args.jobs.unwrap_or_else(engine::default_jobs);
            let report = engine::validate::validate(
                &repo,
                &manifest,
                &ctx.loaded.config.objectives,
                jobs,
                &ctx.progress,
            )
            .await?;
            output::validation(&report, ctx.json);
            match report.first_error() {
                None => Ok(()),
                Some(first) => Err(Error::ValidationFailed {
                    backup_id: report.backup_id.clone(),
                    first,
                    problems: report.items.iter().map(|i| i.problems.len()).sum(),
                }),
            }
        }
        Command::Backup(BackupCommand::Delete(args)) => {
            let set = ctx.targets().await?;
            let report = engine::delete::delete(&set.targets, &args.backup_id, args.force).await?;
            output::deleted(&report, ctx.json);
            Ok(())
        }
        Command::Backup(BackupCommand::Sync(args)) => {
            let set = ctx.targets().await?;
            let targets = set.select(&args.targets)?;
            let jobs = args.jobs.unwrap_or_else(engine::default_jobs);
            let reports = engine::sync::sync(&targets, jobs, &ctx.progress).await?;
            output::synced(&reports, ctx.json);
            Ok(())
        }
        Command::Plugin(PluginCommand::List) => {
            let set = ctx.targets().await?;
            output::plugins(&set.plugins, ctx.json);
            Ok(())
        }
        Command::Plugin(PluginCommand::Inspect(args)) => {
            let runtime = larder::plugin::Runtime::new(ctx.loaded.plugin_cache_dir())?;
            let inspection = larder::plugin::inspect::inspect(&runtime, &args.file)?;
            output::inspection(&inspection, ctx.json);
            Ok(())
        }
        Command::Plugin(PluginCommand::Hash(args)) => {
            let sha256 = larder::plugin::inspect::hash(&args.file)?;
            output::plugin_hash(&args.file, &sha256, ctx.json);
            Ok(())
        }
    }
}

/// Writes the commented template and initialises the repository it names.
async fn init(
    config_flag: Option<&std::path::Path>,
    repo_flag: Option<&std::path::Path>,
    force: bool,
    json: bool,
) -> Result<()> {
    let path = config_flag
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| "backup-cli.toml".into());
    if path.exists() && !force {
        return Err(Error::Refused(format!(
            "{} already exists; use --force to overwrite it",
            path.display()
        )));
    }
    std::fs::write(&path, larder::config::TEMPLATE)
        .map_err(Error::io(format!("writing {}", path.display())))?;
    let loaded = Loaded::discover(Some(&path))?;
    let repo_path = loaded.repository_path(repo_flag);
    let target = FsTarget::open("local", &repo_path)
        .map(Arc::new)
        .map_err(|e| {
            Error::from_target(e, "(repository root)", "creating the repository folder")
        })?;
    Repository::open_or_init(target).await?;
    output::initialised(&path, &repo_path, json);
    Ok(())
}
