//! `recovery execute`: carry out a recovery plan, then prove the result.
//!
//! Steps: verify every chunk the restore reads (before touching an existing database; a new
//! database instead checks each chunk just before its rows are sent); create or open the
//! target (a new database with the source's settings, comment and privileges, as
//! `pg_restore --create`); schema (pg_dump pre-data); data with `COPY … FROM STDIN`; indexes and
//! constraints (independent ones in parallel), foreign keys (added NOT VALID, validated in
//! parallel; those referencing a partitioned table added valid), triggers and the rest; sequence
//! values; VACUUM (ANALYZE) of a new database's tables, ANALYZE of tables restored into an
//! existing one; event triggers last, so nothing the restore runs fires them; verification of
//! row counts (and, with `--verify checksums`, per-table checksums) and of NOT VALID constraints.
//!
//! Failure leaves nothing half-done: `new-database` builds under a temporary name (see
//! [`partial_name`]), renames it only once verified, and drops it on failure or on SIGINT and
//! SIGTERM; `replace` and `missing-rows` run in one transaction that is rolled back.

use crate::engine::Progress;
use crate::engine::interrupt::{CleanupGuard, interruptible};
use crate::engine::recovery::plan::{RecoveryPlan, Strategy, Verification, admin_connection};
use crate::error::{Error, Result};
use crate::pg::ddl::{self, Entry, Script, builds_in_parallel};
use crate::pg::snapshot::SESSION_SETTINGS;
use crate::pg::{ConnectionSettings, catalog};
use crate::repository::Repository;
use crate::repository::chunker::{RowChecksum, RowHasher};
use crate::repository::history::RestoreRecord;
use crate::repository::manifest::{
    Manifest, SequenceValue, Stream, TableEntry, quote_ident, quote_literal,
};
use crate::repository::verify::Check;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use indicatif::ProgressBar;
use serde::Serialize;
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio_postgres::Client;

#[derive(Debug, Clone, Serialize)]
pub struct TableResult {
    pub name: String,
    /// Rows in the backup.
    pub backup_rows: u64,
    /// Rows in the target after the restore.
    pub target_rows: i64,
    /// Rows inserted by `missing-rows`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inserted_rows: Option<u64>,
    /// Whether the table's data checksum equals the one recorded at backup time
    /// (null for `missing-rows`, where the target keeps rows of its own).
    pub checksum_ok: Option<bool>,
    pub ok: bool,
}

/// The large objects a restore wrote, checked as tables are.
#[derive(Debug, Clone, Serialize)]
pub struct LargeObjectResult {
    /// Large objects in the backup.
    pub backup_count: u64,
    /// Of those, how many the target holds after the restore.
    pub target_count: u64,
    /// Bytes of content in the backup and in the target.
    pub backup_bytes: u64,
    pub target_bytes: u64,
    /// Whether the content's checksum equals the backup's (`--verify checksums`; else null).
    pub checksum_ok: Option<bool>,
    pub ok: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub backup_id: String,
    pub strategy: Strategy,
    pub target_database: String,
    /// What the per-table check compared (`rows`, or `checksums` too).
    pub verification: Verification,
    /// The measured recovery time (the real RTO of this restore).
    pub duration_seconds: f64,
    pub chunks_verified: usize,
    pub tables: Vec<TableResult>,
    /// Large objects restored (null when the backup has none or the strategy leaves them:
    /// `replace -t` and `missing-rows` restore tables only).
    pub large_objects: Option<LargeObjectResult>,
    pub rows: u64,
    pub bytes: u64,
    /// Constraints the restore left NOT VALID (a failure; empty in a finished restore).
    pub unvalidated_constraints: Vec<String>,
    /// Constraints that were NOT VALID in the backup (or, for `replace -t` and `missing-rows`,
    /// in the target beforehand) and stay so, as `pg_dump`/`pg_restore` would leave them.
    pub not_valid_as_before: Vec<String>,
    /// Objects missing or corrupt on the first target that were read from another.
    pub fallbacks: Vec<String>,
    /// A partial database an interrupted or killed earlier restore left, dropped before this one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leftover_dropped: Option<String>,
    /// Roles `--create-roles` created.
    pub roles_created: Vec<String>,
    /// What is left for the operator (passwords not in the backup, settings that failed).
    pub by_hand: Vec<String>,
    pub ok: bool,
}

/// Checks every chunk the plan reads; the dry run stops here.
pub async fn preflight(
    repo: &Repository,
    manifest: &Manifest,
    plan: &RecoveryPlan,
    jobs: usize,
    progress: &Progress,
) -> Result<usize> {
    plan.check_ready()?;
    let check = Check::new(manifest, Some(&plan.selected));
    let bar = progress.overall("validate", check.bytes());
    let verified = repo
        .verify(&check, jobs, |bytes| Progress::advance(&bar, bytes))
        .await;
    bar.finish_and_clear();
    if let Some(first) = verified.first_error() {
        return Err(Error::ValidationFailed {
            backup_id: manifest.id.clone(),
            first: format!("{first}\n  nothing was changed on the target"),
            problems: verified.problems(),
        });
    }
    Ok(verified.chunks_checked)
}

pub async fn execute(
    repo: &Repository,
    manifest: &Manifest,
    plan: &RecoveryPlan,
    jobs: usize,
    progress: &Progress,
) -> Result<RestoreReport> {
    let chunks_verified = match plan.strategy {
        // The load checks each chunk before sending its rows, and a failure drops the new
        // database, so a separate pass over every chunk would only cost time.
        Strategy::NewDatabase => {
            plan.check_ready()?;
            plan.selected_tables(manifest)
                .iter()
                .flat_map(|t| &t.parts)
                .chain(manifest.large_objects.as_ref().map(|lo| &lo.data))
                .map(|p| p.chunks.len())
                .sum()
        }
        Strategy::Replace | Strategy::MissingRows => {
            preflight(repo, manifest, plan, jobs, progress).await?
        }
    };
    let started = Instant::now();
    let manifest = Arc::new(manifest.clone());
    let job = Job {
        repo: repo.clone(),
        manifest: manifest.clone(),
        plan: plan.clone(),
        jobs: jobs.max(1),
        progress: progress.clone(),
        phase: Arc::new(Mutex::new("starting")),
    };
    let Outcome {
        tables,
        large_objects,
        unvalidated,
        not_valid_as_before,
        leftover_dropped,
        by_hand,
    } = match plan.strategy {
        Strategy::NewDatabase => job.new_database().await?,
        Strategy::Replace | Strategy::MissingRows => job.in_transaction().await?,
    };
    let duration = started.elapsed().as_secs_f64();
    let selected = plan.selected_tables(&manifest);
    let report = RestoreReport {
        backup_id: manifest.id.clone(),
        strategy: plan.strategy,
        target_database: plan.destination_settings.dbname.clone(),
        verification: plan.verification,
        duration_seconds: duration,
        chunks_verified,
        rows: selected.iter().map(|t| t.rows).sum(),
        bytes: selected.iter().map(|t| t.logical_bytes).sum(),
        ok: tables.iter().all(|t| t.ok)
            && large_objects.as_ref().is_none_or(|lo| lo.ok)
            && unvalidated.is_empty(),
        tables,
        large_objects,
        unvalidated_constraints: unvalidated,
        not_valid_as_before,
        fallbacks: repo.notices(),
        leftover_dropped,
        roles_created: if plan.create_roles {
            plan.globals.roles_to_create.clone()
        } else {
            Vec::new()
        },
        by_hand,
    };
    repo.record_restore(&RestoreRecord {
        backup_id: report.backup_id.clone(),
        strategy: report.strategy.to_string(),
        target_database: report.target_database.clone(),
        finished_at: chrono::Utc::now(),
        tables: report.tables.len(),
        rows: report.rows,
        bytes: report.bytes,
        seconds: duration,
    })
    .await?;
    Ok(report)
}

