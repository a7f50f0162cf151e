//! What happened to the repository, kept in it: measured restores (`restores/`, so recovery
//! plans estimate from this site's own history), the last validation of each backup
//! (`validations/`) and failed backup attempts (`events/`), which `monitor health` reads.

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
            let Ok(record) = serde_json::from_slice::<RestoreRecord>(&bytes) else {
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

/// The outcome of the last `backup validate` of one backup.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ValidationRecord {
    pub backup_id: String,
    pub at: DateTime<Utc>,
    pub ok: bool,
    pub problems: usize,
    pub first_problem: Option<String>,
}

/// Something an operator must hear about, such as a failed backup.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub at: DateTime<Utc>,
    /// `backup-failed`
    pub kind: String,
    pub detail: String,
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
            match serde_json::from_slice::<ValidationRecord>(&bytes) {
                Ok(record) if record.ok => return ValidationState::Passed,
                Ok(record) => {
                    state = ValidationState::Failed(format!(
                        "failed validation on target '{}' at {}: {}",
                        target.name(),
                        record.at.format("%Y-%m-%d %H:%M UTC"),
                        record
                            .first_problem
                            .unwrap_or_else(|| "problems found".into())
                    ))
                }
                Err(_) => {}
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

    pub(super) async fn put_json(&self, key: &str, value: &impl Serialize) -> Result<()> {
        let body = serde_json::to_vec_pretty(value)
            .map_err(|e| Error::Repository(format!("encoding {key}: {e}")))?;
        self.target()
            .put(key, Bytes::from(body))
            .await
            .map_err(|e| e.at(key, "recording history"))
    }

    pub(super) async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>> {
        match self.target().get(key).await {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
            Err(crate::targets::TargetError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.at(key, "reading history")),
        }
    }
}
