//! The `[[validators]]` plugins over a backup's rows: fed the COPY text the backup already
//! streams (and `backup validate` re-reads), table by table, with the previous backup's figures
//! for comparison. Parts of one table copied in parallel share the table's checks (one at a
//! time); the findings become the manifest's `validators`.

use crate::plugin::validator::{PluginValidator, TableInfo, TableSession};
use crate::repository::manifest::{Finding, Manifest, ValidatorRun};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Checks of every table of one backup by every configured validator.
pub struct RowChecks {
    validators: Vec<Arc<PluginValidator>>,
    tables: Vec<TableChecks>,
}

struct TableChecks {
    info: TableInfo,
    parts_left: AtomicUsize,
    rows: AtomicU64,
    /// One session per validator, begun when the first rows (or the end) arrive.
    sessions: tokio::sync::Mutex<Option<Vec<TableSession>>>,
    /// Per validator, once the table is finished.
    findings: std::sync::Mutex<Vec<Vec<Finding>>>,
}

impl RowChecks {
    /// `tables`: each table with the number of parts its rows arrive in.
    pub fn new(validators: Vec<Arc<PluginValidator>>, tables: Vec<(TableInfo, usize)>) -> Self {
        RowChecks {
            tables: tables
                .into_iter()
                .map(|(info, parts)| TableChecks {
                    info,
                    parts_left: AtomicUsize::new(parts.max(1)),
                    rows: AtomicU64::new(0),
                    sessions: tokio::sync::Mutex::new(None),
                    findings: std::sync::Mutex::new(Vec::new()),
                })
                .collect(),
            validators,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.validators.is_empty()
    }

    async fn begin(&self, table: &TableChecks) -> Vec<TableSession> {
        let mut sessions = Vec::with_capacity(self.validators.len());
        for validator in &self.validators {
            sessions.push(validator.begin(&table.info).await);
        }
        sessions
    }

    /// Hands a batch of whole COPY lines of table `table` to the validators that want them.
    pub async fn feed(&self, table: usize, pieces: &[Bytes]) {
        let Some(checks) = self.tables.get(table) else {
            return;
        };
        if self.validators.is_empty() || pieces.is_empty() {
            return;
        }
        let mut sessions = checks.sessions.lock().await;
        if sessions.is_none() {
            *sessions = Some(self.begin(checks).await);
        }
        let Some(sessions) = sessions.as_mut() else {
            return;
        };
        if !sessions.iter().any(TableSession::wants_rows) {
            return;
        }
        let batch = match pieces {
            [one] => one.clone(),
            many => Bytes::from(many.concat()),
        };
        for session in sessions.iter_mut() {
            session.rows(batch.clone()).await;
        }
    }

    /// One part of `table` is fully read (`rows` rows); after its last part the validators
    /// give their findings.
    pub async fn part_done(&self, table: usize, rows: u64) {
        let Some(checks) = self.tables.get(table) else {
            return;
        };
        checks.rows.fetch_add(rows, Ordering::SeqCst);
        if self.validators.is_empty() || checks.parts_left.fetch_sub(1, Ordering::SeqCst) != 1 {
            return;
        }
        let begun = checks.sessions.lock().await.take();
        let sessions = match begun {
            Some(sessions) => sessions,
            None => self.begin(checks).await,
        };
        let total = checks.rows.load(Ordering::SeqCst);
        let mut found = Vec::with_capacity(sessions.len());
        for session in sessions {
            found.push(session.finish(total).await);
        }
        if let Ok(mut findings) = checks.findings.lock() {
            *findings = found;
        }
    }

    /// Every validator's verdict, in configuration order, findings in table order.
    pub fn runs(&self) -> Vec<ValidatorRun> {
        let mut runs: Vec<ValidatorRun> = self.validators.iter().map(|v| v.run()).collect();
        for table in &self.tables {
            let Ok(mut findings) = table.findings.lock() else {
                continue;
            };
            for (run, found) in runs.iter_mut().zip(findings.drain(..)) {
                run.findings.extend(found);
            }
        }
        runs
    }
}

/// Feeds the chunks a verification reads to the checks as whole lines (a row may continue
/// into the next chunk).
pub struct LineFeeder {
    checks: RowChecks,
    carry: tokio::sync::Mutex<Vec<u8>>,
}

impl LineFeeder {
    pub fn new(checks: RowChecks) -> LineFeeder {
        LineFeeder {
            checks,
            carry: tokio::sync::Mutex::new(Vec::new()),
        }
    }

    pub fn runs(&self) -> Vec<ValidatorRun> {
        self.checks.runs()
    }
}

#[async_trait::async_trait]
impl crate::repository::verify::RowSink for LineFeeder {
    async fn chunk(&self, table: usize, plain: &[u8]) {
        let mut carry = self.carry.lock().await;
        carry.extend_from_slice(plain);
        let Some(end) = carry.iter().rposition(|&b| b == b'\n') else {
            return;
        };
        let rest = carry.split_off(end + 1);
        let lines = std::mem::replace(&mut *carry, rest);
        drop(carry);
        self.checks.feed(table, &[Bytes::from(lines)]).await;
    }

