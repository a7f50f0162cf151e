//! `backup-cli daemon`: runs the `[[schedules]]` of one repository and database by itself.
//!
//! One daemon per repository and database (a lock in the repository names its pid, host and
//! start); it runs the schedules of its database only. Each backup run backs up, copies to the
//! schedule's other targets, validates every copy (`[daemon] validate`: chunks or full) and
//! applies retention; a drill run (`type = "drill"`) is `recovery drill` of the schedule's
//! backup, whose failure raises "Drill Failed". One run at a time; a backup's failure raises
//! the runbook's alert through a health check, and health is also checked every
//! `[daemon] health_every`. SIGTERM/SIGINT:
//! no new runs, a running backup gets `[daemon] stop_grace` to finish and is then stopped
//! (nothing half-visible, locks released), exit 0. SIGHUP reloads the configuration; a bad one is refused and the old one kept.

pub mod state;

use crate::config::{Loaded, Schedule, ScheduleType, ValidateMode};
use crate::engine::interrupt::{self, CleanupGuard};
use crate::engine::scheduler::{Event, Scheduler, Timetable};
use crate::engine::{Progress, backup, drill, monitor, validate};
use crate::error::{Error, Result};
use crate::pg::ConnectionSettings;
use crate::repository::Repository;
use crate::repository::lock::RepoLock;
use crate::targets::Target;
use crate::targets::configured::TargetSet;
use chrono::{DateTime, Utc};
use state::{DaemonState, HealthRecord, Outcome, RunRecord, Skipped};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The longest the daemon sleeps before looking at the clock again, so a clock step or a
/// suspended machine is noticed within this long.
const MAX_SLEEP: Duration = Duration::from_secs(30);

/// Everything one configuration resolves to, as the daemon uses it.
pub struct Setup {
    /// The configuration (and its file, which relative paths are relative to).
    pub loaded: Loaded,
    /// Whose alerts health raises (the alert room's state for this repository).
    pub alert_scope: crate::engine::alerts::Scope,
    pub database: ConnectionSettings,
    /// The database as health checks it, with its recovery-point objective.
    pub monitored: Vec<monitor::Monitored>,
    /// Every configured target (health looks at all of them).
    pub targets: TargetSet,
    /// The targets every backup goes to; the first is the primary.
    pub backup_targets: Vec<Arc<dyn Target>>,
    /// Whether the repository may be created on the primary (someone chose where it is).
    pub may_create: bool,
    pub jobs: usize,
    /// Each `[[databases]]` name with its database's name in PostgreSQL (for retention).
    pub database_names: std::collections::BTreeMap<String, String>,
    /// The `[[validators]]` plugins each backup's rows go through.
    pub validators: Vec<Arc<crate::plugin::validator::PluginValidator>>,
    /// The schedules of this database, each with the targets its backups go to (the first
    /// is written, the others get copies).
    pub schedules: Vec<(Schedule, Vec<Arc<dyn Target>>)>,
    /// The database's recovery-time and recovery-point objectives (what drills measure).
    pub objectives: (Duration, Duration),
    /// Where `/metrics`, `/health` and the status page are served (None: `"off"`), as
    /// [`crate::config::Config::daemon_listen`] resolved it for this database.
    pub listen: Option<std::net::SocketAddr>,
}

impl Setup {
    fn schedule(&self, name: &str) -> Option<&(Schedule, Vec<Arc<dyn Target>>)> {
        self.schedules.iter().find(|(s, _)| s.name == name)
    }
}

/// Reads the configuration again (at start and on SIGHUP).
pub type Loader = dyn Fn() -> Pin<Box<dyn Future<Output = Result<Setup>>>>;

/// Work the daemon polls itself (not spawned: the engine's futures are not all `Send`).
type Task<T> = Pin<Box<dyn Future<Output = T>>>;

