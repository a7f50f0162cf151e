//! `schedule list` and `schedule status`: the configured timetables (backups and restore
//! drills) and whether each one ran on time.
//!
//! Whoever runs the schedules (`backup-cli daemon`, or cron and systemd timers running
//! `backup-cli backup create --schedule NAME` and `recovery drill --schedule NAME`), this
//! compares the timetable with the good backups and passed drills that exist. Everything here
//! is a function of the configuration, the manifests, the drill records and the clock it is
//! given.

use crate::config::{Schedule, ScheduleType};
use crate::engine::daemon::state::{DaemonSummary, DaemonView, RunRecord, Skipped};
use crate::engine::scheduler::Timetable;
use crate::error::Result;
use crate::repository::Repository;
use crate::repository::history::{DrillOutcome, DrillRecord, DrillSummary};
use crate::repository::manifest::Manifest;
use crate::targets::Target;
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A backup started this long before the time it was due still counts for that run (a
/// timer that fires a little early, or a clock slightly ahead of the database server's).
const EARLY_ALLOWANCE: Duration = Duration::minutes(5);

/// How a schedule stands at a given moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleState {
    /// A backup of the schedule's type was taken (a drill passed) since it was last due, or
    /// it was never due.
    Ok,
    /// It was due, no backup (passed drill) yet, and the grace period has not run out.
    Due,
    /// It was due longer ago than its grace period and no backup (passed drill) came.
    Missed,
}

impl std::fmt::Display for ScheduleState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ScheduleState::Ok => "ok",
            ScheduleState::Due => "due",
            ScheduleState::Missed => "missed",
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ScheduleStatus {
    pub name: String,
    /// The `[[databases]]` entry it backs up (None: the one database).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// `full`, `incremental`, `schema-only` or `drill`.
    #[serde(rename = "type")]
    pub schedule_type: ScheduleType,
    pub cron: String,
    /// The retention policy in the config's words (`keep_within 30days, min_keep 3`).
    pub retention: Option<String>,
    /// A backup schedule's newest good backup of its type (null for a drill schedule).
    pub last_backup_id: Option<String>,
    pub last_backup_at: Option<DateTime<Utc>>,
    /// A drill schedule's newest passed drill of its database (absent for backups).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_drill: Option<DrillSummary>,
    /// The most recent time the schedule was due.
    pub previous_due: Option<DateTime<Utc>>,
    pub next_due: Option<DateTime<Utc>>,
    /// `ok`, `due` (within its grace period) or `missed`.
    pub status: ScheduleState,
    /// The IANA time zone `cron` is read in.
    pub timezone: String,
    /// The daemon's last run of this schedule (none without a daemon).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_run: Option<RunRecord>,
    /// The daemon's last due time that did not run (overlap, missed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_skipped: Option<Skipped>,
    /// When the daemon starts the next run (`next_due` plus jitter), while it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_start: Option<DateTime<Utc>>,
    /// Whether a daemon runs for this database, and since when.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daemon: Option<DaemonSummary>,
}

impl ScheduleStatus {
    /// Adds what the daemon recorded about this schedule.
    pub fn with_daemon(mut self, daemon: Option<&DaemonView>) -> ScheduleStatus {
        let Some(view) = daemon else {
            return self;
        };
        if let Some(record) = view.state.schedule(&self.name) {
            self.last_run = record.last_run.clone();
            self.last_skipped = record.last_skipped.clone();
            if view.summary.running {
                self.next_start = record.next_start;
            }
        }
        self.daemon = Some(view.summary.clone());
        self
    }
}

/// The drill records `status` needs: every drill in the repository on `primary` when a
/// drill schedule is configured, none otherwise (nothing is read). An unreadable history is
/// no drill at all: the drill schedules then show as due or missed.
pub async fn drill_history(
    schedules: &[Schedule],
    primary: Option<&Arc<dyn Target>>,
) -> Vec<DrillRecord> {
    if !schedules
        .iter()
        .any(|s| s.schedule_type == ScheduleType::Drill)
    {
        return Vec::new();
    }
    let Some(primary) = primary else {
        return Vec::new();
    };
    match Repository::open(primary.clone()).await {
        Ok(repo) => repo.drills(None).await.unwrap_or_else(|e| {
            tracing::warn!("{e}");
            Vec::new()
        }),
        Err(_) => Vec::new(),
    }
}

