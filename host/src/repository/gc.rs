//! Garbage collection: delete chunks that no backup references.
//!
//! Runs under the exclusive lock, so no backup is writing chunks meanwhile. Chunks left by an
//! interrupted backup (no manifest) are unreferenced and are reclaimed here. As a second line
//! of defence, the manifests are read after the chunks are listed (a chunk referenced by a
//! manifest that appeared meanwhile is kept), and the lock is checked to be still ours before
//! deleting. A damaged manifest keeps every chunk its text still names. An `append_only`
//! target is skipped: whatever is stored there stays.

use super::lock::RepoLock;
use super::{Repository, chunk_key};
use crate::error::{Error, Result};
use crate::targets::{ObjectInfo, is_valid_key};
use std::collections::HashSet;

#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct GcReport {
    pub chunks_deleted: u64,
    pub bytes_freed: u64,
    pub chunks_kept: u64,
}

/// The chunk keys every manifest (usable or damaged) refers to, leaving out backup `without`.
async fn referenced(repo: &Repository, without: Option<&str>) -> Result<HashSet<String>> {
    let catalog = repo.catalog().await?;
    // A damaged sealed manifest names no chunk that can be read out of it.
    if let Some(damaged) = catalog.damaged.first().filter(|_| repo.is_encrypted()) {
        return Err(Error::Refused(format!(
            "{}; in an encrypted repository the chunks of a damaged manifest cannot be told, so nothing is collected until it is repaired (`backup-cli backup sync` from a good copy) or deleted",
            damaged.error
        )));
    }
    let kept = |id: &str| without != Some(id);
    let mut keys: HashSet<String> = catalog
        .manifests
        .iter()
        .filter(|m| kept(&m.id))
        .flat_map(|m| m.chunks())
        .map(|c| chunk_key(&c.id))
        .collect();
    for damaged in catalog.damaged.iter().filter(|d| kept(&d.backup_id)) {
        keys.extend(damaged.mentioned_chunks.iter().map(|id| chunk_key(id)));
    }
    Ok(keys)
}

/// What garbage collection deletes on a repository's target: every stored chunk that no
/// manifest refers to.
pub struct GcPlan {
    pub doomed: Vec<ObjectInfo>,
    pub kept: u64,
}

impl GcPlan {
    /// The plan's figures, as a collection that carried it out reports them.
    pub fn report(&self) -> GcReport {
        GcReport {
            chunks_deleted: self.doomed.len() as u64,
            bytes_freed: self.doomed.iter().map(|o| o.size).sum(),
            chunks_kept: self.kept,
        }
    }
}

/// Plans a collection; `without`: as if that backup's manifest were already gone (what
/// deleting it would reclaim). Without the exclusive lock it is an estimate.
pub async fn plan_garbage(repo: &Repository, without: Option<&str>) -> Result<GcPlan> {
    let stored = repo
        .target()
        .list("chunks/")
        .await
        .map_err(|e| e.at("chunks/", "listing chunks for garbage collection"))?;
    if repo.target().append_only() {
        return Ok(GcPlan {
            doomed: Vec::new(),
            kept: stored.len() as u64,
        });
    }
    let referenced = referenced(repo, without).await?;
    let (kept, doomed): (Vec<ObjectInfo>, Vec<ObjectInfo>) = stored
        .into_iter()
        // Not an object this repository writes (a stray file): not ours to delete.
        .partition(|o| referenced.contains(&o.key) || !is_valid_key(&o.key));
    Ok(GcPlan {
        doomed,
        kept: kept.len() as u64,
    })
}

/// Deletes unreferenced chunks. The caller holds the exclusive lock.
pub async fn collect_garbage(repo: &Repository, lock: &RepoLock) -> Result<GcReport> {
    let plan = plan_garbage(repo, None).await?;
    if !lock.still_held().await {
        return Err(Error::Locked(
            "the exclusive lock was removed while garbage collection ran (`repository unlock --force`?); nothing was deleted, retry"
                .into(),
        ));
    }
    for object in &plan.doomed {
        repo.target()
            .delete(&object.key)
            .await
            .map_err(|e| e.at(&object.key, "garbage collection"))?;
    }
    Ok(plan.report())
}

#[cfg(test)]
mod tests {
    use super::super::{FORMAT_KEY, keys::KEYS_KEY, manifest_key};
    use super::*;
    use crate::targets::is_backup_data;

    /// What append-only targets and Object Lock protect is what a restore needs, by the
    /// repository's own names; bookkeeping is not.
    #[test]
    fn backup_data_is_what_the_repository_restores_from() {
        let chunk = chunk_key(&"ab".repeat(32));
        for key in [
            chunk.as_str(),
            &manifest_key("20261201-020000-abcd"),
            KEYS_KEY,
            FORMAT_KEY,
        ] {
            assert!(is_backup_data(key), "{key}");
        }
        for key in [
            "locks/exclusive.json",
            "pins/20261201-020000-abcd.json",
            "validations/20261201-020000-abcd.json",
        ] {
            assert!(!is_backup_data(key), "{key}");
        }
    }
}
