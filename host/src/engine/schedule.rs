//! `schedule list`: the configured backup timetables and whether each one ran on time.
//!
//! Larder does not need its own scheduler to be trusted: cron or systemd timers run
//! `backup-cli backup create`, and this compares the timetable with the backups that exist.

use crate::config::Schedule;
use crate::error::{Error, Result};
use crate::repository::manifest::{BackupType, Manifest};
use chrono::{DateTime, Utc};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct ScheduleStatus {
    pub name: String,
    #[serde(rename = "type")]
    pub backup_type: BackupType,
    pub cron: String,
    pub retention_seconds: Option<u64>,
    pub last_backup_id: Option<String>,
    pub last_backup_at: Option<DateTime<Utc>>,
    /// The most recent time the schedule was due.
    pub previous_due: Option<DateTime<Utc>>,
    pub next_due: Option<DateTime<Utc>>,
    /// `ok`, `due` (within its grace period) or `missed`.
    pub status: &'static str,
}

pub fn status(
    schedules: &[Schedule],
    manifests: &[Manifest],
    now: DateTime<Utc>,
) -> Result<Vec<ScheduleStatus>> {
    let mut out = Vec::new();
    for schedule in schedules {
        let cron: croner::Cron = schedule.cron.parse().map_err(|e| {
            Error::Config(format!(
                "schedule '{}': cron '{}' is not valid: {e}",
                schedule.name, schedule.cron
            ))
        })?;
        let previous_due = cron.find_previous_occurrence(&now, true).ok();
        let next_due = cron.find_next_occurrence(&now, false).ok();
        let last = manifests
            .iter()
            .filter(|m| m.backup_type == schedule.backup_type)
            .max_by_key(|m| m.completed_at);
        let ran_since_due = match (previous_due, last) {
            (Some(due), Some(m)) => m.created_at >= due - chrono::Duration::minutes(5),
            (Some(_), None) => false,
            (None, _) => true,
        };
        let grace = chrono::Duration::from_std(schedule.grace)
            .unwrap_or_else(|_| chrono::Duration::hours(1));
        let status = match previous_due {
            _ if ran_since_due => "ok",
            Some(due) if now - due <= grace => "due",
            _ => "missed",
        };
        out.push(ScheduleStatus {
            name: schedule.name.clone(),
            backup_type: schedule.backup_type,
            cron: schedule.cron.clone(),
            retention_seconds: schedule.retention.map(|r| r.as_secs()),
            last_backup_id: last.map(|m| m.id.clone()),
            last_backup_at: last.map(|m| m.completed_at),
            previous_due,
            next_due,
            status,
        });
    }
    Ok(out)
}
