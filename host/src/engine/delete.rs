//! `backup delete`: remove a backup's manifest from the targets chosen (every target that
//! holds it, or `--target` ones), then garbage-collect the chunks no other backup uses there.
//! Removing the last copies everywhere, with more than one target, takes `--all-targets`; a
//! pinned backup (`backup pin`) is refused until it is unpinned. Copies on `append_only`
//! targets are left where they are and said to be (a maintenance host deletes them with
//! `--allow-delete`); a copy under S3 Object Lock refuses the deletion until its retention
//! ends.
//! First a [`DeletePlan`] (what goes from where, what garbage collection will reclaim; all
//! that `--dry-run` prints), then its execution under each target's exclusive lock.

use crate::error::{Error, Result};
use crate::repository::gc::{GcReport, collect_garbage, plan_garbage};
use crate::repository::id::is_valid_backup_id;
use crate::repository::latest::{LATEST, LATEST_SCHEMA};
use crate::repository::lock::RepoLock;
use crate::repository::signing::RetiredBy;
use crate::repository::{Repository, backup_ids_on, manifest_key};
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
    /// The targets that still hold a copy.
    #[serde(default)]
    pub kept_on: Vec<String>,
    /// Of those, the `append_only` ones (this host does not delete there).
    #[serde(default)]
    pub append_only_kept: Vec<String>,
}

/// Which copies a deletion removes.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// Only the copies on these targets (`--target`); empty: on every target holding one.
    pub only: Vec<String>,
    /// Consent to removing the last copies on every target (`--all-targets`).
    pub all_targets: bool,
}

/// What deleting a backup will do, worked out before anything is changed.
#[derive(Clone, Serialize)]
pub struct DeletePlan {
    pub backup_id: String,
    pub name: String,
    /// The backup as people recognise it (name, type, creation time, size).
    pub description: String,
    /// Per target it is deleted from, what garbage collection then reclaims there (chunks
    /// only this backup used, and any left by interrupted backups): an estimate, since
    /// backups may run until the deletion takes the target's lock.
    pub reclaim: Vec<TargetReclaim>,
    /// The targets that keep their copy.
    pub kept_on: Vec<String>,
    /// Of those, the `append_only` ones (this host does not delete there).
    pub append_only_kept: Vec<String>,
    #[serde(skip)]
    chosen: Vec<Arc<dyn Target>>,
}

/// What garbage collection reclaims (or would) on one target.
#[derive(Debug, Clone, Serialize)]
pub struct TargetReclaim {
    pub target: String,
    #[serde(flatten)]
    pub gc: GcReport,
}

