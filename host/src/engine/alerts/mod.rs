//! The alert room: every alert Larder raises goes through here, whoever found it (`monitor
//! health --alert-on-failure`, a backup, the daemon).
//!
//! [`observe`] takes what is wrong now, advances each alert's life ([`lifecycle`]: de-dup,
//! reminders, escalation by the runbook's times, resolve), delivers the due events through the
//! channels of their levels ([`channels`]: notifier plugins and the alert command, with retries)
//! and keeps what no channel took in a dead-letter list, retried first on the next run. Delivery
//! never fails its caller: problems come back as warnings in the [`Report`].

pub mod channels;
pub mod lifecycle;
pub mod store;

use crate::config::Loaded;
use crate::engine::monitor::{self, Health, Status};
use crate::engine::validate::{CopyStatus, CopyValidation};
use crate::error::{Error, Result};
use crate::repository::manifest::{Manifest, ValidatorRun};
use chrono::{DateTime, Utc};
pub use lifecycle::{Alert, Condition, DeadLetter, Delivery, Event, EventState, Severity, State};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// Whose alerts these are: one state per repository, and in it each database's own alerts.
#[derive(Debug, Clone)]
pub struct Scope {
    /// The database's name (its `[[databases]]` entry's, else its name in PostgreSQL), as
    /// events name it: part of every alert's key, so two databases' alerts never merge, and the
    /// same when the database's address changes (as when it fails over).
    pub database: String,
    /// The database's connection in words (host, port, name, user; no password), in every
    /// event's details.
    pub connection: String,
    /// Where the repository is (the primary target's location).
    pub repository: String,
}

impl Scope {
    fn identity(&self) -> String {
        self.repository.clone()
    }
}

/// One delivery made (or failed) by a run.
#[derive(Debug, Clone, Serialize)]
pub struct Sent {
    pub channel: String,
    pub alert: String,
    pub id: String,
    pub state: EventState,
    pub level: u32,
    pub ok: bool,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What one run of the alert room did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub sent: Vec<Sent>,
    /// Events waiting in the dead-letter list after this run.
    pub dead_letters: usize,
    /// Channels configured (0: nowhere to send).
    pub channels: usize,
    pub warnings: Vec<String>,
}

impl Report {
    pub fn delivered(&self) -> usize {
        self.sent.iter().filter(|s| s.ok).count()
    }

    /// Adds a later run's report on the same repository (another database's alerts).
    pub fn absorb(&mut self, later: Report) {
        self.sent.extend(later.sent);
        self.dead_letters = later.dead_letters;
        self.channels = self.channels.max(later.channels);
        for warning in later.warnings {
            if !self.warnings.contains(&warning) {
                self.warnings.push(warning);
            }
        }
    }
}

/// The configured lifecycle (`[alerts]`, checked when the configuration loaded).
fn policy_of(loaded: &Loaded, levels: usize) -> lifecycle::Policy {
    let alerts = &loaded.config.alerts;
    let mut escalate_after = alerts.escalate_after.clone();
    let default_escalation = escalate_after
        .remove(crate::config::DEFAULT_ESCALATION_KEY)
        .unwrap_or(lifecycle::DEFAULT_ESCALATION);
    lifecycle::Policy {
        levels: levels.max(1) as u32,
        remind_every: Some(alerts.remind_every).filter(|d| !d.is_zero()),
        escalate_after,
        default_escalation,
    }
}

/// Sends the alerts of a health report's checks that concern `scope`'s database (its own and
/// the repository's) through the alert room: new failures fire, active ones remind or escalate
/// when due, passing checks resolve theirs. Never fails the health check.
pub async fn deliver_health(health: &Health, loaded: &Loaded, scope: &Scope) -> Report {
    let (conditions, checked) = conditions_of(&health.concerning(&scope.database));
    observe(loaded, scope, &conditions, &checked).await
}

