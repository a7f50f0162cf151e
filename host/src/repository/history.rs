//! What happened to the repository, kept in it: measured restores (`restores/`, so recovery
//! plans estimate from this site's own history), restore drills (`drills/`: the measured
//! recovery time against the RTO), the last validation of each backup (`validations/`) and
//! failed backup attempts (`events/`), which `monitor health` reads.
//!
//! In an encrypted repository these records, and pins (`pins/`), are sealed like manifests:
//! they name the database, its tables (drill checks, validation problems), its sizes and
//! where it was restored. A record that does not open (not sealed for this repository, or
//! read by a host holding the writer key only) counts as unreadable, as a damaged one does.
//! Only the repository's format file, its keys file and locks (holder host and pid, which a
//! writer-key host must read) stay plain.

use super::Repository;
use crate::error::{Error, Result};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestoreRecord {
    pub backup_id: String,
    pub strategy: String,
    /// The database restored into (`target_database` in records written before 0.2).
    #[serde(alias = "target_database")]
    pub destination_database: String,
    pub finished_at: DateTime<Utc>,
    pub tables: usize,
    pub rows: u64,
    /// Logical (COPY text) bytes loaded.
    pub bytes: u64,
    pub seconds: f64,
}

/// Throughput assumed when the repository has no restore history.
pub const DEFAULT_RESTORE_BYTES_PER_SECOND: f64 = 40.0 * 1024.0 * 1024.0;

impl Repository {
    pub async fn record_restore(&self, record: &RestoreRecord) -> Result<()> {
        let key = format!(
            "restores/{}-{}.json",
            record.finished_at.format("%Y%m%d-%H%M%S%.3f"),
            record.backup_id
        );
        self.put_json(&key, record).await
    }

    /// Median bytes per second of the last ten measured restores, if any.
    pub async fn restore_throughput(&self) -> Result<Option<(f64, usize)>> {
        let objects = self
            .target()
            .list("restores/")
            .await
            .map_err(|e| e.at("restores/", "reading restore history"))?;
        let mut rates = Vec::new();
        for object in objects.iter().rev().take(10) {
            let Ok(bytes) = self.target().get(&object.key).await else {
                continue;
            };
            let Some(record) = self.open_record::<RestoreRecord>(&object.key, &bytes) else {
                continue;
            };
            if record.seconds > 0.0 && record.bytes > 0 {
                rates.push(record.bytes as f64 / record.seconds);
            }
        }
        if rates.is_empty() {
            return Ok(None);
        }
        rates.sort_by(f64::total_cmp);
        Ok(Some((rates[rates.len() / 2], rates.len())))
    }
}

/// One restore drill (`recovery drill`): what was restored where, how long each step took,
/// what the checks found, and whether the recovery time met the objective.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DrillRecord {
    /// `<started, %Y%m%d-%H%M%S>-<backup id>`.
    pub drill_id: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// `passed`, `failed` (a step, a check or a validator failed, or the RTO was missed) or
    /// `interrupted` (SIGINT/SIGTERM).
    pub outcome: DrillOutcome,
    pub backup_id: String,
    pub backup_name: String,
    /// The database the backup was taken of.
    pub database: String,
    /// The point in time restored: the backup's snapshot.
    pub point_in_time: DateTime<Utc>,
    /// How the backup was chosen: `latest`, its id, or `random within 30d`.
    pub chosen: String,
    pub scratch: Scratch,
    /// Every step in order with its duration: the scratch place, the restore's own steps
    /// (see `recovery plan`), the validators and the checks.
    pub steps: Vec<DrillStep>,
    /// The restore's steps alone (what `recovery plan` estimates from).
    pub restore_seconds: f64,
    /// The measured recovery time: every step from the start of the scratch place to the
    /// last check (what the RTO is compared with).
    pub recovery_seconds: f64,
    pub rto_seconds: f64,
    pub rto_met: bool,
    /// Age of the restored point when the drill started, and the database's RPO.
    pub point_age_seconds: i64,
    pub rpo_seconds: f64,
    pub rpo_met: bool,
    pub tables: usize,
    pub rows: u64,
    /// Logical (COPY text) bytes restored.
    pub bytes: u64,
    /// `rows` or `checksums`: what the restore's verification compared.
    pub verification: String,
    /// What the `[[validators]]` found in the restored rows.
    pub validators: Vec<super::manifest::ValidatorRun>,
    pub checks: Vec<CheckResult>,
    /// Why the drill failed, in words (null when it passed).
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DrillOutcome {
    Passed,
    Failed,
    Interrupted,
}

