//! `monitor health` and `monitor alerts`: is the database reachable, is the repository sound,
//! is there a recent, validated backup, is there room for the next one, did every schedule run.
//!
//! Failing checks carry the runbook's alert names (Backup Failure, Backup Corruption, Disk
//! Space Low, Schedule Missed) with its action and escalation window, so the alert an operator
//! receives says what to do.

use crate::config::{Config, IncrementalConfig, ScheduleType};
use crate::engine::incremental::slot;
use crate::engine::progress::human_bytes;
use crate::engine::schedule;
use crate::engine::sync::{Holdings, Presence, Scrutiny, holdings};
use crate::pg::ConnectionSettings;
use crate::repository::Repository;
use crate::repository::manifest::{BackupType, Manifest};
use crate::targets::Target;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub detail: String,
    /// The runbook's alert this check raises when it fails.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// The `[[databases]]` entry the check is about (None: the repository and its targets,
    /// or the one `[database]`): whose alert it raises.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Health {
    pub status: Status,
    pub checked_at: DateTime<Utc>,
    pub checks: Vec<Check>,
}

impl Health {
    /// Checks that raise an alert (status fail).
    pub fn alerts(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| c.status == Status::Fail)
    }

    /// The checks that concern `database` (a [`crate::engine::alerts::Scope`]'s): its own and
    /// those of the repository and its targets, which every database's backups depend on.
    pub fn concerning(&self, database: &str) -> Health {
        let checks = self
            .checks
            .iter()
            .filter(|c| c.database.as_deref().is_none_or(|d| d == database))
            .cloned()
            .collect();
        finish(self.checked_at, checks)
    }

    /// `HealthFailed` naming the failing checks, when one failed.
    pub fn failure(&self) -> Option<crate::Error> {
        (self.status == Status::Fail).then(|| {
            crate::Error::HealthFailed(
                self.alerts()
                    .map(|c| c.name.clone())
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        })
    }
}

pub fn check(name: &str, status: Status, detail: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        status,
        detail: detail.into(),
        alert: None,
        action: None,
        database: None,
    }
}

pub fn alert(name: &str, detail: impl Into<String>, alert: &str, action: &str) -> Check {
    Check {
        name: name.into(),
        status: Status::Fail,
        detail: detail.into(),
        alert: Some(alert.into()),
        action: Some(action.into()),
        database: None,
    }
}

/// "Backup Corruption" for the copy on `target`: what health's check of the target, the
/// recorded result of a `backup validate` there and a validation run itself raise. They share
/// the target's check name, so one damaged copy is one alert, whichever finds it first.
pub fn copy_damaged(target: &str, detail: impl Into<String>) -> Check {
    alert(
        &target_check_name(target),
        detail,
        "Backup Corruption",
        "Restore from an intact copy (`--from TARGET`), repair this one with `backup-cli backup sync` and create a new backup (escalate within 30 minutes)",
    )
}

/// The name of health's check of one target: `target NAME`.
pub fn target_check_name(target: &str) -> String {
    format!("target {target}")
}

/// Chunks of the newest backup read and hashed per target on every health check: an
/// overwritten repository fails at once, and a check stays cheap enough for cron every 30
/// minutes however many backups there are.
pub const SAMPLE_CHUNKS: usize = 4;

/// The storage targets health looks at.
pub struct Targets<'a> {
    /// Every configured target.
    pub targets: &'a [Arc<dyn Target>],
    /// The targets every backup should be on (`[backup] targets`, else all); the first is
    /// the primary.
    pub expected: Vec<String>,
    /// How each target was chosen, for "no repository" messages.
    pub chosen: &'a BTreeMap<String, String>,
}

/// One database `monitor health` checks, against its own recovery-point objective.
#[derive(Debug, Clone)]
pub struct Monitored {
    /// The `[[databases]]` name, which the checks carry (`database NAME`, `latest backup
    /// NAME`); None: the one `[database]`, checks named as before.
    pub name: Option<String>,
    pub settings: ConnectionSettings,
    pub rpo: std::time::Duration,
}

