//! `backup validate`: re-read every object of a backup and prove it restorable.
//!
//! Each chunk is fetched, decompressed and its SHA-256 checked; the rows of each stream are
//! counted and checksummed, and the per-table totals must equal the manifest. Chunks are verified in
//! parallel, so validation runs at disk and hashing speed. Problems are collected per table
//! rather than stopping at the first, so the report names everything that is wrong.

use crate::config::Objectives;
use crate::engine::Progress;
use crate::error::Result;
use crate::repository::Repository;
use crate::repository::chunker::{RowChecksum, RowHasher};
use crate::repository::history::ValidationRecord;
use crate::repository::manifest::{BackupType, ChunkRef, Manifest, Stream};
use futures_util::StreamExt;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct StreamReport {
    /// A table (`schema.name`), a DDL section (`pre-data`, `post-data`) or `large objects`.
    pub name: String,
    pub expected_rows: u64,
    pub found_rows: u64,
    pub chunks: usize,
    pub ok: bool,
    pub problems: Vec<String>,
}

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
}

impl ValidationReport {
    /// The first problem as an error in the runbook's words (for the exit status).
    pub fn first_error(&self) -> Option<String> {
        self.items
            .iter()
            .flat_map(|i| i.problems.iter())
            .next()
            .cloned()
    }
}

/// How reports name the large objects' data.
const LARGE_OBJECTS: &str = "large objects";

struct Item<'a> {
    name: String,
    /// How errors name it: "table public.contacts" or "pre-data section".
    what: String,
    streams: Vec<&'a Stream>,
    expected_rows: u64,
    /// A table's `logical_bytes` (sections have no separate total).
    expected_bytes: Option<u64>,
    expected_checksum: Option<&'a str>,
}