/// Everything one restore needs, cheap to clone into workers.
#[derive(Clone)]
struct Job {
    repo: Repository,
    manifest: Arc<Manifest>,
    plan: RecoveryPlan,
    jobs: usize,
    progress: Progress,
    /// What the restore is doing now, for the message when a signal stops it.
    phase: Arc<Mutex<&'static str>>,
}

struct Outcome {
    tables: Vec<TableResult>,
    large_objects: Option<LargeObjectResult>,
    /// NOT VALID constraints that were not so before the restore.
    unvalidated: Vec<String>,
    /// NOT VALID constraints that were so before (in the backup, or in the target).
    not_valid_as_before: Vec<String>,
    /// See [`RestoreReport::leftover_dropped`].
    leftover_dropped: Option<String>,
    /// Steps left for the operator.
    by_hand: Vec<String>,
}

/// Completes an outcome with the NOT VALID constraints on `tables` (all when empty), split by
/// whether `before` (pg_dump tags, `table constraint`) lists them as NOT VALID already.
async fn outcome(
    client: &Client,
    results: Vec<TableResult>,
    tables: &[String],
    before: &HashSet<String>,
) -> Result<Outcome> {
    let (as_before, unvalidated): (Vec<_>, Vec<_>) =
        catalog::unvalidated_constraints(client, tables)
            .await?
            .into_iter()
            .partition(|c| c.tags.iter().any(|t| before.contains(t)));
    Ok(Outcome {
        tables: results,
        large_objects: None,
        unvalidated: unvalidated.into_iter().map(|c| c.name).collect(),
        not_valid_as_before: as_before.into_iter().map(|c| c.name).collect(),
        leftover_dropped: None,
        by_hand: Vec::new(),
    })
}

/// Tags of the constraints a backup's DDL adds NOT VALID.
fn not_valid_in(sections: &[&Script]) -> HashSet<String> {
    sections
        .iter()
        .flat_map(|s| s.not_valid_tags())
        .map(str::to_string)
        .collect()
}

/// A restore connection. `--jobs` sessions build that many indexes at once, so an index build
/// does not start parallel workers of its own: on a busy server they only add the work of
/// merging their sorts (about 7 % more server CPU for the whole sample restore, measured).
async fn session(settings: &ConnectionSettings) -> Result<Client> {
    let client = settings.connect().await?;
    client
        .batch_execute(&format!(
            "{SESSION_SETTINGS}; SET synchronous_commit = off; SET client_min_messages = warning; \
             SET maintenance_work_mem = '256MB'; SET max_parallel_maintenance_workers = 0"
        ))
        .await
        .map_err(Error::db("preparing a restore session"))?;
    Ok(client)
}

fn copy_in_sql(into: &str, columns: &[String]) -> String {
    if columns.is_empty() {
        format!("COPY {into} FROM STDIN")
    } else {
        format!("COPY {into} ({}) FROM STDIN", columns.join(", "))
    }
}

/// Streams one stored range of a table into `into` with COPY, reading a chunk ahead.
async fn load_part(
    client: &Client,
    repo: &Repository,
    backup_id: &str,
    table: &TableEntry,
    part: &Stream,
    into: &str,
    bar: &ProgressBar,
) -> Result<u64> {
    copy_stream(
        client,
        repo,
        &copy_in_sql(into, &table.columns),
        part,
        &format!("table {}, backup {backup_id}", table.display_name()),
        &format!("loading {}", table.display_name()),
        bar,
    )
    .await
}

/// Sends a stored stream to `copy_in` (`COPY … FROM STDIN`), reading a chunk ahead.
/// `context` names the stream in chunk errors, `loading` the step in server errors.
async fn copy_stream(
    client: &Client,
    repo: &Repository,
    copy_in: &str,
    stream: &Stream,
    context: &str,
    loading: &str,
    bar: &ProgressBar,
) -> Result<u64> {
    let sink = client
        .copy_in::<_, Bytes>(copy_in)
        .await
        .map_err(Error::db(loading.to_string()))?;
    let mut sink = std::pin::pin!(sink);
    let mut chunks = futures_util::stream::iter(stream.chunks.clone())
        .map(|chunk| {
            let (repo, context) = (repo.clone(), context.to_string());
            async move { repo.read_chunk(&chunk, &context).await }
        })
        .buffered(2);
    while let Some(data) = chunks.next().await {
        let data = data?;
        let len = data.len() as u64;
        sink.send(Bytes::from(data))
            .await
            .map_err(Error::db(loading.to_string()))?;
        Progress::advance(bar, len);
    }
    sink.as_mut()
        .finish()
        .await
        .map_err(Error::db(loading.to_string()))
}

/// Order-independent checksum of the lines a `COPY … TO STDOUT` produces.
async fn copy_checksum(client: &Client, sql: &str, context: &str) -> Result<RowChecksum> {
    let stream = client
        .copy_out(sql)
        .await
        .map_err(Error::db(context.to_string()))?;
    let mut stream = std::pin::pin!(stream);
    let mut rows = RowHasher::default();
    while let Some(piece) = stream.next().await {
        rows.push(&piece.map_err(Error::db(context.to_string()))?);
    }
    Ok(rows.finish())
}

/// A pg_dump section as UTF-8 text whose `SET client_encoding` says so: every restore session
/// runs DDL and COPY data in UTF-8, the encoding Larder holds both in. Backups taken before
/// pg_dump was asked for UTF-8 hold a LATIN1 database's DDL in LATIN1 (converted here, byte
/// for byte); other encodings are refused rather than guessed.
fn ddl_text(sql: Vec<u8>, section: &str, backup_id: &str) -> Result<String> {
    const SET: &str = "SET client_encoding = '";
    let declared = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(SET)?.split('\'').next().map(str::to_string))
    };
    let text = match String::from_utf8(sql) {
        Ok(text) => text,
        Err(e) => {
            let bytes = e.into_bytes();
            let latin1: String = bytes.iter().map(|&b| char::from(b)).collect();
            match declared(&latin1).as_deref() {
                Some("LATIN1") => latin1,
                other => {
                    return Err(Error::Unsupported(format!(
                        "the {section} section of backup {backup_id} is not UTF-8 (pg_dump wrote it in {}); \
                         this version converts only LATIN1. Take a new backup of the source database, or restore with \
                         the version of backup-cli that took this one",
                        other.unwrap_or("an undeclared encoding")
                    )));
                }
            }
        }
    };
    Ok(match declared(&text) {
        Some(encoding) if encoding != "UTF8" => {
            text.replacen(&format!("{SET}{encoding}';"), &format!("{SET}UTF8';"), 1)
        }
        _ => text,
    })
}