/// Every schedule's status at `now`, given the backups and drills in the repository.
/// `databases` maps each `[[databases]]` name to its name in PostgreSQL: a schedule that
/// names a database counts only that database's backups and drills.
pub fn status(
    schedules: &[Schedule],
    manifests: &[Manifest],
    drills: &[DrillRecord],
    databases: &BTreeMap<String, String>,
    now: DateTime<Utc>,
) -> Result<Vec<ScheduleStatus>> {
    schedules
        .iter()
        .map(|schedule| {
            let dbname = schedule
                .database
                .as_ref()
                .map(|n| databases.get(n).unwrap_or(n).as_str());
            let own: Vec<Manifest> = manifests
                .iter()
                .filter(|m| dbname.is_none_or(|d| m.source.database == d))
                .cloned()
                .collect();
            let drilled: Vec<&DrillRecord> = drills
                .iter()
                .filter(|d| dbname.is_none_or(|db| d.database == db))
                .collect();
            schedule_status(schedule, &own, &drilled, now)
        })
        .collect()
}

/// One schedule's status at `now`: its last and next due times from the cron expression
/// (in the schedule's time zone), its newest good (not suspect) backup of the schedule's
/// type or, for a drill schedule, its newest passed drill, and [`judge`]'s verdict.
pub fn schedule_status(
    schedule: &Schedule,
    manifests: &[Manifest],
    drills: &[&DrillRecord],
    now: DateTime<Utc>,
) -> Result<ScheduleStatus> {
    let timetable = Timetable::new(schedule)?;
    let previous_due = timetable.last_at_or_before(now);
    let next_due = timetable.next_after(now);
    // Only a good backup is a run that happened: a suspect one (a validator found an error
    // in its rows) is evidence, not a recovery point. Likewise only a passed drill proves
    // that the backups restore.
    let last = schedule
        .schedule_type
        .backup_type()
        .and_then(|backup_type| {
            manifests
                .iter()
                .filter(|m| m.backup_type == backup_type && !m.is_suspect())
                .max_by_key(|m| m.completed_at)
        });
    let last_drill = match schedule.schedule_type {
        ScheduleType::Drill => drills
            .iter()
            .filter(|d| d.outcome == DrillOutcome::Passed)
            .max_by_key(|d| d.started_at)
            .map(|d| DrillSummary::of(d)),
        _ => None,
    };
    let last_started = match &last_drill {
        Some(drill) => Some(drill.started_at),
        None => last.map(|m| m.created_at),
    };
    // A grace too long for chrono's range is as good as an hour, the configured default.
    let grace = Duration::from_std(schedule.grace).unwrap_or_else(|_| Duration::hours(1));
    Ok(ScheduleStatus {
        name: schedule.name.clone(),
        database: schedule.database.clone(),
        schedule_type: schedule.schedule_type,
        cron: schedule.cron.clone(),
        retention: schedule.retention.as_ref().map(|r| r.describe()),
        last_backup_id: last.map(|m| m.id.clone()),
        last_backup_at: last.map(|m| m.completed_at),
        last_drill,
        previous_due,
        next_due,
        status: judge(previous_due, last_started, grace, now),
        timezone: timetable.zone_name,
        last_run: None,
        last_skipped: None,
        next_start: None,
        daemon: None,
    })
}

