//! The alert lifecycle as pure code: given what is wrong now, what was known before and the
//! clock, which events are due (first firing, reminder, escalation, resolve) and to which levels.
//!
//! An alert is one (database, runbook alert, check): two databases' alerts never merge. It fires once, stays active while its check keeps
//! failing (re-sent only as a reminder or on escalation), escalates one level per escalation
//! time unless acknowledged, and resolves when a run that looked at its check finds it passing.

use chrono::{DateTime, Duration as Span, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Where an alert is in its life, as its events say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventState {
    Firing,
    Escalated,
    Resolved,
    Test,
}

/// How serious an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
    Critical,
}

/// Something wrong now: a failing health check, a failed backup, a suspect backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// The runbook's alert name ("Backup Failure").
    pub alert: String,
    /// What found it ("latest backup", "target s3", "backup validation").
    pub check: String,
    pub message: String,
    pub action: String,
    pub target: Option<String>,
    pub backup_id: Option<String>,
}

impl Condition {
    /// The identity of its alert on `database`: one alert per (database, alert, check).
    pub fn key(&self, database: &str) -> String {
        alert_key(database, &self.alert, &self.check)
    }
}

/// `Backup Validation Failed / backup validation / crm`: an alert's key in the state.
pub fn alert_key(database: &str, alert: &str, check: &str) -> String {
    format!("{alert} / {check} / {database}")
}

/// One event as delivered to channels (and kept in the dead-letter list).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Stable for one occurrence of one alert (see the contract's `event.id`).
    pub id: String,
    pub alert: String,
    pub check: String,
    pub state: EventState,
    pub severity: Severity,
    pub level: u32,
    pub database: String,
    pub target: Option<String>,
    pub backup_id: Option<String>,
    pub message: String,
    pub action: String,
    pub fired_at: DateTime<Utc>,
    pub sent_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub details: BTreeMap<String, String>,
}

/// One delivery attempt's outcome, kept with the alert (`monitor alerts`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub channel: String,
    pub state: EventState,
    pub level: u32,
    pub at: DateTime<Utc>,
    pub ok: bool,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Deliveries kept per alert (the newest).
pub const KEPT_DELIVERIES: usize = 20;
/// Resolved alerts kept for `monitor alerts`.
pub const KEPT_RESOLVED: usize = 50;

/// An alert that fired and has not been forgotten.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    pub id: String,
    pub alert: String,
    pub check: String,
    /// The database it is about (its `[[databases]]` name, else its name in PostgreSQL).
    #[serde(default)]
    pub database: String,
    pub severity: Severity,
    pub message: String,
    pub action: String,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub backup_id: Option<String>,
    pub fired_at: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// When it was last sent (first firing, reminder or escalation).
    pub last_sent: DateTime<Utc>,
    pub level: u32,
    #[serde(default)]
    pub acked_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub resolved_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub deliveries: Vec<Delivery>,
}

impl Alert {
    pub fn key(&self) -> String {
        alert_key(&self.database, &self.alert, &self.check)
    }

    pub fn record(&mut self, delivery: Delivery) {
        self.deliveries.push(delivery);
        let extra = self.deliveries.len().saturating_sub(KEPT_DELIVERIES);
        self.deliveries.drain(..extra);
    }
}

/// An event a channel did not take, to be delivered on a later run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub channel: String,
    pub event: Event,
    pub first_failed: DateTime<Utc>,
    pub attempts: u32,
    pub last_error: String,
}

/// Everything the alert room remembers (one file per repository).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Active alerts by key ([`alert_key`]).
    #[serde(default)]
    pub active: BTreeMap<String, Alert>,
    /// Recently resolved alerts, newest last.
    #[serde(default)]
    pub resolved: Vec<Alert>,
    #[serde(default)]
    pub dead_letters: Vec<DeadLetter>,
    /// Deliveries that failed, per channel, since the state was made (only ever grows: the
    /// `larder_notification_failures_total` counter).
    #[serde(default)]
    pub failures: BTreeMap<String, u64>,
}

/// How alerts repeat and escalate.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Escalation levels with channels (at least 1).
    pub levels: u32,
    /// `None`: no reminders.
    pub remind_every: Option<Duration>,
    /// Per alert name, over [`runbook_escalation`].
    pub escalate_after: BTreeMap<String, Duration>,
    pub default_escalation: Duration,
}

