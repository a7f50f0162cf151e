//! How results look: aligned tables for people, JSON for machines. Every command hands its
//! result to [`report`] (errors to [`error`]), which draws it or prints the one JSON envelope
//! `{"status", "kind", "error", KEY: data}`. Field names in JSON are the serde names of the
//! engine's report types, so CLI, JSON and docs share one vocabulary.

use comfy_table::presets::NOTHING;
use comfy_table::{Cell, CellAlignment, ColumnConstraint, ContentArrangement, Table};
use larder::Error;
use larder::config::Setting;
use larder::engine::alerts::{Overview, Sent};
use larder::engine::backup::Created;
use larder::engine::delete::{DeletePlan, DeleteReport};
use larder::engine::export::ExportReport;
use larder::engine::list::BackupSummary;
use larder::engine::monitor::Health;
use larder::engine::pin::PinReport;
use larder::engine::progress::human_bytes;
use larder::engine::prune::PruneReport;
use larder::engine::recovery::plan::RecoveryPlan;
use larder::engine::recovery::replay_plan::ReplayPlan;
use larder::engine::recovery::restore::RestoreReport;
use larder::engine::schedule::ScheduleStatus;
use larder::engine::sync::{CopyReport, Presence};
use larder::engine::validate::{CopyStatus, CopyValidation, ValidationReport};
use larder::plugin::PluginSummary;
use larder::plugin::conformance::Conformance;
use larder::plugin::inspect::Inspection;
use larder::repository::lock::UnlockReport;
use larder::repository::manifest::{BackupType, IncrementalInfo, Manifest, ValidatorRun};
use larder::repository::signing::Checked;
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once a write to stdout failed (the reader closed the pipe, as `| head -1` does): the
/// rest of the output is dropped and the command carries on to its own exit status.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes one line to stdout. A closed pipe is the reader's choice, not an error worth a
/// panic (which `println!` would raise), nor a reason to abandon a restore half-way.
pub fn out(line: std::fmt::Arguments) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut stdout = std::io::stdout().lock();
    if writeln!(stdout, "{line}")
        .and_then(|_| stdout.flush())
        .is_err()
    {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
    }
}

/// Writes to stderr, ignoring a closed stderr (`2>&1 | head`) for the same reason.
pub fn err(text: std::fmt::Arguments) {
    let _ = std::io::stderr().lock().write_fmt(text);
}

/// `println!` through [`out`].
macro_rules! say {
    ($($arg:tt)*) => { $crate::output::out(format_args!($($arg)*)) };
}

/// `eprintln!` through [`err`].
macro_rules! note {
    ($($arg:tt)*) => { $crate::output::err(format_args!("{}\n", format_args!($($arg)*))) };
}
pub(crate) use note;

mod drill;
pub use drill::Drills;

/// A command's result as people and scripts see it: [`Report::human`] draws it for people;
/// with `--json` it is serialized under [`Report::KEY`] in the envelope every command prints.
pub trait Report: Serialize {
    /// The key the data sits under in the JSON envelope (stable; listed in the README).
    const KEY: &'static str;
    /// Prints it for people.
    fn human(&self);
}

/// How a command that ran to its end finished.
#[must_use]
pub enum Outcome {
    /// It did what was asked: exit 0.
    Done,
    /// It ran and printed its report, but what it found is a failure (a damaged copy, a
    /// failed health check, a copy that could not be made): an outcome, not an error; exits
    /// with the error's code and says why on stderr.
    Failed(Error),
}

impl Outcome {
    pub fn of(failure: Option<Error>) -> Outcome {
        failure.map_or(Outcome::Done, Outcome::Failed)
    }
}

/// The one rendering path: `report` for people, or with `--json` the envelope
/// `{"status": "ok"|"failed", "kind"?, "error"?, KEY: data}`; `failure` is how a completed
/// report fails (exit 1), `None` for success.
pub fn report<R: Report + ?Sized>(json: bool, report: &R, failure: Option<Error>) -> Outcome {
    if json {
        print_json(&envelope(report, failure.as_ref()));
    } else {
        report.human();
    }
    Outcome::of(failure)
}

/// The envelope of a report: status `ok`, or `failed` with the kind and message of
/// `failure`, and the data under `R::KEY`.
fn envelope<R: Report + ?Sized>(
    report: &R,
    failure: Option<&Error>,
) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::to_value(report) {
        Ok(data) => {
            let status = if failure.is_some() { "failed" } else { "ok" };
            let mut envelope = head(status, failure);
            envelope.insert(R::KEY.into(), data);
            envelope
        }
        // Not expected of our own types, but scripts must still learn that the data is missing.
        Err(e) => head(
            "error",
            Some(&Error::Internal(format!(
                "cannot encode the {} report as JSON: {e}",
                R::KEY
            ))),
        ),
    }
}

/// The envelope of a command that failed before it had anything to report (`--json`):
/// `{"status": "error"|"interrupted", "kind": …, "error": …}`.
pub fn error(e: &Error) {
    let status = match e {
        Error::Interrupted { .. } => "interrupted",
        _ => "error",
    };
    print_json(&head(status, Some(e)));
}

/// The envelope's status, and the kind and message of what failed.
fn head(status: &str, failure: Option<&Error>) -> serde_json::Map<String, serde_json::Value> {
    let mut head = serde_json::Map::new();
    head.insert("status".into(), status.into());
    if let Some(e) = failure {
        head.insert("kind".into(), e.kind().into());
        head.insert("error".into(), e.to_string().into());
    }
    head
}

fn print_json(value: &serde_json::Map<String, serde_json::Value>) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => say!("{text}"),
        Err(e) => note!("error: cannot encode JSON output: {e}"),
    }
}

/// The width human tables fit by default: long cells wrap, and listings leave out their
/// less needed columns; `--wide` shows every column at full width.
pub const TABLE_WIDTH: u16 = 120;

static WIDE: AtomicBool = AtomicBool::new(false);

/// `--wide`: every column, nothing wrapped.
pub fn set_wide(wide: bool) {
    WIDE.store(wide, Ordering::Relaxed);
}

fn wide() -> bool {
    WIDE.load(Ordering::Relaxed)
}

fn table(headers: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(NOTHING);
    t.set_header(headers.iter().map(Cell::new));
    if !wide() {
        t.set_content_arrangement(ContentArrangement::Dynamic);
        t.set_width(TABLE_WIDTH);
        // The first column holds what people copy (backup ids, table names): never wrapped.
        if let Some(first) = t.column_mut(0) {
            first.set_constraint(ColumnConstraint::ContentWidth);
        }
    }
    t
}

fn right(text: impl ToString) -> Cell {
    Cell::new(text.to_string()).set_alignment(CellAlignment::Right)
}

fn seconds(s: f64) -> String {
    if s < 60.0 {
        format!("{s:.1}s")
    } else {
        humantime::format_duration(std::time::Duration::from_secs(s as u64)).to_string()
    }
}