/// The failing checks of a health report as conditions, and every check it looked at. Two
/// checks that raise one alert (a target's damaged copy found by its listing and by the last
/// validation there) are one condition, their details joined.
pub fn conditions_of(health: &Health) -> (Vec<Condition>, Vec<String>) {
    let mut conditions: Vec<Condition> = Vec::new();
    for c in health.checks.iter().filter(|c| c.status == Status::Fail) {
        let alert = c.alert.clone().unwrap_or_else(|| c.name.clone());
        if let Some(same) = conditions
            .iter_mut()
            .find(|k| k.alert == alert && k.check == c.name)
        {
            same.message = format!("{}; {}", same.message, c.detail);
            continue;
        }
        conditions.push(Condition {
            alert,
            check: c.name.clone(),
            message: c.detail.clone(),
            action: c.action.clone().unwrap_or_default(),
            target: c
                .name
                .strip_prefix("target ")
                .or_else(|| c.name.strip_prefix("disk space "))
                .map(str::to_string),
            backup_id: None,
        });
    }
    let checked = health.checks.iter().map(|c| c.name.clone()).collect();
    (conditions, checked)
}

/// The runbook's alert for a suspect backup, and the check that raises it.
pub const VALIDATION_ALERT: &str = "Backup Validation Failed";
pub const VALIDATION_CHECK: &str = "backup validation";

/// "Backup Validation Failed" for backup `backup_id` when one of the validators' `runs` found
/// an error in its rows.
fn suspect(backup_id: &str, runs: &[ValidatorRun]) -> Option<Condition> {
    let suspect = crate::engine::validators::verdict_of(backup_id, runs).err()?;
    Some(Condition {
        alert: VALIDATION_ALERT.into(),
        check: VALIDATION_CHECK.into(),
        message: suspect.to_string(),
        action: format!(
            "Check the data before trusting newer backups (a mass DELETE? a bad load?): the findings are in `backup-cli backup validate {backup_id}`; deleted rows come back from the last good backup with `backup-cli recovery execute <good-backup-id> -s missing-rows -t TABLE`"
        ),
        target: None,
        backup_id: Some(backup_id.to_string()),
    })
}

/// A new backup's validators' verdict through the alert room (`backup create` and the daemon
/// both call this): a suspect backup raises "Backup Validation Failed" for its database (once,
/// then reminders and escalation like any alert), a backup the validators found nothing wrong
/// with resolves it. `None` when no validator looked at the backup (nothing to say either way).
pub async fn observe_backup(loaded: &Loaded, scope: &Scope, manifest: &Manifest) -> Option<Report> {
    if manifest.validators.is_empty() {
        return None;
    }
    let conditions: Vec<Condition> = suspect(&manifest.id, &manifest.validators)
        .into_iter()
        .collect();
    Some(observe(loaded, scope, &conditions, &[VALIDATION_CHECK.to_string()]).await)
}

/// A validation's verdict through the alert room (`backup validate` and the daemon's validate
/// step both call this). A damaged copy is "Backup Corruption" of its target, the alert
/// `monitor health` raises for that target ([`monitor::copy_damaged`]): one alert for one
/// damaged copy, whoever finds it. Only when every copy read is intact do the rows count:
/// `validators` (the runs of this validation; none: no validator ran) with an error finding raise
/// "Backup Validation Failed", the alert of a suspect new backup. An intact copy resolves its
/// target's alert, sound rows the validation alert, unless another backup raised it (a pass
/// speaks for this backup only). Missing and unreachable copies are health's to report
/// (Backup Failure, Backup file not found). `None` when no copy could be read.
pub async fn observe_validation(
    loaded: &Loaded,
    scope: &Scope,
    backup_id: &str,
    copies: &[CopyValidation],
    validators: &[ValidatorRun],
) -> Option<Report> {
    let checks: Vec<monitor::Check> = copies
        .iter()
        .filter_map(|copy| match copy.status {
            CopyStatus::Intact => Some(monitor::check(
                &monitor::target_check_name(&copy.target),
                Status::Ok,
                format!("backup {backup_id} intact"),
            )),
            CopyStatus::Damaged => Some(monitor::copy_damaged(
                &copy.target,
                format!("backup {backup_id}: {}", copy.describe()),
            )),
            CopyStatus::Missing | CopyStatus::Unreachable => None,
        })
        .collect();
    if checks.is_empty() {
        return None;
    }
    let (mut conditions, mut checked) = conditions_of(&monitor::finish(Utc::now(), checks));
    if conditions.is_empty() && !validators.is_empty() {
        conditions.extend(suspect(backup_id, validators));
        checked.push(VALIDATION_CHECK.to_string());
    }
    for condition in &mut conditions {
        condition.backup_id = Some(backup_id.to_string());
    }
    let known = store::peek(&loaded.alert_state_dir(), &scope.identity());
    checked.retain(|check| {
        !known.active.values().any(|a| {
            a.database == scope.database
                && a.check == *check
                && a.backup_id
                    .as_deref()
                    .is_some_and(|other| other != backup_id)
        })
    });
    Some(observe(loaded, scope, &conditions, &checked).await)
}