/// The timetable of each of the daemon's schedules; a bad one is a configuration error
/// naming it.
fn timetables(setup: &Setup) -> Result<Vec<Timetable>> {
    if setup.schedules.is_empty() {
        return Err(Error::Config(format!(
            "no [[schedules]] for database '{}' in the configuration: the daemon has nothing to run (see examples/backup-cli.toml)",
            setup.database.dbname
        )));
    }
    setup
        .schedules
        .iter()
        .map(|(schedule, _)| Timetable::new(schedule))
        .collect()
}

fn primary_of(setup: &Setup) -> Result<&Arc<dyn Target>> {
    setup
        .backup_targets
        .first()
        .ok_or_else(|| Error::Config("no target to back up to".into()))
}

/// Runs until SIGTERM or SIGINT; returns `Ok` after a clean stop.
pub async fn run(load: &Loader) -> Result<()> {
    // The CLI waits for the daemon to stop cleanly instead of exiting at the first signal.
    let _stop_cleanly = CleanupGuard::new();
    interrupt::defer_stop();
    let setup = Arc::new(load().await?);
    let tables = timetables(&setup)?;
    let target = primary_of(&setup)?.clone();
    let primary = if setup.may_create {
        Repository::open_or_init(target).await?
    } else {
        Repository::open(target).await?
    };
    let database = setup.database.dbname.clone();
    let lock = RepoLock::daemon(&primary, &database).await?;
    serve_http(&setup).await;
    let result = Daemon::start(setup, primary.clone(), tables, load)
        .await
        .serve()
        .await;
    let released = lock.release().await;
    result.and(released)
}

/// Starts the `/metrics`, `/health` and status page listener on `[daemon] listen`. A port
/// that cannot be had is logged as an error and the schedules run without it: backups
/// matter more than their metrics (whose absence the alert rules catch).
async fn serve_http(setup: &Setup) {
    let Some(addr) = setup.listen else {
        return;
    };
    let view = crate::engine::listener::View {
        loaded: setup.loaded.clone(),
        targets: crate::engine::metrics::ordered_targets(
            &setup.targets.targets,
            &setup.backup_targets,
        ),
        monitored: setup.monitored.clone(),
        scope: setup.alert_scope.clone(),
    };
    match crate::engine::listener::start(addr, view).await {
        Ok(bound) => tracing::info!(
            listen = %bound,
            "serving /metrics, /health and the status page on http://{bound}/"
        ),
        Err(e) => tracing::error!("{e}; the schedules run without it"),
    }
}

/// The run under way.
struct Running {
    schedule: String,
    run_id: String,
    task: Task<RunRecord>,
}

struct Daemon<'a> {
    setup: Arc<Setup>,
    primary: Repository,
    scheduler: Scheduler,
    state: DaemonState,
    load: &'a Loader,
    queue: VecDeque<(Schedule, DateTime<Utc>)>,
    running: Option<Running>,
    health: Option<Task<HealthRecord>>,
    next_health: Instant,
}

/// What woke the daemon up.
enum Wake {
    Clock,
    Finished(RunRecord),
    HealthDue,
    Checked(HealthRecord),
    Hangup,
    Signal(crate::error::Signal),
}

/// Awaits the task in `slot`, or forever when there is none.
async fn join<T>(slot: &mut Option<Task<T>>) -> T {
    match slot {
        Some(task) => task.await,
        None => std::future::pending().await,
    }
}

