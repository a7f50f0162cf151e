//! `monitor health` and `monitor alerts`: is the database reachable, is the repository sound,
//! is there a recent, validated backup, is there room for the next one, did every schedule run.
//!
//! Failing checks carry the runbook's alert names (Backup Failure, Backup Corruption, Disk
//! Space Low, Schedule Missed) with its action and escalation window, so the alert an operator
//! receives says what to do.

use crate::config::Config;
use crate::engine::progress::human_bytes;
use crate::engine::schedule;
use crate::pg::ConnectionSettings;
use crate::repository::Repository;
use crate::repository::manifest::BackupType;
use crate::targets::Target;
use chrono::{DateTime, Utc};
use serde::Serialize;
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
}

fn check(name: &str, status: Status, detail: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        status,
        detail: detail.into(),
        alert: None,
        action: None,
    }
}

fn alert(name: &str, detail: impl Into<String>, alert: &str, action: &str) -> Check {
    Check {
        name: name.into(),
        status: Status::Fail,
        detail: detail.into(),
        alert: Some(alert.into()),
        action: Some(action.into()),
    }
}

pub async fn health(
    settings: &ConnectionSettings,
    target: Arc<dyn Target>,
    config: &Config,
) -> Health {
    let now = Utc::now();
    let mut checks = Vec::new();

    match settings.connect().await {
        Ok(client) => {
            let row = client
                .query_one(
                    "SELECT current_setting('server_version'), pg_is_in_recovery(), pg_database_size(current_database())",
                    &[],
                )
                .await;
            checks.push(match row {
                Ok(row) => check(
                    "database",
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
                    "database",
                    e.to_string(),
                    "Database connection failed",
                    "Restart PostgreSQL service",
                ),
            });
        }
        Err(e) => checks.push(alert(
            "database",
            e.to_string(),
            "Database connection failed",
            "Restart PostgreSQL service",
        )),
    }

    let repo = match Repository::open(target.clone()).await {
        Ok(repo) => {
            checks.push(check("repository", Status::Ok, target.location()));
            repo
        }
        Err(e) => {
            checks.push(alert(
                "repository",
                e.to_string(),
                "Backup file not found",
                "Check backup location and permissions",
            ));
            return finish(now, checks);
        }
    };
    let manifests = match repo.manifests().await {
        Ok(m) => m,
        Err(e) => {
            checks.push(alert(
                "repository",
                e.to_string(),
                "Backup Corruption",
                "Check the repository; restore from another copy",
            ));
            return finish(now, checks);
        }
    };

    let latest = manifests
        .iter()
        .filter(|m| m.backup_type == BackupType::Full)
        .max_by_key(|m| m.completed_at);
    let rpo = config.objectives.rpo();
    match latest {
        None => checks.push(alert(
            "latest backup",
            "no full backup in the repository",
            "Backup Failure",
            "Run `backup-cli backup create` now (escalate within 15 minutes)",
        )),
        Some(m) => {
            let age = (now - m.completed_at).to_std().unwrap_or_default();
            let detail = format!(
                "{} ('{}') finished {} ago; RPO {}",
                m.id,
                m.name,
                humantime::format_duration(std::time::Duration::from_secs(age.as_secs())),
                humantime::format_duration(rpo)
            );
            checks.push(if age > rpo {
                Check { action: Some("Take a new backup: the newest one is older than the recovery-point objective".into()), ..check("latest backup", Status::Warn, detail) }
            } else {
                check("latest backup", Status::Ok, detail)
            });
            match repo.last_validation(&m.id).await {
                Ok(Some(v)) if v.ok => checks.push(check(
                    "validation",
                    Status::Ok,
                    format!("{} validated {}", m.id, v.at.format("%Y-%m-%d %H:%M UTC")),
                )),
                Ok(Some(v)) => checks.push(alert(
                    "validation",
                    format!(
                        "{} failed validation: {}",
                        m.id,
                        v.first_problem.unwrap_or_default()
                    ),
                    "Backup Corruption",
                    "Create a new backup immediately (escalate within 30 minutes)",
                )),
                Ok(None) => checks.push(Check {
                    action: Some(format!("Run `backup-cli backup validate {}`", m.id)),
                    ..check(
                        "validation",
                        Status::Warn,
                        format!("{} has never been validated", m.id),
                    )
                }),
                Err(e) => checks.push(check("validation", Status::Warn, e.to_string())),
            }
        }
    }

    if let Ok(Some(event)) = repo.last_event().await {
        let newer_success = manifests.iter().any(|m| m.completed_at > event.at);
        if event.kind == "backup-failed" && !newer_success {
            checks.push(alert(
                "last backup attempt",
                format!(
                    "failed {}: {}",
                    event.at.format("%Y-%m-%d %H:%M UTC"),
                    event.detail.lines().next().unwrap_or_default()
                ),
                "Backup Failure",
                "Immediate investigation (escalate within 15 minutes)",
            ));
        }
    }

    match target.available_space().await {
        Ok(Some(free)) if free < config.monitor.min_free_space => checks.push(alert(
            "disk space",
            format!("{} free at {}, below {}", human_bytes(free), target.location(), human_bytes(config.monitor.min_free_space)),
            "Disk Space Low",
            "Clean up old backups (`backup-cli backup delete <id> --force`) or add storage (escalate within 1 hour)",
        )),
        Ok(Some(free)) => checks.push(check("disk space", Status::Ok, format!("{} free at {}", human_bytes(free), target.location()))),
        Ok(None) => checks.push(check("disk space", Status::Ok, "the target does not report free space")),
        Err(e) => checks.push(check("disk space", Status::Warn, e.to_string())),
    }

    match schedule::status(&config.schedules, &manifests, now) {
        Ok(statuses) => {
            for s in statuses {
                let name = format!("schedule {}", s.name);
                let due = s
                    .previous_due
                    .map(|d| d.format("%Y-%m-%d %H:%M UTC").to_string())
                    .unwrap_or_default();
                checks.push(match s.status {
                    "missed" => alert(
                        &name,
                        format!("due {due} ({}), no {} backup since", s.cron, s.backup_type),
                        "Schedule Missed",
                        "Run the backup by hand (`backup-cli backup create`) and check the scheduler (escalate within 2 hours)",
                    ),
                    status => check(&name, Status::Ok, format!("{status}; last due {due}")),
                });
            }
        }
        Err(e) => checks.push(check("schedules", Status::Warn, e.to_string())),
    }
    finish(now, checks)
}

