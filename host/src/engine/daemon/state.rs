//! What the daemon records in the repository for `schedule list`: per schedule its last run
//! (id, due and start times, duration, outcome, backup or drill), its last skipped time and its next run,
//! plus the last health check. One object per database, `daemon/<database, hex>.json`,
//! rewritten after every change; whether the daemon still runs is its lock's business.

use crate::error::{Error, Result};
use crate::repository::Repository;
use crate::targets::TargetError;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Backed up, copied, validated (and retention applied).
    Ok,
    /// A step failed; `stage` and `error` say which and why.
    Failed,
    /// Stopped by SIGTERM/SIGINT after the grace period; nothing of it is visible.
    Interrupted,
}

/// One run of a schedule.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    /// `<schedule>@<due time>`, in every log line about the run.
    pub run_id: String,
    pub due: DateTime<Utc>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub seconds: f64,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    /// The step that failed: `backup`, `copy`, `validate`, `validators`, `retention`, `drill`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The targets the backup is on after the run (the primary first).
    #[serde(default)]
    pub targets: Vec<String>,
    /// The backups retention deleted after the run.
    #[serde(default)]
    pub pruned: Vec<String>,
    /// A drill schedule's run: the drill it recorded (`recovery drills` lists it); its
    /// `backup_id` is the backup drilled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill_id: Option<String>,
}

/// A due time that did not run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Skipped {
    pub at: DateTime<Utc>,
    /// The (latest) due time skipped.
    pub due: DateTime<Utc>,
    /// `overlap` (the previous run was still going) or `missed` (the daemon was down).
    pub reason: String,
    pub count: usize,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ScheduleRecord {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<RunRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_skipped: Option<Skipped>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_due: Option<DateTime<Utc>>,
    /// The next run's start: `next_due` plus its jitter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_start: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HealthRecord {
    pub at: DateTime<Utc>,
    /// `ok`, `warn` or `fail`.
    pub status: String,
    /// The runbook alerts raised, and how many were delivered to `[monitor] alert_command`.
    #[serde(default)]
    pub alerts: Vec<String>,
    #[serde(default)]
    pub delivered: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_error: Option<String>,
}

/// The daemon's record for one database.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DaemonState {
    pub database: String,
    pub pid: u32,
    pub host: String,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Set when the daemon stopped cleanly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub schedules: Vec<ScheduleRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_health: Option<HealthRecord>,
}

/// Where the state of the daemon for `database` is kept.
pub fn state_key(database: &str) -> String {
    format!("daemon/{}.json", hex::encode(database))
}

impl DaemonState {
    /// The recorded state of the daemon for `database` (`None`: no daemon ever ran for it).
    pub async fn read(repo: &Repository, database: &str) -> Result<Option<DaemonState>> {
        let key = state_key(database);
        match repo.target().get(&key).await {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                Error::Repository(format!(
                    "{key} (the daemon's state for database '{database}') is not readable: {e}; it is rewritten when the daemon next runs"
                ))
            }),
            Err(TargetError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.at(&key, "reading the daemon's state")),
        }
    }

    pub async fn write(&mut self, repo: &Repository) -> Result<()> {
        self.updated_at = Utc::now();
        let key = state_key(&self.database);
        let body = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::Repository(format!("encoding the daemon's state: {e}")))?;
        repo.target()
            .put(&key, Bytes::from(body))
            .await
            .map_err(|e| e.at(&key, "writing the daemon's state"))
    }

    /// The record of `schedule`, made when missing.
    pub fn schedule_mut(&mut self, schedule: &str) -> &mut ScheduleRecord {
        let index = match self.schedules.iter().position(|s| s.name == schedule) {
            Some(index) => index,
            None => {
                self.schedules.push(ScheduleRecord {
                    name: schedule.to_string(),
                    ..ScheduleRecord::default()
                });
                self.schedules.len() - 1
            }
        };
        &mut self.schedules[index]
    }

    pub fn schedule(&self, schedule: &str) -> Option<&ScheduleRecord> {
        self.schedules.iter().find(|s| s.name == schedule)
    }

    /// The due time of the schedule's last run or skip: where its missed times start.
    pub fn last_due(&self, schedule: &str) -> Option<DateTime<Utc>> {
        let record = self.schedule(schedule)?;
        let run = record.last_run.as_ref().map(|r| r.due);
        let skipped = record.last_skipped.as_ref().map(|s| s.due);
        run.max(skipped)
    }
}

/// Whether a daemon runs for a database, as `schedule list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DaemonSummary {
    pub database: String,
    /// Its lock is held by a live process.
    pub running: bool,
    pub pid: u32,
    pub host: String,
    pub since: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_health: Option<HealthRecord>,
}

/// The daemon's record and whether it runs now.
#[derive(Debug, Clone)]
pub struct DaemonView {
    pub summary: DaemonSummary,
    pub state: DaemonState,
}

impl DaemonView {
    /// What the repository says of the daemon for `database` (`None`: none ever ran).
    pub async fn read(repo: &Repository, database: &str) -> Result<Option<DaemonView>> {
        let Some(state) = DaemonState::read(repo, database).await? else {
            return Ok(None);
        };
        let lock = repo.daemon_lock(database).await?;
        let running = lock
            .as_ref()
            .is_some_and(|l| l.state == crate::repository::lock::LockState::Live);
        let summary = DaemonSummary {
            database: database.to_string(),
            running,
            pid: state.pid,
            host: state.host.clone(),
            since: state.started_at,
            stopped_at: state.stopped_at,
            last_health: state.last_health.clone(),
        };
        Ok(Some(DaemonView { summary, state }))
    }
}