impl<'a> Daemon<'a> {
    async fn start(
        setup: Arc<Setup>,
        primary: Repository,
        tables: Vec<Timetable>,
        load: &'a Loader,
    ) -> Daemon<'a> {
        let database = setup.database.dbname.clone();
        let now = Utc::now();
        let mut state = match DaemonState::read(&primary, &database).await {
            Ok(Some(previous)) => previous,
            Ok(None) => DaemonState {
                database: database.clone(),
                pid: 0,
                host: String::new(),
                started_at: now,
                updated_at: now,
                stopped_at: None,
                schedules: Vec::new(),
                last_health: None,
            },
            Err(e) => {
                tracing::warn!("{e}");
                DaemonState {
                    database: database.clone(),
                    pid: 0,
                    host: String::new(),
                    started_at: now,
                    updated_at: now,
                    stopped_at: None,
                    schedules: Vec::new(),
                    last_health: None,
                }
            }
        };
        state.pid = std::process::id();
        state.host = rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned();
        state.started_at = now;
        state.stopped_at = None;
        let scheduler = Scheduler::new(tables, |name| state.last_due(name), now);
        tracing::info!(
            database = %database,
            repository = %primary.target().location(),
            schedules = setup.schedules.len(),
            "daemon started for database {database} on {}",
            primary.target().location()
        );
        let mut daemon = Daemon {
            setup,
            primary,
            scheduler,
            state,
            load,
            queue: VecDeque::new(),
            running: None,
            health: None,
            next_health: Instant::now(),
        };
        daemon.record_upcoming();
        for table in daemon.scheduler.timetables() {
            if let Some((due, start)) = daemon.scheduler.upcoming(&table.name) {
                tracing::info!(
                    schedule = %table.name,
                    "schedule {}: next run due {} ({}), starting {}",
                    table.name,
                    due.format("%Y-%m-%d %H:%M UTC"),
                    table.zone_name,
                    start.format("%Y-%m-%d %H:%M:%S UTC")
                );
            }
        }
        daemon.save().await;
        daemon
    }

    async fn save(&mut self) {
        if let Err(e) = self.state.write(&self.primary).await {
            tracing::warn!("{e}");
        }
    }

    /// Copies each schedule's next run into the state `schedule list` reads.
    fn record_upcoming(&mut self) {
        let names: Vec<String> = self
            .scheduler
            .timetables()
            .map(|t| t.name.clone())
            .collect();
        for name in &names {
            let upcoming = self.scheduler.upcoming(name);
            let record = self.state.schedule_mut(name);
            record.next_due = upcoming.map(|(due, _)| due);
            record.next_start = upcoming.map(|(_, start)| start);
        }
        // Schedules no longer configured (after a reload) keep their history but no next run.
        for record in &mut self.state.schedules {
            if !names.contains(&record.name) {
                record.next_due = None;
                record.next_start = None;
            }
        }
    }

    fn busy(&self, schedule: &str) -> bool {
        self.running
            .as_ref()
            .is_some_and(|r| r.schedule == schedule)
            || self.queue.iter().any(|(s, _)| s.name == schedule)
    }

    async fn serve(mut self) -> Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = signal(SignalKind::hangup()).map_err(Error::io("catching SIGHUP"))?;
        let signal = loop {
            if self.running.is_none()
                && let Some((schedule, due)) = self.queue.pop_front()
            {
                self.start_run(schedule, due);
            }
            let sleep = self
                .scheduler
                .wake_at()
                .and_then(|at| (at - Utc::now()).to_std().ok())
                .unwrap_or_default()
                .min(MAX_SLEEP);
            let wake = tokio::select! {
                _ = tokio::time::sleep(sleep) => Wake::Clock,
                finished = async {
                    match self.running.as_mut() {
                        Some(running) => (&mut running.task).await,
                        None => std::future::pending().await,
                    }
                } => Wake::Finished(finished),
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(self.next_health)),
                    if self.health.is_none() => Wake::HealthDue,
                checked = join(&mut self.health) => Wake::Checked(checked),
                _ = hangup.recv() => Wake::Hangup,
                signal = interrupt::received() => Wake::Signal(signal),
            };
            match wake {
                Wake::Clock => self.poll().await,
                Wake::Finished(finished) => self.finished(finished).await,
                Wake::HealthDue => self.start_health(),
                Wake::Checked(checked) => self.health_checked(checked).await,
                Wake::Hangup => self.reload().await,
                Wake::Signal(signal) => break signal,
            }
        };
        self.stop(signal).await;
        Ok(())
    }

    async fn poll(&mut self) {
        let busy: Vec<String> = self
            .scheduler
            .timetables()
            .map(|t| t.name.clone())
            .filter(|name| self.busy(name))
            .collect();
        let events = self
            .scheduler
            .poll(Utc::now(), |name| busy.iter().any(|b| b == name));
        if events.is_empty() {
            return;
        }
        for event in events {
            match event {
                Event::Run { schedule, due } => {
                    if let Some((s, _)) = self.setup.schedule(&schedule) {
                        self.queue.push_back((s.clone(), due));
                    }
                }
                Event::Missed {
                    schedule,
                    count,
                    first,
                    last,
                    catch_up,
                } => {
                    tracing::warn!(
                        schedule = %schedule,
                        missed = count,
                        "schedule {schedule}: {count} run(s) missed, due {} to {}{}",
                        first.format("%Y-%m-%d %H:%M UTC"),
                        last.format("%Y-%m-%d %H:%M UTC"),
                        if catch_up {
                            "; running once now (missed = \"run-once\")"
                        } else {
                            "; waiting for the next time (missed = \"skip\")"
                        }
                    );
                    if !catch_up {
                        self.state.schedule_mut(&schedule).last_skipped = Some(Skipped {
                            at: Utc::now(),
                            due: last,
                            reason: "missed".into(),
                            count,
                        });
                    }
                }
                Event::Overlap { schedule, due } => {
                    let running = self
                        .running
                        .as_ref()
                        .filter(|r| r.schedule == schedule)
                        .map(|r| format!("run {} is still going", r.run_id))
                        .unwrap_or_else(|| "its previous run is still waiting".into());
                    tracing::warn!(
                        schedule = %schedule,
                        "schedule {schedule}: the run due {} was skipped: {running} (no overlap)",
                        due.format("%Y-%m-%d %H:%M UTC")
                    );
                    self.state.schedule_mut(&schedule).last_skipped = Some(Skipped {
                        at: Utc::now(),
                        due,
                        reason: "overlap".into(),
                        count: 1,
                    });
                }
            }
        }
        self.record_upcoming();
        self.save().await;
    }

    fn start_run(&mut self, schedule: Schedule, due: DateTime<Utc>) {
        let run_id = format!("{}@{}", schedule.name, due.format("%Y%m%dT%H%M%SZ"));
        tracing::info!(
            run_id = %run_id,
            schedule = %schedule.name,
            "run {run_id} started: {} due {}",
            match schedule.schedule_type.backup_type() {
                Some(backup_type) => format!("{backup_type} backup"),
                None => "restore drill".into(),
            },
            due.format("%Y-%m-%d %H:%M:%S UTC")
        );
        let name = schedule.name.clone();
        let task = Box::pin(run_once(
            self.setup.clone(),
            self.primary.clone(),
            schedule,
            due,
            run_id.clone(),
        ));
        self.running = Some(Running {
            schedule: name,
            run_id,
            task,
        });
    }

    async fn finished(&mut self, record: RunRecord) {
        let Some(running) = self.running.take() else {
            return;
        };
        log_run(&record);
        let failed = record.outcome != Outcome::Ok;
        // A failed backup records its own event; a run that failed after it (copy, validators,
        // retention) is recorded here, so health raises Backup Failure for it too until a
        // newer backup succeeds. A failed drill raised Drill Failed itself, a damaged copy
        // (the validate stage) Backup Corruption: one alert for one cause.
        if record.outcome == Outcome::Failed
            && let Some(stage) = record
                .stage
                .as_deref()
                .filter(|s| !["backup", "drill", "validate"].contains(s))
        {
            let event = crate::repository::history::Event {
                at: Utc::now(),
                kind: "backup-failed".into(),
                detail: format!(
                    "daemon run {} failed at {stage}: {}",
                    record.run_id,
                    record.error.as_deref().unwrap_or_default()
                ),
                database: Some(self.setup.database.dbname.clone()),
                backup_type: self
                    .setup
                    .loaded
                    .config
                    .schedules
                    .iter()
                    .find(|s| s.name == running.schedule)
                    .and_then(|s| s.schedule_type.backup_type()),
            };
            if let Err(e) = self.primary.record_event(&event).await {
                tracing::warn!("could not record the failed run: {e}");
            }
        }
        self.state.schedule_mut(&running.schedule).last_run = Some(record);
        self.save().await;
        if failed {
            // The runbook's alert (Backup Failure, Backup Corruption) goes out now.
            self.next_health = Instant::now();
        }
    }

    fn start_health(&mut self) {
        self.next_health = Instant::now() + self.setup.loaded.config.daemon.health_every;
        self.health = Some(Box::pin(check_health(self.setup.clone())));
    }

    async fn health_checked(&mut self, record: HealthRecord) {
        self.health = None;
        if record.alerts.is_empty() {
            tracing::info!(health = %record.status, "health check: {}", record.status);
        } else {
            tracing::warn!(
                health = %record.status,
                alerts = %record.alerts.join(", "),
                delivered = record.delivered,
                "health check: {}, alerts {}; {}",
                record.status,
                record.alerts.join(", "),
                match &record.delivery_error {
                    Some(e) => format!("not delivered: {e}"),
                    None => format!("{} delivered", record.delivered),
                }
            );
        }
        self.state.last_health = Some(record);
        self.save().await;
    }

    /// SIGHUP: the new configuration replaces the old only when it loads and its schedules
    /// read; the database and the primary target stay those the daemon's lock is for.
    async fn reload(&mut self) {
        tracing::info!("SIGHUP: reloading the configuration");
        let loaded = (self.load)().await.and_then(|setup| {
            let tables = timetables(&setup)?;
            let primary = primary_of(&setup)?;
            if setup.database.dbname != self.setup.database.dbname
                || primary.location() != self.primary.target().location()
            {
                return Err(Error::Config(format!(
                    "the new configuration backs up database '{}' to {}, this daemon runs for '{}' on {}: restart the daemon to change them",
                    setup.database.dbname,
                    primary.location(),
                    self.setup.database.dbname,
                    self.primary.target().location()
                )));
            }
            Ok((setup, tables))
        });
        match loaded {
            Ok((setup, tables)) => {
                // Times due up to now are handled under the old configuration.
                self.poll().await;
                self.setup = Arc::new(setup);
                self.scheduler = Scheduler::new(tables, |_| None, Utc::now());
                self.next_health = Instant::now() + self.setup.loaded.config.daemon.health_every;
                self.record_upcoming();
                self.save().await;
                tracing::info!(
                    schedules = self.setup.schedules.len(),
                    "configuration reloaded: {} schedule(s)",
                    self.setup.schedules.len()
                );
            }
            Err(e) => tracing::error!(
                "configuration reload refused, the running configuration is kept: {e}"
            ),
        }
    }

    async fn stop(mut self, signal: crate::error::Signal) {
        tracing::info!("{signal} received: stopping (no new runs)");
        for (schedule, due) in self.queue.drain(..) {
            tracing::warn!(
                schedule = %schedule.name,
                "schedule {}: the run due {} was waiting and is not started",
                schedule.name,
                due.format("%Y-%m-%d %H:%M:%S UTC")
            );
        }
        // A health check under way is dropped: it changes nothing.
        self.health = None;
        if let Some(mut running) = self.running.take() {
            let grace = self.setup.loaded.config.daemon.stop_grace;
            tracing::info!(
                run_id = %running.run_id,
                "waiting up to {} for run {} to finish",
                humantime::format_duration(grace),
                running.run_id
            );
            let record = match tokio::time::timeout(grace, &mut running.task).await {
                Ok(record) => record,
                Err(_) => {
                    tracing::warn!(
                        run_id = %running.run_id,
                        "run {} did not finish within {}: stopping it",
                        running.run_id,
                        humantime::format_duration(grace)
                    );
                    interrupt::stop_now(signal);
                    (&mut running.task).await
                }
            };
            self.running = Some(running);
            self.finished(record).await;
        }
        self.state.stopped_at = Some(Utc::now());
        self.save().await;
        tracing::info!("daemon stopped");
    }
}