/// Plans the deletion of a backup (`latest`: of `database`): which copies go (refused, naming
/// the way forward, when that would remove its last copies from more than one configured
/// target without `scope.all_targets`) and what each target then reclaims.
pub async fn plan(
    targets: &[Arc<dyn Target>],
    id_or_latest: &str,
    database: &str,
    scope: &Scope,
) -> Result<DeletePlan> {
    let repo = Repository::open_for_reading(targets).await?;
    let (id, name, description) = match repo.resolve(id_or_latest, database).await {
        Ok(manifest) => (
            manifest.id.clone(),
            manifest.name.clone(),
            format!(
                "'{}', {}, created {}, {} tables, {} rows",
                manifest.name,
                manifest.backup_type,
                manifest.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
                manifest.tables.len(),
                manifest.rows()
            ),
        ),
        // A damaged manifest can still be removed by its id; the chunks only it named are
        // then reclaimed like any other backup's.
        Err(Error::ChecksumMismatch { detail, .. })
            if ![LATEST, LATEST_SCHEMA].contains(&id_or_latest)
                && is_valid_backup_id(id_or_latest) =>
        {
            (id_or_latest.to_string(), String::new(), detail)
        }
        Err(e) => return Err(e),
    };
    // A pin keeps a backup whatever deletes it: retention, or an operator by hand.
    if let Some(pin) = repo
        .pin_of(&id)
        .await?
        .filter(|p| p.is_active(chrono::Utc::now()))
    {
        return Err(Error::Refused(format!(
            "backup {id} is pinned ({}{}); nothing was deleted. Unpin it first: backup-cli backup unpin {id}",
            pin.until.map_or("until unpinned".to_string(), |u| format!(
                "until {}",
                u.format("%Y-%m-%d %H:%M UTC")
            )),
            pin.reason.map(|r| format!(": {r}")).unwrap_or_default()
        )));
    }
    let mut holders = Vec::new();
    for target in targets {
        if backup_ids_on(target).await?.contains(&id) {
            holders.push(target.clone());
        }
    }
    // Another delete (a concurrent run) removed it since its manifest was read above.
    if holders.is_empty() {
        return Err(Error::BackupNotFound(id));
    }
    let names = |list: &[Arc<dyn Target>]| {
        list.iter()
            .map(|t| t.name().to_string())
            .collect::<Vec<_>>()
    };
    for name in &scope.only {
        if !targets.iter().any(|t| t.name() == name) {
            return Err(Error::Config(format!(
                "no target named '{name}'; the configured targets are: {}",
                names(targets).join(", ")
            )));
        }
        if !holders.iter().any(|t| t.name() == name) {
            return Err(Error::Refused(format!(
                "backup {id} has no copy on target '{name}' (it is on: {}); nothing was deleted",
                names(&holders).join(", ")
            )));
        }
    }
    let in_scope: Vec<Arc<dyn Target>> = holders
        .iter()
        .filter(|t| scope.only.is_empty() || scope.only.iter().any(|n| n == t.name()))
        .cloned()
        .collect();
    let (append_only, chosen): (Vec<_>, Vec<_>) =
        in_scope.into_iter().partition(|t| t.append_only());
    if chosen.is_empty() {
        return Err(Error::Refused(format!(
            "backup {id} is kept on append_only target{} {}: this host does not delete there; nothing was deleted. \
             Delete it from a maintenance host that holds delete rights: backup-cli --allow-delete backup delete {id} --force",
            if append_only.len() == 1 { "" } else { "s" },
            names(&append_only).join(", ")
        )));
    }
    let now = chrono::Utc::now();
    for target in &chosen {
        let key = manifest_key(&id);
        let retention = target.retention(&key).await.map_err(|e| {
            e.at(
                &key,
                format!("reading the Object Lock retention of backup {id}"),
            )
        })?;
        if let Some(lock) = retention.filter(|r| r.holds_at(now)) {
            return Err(Error::Refused(format!(
                "backup {id} is locked on target '{}' by S3 Object Lock ({} mode) until {}: its copy there cannot be deleted before then; nothing was deleted{}",
                target.name(),
                lock.mode.to_ascii_lowercase(),
                lock.until.format("%Y-%m-%d %H:%M:%S UTC"),
                if targets.len() > 1 {
                    format!(
                        ". To delete the other copies: backup-cli backup delete {id} --force --target NAME"
                    )
                } else {
                    String::new()
                }
            )));
        }
    }
    if targets.len() > 1 && chosen.len() == holders.len() && !scope.all_targets {
        return Err(Error::Refused(format!(
            "backup {id} is kept on {}: deleting {} would leave no copy on any target. \
             To delete one target's copy: backup-cli backup delete {id} --force --target NAME; \
             to delete every copy: add --all-targets",
            names(&holders).join(", "),
            if chosen.len() == 1 {
                "it there"
            } else {
                "all of them"
            },
        )));
    }
    let mut reclaim = Vec::new();
    for target in &chosen {
        let repo = Repository::open(target.clone()).await?;
        reclaim.push(TargetReclaim {
            target: target.name().to_string(),
            gc: plan_garbage(&repo, Some(&id)).await?.report(),
        });
    }
    Ok(DeletePlan {
        backup_id: id,
        name,
        description,
        reclaim,
        kept_on: holders
            .iter()
            .filter(|h| !chosen.iter().any(|c| c.name() == h.name()))
            .map(|t| t.name().to_string())
            .collect(),
        append_only_kept: names(&append_only),
        chosen,
    })
}

/// Carries out `plan`: on each chosen target, under its exclusive lock, the manifest goes,
/// then garbage collection. Without `force` it refuses and says how to proceed.
pub async fn execute(plan: &DeletePlan, force: bool) -> Result<DeleteReport> {
    let id = &plan.backup_id;
    if !force {
        return Err(Error::Refused(format!(
            "refusing to delete backup {id} ({}) without --force: deletion is permanent.\n  \
             To see what it removes: backup-cli backup delete {id} --dry-run\n  \
             To delete it: backup-cli backup delete {id} --force",
            plan.description
        )));
    }
    let mut report = DeleteReport {
        backup_id: id.clone(),
        name: plan.name.clone(),
        chunks_deleted: 0,
        bytes_freed: 0,
        chunks_kept: 0,
        targets: Vec::new(),
        kept_on: plan.kept_on.clone(),
        append_only_kept: plan.append_only_kept.clone(),
    };
    for target in &plan.chosen {
        let repo = Repository::open(target.clone()).await?;
        let lock = RepoLock::exclusive(&repo, &format!("delete of backup {id}")).await?;
        let result = async {
            let why = RetiredBy::delete(if plan.kept_on.is_empty() {
                "every copy".into()
            } else {
                format!("kept on {}", plan.kept_on.join(", "))
            });
            repo.delete_manifest(id, &why).await?;
            collect_garbage(&repo, &lock).await
        }
        .await;
        let GcReport {
            chunks_deleted,
            bytes_freed,
            chunks_kept,
        } = lock.release_with(result).await?;
        report.chunks_deleted += chunks_deleted;
        report.bytes_freed += bytes_freed;
        report.chunks_kept += chunks_kept;
        report.targets.push(target.name().to_string());
    }
    Ok(report)
}
