//! `recovery drill`: the runbook's restore test, measured. A backup is restored into a scratch
//! place — a throwaway local PostgreSQL started for the drill (the default), or a new database
//! on the `[drill] target_url` server — through the recovery pipeline itself (plan, then the
//! new-database strategy with its verification), its rows go through the `[[validators]]`,
//! the `[[drill.checks]]` queries run, and the measured recovery time is compared with the
//! database's RTO (and the restored point's age with its RPO).
//!
//! Every drill is recorded in the repository (`drills/`, see [`DrillRecord`]); a failed drill
//! or a missed RTO raises "Drill Failed" through the alert room, a passing one resolves it.
//! The scratch place is removed afterwards unless `--keep`, also when the drill fails or a
//! signal stops it. Not here: the restore's steps (`recovery/`), the alert channels (`alerts/`).

use crate::config::{DatabaseConfig, DrillCheck, DrillConfig, Expect, Loaded};
use crate::engine::Progress;
use crate::engine::alerts::{self, Condition, Scope, Sent};
use crate::engine::interrupt::{CleanupGuard, interruptible};
use crate::engine::recovery::chain::Until;
use crate::engine::recovery::plan::{self, PlanRequest, Strategy, Verification};
use crate::engine::recovery::restore::{self, RestoreReport};
use crate::engine::validators::{
    LineFeeder, RowChecks, first_suspect, previous_figures, table_info,
};
use crate::error::{Error, Result, Signal, error_chain};
use crate::pg::ConnectionSettings;
use crate::pg::ephemeral::{EphemeralCluster, kept_note};
use crate::plugin::validator::PluginValidator;
use crate::repository::Repository;
use crate::repository::history::{CheckResult, DrillOutcome, DrillRecord, DrillStep, Scratch};
use crate::repository::latest::Selection;
use crate::repository::manifest::{Manifest, ValidatorRun, quote_ident};
use crate::repository::verify::RowSink;
use chrono::Utc;
use futures_util::StreamExt;
use serde::Serialize;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::{Client, SimpleQueryMessage};

/// The runbook's alert for a drill that failed or missed its RTO.
pub const DRILL_FAILED: &str = "Drill Failed";
/// The check the alert room knows drills by (a passing drill resolves its alert).
const CHECK: &str = "recovery drill";

/// Which backup a drill restores.
#[derive(Debug, Clone)]
pub enum Choice {
    /// An id, or `latest`.
    Named(String),
    /// `--random-within 30d`: any backup `latest` could name, taken within this long.
    RandomWithin(Duration),
}

impl Choice {
    /// The backup `recovery drill` (or a drill schedule) names: `random_within`, else `backup`
    /// (an id or `latest`), else `latest`.
    pub fn of(backup: Option<&str>, random_within: Option<Duration>) -> Choice {
        match (backup, random_within) {
            (_, Some(within)) => Choice::RandomWithin(within),
            (Some(id), None) => Choice::Named(id.to_string()),
            (None, None) => Choice::Named(crate::repository::latest::LATEST.into()),
        }
    }
}

/// Where a drill restores to.
#[derive(Debug, Clone)]
pub enum Place {
    /// A throwaway local PostgreSQL started for the drill (initdb in a temporary folder).
    Throwaway,
    /// A new database on this server (`[drill] target_url`; the URL's database is used to
    /// create and drop it).
    Server(ConnectionSettings),
}

#[derive(Clone)]
pub struct DrillRequest {
    pub choice: Choice,
    /// The database whose backups are drilled (its name in PostgreSQL).
    pub database: String,
    pub place: Place,
    /// `--until` / `--until-lsn`: replay an incremental chain only to this point.
    pub until: Option<Until>,
    /// `--keep`: leave the scratch database or cluster in place.
    pub keep: bool,
    pub verification: Verification,
    pub checks: Vec<DrillCheck>,
    /// The database's recovery-time and recovery-point objectives.
    pub rto: Duration,
    pub rpo: Duration,
    pub jobs: usize,
    pub validators: Vec<Arc<PluginValidator>>,
}

