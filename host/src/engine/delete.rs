//! `backup delete`: remove a backup's manifest, then garbage-collect chunks no other backup uses.

use crate::error::{Error, Result};
use crate::repository::Repository;
use crate::repository::gc::{GcReport, collect_garbage};
use crate::repository::lock::RepoLock;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct DeleteReport {
    pub backup_id: String,
    pub name: String,
    pub chunks_deleted: u64,
    pub bytes_freed: u64,
    /// Chunks still used by other backups.
    pub chunks_kept: u64,
}

/// Deletes a backup. Without `force` it refuses and says how to proceed.
pub async fn delete(repo: &Repository, id_or_latest: &str, force: bool) -> Result<DeleteReport> {
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
    let lock = RepoLock::exclusive(repo, &format!("delete of backup {}", manifest.id)).await?;
    let result = async {
        repo.delete_manifest(&manifest.id).await?;
        collect_garbage(repo, &lock).await
    }
    .await;
    let released = lock.release().await;
    let GcReport {
        chunks_deleted,
        bytes_freed,
        chunks_kept,
    } = result?;
    released?;
    Ok(DeleteReport {
        backup_id: manifest.id,
        name: manifest.name,
        chunks_deleted,
        bytes_freed,
        chunks_kept,
    })
}