impl DrillOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            DrillOutcome::Passed => "passed",
            DrillOutcome::Failed => "failed",
            DrillOutcome::Interrupted => "interrupted",
        }
    }
}

/// What `schedule list`, the metrics and the status page need of one drill record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillSummary {
    pub drill_id: String,
    /// The database drilled (its name in PostgreSQL).
    pub database: String,
    pub backup_id: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub outcome: DrillOutcome,
    /// The measured recovery time, and the objective it was held against.
    pub recovery_seconds: f64,
    pub rto_seconds: f64,
    pub rto_met: bool,
}

impl DrillSummary {
    pub fn of(record: &DrillRecord) -> DrillSummary {
        DrillSummary {
            drill_id: record.drill_id.clone(),
            database: record.database.clone(),
            backup_id: record.backup_id.clone(),
            started_at: record.started_at,
            finished_at: record.finished_at,
            outcome: record.outcome,
            recovery_seconds: record.recovery_seconds,
            rto_seconds: record.rto_seconds,
            rto_met: record.rto_met,
        }
    }
}

/// Where a drill restored to, and whether it is gone again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scratch {
    /// `throwaway-cluster` (a local PostgreSQL the drill started) or `server` (`[drill] target_url`).
    pub kind: String,
    /// Host and port of the scratch server.
    pub server: String,
    /// The database restored into.
    pub database: String,
    /// The throwaway cluster's folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<String>,
    /// `--keep`: left in place (how to remove it is in `note`).
    pub kept: bool,
    /// Removed after the drill (false when kept, or when removing it failed: see `note`).
    pub removed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One step of a drill and how long it took.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DrillStep {
    pub name: String,
    pub seconds: f64,
}

/// One `[[drill.checks]]` query and what it gave.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckResult {
    pub name: String,
    pub sql: String,
    /// What it had to give, in words: `value 42`, `3 rows`, `no error`.
    pub expected: String,
    /// What it gave: the value, `N rows`, or null when it failed.
    pub got: Option<String>,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub seconds: f64,
}

impl Repository {
    pub async fn record_drill(&self, record: &DrillRecord) -> Result<()> {
        self.put_json(&format!("drills/{}.json", record.drill_id), record)
            .await
    }

    /// The drill recorded at `key` (a key listed under `drills/`); None when it is gone or
    /// cannot be read.
    pub async fn drill_record(&self, key: &str) -> Result<Option<DrillRecord>> {
        self.get_json(key).await
    }

    /// Past drills, oldest first (at most the newest `limit`); unreadable records are skipped.
    pub async fn drills(&self, limit: Option<usize>) -> Result<Vec<DrillRecord>> {
        let mut objects = self
            .target()
            .list("drills/")
            .await
            .map_err(|e| e.at("drills/", "reading drill history"))?;
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        let skip = limit.map_or(0, |n| objects.len().saturating_sub(n));
        let mut drills = Vec::new();
        for object in objects.iter().skip(skip) {
            match self.get_json::<DrillRecord>(&object.key).await {
                Ok(Some(record)) => drills.push(record),
                Ok(None) => tracing::warn!("drill record {} cannot be read; skipped", object.key),
                Err(e) => tracing::warn!("{e}"),
            }
        }
        Ok(drills)
    }
}

/// The outcome of the last `backup validate` of one backup.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ValidationRecord {
    pub backup_id: String,
    pub at: DateTime<Utc>,
    pub ok: bool,
    pub problems: usize,
    pub first_problem: Option<String>,
    /// Failed only because a validator found errors in the rows: every object is intact.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rows_suspect: bool,
}