impl DrillRequest {
    /// A drill of `database`'s backups as `[drill]` configures it (place and checks), with
    /// the database's objectives (`(rto, rpo)`); not kept, verified by checksums.
    pub fn configured(
        config: &DrillConfig,
        choice: Choice,
        database: String,
        (rto, rpo): (Duration, Duration),
        validators: Vec<Arc<PluginValidator>>,
        jobs: usize,
    ) -> Result<DrillRequest> {
        let place = match &config.target_url {
            Some(url) => Place::Server(
                ConnectionSettings::resolve(Some(url), &DatabaseConfig::default())
                    .map_err(|e| Error::Config(format!("[drill] target_url: {e}")))?,
            ),
            None => Place::Throwaway,
        };
        Ok(DrillRequest {
            choice,
            database,
            place,
            until: None,
            keep: false,
            verification: Verification::Checksums,
            checks: config.checks.clone(),
            rto,
            rpo,
            jobs,
            validators,
        })
    }
}

/// What `recovery drill` reports: the record it kept, the restore's own report, and what the
/// alert room sent.
#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    #[serde(flatten)]
    pub drill: DrillRecord,
    /// The restore's report (null when the restore did not finish).
    pub restore: Option<RestoreReport>,
    /// "Drill Failed" (or its resolve) as delivered.
    pub alerts: Vec<Sent>,
    pub warnings: Vec<String>,
}

impl DrillReport {
    /// The failure a failed drill ends with (exit 1), None when it passed.
    pub fn failure(&self) -> Option<Error> {
        (self.drill.outcome != DrillOutcome::Passed).then(|| {
            Error::DrillFailed(format!(
                "{}\n  drill {} recorded; `backup-cli recovery drills` lists the drills",
                self.drill
                    .error
                    .as_deref()
                    .unwrap_or("the drill did not pass"),
                self.drill.drill_id
            ))
        })
    }
}

/// The scratch place while the drill uses it.
enum Live {
    Cluster(EphemeralCluster),
    Server(ConnectionSettings),
}

/// What a drill got through so far (a failure keeps what was measured before it).
#[derive(Default)]
struct Attempt {
    steps: Vec<DrillStep>,
    scratch: Option<Scratch>,
    live: Option<Live>,
    restored: Option<RestoreReport>,
    validators: Vec<ValidatorRun>,
    checks: Vec<CheckResult>,
}

impl Attempt {
    /// Runs `work` as step `name`, timing it (also when it fails).
    async fn step<T>(&mut self, name: &str, work: impl Future<Output = Result<T>>) -> Result<T> {
        let started = Instant::now();
        let out = work.await;
        self.steps.push(DrillStep {
            name: name.to_string(),
            seconds: started.elapsed().as_secs_f64(),
        });
        out
    }
}

