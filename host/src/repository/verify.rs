//! Verification of a backup's stored objects against its manifest: the one primitive that
//! `backup validate` and a restore's first step both run. Every chunk is read (through the
//! read policy), decompressed and hashed; each stream's rows are counted and checksummed and
//! must equal the manifest's totals and digests. Problems are collected, not stopped at.

use super::Repository;
use super::chunker::{RowChecksum, RowHasher};
use super::manifest::{BackupType, Manifest, Piece, Stream, TableEntry};
use futures_util::StreamExt;
use serde::Serialize;

/// What one stream group (a table, a DDL section, the large objects, the manifest) holds.
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

/// What [`Repository::verify`] found.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    pub ok: bool,
    pub chunks_checked: usize,
    pub bytes_checked: u64,
    pub items: Vec<StreamReport>,
    pub warnings: Vec<String>,
}

impl VerifyReport {
    /// The first problem, in the runbook's words.
    pub fn first_error(&self) -> Option<String> {
        first_problem(&self.items)
    }

    /// How many problems were found in all.
    pub fn problems(&self) -> usize {
        self.items.iter().map(|i| i.problems.len()).sum()
    }
}

/// The first problem of `items`, in the runbook's words.
pub fn first_problem(items: &[StreamReport]) -> Option<String> {
    items.iter().flat_map(|i| i.problems.iter()).next().cloned()
}

/// What a verification reads: the streams of a backup, grouped as reports name them, and
/// every chunk of them as (group, stream, chunk).
pub struct Check<'a> {
    manifest: &'a Manifest,
    items: Vec<Item<'a>>,
    work: Vec<(usize, usize, &'a Stream, Piece<'a>)>,
}

/// Hears the plain bytes of every table part as a verification reads them, in order (the
/// `[[validators]]` plugins re-check the rows this way on `backup validate`).
#[async_trait::async_trait]
pub trait RowSink: Send + Sync {
    /// The next chunk of table `table` (its index in the manifest's tables).
    async fn chunk(&self, table: usize, plain: &[u8]);
    /// A part of `table` holding `rows` rows has been read to its end.
    async fn part_done(&self, table: usize, rows: u64);
}

/// How reports name the large objects' data.
const LARGE_OBJECTS: &str = "large objects";
/// How reports name an incremental's change set.
const CHANGE_SET: &str = "change set";

struct Item<'a> {
    name: String,
    /// How errors name it: "table public.contacts" or "pre-data section".
    what: String,
    streams: Vec<&'a Stream>,
    expected_rows: u64,
    /// A table's `logical_bytes` (sections have no separate total).
    expected_bytes: Option<u64>,
    expected_checksum: Option<&'a str>,
    /// For a table: its index in the manifest's tables.
    table: Option<usize>,
}

