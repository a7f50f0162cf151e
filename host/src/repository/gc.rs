//! Garbage collection: delete chunks that no backup references.
//!
//! Runs under the exclusive lock, so no backup is writing chunks meanwhile. Chunks left by an
//! interrupted backup (no manifest) are unreferenced and are reclaimed here. As a second line
//! of defence, the manifests are read after the chunks are listed (a chunk referenced by a
//! manifest that appeared meanwhile is kept), and the lock is checked to be still ours before
//! deleting. A damaged manifest keeps every chunk its text still names.

use super::lock::RepoLock;
use super::{Repository, chunk_key};
use crate::error::{Error, Result};
use crate::targets::is_valid_key;
use std::collections::HashSet;

#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct GcReport {
    pub chunks_deleted: u64,
    pub bytes_freed: u64,
    pub chunks_kept: u64,
}

/// The chunk keys every manifest (usable or damaged) refers to.
async fn referenced(repo: &Repository) -> Result<HashSet<String>> {
    let catalog = repo.catalog().await?;
    let mut keys: HashSet<String> = catalog
        .manifests
        .iter()
        .flat_map(|m| m.chunks())
        .map(|c| chunk_key(&c.id))
        .collect();
    for damaged in &catalog.damaged {
        keys.extend(damaged.mentioned_chunks.iter().map(|id| chunk_key(id)));
    }
    Ok(keys)
}

/// Deletes unreferenced chunks. The caller holds the exclusive lock.
pub async fn collect_garbage(repo: &Repository, lock: &RepoLock) -> Result<GcReport> {
    let stored = repo
        .target()
        .list("chunks/")
        .await
        .map_err(|e| e.at("chunks/", "listing chunks for garbage collection"))?;
    let referenced = referenced(repo).await?;
    if !lock.still_held().await {
        return Err(Error::Locked(
            "the exclusive lock was removed while garbage collection ran (`repository unlock --force`?); nothing was deleted, retry"
                .into(),
        ));
    }
    let mut report = GcReport::default();
    for object in stored {
        // Not an object this repository writes (a stray file): not ours to delete.
        if referenced.contains(&object.key) || !is_valid_key(&object.key) {
            report.chunks_kept += 1;
            continue;
        }
        repo.target()
            .delete(&object.key)
            .await
            .map_err(|e| e.at(&object.key, "garbage collection"))?;
        report.chunks_deleted += 1;
        report.bytes_freed += object.size;
    }
    Ok(report)
}
