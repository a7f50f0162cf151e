//! `backup delete`: remove a backup's manifest from every target that holds it, then
//! garbage-collect the chunks no other backup uses there.

use crate::error::{Error, Result};
use crate::repository::gc::{GcReport, collect_garbage};
use crate::repository::lock::RepoLock;
use crate::repository::{Repository, backup_ids_on};
use crate::targets::Target;
use serde::Serialize;
use std::sync::Arc;

#[derive(Debug, Clone, Serialize)]
pub struct DeleteReport {
    pub backup_id: String,
    pub name: String,
    pub chunks_deleted: u64,
    pub bytes_freed: u64,
    /// Chunks still used by other backups.
    pub chunks_kept: u64,
    /// The targets it was deleted from.
    pub targets: Vec<String>,
}

/// Deletes a backup. Without `force` it refuses and says how to proceed.
pub async fn delete(
    targets: &[Arc<dyn Target>],
    id_or_latest: &str,
    force: bool,
) -> Result<DeleteReport> {
    let repo = Repository::open_for_reading(targets).await?;
    let manifest = repo.resolve(id_or_latest).await?;
    if !force {
        return Err(Error::Refused(format!(
            "refusing to delete backup {} ('{}', {}, created {}, {} tables, {} rows) without --force: deletion is permanent.\n  \
             To delete it: backup-cli backup delete {} --force",
            manifest.id,
            manifest.name,
            manifest.backup_type,
            manifest.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
            manifest.tables.len(),
            manifest.rows(),
            manifest.id
        )));
    }
    let mut report = DeleteReport {
        backup_id: manifest.id.clone(),
        name: manifest.name.clone(),
        chunks_deleted: 0,
        bytes_freed: 0,
        chunks_kept: 0,
        targets: Vec::new(),
    };
    for target in targets {
        if !backup_ids_on(target).await?.contains(&manifest.id) {
            continue;
        }
        let repo = Repository::open(target.clone()).await?;
        let lock = RepoLock::exclusive(&repo, &format!("delete of backup {}", manifest.id)).await?;
        let result = async {
            repo.delete_manifest(&manifest.id).await?;
            collect_garbage(&repo, &lock).await
        }
        .await;
        let released = lock.release().await;
        let GcReport {
            chunks_deleted,
            bytes_freed,
            chunks_kept,
        } = result?;
        released?;
        report.chunks_deleted += chunks_deleted;
        report.bytes_freed += bytes_freed;
        report.chunks_kept += chunks_kept;
        report.targets.push(target.name().to_string());
    }
    Ok(report)
}