/// The runbook's escalation times (Alert Configuration): Backup Failure 15 minutes, Backup
/// Corruption 30 minutes, Disk Space Low 1 hour, Schedule Missed 2 hours.
pub fn runbook_escalation(alert: &str) -> Option<Duration> {
    let minutes = match alert {
        "Backup Failure" => 15,
        "Backup Corruption" => 30,
        "Disk Space Low" => 60,
        "Schedule Missed" => 120,
        _ => return None,
    };
    Some(Duration::from_secs(minutes * 60))
}

/// Level 2 at 30 minutes in the runbook's escalation matrix: the time for alerts it gives none.
pub const DEFAULT_ESCALATION: Duration = Duration::from_secs(30 * 60);

/// How serious each runbook alert is.
pub fn severity_of(alert: &str) -> Severity {
    match alert {
        "Database connection failed" | "Backup Corruption" => Severity::Critical,
        "Disk Space Low" | "Schedule Missed" | "RPO Breached" | "Replication Slot Lagging" => {
            Severity::Warning
        }
        _ => Severity::Error,
    }
}

impl Policy {
    pub fn escalation(&self, alert: &str) -> Duration {
        self.escalate_after
            .get(alert)
            .copied()
            .or_else(|| runbook_escalation(alert))
            .unwrap_or(self.default_escalation)
    }

    /// The level an alert of this age should be at: one more per escalation time, capped.
    fn level_for(&self, alert: &str, age: Span) -> u32 {
        let every = self.escalation(alert).as_secs().max(1) as i64;
        let steps = (age.num_seconds().max(0) / every) as u32;
        (1 + steps).min(self.levels.max(1))
    }
}

/// An event due now and the levels whose channels get it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub key: String,
    pub event: Event,
    pub levels: Vec<u32>,
}

/// Advances `state` to `now` given the failing `conditions` of `database`, where `checked` names
/// every check this run looked at (an active alert of a check not looked at, or of another
/// database, stays as it is). Returns the events to deliver, in order.
pub fn advance(
    state: &mut State,
    conditions: &[Condition],
    checked: &[String],
    policy: &Policy,
    database: &str,
    now: DateTime<Utc>,
) -> Vec<Due> {
    let mut due = Vec::new();
    for condition in conditions {
        let key = condition.key(database);
        match state.active.get_mut(&key) {
            None => {
                let alert = Alert {
                    id: event_id(condition, database, now),
                    alert: condition.alert.clone(),
                    check: condition.check.clone(),
                    database: database.to_string(),
                    severity: severity_of(&condition.alert),
                    message: condition.message.clone(),
                    action: condition.action.clone(),
                    target: condition.target.clone(),
                    backup_id: condition.backup_id.clone(),
                    fired_at: now,
                    last_seen: now,
                    last_sent: now,
                    level: 1,
                    acked_at: None,
                    resolved_at: None,
                    deliveries: Vec::new(),
                };
                due.push(Due {
                    key: key.clone(),
                    event: event_of(&alert, EventState::Firing, policy, now),
                    levels: vec![1],
                });
                state.active.insert(key, alert);
            }
            Some(alert) => {
                alert.last_seen = now;
                alert.message = condition.message.clone();
                alert.backup_id = condition.backup_id.clone().or(alert.backup_id.take());
                let wanted = policy.level_for(&alert.alert, now - alert.fired_at);
                if alert.acked_at.is_none() && wanted > alert.level {
                    let from = alert.level + 1;
                    alert.level = wanted;
                    alert.last_sent = now;
                    due.push(Due {
                        key: key.clone(),
                        event: event_of(alert, EventState::Escalated, policy, now),
                        levels: (from..=wanted).collect(),
                    });
                } else if let Some(every) = policy.remind_every
                    && !every.is_zero()
                    && (now - alert.last_sent).to_std().unwrap_or_default() >= every
                {
                    alert.last_sent = now;
                    due.push(Due {
                        key: key.clone(),
                        event: event_of(alert, EventState::Firing, policy, now),
                        levels: (1..=alert.level).collect(),
                    });
                }
            }
        }
    }
    let failing: Vec<String> = conditions.iter().map(|c| c.key(database)).collect();
    let cleared: Vec<String> = state
        .active
        .iter()
        .filter(|(key, alert)| {
            !failing.contains(key) && alert.database == database && checked.contains(&alert.check)
        })
        .map(|(key, _)| key.clone())
        .collect();
    for key in cleared {
        if let Some(mut alert) = state.active.remove(&key) {
            alert.resolved_at = Some(now);
            due.push(Due {
                key: key.clone(),
                event: event_of(&alert, EventState::Resolved, policy, now),
                levels: (1..=alert.level).collect(),
            });
            state.resolved.push(alert);
        }
    }
    let extra = state.resolved.len().saturating_sub(KEPT_RESOLVED);
    state.resolved.drain(..extra);
    due
}