/// What each validator found, one line per finding (and one per validator that found nothing).
fn findings(runs: &[ValidatorRun]) {
    for run in runs {
        if run.findings.is_empty() {
            say!(
                "  validator '{}' ({} {}): no findings",
                run.name,
                run.plugin,
                run.version
            );
        }
        for f in &run.findings {
            let column = f
                .column
                .as_deref()
                .map(|c| format!(".{c}"))
                .unwrap_or_default();
            say!(
                "  validator '{}': {} {} on {}{column}: {}",
                run.name,
                f.severity.to_string().to_uppercase(),
                f.rule,
                f.table,
                f.message
            );
        }
    }
}

fn backup_created(
    m: &Manifest,
    summary: &BackupSummary,
    repo: &str,
    copies: &[CopyReport],
    failures: &[String],
) {
    say!("Backup {} created ('{}')", m.id, m.name);
    say!(
        "  {} backup of {} (PostgreSQL {}): {} tables, {} rows, {} sequences",
        m.backup_type,
        m.source.database,
        m.source.server_version,
        m.tables.len(),
        m.rows(),
        m.sequences.len()
    );
    say!(
        "  {} of data stored as {} ({} new) in {}",
        human_bytes(summary.logical_bytes),
        human_bytes(summary.stored_bytes),
        human_bytes(summary.new_bytes),
        seconds(summary.duration_seconds)
    );
    say!("  repository: {repo}");
    for copy in copies {
        say!(
            "  copied to target '{}': {} new chunks ({}), {} already there",
            copy.to,
            copy.chunks_copied,
            human_bytes(copy.bytes_copied),
            copy.chunks_present
        );
    }
    for failure in failures {
        say!("  NOT copied to {failure}");
    }
    if let Some(info) = &m.incremental {
        tracking(m.backup_type, info);
    }
    let mut reused = std::collections::BTreeMap::<&str, usize>::new();
    for from in m
        .tables
        .iter()
        .filter_map(|t| t.tracked.as_ref()?.reused_from.as_deref())
    {
        *reused.entry(from).or_default() += 1;
    }
    if !reused.is_empty() {
        let from: Vec<String> = reused
            .iter()
            .map(|(id, n)| format!("{n} from backup {id}"))
            .collect();
        say!(
            "  unchanged since the backup that read them, reused (not read): {} tables, {}",
            reused.values().sum::<usize>(),
            from.join(", ")
        );
    }
    findings(&m.validators);
    say!("  next: backup-cli backup validate {}", m.id);
}

/// What a backup taken with change tracking says about its chain and changes.
fn tracking(backup_type: BackupType, info: &IncrementalInfo) {
    if backup_type == BackupType::Incremental {
        say!(
            "  changes: {} records in {} transactions, LSN {} to {}{}",
            info.changes.rows,
            info.transactions,
            info.start_lsn,
            info.end_lsn,
            match (info.first_commit, info.last_commit) {
                (Some(first), Some(last)) => format!(
                    ", commits {} to {}",
                    first.format("%Y-%m-%d %H:%M:%S%.6f"),
                    last.format("%Y-%m-%d %H:%M:%S%.6f UTC")
                ),
                _ => String::new(),
            }
        );
        for t in &info.tables {
            say!(
                "    {}: {} inserts, {} updates, {} deletes, {} truncates",
                t.table,
                t.inserts,
                t.updates,
                t.deletes,
                t.truncates
            );
        }
    } else {
        say!(
            "  change tracking: slot {}, the chain's incrementals start at LSN {}",
            info.slot,
            info.start_lsn
        );
    }
    for n in &info.not_exact {
        say!(
            "  NOT exact: {}: {}; run `{}` and take a new full backup",
            n.table,
            n.reason,
            n.fix
        );
    }
}

fn backup_list(backups: &[BackupSummary], repo: &str) {
    if backups.is_empty() {
        say!("No backups in {repo} yet. Create one with: backup-cli backup create");
        return;
    }
    // Without --wide: the columns an operator picks a backup by (duration, logical size and
    // status are in --wide and --json).
    let all = wide();
    // Several databases in one repository: one column says whose each backup is.
    let several = backups.iter().any(|b| b.database != backups[0].database);
    let mut headers = vec!["ID", "NAME"];
    if several {
        headers.push("DATABASE");
    }
    headers.extend(["TYPE", "CREATED (UTC)"]);
    if all {
        headers.push("DURATION");
    }
    headers.push("STORED");
    if all {
        headers.push("LOGICAL");
    }
    headers.extend(["TABLES", "ROWS"]);
    if all {
        headers.push("STATUS");
    }
    headers.push("TARGETS");
    let mut t = table(&headers);
    for b in backups {
        let mut row = vec![Cell::new(&b.id), Cell::new(&b.name)];
        if several {
            row.push(Cell::new(&b.database));
        }
        row.extend([
            Cell::new(b.type_and_chain(all)),
            Cell::new(
                b.created_at
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                    .unwrap_or_default(),
            ),
        ]);
        if all {
            row.push(right(seconds(b.duration_seconds)));
        }
        row.push(right(human_bytes(b.stored_bytes)));
        if all {
            row.push(right(human_bytes(b.logical_bytes)));
        }
        row.extend([right(b.tables), right(b.rows)]);
        if all {
            row.push(Cell::new(b.status));
        }
        row.push(Cell::new(
            b.targets
                .iter()
                .map(|(name, presence)| match presence {
                    Presence::Complete => name.clone(),
                    Presence::Incomplete => format!("{name} (INCOMPLETE)"),
                    Presence::Damaged => format!("{name} (DAMAGED)"),
                })
                .collect::<Vec<_>>()
                .join(", "),
        ));
        t.add_row(row);
    }
    say!("{t}");
    for b in backups {
        if let Some(error) = &b.error {
            say!("backup {} is damaged: {error}", b.id);
        }
        if let Some(why) = &b.suspect_because {
            say!(
                "backup {} is SUSPECT (kept; `latest` passes over it): {why}",
                b.id
            );
        }
    }
}

fn validation(report: Option<&ValidationReport>, copies: &[CopyValidation]) {
    if let Some(report) = report {
        findings(&report.validators);
        let mut t = table(&[
            "TABLE",
            "ROWS (MANIFEST)",
            "ROWS (COUNTED)",
            "CHUNKS",
            "STATUS",
        ]);
        for item in &report.items {
            t.add_row(vec![
                Cell::new(&item.name),
                right(item.expected_rows),
                right(if item.ok || item.found_rows > 0 {
                    item.found_rows.to_string()
                } else {
                    "-".into()
                }),
                right(item.chunks),
                Cell::new(if item.ok { "ok" } else { "FAILED" }),
            ]);
        }
        say!("Backup {} ('{}')", report.backup_id, report.name);
        say!("{t}");
        for problem in report.items.iter().flat_map(|i| i.problems.iter()) {
            say!("  problem: {problem}");
        }
        for warning in &report.warnings {
            say!("  warning: {warning}");
        }
    }
    let mut t = table(&["COPY ON TARGET", "STATUS", "DETAIL"]);
    for c in copies {
        t.add_row(vec![
            Cell::new(&c.target),
            Cell::new(match c.status {
                CopyStatus::Intact => "intact",
                CopyStatus::Damaged => "DAMAGED",
                CopyStatus::Missing => "MISSING",
                CopyStatus::Unreachable => "UNREACHABLE",
            }),
            Cell::new(match (&c.first_problem, c.problems) {
                (Some(first), n) if n > 1 => format!("{first} (and {} more)", n - 1),
                (Some(first), _) => first.clone(),
                (None, _) => format!(
                    "{} chunks, {} re-read and verified",
                    c.chunks_checked,
                    human_bytes(c.bytes_checked)
                ),
            }),
        ]);
    }
    say!("{t}");
    let intact: Vec<&str> = copies
        .iter()
        .filter(|c| c.status == CopyStatus::Intact)
        .map(|c| c.target.as_str())
        .collect();
    if let Some(report) = report.filter(|r| r.ok) {
        say!(
            "Backup {} is valid on {}: {} chunks, {} re-read and verified per copy.",
            report.backup_id,
            intact.join(", "),
            report.chunks_checked,
            human_bytes(report.bytes_checked)
        );
    }
}