impl Monitored {
    fn label(&self, check: &str) -> String {
        match &self.name {
            Some(name) => format!("{check} {name}"),
            None => check.to_string(),
        }
    }

    /// Marks `checks` as this database's.
    fn claim(&self, checks: &mut [Check]) {
        for check in checks {
            check.database = self.name.clone();
        }
    }
}

pub async fn health(databases: &[Monitored], stores: &Targets<'_>, config: &Config) -> Health {
    let now = Utc::now();
    let mut checks = Vec::new();
    for db in databases {
        let first = checks.len();
        checks.push(database_check(db).await);
        db.claim(&mut checks[first..]);
    }

    let held = holdings(stores.targets, |_| Scrutiny::Sample(SAMPLE_CHUNKS)).await;
    let manifests: Vec<Manifest> = held.manifests.values().cloned().collect();
    for db in databases {
        let first = checks.len();
        checks.extend(slot_checks(db, &config.incremental, &manifests).await);
        db.claim(&mut checks[first..]);
    }
    let intact_on = |id: &str| held.complete_on(id, stores.targets);
    // The newest backup with an intact copy somewhere, and the newest of all.
    let newest = manifests
        .iter()
        .max_by_key(|m| (m.completed_at, m.id.clone()));

    for target in stores.targets {
        let name = target.name();
        let expected = stores.expected.iter().any(|e| e == name);
        checks.push(target_check(
            target,
            stores.targets,
            expected,
            newest,
            &held,
            &held.unreachable,
            stores.chosen,
        ));
        if held.unreachable.contains_key(name) || held.empty.iter().any(|e| e == name) {
            continue;
        }
        match target.available_space().await {
            Ok(Some(free)) if free < config.monitor.min_free_space => checks.push(alert(
                &format!("disk space {name}"),
                format!("{} free at {}, below {}", human_bytes(free), target.location(), human_bytes(config.monitor.min_free_space)),
                "Disk Space Low",
                "Clean up old backups (`backup-cli backup delete <id> --force`) or add storage (escalate within 1 hour)",
            )),
            Ok(Some(free)) => checks.push(check(&format!("disk space {name}"), Status::Ok, format!("{} free at {}", human_bytes(free), target.location()))),
            Ok(None) => checks.push(check(&format!("disk space {name}"), Status::Ok, "the target does not report free space")),
            Err(e) => checks.push(check(&format!("disk space {name}"), Status::Warn, e.to_string())),
        }
    }

    for db in databases {
        // With several databases each is judged by its own backups and objective.
        let first = checks.len();
        let own = |m: &&Manifest| db.name.is_none() || m.source.database == db.settings.dbname;
        let latest_full = manifests
            .iter()
            .filter(own)
            .filter(|m| m.backup_type == BackupType::Full && !intact_on(&m.id).is_empty())
            // A suspect backup (a validator found an error in its rows) is no recovery point.
            .filter(|m| !m.is_suspect())
            .max_by_key(|m| (m.completed_at, m.id.clone()));
        let rpo = db.rpo;
        let latest_label = db.label("latest backup");
        let any_full = manifests
            .iter()
            .filter(own)
            .any(|m| m.backup_type == BackupType::Full);
        let intact_suspect = manifests.iter().filter(own).any(|m| {
            m.backup_type == BackupType::Full && m.is_suspect() && !intact_on(&m.id).is_empty()
        });
        match latest_full {
        None if intact_suspect => checks.push(alert(
            &latest_label,
            "every intact full backup is suspect: a validator found errors in its rows (`backup-cli backup list` marks them)",
            "Backup Validation Failed",
            "Check the rows the validator named, then take a new backup (`backup-cli backup create`; escalate within 30 minutes)",
        )),
        None if any_full => {
            let detail = "no full backup has an intact copy on any target";
            // The newest full's damaged copy is the cause: said as its target's alert, which
            // the target's own check raises too, so the two are one.
            let newest_full = manifests
                .iter()
                .filter(own)
                .filter(|m| m.backup_type == BackupType::Full)
                .max_by_key(|m| (m.completed_at, m.id.clone()));
            let damaged_on = newest_full.and_then(|m| {
                let copies = held.copies.get(&m.id)?;
                let (target, _) = copies.iter().find(|(_, p)| **p != Presence::Complete)?;
                Some((m, target))
            });
            checks.push(match damaged_on {
                Some((m, target)) => copy_damaged(
                    target,
                    format!("{latest_label}: {detail}; the newest, {}, is damaged on '{target}'", m.id),
                ),
                None => alert(
                    &latest_label,
                    detail,
                    "Backup Corruption",
                    "Create a new backup immediately (`backup-cli backup create`; escalate within 30 minutes)",
                ),
            })
        }
        None => checks.push(alert(
            &latest_label,
            "no full backup on any target",
            "Backup Failure",
            "Run `backup-cli backup create` now (escalate within 15 minutes)",
        )),
        Some(m) => {
            let age = (now - m.completed_at).to_std().unwrap_or_default();
            let on = intact_on(&m.id);
            let primary = stores.expected.first().map(String::as_str).unwrap_or_default();
            let whereabouts = if on.contains(&primary) || primary.is_empty() {
                format!("intact on {}", on.join(", "))
            } else {
                let count = manifests
                    .iter()
                    .filter(|b| intact_on(&b.id).iter().any(|t| *t != primary))
                    .count();
                format!(
                    "primary '{primary}' lost, {count} backup(s) intact on {}; restore with `--from {}`",
                    on.join(", "),
                    on[0]
                )
            };
            let detail = format!(
                "{} ('{}') finished {} ago; RPO {}; {whereabouts}",
                m.id,
                m.name,
                humantime::format_duration(std::time::Duration::from_secs(age.as_secs())),
                humantime::format_duration(rpo)
            );
            checks.push(if age > rpo {
                Check { action: Some("Take a new backup: the newest one is older than the recovery-point objective".into()), ..check(&latest_label, Status::Warn, detail) }
            } else {
                check(&latest_label, Status::Ok, detail)
            });
            checks.push(validation_check(m, stores.targets, &held).await);
        }
    }
        db.claim(&mut checks[first..]);
    }

    let primary = stores
        .targets
        .iter()
        .find(|t| stores.expected.first().is_some_and(|p| p == t.name()));
    if let Some(primary) = primary
        && let Ok(repo) = Repository::open(primary.clone()).await
        && let Ok(Some(event)) = repo.last_event().await
    {
        // A failed attempt is its database's, when the event says which.
        let whose = databases
            .iter()
            .find(|db| event.database.as_ref() == Some(&db.settings.dbname));
        let newer_success = manifests.iter().any(|m| {
            m.completed_at > event.at
                && whose.is_none_or(|db| m.source.database == db.settings.dbname)
        });
        if event.kind == "backup-failed" && !newer_success {
            checks.push(Check {
                database: whose.and_then(|db| db.name.clone()),
                ..alert(
                    "last backup attempt",
                    format!(
                        "failed {}: {}",
                        event.at.format("%Y-%m-%d %H:%M UTC"),
                        event.detail.lines().next().unwrap_or_default()
                    ),
                    "Backup Failure",
                    "Immediate investigation (escalate within 15 minutes)",
                )
            });
        }
    }

    let dbnames: BTreeMap<String, String> = databases
        .iter()
        .filter_map(|db| Some((db.name.clone()?, db.settings.dbname.clone())))
        .collect();
    let drills = schedule::drill_history(&config.schedules, primary).await;
    match schedule::status(&config.schedules, &manifests, &drills, &dbnames, now) {
        Ok(statuses) => {
            for s in statuses {
                let name = format!("schedule {}", s.name);
                let due = s
                    .previous_due
                    .map(|d| d.format("%Y-%m-%d %H:%M UTC").to_string())
                    .unwrap_or_default();
                let database = s.database.clone();
                checks.push(Check { database, ..match s.status {
                    schedule::ScheduleState::Missed if s.schedule_type == ScheduleType::Drill => alert(
                        &name,
                        format!("due {due} ({}), no passed restore drill since", s.cron),
                        "Schedule Missed",
                        &format!("Run the drill by hand (`backup-cli recovery drill --schedule {}`) and check the scheduler (escalate within 2 hours)", s.name),
                    ),
                    schedule::ScheduleState::Missed => alert(
                        &name,
                        format!("due {due} ({}), no {} backup since", s.cron, s.schedule_type),
                        "Schedule Missed",
                        "Run the backup by hand (`backup-cli backup create`) and check the scheduler (escalate within 2 hours)",
                    ),
                    status => check(&name, Status::Ok, format!("{status}; last due {due}")),
                }});
            }
        }
        Err(e) => checks.push(check("schedules", Status::Warn, e.to_string())),
    }
    finish(now, checks)
}