fn log_run(record: &RunRecord) {
    let backup = record.backup_id.as_deref().unwrap_or("none");
    match record.outcome {
        Outcome::Ok if record.drill_id.is_some() => tracing::info!(
            run_id = %record.run_id,
            outcome = "ok",
            seconds = record.seconds,
            backup_id = backup,
            drill_id = record.drill_id.as_deref().unwrap_or_default(),
            "run {} ok in {:.1}s: drill {} of backup {backup} passed",
            record.run_id,
            record.seconds,
            record.drill_id.as_deref().unwrap_or_default()
        ),
        Outcome::Ok => tracing::info!(
            run_id = %record.run_id,
            outcome = "ok",
            seconds = record.seconds,
            backup_id = backup,
            "run {} ok in {:.1}s: backup {backup} on {}",
            record.run_id,
            record.seconds,
            record.targets.join(", ")
        ),
        outcome => tracing::error!(
            run_id = %record.run_id,
            outcome = if outcome == Outcome::Interrupted { "interrupted" } else { "failed" },
            seconds = record.seconds,
            backup_id = backup,
            stage = record.stage.as_deref().unwrap_or(""),
            "run {} {} in {:.1}s at {}: {}",
            record.run_id,
            if outcome == Outcome::Interrupted { "interrupted" } else { "failed" },
            record.seconds,
            record.stage.as_deref().unwrap_or("?"),
            record.error.as_deref().unwrap_or("")
        ),
    }
}

