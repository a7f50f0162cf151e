//! How results look: aligned tables for people, JSON for machines. Field names in JSON are
//! the serde names of the engine's report types, so CLI, JSON and docs share one vocabulary.

use comfy_table::presets::NOTHING;
use comfy_table::{Cell, CellAlignment, Table};
use larder::engine::delete::DeleteReport;
use larder::engine::list::BackupSummary;
use larder::engine::progress::human_bytes;
use larder::engine::validate::ValidationReport;
use larder::repository::manifest::Manifest;
use serde::Serialize;
use std::path::Path;

pub fn json(value: &impl Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
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

pub fn backup_created(m: &Manifest, repo: &Path, as_json: bool) {
    let summary = BackupSummary::from(m);
    if as_json {
        json(&serde_json::json!({ "status": "ok", "backup": summary, "repository": repo }));
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
    println!("  repository: {}", repo.display());
    println!("  next: backup-cli backup validate {}", m.id);
}

pub fn backup_list(backups: &[BackupSummary], repo: &Path, as_json: bool) {
    if as_json {
        json(&backups);
        return;
    }
    if backups.is_empty() {
        println!(
            "No backups in {} yet. Create one with: backup-cli backup create",
            repo.display()
        );
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