/// Runs a drill; the report says whether it passed. Errors: the backup cannot be chosen, or a
/// signal stopped the drill (after the scratch place was removed and the drill recorded).
pub async fn run(
    repo: &Repository,
    req: &DrillRequest,
    alerting: Option<(&Loaded, &Scope)>,
    progress: &Progress,
) -> Result<DrillReport> {
    let started_at = Utc::now();
    let selection = match &req.choice {
        Choice::Named(id) => repo.select(id, &req.database).await?,
        Choice::RandomWithin(within) => {
            repo.select_random_within(&req.database, *within, started_at)
                .await?
        }
    };
    // From here on a signal waits for the scratch place to be removed.
    let _cleanup = CleanupGuard::new();
    let clock = Instant::now();
    let mut attempt = Attempt::default();
    let result = attempt_drill(repo, req, &selection, progress, &mut attempt).await;
    let recovery_seconds = clock.elapsed().as_secs_f64();
    let mut warnings = Vec::new();
    let mut scratch = attempt.scratch.take().unwrap_or_else(|| Scratch {
        kind: kind_of(&req.place).into(),
        server: String::new(),
        database: String::new(),
        data_dir: None,
        kept: false,
        removed: true,
        note: Some("the scratch place was never created".into()),
    });
    if let Some(live) = attempt.live.take() {
        remove(live, req.keep, &mut scratch).await;
        if !scratch.removed && !scratch.kept {
            warnings.push(scratch.note.clone().unwrap_or_default());
        }
    }
    let manifest = &selection.manifest;
    // An incremental chain's replay reaches its last commit; a full backup is its snapshot.
    let point_in_time = attempt
        .restored
        .as_ref()
        .and_then(|r| r.replayed.as_ref())
        .and_then(|r| r.last_commit_time)
        .unwrap_or(manifest.created_at);
    let point_age = (started_at - point_in_time).num_seconds();
    let rto_met = result.is_ok() && recovery_seconds <= req.rto.as_secs_f64();
    let (outcome, error, signal) = match &result {
        Ok(()) if !rto_met => (
            DrillOutcome::Failed,
            Some(format!(
                "the recovery took {} against a recovery-time objective of {}",
                words(recovery_seconds),
                humantime::format_duration(req.rto)
            )),
            None,
        ),
        Ok(()) => (DrillOutcome::Passed, None, None),
        Err(Error::Interrupted { signal, .. }) => (
            DrillOutcome::Interrupted,
            Some(format!("interrupted by {}", signal_name(*signal))),
            Some(*signal),
        ),
        Err(e) => (DrillOutcome::Failed, Some(error_chain(e)), None),
    };
    let restore_seconds = attempt
        .restored
        .as_ref()
        .map_or(0.0, |r| r.steps.iter().map(|s| s.seconds).sum::<f64>());
    let restored = attempt.restored.as_ref();
    let record = DrillRecord {
        drill_id: format!("{}-{}", started_at.format("%Y%m%d-%H%M%S%.3f"), manifest.id),
        started_at,
        finished_at: Utc::now(),
        outcome,
        backup_id: manifest.id.clone(),
        backup_name: manifest.name.clone(),
        database: manifest.source.database.clone(),
        point_in_time,
        chosen: selection.requested.clone(),
        scratch,
        steps: attempt.steps,
        restore_seconds,
        recovery_seconds,
        rto_seconds: req.rto.as_secs_f64(),
        rto_met,
        point_age_seconds: point_age,
        rpo_seconds: req.rpo.as_secs_f64(),
        rpo_met: point_age as f64 <= req.rpo.as_secs_f64(),
        tables: restored.map_or(0, |r| r.tables.len()),
        rows: restored.map_or(0, |r| r.rows),
        bytes: restored.map_or(0, |r| r.bytes),
        verification: req.verification.to_string(),
        validators: attempt.validators,
        checks: attempt.checks,
        error,
    };
    if let Err(e) = repo.record_drill(&record).await {
        warnings.push(format!("the drill could not be recorded: {e}"));
    }
    let mut sent = Vec::new();
    if let (Some((loaded, scope)), None) = (alerting, signal) {
        let conditions: Vec<Condition> = (outcome == DrillOutcome::Failed)
            .then(|| condition(&record))
            .into_iter()
            .collect();
        let report = alerts::observe(loaded, scope, &conditions, &[CHECK.to_string()]).await;
        if conditions.len() > report.delivered() && report.channels == 0 {
            warnings.push(
                "Drill Failed was not sent: no alert channel is configured ([[notifiers]] or [monitor] alert_command)"
                    .into(),
            );
        }
        warnings.extend(report.warnings);
        sent = report.sent;
    }
    if let Some(signal) = signal {
        return Err(Error::Interrupted {
            signal,
            state: format!(
                "the drill of backup {} stopped{}\n  {}; drill {} recorded as interrupted",
                manifest.id,
                match &result {
                    Err(Error::Interrupted { state, .. }) if !state.is_empty() =>
                        format!(": {}", state.replace('\n', "\n  ")),
                    _ => String::new(),
                },
                scratch_words(&record.scratch),
                record.drill_id
            ),
        });
    }
    Ok(DrillReport {
        drill: record,
        restore: attempt.restored,
        alerts: sent,
        warnings,
    })
}