fn delete_plan(plan: &DeletePlan) {
    say!(
        "Dry run: deleting backup {} ({}) would remove:",
        plan.backup_id,
        plan.description
    );
    for target in &plan.reclaim {
        say!(
            "  on target '{}': its manifest, then garbage collection reclaims {} chunks ({}), keeping {} chunks other backups use",
            target.target,
            target.gc.chunks_deleted,
            human_bytes(target.gc.bytes_freed),
            target.gc.chunks_kept
        );
    }
    if !plan.kept_on.is_empty() {
        say!("  still kept on: {}", plan.kept_on.join(", "));
    }
    append_only_note(&plan.append_only_kept);
    say!(
        "Nothing was changed. To delete it, run the same command with --force instead of --dry-run."
    );
}

fn deleted(report: &DeleteReport) {
    say!(
        "Deleted backup {} ('{}'): removed {} chunks ({}), kept {} chunks still used by other backups.",
        report.backup_id,
        report.name,
        report.chunks_deleted,
        human_bytes(report.bytes_freed),
        report.chunks_kept
    );
    say!("  deleted from: {}", report.targets.join(", "));
    if !report.kept_on.is_empty() {
        say!("  still kept on: {}", report.kept_on.join(", "));
    }
    append_only_note(&report.append_only_kept);
}

/// What `backup delete` says of the copies it leaves on `append_only` targets.
fn append_only_note(targets: &[String]) {
    if !targets.is_empty() {
        say!(
            "  left on append_only target(s) {}: this host does not delete there (a maintenance host deletes with --allow-delete)",
            targets.join(", ")
        );
    }
}

fn synced(reports: &[CopyReport]) {
    if reports.is_empty() {
        say!("Every backup is complete on every target; nothing to copy.");
        return;
    }
    let mut t = table(&[
        "BACKUP",
        "FROM",
        "TO",
        "CHUNKS COPIED",
        "REWRITTEN",
        "BYTES",
        "ALREADY THERE",
    ]);
    for r in reports {
        t.add_row(vec![
            Cell::new(&r.backup_id),
            Cell::new(&r.from),
            Cell::new(&r.to),
            right(r.chunks_copied),
            right(r.chunks_rewritten),
            right(human_bytes(r.bytes_copied)),
            right(format!(
                "{} ({})",
                r.chunks_present,
                if r.verified { "hashed" } else { "by size" }
            )),
        ]);
    }
    say!("{t}");
}

fn pruned(report: &PruneReport) {
    if report.backups.is_empty() {
        say!("No backups; nothing to prune.");
        return;
    }
    let mut t = table(&[
        "BACKUP", "NAME", "CREATED", "POLICY", "DECISION", "RULE", "WHY",
    ]);
    for b in &report.backups {
        t.add_row(vec![
            Cell::new(&b.backup_id),
            Cell::new(&b.name),
            Cell::new(b.created_at.format("%Y-%m-%d %H:%M")),
            Cell::new(b.policy.as_deref().unwrap_or("-")),
            Cell::new(b.decision),
            Cell::new(b.rule.as_str()),
            Cell::new(&b.detail),
        ]);
    }
    say!("{t}");
    let doomed = report.to_delete().count();
    for id in &report.damaged_kept {
        say!("kept {id}: its manifest is damaged (prune never deletes what it cannot read)");
    }
    if report.dry_run {
        say!(
            "Dry run: {doomed} of {} backups would be deleted; nothing was changed.",
            report.backups.len()
        );
        return;
    }
    say!("Deleted {doomed} of {} backups.", report.backups.len());
    for target in &report.targets {
        say!(
            "  target '{}': {} backups removed, {} chunks ({}) reclaimed, {} chunks kept",
            target.target,
            target.backups_deleted.len(),
            target.gc.chunks_deleted,
            human_bytes(target.gc.bytes_freed),
            target.gc.chunks_kept
        );
        if target.append_only && !target.backups_kept.is_empty() {
            say!(
                "    append_only: kept {} backups there and collected nothing (prune it from a maintenance host with --allow-delete)",
                target.backups_kept.len()
            );
        }
        for kept in &target.backups_kept {
            if let Some(lock) = &kept.locked {
                say!(
                    "    kept {}: locked by S3 Object Lock ({} mode) until {}",
                    kept.backup_id,
                    lock.mode.to_ascii_lowercase(),
                    lock.until.format("%Y-%m-%d %H:%M:%S UTC")
                );
            }
        }
    }
}

fn pinned(report: &PinReport) {
    if !report.pinned {
        say!(
            "Unpinned backup {} on {}: retention applies to it again.",
            report.backup_id,
            report.targets.join(", ")
        );
        return;
    }
    say!(
        "Pinned backup {} on {} {}{}: retention keeps it.",
        report.backup_id,
        report.targets.join(", "),
        report
            .until
            .map_or("until unpinned".to_string(), |u| format!(
                "until {}",
                u.format("%Y-%m-%d %H:%M UTC")
            )),
        report
            .reason
            .as_ref()
            .map_or(String::new(), |r| format!(" ({r})"))
    );
}

fn plugins(plugins: &[PluginSummary]) {
    if plugins.is_empty() {
        say!(
            "No plugins are configured (add a [[targets]] entry with type = \"plugin\", a [[notifiers]] or a [[validators]] entry)."
        );
        return;
    }
    for p in plugins {
        say!("{} — {} {} ({})", p.target, p.name, p.version, p.world);
        say!("  file:     {}", p.path);
        say!(
            "  sha256:   {} ({})",
            p.sha256,
            if p.pinned { "pinned" } else { "NOT pinned" }
        );
        say!("  declares: {}", p.capabilities.join(", "));
        if p.granted.is_empty() {
            say!("  granted:  nothing");
        }
        for grant in &p.granted {
            say!("  granted:  {grant}");
        }
    }
}

fn inspection(i: &Inspection) {
    say!("{}", i.path);
    say!("  sha256:  {}", i.sha256);
    say!("  size:    {}", human_bytes(i.size));
    say!(
        "  world:   {}",
        i.world.as_deref().unwrap_or("none (not a Larder plugin)")
    );
    for export in &i.exports {
        say!("  exports: {export}");
    }
    for import in &i.imports {
        say!("  imports: {import}");
    }
    for ask in &i.asks_for {
        say!("  can use: {ask}");
    }
}