/// One target: reachable, holding a repository, holding the newest backup completely (when
/// every backup should be on it), and no damaged copy.
fn target_check(
    target: &Arc<dyn Target>,
    all: &[Arc<dyn Target>],
    expected: bool,
    newest: Option<&Manifest>,
    held: &Holdings,
    unreachable: &BTreeMap<String, String>,
    chosen: &BTreeMap<String, String>,
) -> Check {
    let name = target.name();
    let label = target_check_name(name);
    let elsewhere = |what: &str| {
        let intact: Vec<String> = held
            .copies
            .iter()
            .filter(|(_, c)| c.iter().any(|(t, p)| t != name && *p == Presence::Complete))
            .map(|(id, _)| id.clone())
            .collect();
        if intact.is_empty() {
            what.to_string()
        } else {
            let on: Vec<&str> = all
                .iter()
                .map(|t| t.name())
                .filter(|t| {
                    *t != name
                        && held
                            .copies
                            .values()
                            .any(|c| c.get(*t) == Some(&Presence::Complete))
                })
                .collect();
            format!(
                "{what}; {} backup(s) intact on {}: restore with `--from {}`, rebuild this target with `backup-cli backup sync`",
                intact.len(),
                on.join(", "),
                on[0]
            )
        }
    };
    if let Some(why) = unreachable.get(name) {
        return alert(
            &label,
            elsewhere(&format!("unreachable: {why}")),
            "Backup file not found",
            "Check backup location and permissions",
        );
    }
    if held.empty.iter().any(|e| e == name) {
        let how = chosen
            .get(name)
            .map(|h| format!(" ({h})"))
            .unwrap_or_default();
        return alert(
            &label,
            elsewhere(&format!("no repository at {}{how}", target.location())),
            "Backup file not found",
            "Check backup location and permissions; `backup-cli init` creates a repository",
        );
    }
    let here = |p: Presence| {
        held.copies
            .values()
            .filter(|c| c.get(name) == Some(&p))
            .count()
    };
    let (complete, damaged, incomplete) = (
        here(Presence::Complete),
        here(Presence::Damaged),
        here(Presence::Incomplete),
    );
    let missing = held
        .copies
        .values()
        .filter(|c| !c.contains_key(name))
        .count();
    let summary = format!(
        "{complete} of {} backup(s) intact at {}{}{}{}",
        held.copies.len(),
        target.location(),
        if damaged > 0 {
            format!(", {damaged} damaged")
        } else {
            String::new()
        },
        if incomplete > 0 {
            format!(", {incomplete} incomplete")
        } else {
            String::new()
        },
        if missing > 0 {
            format!(", {missing} missing")
        } else {
            String::new()
        },
    );
    if damaged + incomplete > 0 {
        let first = held
            .problems
            .values()
            .find_map(|p| p.get(name))
            .cloned()
            .unwrap_or_default();
        return copy_damaged(name, elsewhere(&format!("{summary} (first: {first})")));
    }
    if let Some(newest) = newest
        && expected
        && held.copies.get(&newest.id).and_then(|c| c.get(name)) != Some(&Presence::Complete)
    {
        return alert(
            &label,
            elsewhere(&format!(
                "{summary}; behind: lacks the newest backup {} (finished {})",
                newest.id,
                newest.completed_at.format("%Y-%m-%d %H:%M UTC")
            )),
            "Backup Failure",
            "Copy the missing backups with `backup-cli backup sync` (escalate within 15 minutes)",
        );
    }
    check(&label, Status::Ok, summary)
}