/// The steps of one drill up to its last check; what they measured stays in `attempt`.
async fn attempt_drill(
    repo: &Repository,
    req: &DrillRequest,
    selection: &Selection,
    progress: &Progress,
    attempt: &mut Attempt,
) -> Result<()> {
    let manifest = &selection.manifest;
    // The scratch place. Starting a cluster is not interruptible: a signal is seen by the
    // next step, and the cluster is removed with everything else.
    let (destination, named) = match &req.place {
        Place::Throwaway => {
            let cluster = attempt
                .step("start-cluster", async {
                    tokio::task::spawn_blocking(EphemeralCluster::start_apart)
                        .await
                        .map_err(|e| {
                            Error::Internal(format!("starting the throwaway PostgreSQL: {e}"))
                        })?
                })
                .await?;
            tracing::info!(
                "drill: throwaway PostgreSQL on 127.0.0.1:{} in {}",
                cluster.port(),
                cluster.socket_dir().display()
            );
            let settings = ConnectionSettings::resolve(
                Some(&cluster.url("postgres")),
                &DatabaseConfig::default(),
            )?;
            attempt.scratch = Some(Scratch {
                kind: kind_of(&req.place).into(),
                server: format!("127.0.0.1:{}", cluster.port()),
                database: String::new(),
                data_dir: Some(cluster.socket_dir().display().to_string()),
                kept: false,
                removed: false,
                note: None,
            });
            attempt.live = Some(Live::Cluster(cluster));
            (settings, false)
        }
        Place::Server(server) => {
            let database = drill_database(&manifest.source.database, &manifest.id);
            // Not ours until the plan has found that it does not exist yet (an earlier drill
            // kept with --keep, or anybody's database): what exists is never dropped.
            attempt.scratch = Some(Scratch {
                kind: kind_of(&req.place).into(),
                server: format!("{}:{}", server.host, server.port),
                database: database.clone(),
                data_dir: None,
                kept: false,
                removed: true,
                note: Some(format!(
                    "database {database} was not created by this drill, and nothing was dropped"
                )),
            });
            (server.with_dbname(&database), true)
        }
    };
    let request = PlanRequest {
        strategy: Strategy::NewDatabase,
        tables: None,
        cascade: false,
        no_owner: false,
        verification: req.verification,
        destination,
        destination_named: named,
        requested: selection.requested.clone(),
        passed_over: selection.passed_over.clone(),
        schema_only: false,
        from_other_database: false,
        // The throwaway cluster is ours: it gets the backup's roles. A server's must exist.
        create_roles: matches!(req.place, Place::Throwaway),
        until: req.until,
    };
    let plan = attempt
        .step(
            "plan",
            interruptible(async {
                // As every restore: the manifests' signatures and the backup's history links.
                crate::engine::recovery::provenance::check(repo, manifest, req.until, false)
                    .await?;
                let plan = plan::plan(repo, manifest, &request).await?;
                plan.check_ready()?;
                Ok(plan)
            }),
        )
        .await?;
    let restored_into = plan.destination_settings.clone();
    if let Some(scratch) = attempt.scratch.as_mut() {
        scratch.database = restored_into.dbname.clone();
    }
    if let Place::Server(server) = &req.place {
        // From here on the database is the drill's: removed afterwards, also on failure.
        attempt.live = Some(Live::Server(server.clone()));
        if let Some(scratch) = attempt.scratch.as_mut() {
            scratch.removed = false;
            scratch.note = None;
        }
    }
    // The restore handles a signal itself (it drops what it built), so it is not wrapped.
    let started = Instant::now();
    let restored = restore::execute(repo, manifest, &plan, req.jobs, progress).await;
    let report = match restored {
        Ok(report) => report,
        Err(e) => {
            attempt.steps.push(DrillStep {
                name: "restore".into(),
                seconds: started.elapsed().as_secs_f64(),
            });
            return Err(e);
        }
    };
    attempt.steps.extend(report.steps.iter().map(|s| DrillStep {
        name: s.name.name().to_string(),
        seconds: s.seconds,
    }));
    let verified = report.ok;
    attempt.restored = Some(report);
    if !verified {
        return Err(Error::Verification(
            "the restored database does not match the backup (see the restore's tables)".into(),
        ));
    }
    let client = restored_into.connect().await?;
    if !req.validators.is_empty() {
        let manifests = repo.manifests().await?;
        let runs = attempt
            .step(
                "validators",
                interruptible(validate_rows(
                    &client,
                    manifest,
                    &plan.selected,
                    &req.validators,
                    &manifests,
                )),
            )
            .await?;
        let suspect = first_suspect(&runs);
        attempt.validators = runs;
        if let Some((first, findings)) = suspect {
            return Err(Error::BackupSuspect {
                backup_id: manifest.id.clone(),
                first,
                findings,
            });
        }
    }
    if !req.checks.is_empty() {
        let results = attempt
            .step(
                "checks",
                interruptible(async {
                    let mut results = Vec::new();
                    for check in &req.checks {
                        results.push(run_check(&client, check).await);
                    }
                    Ok(results)
                }),
            )
            .await?;
        let failed: Vec<String> = results
            .iter()
            .filter(|c| !c.ok)
            .map(|c| {
                format!(
                    "check '{}' expected {}, got {}",
                    c.name,
                    c.expected,
                    c.error
                        .clone()
                        .or_else(|| c.got.clone())
                        .unwrap_or_else(|| "nothing".into())
                )
            })
            .collect();
        attempt.checks = results;
        if !failed.is_empty() {
            return Err(Error::Verification(failed.join("; ")));
        }
    }
    Ok(())
}

