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
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// One backup copied to one target.
#[derive(Debug, Clone, Serialize)]
pub struct CopyReport {
    pub backup_id: String,
    pub from: String,
    pub to: String,
    /// Chunks written because they were missing on the destination.
    pub chunks_copied: u64,
    /// Chunks written over a damaged copy on the destination (wrong size or content).
    #[serde(default)]
    pub chunks_rewritten: u64,
    pub bytes_copied: u64,
    /// Chunks already on the destination and relied on (checked as `verified` says).
    pub chunks_present: u64,
    /// Whether the chunks relied on were read back and hashed (else their listed size
    /// was checked).
    #[serde(default)]
    pub verified: bool,
}

/// Copies one backup from `source` to `dest` (which must be open for writing), under a shared
/// lock on `dest` so its garbage collection cannot remove chunks the copy has just written.
/// A chunk already on `dest` is relied on only with the size the manifest records, and with
/// `verify` only once read back and hashed; anything else is (re)written.
pub async fn copy_backup(
    source: &Repository,
    dest: &Repository,
    manifest: &Manifest,
    jobs: usize,
    verify: bool,
    progress: &Progress,
) -> Result<CopyReport> {
    let lock = RepoLock::shared(dest, &manifest.id).await?;
    let result = copy_locked(source, dest, manifest, jobs, verify, progress).await;
    lock.release_with(result).await
}

/// What became of one chunk of a copy.
enum Outcome {
    Present,
    Copied(u64),
    Rewritten(u64),
}

async fn copy_locked(
    source: &Repository,
    dest: &Repository,
    manifest: &Manifest,
    jobs: usize,
    verify: bool,
    progress: &Progress,
) -> Result<CopyReport> {
    // The copy's chunks are stored (and locked, on S3 Object Lock) until the backup's date.
    let dest = &dest.clone().retaining(manifest.retain_until);
    let to = dest.target().name().to_string();
    let sizes: HashMap<String, u64> = dest
        .target()
        .list("chunks/")
        .await
        .map_err(|e| e.at("chunks/", format!("listing chunks on target '{to}'")))?
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    let mut seen = HashSet::new();
    let unique: Vec<_> = manifest
        .chunks()
        .filter(|c| seen.insert(c.id.clone()))
        .cloned()
        .collect();
    let total: u64 = unique.iter().map(|c| c.stored).sum();
    let bar = progress.overall(&format!("copy to {to}"), total);
    let context = format!("copying backup {} to target '{to}'", manifest.id);
    let outcomes: Vec<Outcome> = futures_util::stream::iter(unique.iter())
        .map(|chunk| {
            let (bar, context, sizes) = (bar.clone(), context.as_str(), &sizes);
            async move {
                let key = chunk_key(&chunk.id);
                let sound = match sizes.get(&key) {
                    None => None,
                    Some(&size) if size != chunk.stored => Some(false),
                    Some(_) if !verify => Some(true),
                    Some(_) => Some(match dest.target().get(&key).await {
                        Ok(stored) => {
                            let (key, chunk, context) =
                                (key.clone(), chunk.clone(), context.to_string());
                            let check = dest.chunk_check();
                            tokio::task::spawn_blocking(move || {
                                check.check(&key, &chunk, &stored, &context).is_ok()
                            })
                            .await
                            .map_err(|e| {
                                Error::Repository(format!("chunk check worker failed: {e}"))
                            })?
                        }
                        Err(_) => false,
                    }),
                };
                Progress::advance(&bar, chunk.stored);
                Ok::<Outcome, Error>(match sound {
                    Some(true) => Outcome::Present,
                    None => Outcome::Copied(source.copy_chunk(chunk, dest, context).await?),
                    // An append-only target keeps what it holds: a damaged chunk there is
                    // said, not silently left as if rewritten.
                    Some(false) if dest.target().append_only() => {
                        return Err(Error::Refused(format!(
                            "chunk {key} on append_only target '{}' is damaged or incomplete and this host does not overwrite there; rewrite it from a maintenance host: backup-cli --allow-delete backup sync",
                            dest.target().name()
                        )));
                    }
                    Some(false) => {
                        Outcome::Rewritten(source.copy_chunk(chunk, dest, context).await?)
                    }
                })
            }
        })
        .buffer_unordered(jobs.max(1))
        .try_collect()
        .await?;
    dest.write_manifest(manifest).await?;
    bar.finish_and_clear();
    let mut report = CopyReport {
        backup_id: manifest.id.clone(),
        from: source.target().name().to_string(),
        to,
        chunks_copied: 0,
        chunks_rewritten: 0,
        bytes_copied: 0,
        chunks_present: 0,
        verified: verify,
    };
    for outcome in outcomes {
        match outcome {
            Outcome::Present => report.chunks_present += 1,
            Outcome::Copied(size) => {
                report.chunks_copied += 1;
                report.bytes_copied += size;
            }
            Outcome::Rewritten(size) => {
                report.chunks_rewritten += 1;
                report.bytes_copied += size;
            }
        }
    }
    Ok(report)
}

