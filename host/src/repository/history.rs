//! Measured restores, kept in the repository (`restores/`) so recovery plans can estimate
//! durations from this site's own history instead of a guess.

use super::Repository;
use crate::error::{Error, Result};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestoreRecord {
    pub backup_id: String,
    pub strategy: String,
    pub target_database: String,
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
        let body = serde_json::to_vec_pretty(record)
            .map_err(|e| Error::Repository(format!("encoding {key}: {e}")))?;
        self.target()
            .put(&key, Bytes::from(body))
            .await
            .map_err(|e| Error::from_target(e, &key, "recording the restore duration"))
    }

    /// Median bytes per second of the last ten measured restores, if any.
    pub async fn restore_throughput(&self) -> Result<Option<(f64, usize)>> {
        let objects = self
            .target()
            .list("restores/")
            .await
            .map_err(|e| Error::from_target(e, "restores/", "reading restore history"))?;
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
