//! `backup validate`: re-read every object of a backup and prove it restorable.
//!
//! The reading and checking is the repository's [`Repository::verify`] (a restore runs it
//! too); this adds the recovery-point objective, the earlier backups of an incremental's
//! chain, records the result, and judges each target's copy on its own.

use crate::config::Objectives;
use crate::engine::Progress;
use crate::engine::recovery::chain;
use crate::engine::validators::{LineFeeder, checks_for, first_suspect};
use crate::error::Result;
use crate::plugin::validator::PluginValidator;
use crate::repository::Repository;
use crate::repository::history::ValidationRecord;
use crate::repository::manifest::{BackupType, Manifest};
use crate::repository::verify::{Check, RowSink, StreamReport, VerifyReport, first_problem};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct ValidationReport {
    pub backup_id: String,
    pub name: String,
    pub ok: bool,
    pub chunks_checked: usize,
    pub bytes_checked: u64,
    pub age_seconds: i64,
    pub rpo_seconds: u64,
    pub items: Vec<StreamReport>,
    pub warnings: Vec<String>,
    /// What the `[[validators]]` found in the rows, re-read now (the manifest keeps what they
    /// found when the backup was taken).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub validators: Vec<crate::repository::manifest::ValidatorRun>,
}

impl ValidationReport {
    /// The first problem as an error in the runbook's words (for the exit status).
    pub fn first_error(&self) -> Option<String> {
        first_problem(&self.items)
    }
}

/// `backup validate`: verifies every object and warns when the backup is older than the RPO.
pub async fn validate(
    repo: &Repository,
    manifest: &Manifest,
    objectives: &Objectives,
    validators: &[std::sync::Arc<PluginValidator>],
    jobs: usize,
    progress: &Progress,
) -> Result<ValidationReport> {
    let check = Check::new(manifest, None);
    let feeder = if validators.is_empty() {
        None
    } else {
        let manifests = repo.manifests().await?;
        Some(LineFeeder::new(checks_for(
            validators, manifest, &manifests,
        )))
    };
    let bar = progress.overall("validate", check.bytes());
    let mut verified = repo
        .verify_feeding(
            &check,
            jobs,
            |bytes| Progress::advance(&bar, bytes),
            feeder.as_ref().map(|f| f as &dyn RowSink),
        )
        .await;
    bar.finish_and_clear();
    if manifest.backup_type == BackupType::Incremental {
        verify_chain(repo, manifest, jobs, progress, &mut verified).await;
    }
    let runs = feeder.map(|f| f.runs()).unwrap_or_default();
    let suspect = first_suspect(&runs);
    let mut report = ValidationReport {
        backup_id: manifest.id.clone(),
        name: manifest.name.clone(),
        ok: verified.ok,
        chunks_checked: verified.chunks_checked,
        bytes_checked: verified.bytes_checked,
        age_seconds: (chrono::Utc::now() - manifest.completed_at).num_seconds(),
        rpo_seconds: 0,
        items: verified.items,
        warnings: verified.warnings,
        validators: runs,
    };
    let record = ValidationRecord {
        backup_id: manifest.id.clone(),
        at: chrono::Utc::now(),
        // Rows a validator finds wrong make the backup no more trustworthy than a bad chunk.
        ok: report.ok && suspect.is_none(),
        problems: report.items.iter().map(|i| i.problems.len()).sum::<usize>()
            + suspect.as_ref().map_or(0, |(_, n)| *n),
        rows_suspect: report.ok && suspect.is_some(),
        first_problem: report
            .first_error()
            .or_else(|| suspect.map(|(first, _)| format!("Backup Validation Failed: {first}"))),
    };
    if let Err(e) = repo.record_validation(&record).await {
        tracing::warn!("could not record the validation result: {e}");
    }
    let rpo = objectives.rpo();
    report.rpo_seconds = rpo.as_secs();
    let age = (chrono::Utc::now() - manifest.completed_at)
        .to_std()
        .unwrap_or_default();
    if manifest.backup_type != BackupType::SchemaOnly && age > rpo {
        report.warnings.push(format!(
            "backup {} is {} old, older than the recovery-point objective of {} ({} data): take a new backup",
            manifest.id,
            humantime::format_duration(std::time::Duration::from_secs(age.as_secs())),
            humantime::format_duration(rpo),
            serde_json::to_value(objectives.class).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
        ));
    }
    // Objects that were missing or corrupt on the first target and read from another.
    report.warnings.extend(repo.notices());
    Ok(report)
}