/// The verdict: `previous_due` is when the schedule was last due (None: never yet),
/// `last_started` when its newest backup was started.
pub fn judge(
    previous_due: Option<DateTime<Utc>>,
    last_started: Option<DateTime<Utc>>,
    grace: Duration,
    now: DateTime<Utc>,
) -> ScheduleState {
    let Some(due) = previous_due else {
        return ScheduleState::Ok;
    };
    match last_started {
        Some(started) if started >= due - EARLY_ALLOWANCE => ScheduleState::Ok,
        _ if now - due <= grace => ScheduleState::Due,
        _ => ScheduleState::Missed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::manifest::{BackupType, sample_manifest};
    use chrono::TimeZone;

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 10, h, m, 0).unwrap()
    }

    fn daily_at_seven(backup_type: BackupType) -> Schedule {
        Schedule {
            database: None,
            name: "nightly".into(),
            schedule_type: match backup_type {
                BackupType::Full => ScheduleType::Full,
                BackupType::SchemaOnly => ScheduleType::SchemaOnly,
                BackupType::Incremental => ScheduleType::Incremental,
            },
            cron: "0 7 * * *".into(),
            retention: Some(crate::config::RetentionPolicy::within(
                std::time::Duration::from_secs(30 * 86400),
            )),
            grace: std::time::Duration::from_secs(3600),
            timezone: None,
            missed: crate::config::Missed::Skip,
            jitter: None,
            targets: Vec::new(),
            backup: None,
            random_within: None,
        }
    }

    fn backup(id: &str, backup_type: BackupType, started: DateTime<Utc>) -> Manifest {
        let mut m = sample_manifest(id);
        m.backup_type = backup_type;
        m.created_at = started;
        m.completed_at = started + Duration::minutes(3);
        m
    }

    #[test]
    fn a_schedule_never_due_yet_is_ok() {
        assert_eq!(
            judge(None, None, Duration::hours(1), at(9, 0)),
            ScheduleState::Ok
        );
    }

    #[test]
    fn a_backup_since_the_due_time_is_ok_even_slightly_early() {
        let grace = Duration::hours(1);
        assert_eq!(
            judge(Some(at(7, 0)), Some(at(7, 1)), grace, at(9, 0)),
            ScheduleState::Ok
        );
        assert_eq!(
            judge(Some(at(7, 0)), Some(at(6, 55)), grace, at(9, 0)),
            ScheduleState::Ok
        );
        assert_eq!(
            judge(Some(at(7, 0)), Some(at(6, 54)), grace, at(9, 0)),
            ScheduleState::Missed,
            "six minutes early is the previous run's backup"
        );
    }

    #[test]
    fn no_backup_is_due_within_the_grace_then_missed() {
        let grace = Duration::hours(1);
        assert_eq!(
            judge(Some(at(7, 0)), None, grace, at(7, 30)),
            ScheduleState::Due
        );
        assert_eq!(
            judge(Some(at(7, 0)), None, grace, at(8, 0)),
            ScheduleState::Due
        );
        assert_eq!(
            judge(Some(at(7, 0)), None, grace, at(8, 1)),
            ScheduleState::Missed
        );
        assert_eq!(
            judge(Some(at(7, 0)), Some(at(5, 0)), grace, at(8, 1)),
            ScheduleState::Missed,
            "an older backup does not count for this run"
        );
    }

    #[test]
    fn the_newest_backup_of_the_schedules_type_decides() {
        let schedule = daily_at_seven(BackupType::Full);
        let manifests = [
            backup(
                "20260309-070000-aaaaaaaa",
                BackupType::Full,
                at(7, 0) - Duration::days(1),
            ),
            backup("20260310-070100-bbbbbbbb", BackupType::SchemaOnly, at(7, 1)),
        ];
        let s = schedule_status(&schedule, &manifests, &[], at(9, 0)).unwrap();
        assert_eq!(
            s.status,
            ScheduleState::Missed,
            "the schema-only backup is not a full one"
        );
        assert_eq!(
            s.last_backup_id.as_deref(),
            Some("20260309-070000-aaaaaaaa")
        );
        assert_eq!(s.previous_due, Some(at(7, 0)));
        assert_eq!(s.next_due, Some(at(7, 0) + Duration::days(1)));
        assert_eq!(
            s.retention.as_deref(),
            Some("keep_within 30days, min_keep 1")
        );

        let schema = schedule_status(
            &daily_at_seven(BackupType::SchemaOnly),
            &manifests,
            &[],
            at(9, 0),
        )
        .unwrap();
        assert_eq!(schema.status, ScheduleState::Ok);
        assert_eq!(
            schema.last_backup_id.as_deref(),
            Some("20260310-070100-bbbbbbbb")
        );
    }

    #[test]
    fn a_suspect_backup_is_not_the_schedules_run() {
        use crate::repository::manifest::{Finding, Severity, ValidatorRun};
        let schedule = daily_at_seven(BackupType::Full);
        let good = backup(
            "20260309-070000-aaaaaaaa",
            BackupType::Full,
            at(7, 0) - Duration::days(1),
        );
        let mut suspect = backup("20260310-070100-bbbbbbbb", BackupType::Full, at(7, 1));
        suspect.validators = vec![ValidatorRun {
            name: "rules".into(),
            plugin: "rules-validator".into(),
            version: "0.1.0".into(),
            sha256: "0".repeat(64),
            findings: vec![Finding {
                rule: "max_shrink_percent".into(),
                table: "public.pantry_items".into(),
                column: None,
                severity: Severity::Error,
                message: "shrank by 90%".into(),
                count: 0,
            }],
        }];
        let s = schedule_status(&schedule, &[good, suspect], &[], at(9, 0)).unwrap();
        assert_eq!(s.status, ScheduleState::Missed, "today's run is suspect");
        assert_eq!(
            s.last_backup_id.as_deref(),
            Some("20260309-070000-aaaaaaaa"),
            "the newest good backup"
        );
    }

    fn drill(id: &str, outcome: &str, started: DateTime<Utc>) -> DrillRecord {
        serde_json::from_value(serde_json::json!({
            "drill_id": id, "started_at": started, "finished_at": started + Duration::minutes(4),
            "outcome": outcome, "backup_id": "20260309-070000-aaaaaaaa", "backup_name": "nightly",
            "database": "pantry", "point_in_time": started - Duration::hours(2), "chosen": "latest",
            "scratch": {"kind": "throwaway-cluster", "server": "127.0.0.1:5999", "database": "pantry",
                        "kept": false, "removed": true},
            "steps": [], "restore_seconds": 200.0, "recovery_seconds": 240.0, "rto_seconds": 7200.0,
            "rto_met": true, "point_age_seconds": 7200, "rpo_seconds": 86400.0, "rpo_met": true,
            "tables": 3, "rows": 10, "bytes": 100, "verification": "checksums", "validators": [],
            "checks": [], "error": null
        }))
        .expect("a drill record")
    }

    #[test]
    fn a_drill_schedule_is_kept_by_a_passed_drill_only() {
        let mut schedule = daily_at_seven(BackupType::Full);
        schedule.schedule_type = ScheduleType::Drill;
        schedule.retention = None;
        let failed = drill("d-failed", "failed", at(7, 0));
        let passed = drill("d-passed", "passed", at(7, 0) - Duration::days(1));
        let manifests = [backup(
            "20260310-070100-bbbbbbbb",
            BackupType::Full,
            at(7, 1),
        )];
        let s = schedule_status(&schedule, &manifests, &[&failed, &passed], at(9, 0)).unwrap();
        assert_eq!(s.status, ScheduleState::Missed, "today's drill failed");
        assert_eq!(s.last_backup_id, None, "a drill schedule takes no backup");
        let last = s.last_drill.as_ref().expect("the passed drill");
        assert_eq!(last.drill_id, "d-passed");
        assert_eq!(serde_json::to_value(&s).unwrap()["type"], "drill");
        let today = drill("d-today", "passed", at(7, 2));
        let s = schedule_status(&schedule, &[], &[&failed, &today], at(9, 0)).unwrap();
        assert_eq!(s.status, ScheduleState::Ok);
        // Another database's drills do not count.
        schedule.database = Some("reports".into());
        let databases = BTreeMap::from([("reports".to_string(), "reports".to_string())]);
        let s = status(&[schedule], &[], &[today], &databases, at(9, 0)).unwrap();
        assert_eq!(s[0].status, ScheduleState::Missed);
    }

    #[test]
    fn the_status_reads_as_the_json_and_the_table_show_it() {
        assert_eq!(
            serde_json::to_value(ScheduleState::Missed).unwrap(),
            "missed"
        );
        assert_eq!(ScheduleState::Due.to_string(), "due");
    }

    #[test]
    fn due_times_are_read_in_the_schedules_time_zone() {
        // 02:00 in New York is 06:00 UTC on 10 March 2026 (daylight time since the 8th).
        let mut schedule = daily_at_seven(BackupType::Full);
        schedule.cron = "0 2 * * *".into();
        schedule.timezone = Some("America/New_York".into());
        let s = schedule_status(&schedule, &[], &[], at(9, 0)).unwrap();
        assert_eq!(s.previous_due, Some(at(6, 0)));
        assert_eq!(s.next_due, Some(at(6, 0) + Duration::days(1)));
        assert_eq!(s.status, ScheduleState::Missed);
    }

    #[test]
    fn a_cron_that_does_not_parse_names_its_schedule() {
        let mut schedule = daily_at_seven(BackupType::Full);
        schedule.cron = "every night".into();
        let err = status(&[schedule], &[], &[], &BTreeMap::new(), at(9, 0))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("schedule 'nightly'") && err.contains("every night"),
            "{err}"
        );
    }
}