/// Runs `work` over `items` on `jobs` connections; the first error stops the rest.
async fn pool<T, R, F, Fut>(
    settings: &ConnectionSettings,
    jobs: usize,
    items: Vec<T>,
    work: F,
) -> Result<Vec<R>>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(Arc<Client>, T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R>> + Send,
{
    let workers = jobs.clamp(1, items.len().max(1));
    let queue = Arc::new(Mutex::new(VecDeque::from(items)));
    let work = Arc::new(work);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (settings, queue, work) = (settings.clone(), queue.clone(), work.clone());
        set.spawn(async move {
            let client = Arc::new(session(&settings).await?);
            let mut out = Vec::new();
            loop {
                let next = queue
                    .lock()
                    .map_err(|_| Error::Internal("restore work queue poisoned".into()))?
                    .pop_front();
                let Some(item) = next else { break };
                out.push(work(client.clone(), item).await?);
            }
            Ok::<_, Error>(out)
        });
    }
    let mut results = Vec::new();
    while let Some(joined) = set.join_next().await {
        results
            .extend(joined.map_err(|e| Error::Internal(format!("restore worker failed: {e}")))??);
    }
    Ok(results)
}

/// Checks a restored table as `verification` asks: its row count, and with `checksums` an
/// order-independent checksum of its rows, against the backup's. `loaded`: the rows the
/// server reported storing with COPY when the table was created empty by this restore (then
/// they are its row count, and counting again would only re-read the table).
async fn verify_table(
    client: &Client,
    table: &TableEntry,
    verification: Verification,
    loaded: Option<u64>,
) -> Result<TableResult> {
    let (rows, checksum_ok) = match (verification, loaded) {
        (Verification::Rows, Some(rows)) => (rows as i64, None),
        (Verification::Rows, None) => {
            let rows: i64 = client
                .query_one(&table.count_sql(), &[])
                .await
                .map_err(Error::db(format!("counting {}", table.display_name())))?
                .get(0);
            (rows, None)
        }
        (Verification::Checksums, _) => {
            let (rows, sum) = table_state(client, table).await?;
            (rows, Some(sum.encode() == table.checksum))
        }
    };
    Ok(TableResult {
        name: table.display_name(),
        backup_rows: table.rows,
        target_rows: rows,
        inserted_rows: None,
        checksum_ok,
        ok: checksum_ok != Some(false) && rows as u64 == table.rows,
    })
}

/// Row count and order-independent checksum of a table as it is now.
async fn table_state(client: &Client, table: &TableEntry) -> Result<(i64, RowChecksum)> {
    let sum = copy_checksum(
        client,
        &table.copy_out_sql(),
        &format!("verifying {}", table.display_name()),
    )
    .await?;
    Ok((sum.rows as i64, sum))
}

/// Pauses autovacuum on `tables` (and their TOAST tables), or resets it to the default.
async fn set_autovacuum(client: &Client, tables: &[String], enabled: bool) -> Result<()> {
    let change = if enabled {
        "RESET (autovacuum_enabled, toast.autovacuum_enabled)"
    } else {
        "SET (autovacuum_enabled = off, toast.autovacuum_enabled = off)"
    };
    let sql: String = tables
        .iter()
        .map(|t| format!("ALTER TABLE {t} {change};\n"))
        .collect();
    client
        .batch_execute(&sql)
        .await
        .map_err(Error::db(if enabled {
            "resetting autovacuum on the restored tables"
        } else {
            "pausing autovacuum on the new tables"
        }))
}

async fn set_sequences(client: &Client, sequences: &[&SequenceValue]) -> Result<()> {
    for seq in sequences {
        let name = format!("{}.{}", quote_ident(&seq.schema), quote_ident(&seq.name));
        client
            .execute(
                "SELECT pg_catalog.setval($1::text::regclass, $2, $3)",
                &[&name, &seq.last_value, &seq.is_called],
            )
            .await
            .map_err(Error::db(format!("setting sequence {name}")))?;
    }
    Ok(())
}

/// Switches off, for this transaction, the enabled user triggers on `tables` (their owner may;
/// `session_replication_role` would need a superuser), so restored rows fire none of them.
/// Returns the statements that switch each back on exactly as it was.
async fn user_triggers_off(client: &Client, tables: &[String]) -> Result<String> {
    let mut off = String::new();
    let mut on = String::new();
    for (table, trigger, mode) in catalog::enabled_user_triggers(client, tables).await? {
        off.push_str(&format!("ALTER TABLE {table} DISABLE TRIGGER {trigger};\n"));
        let enable = match mode.as_str() {
            "R" => "ENABLE REPLICA",
            "A" => "ENABLE ALWAYS",
            _ => "ENABLE",
        };
        on.push_str(&format!(
            "ALTER TABLE {table} {enable} TRIGGER {trigger};\n"
        ));
    }
    if !off.is_empty() {
        client.batch_execute(&off).await.map_err(Error::db(
            "switching off user triggers on the restored tables",
        ))?;
    }
    Ok(on)
}

async fn restore_triggers(client: &Client, statements: &str) -> Result<()> {
    if statements.is_empty() {
        return Ok(());
    }
    client
        .batch_execute(statements)
        .await
        .map_err(Error::db("switching user triggers back on"))
}

/// Runs one post-data entry; retries when PostgreSQL picked it as a deadlock victim (two
/// foreign keys locking the same pair of tables in opposite order).
async fn run_entry(client: &Client, preamble: &str, entry: &Entry) -> Result<()> {
    let sql = format!("{preamble}{}", entry.sql);
    let mut attempt = 0;
    loop {
        match client.batch_execute(&sql).await {
            Ok(()) => return Ok(()),
            Err(e)
                if attempt < 3
                    && e.code()
                        == Some(&tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED) =>
            {
                attempt += 1;
            }
            Err(e) => {
                return Err(Error::db(format!(
                    "building {} {}",
                    entry.kind.to_lowercase(),
                    entry.name
                ))(e));
            }
        }
    }
}

/// Creates pg_dump's event triggers: the restore's last DDL, as with pg_restore, so they fire
/// for nothing the restore itself runs.
async fn create_event_triggers(client: &Client, preamble: &str, triggers: &[Entry]) -> Result<()> {
    for entry in triggers {
        run_entry(client, preamble, entry).await?;
    }
    Ok(())
}

/// One table's share of the last phase of a new-database restore.
struct TableWork {
    /// The restored table (None: foreign keys of a table outside the selection).
    table: Option<usize>,
    bytes: u64,
    /// `VALIDATE CONSTRAINT` statements of the foreign keys on this table.
    validations: Vec<Entry>,
}