/// An incremental is restorable only with every earlier backup of its chain: each is checked
/// as the incremental is (its items named `backup <id>: …`), and a link that is missing,
/// damaged or does not meet the next is a problem of the chain.
async fn verify_chain(
    repo: &Repository,
    manifest: &Manifest,
    jobs: usize,
    progress: &Progress,
    verified: &mut VerifyReport,
) {
    let chain = match chain::resolve(repo, manifest, None).await {
        Ok(Some(chain)) => chain,
        Ok(None) => return,
        Err(e) => {
            verified.ok = false;
            verified.items.push(StreamReport {
                name: "chain".into(),
                expected_rows: 0,
                found_rows: 0,
                chunks: 0,
                ok: false,
                problems: vec![e.to_string()],
            });
            return;
        }
    };
    let earlier =
        std::iter::once(&chain.base).chain(chain.links.iter().filter(|l| l.id != manifest.id));
    for link in earlier {
        let check = Check::new(link, None);
        let bar = progress.overall("validate", check.bytes());
        let more = repo
            .verify(&check, jobs, |bytes| Progress::advance(&bar, bytes))
            .await;
        bar.finish_and_clear();
        verified.ok &= more.ok;
        verified.chunks_checked += more.chunks_checked;
        verified.bytes_checked += more.bytes_checked;
        verified
            .items
            .extend(more.items.into_iter().map(|item| StreamReport {
                name: format!("backup {}: {}", link.id, item.name),
                ..item
            }));
        verified.warnings.extend(more.warnings);
    }
}

/// What `backup validate` found of one target's copy of a backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CopyStatus {
    /// Every object there, every checksum and row count right.
    Intact,
    /// The manifest or an object is there but wrong, or an object is missing.
    Damaged,
    /// The target holds no copy of the backup (or no repository).
    Missing,
    /// The target could not be read.
    Unreachable,
}