/// Advances every alert of `scope` given the failing `conditions` (out of the `checked` checks)
/// and delivers what is due. Never fails: a broken channel or state folder is a warning.
pub async fn observe(
    loaded: &Loaded,
    scope: &Scope,
    conditions: &[Condition],
    checked: &[String],
) -> Report {
    match observe_inner(loaded, scope, conditions, checked, Utc::now()).await {
        Ok(report) => report,
        Err(e) => {
            tracing::warn!("alerts were not delivered: {e}");
            Report {
                warnings: vec![format!("alerts were not delivered: {e}")],
                ..Report::default()
            }
        }
    }
}

async fn observe_inner(
    loaded: &Loaded,
    scope: &Scope,
    conditions: &[Condition],
    checked: &[String],
    now: DateTime<Utc>,
) -> Result<Report> {
    let channels = channels::open(loaded).await?;
    let policy = policy_of(loaded, channels.levels.len());
    let retry_for = loaded.config.alerts.retry_for;
    let mut stored = store::open(&loaded.alert_state_dir(), &scope.identity()).await?;
    let mut report = Report {
        channels: channels.all.len(),
        ..Report::default()
    };
    // What earlier runs could not deliver goes first, in order.
    let waiting = std::mem::take(&mut stored.state.dead_letters);
    for mut letter in waiting {
        let Some(channel) = channels.named(&letter.channel) else {
            report.warnings.push(format!(
                "dropped an undelivered {} event: channel '{}' is no longer configured",
                letter.event.alert, letter.channel
            ));
            continue;
        };
        let (attempts, error) = channel.send(&letter.event, retry_for).await;
        letter.attempts += attempts;
        note(
            &mut stored.state,
            &mut report,
            channel.name(),
            &letter.event,
            attempts,
            &error,
            now,
        );
        if let Some(error) = error {
            letter.last_error = error;
            stored.state.dead_letters.push(letter);
        }
    }
    let due = lifecycle::advance(
        &mut stored.state,
        conditions,
        checked,
        &policy,
        &scope.database,
        now,
    );
    for mut item in due {
        item.event
            .details
            .insert("connection".into(), scope.connection.clone());
        for channel in channels.for_levels(&item.levels) {
            let (attempts, error) = channel.send(&item.event, retry_for).await;
            note(
                &mut stored.state,
                &mut report,
                channel.name(),
                &item.event,
                attempts,
                &error,
                now,
            );
            if let Some(error) = error {
                stored.state.dead_letters.push(DeadLetter {
                    channel: channel.name().to_string(),
                    event: item.event.clone(),
                    first_failed: now,
                    attempts,
                    last_error: error,
                });
            }
        }
    }
    report.dead_letters = stored.state.dead_letters.len();
    stored.save()?;
    Ok(report)
}