/// The `[[validators]]` over the restored tables' rows, read back with COPY as the backup
/// read them.
async fn validate_rows(
    client: &Client,
    manifest: &Manifest,
    selected: &[usize],
    validators: &[Arc<PluginValidator>],
    manifests: &[Manifest],
) -> Result<Vec<ValidatorRun>> {
    /// Rows are handed over in batches of about this many bytes (one plugin call each).
    const BATCH: usize = 256 * 1024;
    let previous = previous_figures(manifests, &manifest.source.database, manifest.created_at);
    let tables: Vec<_> = selected.iter().map(|&i| &manifest.tables[i]).collect();
    let checks = RowChecks::new(
        validators.to_vec(),
        tables
            .iter()
            .map(|t| {
                let info = table_info(t.display_name(), &t.columns, &t.column_types, &previous);
                (info, 1)
            })
            .collect(),
    );
    let feeder = LineFeeder::new(checks);
    for (i, table) in tables.iter().enumerate() {
        let context = || {
            format!(
                "reading {} back from the restored database",
                table.display_name()
            )
        };
        let stream = client
            .copy_out(table.copy_out_sql().as_str())
            .await
            .map_err(Error::db(context()))?;
        let mut stream = std::pin::pin!(stream);
        let (mut batch, mut rows) = (Vec::with_capacity(BATCH), 0u64);
        while let Some(data) = stream.next().await {
            let data = match data {
                Ok(data) => data,
                Err(e) => return Err(Error::db(context())(e)),
            };
            rows += data.iter().filter(|&&b| b == b'\n').count() as u64;
            batch.extend_from_slice(&data);
            if batch.len() >= BATCH {
                feeder.chunk(i, &batch).await;
                batch.clear();
            }
        }
        feeder.chunk(i, &batch).await;
        feeder.part_done(i, rows).await;
    }
    Ok(feeder.runs())
}

/// Runs one `[[drill.checks]]` query and judges what it returned.
async fn run_check(client: &Client, check: &DrillCheck) -> CheckResult {
    let started = Instant::now();
    let expected = expected_words(check.expect.as_ref());
    let (got, ok, error) = match client.simple_query(&check.sql).await {
        Err(e) => (None, false, Some(error_chain(&e))),
        Ok(messages) => judge_check(check.expect.as_ref(), &messages),
    };
    CheckResult {
        name: check.name.clone().unwrap_or_else(|| check.sql.clone()),
        sql: check.sql.clone(),
        expected,
        got,
        ok,
        error,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// What a check's messages give against its expectation: (what it got, ok, error).
fn judge_check(
    expect: Option<&Expect>,
    messages: &[SimpleQueryMessage],
) -> (Option<String>, bool, Option<String>) {
    let rows: Vec<_> = messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        })
        .collect();
    let count = format!("{} row(s)", rows.len());
    match expect.and_then(|e| expected_text(e).map(|t| (e, t))) {
        None => match expect {
            Some(Expect::Rows { rows: n }) => (Some(count), rows.len() as u64 == *n, None),
            _ => (Some(count), true, None),
        },
        Some((_, want)) => match rows.first().map(|r| r.try_get(0)) {
            None => (Some(count), false, None),
            Some(Err(e)) => (None, false, Some(e.to_string())),
            Some(Ok(value)) => {
                let got = value.unwrap_or("NULL").to_string();
                let ok = value == Some(want.as_str());
                (Some(got), ok, None)
            }
        },
    }
}