/// Orders COPY work so concurrent workers load different tables: one range of each table in
/// turn, biggest tables first. Two sessions appending to the same heap queue on its
/// relation-extension lock, so spreading the ranges keeps both busy.
fn interleave_by_table(mut parts: Vec<(usize, usize, u64)>) -> Vec<(usize, usize, u64)> {
    let mut sizes: HashMap<usize, u64> = HashMap::new();
    for &(t, _, bytes) in &parts {
        *sizes.entry(t).or_default() += bytes;
    }
    parts.sort_by_key(|&(t, p, _)| (std::cmp::Reverse(sizes[&t]), t, p));
    let mut queues: Vec<VecDeque<(usize, usize, u64)>> = Vec::new();
    for part in parts {
        match queues
            .iter_mut()
            .find(|q| q.front().is_some_and(|f| f.0 == part.0))
        {
            Some(queue) => queue.push_back(part),
            None => queues.push(VecDeque::from([part])),
        }
    }
    let mut out = Vec::new();
    while queues.iter().any(|q| !q.is_empty()) {
        for queue in &mut queues {
            if let Some(part) = queue.pop_front() {
                out.push(part);
            }
        }
    }
    out
}

/// Turns failed verification into an error, so the caller undoes the restore.
fn checked(outcome: Outcome) -> Result<Outcome> {
    let failed: Vec<String> = outcome
        .tables
        .iter()
        .filter(|t| !t.ok)
        .map(|t| {
            format!(
                "{} ({} rows in the backup, {} restored, checksum {})",
                t.name,
                t.backup_rows,
                t.target_rows,
                match t.checksum_ok {
                    Some(true) => "ok",
                    Some(false) => "MISMATCH",
                    None => "n/a",
                }
            )
        })
        .collect();
    if let Some(lo) = outcome.large_objects.as_ref().filter(|lo| !lo.ok) {
        return Err(Error::Verification(format!(
            "verification failed for the large objects ({} in the backup with {} bytes, {} restored with {} bytes, checksum {})",
            lo.backup_count,
            lo.backup_bytes,
            lo.target_count,
            lo.target_bytes,
            match lo.checksum_ok {
                Some(true) => "ok",
                Some(false) => "MISMATCH",
                None => "n/a",
            }
        )));
    }
    if !failed.is_empty() {
        return Err(Error::Verification(format!(
            "verification failed for {}",
            failed.join(", ")
        )));
    }
    if !outcome.unvalidated.is_empty() {
        return Err(Error::Verification(format!(
            "constraints left NOT VALID: {}",
            outcome.unvalidated.join(", ")
        )));
    }
    Ok(outcome)
}

/// Tables ordered so that referenced tables come before the tables referencing them.
fn parents_first(manifest: &Manifest, selected: &[usize]) -> Vec<usize> {
    let chosen: HashSet<usize> = selected.iter().copied().collect();
    let index: HashMap<String, usize> = selected
        .iter()
        .map(|&i| (manifest.tables[i].display_name(), i))
        .collect();
    let deps: Vec<(usize, usize)> = manifest
        .foreign_keys
        .iter()
        .filter_map(|fk| Some((*index.get(&fk.table)?, *index.get(&fk.references)?)))
        .filter(|(c, p)| c != p)
        .collect();
    let mut order = Vec::new();
    let mut placed = HashSet::new();
    while placed.len() < chosen.len() {
        let before = placed.len();
        for &i in selected {
            if !placed.contains(&i) && deps.iter().all(|&(c, p)| c != i || placed.contains(&p)) {
                placed.insert(i);
                order.push(i);
            }
        }
        if placed.len() == before {
            // A cycle: place the rest as they come (triggers are off or checked afterwards).
            for &i in selected {
                if placed.insert(i) {
                    order.push(i);
                }
            }
        }
    }
    order
}

/// The first words of the comment a partial database carries, which mark it as ours.
const PARTIAL_MARKER: &str = "Larder: partial restore";

/// The temporary name a new database is built under: a partial database never carries the
/// target's name, even after SIGKILL. At most 63 bytes (PostgreSQL's limit); a long target
/// name is shortened and made unique with a hash of it.
pub fn partial_name(target: &str) -> String {
    const SUFFIX: &str = "_larder_partial";
    if target.len() + SUFFIX.len() <= 63 {
        return format!("{target}{SUFFIX}");
    }
    let mut cut = 63 - SUFFIX.len() - 9;
    while !target.is_char_boundary(cut) {
        cut -= 1;
    }
    let hash = crate::repository::sha256_hex(target.as_bytes());
    format!("{}_{}{SUFFIX}", &target[..cut], &hash[..8])
}

/// Drops the partial database an interrupted or killed restore into `target` left behind, and
/// says so; refuses when it is not ours or another restore is still building it.
async fn drop_leftover(admin: &Client, partial: &str, target: &str) -> Result<Option<String>> {
    let row = admin
        .query_opt(
            "SELECT coalesce(pg_catalog.shobj_description(d.oid, 'pg_database'), ''), \
             (SELECT count(*) FROM pg_catalog.pg_stat_activity a WHERE a.datname = d.datname) \
             FROM pg_catalog.pg_database d WHERE d.datname = $1",
            &[&partial],
        )
        .await
        .map_err(Error::db(format!(
            "looking for a partial database {partial}"
        )))?;
    let Some(row) = row else { return Ok(None) };
    let (comment, sessions): (String, i64) = (row.get(0), row.get(1));
    if !comment.starts_with(PARTIAL_MARKER) {
        return Err(Error::Refused(format!(
            "database {partial} exists and was not made by a Larder restore, but a restore into {target} \
             builds under that name; rename or drop it, then retry"
        )));
    }
    if sessions > 0 {
        return Err(Error::Refused(format!(
            "another restore is building {target} (as {partial}, {sessions} session(s) connected); \
             wait for it to finish, or stop it, then retry (a killed restore's sessions end with \
             their statements: SELECT pid, query FROM pg_stat_activity WHERE datname = {} lists them)",
            quote_literal(partial)
        )));
    }
    admin
        .batch_execute(&format!("DROP DATABASE {}", quote_ident(partial)))
        .await
        .map_err(Error::db(format!(
            "dropping {partial}, left by an interrupted restore"
        )))?;
    Ok(Some(format!(
        "dropped {partial}, left by an interrupted restore ({comment})"
    )))
}

/// Gives the finished database its name. Sessions of the restore that just closed can take a
/// moment to leave the server, and a rename needs the database to itself.
async fn rename_into_place(admin: &Client, partial: &str, target: &str) -> Result<()> {
    let (from, to) = (quote_ident(partial), quote_ident(target));
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match admin
            .batch_execute(&format!("ALTER DATABASE {from} RENAME TO {to}"))
            .await
        {
            Ok(()) => break,
            Err(e)
                if e.code() == Some(&tokio_postgres::error::SqlState::OBJECT_IN_USE)
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => {
                return Err(Error::db(format!("renaming {partial} to {target}"))(e));
            }
        }
    }
    if let Err(e) = admin
        .batch_execute(&format!("COMMENT ON DATABASE {to} IS NULL"))
        .await
    {
        tracing::warn!(
            "database {target} keeps the comment of a partial restore: {}",
            crate::error::error_chain(&e)
        );
    }
    Ok(())
}

impl Job {
    fn selected(&self) -> Vec<&TableEntry> {
        self.plan.selected_tables(&self.manifest)
    }

    async fn section(&self, stream: &Stream, name: &str) -> Result<Script> {
        let sql = self
            .repo
            .read_stream(
                stream,
                &format!("{name} section, backup {}", self.manifest.id),
            )
            .await?;
        let script = Script::parse(&ddl_text(sql, name, &self.manifest.id)?).map_err(|e| {
            Error::Unsupported(format!(
                "reading the {name} section of backup {}: {e}",
                self.manifest.id
            ))
        })?;
        Ok(if self.plan.no_owner {
            script.without_ownership()
        } else {
            script
        })
    }