    async fn part_done(&self, table: usize, rows: u64) {
        self.carry.lock().await.clear(); // COPY text ends every row, so nothing is lost
        self.checks.part_done(table, rows).await;
    }
}

/// The checks of every table of `manifest`, comparing with the previous full backup among
/// `manifests`.
pub fn checks_for(
    validators: &[Arc<PluginValidator>],
    manifest: &Manifest,
    manifests: &[Manifest],
) -> RowChecks {
    let previous = previous_figures(manifests, &manifest.source.database, manifest.created_at);
    RowChecks::new(
        validators.to_vec(),
        manifest
            .tables
            .iter()
            .map(|t| {
                let info = table_info(t.display_name(), &t.columns, &t.column_types, &previous);
                (info, t.parts.len())
            })
            .collect(),
    )
}

/// The first error finding of `runs`, in the words of [`verdict`].
pub fn first_suspect(runs: &[ValidatorRun]) -> Option<(String, usize)> {
    let mut errors = runs.iter().flat_map(|run| {
        run.findings
            .iter()
            .filter(|f| f.severity >= crate::repository::manifest::Severity::Error)
            .map(move |f| (run, f))
    });
    let (run, first) = errors.next()?;
    Some((
        format!(
            "validator '{}', rule {}: {}",
            run.name, first.rule, first.message
        ),
        1 + errors.count(),
    ))
}

/// `Err(BackupSuspect)` when a validator found an error in the backup's rows (as its manifest
/// records them).
pub fn verdict(manifest: &Manifest) -> crate::error::Result<()> {
    verdict_of(&manifest.id, &manifest.validators)
}

/// `Err(BackupSuspect)` when one of `runs` (of backup `backup_id`) has an error finding.
pub fn verdict_of(backup_id: &str, runs: &[ValidatorRun]) -> crate::error::Result<()> {
    match first_suspect(runs) {
        None => Ok(()),
        Some((first, findings)) => Err(crate::error::Error::BackupSuspect {
            backup_id: backup_id.to_string(),
            first,
            findings,
        }),
    }
}

/// The previous full backup of the same database taken before `created_at`: per table
/// (`schema.name`), its id, time, rows and bytes.
pub fn previous_figures(
    manifests: &[Manifest],
    database: &str,
    created_at: chrono::DateTime<chrono::Utc>,
) -> PreviousFigures {
    let previous = manifests
        .iter()
        .filter(|m| {
            m.source.database == database
                && m.backup_type == crate::repository::manifest::BackupType::Full
                && m.created_at < created_at
        })
        .max_by_key(|m| m.created_at);
    let Some(previous) = previous else {
        return HashMap::new();
    };
    previous
        .tables
        .iter()
        .map(|t| {
            (
                t.display_name(),
                (
                    previous.id.clone(),
                    previous.created_at,
                    t.rows,
                    t.logical_bytes,
                ),
            )
        })
        .collect()
}

/// Per table (`schema.name`): the previous backup's id, time, rows and bytes.
pub type PreviousFigures = HashMap<String, (String, chrono::DateTime<chrono::Utc>, u64, u64)>;

/// A table as a validator is told about it: `name` is `schema.name`, `columns` quoted (as
/// manifests and the catalog keep them), `types` in the same order (may be empty).
pub fn table_info(
    name: String,
    columns: &[String],
    types: &[String],
    previous: &PreviousFigures,
) -> TableInfo {
    TableInfo {
        columns: columns
            .iter()
            .enumerate()
            .map(|(i, quoted)| {
                let type_name = types.get(i).cloned().unwrap_or_default();
                (unquote_ident(quoted), type_name)
            })
            .collect(),
        previous: previous.get(&name).cloned(),
        name,
    }
}

/// The name a quoted identifier (as `quote_ident` writes it) stands for.
pub fn unquote_ident(quoted: &str) -> String {
    match quoted
        .strip_prefix('"')
        .and_then(|inner| inner.strip_suffix('"'))
    {
        Some(inner) => inner.replace("\"\"", "\""),
        None => quoted.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_identifiers_come_back_to_their_names() {
        assert_eq!(unquote_ident("email"), "email");
        assert_eq!(unquote_ident("\"Mixed Case\""), "Mixed Case");
        assert_eq!(unquote_ident("\"a\"\"b\""), "a\"b");
    }

    #[test]
    fn the_previous_backup_is_the_newest_full_one_of_the_database_before() {
        use crate::repository::manifest::{BackupType, TableEntry, sample_manifest};
        let at = |h: u32| {
            chrono::DateTime::parse_from_rfc3339(&format!("2026-12-01T{h:02}:00:00Z"))
                .expect("time")
                .with_timezone(&chrono::Utc)
        };
        let backup = |id: &str, h: u32, db: &str, ty: BackupType, rows: u64| {
            let mut m = sample_manifest(id);
            m.created_at = at(h);
            m.source.database = db.into();
            m.backup_type = ty;
            m.tables.push(TableEntry {
                schema: "public".into(),
                name: "contacts".into(),
                columns: vec!["id".into()],
                column_types: vec!["integer".into()],
                partition_of: None,
                filter: None,
                rows,
                logical_bytes: rows * 10,
                checksum: String::new(),
                parts: Vec::new(),
                tracked: None,
            });
            m
        };
        let manifests = vec![
            backup("a", 1, "app", BackupType::Full, 100),
            backup("b", 2, "app", BackupType::Full, 90),
            backup("c", 3, "app", BackupType::SchemaOnly, 0),
            backup("d", 4, "other", BackupType::Full, 5),
            backup("e", 6, "app", BackupType::Full, 10),
        ];
        let figures = previous_figures(&manifests, "app", at(5));
        let (id, _, rows, bytes) = figures.get("public.contacts").expect("figures");
        assert_eq!((id.as_str(), *rows, *bytes), ("b", 90, 900));
        assert!(previous_figures(&manifests, "app", at(1)).is_empty());
    }
}
