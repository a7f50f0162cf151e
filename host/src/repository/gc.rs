//! Garbage collection: delete chunks that no visible backup references.
//!
//! Runs under the exclusive lock, so no backup is writing chunks meanwhile. Chunks left by an
//! interrupted backup (no manifest) are unreferenced and are reclaimed here.

use super::lock::RepoLock;
use super::{Repository, chunk_key};
use crate::error::{Error, Result};
use std::collections::HashSet;

#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct GcReport {
    pub chunks_deleted: u64,
    pub bytes_freed: u64,
    pub chunks_kept: u64,
}

/// Deletes unreferenced chunks. The caller holds the exclusive lock.
pub async fn collect_garbage(repo: &Repository, _lock: &RepoLock) -> Result<GcReport> {
    let mut referenced = HashSet::new();
    for manifest in repo.manifests().await? {
        referenced.extend(manifest.chunks().map(|c| chunk_key(&c.id)));
    }
    let stored =
        repo.target().list("chunks/").await.map_err(|e| {
            Error::from_target(e, "chunks/", "listing chunks for garbage collection")
        })?;
    let mut report = GcReport::default();
    for object in stored {
        if referenced.contains(&object.key) {
            report.chunks_kept += 1;
            continue;
        }
        repo.target()
            .delete(&object.key)
            .await
            .map_err(|e| Error::from_target(e, &object.key, "garbage collection"))?;
        report.chunks_deleted += 1;
        report.bytes_freed += object.size;
    }
    Ok(report)
}