/// One run: a drill schedule's drill, or back up (validators on its rows), copy to every
/// other target, validate every copy, the validators' verdict, then retention when the
/// schedule has a policy.
async fn run_once(
    setup: Arc<Setup>,
    primary: Repository,
    schedule: Schedule,
    due: DateTime<Utc>,
    run_id: String,
) -> RunRecord {
    let started_at = Utc::now();
    let clock = Instant::now();
    let mut record = RunRecord {
        run_id,
        due,
        started_at,
        finished_at: started_at,
        seconds: 0.0,
        outcome: Outcome::Ok,
        backup_id: None,
        stage: None,
        error: None,
        targets: Vec::new(),
        pruned: Vec::new(),
        drill_id: None,
    };
    let ran = match schedule.schedule_type {
        ScheduleType::Drill => drill_run(&setup, &primary, &schedule, &mut record).await,
        _ => steps(&setup, &primary, &schedule, &mut record).await,
    };
    if let Err((stage, e)) = ran {
        record.outcome = if matches!(e, Error::Interrupted { .. }) {
            Outcome::Interrupted
        } else {
            Outcome::Failed
        };
        record.stage = Some(stage.to_string());
        record.error = Some(e.to_string());
    }
    record.finished_at = Utc::now();
    record.seconds = clock.elapsed().as_secs_f64();
    record
}