/// Records one delivery on its alert (active or resolved) and in the report; warns on failure.
fn note(
    state: &mut State,
    report: &mut Report,
    channel: &str,
    event: &Event,
    attempts: u32,
    error: &Option<String>,
    now: DateTime<Utc>,
) {
    if let Some(error) = error {
        let warning = format!(
            "{} ({}) was not delivered through '{channel}' after {attempts} attempt(s): {error}; kept for the next run",
            event.alert,
            serde_json::to_value(event.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        );
        tracing::warn!("{warning}");
        report.warnings.push(warning);
        *state.failures.entry(channel.to_string()).or_default() += 1;
    }
    let delivery = Delivery {
        channel: channel.to_string(),
        state: event.state,
        level: event.level,
        at: now,
        ok: error.is_none(),
        attempts,
        error: error.clone(),
    };
    if let Some(alert) = state
        .active
        .values_mut()
        .chain(state.resolved.iter_mut())
        .find(|a| a.id == event.id)
    {
        alert.record(delivery);
    }
    report.sent.push(Sent {
        channel: channel.to_string(),
        alert: event.alert.clone(),
        id: event.id.clone(),
        state: event.state,
        level: event.level,
        ok: error.is_none(),
        attempts,
        error: error.clone(),
    });
}

/// `notify test`: a test event through each channel (or the one named), once each, no state.
pub async fn test(loaded: &Loaded, scope: &Scope, only: Option<&str>) -> Result<Vec<Sent>> {
    let channels = channels::open(loaded).await?;
    let picked: Vec<&channels::Channel> = match only {
        Some(name) => vec![channels.named(name).ok_or_else(|| {
            Error::Config(format!(
                "no alert channel named '{name}'; the channels are: {}",
                channels
                    .all
                    .iter()
                    .map(|c| c.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?],
        None => channels.all.iter().collect(),
    };
    if picked.is_empty() {
        return Err(Error::Config(
            "no alert channel is configured: add a [[notifiers]] entry or [monitor] alert_command"
                .into(),
        ));
    }
    let now = Utc::now();
    let mut details = BTreeMap::new();
    details.insert("check".to_string(), "notify test".to_string());
    let event = Event {
        id: format!("test.{}", now.timestamp()),
        alert: "Test Notification".into(),
        check: "notify test".into(),
        state: EventState::Test,
        severity: Severity::Info,
        level: 1,
        database: scope.database.clone(),
        target: None,
        backup_id: None,
        message: "A test event from `backup-cli notify test`: this channel works.".into(),
        action: "Nothing to do.".into(),
        fired_at: now,
        sent_at: now,
        resolved_at: None,
        details,
    };
    let mut sent = Vec::new();
    for channel in picked {
        let (attempts, error) = channel
            .send(
                &event,
                loaded.config.alerts.retry_for.min(Duration::from_secs(10)),
            )
            .await;
        sent.push(Sent {
            channel: channel.name().to_string(),
            alert: event.alert.clone(),
            id: event.id.clone(),
            state: event.state,
            level: 1,
            ok: error.is_none(),
            attempts,
            error,
        });
    }
    Ok(sent)
}

/// The state file `scopes` share (their repository's, which every scope names alike).
async fn open_shared(loaded: &Loaded, scopes: &[Scope]) -> Result<store::Stored> {
    let identity = scopes.first().map(Scope::identity).unwrap_or_default();
    store::open(&loaded.alert_state_dir(), &identity).await
}

/// Acknowledges the active alerts of `scopes`' databases named `name` (alert name, key or id):
/// no more escalation until they resolve. Returns the keys acknowledged.
pub async fn ack(loaded: &Loaded, scopes: &[Scope], name: &str) -> Result<Vec<String>> {
    let mut stored = open_shared(loaded, scopes).await?;
    let ours = |alert: &Alert| scopes.iter().any(|s| s.database == alert.database);
    let now = Utc::now();
    let mut acked = Vec::new();
    for (key, alert) in stored.state.active.iter_mut() {
        let named = alert.alert.eq_ignore_ascii_case(name) || key == name || alert.id == name;
        if named && ours(alert) {
            alert.acked_at.get_or_insert(now);
            acked.push(key.clone());
        }
    }
    if acked.is_empty() {
        let active: Vec<&str> = stored
            .state
            .active
            .values()
            .filter(|a| ours(a))
            .map(|a| a.alert.as_str())
            .collect();
        return Err(Error::Config(format!(
            "no active alert named '{name}'; active: {}",
            if active.is_empty() {
                "none".to_string()
            } else {
                active.join(", ")
            }
        )));
    }
    stored.save()?;
    Ok(acked)
}

/// One alert as `monitor alerts` shows it: a failing check now and/or an alert the room tracks.
#[derive(Debug, Clone, Serialize)]
pub struct AlertView {
    /// The database it is about (its `[[databases]]` name, else its name in PostgreSQL).
    pub database: String,
    pub alert: String,
    pub check: String,
    pub detail: String,
    pub action: String,
    /// `active`, `acknowledged`, or `not delivered` (failing now, never through the alert room:
    /// no `--alert-on-failure` run has seen it yet).
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fired_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_seconds: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acked_at: Option<DateTime<Utc>>,
    pub deliveries: Vec<Delivery>,
}

/// `monitor alerts`: the alerts, the events waiting in the dead-letter list, recent resolves.
#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    pub alerts: Vec<AlertView>,
    pub dead_letters: Vec<DeadLetter>,
    pub resolved: Vec<Alert>,
}

/// Recent resolves `monitor alerts` shows.
const SHOWN_RESOLVED: usize = 10;

/// The failing checks of `health` joined with what the alert room knows of each of `scopes`
/// (the databases of one repository), with the dead letters and recent resolves of theirs.
pub async fn overview(loaded: &Loaded, scopes: &[Scope], health: &Health) -> Result<Overview> {
    let state = open_shared(loaded, scopes).await?.state;
    let ours = |database: &str| scopes.iter().any(|s| s.database == database);
    let now = Utc::now();
    let view = |alert: &Alert, detail: String| AlertView {
        database: alert.database.clone(),
        alert: alert.alert.clone(),
        check: alert.check.clone(),
        detail,
        action: alert.action.clone(),
        status: if alert.acked_at.is_some() {
            "acknowledged"
        } else {
            "active"
        },
        id: Some(alert.id.clone()),
        level: Some(alert.level),
        fired_at: Some(alert.fired_at),
        age_seconds: Some((now - alert.fired_at).num_seconds()),
        acked_at: alert.acked_at,
        deliveries: alert.deliveries.clone(),
    };
    let mut alerts = Vec::new();
    for scope in scopes {
        let database = &scope.database;
        let (conditions, _) = conditions_of(&health.concerning(database));
        for condition in &conditions {
            alerts.push(match state.active.get(&condition.key(database)) {
                Some(known) => view(known, condition.message.clone()),
                None => AlertView {
                    database: database.clone(),
                    alert: condition.alert.clone(),
                    check: condition.check.clone(),
                    detail: condition.message.clone(),
                    action: condition.action.clone(),
                    status: "not delivered",
                    id: None,
                    level: None,
                    fired_at: None,
                    age_seconds: None,
                    acked_at: None,
                    deliveries: Vec::new(),
                },
            });
        }
        for (key, known) in state.active.iter().filter(|(_, a)| a.database == *database) {
            if !conditions.iter().any(|c| c.key(database) == *key) {
                alerts.push(view(known, known.message.clone()));
            }
        }
    }
    let resolved: Vec<Alert> = state
        .resolved
        .into_iter()
        .filter(|a| ours(&a.database))
        .collect();
    let skip = resolved.len().saturating_sub(SHOWN_RESOLVED);
    Ok(Overview {
        alerts,
        dead_letters: state
            .dead_letters
            .into_iter()
            .filter(|d| ours(&d.event.database))
            .collect(),
        resolved: resolved.into_iter().skip(skip).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::monitor::{check, copy_damaged, finish};

    #[test]
    fn each_database_gets_its_own_checks_and_the_repositorys_and_one_damaged_copy_is_one_condition()
    {
        let own = |database: &str, c: monitor::Check| monitor::Check {
            database: Some(database.into()),
            ..c
        };
        let health = finish(
            Utc::now(),
            vec![
                copy_damaged("local", "2 of 3 backup(s) intact, 1 damaged"),
                check("disk space local", Status::Ok, "plenty"),
                own(
                    "kitchen",
                    check("latest backup kitchen", Status::Ok, "recent"),
                ),
                own(
                    "kitchen",
                    copy_damaged("local", "failed validation on target 'local'"),
                ),
                own(
                    "reports",
                    monitor::alert("latest backup reports", "none", "Backup Failure", "back up"),
                ),
            ],
        );
        let kitchen = health.concerning("kitchen");
        let names: Vec<&str> = kitchen.checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "target local",
                "disk space local",
                "latest backup kitchen",
                "target local"
            ]
        );
        let (conditions, checked) = conditions_of(&kitchen);
        assert_eq!(conditions.len(), 1, "{conditions:?}");
        assert_eq!(conditions[0].alert, "Backup Corruption");
        assert_eq!(conditions[0].target.as_deref(), Some("local"));
        assert_eq!(
            conditions[0].message,
            "2 of 3 backup(s) intact, 1 damaged; failed validation on target 'local'"
        );
        assert!(!checked.contains(&"latest backup reports".to_string()));
        let (reports, _) = conditions_of(&health.concerning("reports"));
        let alerts: Vec<&str> = reports.iter().map(|c| c.alert.as_str()).collect();
        assert_eq!(alerts, ["Backup Corruption", "Backup Failure"]);
    }
}
