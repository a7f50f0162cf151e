//! `backup pin` and `backup unpin`: mark a backup so retention never deletes it (until a
//! date, or until unpinned), on every target that holds a copy, so the mark travels with
//! every copy a restore could use.

use crate::error::{Error, Result};
use crate::repository::id::is_valid_backup_id;
use crate::repository::pins::Pin;
use crate::repository::{Repository, backup_ids_on};
use crate::targets::Target;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::sync::Arc;

#[derive(Debug, Clone, Serialize)]
pub struct PinReport {
    pub backup_id: String,
    /// False for `unpin`.
    pub pinned: bool,
    pub until: Option<DateTime<Utc>>,
    pub reason: Option<String>,
    /// The targets whose copy now carries (or no longer carries) the pin.
    pub targets: Vec<String>,
}

/// The targets holding a copy of backup `id` (an error when none does).
async fn holders(targets: &[Arc<dyn Target>], id: &str) -> Result<Vec<Arc<dyn Target>>> {
    let mut out = Vec::new();
    for target in targets {
        if backup_ids_on(target).await?.iter().any(|held| held == id) {
            out.push(target.clone());
        }
    }
    if out.is_empty() {
        return Err(Error::BackupNotFound(id.to_string()));
    }
    Ok(out)
}

/// Pins backup `id_or_latest` (`latest`: of `database`) on every target that holds it.
pub async fn pin(
    targets: &[Arc<dyn Target>],
    id_or_latest: &str,
    database: &str,
    until: Option<DateTime<Utc>>,
    reason: Option<String>,
    now: DateTime<Utc>,
) -> Result<PinReport> {
    if let Some(until) = until.filter(|u| *u <= now) {
        return Err(Error::Refused(format!(
            "--until {} is not in the future; a pin that has already expired would keep nothing",
            until.format("%Y-%m-%d %H:%M UTC")
        )));
    }
    let manifest = Repository::open_for_reading(targets)
        .await?
        .resolve(id_or_latest, database)
        .await?;
    let pin = Pin {
        backup_id: manifest.id.clone(),
        pinned_at: now,
        until,
        reason,
    };
    let mut report = PinReport {
        backup_id: manifest.id.clone(),
        pinned: true,
        until,
        reason: pin.reason.clone(),
        targets: Vec::new(),
    };
    for target in holders(targets, &manifest.id).await? {
        Repository::open(target.clone())
            .await?
            .write_pin(&pin)
            .await?;
        report.targets.push(target.name().to_string());
    }
    Ok(report)
}

/// Removes backup `id`'s pin from every target (also from targets that no longer hold the
/// backup, so a later copy does not bring an old pin back).
pub async fn unpin(targets: &[Arc<dyn Target>], id: &str) -> Result<PinReport> {
    if !is_valid_backup_id(id) {
        return Err(Error::BackupNotFound(id.to_string()));
    }
    let mut report = PinReport {
        backup_id: id.to_string(),
        pinned: false,
        until: None,
        reason: None,
        targets: Vec::new(),
    };
    for target in targets {
        let Ok(repo) = Repository::open(target.clone()).await else {
            continue;
        };
        if repo.remove_pin(id).await? {
            report.targets.push(target.name().to_string());
        }
    }
    if report.targets.is_empty() {
        return Err(Error::Refused(format!(
            "backup {id} is not pinned on any target; nothing changed (`backup-cli backup prune --dry-run` shows the pins)"
        )));
    }
    Ok(report)
}