fn conformance(c: &Conformance) {
    say!("{}", c.path);
    say!("  world:   {}", c.world);
    if !c.plugin.is_empty() {
        say!(
            "  plugin:  {} {}",
            terminal_safe(&c.plugin),
            terminal_safe(&c.version)
        );
    }
    for setup in &c.setup {
        say!("  setup:   {setup}");
    }
    for check in &c.checks {
        say!(
            "  {}  {:<18} {}",
            if check.passed { "PASS" } else { "FAIL" },
            check.check,
            terminal_safe(&check.detail)
        );
    }
    let failed = c.failed();
    if failed.is_empty() {
        say!("{} of {} checks passed", c.checks.len(), c.checks.len());
    } else {
        say!(
            "{} of {} checks passed; failed: {}",
            c.checks.len() - failed.len(),
            c.checks.len(),
            failed.join(", ")
        );
    }
}

/// Text a plugin wrote, with control characters (terminal escapes, newlines) shown escaped.
fn terminal_safe(text: &str) -> String {
    if text.chars().any(char::is_control) {
        text.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect()
    } else {
        text.to_string()
    }
}

fn plugin_hash(file: &Path, sha256: &str) {
    say!("{sha256}  {}", file.display());
}

fn initialised(config: &Path, repo: &Path) {
    say!(
        "Wrote {} (edit the [database] section, or use DATABASE_URL / PG* variables).",
        config.display()
    );
    say!("Repository ready at {}.", repo.display());
    say!("Next: backup-cli backup create");
}

fn plan(plan: &RecoveryPlan) {
    let resolved = if plan.requested == plan.backup_id {
        String::new()
    } else {
        format!("{} = ", plan.requested)
    };
    say!("Recovery plan: {resolved}{}", plan.backup_summary());
    for passed in &plan.passed_over {
        say!("  newer, passed over: {passed}");
    }
    say!(
        "  strategy {} into database {} on {}:{}{}",
        plan.strategy,
        plan.destination.database,
        plan.destination.host,
        plan.destination.port,
        if plan.destination.exists {
            ""
        } else {
            " (to be created)"
        }
    );
    let mut t = table(&["TABLE", "ROWS (BACKUP)", "SIZE", "ROWS (DESTINATION NOW)"]);
    for row in &plan.tables {
        t.add_row(vec![
            Cell::new(&row.name),
            right(row.rows),
            right(human_bytes(row.bytes)),
            right(
                row.destination_rows
                    .map_or("-".to_string(), |r| r.to_string()),
            ),
        ]);
    }
    say!("{t}");
    if !plan.cascade_added.is_empty() {
        say!("  added by --cascade: {}", plan.cascade_added.join(", "));
    }
    if let Some(replay) = &plan.replay {
        replay_plan(replay);
    }
    say!("Requirements:");
    for r in &plan.requirements {
        say!(
            "  {:4} {}: {}",
            if r.ok { "ok" } else { "FAIL" },
            r.name,
            r.detail
        );
    }
    let g = &plan.globals;
    if !g.roles_to_create.is_empty() || !g.database_statements.is_empty() || !g.by_hand.is_empty() {
        say!("Roles and database settings:");
        if !g.existing_roles.is_empty() {
            say!("  exist: {}", g.existing_roles.join(", "));
        }
        if !g.roles_to_create.is_empty() {
            say!(
                "  {}: {}",
                if plan.create_roles {
                    "to be created (--create-roles)"
                } else {
                    "missing; --create-roles would create"
                },
                g.roles_to_create.join(", ")
            );
            for statement in &g.statements {
                say!("    {statement};");
            }
        }
        for statement in &g.database_statements {
            say!("  after the restore: {statement};");
        }
        say!("  passwords: {}", g.passwords);
        for step in &g.by_hand {
            say!("  by hand: {step}");
        }
    }
    say!(
        "Estimated duration: {} ({})",
        seconds(plan.estimated_seconds),
        plan.estimate_basis
    );
    say!("Risks:");
    for r in &plan.risks {
        say!("  - {r}");
    }
    say!("Steps:");
    for (i, s) in plan.steps.iter().enumerate() {
        say!("  {}. {}: {}", i + 1, s.name, s.detail);
    }
    if !plan.blockers.is_empty() {
        say!("Execute would refuse:");
        for b in &plan.blockers {
            say!("  - {b}");
        }
    }
}

fn replay_plan(replay: &ReplayPlan) {
    say!("Chain: {}", replay.describe());
    for link in &replay.chain {
        say!(
            "  {} ('{}'): {} change(s) in {} transaction(s), commits {} to {}, LSN {} to {}",
            link.backup_id,
            link.name,
            link.changes,
            link.transactions,
            link.first_commit.map_or("-".to_string(), |c| c
                .format("%Y-%m-%d %H:%M:%S UTC")
                .to_string()),
            link.last_commit.map_or("-".to_string(), |c| c
                .format("%Y-%m-%d %H:%M:%S UTC")
                .to_string()),
            link.start_lsn,
            link.end_lsn
        );
    }
    say!("Point in time reached: {}", replay.point);
    say!("Schema: {}", replay.schema);
    if !replay.tables.is_empty() {
        let mut t = table(&[
            "TABLE",
            "INSERTS",
            "UPDATES",
            "DELETES",
            "TRUNCATES",
            "EXACT",
        ]);
        for row in &replay.tables {
            t.add_row(vec![
                Cell::new(&row.table),
                right(row.inserts),
                right(row.updates),
                right(row.deletes),
                right(row.truncates),
                Cell::new(if row.exact { "yes" } else { "NO" }),
            ]);
        }
        say!("{t}");
    }
}

fn dry_run(chunks: usize) {
    say!("Dry run: {chunks} chunks read and verified, destination checked; nothing was written.");
}