impl<'a> Check<'a> {
    /// The DDL sections, the selected tables (all when `None`) and the large objects.
    pub fn new(manifest: &'a Manifest, selection: Option<&[usize]>) -> Check<'a> {
        let selected: Vec<(usize, &TableEntry)> = match selection {
            Some(indices) => indices
                .iter()
                .filter_map(|&i| manifest.tables.get(i).map(|t| (i, t)))
                .collect(),
            None => manifest.tables.iter().enumerate().collect(),
        };
        let mut items = vec![
            Item {
                name: "pre-data".into(),
                what: "pre-data section".into(),
                streams: vec![&manifest.pre_data],
                expected_rows: manifest.pre_data.rows,
                expected_bytes: None,
                expected_checksum: None,
                table: None,
            },
            Item {
                name: "post-data".into(),
                what: "post-data section".into(),
                streams: vec![&manifest.post_data],
                expected_rows: manifest.post_data.rows,
                expected_bytes: None,
                expected_checksum: None,
                table: None,
            },
        ];
        items.extend(selected.into_iter().map(|(index, t)| Item {
            name: t.display_name(),
            what: format!("table {}", t.display_name()),
            streams: t.parts.iter().collect(),
            expected_rows: t.rows,
            expected_bytes: Some(t.logical_bytes),
            expected_checksum: Some(t.checksum.as_str()),
            table: Some(index),
        }));
        if let Some(info) = manifest
            .incremental
            .as_ref()
            .filter(|_| manifest.backup_type == BackupType::Incremental)
        {
            items.push(Item {
                name: CHANGE_SET.into(),
                what: CHANGE_SET.into(),
                streams: vec![&info.changes],
                expected_rows: info.changes.rows,
                expected_bytes: None,
                expected_checksum: Some(info.changes.checksum.as_str()),
                table: None,
            });
        }
        if let Some(lo) = &manifest.large_objects {
            items.push(Item {
                name: LARGE_OBJECTS.into(),
                what: LARGE_OBJECTS.into(),
                streams: vec![&lo.data],
                expected_rows: lo.data.rows,
                expected_bytes: None,
                expected_checksum: Some(lo.data.checksum.as_str()),
                table: None,
            });
        }

        // (item, part, chunk) for every chunk, verified in parallel.
        let work: Vec<(usize, usize, &Stream, Piece)> = items
            .iter()
            .enumerate()
            .flat_map(|(i, item)| {
                item.streams
                    .iter()
                    .enumerate()
                    .flat_map(move |(p, s)| s.pieces().map(move |piece| (i, p, *s, piece)))
            })
            .collect();
        Check {
            manifest,
            items,
            work,
        }
    }

    /// The backup it checks.
    pub fn backup_id(&self) -> &str {
        &self.manifest.id
    }

    /// The plain bytes the check reads (for a progress bar).
    pub fn bytes(&self) -> u64 {
        self.work
            .iter()
            .map(|(_, _, _, (_, r))| r.len() as u64)
            .sum()
    }
}

impl Repository {
    /// Runs `check`, reading `jobs` chunks at a time (as [`Repository::read_chunk`] does, so
    /// the read policy applies); `advance` hears of each chunk's plain bytes as it is read.
    pub async fn verify(
        &self,
        check: &Check<'_>,
        jobs: usize,
        advance: impl Fn(u64),
    ) -> VerifyReport {
        self.verify_feeding(check, jobs, advance, None).await
    }

    /// [`Repository::verify`], handing every table part's bytes to `sink` as they are read.
    pub async fn verify_feeding(
        &self,
        check: &Check<'_>,
        jobs: usize,
        advance: impl Fn(u64),
        sink: Option<&dyn RowSink>,
    ) -> VerifyReport {
        let (repo, manifest, items, work) = (self, check.manifest, &check.items, &check.work);
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
            .map(|(i, p, stream, piece)| {
                let (i, p) = (*i, *p);
                let context = format!("{}, backup {}", items[i].what, manifest.id);
                let advance = &advance;
                let len = piece.1.len() as u64;
                async move {
                    let result = repo
                        .read_piece(piece.clone(), stream.is_window(), &context)
                        .await;
                    advance(len);
                    (i, p, len, result)
                }
            })
            .buffered(jobs.max(1) * 2);
        // Items come whole and in order: a table's checks end when the next item starts.
        let mut fed = vec![false; items.len()];
        let end_item = |i: usize| {
            let item = &items[i];
            async move {
                if let (Some(sink), Some(table)) = (sink, item.table) {
                    for stream in &item.streams {
                        sink.part_done(table, stream.rows).await;
                    }
                }
            }
        };
        let mut current = None;
        while let Some((i, p, len, result)) = chunks.next().await {
            if current != Some(i) {
                if let Some(previous) = current {
                    end_item(previous).await;
                }
                current = Some(i);
                fed[i] = true;
            }
            match result {
                Ok(plain) => {
                    hashers[i][p].push(&plain);
                    bytes_checked += len;
                    if let (Some(sink), Some(table)) = (sink, items[i].table) {
                        sink.chunk(table, &plain).await;
                    }
                }
                Err(e) => {
                    reports[i].ok = false;
                    reports[i].problems.push(e.to_string());
                }
            }
        }
        drop(chunks);
        if let Some(last) = current {
            end_item(last).await;
        }
        // Tables without chunks (no rows) end too.
        for (i, _) in fed.iter().enumerate().filter(|(_, fed)| !**fed) {
            end_item(i).await;
        }
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
                    .pieces()
                    .fold(0u64, |sum, (_, r)| sum.saturating_add(r.len() as u64));
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

        VerifyReport {
            ok: reports.iter().all(|r| r.ok),
            chunks_checked: work.len(),
            bytes_checked,
            items: reports,
            warnings,
        }
    }
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