fn finish(checked_at: DateTime<Utc>, checks: Vec<Check>) -> Health {
    let status = checks.iter().map(|c| c.status).max().unwrap_or(Status::Ok);
    Health {
        status,
        checked_at,
        checks,
    }
}

/// Sends each failing check to the configured alert command as JSON on stdin.
/// Returns how many alerts were delivered.
pub async fn deliver(health: &Health, command: &str) -> crate::Result<usize> {
    use tokio::io::AsyncWriteExt;
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    let mut sent = 0;
    for check in health.alerts() {
        let body = serde_json::json!({
            "alert": check.alert, "check": check.name, "detail": check.detail,
            "action": check.action, "host": host, "at": health.checked_at,
        });
        let mut child = tokio::process::Command::new("sh")
            .args(["-c", command])
            .stdin(std::process::Stdio::piped())
            .env(
                "LARDER_ALERT",
                check.alert.as_deref().unwrap_or(&check.name),
            )
            .spawn()
            .map_err(crate::Error::io(format!(
                "starting the alert command `{command}`"
            )))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(format!("{body}\n").as_bytes())
                .await
                .map_err(crate::Error::io("writing the alert to the alert command"))?;
        }
        let status = child
            .wait()
            .await
            .map_err(crate::Error::io("waiting for the alert command"))?;
        if !status.success() {
            return Err(crate::Error::Alert(format!(
                "the alert command `{command}` failed ({status})"
            )));
        }
        sent += 1;
    }
    Ok(sent)
}