    fn overall(&self) -> ProgressBar {
        self.progress.overall(
            "restore",
            self.selected().iter().map(|t| t.logical_bytes).sum(),
        )
    }

    /// Writes the large objects' data into the objects pre-data created, then checks them
    /// as tables are checked: their number and size, and with `--verify checksums` their
    /// content, re-read the way the backup read it.
    async fn restore_large_objects(&self, client: &Client) -> Result<Option<LargeObjectResult>> {
        let Some(lo) = &self.manifest.large_objects else {
            return Ok(None);
        };
        let [create, copy, write] = catalog::LARGE_OBJECT_LOAD;
        client
            .batch_execute(create)
            .await
            .map_err(Error::db("preparing to load large objects"))?;
        let bar = self.progress.item("large objects", lo.data.bytes);
        copy_stream(
            client,
            &self.repo,
            copy,
            &lo.data,
            &format!("large objects, backup {}", self.manifest.id),
            "loading large objects",
            &bar,
        )
        .await?;
        bar.finish_and_clear();
        client
            .batch_execute(write)
            .await
            .map_err(Error::db("writing large objects"))?;
        let (found, bytes) = catalog::large_objects(client, Some(&lo.oids)).await?;
        let checksum_ok = match self.plan.verification {
            Verification::Rows => None,
            Verification::Checksums => {
                let sum = copy_checksum(
                    client,
                    &catalog::large_object_copy(Some(&lo.oids)),
                    "verifying large objects",
                )
                .await?;
                Some(sum.encode() == lo.data.checksum && sum.rows == lo.data.rows)
            }
        };
        Ok(Some(LargeObjectResult {
            backup_count: lo.oids.len() as u64,
            target_count: found.len() as u64,
            backup_bytes: lo.content_bytes,
            target_bytes: bytes.max(0) as u64,
            ok: found.len() == lo.oids.len()
                && bytes.max(0) as u64 == lo.content_bytes
                && checksum_ok != Some(false),
            checksum_ok,
        }))
    }

    fn enter(&self, phase: &'static str) {
        if let Ok(mut now) = self.phase.lock() {
            *now = phase;
        }
    }