/// Where one backup is kept.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Presence {
    /// The manifest and every chunk it references are there (as far as it was checked).
    Complete,
    /// The manifest is there but some chunks are missing.
    Incomplete,
    /// The manifest or a chunk is there but wrong: a size other than the manifest records,
    /// content that does not match its SHA-256, or a manifest that is not valid JSON.
    Damaged,
}

/// How far [`holdings`] trusts what a target lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scrutiny {
    /// Every chunk is listed with the stored size its manifest records: one listing per
    /// target, nothing read. Catches missing and truncated or replaced-by-other-size chunks.
    Listing,
    /// The listing check, and this many chunks of the target's newest backup read and hashed
    /// (health's spot check: an overwritten repository fails it at once, and the cost does
    /// not grow with the number of backups).
    Sample(usize),
    /// The listing check, and every chunk read and hashed (`--verify`).
    Full,
}

/// What the targets hold: for each backup id, the targets with a copy and whether each copy is
/// complete, and the backup's manifest (read once per target, kept once).
#[derive(Default)]
pub struct Holdings {
    pub copies: BTreeMap<String, BTreeMap<String, Presence>>,
    pub manifests: BTreeMap<String, Manifest>,
    /// Per backup id and target, the first problem of a copy that is not complete.
    pub problems: BTreeMap<String, BTreeMap<String, String>>,
    /// Targets that could not be listed (name: why); the others are still reported.
    pub unreachable: BTreeMap<String, String>,
    /// Reachable targets that hold no repository yet (sync initialises them).
    pub empty: Vec<String>,
    /// Per target, the chunk keys found damaged there (sync rewrites them).
    pub damaged_chunks: BTreeMap<String, HashSet<String>>,
}

impl Holdings {
    /// The targets holding a complete copy of `id`, in the order of `targets`.
    pub fn complete_on<'a>(&self, id: &str, targets: &'a [Arc<dyn Target>]) -> Vec<&'a str> {
        let copies = self.copies.get(id);
        targets
            .iter()
            .map(|t| t.name())
            .filter(|name| copies.and_then(|c| c.get(*name)) == Some(&Presence::Complete))
            .collect()
    }

    fn record(&mut self, id: &str, target: &str, presence: Presence, problem: Option<String>) {
        self.copies
            .entry(id.to_string())
            .or_default()
            .insert(target.to_string(), presence);
        if let Some(problem) = problem {
            self.problems
                .entry(id.to_string())
                .or_default()
                .insert(target.to_string(), problem);
        }
    }
}

/// What the targets hold, each checked as deeply as `scrutiny` says for its name.
pub async fn holdings(
    targets: &[Arc<dyn Target>],
    scrutiny: impl Fn(&str) -> Scrutiny,
) -> Holdings {
    let mut out = Holdings::default();
    for target in targets {
        if let Err(e) = target_holdings(target, scrutiny(target.name()), &mut out).await {
            match e {
                Error::NoRepository { .. } => out.empty.push(target.name().to_string()),
                e => {
                    out.unreachable
                        .insert(target.name().to_string(), e.to_string());
                }
            }
        }
    }
    out
}