/// `backup-failure.latest-backup.crm.1733101200`: alert, check and database in lowercase
/// words, and the firing time.
fn event_id(condition: &Condition, database: &str, fired: DateTime<Utc>) -> String {
    let slug = |text: &str| {
        text.split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_ascii_lowercase)
            .collect::<Vec<_>>()
            .join("-")
    };
    format!(
        "{}.{}.{}.{}",
        slug(&condition.alert),
        slug(&condition.check),
        slug(database),
        fired.timestamp()
    )
}

/// The event for `alert` in `state` now.
pub fn event_of(alert: &Alert, state: EventState, policy: &Policy, now: DateTime<Utc>) -> Event {
    let mut details = BTreeMap::new();
    details.insert("check".to_string(), alert.check.clone());
    if let Ok(host) = rustix::system::uname().nodename().to_str() {
        details.insert("host".to_string(), host.to_string());
    }
    if state != EventState::Resolved && alert.level < policy.levels && alert.acked_at.is_none() {
        let every = Span::from_std(policy.escalation(&alert.alert)).unwrap_or_default();
        let next = alert.fired_at + every * alert.level as i32;
        details.insert("escalates_at".to_string(), next.to_rfc3339());
    }
    if let Some(acked) = alert.acked_at {
        details.insert("acknowledged_at".to_string(), acked.to_rfc3339());
    }
    Event {
        id: alert.id.clone(),
        alert: alert.alert.clone(),
        check: alert.check.clone(),
        state,
        severity: alert.severity,
        level: alert.level,
        database: alert.database.clone(),
        target: alert.target.clone(),
        backup_id: alert.backup_id.clone(),
        message: alert.message.clone(),
        action: alert.action.clone(),
        fired_at: alert.fired_at,
        sent_at: now,
        resolved_at: alert.resolved_at,
        details,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(levels: u32) -> Policy {
        Policy {
            levels,
            remind_every: Some(Duration::from_secs(3600)),
            escalate_after: BTreeMap::new(),
            default_escalation: DEFAULT_ESCALATION,
        }
    }

    fn failing(alert: &str, check: &str) -> Condition {
        Condition {
            alert: alert.into(),
            check: check.into(),
            message: "it broke".into(),
            action: "fix it".into(),
            target: None,
            backup_id: None,
        }
    }

    fn at(minutes: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).expect("time") + Span::minutes(minutes)
    }

    fn summary(due: &[Due]) -> Vec<(EventState, u32, Vec<u32>)> {
        due.iter()
            .map(|d| (d.event.state, d.event.level, d.levels.clone()))
            .collect()
    }

    #[test]
    fn an_alert_fires_once_escalates_on_the_runbooks_times_and_resolves() {
        let mut state = State::default();
        let p = policy(3);
        let down = [failing("Backup Failure", "last backup attempt")];
        let checked = ["last backup attempt".to_string()];
        let first = advance(&mut state, &down, &checked, &p, "db", at(0));
        assert_eq!(summary(&first), [(EventState::Firing, 1, vec![1])]);
        let id = first[0].event.id.clone();
        assert_eq!(id, "backup-failure.last-backup-attempt.db.1700000000");
        // Ten minutes later: nothing new (no re-send of an active alert).
        assert!(advance(&mut state, &down, &checked, &p, "db", at(10)).is_empty());
        // Backup Failure escalates after 15 minutes, level 3 after 30.
        let escalated = advance(&mut state, &down, &checked, &p, "db", at(16));
        assert_eq!(summary(&escalated), [(EventState::Escalated, 2, vec![2])]);
        assert_eq!(escalated[0].event.id, id);
        let top = advance(&mut state, &down, &checked, &p, "db", at(31));
        assert_eq!(summary(&top), [(EventState::Escalated, 3, vec![3])]);
        // At the top level only reminders remain, to every level that has it.
        assert!(advance(&mut state, &down, &checked, &p, "db", at(60)).is_empty());
        let reminder = advance(&mut state, &down, &checked, &p, "db", at(92));
        assert_eq!(summary(&reminder), [(EventState::Firing, 3, vec![1, 2, 3])]);
        // The check passes: resolved, to every level that heard of it, same id.
        let resolved = advance(&mut state, &[], &checked, &p, "db", at(95));
        assert_eq!(
            summary(&resolved),
            [(EventState::Resolved, 3, vec![1, 2, 3])]
        );
        assert_eq!(resolved[0].event.id, id);
        assert_eq!(resolved[0].event.resolved_at, Some(at(95)));
        assert!(state.active.is_empty());
        // A new occurrence is a new alert with a new id.
        let again = advance(&mut state, &down, &checked, &p, "db", at(100));
        assert_eq!(summary(&again), [(EventState::Firing, 1, vec![1])]);
        assert_ne!(again[0].event.id, id);
    }

    #[test]
    fn runbook_defaults_configured_times_and_acknowledgement() {
        let mut p = policy(2);
        assert_eq!(p.escalation("Disk Space Low"), Duration::from_secs(3600));
        assert_eq!(p.escalation("Schedule Missed"), Duration::from_secs(7200));
        assert_eq!(p.escalation("Backup Corruption"), Duration::from_secs(1800));
        assert_eq!(
            p.escalation("Database connection failed"),
            DEFAULT_ESCALATION
        );
        p.escalate_after
            .insert("Disk Space Low".into(), Duration::from_secs(60));
        let mut state = State::default();
        let full = [failing("Disk Space Low", "disk space local")];
        let checked = ["disk space local".to_string()];
        advance(&mut state, &full, &checked, &p, "db", at(0));
        // Acknowledged: no escalation until resolved.
        for alert in state.active.values_mut() {
            alert.acked_at = Some(at(0));
        }
        assert!(advance(&mut state, &full, &checked, &p, "db", at(5)).is_empty());
        assert_eq!(state.active.values().next().map(|a| a.level), Some(1));
    }

    #[test]
    fn two_databases_alerts_never_merge() {
        let mut state = State::default();
        let p = policy(1);
        let suspect = [failing("Backup Validation Failed", "backup validation")];
        let checked = ["backup validation".to_string()];
        let crm = advance(&mut state, &suspect, &checked, &p, "crm", at(0));
        let billing = advance(&mut state, &suspect, &checked, &p, "billing", at(0));
        assert_eq!(crm.len(), 1);
        assert_eq!(billing.len(), 1, "billing's alert is its own, not crm's");
        assert_ne!(crm[0].event.id, billing[0].event.id);
        assert_eq!(billing[0].event.database, "billing");
        assert_eq!(state.active.len(), 2);
        // A clean backup of crm resolves crm's alert only.
        let clean = advance(&mut state, &[], &checked, &p, "crm", at(5));
        assert_eq!(summary(&clean), [(EventState::Resolved, 1, vec![1])]);
        assert_eq!(clean[0].event.database, "crm");
        let left: Vec<&String> = state.active.keys().collect();
        assert_eq!(
            left,
            ["Backup Validation Failed / backup validation / billing"]
        );
    }

    #[test]
    fn a_check_not_looked_at_does_not_resolve_its_alert() {
        let mut state = State::default();
        let p = policy(1);
        let suspect = [failing("Backup Validation Failed", "backup validation")];
        advance(
            &mut state,
            &suspect,
            &["backup validation".to_string()],
            &p,
            "db",
            at(0),
        );
        // A health run looks at other checks only.
        let health = advance(
            &mut state,
            &[],
            &["database".to_string(), "latest backup".to_string()],
            &p,
            "db",
            at(1),
        );
        assert!(health.is_empty());
        assert_eq!(state.active.len(), 1);
        // Without levels there is no escalation, however old.
        assert!(
            advance(
                &mut state,
                &suspect,
                &["backup validation".to_string()],
                &p,
                "db",
                at(50)
            )
            .is_empty()
        );
    }
}