fn restored(report: &RestoreReport) {
    let mut t = table(&[
        "TABLE",
        "ROWS (BACKUP)",
        "ROWS (DESTINATION)",
        "INSERTED",
        "CHECKSUM",
        "STATUS",
    ]);
    for row in &report.tables {
        t.add_row(vec![
            Cell::new(&row.name),
            right(row.backup_rows),
            right(row.destination_rows),
            right(row.inserted_rows.map_or("-".into(), |n| n.to_string())),
            Cell::new(match row.checksum_ok {
                Some(true) => "ok",
                Some(false) => "MISMATCH",
                None => "-",
            }),
            Cell::new(if row.ok { "ok" } else { "FAILED" }),
        ]);
    }
    say!("{t}");
    if !report.checksums_not_compared.is_empty() {
        say!(
            "Checked by row count only (replayed; no checksum exists for a table at the point reached): {}.",
            report.checksums_not_compared.join(", ")
        );
    }
    if let Some(lo) = &report.large_objects {
        say!(
            "Large objects: {} of {} restored ({}){}.",
            lo.destination_count,
            lo.backup_count,
            human_bytes(lo.destination_bytes),
            match lo.checksum_ok {
                Some(true) => ", checksum ok",
                Some(false) => ", checksum MISMATCH",
                None => "",
            }
        );
    }
    signature_evidence(&report.signature);
    for fallback in &report.fallbacks {
        say!("  fallback: {fallback}");
    }
    let steps: Vec<String> = report
        .steps
        .iter()
        .map(|s| format!("{} {}", s.name, seconds(s.seconds)))
        .collect();
    say!("Steps: {}.", steps.join(", "));
    if let Some(r) = &report.replayed {
        say!(
            "Replayed {} change(s) of {} transaction(s) from {} in {} statement(s); point in time reached: {}{}.",
            r.changes,
            r.transactions,
            r.backups.join(", "),
            r.statements,
            r.last_commit_time
                .map_or("the base backup".to_string(), |t| format!(
                    "commit at {}",
                    t.format("%Y-%m-%d %H:%M:%S%.6f UTC")
                )),
            r.last_commit_lsn
                .as_ref()
                .map_or(String::new(), |l| format!(" (LSN {l})"))
        );
    }
    if let Some(leftover) = &report.leftover_dropped {
        say!("  {leftover}");
    }
    say!(
        "Recovered backup {} into {} ({}) in {}: {} tables, {} rows verified; no constraint left NOT VALID{}.",
        report.backup_id,
        report.destination_database,
        report.strategy,
        seconds(report.duration_seconds),
        report.tables.len(),
        report.rows,
        if report.not_valid_as_before.is_empty() {
            String::new()
        } else {
            format!(
                " (already NOT VALID before the restore, kept so: {})",
                report.not_valid_as_before.join(", ")
            )
        }
    );
    if !report.roles_created.is_empty() {
        say!("Roles created: {}.", report.roles_created.join(", "));
    }
    if !report.by_hand.is_empty() {
        say!("Left for you to do by hand:");
        for step in &report.by_hand {
            say!("  - {step}");
        }
    }
    say!("Measured recovery time recorded in the repository for future plans.");
}

/// `text` as one word for a POSIX shell: bare when it holds only characters no shell treats
/// specially, else single-quoted, so a hint pasted into a terminal runs what it says.
fn shell_word(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:=@%+,".contains(c));
    if plain {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

fn exported(report: &ExportReport, path: &str) {
    say!(
        "Exported backup {} to {path}: {} tables, {} rows, {} of SQL{}.",
        report.backup_id,
        report.tables,
        report.rows,
        human_bytes(report.bytes),
        if report.compressed { " (zstd)" } else { "" }
    );
    say!(
        "Restore with: psql -v ON_ERROR_STOP=1 -d NEWDB -f {}{}",
        shell_word(path),
        if report.compressed {
            " (after zstd -d)"
        } else {
            ""
        }
    );
}

fn status_word(status: larder::engine::monitor::Status) -> &'static str {
    match status {
        larder::engine::monitor::Status::Ok => "ok",
        larder::engine::monitor::Status::Warn => "WARN",
        larder::engine::monitor::Status::Fail => "FAIL",
    }
}

fn health(health: &Health) {
    let mut t = table(&["CHECK", "STATUS", "DETAIL"]);
    for c in &health.checks {
        t.add_row(vec![
            Cell::new(&c.name),
            Cell::new(status_word(c.status)),
            Cell::new(&c.detail),
        ]);
    }
    say!("{t}");
    let mut actions = table(&["CHECK", "WHAT TO DO"]);
    for c in health
        .checks
        .iter()
        .filter(|c| c.status != larder::engine::monitor::Status::Ok)
    {
        if let Some(action) = &c.action {
            actions.add_row(vec![Cell::new(&c.name), Cell::new(action)]);
        }
    }
    if !actions.is_empty() {
        say!("{actions}");
    }
    say!(
        "Health: {} (checked {})",
        status_word(health.status),
        health.checked_at.format("%Y-%m-%d %H:%M:%S UTC")
    );
}

fn alerts(overview: &Overview) {
    if overview.alerts.is_empty() {
        say!("No active alerts.");
    } else {
        let mut t = table(&[
            "DATABASE",
            "ALERT",
            "CHECK",
            "STATUS",
            "LEVEL",
            "AGE",
            "LAST DELIVERIES",
            "DETAIL",
            "ACTION",
        ]);
        for a in &overview.alerts {
            let age = a.age_seconds.map_or("-".to_string(), |s| {
                humantime::format_duration(std::time::Duration::from_secs(s.max(0) as u64))
                    .to_string()
            });
            let deliveries: Vec<String> = a
                .deliveries
                .iter()
                .rev()
                .take(3)
                .map(|d| {
                    format!(
                        "{} {:?} {}",
                        d.channel,
                        d.state,
                        if d.ok {
                            "ok".to_string()
                        } else {
                            format!("failed ({} tries)", d.attempts)
                        }
                    )
                    .to_lowercase()
                })
                .collect();
            t.add_row(vec![
                Cell::new(&a.database),
                Cell::new(&a.alert),
                Cell::new(&a.check),
                Cell::new(a.status),
                Cell::new(a.level.map_or("-".to_string(), |l| l.to_string())),
                Cell::new(age),
                Cell::new(if deliveries.is_empty() {
                    "-".to_string()
                } else {
                    deliveries.join("\n")
                }),
                Cell::new(&a.detail),
                Cell::new(&a.action),
            ]);
        }
        say!("{t}");
    }
    if !overview.dead_letters.is_empty() {
        let mut t = table(&[
            "UNDELIVERED",
            "CHANNEL",
            "STATE",
            "SINCE",
            "ATTEMPTS",
            "LAST ERROR",
        ]);
        for d in &overview.dead_letters {
            t.add_row(vec![
                Cell::new(&d.event.alert),
                Cell::new(&d.channel),
                Cell::new(format!("{:?}", d.event.state).to_lowercase()),
                Cell::new(d.first_failed.format("%Y-%m-%d %H:%M UTC")),
                Cell::new(d.attempts),
                Cell::new(&d.last_error),
            ]);
        }
        say!(
            "Dead-letter list (delivered first on the next `monitor health --alert-on-failure`):\n{t}"
        );
    }
}

/// What `monitor health --alert-on-failure` delivered, on stderr.
pub fn alert_report(report: &larder::engine::alerts::Report, failing: bool) {
    for warning in &report.warnings {
        note!("warning: {warning}");
    }
    if report.channels == 0 && failing {
        note!(
            "warning: no alert channel is configured ([[notifiers]] or [monitor] alert_command in the config); \
             the failing checks are only reported here and in the exit code"
        );
    } else if !report.sent.is_empty() {
        let sent: Vec<String> = report
            .sent
            .iter()
            .filter(|s| s.ok)
            .map(|s| {
                format!(
                    "{} ({:?}, level {}) to {}",
                    s.alert, s.state, s.level, s.channel
                )
                .to_lowercase()
            })
            .collect();
        note!(
            "{} alert(s) sent{}; {} waiting in the dead-letter list",
            sent.len(),
            if sent.is_empty() {
                String::new()
            } else {
                format!(": {}", sent.join(", "))
            },
            report.dead_letters
        );
    }
}

/// `notify test`: one line per channel.
fn notify_test(sent: &[Sent]) {
    let mut t = table(&["CHANNEL", "RESULT", "ATTEMPTS", "ERROR"]);
    for s in sent {
        t.add_row(vec![
            Cell::new(&s.channel),
            Cell::new(if s.ok { "delivered" } else { "FAILED" }),
            Cell::new(s.attempts),
            Cell::new(s.error.as_deref().unwrap_or("-")),
        ]);
    }
    say!("{t}");
}

fn schedules(statuses: &[ScheduleStatus]) {
    if statuses.is_empty() {
        say!(
            "No schedules configured. Add [[schedules]] entries to the configuration (see examples/backup-cli.toml)."
        );
        return;
    }
    let when = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map_or("-".to_string(), |t| t.format("%Y-%m-%d %H:%M").to_string())
    };
    // One daemon per database: each once, in the order of the schedules.
    let mut daemons: Vec<&larder::engine::daemon::state::DaemonSummary> = Vec::new();
    for daemon in statuses.iter().filter_map(|s| s.daemon.as_ref()) {
        if !daemons.iter().any(|d| d.database == daemon.database) {
            daemons.push(daemon);
        }
    }
    for daemon in daemons {
        if daemon.running {
            say!(
                "Daemon for database {}: running (pid {} on {}, since {})",
                daemon.database,
                daemon.pid,
                daemon.host,
                daemon.since.format("%Y-%m-%d %H:%M UTC")
            );
        } else {
            say!(
                "Daemon for database {}: not running ({})",
                daemon.database,
                match daemon.stopped_at {
                    Some(at) => format!("stopped {}", at.format("%Y-%m-%d %H:%M UTC")),
                    None => format!(
                        "pid {} on {} ended without stopping cleanly",
                        daemon.pid, daemon.host
                    ),
                }
            );
        }
        if let Some(health) = &daemon.last_health {
            say!(
                "Last health check: {} at {}{}",
                health.status,
                health.at.format("%Y-%m-%d %H:%M UTC"),
                if health.alerts.is_empty() {
                    String::new()
                } else {
                    format!(" (alerts: {})", health.alerts.join(", "))
                }
            );
        }
    }
    // Several databases: which one each schedule backs up.
    let several = statuses.iter().any(|s| s.database.is_some());
    let mut header = vec!["NAME"];
    if several {
        header.push("DATABASE");
    }
    header.extend([
        "TYPE",
        "CRON",
        "TIME ZONE",
        "RETENTION",
        "LAST BACKUP/DRILL",
        "LAST RUN",
        "NEXT DUE",
        "STATUS",
    ]);
    let mut t = table(&header);
    for s in statuses {
        let last_run = s.last_run.as_ref().map_or("-".to_string(), |r| {
            format!(
                "{} {}",
                r.started_at.format("%m-%d %H:%M"),
                serde_json::to_value(r.outcome)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
            )
        });
        let mut row = vec![Cell::new(&s.name)];
        if several {
            row.push(Cell::new(s.database.as_deref().unwrap_or("-")));
        }
        row.extend([
            Cell::new(s.schedule_type),
            Cell::new(&s.cron),
            Cell::new(&s.timezone),
            Cell::new(s.retention.as_deref().unwrap_or("-")),
            Cell::new(when(
                s.last_drill
                    .as_ref()
                    .map(|d| d.finished_at)
                    .or(s.last_backup_at),
            )),
            Cell::new(last_run),
            Cell::new(when(s.next_start.or(s.next_due))),
            Cell::new(s.status),
        ]);
        t.add_row(row);
    }
    say!("{t}");
}

