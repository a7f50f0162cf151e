//! How `recovery drill` and `recovery drills` look for people (their JSON is the engine's
//! report and the repository's drill records, as they are).

use super::{Report, Table, findings, right, seconds, table};
use comfy_table::Cell;
use larder::engine::drill::DrillReport;
use larder::engine::recovery::plan::human_age;
use larder::repository::history::{DrillOutcome, DrillRecord};
use serde::Serialize;

impl Report for DrillReport {
    const KEY: &'static str = "drill";
    fn human(&self) {
        drill(self);
    }
}

/// `recovery drills`: past drills, oldest first.
#[derive(Serialize)]
#[serde(transparent)]
pub struct Drills(pub Vec<DrillRecord>);

impl Report for Drills {
    const KEY: &'static str = "drills";
    fn human(&self) {
        drills(&self.0);
    }
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

fn duration(s: f64) -> String {
    if s < 1.0 {
        format!("{}ms", (s * 1000.0).round())
    } else {
        seconds(s)
    }
}

fn drill(report: &DrillReport) {
    let d = &report.drill;
    say!(
        "Drill {}: backup {} ('{}') of database {}, point in time {} ({} old when the drill started; RPO {}: {})",
        d.drill_id,
        d.backup_id,
        d.backup_name,
        d.database,
        d.point_in_time.format("%Y-%m-%d %H:%M:%S UTC"),
        human_age(d.point_age_seconds),
        duration(d.rpo_seconds),
        met(d.rpo_met)
    );
    let place = match d.scratch.kind.as_str() {
        "server" => format!("database {} on {}", d.scratch.database, d.scratch.server),
        _ => format!(
            "a throwaway PostgreSQL on {} (database {})",
            d.scratch.server, d.scratch.database
        ),
    };
    say!(
        "  restored into {place}: {}",
        if d.scratch.kept {
            "kept"
        } else if d.scratch.removed {
            "removed afterwards"
        } else {
            "NOT removed"
        }
    );
    if let Some(note) = &d.scratch.note {
        say!("  {note}");
    }
    let mut t = table(&["STEP", "TIME"]);
    for step in &d.steps {
        t.add_row(vec![Cell::new(&step.name), right(duration(step.seconds))]);
    }
    say!("{t}");
    if let Some(restore) = &report.restore {
        say!(
            "Restore verified ({}): {} tables, {} rows{}.",
            d.verification,
            restore.tables.len(),
            restore.rows,
            if restore.ok { "" } else { ", with MISMATCHES" }
        );
    }
    if !d.validators.is_empty() {
        say!("Validators on the restored rows:");
        findings(&d.validators);
    }
    if !d.checks.is_empty() {
        let mut t: Table = table(&["CHECK", "EXPECTED", "GOT", "STATUS"]);
        for c in &d.checks {
            t.add_row(vec![
                Cell::new(&c.name),
                Cell::new(&c.expected),
                Cell::new(c.error.as_deref().or(c.got.as_deref()).unwrap_or("-")),
                Cell::new(if c.ok { "ok" } else { "FAILED" }),
            ]);
        }
        say!("{t}");
    }
    say!(
        "Recovery time {} against an RTO of {}: {}.",
        duration(d.recovery_seconds),
        duration(d.rto_seconds),
        met(d.rto_met)
    );
    match d.outcome {
        DrillOutcome::Passed => {
            say!("Drill passed; recorded in the repository (`backup-cli recovery drills`).")
        }
        _ => say!(
            "Drill {}: {}",
            d.outcome.as_str().to_uppercase(),
            d.error.as_deref().unwrap_or("")
        ),
    }
    for sent in &report.alerts {
        say!(
            "  alert {} ({:?}) through '{}': {}",
            sent.alert,
            sent.state,
            sent.channel,
            if sent.ok {
                "delivered"
            } else {
                "NOT delivered"
            }
        );
    }
    for warning in &report.warnings {
        say!("  warning: {warning}");
    }
}

fn drills(records: &[DrillRecord]) {
    if records.is_empty() {
        say!("No drills recorded yet: run `backup-cli recovery drill latest`.");
        return;
    }
    let mut t = table(&[
        "STARTED", "BACKUP", "OUTCOME", "RECOVERY", "RTO", "CHECKS", "SCRATCH",
    ]);
    for d in records {
        let checks_ok = d.checks.iter().filter(|c| c.ok).count();
        t.add_row(vec![
            Cell::new(d.started_at.format("%Y-%m-%d %H:%M:%S")),
            Cell::new(&d.backup_id),
            Cell::new(d.outcome.as_str()),
            right(duration(d.recovery_seconds)),
            Cell::new(format!("{} ({})", duration(d.rto_seconds), met(d.rto_met))),
            right(format!("{checks_ok}/{}", d.checks.len())),
            Cell::new(if d.scratch.kept {
                "kept"
            } else if d.scratch.removed {
                "removed"
            } else {
                "NOT removed"
            }),
        ]);
    }
    say!("{t}");
}