impl CopyStatus {
    /// The word used in JSON and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            CopyStatus::Intact => "intact",
            CopyStatus::Damaged => "damaged",
            CopyStatus::Missing => "missing",
            CopyStatus::Unreachable => "unreachable",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CopyValidation {
    pub target: String,
    pub status: CopyStatus,
    pub chunks_checked: usize,
    pub bytes_checked: u64,
    pub problems: usize,
    pub first_problem: Option<String>,
}

impl CopyValidation {
    /// `the copy on target 'local' is damaged (…)`: a copy that is not intact, in the words of
    /// the verdict and the alert.
    pub fn describe(&self) -> String {
        format!(
            "the copy on target '{}' is {} ({})",
            self.target,
            self.status.as_str(),
            self.first_problem.as_deref().unwrap_or("no detail")
        )
    }
}

/// Validates the copy of `manifest` on each of `targets` on its own (no fallback between
/// them), recording each result on its target. Returns the report of the first intact copy
/// (else of the first copy that could be read, else `None`) and one line per target.
pub async fn validate_copies(
    targets: &[std::sync::Arc<dyn crate::targets::Target>],
    manifest: &Manifest,
    objectives: &Objectives,
    validators: &[std::sync::Arc<PluginValidator>],
    jobs: usize,
    progress: &Progress,
) -> Result<(Option<ValidationReport>, Vec<CopyValidation>)> {
    let mut copies = Vec::new();
    let mut shown: Option<ValidationReport> = None;
    for target in targets {
        let (repo, copy) = match open_copy(target, manifest).await {
            Ok(opened) => opened,
            Err(line) => {
                copies.push(line);
                continue;
            }
        };
        let report = validate(&repo, &copy, objectives, validators, jobs, progress).await?;
        copies.push(CopyValidation {
            target: target.name().to_string(),
            status: if report.ok {
                CopyStatus::Intact
            } else {
                CopyStatus::Damaged
            },
            chunks_checked: report.chunks_checked,
            bytes_checked: report.bytes_checked,
            problems: report.items.iter().map(|i| i.problems.len()).sum(),
            first_problem: report
                .first_error()
                .map(|p| format!("{p} (target '{}')", target.name())),
        });
        if shown.as_ref().is_none_or(|s| !s.ok && report.ok) {
            shown = Some(report);
        }
    }
    Ok((shown, copies))
}

/// The daemon's `validate = "chunks"`: on each of `targets` on its own, the copy's manifest
/// and every chunk it names read back and checked against its SHA-256 (rows are not counted,
/// validators not re-run), the result recorded on the target as `backup validate` records
/// its own. One line per target, as [`validate_copies`] gives them.
pub async fn validate_chunks(
    targets: &[std::sync::Arc<dyn crate::targets::Target>],
    manifest: &Manifest,
    jobs: usize,
) -> Vec<CopyValidation> {
    use futures_util::StreamExt;
    let mut copies = Vec::new();
    for target in targets {
        let (repo, copy) = match open_copy(target, manifest).await {
            Ok(opened) => opened,
            Err(line) => {
                copies.push(line);
                continue;
            }
        };
        let mut seen = std::collections::HashSet::new();
        let context = format!("backup {}, target '{}'", copy.id, target.name());
        let results: Vec<Result<u64>> =
            futures_util::stream::iter(copy.chunks().filter(|c| seen.insert(c.id.clone())))
                .map(|chunk| {
                    let (repo, context) = (&repo, &context);
                    async move {
                        repo.read_chunk_with(chunk, context, |_| ())
                            .await
                            .map(|()| chunk.len)
                    }
                })
                .buffer_unordered(jobs.max(1) * 2)
                .collect()
                .await;
        let problems: Vec<String> = results
            .iter()
            .filter_map(|r| r.as_ref().err().map(ToString::to_string))
            .collect();
        let record = ValidationRecord {
            backup_id: copy.id.clone(),
            at: chrono::Utc::now(),
            ok: problems.is_empty(),
            problems: problems.len(),
            first_problem: problems.first().cloned(),
            rows_suspect: false,
        };
        if let Err(e) = repo.record_validation(&record).await {
            tracing::warn!("could not record the validation result: {e}");
        }
        copies.push(CopyValidation {
            target: target.name().to_string(),
            status: if problems.is_empty() {
                CopyStatus::Intact
            } else {
                CopyStatus::Damaged
            },
            chunks_checked: results.len(),
            bytes_checked: results.iter().filter_map(|r| r.as_ref().ok()).sum(),
            problems: problems.len(),
            first_problem: problems.into_iter().next(),
        });
    }
    copies
}

/// The repository on `target` and its copy of `manifest`; when there is none to check, the
/// line that says why (missing, damaged manifest, unreachable).
async fn open_copy(
    target: &std::sync::Arc<dyn crate::targets::Target>,
    manifest: &Manifest,
) -> std::result::Result<(Repository, Manifest), CopyValidation> {
    use crate::error::Error;
    let line = |status, first_problem: String| CopyValidation {
        target: target.name().to_string(),
        status,
        chunks_checked: 0,
        bytes_checked: 0,
        problems: 1,
        first_problem: Some(first_problem),
    };
    let repo = match Repository::open(target.clone()).await {
        Ok(repo) => repo,
        Err(e @ Error::NoRepository { .. }) => {
            return Err(line(CopyStatus::Missing, e.to_string()));
        }
        Err(e) => return Err(line(CopyStatus::Unreachable, e.to_string())),
    };
    match repo.read_manifest(&manifest.id).await {
        Ok(copy) => Ok((repo, copy)),
        Err(Error::BackupNotFound(_)) => Err(line(
            CopyStatus::Missing,
            format!(
                "Backup file not found: {} (backup {}, target '{}')",
                crate::repository::manifest_key(&manifest.id),
                manifest.id,
                target.name()
            ),
        )),
        Err(e @ Error::ChecksumMismatch { .. }) => Err(line(CopyStatus::Damaged, e.to_string())),
        Err(e) => Err(line(CopyStatus::Unreachable, e.to_string())),
    }
}

/// The verdict on the copies [`validate_copies`] checked: `None` when every copy is intact
/// and no validator found an error in the rows (`BackupSuspect` when one did; with
/// `any_copy`, `None` when one copy is intact); `CopiesDamaged` naming where it is intact and how to
/// repair the others; with no intact copy, the first problem in the runbook's words
/// (`ValidationFailed`), or `CopiesDamaged` when no copy could even be read.
pub fn verdict(
    backup_id: &str,
    report: Option<&ValidationReport>,
    copies: &[CopyValidation],
    any_copy: bool,
) -> Option<crate::error::Error> {
    use crate::error::Error;
    let intact: Vec<&str> = copies
        .iter()
        .filter(|c| c.status == CopyStatus::Intact)
        .map(|c| c.target.as_str())
        .collect();
    let bad: Vec<String> = copies
        .iter()
        .filter(|c| c.status != CopyStatus::Intact)
        .map(CopyValidation::describe)
        .collect();
    let Some(first_bad) = bad.first() else {
        // Every copy intact: the validators' findings in the rows decide.
        return report.and_then(|r| {
            crate::engine::validators::verdict_of(&r.backup_id, &r.validators).err()
        });
    };
    match intact.first() {
        Some(_) if any_copy => None,
        Some(first_intact) => Some(Error::CopiesDamaged(format!(
            "backup {backup_id}: {}; intact on {}: restore with `--from {first_intact}`, repair the others with `backup-cli backup sync` (or accept one intact copy with --any-copy)",
            bad.join("; "),
            intact.join(", ")
        ))),
        None => Some(match report {
            Some(report) => Error::ValidationFailed {
                backup_id: report.backup_id.clone(),
                first: report.first_error().unwrap_or_else(|| first_bad.clone()),
                problems: report.items.iter().map(|i| i.problems.len()).sum(),
            },
            None => Error::CopiesDamaged(format!(
                "backup {backup_id}: no intact copy: {}",
                bad.join("; ")
            )),
        }),
    }
}