/// Something an operator must hear about, such as a failed backup.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub at: DateTime<Utc>,
    /// `backup-failed`
    pub kind: String,
    pub detail: String,
    /// The database (its name in PostgreSQL) and backup type a failed backup was of; None
    /// in events recorded before they said so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_type: Option<super::manifest::BackupType>,
}

/// What the last validations of a backup, on every target that has one, say together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValidationState {
    /// Intact on at least one target.
    Passed,
    /// Failed on every target that validated it: the last failure, in words.
    Failed(String),
    /// Never validated (or no record can be read).
    Unknown,
}

impl Repository {
    /// The backup's validation verdict over this target and its fallbacks: one intact copy
    /// is enough to pass.
    pub async fn validation_state(&self, backup_id: &str) -> ValidationState {
        let key = format!("validations/{backup_id}.json");
        let mut state = ValidationState::Unknown;
        for target in std::iter::once(&self.target).chain(&self.fallbacks) {
            // No record, or one that cannot be read, is no verdict on that target.
            let Ok(bytes) = target.get(&key).await else {
                continue;
            };
            match self.open_record::<ValidationRecord>(&key, &bytes) {
                Some(record) if record.ok => return ValidationState::Passed,
                Some(record) => {
                    state = ValidationState::Failed(format!(
                        "failed validation on target '{}' at {}: {}",
                        target.name(),
                        record.at.format("%Y-%m-%d %H:%M UTC"),
                        record
                            .first_problem
                            .unwrap_or_else(|| "problems found".into())
                    ))
                }
                None => {}
            }
        }
        state
    }

    pub async fn record_validation(&self, record: &ValidationRecord) -> Result<()> {
        self.put_json(&format!("validations/{}.json", record.backup_id), record)
            .await
    }

    pub async fn last_validation(&self, backup_id: &str) -> Result<Option<ValidationRecord>> {
        self.get_json(&format!("validations/{backup_id}.json"))
            .await
    }

    pub async fn record_event(&self, event: &Event) -> Result<()> {
        self.put_json(
            &format!(
                "events/{}-{}.json",
                event.at.format("%Y%m%d-%H%M%S%.3f"),
                event.kind
            ),
            event,
        )
        .await
    }

    /// The most recent event, if any.
    pub async fn last_event(&self) -> Result<Option<Event>> {
        let objects = self
            .target()
            .list("events/")
            .await
            .map_err(|e| e.at("events/", "reading events"))?;
        match objects.last() {
            Some(object) => self.get_json(&object.key).await,
            None => Ok(None),
        }
    }

    /// Writes a record (sealed in an encrypted repository).
    pub(super) async fn put_json(&self, key: &str, value: &impl Serialize) -> Result<()> {
        let body = serde_json::to_vec_pretty(value)
            .map_err(|e| Error::Repository(format!("encoding {key}: {e}")))?;
        let body = match self.keyring() {
            Some(keyring) => keyring.seal(key, &body)?,
            None => body,
        };
        self.target()
            .put(key, Bytes::from(body))
            .await
            .map_err(|e| e.at(key, "recording history"))
    }

    /// Reads a record; None when there is none or it cannot be read.
    pub(super) async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>> {
        match self.target().get(key).await {
            Ok(bytes) => Ok(self.open_record(key, &bytes)),
            Err(crate::targets::TargetError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.at(key, "reading history")),
        }
    }

    /// A record as stored under `key`, opened and parsed; None (with a warning) when it does
    /// not open or parse.
    pub fn open_record<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
        stored: &[u8],
    ) -> Option<T> {
        let opened;
        let plain = match self.keyring() {
            Some(keyring) => match keyring.open(key, stored) {
                Ok(bytes) => {
                    opened = bytes;
                    &opened[..]
                }
                Err(why) => {
                    tracing::warn!("{key} cannot be read: {why}");
                    return None;
                }
            },
            None => stored,
        };
        serde_json::from_slice(plain)
            .inspect_err(|e| tracing::warn!("{key} cannot be read: {e}"))
            .ok()
    }
}
