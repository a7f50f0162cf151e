//! `backup list`: the backups in the repository, newest first, as people and scripts see them.

use super::sync::{Holdings, Presence, Scrutiny, holdings};
use crate::repository::manifest::{BackupType, Chain, Manifest};
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
    /// The backup's type, times and sizes; `null` (and zero) for a damaged manifest.
    #[serde(rename = "type")]
    pub backup_type: Option<BackupType>,
    pub created_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub duration_seconds: f64,
    /// `complete` (an unfinished backup has no manifest); `suspect`: complete, but a
    /// validator found an error in its rows (`suspect_because` says which), so `latest` and
    /// retention pass over it; or `damaged`: its manifest is there on every target holding it
    /// but cannot be used, `error` says why.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// For a suspect backup: its first error finding, as `validator: table: message`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suspect_because: Option<String>,
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
    /// For an incremental: the backup it follows (`parent`) and its chain's full (`base`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain: Option<Chain>,
    /// With change tracking (a full that starts a chain, an incremental): the change records
    /// it holds (0 for the full).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes: Option<u64>,
}

impl From<&Manifest> for BackupSummary {
    fn from(m: &Manifest) -> Self {
        BackupSummary {
            id: m.id.clone(),
            name: m.name.clone(),
            backup_type: Some(m.backup_type),
            created_at: Some(m.created_at),
            completed_at: Some(m.completed_at),
            duration_seconds: m.duration_seconds(),
            status: if m.is_suspect() {
                "suspect"
            } else {
                "complete"
            },
            error: None,
            suspect_because: m
                .suspect_findings()
                .next()
                .map(|(run, f)| format!("validator '{}': {}: {}", run.name, f.table, f.message)),
            stored_bytes: m.stored_bytes(),
            new_bytes: m.new_bytes,
            logical_bytes: m.logical_bytes(),
            tables: m.tables.len(),
            rows: m.rows(),
            database: m.source.database.clone(),
            server_version: m.source.server_version.clone(),
            targets: BTreeMap::new(),
            chain: m.chain.clone(),
            changes: m.incremental.as_ref().map(|i| i.changes.rows),
        }
    }
}

impl BackupSummary {
    /// A backup whose manifest is damaged wherever it is kept.
    fn damaged(id: &str, error: &str) -> BackupSummary {
        BackupSummary {
            id: id.to_string(),
            name: String::new(),
            backup_type: None,
            created_at: None,
            completed_at: None,
            duration_seconds: 0.0,
            status: "damaged",
            error: Some(error.to_string()),
            suspect_because: None,
            stored_bytes: 0,
            new_bytes: 0,
            logical_bytes: 0,
            tables: 0,
            rows: 0,
            database: String::new(),
            server_version: String::new(),
            targets: BTreeMap::new(),
            chain: None,
            changes: None,
        }
    }

    /// Its type as `backup list` shows it, with its place in a chain: `full (chain base)`,
    /// `incremental`, or with `parent` `incremental <- PARENT` (the wide list, where no width
    /// limit applies).
    pub fn type_and_chain(&self, parent: bool) -> String {
        let Some(backup_type) = self.backup_type else {
            return String::new();
        };
        match (&self.chain, self.changes) {
            (Some(chain), _) if parent => format!("{backup_type} <- {}", chain.parent),
            (Some(_), _) => backup_type.to_string(),
            (None, Some(_)) => format!("{backup_type} (chain base)"),
            (None, None) => backup_type.to_string(),
        }
    }

    /// When the backup started: from its manifest, else from its id (which begins with it).
    fn started(&self) -> Option<DateTime<Utc>> {
        self.created_at.or_else(|| {
            chrono::NaiveDateTime::parse_from_str(self.id.get(..15)?, "%Y%m%d-%H%M%S")
                .ok()
                .map(|t| t.and_utc())
        })
    }
}

/// Newest first, optionally of one type and one database (its name in PostgreSQL; `limit`
/// counts after both), at most `limit` entries, with the targets holding
/// each: every backup found on any of `targets` (one kept only on a secondary shows too).
/// Copies are judged by their listing (every chunk there with its recorded size); `verify`
/// reads and hashes every chunk of every copy.
/// A backup whose manifest is damaged on every target is listed as damaged, with the error.
pub async fn list(
    targets: &[Arc<dyn Target>],
    limit: Option<usize>,
    backup_type: Option<BackupType>,
    database: Option<&str>,
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
        problems,
        unreachable,
        ..
    } = holdings(targets, |_| scrutiny).await;
    for (target, why) in unreachable {
        tracing::warn!("cannot tell which backups are on target '{target}': {why}");
    }
    let mut summaries: Vec<BackupSummary> = manifests
        .values()
        .filter(|m| backup_type.is_none_or(|t| m.backup_type == t))
        .filter(|m| database.is_none_or(|d| m.source.database == d))
        .map(BackupSummary::from)
        .collect();
    if backup_type.is_none() {
        // Held somewhere, yet no target had a usable manifest: damaged everywhere.
        summaries.extend(
            copies
                .keys()
                .filter(|id| !manifests.contains_key(*id))
                .map(|id| {
                    let error = problems
                        .get(id)
                        .and_then(|p| p.values().next())
                        .map_or("the manifest cannot be read", String::as_str);
                    BackupSummary::damaged(id, error)
                }),
        );
    }
    summaries.sort_by(|a, b| (b.started(), &b.id).cmp(&(a.started(), &a.id)));
    summaries
        .into_iter()
        .take(limit.unwrap_or(usize::MAX))
        .map(|s| BackupSummary {
            targets: copies.remove(&s.id).unwrap_or_default(),
            ..s
        })
        .collect()
}