    fn phase(&self) -> &'static str {
        self.phase.lock().map(|p| *p).unwrap_or("restoring")
    }

    /// Restore into a database created for it under a temporary name, renamed to the target's
    /// name once built and verified; dropped again if anything fails or a signal stops it.
    async fn new_database(&self) -> Result<Outcome> {
        let _cleanup = CleanupGuard::new();
        let target = &self.plan.destination_settings;
        let partial = partial_name(&target.dbname);
        let admin = admin_connection(target, &self.manifest.source.database).await?;
        let leftover_dropped = drop_leftover(&admin, &partial, &target.dbname).await?;
        let db = quote_ident(&partial);
        let creation = self.plan.new_database.as_ref().ok_or_else(|| {
            Error::Internal("the plan does not say how to create the new database".into())
        })?;
        let roles = self.role_statements();
        if !roles.is_empty() {
            admin
                .batch_execute(&format!("BEGIN; {roles}; COMMIT"))
                .await
                .map_err(Error::db("creating the backup's roles (--create-roles)"))?;
        }
        // Not interruptible: a signal now is seen as soon as the build below starts, which then
        // drops what this created.
        self.enter("creating the database");
        admin
            .batch_execute(&creation.create_sql(&partial))
            .await
            .map_err(Error::db(format!(
                "creating database {partial} (to become {}) from {}",
                target.dbname,
                creation.describe()
            )))?;
        let built = interruptible(async {
            let marker = format!(
                "{PARTIAL_MARKER} of backup {} into {}; renamed when complete, dropped if it fails",
                self.manifest.id, target.dbname
            );
            admin
                .batch_execute(&format!(
                    "COMMENT ON DATABASE {db} IS {}",
                    quote_literal(&marker)
                ))
                .await
                .map_err(Error::db(format!("marking {partial} as a partial restore")))?;
            // The source's settings and privileges now; its comment once the marker is gone.
            self.apply_database_properties(&admin, &partial, false)
                .await?;
            checked(self.build_new_database(&partial).await?)
        })
        .await;
        // Not interruptible: once the rename is sent, the database is complete under its name.
        let built = match built {
            Ok(outcome) => match rename_into_place(&admin, &partial, &target.dbname).await {
                Ok(()) => {
                    if let Err(e) = self
                        .apply_database_properties(&admin, &target.dbname, true)
                        .await
                    {
                        tracing::warn!(
                            "database {} lacks the source's comment: {e}",
                            target.dbname
                        );
                    }
                    Ok(outcome)
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        match built {
            Ok(mut outcome) => {
                // Last, so a setting such as default_transaction_read_only cannot get in the
                // restore's way; a setting the restoring role may not make is left by hand.
                outcome.by_hand = self.plan.globals.by_hand.clone();
                for statement in &self.plan.globals.database_sql {
                    if let Err(e) = admin.batch_execute(statement).await {
                        outcome.by_hand.push(format!(
                            "{statement}; (failed: {}; run it as a superuser)",
                            e.as_db_error()
                                .map_or(e.to_string(), |d| d.message().to_string())
                        ));
                    }
                }
                Ok(Outcome {
                    leftover_dropped,
                    ..outcome
                })
            }
            Err(e) => {
                let dropped = admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                    .await;
                let mut state = match dropped {
                    Ok(()) => format!(
                        "the half-built database {} was dropped (it was being built as {partial}); nothing else was changed",
                        target.dbname
                    ),
                    Err(d) => format!(
                        "the half-built database {partial} (to become {}) could not be dropped ({}); drop it by hand, or the next restore into {} drops it",
                        target.dbname,
                        crate::error::error_chain(&d),
                        target.dbname
                    ),
                };
                if !roles.is_empty() {
                    let created = &self.plan.globals.roles_to_create;
                    let drop: String = created
                        .iter()
                        .rev()
                        .map(|r| format!("DROP ROLE IF EXISTS {};", quote_ident(r)))
                        .collect();
                    state.push_str(&match admin.batch_execute(&drop).await {
                        Ok(()) => format!(
                            "; the roles it created ({}) were dropped",
                            created.join(", ")
                        ),
                        Err(d) => format!(
                            "; the roles it created ({}) could not be dropped ({d})",
                            created.join(", ")
                        ),
                    });
                }
                Err(match e {
                    Error::Interrupted { signal, .. } => Error::Interrupted {
                        signal,
                        state: format!(
                            "the restore of backup {} stopped while {}\n  {state}\n  \
                             run the same command again to restore it",
                            self.manifest.id,
                            self.phase()
                        ),
                    },
                    other => Error::Recovery {
                        source: Box::new(other),
                        state,
                    },
                })
            }
        }
    }

    /// The source database's comment, privileges and settings, applied to the new database as
    /// `pg_restore --create` would, to database `to`: its comment alone (`comment`), or all but
    /// its comment. `--no-owner` leaves out what names roles (privileges and per-role
    /// settings), as it does for objects.
    async fn apply_database_properties(
        &self,
        admin: &Client,
        to: &str,
        comment: bool,
    ) -> Result<()> {
        let from = &self.manifest.source.database;
        for property in &self.manifest.database_properties {
            if (property.kind == "COMMENT") != comment
                || (self.plan.no_owner && property.kind == "ACL")
            {
                continue;
            }
            let sql: String = ddl::statements(&property.sql)
                .filter(|s| !(self.plan.no_owner && ddl::names_a_role(s)))
                .collect();
            admin
                .batch_execute(&ddl::retarget_database(&sql, from, to))
                .await
                .map_err(Error::db(format!(
                    "applying the database's {} from the backup to {to} (--no-owner leaves out privileges and per-role settings)",
                    property.kind.to_lowercase()
                )))?;
        }
        Ok(())
    }

    /// The `--create-roles` statements, as one script (empty without the flag).
    fn role_statements(&self) -> String {
        if self.plan.create_roles {
            self.plan.globals.role_sql.join(";\n")
        } else {
            String::new()
        }
    }

    /// Builds the restored database in `partial`, the temporary name.
    async fn build_new_database(&self, partial: &str) -> Result<Outcome> {
        let started = Instant::now();
        let target = self.plan.destination_settings.with_dbname(partial);
        let pre = self.section(&self.manifest.pre_data, "pre-data").await?;
        let mut post = self.section(&self.manifest.post_data, "post-data").await?;
        let event_triggers = post.take_event_triggers();
        let main = session(&target).await?;
        self.enter("creating the schema (pre-data)");
        main.batch_execute(&pre.to_sql())
            .await
            .map_err(Error::db("creating the schema (pre-data)"))?;
        // Autovacuum would start on the new tables mid-restore, competing for CPU and taking
        // locks that index builds and foreign keys then wait for. It is paused on the tables
        // that leave it at the server's default and reset once they are built and analyzed.
        let names: Vec<String> = self.selected().iter().map(|t| t.qualified()).collect();
        let paused = catalog::autovacuum_at_default(&main, &names).await?;
        set_autovacuum(&main, &paused, false).await?;

        // Data: every stored range, largest first, over N connections.
        self.enter("loading the data");
        let parts: Vec<(usize, usize, u64)> = self
            .plan
            .selected
            .iter()
            .flat_map(|&t| {
                self.manifest.tables[t]
                    .parts
                    .iter()
                    .enumerate()
                    .map(move |(p, s)| (t, p, s.bytes))
            })
            .collect();
        let parts = interleave_by_table(parts);
        let overall = self.overall();
        let job = self.clone();
        let bar = overall.clone();
        let loaded = pool(&target, self.jobs, parts, move |client, (t, p, _)| {
            let (job, overall) = (job.clone(), bar.clone());
            async move {
                let table = &job.manifest.tables[t];
                let item = job.progress.item(&table.qualified(), table.parts[p].bytes);
                let rows = load_part(
                    &client,
                    &job.repo,
                    &job.manifest.id,
                    table,
                    &table.parts[p],
                    &table.qualified(),
                    &item,
                )
                .await?;
                Progress::advance(&overall, table.parts[p].bytes);
                item.finish_and_clear();
                Ok((t, rows))
            }
        })
        .await?;
        let mut rows_loaded: HashMap<usize, u64> = HashMap::new();
        for (t, rows) in loaded {
            *rows_loaded.entry(t).or_default() += rows;
        }
        overall.finish_and_clear();
        let large_objects = self.restore_large_objects(&main).await?;
        tracing::info!(
            "schema and data loaded in {:.1} s",
            started.elapsed().as_secs_f64()
        );

        // Post-data, in pg_dump's dependency order but with the expensive parts in parallel:
        // indexes and plain constraints; index attachments; foreign keys grouped by the table
        // they are on (each validates with a scan); then triggers, rules and the rest.
        self.enter("building indexes, constraints and triggers (post-data)");
        let (parallel, ordered): (Vec<_>, Vec<_>) = post
            .entries
            .iter()
            .cloned()
            .partition(|e| builds_in_parallel(&e.kind));
        pool(&target, self.jobs, parallel, {
            let preamble = post.preamble.clone();
            move |client, entry| {
                let preamble = preamble.clone();
                async move { run_entry(&client, &preamble, &entry).await }
            }
        })
        .await?;
        tracing::info!(
            "indexes and constraints built in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let (attach, ordered): (Vec<_>, Vec<_>) =
            ordered.into_iter().partition(|e| e.kind == "INDEX ATTACH");
        let (foreign, rest): (Vec<_>, Vec<_>) =
            ordered.into_iter().partition(|e| e.kind == "FK CONSTRAINT");
        for entry in &attach {
            run_entry(&main, &post.preamble, entry).await?;
        }
        // Foreign keys are added NOT VALID one after the other (catalog changes, no scan); the
        // scans that validate them run below, in parallel. A validation locks only its own table
        // against schema changes, so keys on different tables referencing the same table do not
        // wait for each other the way `ADD … FOREIGN KEY` does.
        let mut work: Vec<TableWork> = self
            .plan
            .selected
            .iter()
            .map(|&t| TableWork {
                table: Some(t),
                bytes: self.manifest.tables[t].logical_bytes,
                validations: Vec::new(),
            })
            .collect();
        let partitioned = catalog::partitioned_tables(&main).await?;
        for entry in foreign {
            let Some(fk) = entry.foreign_key(&partitioned) else {
                run_entry(&main, &post.preamble, &entry).await?;
                continue;
            };
            let add = Entry {
                sql: fk.add_not_valid,
                ..entry.clone()
            };
            run_entry(&main, &post.preamble, &add).await?;
            let validate = Entry {
                sql: fk.validate,
                ..entry
            };
            let manifest = &self.manifest;
            match work.iter_mut().find(|w| {
                w.table.is_some_and(|t| {
                    let table = &manifest.tables[t];
                    (&table.schema, &table.name) == (&fk.table.0, &fk.table.1)
                })
            }) {
                Some(w) => w.validations.push(validate),
                None => work.push(TableWork {
                    table: None,
                    bytes: 0,
                    validations: vec![validate],
                }),
            }
        }
        let rest: String = rest.iter().map(|e| e.sql.as_str()).collect();
        main.batch_execute(&format!("{}{rest}", post.preamble))
            .await
            .map_err(Error::db(
                "creating triggers, rules and the rest (post-data)",
            ))?;
        let sequences: Vec<&SequenceValue> = self.manifest.sequences.iter().collect();
        set_sequences(&main, &sequences).await?;

        // Per table over N connections, biggest first: VACUUM (ANALYZE), validate its foreign
        // keys, verify. The vacuum marks the freshly loaded pages all-visible, so validating a
        // key whose column is indexed reads that index alone instead of the whole table (the
        // sample's biggest key: 1.3 s → 0.5 s after a 0.4 s vacuum), and the new database
        // starts vacuumed: index-only scans work and autovacuum has little to catch up on (a
        // vacuum leaves pages another session holds at that moment for the next one).
        // A table's vacuum and its own validations never overlap (same connection); neither
        // blocks work on other tables.
        work.sort_by_key(|w| std::cmp::Reverse(w.bytes));
        self.enter("vacuuming, validating foreign keys and verifying rows");
        let job = self.clone();
        let preamble = post.preamble.clone();
        let rows_loaded = Arc::new(rows_loaded);
        let results = pool(&target, self.jobs, work, move |client, work| {
            let (job, preamble, rows_loaded) = (job.clone(), preamble.clone(), rows_loaded.clone());
            async move {
                let table = work.table.map(|t| (t, &job.manifest.tables[t]));
                if let Some((_, table)) = table {
                    client
                        .batch_execute(&format!("VACUUM (ANALYZE) {}", table.qualified()))
                        .await
                        .map_err(Error::db(format!(
                            "VACUUM (ANALYZE) {}",
                            table.display_name()
                        )))?;
                }
                for entry in &work.validations {
                    run_entry(&client, &preamble, entry).await?;
                }
                let Some((t, table)) = table else {
                    return Ok(None);
                };
                let loaded = rows_loaded.get(&t).copied().unwrap_or(0);
                verify_table(&client, table, job.plan.verification, Some(loaded))
                    .await
                    .map(Some)
            }
        })
        .await?;
        let mut results: Vec<TableResult> = results.into_iter().flatten().collect();
        results.sort_by(|a, b| a.name.cmp(&b.name));
        tracing::info!(
            "tables vacuumed and analyzed, foreign keys validated, rows verified in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        set_autovacuum(&main, &paused, true).await?;
        create_event_triggers(&main, &post.preamble, &event_triggers).await?;
        let outcome = outcome(&main, results, &[], &not_valid_in(&[&pre, &post])).await?;
        Ok(Outcome {
            large_objects,
            ..outcome
        })
    }

    /// Runs the strategy inside one transaction on the target, committing only if it
    /// succeeds and verification passes.
    async fn in_transaction(&self) -> Result<Outcome> {
        let _cleanup = CleanupGuard::new();
        let session = session(&self.plan.destination_settings).await?;
        let client = &session;
        // Only a superuser may set session_replication_role; the owner's restore switches
        // off user triggers by name instead (`user_triggers_off`), and a whole-database
        // replace needs neither: its tables get their triggers after the load.
        let begin = if self.plan.skip_foreign_key_triggers {
            "BEGIN; SET LOCAL lock_timeout = '60s'; SET LOCAL session_replication_role = replica"
        } else {
            "BEGIN; SET LOCAL lock_timeout = '60s'"
        };
        client
            .batch_execute(begin)
            .await
            .map_err(Error::db("starting the recovery transaction"))?;
        let roles = self.role_statements();
        let body = async {
            match (self.plan.strategy, self.plan.subset) {
                (Strategy::Replace, false) => {
                    // CREATE ROLE is transactional: a rollback takes the roles back too.
                    match client.batch_execute(&roles).await {
                        Ok(()) => self.replace_all(client).await,
                        Err(e) => Err(Error::db("creating the backup's roles (--create-roles)")(e)),
                    }
                }
                (Strategy::Replace, true) => self.replace_tables(client).await,
                _ => self.missing_rows(client).await,
            }
        };
        let outcome = interruptible(async { body.await.and_then(checked) }).await;
        match outcome {
            Ok(mut outcome) => {
                outcome.by_hand = self.plan.globals.by_hand.clone();
                client
                    .batch_execute("COMMIT")
                    .await
                    .map_err(Error::db("committing the recovery"))?;
                let names: Vec<String> = self.selected().iter().map(|t| t.qualified()).collect();
                if !names.is_empty() {
                    client
                        .batch_execute(&format!("ANALYZE {}", names.join(", ")))
                        .await
                        .map_err(Error::db("ANALYZE"))?;
                }
                Ok(outcome)
            }
            Err(e) => {
                // A stopped statement may still be running on the server; closing the
                // connection discards the transaction just as surely as waiting for it.
                let rolled_back = tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    client.batch_execute("ROLLBACK"),
                )
                .await;
                let state = match rolled_back {
                    Ok(Ok(())) => format!(
                        "the transaction was rolled back: {} is exactly as it was",
                        self.plan.destination_settings.dbname
                    ),
                    _ => format!(
                        "the connection was closed before commit, so PostgreSQL discarded the changes: {} is as it was",
                        self.plan.destination_settings.dbname
                    ),
                };
                Err(match e {
                    Error::Interrupted { signal, .. } => Error::Interrupted {
                        signal,
                        state: format!(
                            "the {} restore of backup {} stopped before commit\n  {state}",
                            self.plan.strategy, self.manifest.id
                        ),
                    },
                    other => Error::Recovery {
                        source: Box::new(other),
                        state,
                    },
                })
            }
        }
    }

    /// Loads every stored range of table `t` into `into` on one connection.
    async fn load_table(
        &self,
        client: &Client,
        t: usize,
        into: &str,
        overall: &ProgressBar,
    ) -> Result<()> {
        let table = &self.manifest.tables[t];
        let item = self.progress.item(&table.qualified(), table.logical_bytes);
        for part in &table.parts {
            load_part(
                client,
                &self.repo,
                &self.manifest.id,
                table,
                part,
                into,
                &item,
            )
            .await?;
        }
        Progress::advance(overall, table.logical_bytes);
        item.finish_and_clear();
        Ok(())
    }

    /// Loads the tables, in `order`, into themselves.
    async fn load_in_order(&self, client: &Client, order: &[usize]) -> Result<()> {
        let overall = self.overall();
        for &t in order {
            self.load_table(client, t, &self.manifest.tables[t].qualified(), &overall)
                .await?;
        }
        overall.finish_and_clear();
        Ok(())
    }

    async fn verify_in(&self, client: &Client) -> Result<Vec<TableResult>> {
        let mut results = Vec::new();
        for table in self.selected() {
            results.push(verify_table(client, table, self.plan.verification, None).await?);
        }
        Ok(results)
    }

    async fn check_foreign_keys(&self, client: &Client) -> Result<()> {
        let names: Vec<String> = self.selected().iter().map(|t| t.qualified()).collect();
        for (constraint, sql) in catalog::foreign_key_checks(client, &names).await? {
            let broken = client
                .query_opt(&sql, &[])
                .await
                .map_err(Error::db(format!("checking {constraint}")))?;
            if broken.is_some() {
                return Err(Error::Verification(format!(
                    "foreign key {constraint} would be violated: some restored rows have no matching row (or rows elsewhere lost theirs); \
                     include the related tables with -t or --cascade"
                )));
            }
        }
        Ok(())
    }

    /// Whole-database replace: drop the backup's schemas and rebuild them.
    async fn replace_all(&self, client: &Client) -> Result<Outcome> {
        let pre = self.section(&self.manifest.pre_data, "pre-data").await?;
        let mut post = self.section(&self.manifest.post_data, "post-data").await?;
        let drops: String = pre
            .entries
            .iter()
            .chain(&post.entries)
            .filter_map(Entry::drop_database_object)
            .collect();
        client.batch_execute(&drops).await.map_err(Error::db(
            "dropping the backup's publications and event triggers",
        ))?;
        for schema in &self.manifest.schemas {
            client
                .batch_execute(&format!(
                    "DROP SCHEMA IF EXISTS {} CASCADE",
                    quote_ident(schema)
                ))
                .await
                .map_err(Error::db(format!("dropping schema {schema}")))?;
        }
        if self.manifest.schemas.iter().any(|s| s == "public") {
            client
                .batch_execute(
                    "CREATE SCHEMA public AUTHORIZATION pg_database_owner; GRANT USAGE ON SCHEMA public TO PUBLIC; \
                     COMMENT ON SCHEMA public IS 'standard public schema'",
                )
                .await
                .map_err(Error::db("recreating schema public"))?;
        }
        // The backup's large objects are replaced (pre-data creates them again); others the
        // database holds now are kept, as `pg_restore --clean` keeps them.
        if let Some(lo) = &self.manifest.large_objects {
            client
                .query(
                    "SELECT count(pg_catalog.lo_unlink(oid)) FROM pg_catalog.pg_largeobject_metadata \
                     WHERE oid = ANY ($1::oid[])",
                    &[&lo.oids],
                )
                .await
                .map_err(Error::db("removing the large objects the backup replaces"))?;
        }
        client
            .batch_execute(&pre.to_sql())
            .await
            .map_err(Error::db("creating the schema (pre-data)"))?;
        let order: Vec<usize> = self.plan.selected.clone();
        self.load_in_order(client, &order).await?;
        let large_objects = self.restore_large_objects(client).await?;
        let event_triggers = post.take_event_triggers();
        client
            .batch_execute(&post.to_sql())
            .await
            .map_err(Error::db("post-data (indexes, constraints, triggers)"))?;
        let sequences: Vec<&SequenceValue> = self.manifest.sequences.iter().collect();
        set_sequences(client, &sequences).await?;
        create_event_triggers(client, &post.preamble, &event_triggers).await?;
        let tables = self.verify_in(client).await?;
        let outcome = outcome(client, tables, &[], &not_valid_in(&[&pre, &post])).await?;
        Ok(Outcome {
            large_objects,
            ..outcome
        })
    }

    /// Subset replace: empty the chosen tables and reload them.
    async fn replace_tables(&self, client: &Client) -> Result<Outcome> {
        let names: Vec<String> = self.selected().iter().map(|t| t.qualified()).collect();
        let before = self.not_valid_now(client, &names).await?;
        let triggers_on = user_triggers_off(client, &names).await?;
        // An extension configuration table keeps the rows its extension made; the user's
        // rows (those its filter selects) are replaced.
        let (filtered, whole): (Vec<&TableEntry>, Vec<&TableEntry>) = self
            .selected()
            .into_iter()
            .partition(|t| t.filter.is_some());
        let mut empty: Vec<String> = filtered
            .iter()
            .map(|t| {
                format!(
                    "DELETE FROM ONLY {} {}",
                    t.qualified(),
                    t.filter.as_deref().unwrap_or_default()
                )
            })
            .collect();
        // A partitioned table whose leaves are all being emptied goes into the same TRUNCATE:
        // foreign keys on it reference (or are referenced by) those leaves, and PostgreSQL
        // refuses to empty one side of a key alone.
        if !whole.is_empty() {
            let whole: Vec<String> = whole.iter().map(|t| t.qualified()).collect();
            let parents = catalog::partitioned_covered_by(client, &whole).await?;
            let listed: Vec<String> = whole
                .iter()
                .map(|n| format!("ONLY {n}"))
                .chain(parents)
                .collect();
            empty.push(format!("TRUNCATE {}", listed.join(", ")));
        }
        client
            .batch_execute(&empty.join(";\n"))
            .await
            .map_err(Error::db(format!("emptying {}", names.join(", "))))?;
        let order = parents_first(&self.manifest, &self.plan.selected);
        self.load_in_order(client, &order).await?;
        self.check_foreign_keys(client).await?;
        restore_triggers(client, &triggers_on).await?;
        let owned = catalog::owned_sequences(client, &names).await?;
        let sequences: Vec<&SequenceValue> = self
            .manifest
            .sequences
            .iter()
            .filter(|s| owned.contains(&(s.schema.clone(), s.name.clone())))
            .collect();
        set_sequences(client, &sequences).await?;
        let tables = self.verify_in(client).await?;
        outcome(client, tables, &names, &before).await
    }

    /// Re-insert rows whose primary key is missing from the target.
    async fn missing_rows(&self, client: &Client) -> Result<Outcome> {
        let names: Vec<String> = self.selected().iter().map(|t| t.qualified()).collect();
        let before = self.not_valid_now(client, &names).await?;
        let triggers_on = user_triggers_off(client, &names).await?;
        let order = parents_first(&self.manifest, &self.plan.selected);
        let overall = self.overall();
        let mut results = Vec::new();
        for &t in &order {
            let table = &self.manifest.tables[t];
            let key = catalog::primary_key(client, &table.qualified()).await?;
            let scratch = format!("larder_missing_{t}");
            client
                .batch_execute(&format!(
                    "CREATE TEMP TABLE {scratch} (LIKE {}) ON COMMIT DROP",
                    table.qualified()
                ))
                .await
                .map_err(Error::db(format!("preparing {}", table.display_name())))?;
            self.load_table(client, t, &scratch, &overall).await?;
            let matches = key
                .iter()
                .map(|k| format!("x.{k} = m.{k}"))
                .collect::<Vec<_>>()
                .join(" AND ");
            let cols = table.columns.join(", ");
            let inserted = client
                .execute(
                    &format!(
                        "INSERT INTO {target} ({cols}) OVERRIDING SYSTEM VALUE SELECT {cols} FROM {scratch} m \
                         WHERE NOT EXISTS (SELECT 1 FROM ONLY {target} x WHERE {matches})",
                        target = table.qualified()
                    ),
                    &[],
                )
                .await
                .map_err(Error::db(format!("re-inserting missing rows of {}", table.display_name())))?;
            let still_missing: i64 = client
                .query_one(
                    &format!("SELECT count(*) FROM {scratch} m WHERE NOT EXISTS (SELECT 1 FROM ONLY {} x WHERE {matches})", table.qualified()),
                    &[],
                )
                .await
                .map_err(Error::db(format!("verifying {}", table.display_name())))?
                .get(0);
            let rows: i64 = client
                .query_one(
                    &format!("SELECT count(*) FROM ONLY {}", table.qualified()),
                    &[],
                )
                .await
                .map_err(Error::db(format!("counting {}", table.display_name())))?
                .get(0);
            results.push(TableResult {
                name: table.display_name(),
                backup_rows: table.rows,
                target_rows: rows,
                inserted_rows: Some(inserted),
                checksum_ok: None,
                ok: still_missing == 0,
            });
        }
        overall.finish_and_clear();
        self.check_foreign_keys(client).await?;
        restore_triggers(client, &triggers_on).await?;
        results.sort_by(|a, b| a.name.cmp(&b.name));
        outcome(client, results, &names, &before).await
    }

    /// Tags of the constraints on `tables` that are NOT VALID in the target before the restore
    /// touches it (`replace -t` and `missing-rows` keep the target's constraints).
    async fn not_valid_now(&self, client: &Client, tables: &[String]) -> Result<HashSet<String>> {
        Ok(catalog::unvalidated_constraints(client, tables)
            .await?
            .into_iter()
            .flat_map(|c| c.tags)
            .collect())
    }
}