async fn target_holdings(
    target: &Arc<dyn Target>,
    scrutiny: Scrutiny,
    out: &mut Holdings,
) -> Result<()> {
    let repo = Repository::open(target.clone()).await?;
    let ids = backup_ids_on(target).await?;
    let sizes: BTreeMap<String, u64> = target
        .list("chunks/")
        .await
        .map_err(|e| {
            e.at(
                "chunks/",
                format!("listing chunks on target '{}'", target.name()),
            )
        })?
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    let name = target.name().to_string();
    // Ids sort by creation time: the last is the newest backup here.
    let newest = ids.last().cloned();
    // Chunks already read on this target: shared chunks are hashed once.
    let mut read: BTreeMap<String, Option<String>> = BTreeMap::new();
    for id in ids {
        let manifest = match repo.read_manifest(&id).await {
            Ok(manifest) => manifest,
            Err(e @ Error::ChecksumMismatch { .. }) => {
                out.record(&id, &name, Presence::Damaged, Some(e.to_string()));
                continue;
            }
            Err(Error::BackupNotFound(_)) => continue, // deleted since the listing
            Err(e) => return Err(e),
        };
        let mut presence = Presence::Complete;
        let mut problem = None;
        let mut seen = HashSet::new();
        let mut to_read = Vec::new();
        for chunk in manifest.chunks().filter(|c| seen.insert(c.id.clone())) {
            let key = chunk_key(&chunk.id);
            match sizes.get(&key) {
                None => {
                    if presence == Presence::Complete {
                        presence = Presence::Incomplete;
                        problem = Some(format!(
                            "Backup file not found: {key} (backup {id}, target '{name}')"
                        ));
                    }
                }
                Some(&size) if size != chunk.stored => {
                    presence = Presence::Damaged;
                    problem.get_or_insert_with(|| format!(
                        "Checksum verification failed: {key} (backup {id}, target '{name}': {size} bytes stored, the manifest records {})",
                        chunk.stored
                    ));
                    out.damaged_chunks
                        .entry(name.clone())
                        .or_default()
                        .insert(key);
                }
                Some(_) => to_read.push(chunk.clone()),
            }
        }
        let wanted = match scrutiny {
            Scrutiny::Listing => 0,
            Scrutiny::Sample(n) if newest.as_ref() == Some(&id) => n,
            Scrutiny::Sample(_) => 0,
            Scrutiny::Full => usize::MAX,
        };
        if wanted < to_read.len() {
            fastrand::shuffle(&mut to_read);
            to_read.truncate(wanted);
        }
        for chunk in to_read {
            let key = chunk_key(&chunk.id);
            let verdict = match read.get(&key) {
                Some(verdict) => verdict.clone(),
                None => {
                    let context = format!("backup {id}, target '{name}'");
                    let verdict = match target.get(&key).await {
                        Ok(stored) => {
                            let (key, chunk) = (key.clone(), chunk.clone());
                            let check = repo.chunk_check();
                            tokio::task::spawn_blocking(move || {
                                check.check(&key, &chunk, &stored, &context).err()
                            })
                            .await
                            .map_err(|e| {
                                Error::Repository(format!("chunk check worker failed: {e}"))
                            })?
                            .map(|e| e.to_string())
                        }
                        Err(e) => Some(e.at(&key, context).to_string()),
                    };
                    read.insert(key.clone(), verdict.clone());
                    verdict
                }
            };
            if let Some(why) = verdict {
                presence = Presence::Damaged;
                problem.get_or_insert(why);
                out.damaged_chunks
                    .entry(name.clone())
                    .or_default()
                    .insert(key);
            }
        }
        out.record(&id, &name, presence, problem);
        out.manifests.entry(manifest.id.clone()).or_insert(manifest);
    }
    Ok(())
}

/// Copies every backup to every target in `targets` that lacks a complete copy, reading each
/// from the first target holding a complete one, and initialises targets that hold no
/// repository yet. Copies are checked by their listing (sizes); a target found wanting (a
/// copy missing, incomplete or damaged) is suspect, and on it, as everywhere with `verify`,
/// every chunk is read back and hashed before it is relied on, and damaged ones rewritten.
pub async fn sync(
    targets: &[Arc<dyn Target>],
    jobs: usize,
    verify: bool,
    progress: &Progress,
) -> Result<Vec<CopyReport>> {
    let first = holdings(targets, |_| {
        if verify {
            Scrutiny::Full
        } else {
            Scrutiny::Listing
        }
    })
    .await;
    if let Some((name, why)) = first.unreachable.iter().next() {
        return Err(Error::Repository(format!(
            "cannot sync while a target is unreachable: target '{name}': {why}"
        )));
    }
    let suspected: HashSet<String> = targets
        .iter()
        .map(|t| t.name().to_string())
        .filter(|name| {
            first.empty.contains(name)
                || first
                    .copies
                    .values()
                    .any(|copies| copies.get(name) != Some(&Presence::Complete))
        })
        .collect();
    let held = if verify || suspected.is_empty() {
        first
    } else {
        holdings(targets, |name| {
            if suspected.contains(name) {
                Scrutiny::Full
            } else {
                Scrutiny::Listing
            }
        })
        .await
    };
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
            let dest = Repository::open_or_init_copy(target.clone(), &source).await?;
            let check = verify || suspected.contains(target.name());
            reports.push(copy_backup(&source, &dest, manifest, jobs, check, progress).await?);
        }
    }
    Ok(reports)
}