async fn steps(
    setup: &Setup,
    primary: &Repository,
    schedule: &Schedule,
    record: &mut RunRecord,
) -> std::result::Result<(), (&'static str, Error)> {
    let progress = Progress::new(false);
    let backup_type = schedule.backup_type().map_err(|e| ("backup", e))?;
    let opts = backup::BackupOptions {
        name: None,
        backup_type,
        jobs: setup.jobs,
        compression_level: setup.loaded.config.backup.compression_level,
        pg_dump: setup.loaded.config.backup.pg_dump.clone(),
        split_bytes: None,
        retain_for: crate::engine::prune::retention_period(
            &setup.loaded.config,
            &setup.database_names,
            backup_type,
            Some(&schedule.name),
            &setup.database.dbname,
        )
        .map_err(|e| ("backup", e))?,
        schedule: Some(schedule.name.clone()),
        validators: setup.validators.clone(),
        incremental: setup.loaded.config.incremental.clone(),
    };
    let targets = setup
        .schedule(&schedule.name)
        .map_or(setup.backup_targets.as_slice(), |(_, t)| t.as_slice());
    // The daemon's repository is where its backups go unless the schedule names others.
    let written = match targets.first() {
        Some(first) if first.name() != primary.target().name() => {
            Repository::open_or_init(first.clone())
                .await
                .map_err(|e| ("backup", e))?
        }
        _ => primary.clone(),
    };
    let created = backup::create_with_copies(
        &setup.database,
        &written,
        targets.get(1..).unwrap_or_default(),
        &opts,
        &progress,
    )
    .await
    .map_err(|e| ("backup", e))?;
    let manifest = &created.manifest;
    record.backup_id = Some(manifest.id.clone());
    // The validators' verdict through the alert room, as `backup create` raises it.
    crate::engine::alerts::observe_backup(&setup.loaded, &setup.alert_scope, manifest).await;
    let holding = &created.holding;
    record.targets = holding.iter().map(|t| t.name().to_string()).collect();
    // Validate what exists even when a copy failed: the alert then says all that is wrong.
    let copies = match setup.loaded.config.daemon.validate {
        ValidateMode::Full => {
            validate::validate_copies(
                holding,
                manifest,
                &setup.loaded.config.objectives,
                // The validators read the rows as the backup streamed them; their findings
                // are in the manifest, judged below.
                &[],
                setup.jobs,
                &progress,
            )
            .await
            .map_err(|e| ("validate", e))?
            .1
        }
        ValidateMode::Chunks => validate::validate_chunks(holding, manifest, setup.jobs).await,
    };
    // Damaged copies raise Backup Corruption now, as `backup validate` raises it.
    crate::engine::alerts::observe_validation(
        &setup.loaded,
        &setup.alert_scope,
        &manifest.id,
        &copies,
        &[],
    )
    .await;
    let bad: Vec<String> = copies
        .iter()
        .filter(|c| c.status != validate::CopyStatus::Intact)
        .map(validate::CopyValidation::describe)
        .collect();
    if let Some(incomplete) = created.copies_incomplete() {
        return Err(("copy", incomplete));
    }
    if !bad.is_empty() {
        return Err((
            "validate",
            Error::CopiesDamaged(format!("backup {}: {}", manifest.id, bad.join("; "))),
        ));
    }
    // A validator's error finding makes the backup suspect (kept, never counted by retention).
    crate::engine::validators::verdict(manifest).map_err(|e| ("validators", e))?;
    // Retention only after a new backup of the schedule completed and validated.
    if schedule.retention.is_some() {
        let report = crate::engine::prune::prune(
            &setup.targets.targets,
            &setup.loaded.config,
            &setup.database_names,
            Some(&manifest.source.database),
            false,
            Utc::now(),
        )
        .await
        .map_err(|e| ("retention", e))?;
        record.pruned = report.to_delete().map(|b| b.backup_id.clone()).collect();
        if !record.pruned.is_empty() {
            crate::engine::incremental::slot::retire_after_deleting(
                &setup.database,
                &setup.loaded.config.incremental,
                &setup.targets.targets,
            )
            .await;
        }
        tracing::info!(
            run_id = %record.run_id,
            deleted = record.pruned.len(),
            "run {}: retention applied, {} backup(s) deleted{}",
            record.run_id,
            record.pruned.len(),
            if record.pruned.is_empty() {
                String::new()
            } else {
                format!(": {}", record.pruned.join(", "))
            }
        );
    }
    Ok(())
}

