//! How results look: aligned tables for people, JSON for machines. Field names in JSON are
//! the serde names of the engine's report types, so CLI, JSON and docs share one vocabulary.

use comfy_table::presets::NOTHING;
use comfy_table::{Cell, CellAlignment, Table};
use larder::engine::delete::DeleteReport;
use larder::engine::export::ExportReport;
use larder::engine::list::BackupSummary;
use larder::engine::plan::RecoveryPlan;
use larder::engine::progress::human_bytes;
use larder::engine::restore::RestoreReport;
use larder::engine::sync::{CopyReport, Presence};
use larder::engine::validate::ValidationReport;
use larder::plugin::inspect::Inspection;
use larder::repository::manifest::Manifest;
use larder::targets::configured::PluginSummary;
use serde::Serialize;
use std::path::Path;

pub fn json(value: &impl Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => {
            use std::io::Write;
            // A closed pipe (`| head`) is the reader's choice, not an error worth a panic.
            let _ = writeln!(std::io::stdout().lock(), "{text}");
        }
        Err(e) => eprintln!("error: cannot encode JSON output: {e}"),
    }
}

fn table(headers: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(NOTHING);
    t.set_header(headers.iter().map(Cell::new));
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

pub fn backup_created(
    m: &Manifest,
    repo: &str,
    copies: &[CopyReport],
    failures: &[String],
    as_json: bool,
) {
    let summary = BackupSummary::from(m);
    if as_json {
        json(&serde_json::json!({
            "status": if failures.is_empty() { "ok" } else { "partial" },
            "backup": summary,
            "repository": repo,
            "copies": copies,
            "copy_failures": failures,
        }));
        return;
    }
    println!("Backup {} created ('{}')", m.id, m.name);
    println!(
        "  {} backup of {} (PostgreSQL {}): {} tables, {} rows, {} sequences",
        m.backup_type,
        m.source.database,
        m.source.server_version,
        m.tables.len(),
        m.rows(),
        m.sequences.len()
    );
    println!(
        "  {} of data stored as {} ({} new) in {}",
        human_bytes(summary.logical_bytes),
        human_bytes(summary.stored_bytes),
        human_bytes(summary.new_bytes),
        seconds(summary.duration_seconds)
    );
    println!("  repository: {repo}");
    for copy in copies {
        println!(
            "  copied to target '{}': {} new chunks ({}), {} already there",
            copy.to,
            copy.chunks_copied,
            human_bytes(copy.bytes_copied),
            copy.chunks_present
        );
    }
    for failure in failures {
        println!("  NOT copied to {failure}");
    }
    println!("  next: backup-cli backup validate {}", m.id);
}

pub fn backup_list(backups: &[BackupSummary], repo: &str, as_json: bool) {
    if as_json {
        json(&backups);
        return;
    }
    if backups.is_empty() {
        println!("No backups in {repo} yet. Create one with: backup-cli backup create");
        return;
    }
    let mut t = table(&[
        "ID",
        "NAME",
        "TYPE",
        "CREATED (UTC)",
        "DURATION",
        "STORED",
        "LOGICAL",
        "TABLES",
        "ROWS",
        "STATUS",
        "TARGETS",
    ]);
    for b in backups {
        t.add_row(vec![
            Cell::new(&b.id),
            Cell::new(&b.name),
            Cell::new(b.backup_type),
            Cell::new(b.created_at.format("%Y-%m-%d %H:%M:%S")),
            right(seconds(b.duration_seconds)),
            right(human_bytes(b.stored_bytes)),
            right(human_bytes(b.logical_bytes)),
            right(b.tables),
            right(b.rows),
            Cell::new(b.status),
            Cell::new(
                b.targets
                    .iter()
                    .map(|(name, presence)| match presence {
                        Presence::Complete => name.clone(),
                        Presence::Incomplete => format!("{name} (INCOMPLETE)"),
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
        ]);
    }
    println!("{t}");
}

pub fn validation(report: &ValidationReport, as_json: bool) {
    if as_json {
        json(report);
        return;
    }
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
    println!("Backup {} ('{}')", report.backup_id, report.name);
    println!("{t}");
    for problem in report.items.iter().flat_map(|i| i.problems.iter()) {
        println!("  problem: {problem}");
    }
    for warning in &report.warnings {
        println!("  warning: {warning}");
    }
    if report.ok {
        println!(
            "Backup {} is valid: {} chunks, {} re-read and verified.",
            report.backup_id,
            report.chunks_checked,
            human_bytes(report.bytes_checked)
        );
    }
}

pub fn deleted(report: &DeleteReport, as_json: bool) {
    if as_json {
        json(&serde_json::json!({ "status": "ok", "deleted": report }));
        return;
    }
    println!(
        "Deleted backup {} ('{}'): removed {} chunks ({}), kept {} chunks still used by other backups.",
        report.backup_id,
        report.name,
        report.chunks_deleted,
        human_bytes(report.bytes_freed),
        report.chunks_kept
    );
    println!("  deleted from: {}", report.targets.join(", "));
}

pub fn synced(reports: &[CopyReport], as_json: bool) {
    if as_json {
        json(&serde_json::json!({ "status": "ok", "copies": reports }));
        return;
    }
    if reports.is_empty() {
        println!("Every backup is complete on every target; nothing to copy.");
        return;
    }
    let mut t = table(&[
        "BACKUP",
        "FROM",
        "TO",
        "CHUNKS COPIED",
        "BYTES",
        "ALREADY THERE",
    ]);
    for r in reports {
        t.add_row(vec![
            Cell::new(&r.backup_id),
            Cell::new(&r.from),
            Cell::new(&r.to),
            right(r.chunks_copied),
            right(human_bytes(r.bytes_copied)),
            right(r.chunks_present),
        ]);
    }
    println!("{t}");
}

pub fn plugins(plugins: &[PluginSummary], as_json: bool) {
    if as_json {
        json(&plugins);
        return;
    }
    if plugins.is_empty() {
        println!("No plugins are configured (add a [[targets]] entry with type = \"plugin\").");
        return;
    }
    for p in plugins {
        println!("{} — {} {} ({})", p.target, p.name, p.version, p.world);
        println!("  file:     {}", p.path);
        println!(
            "  sha256:   {} ({})",
            p.sha256,
            if p.pinned { "pinned" } else { "NOT pinned" }
        );
        println!("  declares: {}", p.capabilities.join(", "));
        if p.granted.is_empty() {
            println!("  granted:  nothing");
        }
        for grant in &p.granted {
            println!("  granted:  {grant}");
        }
    }
}

pub fn inspection(i: &Inspection, as_json: bool) {
    if as_json {
        json(i);
        return;
    }
    println!("{}", i.path);
    println!("  sha256:  {}", i.sha256);
    println!("  size:    {}", human_bytes(i.size));
    println!(
        "  world:   {}",
        i.world.as_deref().unwrap_or("none (not a Larder plugin)")
    );
    for export in &i.exports {
        println!("  exports: {export}");
    }
    for import in &i.imports {
        println!("  imports: {import}");
    }
    for ask in &i.asks_for {
        println!("  can use: {ask}");
    }
}

pub fn plugin_hash(file: &Path, sha256: &str, as_json: bool) {
    if as_json {
        json(&serde_json::json!({ "file": file, "sha256": sha256 }));
    } else {
        println!("{sha256}  {}", file.display());
    }
}

pub fn initialised(config: &Path, repo: &Path, as_json: bool) {
    if as_json {
        json(&serde_json::json!({ "status": "ok", "config": config, "repository": repo }));
        return;
    }
    println!(
        "Wrote {} (edit the [database] section, or use DATABASE_URL / PG* variables).",
        config.display()
    );
    println!("Repository ready at {}.", repo.display());
    println!("Next: backup-cli backup create");
}

pub fn plan(plan: &RecoveryPlan, as_json: bool) {
    if as_json {
        json(plan);
        return;
    }
    println!(
        "Recovery plan: backup {} ('{}', taken {})",
        plan.backup_id,
        plan.backup_name,
        plan.backup_created_at.format("%Y-%m-%d %H:%M:%S UTC")
    );
    println!(
        "  strategy {} into database {} on {}:{}{}",
        plan.strategy,
        plan.target.database,
        plan.target.host,
        plan.target.port,
        if plan.target.exists {
            ""
        } else {
            " (to be created)"
        }
    );
    let mut t = table(&["TABLE", "ROWS (BACKUP)", "SIZE", "ROWS (TARGET NOW)"]);
    for row in &plan.tables {
        t.add_row(vec![
            Cell::new(&row.name),
            right(row.rows),
            right(human_bytes(row.bytes)),
            right(row.target_rows.map_or("-".to_string(), |r| r.to_string())),
        ]);
    }
    println!("{t}");
    if !plan.cascade_added.is_empty() {
        println!("  added by --cascade: {}", plan.cascade_added.join(", "));
    }
    println!("Requirements:");
    for r in &plan.requirements {
        println!(
            "  {:4} {}: {}",
            if r.ok { "ok" } else { "FAIL" },
            r.name,
            r.detail
        );
    }
    println!(
        "Estimated duration: {} ({})",
        seconds(plan.estimated_seconds),
        plan.estimate_basis
    );
    println!("Risks:");
    for r in &plan.risks {
        println!("  - {r}");
    }
    println!("Steps:");
    for (i, s) in plan.steps.iter().enumerate() {
        println!("  {}. {s}", i + 1);
    }
    if !plan.blockers.is_empty() {
        println!("Execute would refuse:");
        for b in &plan.blockers {
            println!("  - {b}");
        }
    }
}

pub fn dry_run(plan: &RecoveryPlan, chunks: usize, as_json: bool) {
    if as_json {
        json(
            &serde_json::json!({ "status": "ok", "dry_run": true, "chunks_verified": chunks, "plan": plan }),
        );
        return;
    }
    println!("Dry run: {chunks} chunks read and verified, target checked; nothing was written.");
}

pub fn restored(report: &RestoreReport, as_json: bool) {
    if as_json {
        json(&serde_json::json!({ "status": "ok", "recovery": report }));
        return;
    }
    let mut t = table(&[
        "TABLE",
        "ROWS (BACKUP)",
        "ROWS (TARGET)",
        "INSERTED",
        "CHECKSUM",
        "STATUS",
    ]);
    for row in &report.tables {
        t.add_row(vec![
            Cell::new(&row.name),
            right(row.backup_rows),
            right(row.target_rows),
            right(row.inserted_rows.map_or("-".into(), |n| n.to_string())),
            Cell::new(match row.checksum_ok {
                Some(true) => "ok",
                Some(false) => "MISMATCH",
                None => "-",
            }),
            Cell::new(if row.ok { "ok" } else { "FAILED" }),
        ]);
    }
    println!("{t}");
    for fallback in &report.fallbacks {
        println!("  fallback: {fallback}");
    }
    println!(
        "Recovered backup {} into {} ({}) in {}: {} tables, {} rows verified; no constraint left NOT VALID{}.",
        report.backup_id,
        report.target_database,
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
    println!("Measured recovery time recorded in the repository for future plans.");
}

pub fn exported(report: &ExportReport, path: &str, as_json: bool) {
    if as_json {
        json(&serde_json::json!({ "status": "ok", "export": report, "file": path }));
        return;
    }
    println!(
        "Exported backup {} to {path}: {} tables, {} rows, {} of SQL{}.",
        report.backup_id,
        report.tables,
        report.rows,
        human_bytes(report.bytes),
        if report.compressed { " (zstd)" } else { "" }
    );
    println!(
        "Restore with: psql -v ON_ERROR_STOP=1 -d NEWDB -f {path}{}",
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

pub fn health(health: &larder::engine::monitor::Health, as_json: bool) {
    if as_json {
        json(health);
        return;
    }
    let mut t = table(&["CHECK", "STATUS", "DETAIL"]);
    for c in &health.checks {
        t.add_row(vec![
            Cell::new(&c.name),
            Cell::new(status_word(c.status)),
            Cell::new(&c.detail),
        ]);
    }
    println!("{t}");
    for c in health
        .checks
        .iter()
        .filter(|c| c.status != larder::engine::monitor::Status::Ok)
    {
        if let Some(action) = &c.action {
            println!("  {}: {action}", c.name);
        }
    }
    println!(
        "Health: {} (checked {})",
        status_word(health.status),
        health.checked_at.format("%Y-%m-%d %H:%M:%S UTC")
    );
}

pub fn alerts(health: &larder::engine::monitor::Health, as_json: bool) {
    let active: Vec<_> = health.alerts().collect();
    if as_json {
        json(&active);
        return;
    }
    if active.is_empty() {
        println!("No active alerts.");
        return;
    }
    let mut t = table(&["ALERT", "CHECK", "DETAIL", "ACTION"]);
    for c in active {
        t.add_row(vec![
            Cell::new(c.alert.as_deref().unwrap_or("-")),
            Cell::new(&c.name),
            Cell::new(&c.detail),
            Cell::new(c.action.as_deref().unwrap_or("-")),
        ]);
    }
    println!("{t}");
}

pub fn schedules(statuses: &[larder::engine::schedule::ScheduleStatus], as_json: bool) {
    if as_json {
        json(&statuses);
        return;
    }
    if statuses.is_empty() {
        println!(
            "No schedules configured. Add [[schedules]] entries to the configuration (see examples/backup-cli.toml)."
        );
        return;
    }
    let when = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map_or("-".to_string(), |t| t.format("%Y-%m-%d %H:%M").to_string())
    };
    let mut t = table(&[
        "NAME",
        "TYPE",
        "CRON (UTC)",
        "RETENTION",
        "LAST BACKUP",
        "NEXT DUE",
        "STATUS",
    ]);
    for s in statuses {
        t.add_row(vec![
            Cell::new(&s.name),
            Cell::new(s.backup_type),
            Cell::new(&s.cron),
            Cell::new(s.retention_seconds.map_or("-".into(), |r| {
                humantime::format_duration(std::time::Duration::from_secs(r)).to_string()
            })),
            Cell::new(when(s.last_backup_at)),
            Cell::new(when(s.next_due)),
            Cell::new(s.status),
        ]);
    }
    println!("{t}");
}