/// `schedule status NAME`: one schedule, a line per fact.
fn schedule_detail(s: &ScheduleStatus) {
    let when = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M:%S UTC").to_string();
    say!(
        "Schedule {} ({}{}): {}",
        s.name,
        s.schedule_type,
        s.database
            .as_deref()
            .map(|d| format!(", database {d}"))
            .unwrap_or_default(),
        s.status
    );
    say!("  cron:        {} ({})", s.cron, s.timezone);
    if let Some(retention) = &s.retention {
        say!("  retention:   {retention}");
    }
    if let Some(due) = s.previous_due {
        say!("  last due:    {}", when(due));
    }
    match (&s.last_drill, &s.last_backup_id, s.last_backup_at) {
        (Some(d), _, _) => say!(
            "  last passed drill: {} of backup {}, finished {}, recovery {:.1} s against an RTO of {}",
            d.drill_id,
            d.backup_id,
            when(d.finished_at),
            d.recovery_seconds,
            humantime::format_duration(std::time::Duration::from_secs(d.rto_seconds as u64))
        ),
        (None, Some(id), Some(at)) => say!("  last backup: {id}, finished {}", when(at)),
        _ if s.schedule_type.backup_type().is_none() => say!("  last passed drill: none"),
        _ => say!("  last backup: none"),
    }
    if let Some(run) = &s.last_run {
        let outcome = serde_json::to_value(run.outcome)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        say!(
            "  daemon's last run: {} {outcome} in {:.1} s{}",
            run.run_id,
            run.seconds,
            match (&run.stage, &run.error) {
                (Some(stage), Some(error)) => format!(" at {stage}: {error}"),
                _ => String::new(),
            }
        );
    }
    if let Some(skipped) = &s.last_skipped {
        say!(
            "  last skipped: due {} ({}, {} time(s))",
            when(skipped.due),
            skipped.reason,
            skipped.count
        );
    }
    if let Some(next) = s.next_start.or(s.next_due) {
        say!("  next run:    {}", when(next));
    }
}

fn settings(settings: &[Setting]) {
    let mut t = table(&["SETTING", "VALUE", "FROM"]);
    for s in settings {
        t.add_row(vec![
            Cell::new(&s.setting),
            Cell::new(&s.value),
            Cell::new(s.origin.to_string()),
        ]);
    }
    say!("{t}");
    say!("Precedence: flags, then environment variables, then the config file, then defaults.");
}

fn unlocked(reports: &[UnlockReport]) {
    let mut any = false;
    for report in reports {
        for found in &report.locks {
            any = true;
            let who = found
                .lock
                .holder
                .as_ref()
                .map(|h| h.describe())
                .unwrap_or_else(|| "an unreadable lock".into());
            let state = match found.lock.state {
                larder::repository::lock::LockState::Live => "live",
                larder::repository::lock::LockState::Expired => "expired",
                larder::repository::lock::LockState::Dead => "holder gone",
                larder::repository::lock::LockState::Unreadable => "unreadable",
            };
            let done = if found.cleared {
                "cleared"
            } else {
                "kept (use --force if its process is gone)"
            };
            say!(
                "target '{}': {} ({state}): {who}: {done}",
                report.target,
                found.lock.key
            );
        }
    }
    if !any {
        say!("No repository locks.");
    }
}

// What each command reports, and under which key its JSON data sits.

/// `init`: the configuration file written and the repository started.
#[derive(Serialize)]
pub struct Initialised {
    pub config: PathBuf,
    pub repository: PathBuf,
    /// The AEAD of an encrypted repository.
    pub encryption: Option<String>,
}

impl Report for Initialised {
    const KEY: &'static str = "initialised";
    fn human(&self) {
        initialised(&self.config, &self.repository);
        if let Some(cipher) = &self.encryption {
            say!(
                "Encrypted with {cipher}; keep the passphrase safe: without it (or another key slot, `backup-cli key add`) no backup can be read."
            );
        }
    }
}