/// `backup validate`: verifies every object and warns when the backup is older than the RPO.
pub async fn validate(
    repo: &Repository,
    manifest: &Manifest,
    objectives: &Objectives,
    jobs: usize,
    progress: &Progress,
) -> Result<ValidationReport> {
    let mut report = verify(repo, manifest, None, jobs, progress).await?;
    let record = ValidationRecord {
        backup_id: manifest.id.clone(),
        at: chrono::Utc::now(),
        ok: report.ok,
        problems: report.items.iter().map(|i| i.problems.len()).sum(),
        first_problem: report.first_error(),
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

/// Verifies the DDL sections and the chunks of the selected tables (all when `None`).
pub async fn verify(
    repo: &Repository,
    manifest: &Manifest,
    selection: Option<&[usize]>,
    jobs: usize,
    progress: &Progress,
) -> Result<ValidationReport> {
    let selected: Vec<&crate::repository::manifest::TableEntry> = match selection {
        Some(indices) => indices
            .iter()
            .filter_map(|&i| manifest.tables.get(i))
            .collect(),
        None => manifest.tables.iter().collect(),
    };
    let mut items = vec![
        Item {
            name: "pre-data".into(),
            what: "pre-data section".into(),
            streams: vec![&manifest.pre_data],
            expected_rows: manifest.pre_data.rows,
            expected_bytes: None,
            expected_checksum: None,
        },
        Item {
            name: "post-data".into(),
            what: "post-data section".into(),
            streams: vec![&manifest.post_data],
            expected_rows: manifest.post_data.rows,
            expected_bytes: None,
            expected_checksum: None,
        },
    ];
    items.extend(selected.into_iter().map(|t| Item {
        name: t.display_name(),
        what: format!("table {}", t.display_name()),
        streams: t.parts.iter().collect(),
        expected_rows: t.rows,
        expected_bytes: Some(t.logical_bytes),
        expected_checksum: Some(t.checksum.as_str()),
    }));
    if let Some(lo) = &manifest.large_objects {
        items.push(Item {
            name: LARGE_OBJECTS.into(),
            what: LARGE_OBJECTS.into(),
            streams: vec![&lo.data],
            expected_rows: lo.data.rows,
            expected_bytes: None,
            expected_checksum: Some(lo.data.checksum.as_str()),
        });
    }

    // (item, part, chunk) for every chunk, verified in parallel.
    let work: Vec<(usize, usize, &ChunkRef)> = items
        .iter()
        .enumerate()
        .flat_map(|(i, item)| {
            item.streams
                .iter()
                .enumerate()
                .flat_map(move |(p, s)| s.chunks.iter().map(move |c| (i, p, c)))
        })
        .collect();
    let total_bytes: u64 = work.iter().map(|(_, _, c)| c.len).sum();
    let bar = progress.overall("validate", total_bytes);
    let mut reports: Vec<StreamReport> = items
        .iter()
        .map(|item| StreamReport {
            name: item.name.clone(),
            expected_rows: item.expected_rows,
            found_rows: 0,
            chunks: item.streams.iter().map(|s| s.chunks.len()).sum(),
            ok: true,
            problems: Vec::new(),
        })
        .collect();
    // Chunks are fetched, hashed and decompressed in parallel but counted in order: a row
    // longer than the largest chunk continues into the next one.
    let mut hashers: Vec<Vec<RowHasher>> = items
        .iter()
        .map(|i| i.streams.iter().map(|_| RowHasher::default()).collect())
        .collect();
    let mut bytes_checked = 0;
    let mut chunks = futures_util::stream::iter(work.iter())
        .map(|&(i, p, chunk)| {
            let context = format!("{}, backup {}", items[i].what, manifest.id);
            let bar = bar.clone();
            async move {
                let result = repo.read_chunk(chunk, &context).await;
                Progress::advance(&bar, chunk.len);
                (i, p, chunk.len, result)
            }
        })
        .buffered(jobs.max(1) * 2);
    while let Some((i, p, len, result)) = chunks.next().await {
        match result {
            Ok(plain) => {
                hashers[i][p].push(&plain);
                bytes_checked += len;
            }
            Err(e) => {
                reports[i].ok = false;
                reports[i].problems.push(e.to_string());
            }
        }
    }
    drop(chunks);
    bar.finish_and_clear();
    let sums: Vec<Vec<RowChecksum>> = hashers
        .into_iter()
        .map(|parts| parts.into_iter().map(RowHasher::finish).collect())
        .collect();
    let failed = |what: &str| {
        format!(
            "Checksum verification failed: {what} (backup {})",
            manifest.id
        )
    };
    for ((item, report), parts) in items.iter().zip(reports.iter_mut()).zip(sums) {
        // The manifest's own sums, checked before anything is read.
        let mut listed = RowChecksum::default();
        let mut listed_bytes = 0u64;
        for stream in &item.streams {
            let chunk_bytes = stream
                .chunks
                .iter()
                .fold(0u64, |sum, c| sum.saturating_add(c.len));
            if chunk_bytes != stream.bytes {
                report.problems.push(failed(&format!(
                    "the chunks of a {} part hold {chunk_bytes} bytes, the manifest says {}",
                    item.what, stream.bytes
                )));
            }
            listed.rows = listed.rows.saturating_add(stream.rows);
            listed_bytes = listed_bytes.saturating_add(stream.bytes);
        }
        if listed.rows != item.expected_rows
            || item.expected_bytes.is_some_and(|b| b != listed_bytes)
        {
            report.problems.push(failed(&format!(
                "the parts of {} hold {} rows and {listed_bytes} bytes, the manifest's totals say {} rows and {} bytes",
                item.what,
                listed.rows,
                item.expected_rows,
                item.expected_bytes.unwrap_or(listed_bytes)
            )));
        }
        if !report.ok {
            continue; // unreadable chunks already explain any count mismatch
        }
        let mut total = RowChecksum::default();
        for (stream, sum) in item.streams.iter().zip(parts) {
            if sum.rows != stream.rows {
                report.problems.push(format!(
                    "Checksum verification failed: {} part has {} rows, manifest says {} (backup {})",
                    item.name, sum.rows, stream.rows, manifest.id
                ));
            } else if sum.encode() != stream.checksum {
                report.problems.push(failed(&format!(
                    "the rows of a {} part do not match the part's checksum",
                    item.what
                )));
            }
            total.combine(sum);
        }
        report.found_rows = total.rows;
        if total.rows != item.expected_rows {
            report.problems.push(failed(&format!(
                "{} has {} rows, the manifest says {}",
                item.what, total.rows, item.expected_rows
            )));
        }
        if let Some(expected) = item.expected_checksum
            && total.encode() != expected
        {
            report.problems.push(format!(
                "Checksum verification failed: rows of {} do not match the manifest checksum (backup {})",
                item.what, manifest.id
            ));
        }
        report.ok = report.problems.is_empty();
    }
    let mut warnings = Vec::new();
    check_digests(repo, manifest, &mut reports, &mut warnings).await;

    let age = chrono::Utc::now() - manifest.completed_at;
    Ok(ValidationReport {
        backup_id: manifest.id.clone(),
        name: manifest.name.clone(),
        ok: reports.iter().all(|r| r.ok),
        chunks_checked: work.len(),
        bytes_checked,
        age_seconds: age.num_seconds(),
        rpo_seconds: 0,
        items: reports,
        warnings,
    })
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

/// Validates the copy of `manifest` on each of `targets` on its own (no fallback between
/// them), recording each result on its target. Returns the report of the first intact copy
/// (else of the first copy that could be read, else `None`) and one line per target.
pub async fn validate_copies(
    targets: &[std::sync::Arc<dyn crate::targets::Target>],
    manifest: &Manifest,
    objectives: &Objectives,
    jobs: usize,
    progress: &Progress,
) -> Result<(Option<ValidationReport>, Vec<CopyValidation>)> {
    use crate::error::Error;
    let mut copies = Vec::new();
    let mut shown: Option<ValidationReport> = None;
    for target in targets {
        let line = |status, first_problem: Option<String>| CopyValidation {
            target: target.name().to_string(),
            status,
            chunks_checked: 0,
            bytes_checked: 0,
            problems: usize::from(first_problem.is_some()),
            first_problem,
        };
        let repo = match Repository::open(target.clone()).await {
            Ok(repo) => repo,
            Err(e @ Error::NoRepository { .. }) => {
                copies.push(line(CopyStatus::Missing, Some(e.to_string())));
                continue;
            }
            Err(e) => {
                copies.push(line(CopyStatus::Unreachable, Some(e.to_string())));
                continue;
            }
        };
        let copy = match repo.read_manifest(&manifest.id).await {
            Ok(copy) => copy,
            Err(Error::BackupNotFound(_)) => {
                copies.push(line(
                    CopyStatus::Missing,
                    Some(format!(
                        "Backup file not found: {} (backup {}, target '{}')",
                        crate::repository::manifest_key(&manifest.id),
                        manifest.id,
                        target.name()
                    )),
                ));
                continue;
            }
            Err(e @ Error::ChecksumMismatch { .. }) => {
                copies.push(line(CopyStatus::Damaged, Some(e.to_string())));
                continue;
            }
            Err(e) => {
                copies.push(line(CopyStatus::Unreachable, Some(e.to_string())));
                continue;
            }
        };
        let report = validate(&repo, &copy, objectives, jobs, progress).await?;
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

/// Compares the digests the manifest recorded at backup time with the manifest and the
/// sections as they are now: a swapped section or a removed table fails here even though
/// every chunk is intact.
async fn check_digests(
    repo: &Repository,
    manifest: &Manifest,
    reports: &mut Vec<StreamReport>,
    warnings: &mut Vec<String>,
) {
    let Some(digests) = &manifest.digests else {
        warnings.push(format!(
            "backup {} was made before manifests recorded digests of their DDL sections and table list: a swapped section or a removed table cannot be detected in it",
            manifest.id
        ));
        return;
    };
    let mut problems = Vec::new();
    if manifest.tables_digest() != digests.tables {
        problems.push(format!(
            "Checksum verification failed: the manifest's table list does not match the digest recorded at backup time (a table removed, added or altered) (backup {})",
            manifest.id
        ));
    }
    reports.push(StreamReport {
        name: "manifest".into(),
        expected_rows: 0,
        found_rows: 0,
        chunks: 0,
        ok: problems.is_empty(),
        problems,
    });
    for (name, stream, expected) in [
        ("pre-data", &manifest.pre_data, &digests.pre_data),
        ("post-data", &manifest.post_data, &digests.post_data),
    ] {
        let Some(report) = reports.iter_mut().find(|r| r.name == name) else {
            continue;
        };
        if !report.ok {
            continue; // its chunks are already reported
        }
        let context = format!("{name} section, backup {}", manifest.id);
        match repo.read_stream(stream, &context).await {
            Ok(text) if &crate::repository::sha256_hex(&text) == expected => {}
            Ok(_) => report.problems.push(format!(
                "Checksum verification failed: the {name} section does not match the digest recorded at backup time (sections swapped or replaced) (backup {})",
                manifest.id
            )),
            Err(e) => report.problems.push(e.to_string()),
        }
        report.ok = report.problems.is_empty();
    }
}
