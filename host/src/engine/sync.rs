//! Copies backups between targets: after `backup create` to every target beyond the primary,
//! and on `backup sync` wherever a copy is missing or incomplete.
//!
//! A copy is made like a backup: chunks first (each checked against its SHA-256 before it is
//! written, so corruption never spreads), then `flush`, then the manifest. A copy interrupted
//! half-way is invisible on the destination until a later sync completes it.

use super::Progress;
use crate::error::{Error, Result};
use crate::repository::lock::RepoLock;
use crate::repository::manifest::Manifest;
use crate::repository::{Repository, backup_ids_on, chunk_key};
use crate::targets::Target;
use futures_util::{StreamExt, TryStreamExt};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// One backup copied to one target.
#[derive(Debug, Clone, Serialize)]
pub struct CopyReport {
    pub backup_id: String,
    pub from: String,
    pub to: String,
    pub chunks_copied: u64,
    pub bytes_copied: u64,
    pub chunks_present: u64,
}

/// The chunk keys present on a target.
pub async fn chunk_keys(target: &Arc<dyn Target>) -> Result<HashSet<String>> {
    Ok(target
        .list("chunks/")
        .await
        .map_err(|e| {
            Error::from_target(
                e,
                "chunks/",
                format!("listing chunks on target '{}'", target.name()),
            )
        })?
        .into_iter()
        .map(|o| o.key)
        .collect())
}

/// Copies one backup from `source` to `dest` (which must be open for writing), under a shared
/// lock on `dest` so its garbage collection cannot remove chunks the copy has just written.
pub async fn copy_backup(
    source: &Repository,
    dest: &Repository,
    manifest: &Manifest,
    jobs: usize,
    progress: &Progress,
) -> Result<CopyReport> {
    let lock = RepoLock::shared(dest, &manifest.id).await?;
    let result = copy_locked(source, dest, manifest, jobs, progress).await;
    let released = lock.release().await;
    let report = result?;
    released?;
    Ok(report)
}

async fn copy_locked(
    source: &Repository,
    dest: &Repository,
    manifest: &Manifest,
    jobs: usize,
    progress: &Progress,
) -> Result<CopyReport> {
    let present = chunk_keys(dest.target()).await?;
    let mut seen = HashSet::new();
    let missing: Vec<_> = manifest
        .chunks()
        .filter(|c| seen.insert(c.id.clone()))
        .filter(|c| !present.contains(&chunk_key(&c.id)))
        .cloned()
        .collect();
    let total: u64 = missing.iter().map(|c| c.stored).sum();
    let bar = progress.overall(&format!("copy to {}", dest.target().name()), total);
    let context = format!(
        "copying backup {} to target '{}'",
        manifest.id,
        dest.target().name()
    );
    let copied: Vec<u64> = futures_util::stream::iter(missing.iter())
        .map(|chunk| {
            let (bar, context) = (bar.clone(), context.as_str());
            async move {
                let size = source.copy_chunk(chunk, dest, context).await?;
                Progress::advance(&bar, size);
                Ok::<u64, Error>(size)
            }
        })
        .buffer_unordered(jobs.max(1))
        .try_collect()
        .await?;
    dest.write_manifest(manifest).await?;
    bar.finish_and_clear();
    Ok(CopyReport {
        backup_id: manifest.id.clone(),
        from: source.target().name().to_string(),
        to: dest.target().name().to_string(),
        chunks_copied: copied.len() as u64,
        bytes_copied: copied.iter().sum(),
        chunks_present: seen.len() as u64 - copied.len() as u64,
    })
}

/// Where one backup is kept.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Presence {
    /// The manifest and every chunk it references are there.
    Complete,
    /// The manifest is there but some chunks are missing.
    Incomplete,
}

/// What the targets hold: for each backup id, the targets with a copy and whether each copy is
/// complete, and the backup's manifest (read once per target, kept once).
#[derive(Default)]
pub struct Holdings {
    pub copies: BTreeMap<String, BTreeMap<String, Presence>>,
    pub manifests: BTreeMap<String, Manifest>,
    /// Targets that could not be listed, with why; the others are still reported.
    pub unreachable: Vec<String>,
}

pub async fn holdings(targets: &[Arc<dyn Target>]) -> Holdings {
    let mut out = Holdings::default();
    for target in targets {
        let listed = async {
            let ids = backup_ids_on(target).await?;
            let chunks = chunk_keys(target).await?;
            let repo = Repository::open(target.clone()).await?;
            let mut found = Vec::new();
            for id in ids {
                let manifest = repo.read_manifest(&id).await?;
                let complete = manifest
                    .chunks()
                    .all(|c| chunks.contains(&chunk_key(&c.id)));
                let presence = if complete {
                    Presence::Complete
                } else {
                    Presence::Incomplete
                };
                found.push((manifest, presence));
            }
            Ok::<_, Error>(found)
        }
        .await;
        match listed {
            Ok(found) => {
                for (manifest, presence) in found {
                    out.copies
                        .entry(manifest.id.clone())
                        .or_default()
                        .insert(target.name().to_string(), presence);
                    out.manifests.entry(manifest.id.clone()).or_insert(manifest);
                }
            }
            Err(e) => out
                .unreachable
                .push(format!("target '{}': {e}", target.name())),
        }
    }
    out
}

/// Copies every backup to every target in `targets` that lacks a complete copy, reading each
/// from the first target holding a complete one.
pub async fn sync(
    targets: &[Arc<dyn Target>],
    jobs: usize,
    progress: &Progress,
) -> Result<Vec<CopyReport>> {
    let held = holdings(targets).await;
    if let Some(first) = held.unreachable.first() {
        return Err(Error::Repository(format!(
            "cannot sync while a target is unreachable: {first}"
        )));
    }
    let mut reports = Vec::new();
    for (id, copies) in &held.copies {
        let Some(source_target) = targets
            .iter()
            .find(|t| copies.get(t.name()) == Some(&Presence::Complete))
        else {
            tracing::warn!("backup {id} has no complete copy on any target; skipping it");
            continue;
        };
        let others: Vec<Arc<dyn Target>> = targets
            .iter()
            .filter(|t| t.name() != source_target.name())
            .cloned()
            .collect();
        let source = Repository::open(source_target.clone())
            .await?
            .with_fallbacks(others);
        let Some(manifest) = held.manifests.get(id) else {
            continue;
        };
        for target in targets {
            if copies.get(target.name()) == Some(&Presence::Complete) {
                continue;
            }
            let dest = Repository::open_or_init(target.clone()).await?;
            reports.push(copy_backup(&source, &dest, manifest, jobs, progress).await?);
        }
    }
    Ok(reports)
}