/// `backup create`: the backup, the repository it was written to and its copies.
#[derive(Serialize)]
pub struct BackupCreated {
    pub backup: BackupSummary,
    pub repository: String,
    pub copies: Vec<CopyReport>,
    pub copy_failures: Vec<String>,
    /// What each validator found in the rows (also kept in the manifest).
    pub validators: Vec<ValidatorRun>,
    /// Change tracking: the chain's slot and, for an incremental, what it captured (the
    /// manifest's `incremental`, less the change set's chunk list).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incremental: Option<IncrementalInfo>,
    #[serde(skip)]
    manifest: Manifest,
}

impl BackupCreated {
    pub fn new(created: Created, repository: String) -> BackupCreated {
        BackupCreated {
            backup: BackupSummary::from(&created.manifest),
            repository,
            copies: created.copies,
            copy_failures: created.copy_failures,
            validators: created.manifest.validators.clone(),
            incremental: created.manifest.incremental.clone().map(|mut info| {
                info.changes.chunks.clear();
                info
            }),
            manifest: created.manifest,
        }
    }
}

impl Report for BackupCreated {
    const KEY: &'static str = "created";
    fn human(&self) {
        backup_created(
            &self.manifest,
            &self.backup,
            &self.repository,
            &self.copies,
            &self.copy_failures,
        );
    }
}

/// `backup list`: the backups, newest first (an array in JSON).
#[derive(Serialize)]
#[serde(transparent)]
pub struct Backups {
    pub backups: Vec<BackupSummary>,
    /// Named when there are none yet.
    #[serde(skip)]
    pub repository: String,
}

impl Report for Backups {
    const KEY: &'static str = "backups";
    fn human(&self) {
        backup_list(&self.backups, &self.repository);
    }
}

/// `backup validate`: the report of the copy shown (its fields at the top level) and one
/// line per copy.
#[derive(Serialize)]
pub struct Validation {
    #[serde(flatten)]
    pub report: Option<ValidationReport>,
    pub copies: Vec<CopyValidation>,
}

impl Report for Validation {
    const KEY: &'static str = "validation";
    fn human(&self) {
        validation(self.report.as_ref(), &self.copies);
    }
}

impl Report for PruneReport {
    const KEY: &'static str = "prune";
    fn human(&self) {
        pruned(self);
    }
}

impl Report for PinReport {
    const KEY: &'static str = "pin";
    fn human(&self) {
        pinned(self);
    }
}

/// `backup delete --dry-run`: what the deletion would remove and reclaim.
#[derive(Serialize)]
pub struct DeleteDryRun<'a> {
    pub plan: &'a DeletePlan,
}

impl Report for DeleteDryRun<'_> {
    const KEY: &'static str = "dry_run";
    fn human(&self) {
        delete_plan(self.plan);
    }
}

impl Report for DeleteReport {
    const KEY: &'static str = "deleted";
    fn human(&self) {
        deleted(self);
    }
}

/// `backup sync`: one line per backup copied to a target.
#[derive(Serialize)]
#[serde(transparent)]
pub struct Synced(pub Vec<CopyReport>);

impl Report for Synced {
    const KEY: &'static str = "copies";
    fn human(&self) {
        synced(&self.0);
    }
}

/// `backup export -o FILE`: what was written, and where.
#[derive(Serialize)]
pub struct Exported {
    #[serde(flatten)]
    pub report: ExportReport,
    pub file: String,
    /// Who signed the backup, and what of its signature and history was verified.
    pub signature: Checked,
}

impl Report for Exported {
    const KEY: &'static str = "export";
    fn human(&self) {
        exported(&self.report, &self.file);
        signature_evidence(&self.signature);
    }
}

/// The report's lines on the backup's signature and history: evidence for an auditor.
fn signature_evidence(checked: &Checked) {
    say!("  {}", checked.evidence());
    for risk in &checked.risks {
        say!("  risk taken: {risk}");
    }
}

impl Report for RecoveryPlan {
    const KEY: &'static str = "plan";
    fn human(&self) {
        plan(self);
    }
}

/// `recovery execute --dry-run`: the plan, and how many chunks were read and verified.
#[derive(Serialize)]
pub struct DryRun<'a> {
    pub chunks_verified: usize,
    pub plan: &'a RecoveryPlan,
}

impl Report for DryRun<'_> {
    const KEY: &'static str = "dry_run";
    fn human(&self) {
        dry_run(self.chunks_verified);
    }
}

impl Report for RestoreReport {
    const KEY: &'static str = "recovery";
    fn human(&self) {
        restored(self);
    }
}

impl Report for Health {
    const KEY: &'static str = "health";
    fn human(&self) {
        health(self);
    }
}

/// `monitor metrics`: the Prometheus text for people and collectors (none when it went to a
/// file), the snapshot it was made from with `--json`.
#[derive(Serialize)]
pub struct Metrics {
    #[serde(flatten)]
    pub snapshot: larder::engine::metrics::Snapshot,
    #[serde(skip)]
    pub text: Option<String>,
}

impl Report for Metrics {
    const KEY: &'static str = "metrics";
    fn human(&self) {
        if let Some(text) = &self.text {
            say!("{}", text.trim_end());
        }
    }
}

impl Report for Overview {
    const KEY: &'static str = "alerts";
    fn human(&self) {
        alerts(self);
    }
}

/// `notify test`: one line per alert channel the test event went through.
#[derive(Serialize)]
#[serde(transparent)]
pub struct NotifyTest(pub Vec<Sent>);

impl Report for NotifyTest {
    const KEY: &'static str = "sent";
    fn human(&self) {
        notify_test(&self.0);
    }
}

/// `schedule list`.
#[derive(Serialize)]
#[serde(transparent)]
pub struct Schedules(pub Vec<ScheduleStatus>);

impl Report for Schedules {
    const KEY: &'static str = "schedules";
    fn human(&self) {
        schedules(&self.0);
    }
}

/// `schedule status NAME`.
#[derive(Serialize)]
#[serde(transparent)]
pub struct ScheduleDetail(pub ScheduleStatus);

impl Report for ScheduleDetail {
    const KEY: &'static str = "schedule";
    fn human(&self) {
        schedule_detail(&self.0);
    }
}

/// `config show`: every effective setting and its origin.
#[derive(Serialize)]
#[serde(transparent)]
pub struct EffectiveSettings(pub Vec<Setting>);

impl Report for EffectiveSettings {
    const KEY: &'static str = "settings";
    fn human(&self) {
        settings(&self.0);
    }
}

/// `repository unlock`: the locks found on each target and which were cleared.
#[derive(Serialize)]
#[serde(transparent)]
pub struct Unlocked(pub Vec<UnlockReport>);

impl Report for Unlocked {
    const KEY: &'static str = "unlocked";
    fn human(&self) {
        unlocked(&self.0);
    }
}

/// `plugin list`.
#[derive(Serialize)]
#[serde(transparent)]
pub struct Plugins(pub Vec<PluginSummary>);

impl Report for Plugins {
    const KEY: &'static str = "plugins";
    fn human(&self) {
        plugins(&self.0);
    }
}

impl Report for Inspection {
    const KEY: &'static str = "inspection";
    fn human(&self) {
        inspection(self);
    }
}

