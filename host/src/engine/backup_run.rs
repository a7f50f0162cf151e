//! What every kind of backup shares (`backup create` of a full or schema-only backup in
//! engine/backup.rs, of an incremental one in engine/incremental/capture.rs): its options,
//! what a stop leaves of it, and the clean-up after a failure.

use crate::config::IncrementalConfig;
use crate::error::Error;
use crate::plugin::validator::PluginValidator;
use crate::repository::Repository;
use crate::repository::gc::collect_garbage;
use crate::repository::lock::RepoLock;
use crate::repository::manifest::BackupType;
use chrono::{DateTime, Utc};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct BackupOptions {
    pub name: Option<String>,
    pub backup_type: BackupType,
    pub jobs: usize,
    pub compression_level: i32,
    pub pg_dump: Option<PathBuf>,
    /// Tables larger than about this are split into block ranges copied in parallel;
    /// default: total size / (4 × jobs), at least 64 MiB.
    pub split_bytes: Option<u64>,
    /// The `[[schedules]]` entry this backup is taken for (recorded in the manifest).
    pub schedule: Option<String>,
    /// How long the retention that governs this backup keeps it at least (its policy's
    /// `keep_within`, [`crate::engine::prune::retention_period`]); None: no such date.
    pub retain_for: Option<std::time::Duration>,
    /// The `[[validators]]` plugins that check the rows as they are copied.
    pub validators: Vec<Arc<PluginValidator>>,
    /// Change tracking (`[incremental]`): with it on, a full backup starts a chain; an
    /// incremental backup needs one.
    pub incremental: IncrementalConfig,
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            name: None,
            backup_type: BackupType::Full,
            jobs: super::default_jobs(),
            compression_level: 2,
            pg_dump: None,
            split_bytes: None,
            schedule: None,
            retain_for: None,
            validators: Vec::new(),
            incremental: IncrementalConfig::default(),
        }
    }
}

impl BackupOptions {
    /// When the backup created at `created_at` may go at the earliest (recorded in its
    /// manifest; S3 Object Lock locks its objects until then).
    pub fn retain_until(&self, created_at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let period = chrono::Duration::from_std(self.retain_for?).ok()?;
        created_at.checked_add_signed(period)
    }
}

/// Says what a stop left of backup `id`: nothing visible (no manifest is written after it).
pub(crate) fn stopped(id: &str) -> impl FnOnce(Error) -> Error + '_ {
    move |e| match e {
        Error::Interrupted { signal, state } if state.is_empty() => Error::Interrupted {
            signal,
            state: format!(
                "backup {id} was stopped before its manifest was written, so it is not listed and cannot be restored; no lock is left, and chunks it wrote are reclaimed by garbage collection"
            ),
        },
        e => e,
    }
}

/// After a failed backup, removes the chunks it wrote if no other backup is running.
pub(crate) async fn reclaim_after_failure(repo: &Repository, id: &str) {
    // Writes under way when the backup stopped finish first, so that none lands after the
    // collection has listed the chunks.
    crate::targets::settle(std::time::Duration::from_secs(5)).await;
    let Ok(lock) = RepoLock::exclusive(repo, &format!("clean-up after failed backup {id}")).await
    else {
        tracing::info!(
            "backup {id} failed; its chunks will be reclaimed by the next garbage collection"
        );
        return;
    };
    match collect_garbage(repo, &lock).await {
        Ok(report) => tracing::warn!(
            "backup {id} failed; removed {} chunks ({} bytes) it had written",
            report.chunks_deleted,
            report.bytes_freed
        ),
        Err(e) => tracing::warn!("backup {id} failed and its chunks could not be removed yet: {e}"),
    }
    let _ = lock.release().await;
}