/// The newest full backup's last `backup validate` on each target holding it. A copy that
/// failed is Backup Corruption of that target ([`copy_damaged`]); rows a validator found wrong
/// (Backup Validation Failed, which the validation raised itself) only warn here.
async fn validation_check(m: &Manifest, targets: &[Arc<dyn Target>], held: &Holdings) -> Check {
    let mut seen = Vec::new();
    for target in targets {
        if !held
            .copies
            .get(&m.id)
            .is_some_and(|c| c.contains_key(target.name()))
        {
            continue;
        }
        let Ok(repo) = Repository::open(target.clone()).await else {
            continue;
        };
        match repo.last_validation(&m.id).await {
            Ok(Some(v)) if !v.ok && v.rows_suspect => {
                return Check {
                    action: Some(format!(
                        "Check the rows the validators named (`backup-cli backup validate {}`), then take a new backup",
                        m.id
                    )),
                    ..check(
                        "validation",
                        Status::Warn,
                        format!(
                            "{} is intact on target '{}' but its rows are suspect: {}",
                            m.id,
                            target.name(),
                            v.first_problem.unwrap_or_default()
                        ),
                    )
                };
            }
            Ok(Some(v)) if !v.ok => {
                return copy_damaged(
                    target.name(),
                    format!(
                        "{} failed validation on target '{}': {}",
                        m.id,
                        target.name(),
                        v.first_problem.unwrap_or_default()
                    ),
                );
            }
            Ok(Some(v)) => seen.push((target.name().to_string(), v.at)),
            Ok(None) | Err(_) => {}
        }
    }
    match seen.iter().max_by_key(|(_, at)| *at) {
        Some((_, at)) => check(
            "validation",
            Status::Ok,
            format!(
                "{} validated {} on {}",
                m.id,
                at.format("%Y-%m-%d %H:%M UTC"),
                seen.iter()
                    .map(|(t, _)| t.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        None => Check {
            action: Some(format!("Run `backup-cli backup validate {}`", m.id)),
            ..check(
                "validation",
                Status::Warn,
                format!("{} has never been validated", m.id),
            )
        },
    }
}

pub fn finish(checked_at: DateTime<Utc>, checks: Vec<Check>) -> Health {
    let status = checks.iter().map(|c| c.status).max().unwrap_or(Status::Ok);
    Health {
        status,
        checked_at,
        checks,
    }
}

/// The database's replication slots for incremental backups. The current chain's (the one
/// the newest backup in `manifests` continues): the WAL it keeps on the server ("Replication
/// Slot Lagging" above `[incremental] max_retained_wal`), and whether PostgreSQL invalidated
/// it; none when there is no slot and tracking is off. Any other chain slot is an orphan (a
/// full stopped before its end, a retired chain) and is reported with the WAL it keeps.
async fn slot_checks(
    db: &Monitored,
    config: &IncrementalConfig,
    manifests: &[Manifest],
) -> Vec<Check> {
    let name = db.label("replication slot");
    let Ok(client) = db.settings.connect().await else {
        return Vec::new();
    };
    let slots = match slot::chain_slots(&client, config, &db.settings.dbname).await {
        Ok(slots) => slots,
        Err(e) => return vec![check(&name, Status::Warn, e.to_string())],
    };
    let live = slot::live_slot(manifests, &db.settings.dbname);
    let mut checks = Vec::new();
    match slots.iter().find(|(slot, _)| Some(slot.as_str()) == live) {
        Some((slot, state)) => checks.push(live_slot_check(&name, slot, state, config)),
        None if config.enabled => checks.push(check(
            &name,
            Status::Warn,
            match live {
                Some(slot) => format!(
                    "change tracking is on but the current chain's slot {slot} does not exist: the next full backup starts a new chain"
                ),
                None => "change tracking is on and no chain exists yet: the next full backup starts one".into(),
            },
        )),
        None => {}
    }
    for (slot, state) in slots.iter().filter(|(slot, _)| Some(slot.as_str()) != live) {
        checks.push(Check {
            action: Some(format!(
                "The next full backup drops it; or run `SELECT pg_drop_replication_slot('{slot}')`"
            )),
            ..check(
                &db.label("orphan replication slot"),
                Status::Warn,
                format!(
                    "slot {slot} belongs to no chain a backup continues (a full backup stopped before its end, or a retired chain) and retains {} of WAL",
                    human_bytes(state.retained.unwrap_or(0))
                ),
            )
        });
    }
    checks
}

fn live_slot_check(
    name: &str,
    slot_name: &str,
    state: &slot::SlotState,
    config: &IncrementalConfig,
) -> Check {
    let retained = state.retained.unwrap_or(0);
    if state.wal_status.as_deref() == Some("lost") {
        alert(
            name,
            format!(
                "slot {slot_name} was invalidated by PostgreSQL (wal_status = lost): its chain of incremental backups is broken"
            ),
            "Backup Failure",
            "Take a new full backup (`backup-cli backup create`) to start a new chain (escalate within 15 minutes)",
        )
    } else if retained > config.max_retained_wal {
        alert(
            name,
            format!(
                "slot {slot_name} retains {} of WAL on the server, above [incremental] max_retained_wal {}",
                human_bytes(retained),
                human_bytes(config.max_retained_wal)
            ),
            "Replication Slot Lagging",
            "Take an incremental backup (`backup-cli backup create --type incremental`), which advances the slot, or disable tracking if the chain is not needed; the server's disk fills otherwise (escalate within 1 hour)",
        )
    } else {
        check(
            name,
            Status::Ok,
            format!("slot {slot_name} retains {} of WAL", human_bytes(retained)),
        )
    }
}

/// Whether the database answers, and what it is.
pub async fn database_check(db: &Monitored) -> Check {
    let settings = &db.settings;
    let name = db.label("database");
    match settings.connect().await {
        Ok(client) => {
            let row = client
                .query_one(
                    "SELECT current_setting('server_version'), pg_is_in_recovery(), pg_database_size(current_database())",
                    &[],
                )
                .await;
            match row {
                Ok(row) => check(
                    &name,
                    Status::Ok,
                    format!(
                        "{}: PostgreSQL {}, {}, {}",
                        settings.describe(),
                        row.get::<_, String>(0),
                        if row.get::<_, bool>(1) {
                            "standby"
                        } else {
                            "primary"
                        },
                        human_bytes(row.get::<_, i64>(2).max(0) as u64)
                    ),
                ),
                Err(e) => alert(
                    &name,
                    e.to_string(),
                    "Database connection failed",
                    "Restart PostgreSQL service",
                ),
            }
        }
        Err(e) => alert(
            &name,
            e.to_string(),
            "Database connection failed",
            "Restart PostgreSQL service",
        ),
    }
}