impl Report for Conformance {
    const KEY: &'static str = "plugin_test";
    fn human(&self) {
        conformance(self);
    }
}

/// `plugin hash`: a plugin file's SHA-256, for its pin.
#[derive(Serialize)]
pub struct PluginHash {
    pub file: PathBuf,
    pub sha256: String,
}

impl Report for PluginHash {
    const KEY: &'static str = "hash";
    fn human(&self) {
        plugin_hash(&self.file, &self.sha256);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Sample {
        id: &'static str,
    }

    impl Report for Sample {
        const KEY: &'static str = "sample";
        fn human(&self) {}
    }

    #[test]
    fn every_envelope_has_a_status_and_failures_a_kind_and_message() {
        let ok = serde_json::Value::Object(envelope(&Sample { id: "b1" }, None));
        assert_eq!(
            ok,
            serde_json::json!({"status": "ok", "sample": {"id": "b1"}})
        );
        let failure = Error::HealthFailed("database".into());
        let failed = serde_json::Value::Object(envelope(&Sample { id: "b1" }, Some(&failure)));
        assert_eq!(
            failed,
            serde_json::json!({
                "status": "failed",
                "kind": "health_failed",
                "error": "health check failed: database",
                "sample": {"id": "b1"},
            })
        );
        let error = serde_json::Value::Object(head("error", Some(&Error::Config("bad".into()))));
        assert_eq!(
            error,
            serde_json::json!({"status": "error", "kind": "config", "error": "configuration error: bad"})
        );
    }

    #[test]
    fn shell_words_are_quoted_unless_plain() {
        assert_eq!(super::shell_word("/tmp/export.sql"), "/tmp/export.sql");
        assert_eq!(
            super::shell_word("/tmp/my export $(rm -rf ~).sql"),
            "'/tmp/my export $(rm -rf ~).sql'"
        );
        assert_eq!(super::shell_word("it's"), "'it'\\''s'");
        assert_eq!(super::shell_word(""), "''");
    }
}

/// One key slot as `key list` shows it (never the wrapped secret).
#[derive(Serialize)]
pub struct SlotSummary {
    pub id: String,
    pub kind: &'static str,
    pub label: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// A recipient slot's public key.
    pub recipient: Option<String>,
    /// A passphrase slot's key derivation: `argon2id`, or `pbkdf2-hmac-sha256` (slots made
    /// before argon2id; add a new passphrase slot and remove the old one to move on).
    pub kdf: Option<String>,
}

impl SlotSummary {
    pub fn of(slot: &larder::repository::keys::Slot) -> SlotSummary {
        SlotSummary {
            id: slot.id.clone(),
            kind: slot.kind_name(),
            label: slot.label.clone(),
            created_at: slot.created_at,
            recipient: match &slot.kind {
                larder::repository::keys::SlotKind::Recipient { recipient, .. } => {
                    Some(recipient.clone())
                }
                larder::repository::keys::SlotKind::Passphrase { .. } => None,
            },
            kdf: match &slot.kind {
                larder::repository::keys::SlotKind::Passphrase { kdf, .. } => Some(kdf.clone()),
                larder::repository::keys::SlotKind::Recipient { .. } => None,
            },
        }
    }
}

/// `key list`.
#[derive(Serialize)]
pub struct KeySlots {
    pub repository: String,
    pub cipher: String,
    /// The repository's public key.
    pub public_key: String,
    pub slots: Vec<SlotSummary>,
}

impl KeySlots {
    pub fn new(repository: String, keys: &larder::repository::keys::KeysFile) -> KeySlots {
        KeySlots {
            repository,
            cipher: keys.cipher.to_string(),
            public_key: keys.public_key.clone(),
            slots: keys.slots.iter().map(SlotSummary::of).collect(),
        }
    }
}

impl Report for KeySlots {
    const KEY: &'static str = "keys";
    fn human(&self) {
        say!(
            "Repository {} is encrypted with {}; {} key slot(s):",
            self.repository,
            self.cipher,
            self.slots.len()
        );
        let mut t = table(&["SLOT", "KIND", "LABEL", "CREATED", "RECIPIENT / KDF"]);
        for slot in &self.slots {
            t.add_row(vec![
                Cell::new(&slot.id),
                Cell::new(slot.kind),
                Cell::new(&slot.label),
                Cell::new(slot.created_at.format("%Y-%m-%d %H:%M")),
                Cell::new(
                    slot.recipient
                        .as_deref()
                        .or(slot.kdf.as_deref())
                        .unwrap_or(""),
                ),
            ]);
        }
        say!("{t}");
    }
}

/// `key add` / `key remove`: what changed, and on which targets.
#[derive(Serialize)]
pub struct KeyChanged {
    pub action: &'static str,
    pub slot: Option<SlotSummary>,
    /// The writer key file written.
    pub file: Option<PathBuf>,
    /// The targets whose keys file was rewritten.
    pub targets: Vec<String>,
}

impl Report for KeyChanged {
    const KEY: &'static str = "key";
    fn human(&self) {
        match (&self.slot, &self.file) {
            (Some(slot), _) => say!(
                "Key slot {} ({}{}) {} on {}.",
                slot.id,
                slot.kind,
                if slot.label.is_empty() {
                    String::new()
                } else {
                    format!(", {}", slot.label)
                },
                self.action.trim_start_matches("slot "),
                self.targets.join(", ")
            ),
            (None, Some(file)) => say!(
                "Wrote the writer key to {}: a host with only it can create backups but cannot read or restore any.",
                file.display()
            ),
            (None, None) => {}
        }
    }
}

/// `key identity` / `key signer`: the secret file written and its public half.
#[derive(Serialize)]
pub struct NewKeyFile {
    pub file: PathBuf,
    /// The recipient (`larder-recipient-…`) or signer (`larder-signer-…`).
    pub public: String,
    pub kind: &'static str,
}

impl Report for NewKeyFile {
    const KEY: &'static str = "key";
    fn human(&self) {
        say!(
            "Wrote the {} to {} (keep it secret).",
            self.kind,
            self.file.display()
        );
        if self.kind == "identity" {
            say!("Its recipient: {}", self.public);
            say!("Next: backup-cli key add --recipient {}", self.public);
        } else {
            say!("Its signer: {}", self.public);
            say!("Next: add it to [repository] trusted_signers on every host that restores");
        }
    }
}

/// `backup verify-history`.
#[derive(Serialize)]
pub struct VerifiedHistory {
    pub repository: String,
    #[serde(flatten)]
    pub history: larder::repository::signing::History,
}

impl Report for VerifiedHistory {
    const KEY: &'static str = "history";
    fn human(&self) {
        let h = &self.history;
        say!(
            "{} backup(s) of {} database(s) in {}, {} with a verified signature.",
            h.backups,
            h.databases,
            self.repository,
            h.signed
        );
        if h.problems.is_empty() {
            say!("History intact: every link to a previous backup holds.");
        }
        if !h.retired.is_empty() {
            say!("Removed by the tool, with signed evidence:");
        }
        for r in &h.retired {
            say!("  backup {} ({}): {}", r.backup_id, r.database, r.statement);
        }
        for p in &h.problems {
            say!("  backup {} ({}): {}", p.backup_id, p.database, p.problem);
        }
    }
}