/// The text a scalar expectation compares with (None for a row count).
fn expected_text(expect: &Expect) -> Option<String> {
    match expect {
        Expect::Rows { .. } => None,
        Expect::Text(text) => Some(text.clone()),
        Expect::Integer(n) => Some(n.to_string()),
        Expect::Float(x) => Some(x.to_string()),
        Expect::Bool(b) => Some(if *b { "t" } else { "f" }.into()),
    }
}

/// A check's expectation in words: `value 42`, `3 row(s)`, `no error`.
fn expected_words(expect: Option<&Expect>) -> String {
    match expect {
        None => "no error".into(),
        Some(Expect::Rows { rows }) => format!("{rows} row(s)"),
        Some(scalar) => format!("value {}", expected_text(scalar).unwrap_or_default()),
    }
}

/// The database a drill restores into on a `[drill] target_url` server:
/// `<db>_drill_<backup id>`, at most 63 bytes.
fn drill_database(source: &str, backup_id: &str) -> String {
    let suffix = format!("_drill_{}", backup_id.replace('-', "_"));
    let mut cut = source.len().min(63usize.saturating_sub(suffix.len()));
    while !source.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{suffix}", &source[..cut])
}

fn kind_of(place: &Place) -> &'static str {
    match place {
        Place::Throwaway => "throwaway-cluster",
        Place::Server(_) => "server",
    }
}

/// Removes the scratch place (or keeps it) and says so in `scratch`.
async fn remove(live: Live, keep: bool, scratch: &mut Scratch) {
    match (live, keep) {
        (Live::Cluster(cluster), true) => {
            let dir = cluster.keep();
            scratch.kept = true;
            scratch.note = Some(format!(
                "kept: the throwaway PostgreSQL runs on {} (database {}, user postgres); {}",
                scratch.server,
                scratch.database,
                kept_note(&dir)
            ));
        }
        (Live::Cluster(cluster), false) => {
            let dir = cluster.socket_dir().to_path_buf();
            // Stopping waits for the server to exit: off the async threads.
            let stopped = tokio::task::spawn_blocking(move || drop(cluster)).await;
            scratch.removed = stopped.is_ok() && !dir.exists();
            if !scratch.removed {
                scratch.note = Some(format!(
                    "the throwaway PostgreSQL's folder {} could not be removed; remove it by hand",
                    dir.display()
                ));
            }
        }
        (Live::Server(_), true) => {
            scratch.kept = true;
            scratch.note = Some(format!(
                "kept: database {} on {}; drop it with: DROP DATABASE {}",
                scratch.database,
                scratch.server,
                quote_ident(&scratch.database)
            ));
        }
        (Live::Server(server), false) => {
            let dropped = async {
                let admin = server.connect().await?;
                admin
                    .batch_execute(&format!(
                        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                        quote_ident(&scratch.database)
                    ))
                    .await
                    .map_err(Error::db(format!(
                        "dropping the drill's database {}",
                        scratch.database
                    )))
            }
            .await;
            match dropped {
                Ok(()) => scratch.removed = true,
                Err(e) => {
                    scratch.note = Some(format!(
                        "database {} on {} could not be dropped ({e}); drop it by hand",
                        scratch.database, scratch.server
                    ))
                }
            }
        }
    }
}

/// "the throwaway PostgreSQL was removed", as the interruption message says it.
fn scratch_words(scratch: &Scratch) -> String {
    let what = match scratch.kind.as_str() {
        "server" => format!(
            "the scratch database {} on {}",
            scratch.database, scratch.server
        ),
        _ => "the throwaway PostgreSQL".to_string(),
    };
    if scratch.kept {
        format!(
            "{what} was kept ({})",
            scratch.note.as_deref().unwrap_or("")
        )
    } else if scratch.removed {
        format!("{what} was removed")
    } else {
        format!(
            "{what} was not removed: {}",
            scratch.note.as_deref().unwrap_or("")
        )
    }
}

