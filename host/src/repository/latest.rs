//! What a backup argument names: an id as given, or `latest` / `latest-schema`, which mean the
//! newest backup of *this* database that a recovery may trust (`latest`: a full or an
//! incremental one), passing over (and saying so) schema-only backups, backups of other databases, emergency snapshots, failed validations
//! and suspect backups (a validator found an error in their rows).

use super::Repository;
use super::history::ValidationState;
use super::manifest::{BackupType, Manifest};
use crate::error::{Error, Result};

/// The newest backup of the database holding its rows: a full or an incremental (whose
/// restore replays its chain).
pub const LATEST: &str = "latest";
/// The types of backup `latest` (and a drill's random choice) may name.
const LATEST_TYPES: &[BackupType] = &[BackupType::Full, BackupType::Incremental];
/// The newest schema-only backup of the database.
pub const LATEST_SCHEMA: &str = "latest-schema";
/// The runbook names the backup of the broken state taken before a recovery
/// `emergency-$(date …)`: `latest` must not pick that state to restore.
pub const EMERGENCY_PREFIX: &str = "emergency-";

/// A backup argument resolved to its manifest.
#[derive(Debug, Clone)]
pub struct Selection {
    pub manifest: Manifest,
    /// What was asked for: `latest`, `latest-schema` or the id.
    pub requested: String,
    /// Newer backups `latest` passed over, each with the reason.
    pub passed_over: Vec<String>,
}

impl Repository {
    /// Resolves an id, `latest` or `latest-schema` (for `database`) to a manifest.
    pub async fn resolve(&self, id_or_latest: &str, database: &str) -> Result<Manifest> {
        Ok(self.select(id_or_latest, database).await?.manifest)
    }

    /// Like [`Repository::resolve`], keeping what `latest` passed over, for the plan to show.
    pub async fn select(&self, id_or_latest: &str, database: &str) -> Result<Selection> {
        let wanted: &[BackupType] = match id_or_latest {
            LATEST => LATEST_TYPES,
            LATEST_SCHEMA => &[BackupType::SchemaOnly],
            id => {
                return Ok(Selection {
                    manifest: self.read_manifest(id).await?,
                    requested: id.to_string(),
                    passed_over: Vec::new(),
                });
            }
        };
        let manifests = self.manifests().await?;
        if manifests.is_empty() {
            return Err(Error::Refused(format!(
                "the repository at {} holds no backups yet; run `backup-cli backup create` first",
                self.target.location()
            )));
        }
        let mut passed_over = Vec::new();
        for manifest in manifests.into_iter().rev() {
            let why = self.passed_over_why(&manifest, wanted, database).await;
            match why {
                Some(why) => passed_over.push(format!("{} ({why})", manifest.id)),
                None => {
                    return Ok(Selection {
                        manifest,
                        requested: id_or_latest.to_string(),
                        passed_over,
                    });
                }
            }
        }
        Err(Error::Refused(format!(
            "`{id_or_latest}` names the newest {} backup of database {database} that is not an emergency backup, not suspect and has not failed validation, \
             and the repository at {} holds none; passed over: {}. Name a backup id (see `backup-cli backup list`)",
            wanted
                .iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(" or "),
            self.target.location(),
            passed_over.join("; ")
        )))
    }

    /// A backup chosen at random among those `latest` could name (full or incremental, of `database`, not
    /// an emergency backup, not suspect, not failed everywhere) taken within `within` of `now`
    /// (`recovery drill --random-within 30d`: every backup of the month gets tested in time).
    pub async fn select_random_within(
        &self,
        database: &str,
        within: std::time::Duration,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Selection> {
        let since = now - chrono::Duration::from_std(within).unwrap_or(chrono::Duration::MAX);
        let mut candidates = Vec::new();
        for manifest in self.manifests().await? {
            if manifest.created_at >= since
                && self
                    .passed_over_why(&manifest, LATEST_TYPES, database)
                    .await
                    .is_none()
            {
                candidates.push(manifest);
            }
        }
        let requested = format!("random within {}", humantime::format_duration(within));
        if candidates.is_empty() {
            return Err(Error::Refused(format!(
                "{requested}: the repository at {} holds no full or incremental backup of database {database} taken since {} that a recovery may trust;                  name a backup id or a longer window (see `backup-cli backup list`)",
                self.target.location(),
                since.format("%Y-%m-%d %H:%M UTC")
            )));
        }
        let manifest = candidates.swap_remove(fastrand::usize(..candidates.len()));
        Ok(Selection {
            manifest,
            requested,
            passed_over: Vec::new(),
        })
    }

    /// Why `latest` (of type `wanted`, for `database`) passes over `manifest`; None: it may
    /// name it.
    async fn passed_over_why(
        &self,
        manifest: &Manifest,
        wanted: &[BackupType],
        database: &str,
    ) -> Option<String> {
        if manifest.source.database != database {
            Some(format!("a backup of database {}", manifest.source.database))
        } else if !wanted.contains(&manifest.backup_type) {
            Some(format!("{} backup", manifest.backup_type))
        } else if manifest.name.starts_with(EMERGENCY_PREFIX) {
            Some(format!(
                "'{}' is an emergency backup of the state being recovered from",
                manifest.name
            ))
        } else if let Some((run, finding)) = manifest.suspect_findings().next() {
            Some(format!(
                "suspect: validator '{}' found {}: {}",
                run.name, finding.table, finding.message
            ))
        } else {
            self.failed_everywhere(&manifest.id).await
        }
    }

    /// Why a backup is suspect: its last validation failed on every target that validated
    /// it (a copy damaged on one target while intact on another is not: restore `--from` it).
    async fn failed_everywhere(&self, backup_id: &str) -> Option<String> {
        match self.validation_state(backup_id).await {
            ValidationState::Failed(why) => Some(why),
            ValidationState::Passed | ValidationState::Unknown => None,
        }
    }
}