/// A drill schedule's run: `recovery drill` of its backup (`backup`, `random_within`, else
/// `latest`) as `[drill]` configures it. The drill raises or resolves "Drill Failed" itself;
/// one that cannot start raises it here.
async fn drill_run(
    setup: &Setup,
    primary: &Repository,
    schedule: &Schedule,
    record: &mut RunRecord,
) -> std::result::Result<(), (&'static str, Error)> {
    let choice = drill::Choice::of(schedule.backup.as_deref(), schedule.random_within);
    let request = drill::DrillRequest::configured(
        &setup.loaded.config.drill,
        choice,
        setup.database.dbname.clone(),
        setup.objectives,
        setup.validators.clone(),
        setup.jobs,
    )
    .map_err(|e| ("drill", e))?;
    let alerting = Some((&setup.loaded, &setup.alert_scope));
    let report = match drill::run(primary, &request, alerting, &Progress::new(false)).await {
        Ok(report) => report,
        Err(e) => {
            if !matches!(e, Error::Interrupted { .. }) {
                let raised = drill::raise_not_started(
                    &setup.loaded,
                    &setup.alert_scope,
                    &setup.database.dbname,
                    &e,
                )
                .await;
                for warning in raised.warnings {
                    tracing::warn!(run_id = %record.run_id, "{warning}");
                }
            }
            return Err(("drill", e));
        }
    };
    record.backup_id = Some(report.drill.backup_id.clone());
    record.drill_id = Some(report.drill.drill_id.clone());
    for warning in &report.warnings {
        tracing::warn!(run_id = %record.run_id, "{warning}");
    }
    match report.failure() {
        Some(e) => Err(("drill", e)),
        None => Ok(()),
    }
}