fn signal_name(signal: Signal) -> &'static str {
    match signal {
        Signal::Interrupt => "SIGINT (Ctrl-C)",
        Signal::Terminate => "SIGTERM",
    }
}

/// Seconds in words: `3.2 s`, `4m 5s`.
pub fn words(seconds: f64) -> String {
    if seconds < 60.0 {
        format!("{seconds:.1} s")
    } else {
        humantime::format_duration(Duration::from_secs(seconds as u64)).to_string()
    }
}

/// "Drill Failed" for a drill that could not even start (no backup to drill, a repository
/// that cannot be read): the daemon's scheduled drill did not happen, which the operator must
/// hear about as much as a failed one.
pub async fn raise_not_started(
    loaded: &Loaded,
    scope: &Scope,
    database: &str,
    error: &Error,
) -> alerts::Report {
    let condition = Condition {
        alert: DRILL_FAILED.into(),
        check: CHECK.into(),
        message: format!(
            "the restore drill of database {database} could not start: {}",
            error_chain(error)
        ),
        action: "Check that the database has a restorable backup (`backup-cli backup list`) and that the repository can be read, then run `backup-cli recovery drill latest`".into(),
        target: None,
        backup_id: None,
    };
    alerts::observe(loaded, scope, &[condition], &[CHECK.to_string()]).await
}

/// "Drill Failed" for a failed drill.
fn condition(record: &DrillRecord) -> Condition {
    let action = if record.error.is_some() && !record.rto_met && record.restore_seconds > 0.0 {
        "The restore works but is slower than the objective: restore with more --jobs, from a faster target, or revise [objectives.rto]; `backup-cli recovery drills` shows the measured steps"
    } else {
        "Find out why the restore failed before it is needed: run `backup-cli recovery drill BACKUP --keep` and look into the kept scratch database; `backup-cli recovery drills` lists past drills"
    };
    Condition {
        alert: DRILL_FAILED.into(),
        check: CHECK.into(),
        message: format!(
            "restore drill {} of backup {} ({}) failed: {}",
            record.drill_id,
            record.backup_id,
            record.database,
            record.error.as_deref().unwrap_or("no detail")
        ),
        action: action.replace("BACKUP", &record.backup_id),
        target: None,
        backup_id: Some(record.backup_id.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query that returned no row (rows themselves are judged in tests/integration/drills.rs:
    /// the driver's row type has no public constructor).
    fn no_row(expect: Option<Expect>) -> (Option<String>, bool, Option<String>) {
        judge_check(expect.as_ref(), &[SimpleQueryMessage::CommandComplete(0)])
    }

    #[test]
    fn an_expectation_is_text_or_a_row_count() {
        assert_eq!(expected_words(None), "no error");
        assert_eq!(expected_words(Some(&Expect::Rows { rows: 3 })), "3 row(s)");
        assert_eq!(expected_words(Some(&Expect::Integer(42))), "value 42");
        assert_eq!(expected_words(Some(&Expect::Bool(true))), "value t");
        assert_eq!(expected_words(Some(&Expect::Float(1.5))), "value 1.5");
        assert_eq!(
            expected_words(Some(&Expect::Text("Kitchen".into()))),
            "value Kitchen"
        );
        // No row meets a row count of 0 and no scalar.
        assert_eq!(
            no_row(Some(Expect::Rows { rows: 0 })),
            (Some("0 row(s)".into()), true, None)
        );
        assert!(!no_row(Some(Expect::Integer(1))).1);
        assert!(!no_row(Some(Expect::Rows { rows: 1 })).1);
        assert!(no_row(None).1);
    }

    #[test]
    fn a_drill_database_on_a_server_is_named_after_the_backup_and_fits() {
        assert_eq!(
            drill_database("shop", "20261202-041500-ab12"),
            "shop_drill_20261202_041500_ab12"
        );
        let long = "é".repeat(40);
        let name = drill_database(&long, "20261202-041500-ab12");
        assert!(name.len() <= 63, "{name}");
        assert!(name.ends_with("_drill_20261202_041500_ab12"));
    }
}
