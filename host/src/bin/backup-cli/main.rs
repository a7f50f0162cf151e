//! `backup-cli`: the thin command-line layer over the Larder engine.
//!
//! Parses flags, loads the configuration, opens the repository and the database settings,
//! calls one engine operation and prints its result for people (tables) or machines (`--json`).
//! Exit codes: 0 success, 1 failure, 2 usage error or refusal, 130 stopped by SIGINT (Ctrl-C),
//! 143 stopped by SIGTERM (after undoing what the operation had changed).

mod cli;
mod output;

use clap::Parser;
use cli::{
    BackupCommand, Cli, Command, ConfigCommand, MonitorCommand, PluginCommand, RecoveryArgs,
    RecoveryCommand, RepositoryCommand, ScheduleCommand,
};
use larder::config::{Loaded, Origin, Setting};
use larder::engine::{self, Progress, interrupt};
use larder::pg::ConnectionSettings;
use larder::repository::Repository;
use larder::repository::latest::Selection;
use larder::targets::configured::{self, TargetSet};
use larder::targets::fs::{FsTarget, Modes};
use larder::{Error, Result};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    larder::logging::init(cli.global.verbose, std::io::stderr().is_terminal());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            output::note!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let json = cli.global.json;
    output::set_wide(cli.global.wide);
    let result = runtime.block_on(async {
        if let Err(e) = interrupt::listen() {
            tracing::warn!("cannot catch SIGINT and SIGTERM: {e}");
        }
        let work = run(cli);
        let mut work = std::pin::pin!(work);
        tokio::select! {
            result = &mut work => result,
            signal = interrupt::received() => {
                if interrupt::cleanup_pending() {
                    // The operation undoes its work and reports; a second signal stops waiting.
                    tokio::select! {
                        result = &mut work => result,
                        signal = interrupt::received_again() => Err(Error::Interrupted {
                            signal,
                            state: "interrupted again: stopped without finishing the clean-up; \
                                    a restore's transaction is discarded by PostgreSQL, and a partial \
                                    database (named *_larder_partial) is dropped by the next restore \
                                    into the same database".into(),
                        }),
                    }
                } else {
                    Err(Error::Interrupted {
                        signal,
                        state: "stopped before anything was recorded; chunks a backup had \
                                written are reclaimed by the next garbage collection".into(),
                    })
                }
            }
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
                        | Error::CopiesDamaged(_)
                        | Error::HealthFailed(_)
                        | Error::CopiesIncomplete(_)
                )
            {
                let status = if matches!(e, Error::Interrupted { .. }) {
                    "interrupted"
                } else {
                    "error"
                };
                output::json(&serde_json::json!({ "status": status, "error": e.to_string() }));
            }
            output::note!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// What every command needs, resolved once from flags, environment and config.
struct Context {
    loaded: Loaded,
    repo_flag: Option<std::path::PathBuf>,
    database_flag: Option<String>,
    json: bool,
    quiet: bool,
    progress: Progress,
    database_url: Option<String>,
}

impl Context {
    /// Whether `--repo` or `$BACKUP_CLI_REPO` replaces the configured targets.
    fn repo_override(&self) -> bool {
        matches!(
            self.loaded.repository_path(self.repo_flag.as_deref()).1,
            Origin::Flag(_) | Origin::Env(_)
        )
    }

    fn database(&self) -> Result<ConnectionSettings> {
        ConnectionSettings::resolve(self.database_url.as_deref(), &self.loaded.config.database)
    }

    /// Every configured storage target (plugins are loaded here).
    async fn targets(&self) -> Result<TargetSet> {
        configured::open(&self.loaded, self.repo_flag.as_deref()).await
    }

    /// The targets every backup should be on: `[backup] targets`, else all of them (names;
    /// empty means all).
    fn expected_targets(&self) -> Vec<String> {
        if self.repo_override() {
            Vec::new()
        } else {
            self.loaded.config.backup.targets.clone()
        }
    }

    /// `config show`: every effective setting and its origin, without opening anything.
    fn effective_settings(&self) -> Vec<Setting> {
        let loaded = &self.loaded;
        let mut out = vec![Setting {
            setting: "config file".into(),
            value: match &loaded.path {
                Some(path) if loaded.origin == Origin::Default => {
                    format!("{} (found by searching)", path.display())
                }
                Some(path) => path.display().to_string(),
                None => format!(
                    "none found ({}, {}): built-in defaults",
                    larder::config::SEARCHED[0],
                    larder::config::SEARCHED[1]
                ),
            },
            origin: loaded.origin.clone(),
        }];
        let url = loaded.database_url(self.database_flag.as_deref());
        let url_origin = url
            .as_ref()
            .map(|(_, o)| o.clone())
            .unwrap_or(Origin::Default);
        out.push(Setting {
            setting: "database.url".into(),
            value: url
                .as_ref()
                .map(|(u, _)| larder::pg::connect::redact(u))
                .unwrap_or_else(|| "unset: the libpq PG* variables and defaults".into()),
            origin: url_origin.clone(),
        });
        match ConnectionSettings::resolve(
            url.as_ref().map(|(u, _)| u.as_str()),
            &loaded.config.database,
        ) {
            Ok(settings) => {
                out.push(Setting {
                    setting: "database (resolved)".into(),
                    value: format!(
                        "{} sslmode={}",
                        settings.describe(),
                        settings.sslmode.as_str()
                    ),
                    origin: url_origin.clone(),
                });
                out.push(Setting {
                    setting: "database.password".into(),
                    value: match settings.password_source {
                        Some(source) => format!("set, from {source} (not shown)"),
                        None => "none".into(),
                    },
                    origin: match settings.password_source {
                        Some("PGPASSWORD") => Origin::Env("PGPASSWORD".into()),
                        Some("password_file") => loaded.origin_of("database", "password_file"),
                        Some("the database URL") => url_origin,
                        _ => Origin::Default,
                    },
                });
            }
            Err(e) => out.push(Setting {
                setting: "database (resolved)".into(),
                value: format!("error: {e}"),
                origin: url_origin,
            }),
        }
        let (_, repo_origin) = loaded.repository_path(self.repo_flag.as_deref());
        for (name, how) in configured::how_chosen(loaded, self.repo_flag.as_deref()) {
            let location = if self.repo_override() || loaded.config.targets.is_empty() {
                loaded
                    .repository_path(self.repo_flag.as_deref())
                    .0
                    .display()
                    .to_string()
            } else {
                loaded
                    .config
                    .targets
                    .iter()
                    .find(|t| t.name() == name)
                    .map(|t| match t {
                        larder::config::TargetConfig::Fs(fs) => {
                            format!("fs {}", loaded.config_relative(&fs.path).display())
                        }
                        larder::config::TargetConfig::S3(s3) => {
                            format!(
                                "s3 bucket {} {}",
                                s3.bucket,
                                s3.endpoint.as_deref().unwrap_or("")
                            )
                        }
                        larder::config::TargetConfig::Plugin(p) => {
                            format!("plugin {}", loaded.config_relative(&p.path).display())
                        }
                    })
                    .unwrap_or_default()
            };
            out.push(Setting {
                setting: format!("target {name}"),
                value: format!("{location} ({how})"),
                origin: if self.repo_override() || loaded.config.targets.is_empty() {
                    repo_origin.clone()
                } else {
                    Origin::ConfigFile(loaded.path.clone().unwrap_or_default())
                },
            });
        }
        out.extend(loaded.settings());
        out
    }

    /// `monitor health` over every configured target.
    async fn health(&self) -> Result<engine::monitor::Health> {
        let set = self.targets().await?;
        let expected = set
            .select(&self.expected_targets())?
            .iter()
            .map(|t| t.name().to_string())
            .collect();
        let targets = engine::monitor::Targets {
            targets: &set.targets,
            expected,
            chosen: &set.chosen,
        };
        Ok(engine::monitor::health(&self.database()?, &targets, &self.loaded.config).await)
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

    /// The configured database's name: whose backups `latest` names.
    fn database_name(&self) -> Result<String> {
        Ok(self.database()?.dbname)
    }

    /// The destination (the database restored into): `--dest-url`, else the configured
    /// database (renamed by `--dest-db`).
    fn plan_request(
        &self,
        args: &RecoveryArgs,
        selection: &Selection,
    ) -> Result<engine::recovery::plan::PlanRequest> {
        let destination = match &args.dest_url {
            Some(url) => ConnectionSettings::resolve(Some(url), &self.loaded.config.database)?,
            None => {
                let configured = self.database()?;
                match &args.dest_db {
                    Some(name) => configured.with_dbname(name),
                    None => configured,
                }
            }
        };
        Ok(engine::recovery::plan::PlanRequest {
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
        })
    }
}

/// Asks before a recovery that overwrites data; refuses when there is nobody to ask.
fn confirm(plan: &engine::recovery::plan::RecoveryPlan, yes: bool, json: bool) -> Result<()> {
    if yes || plan.strategy != engine::recovery::plan::Strategy::Replace {
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
    // Not with --json either: it keeps stderr for errors (a missing repository still says
    // that no configuration file was found).
    if !cli.global.quiet
        && !cli.global.json
        && let Some(note) = loaded.defaults_note()
    {
        output::note!("{note}");
    }
    let interactive = std::io::stderr().is_terminal() && !cli.global.json && !cli.global.quiet;
    let ctx = Context {
        database_url: loaded
            .database_url(cli.global.database_url.as_deref())
            .map(|(url, _)| url),
        loaded,
        repo_flag: cli.global.repo.clone(),
        database_flag: cli.global.database_url.clone(),
        json: cli.global.json,
        quiet: cli.global.quiet,
        progress: Progress::new(interactive),
    };
    let chosen = configured::how_chosen(&ctx.loaded, ctx.repo_flag.as_deref());
    dispatch(&ctx, command)
        .await
        .map_err(|e| configured::explain(&chosen, e))
}

async fn dispatch(ctx: &Context, command: Command) -> Result<()> {
    match command {
        Command::Init(_) => Ok(()), // handled above
        Command::Monitor(MonitorCommand::Health(args)) => {
            let health = ctx.health().await?;
            output::health(&health, ctx.json);
            if args.alert_on_failure && health.alerts().next().is_some() {
                match &ctx.loaded.config.monitor.alert_command {
                    Some(command) => {
                        let sent = engine::monitor::deliver(&health, command).await?;
                        output::note!("{sent} alert(s) sent through `{command}`");
                    }
                    None => output::note!(
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
            let health = ctx.health().await?;
            output::alerts(&health, ctx.json);
            Ok(())
        }
        Command::Schedule(ScheduleCommand::List) => {
            let manifests = match ctx.repository().await {
                Ok(repo) => repo.manifests().await?,
                Err(Error::NoRepository { .. }) => Vec::new(), // no repository yet: nothing ran
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
            let selection = repo.select(&args.backup_id, &ctx.database_name()?).await?;
            let manifest = &selection.manifest;
            let plan = engine::recovery::plan::plan(
                &repo,
                manifest,
                &ctx.plan_request(&args, &selection)?,
            )
            .await?;
            output::plan(&plan, ctx.json);
            Ok(())
        }
        Command::Recovery(RecoveryCommand::Execute(args)) => {
            let repo = ctx.repository_from(args.recovery.from.as_deref()).await?;
            let selection = repo
                .select(&args.recovery.backup_id, &ctx.database_name()?)
                .await?;
            let manifest = &selection.manifest;
            let request = ctx.plan_request(&args.recovery, &selection)?;
            let plan = engine::recovery::plan::plan(&repo, manifest, &request).await?;
            let jobs = args.jobs.unwrap_or_else(engine::default_jobs);
            if !ctx.json {
                output::plan(&plan, false);
            }
            if args.dry_run {
                let verified = engine::recovery::restore::preflight(
                    &repo,
                    manifest,
                    &plan,
                    jobs,
                    &ctx.progress,
                )
                .await?;
                output::dry_run(&plan, verified, ctx.json);
                return Ok(());
            }
            plan.check_ready()?;
            confirm(&plan, args.yes, ctx.json)?;
            let report =
                engine::recovery::restore::execute(&repo, manifest, &plan, jobs, &ctx.progress)
                    .await?;
            output::restored(&report, ctx.json);
            Ok(())
        }
        Command::Backup(BackupCommand::Export(args)) => {
            let repo = ctx.repository().await?;
            let manifest = repo.resolve(&args.backup_id, &ctx.database_name()?).await?;
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
            let names = if args.targets.is_empty() && !ctx.repo_override() {
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
                    engine::sync::copy_backup(
                        &repo,
                        &dest,
                        &manifest,
                        opts.jobs,
                        false,
                        &ctx.progress,
                    )
                    .await
                }
                .await;
                match copied {
                    Ok(report) => copies.push(report),
                    Err(e) => failures.push(format!("target '{}': {e}", target.name())),
                }
            }
            if ctx.json || !ctx.quiet {
                output::backup_created(
                    &manifest,
                    &repo.target().location(),
                    &copies,
                    &failures,
                    ctx.json,
                );
            }
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
            let backups =
                engine::list::list(&set.targets, args.limit, args.backup_type, args.verify).await;
            output::backup_list(&backups, &repo.target().location(), ctx.json);
            Ok(())
        }
        Command::Backup(BackupCommand::Validate(args)) => {
            let set = ctx.targets().await?;
            // Each copy on its own, without fallback, so a bad object on one is reported.
            let targets = match &args.target {
                Some(name) => vec![set.get(name)?],
                None => set.select(&ctx.expected_targets())?,
            };
            let manifest = Repository::open_for_reading(&set.targets)
                .await?
                .resolve(&args.backup_id, &ctx.database_name()?)
                .await?;
            let jobs = args.jobs.unwrap_or_else(engine::default_jobs);
            let (report, copies) = engine::validate::validate_copies(
                &targets,
                &manifest,
                &ctx.loaded.config.objectives,
                jobs,
                &ctx.progress,
            )
            .await?;
            output::validation(report.as_ref(), &copies, ctx.json);
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
                (_, None) => Ok(()),
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
        Command::Backup(BackupCommand::Delete(args)) => {
            let set = ctx.targets().await?;
            let scope = engine::delete::Scope {
                only: args.targets.clone(),
                all_targets: args.all_targets,
            };
            let report = engine::delete::delete(
                &set.targets,
                &args.backup_id,
                &ctx.database_name()?,
                args.force,
                &scope,
            )
            .await?;
            output::deleted(&report, ctx.json);
            Ok(())
        }
        Command::Backup(BackupCommand::Sync(args)) => {
            let set = ctx.targets().await?;
            let targets = set.select(&args.targets)?;
            let jobs = args.jobs.unwrap_or_else(engine::default_jobs);
            let reports = engine::sync::sync(&targets, jobs, args.verify, &ctx.progress).await?;
            output::synced(&reports, ctx.json);
            Ok(())
        }
        Command::Config(ConfigCommand::Show) => {
            output::settings(&ctx.effective_settings(), ctx.json);
            Ok(())
        }
        Command::Repository(RepositoryCommand::Unlock(args)) => {
            let set = ctx.targets().await?;
            let mut reports = Vec::new();
            for target in &set.targets {
                // A target without a repository has no locks.
                let repo = match Repository::open(target.clone()).await {
                    Ok(repo) => repo,
                    Err(Error::Repository(_)) => continue,
                    Err(e) => return Err(e),
                };
                reports.push(repo.unlock(args.force).await?);
            }
            output::unlocked(&reports, ctx.json);
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

/// Writes a file readable by its owner only (0600 whatever the umask): the configuration may
/// name secrets' locations and the database.
fn write_private(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(data)
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
    write_private(&path, larder::config::TEMPLATE.as_bytes())
        .map_err(Error::io(format!("writing {}", path.display())))?;
    let loaded = Loaded::discover(Some(&path))?;
    let (repo_path, _) = loaded.repository_path(repo_flag);
    let modes = Modes::new(loaded.config.repository.group_access);
    let target = FsTarget::create("local", &repo_path, modes)
        .map(Arc::new)
        .map_err(|e| e.at("(repository root)", "creating the repository folder"))?;
    Repository::open_or_init(target).await?;
    output::initialised(&path, &repo_path, json);
    Ok(())
}