/// The runbook alerts health raised, each once (two targets low on space are one "Disk
/// Space Low"), in the order of the checks.
fn distinct_alerts(health: &monitor::Health) -> Vec<String> {
    let mut alerts: Vec<String> = Vec::new();
    for check in health.alerts() {
        let alert = check.alert.clone().unwrap_or_else(|| check.name.clone());
        if !alerts.contains(&alert) {
            alerts.push(alert);
        }
    }
    alerts
}

/// `monitor health` with alert delivery, as `monitor health --alert-on-failure` does it.
async fn check_health(setup: Arc<Setup>) -> HealthRecord {
    let targets = monitor::Targets {
        targets: &setup.targets.targets,
        expected: setup
            .backup_targets
            .iter()
            .map(|t| t.name().to_string())
            .collect(),
        chosen: &setup.targets.chosen,
    };
    let health = monitor::health(&setup.monitored, &targets, &setup.loaded.config).await;
    let alerts = distinct_alerts(&health);
    // Through the alert room, passing runs too (that is how alerts resolve).
    let report =
        crate::engine::alerts::deliver_health(&health, &setup.loaded, &setup.alert_scope).await;
    let delivered = report.delivered();
    let delivery_error = if report.channels == 0 && !alerts.is_empty() {
        Some("no alert channel is configured ([[notifiers]] or [monitor] alert_command)".into())
    } else if report.warnings.is_empty() {
        None
    } else {
        Some(report.warnings.join("; "))
    };
    HealthRecord {
        at: health.checked_at,
        status: match health.status {
            monitor::Status::Ok => "ok",
            monitor::Status::Warn => "warn",
            monitor::Status::Fail => "fail",
        }
        .into(),
        alerts,
        delivered,
        delivery_error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_targets_low_on_space_are_one_alert_in_the_daemons_record() {
        let check = |name: &str, alert: Option<&str>| monitor::Check {
            name: name.into(),
            status: if alert.is_some() {
                monitor::Status::Fail
            } else {
                monitor::Status::Ok
            },
            detail: String::new(),
            alert: alert.map(str::to_string),
            action: None,
            database: None,
        };
        let health = monitor::Health {
            status: monitor::Status::Fail,
            checked_at: Utc::now(),
            checks: vec![
                check("disk space primary", Some("Disk Space Low")),
                check("target offsite", None),
                check("disk space offsite", Some("Disk Space Low")),
                check("latest backup", Some("Backup Failure")),
            ],
        };
        assert_eq!(
            distinct_alerts(&health),
            ["Disk Space Low", "Backup Failure"]
        );
    }
}
