//! `backup list`: the backups in the repository, newest first, as people and scripts see them.

use super::sync::{Holdings, Presence, Scrutiny, holdings};
use crate::repository::manifest::{BackupType, Manifest};
use crate::targets::Target;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// One backup as `backup list` shows it (the JSON field names are a stable interface).
#[derive(Debug, Clone, Serialize)]
pub struct BackupSummary {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub backup_type: BackupType,
    pub created_at: DateTime<Utc>,
    pub completed_at: DateTime<Utc>,
    pub duration_seconds: f64,
    /// Every visible backup is complete: an unfinished one has no manifest.
    pub status: &'static str,
    /// Compressed bytes of all chunks the backup references.
    pub stored_bytes: u64,
    /// Compressed bytes the backup added (the rest was shared with earlier backups).
    pub new_bytes: u64,
    pub logical_bytes: u64,
    pub tables: usize,
    pub rows: u64,
    pub database: String,
    pub server_version: String,
    /// On which storage targets the backup is kept, and whether each copy is complete.
    pub targets: BTreeMap<String, Presence>,
}

impl From<&Manifest> for BackupSummary {
    fn from(m: &Manifest) -> Self {
        BackupSummary {
            id: m.id.clone(),
            name: m.name.clone(),
            backup_type: m.backup_type,
            created_at: m.created_at,
            completed_at: m.completed_at,
            duration_seconds: m.duration_seconds(),
            status: "complete",
            stored_bytes: m.stored_bytes(),
            new_bytes: m.new_bytes,
            logical_bytes: m.logical_bytes(),
            tables: m.tables.len(),
            rows: m.rows(),
            database: m.source.database.clone(),
            server_version: m.source.server_version.clone(),
            targets: BTreeMap::new(),
        }
    }
}

/// Newest first, optionally of one type and at most `limit` entries, with the targets holding
/// each: every backup found on any of `targets` (one kept only on a secondary shows too).
/// Copies are judged by their listing (every chunk there with its recorded size); `verify`
/// reads and hashes every chunk of every copy.
pub async fn list(
    targets: &[Arc<dyn Target>],
    limit: Option<usize>,
    backup_type: Option<BackupType>,
    verify: bool,
) -> Vec<BackupSummary> {
    let scrutiny = if verify {
        Scrutiny::Full
    } else {
        Scrutiny::Listing
    };
    let Holdings {
        mut copies,
        manifests,
        unreachable,
        ..
    } = holdings(targets, |_| scrutiny).await;
    for target in unreachable {
        tracing::warn!("cannot tell which backups are on {target}");
    }
    let mut manifests: Vec<Manifest> = manifests.into_values().collect();
    manifests.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
    manifests
        .iter()
        .filter(|m| backup_type.is_none_or(|t| m.backup_type == t))
        .take(limit.unwrap_or(usize::MAX))
        .map(|m| BackupSummary {
            targets: copies.remove(&m.id).unwrap_or_default(),
            ..BackupSummary::from(m)
        })
        .collect()
}
