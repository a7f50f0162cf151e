//! `backup prune`: apply the configured retention to the repository. Every backup gets a
//! verdict (keep or delete, the deciding rule, why); unless it is a dry run the deleted ones
//! go from every target that holds them, and garbage collection follows on every target.
//! `append_only` targets keep everything (the report says so), and a copy under S3 Object
//! Lock is kept there until its retention ends.

use crate::config::Config;
use crate::engine::retention::{self, Candidate, Group, Health, PinState, Rule};
use crate::engine::scheduler::Timetable;
use crate::error::{Error, Result};
use crate::repository::gc::{GcReport, collect_garbage};
use crate::repository::history::ValidationState;
use crate::repository::lock::RepoLock;
use crate::repository::manifest::{BackupType, Manifest};
use crate::repository::signing::RetiredBy;
use crate::repository::{Repository, backup_ids_on, manifest_key};
use crate::targets::{Retention, Target};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// One backup and what retention decided about it.
#[derive(Debug, Clone, Serialize)]
pub struct PruneEntry {
    pub backup_id: String,
    pub name: String,
    pub database: String,
    #[serde(rename = "type")]
    pub backup_type: BackupType,
    pub created_at: DateTime<Utc>,
    /// `keep` or `delete`.
    pub decision: &'static str,
    pub rule: Rule,
    pub detail: String,
    /// `schedule NAME` whose policy governs it; None: no policy does.
    pub policy: Option<String>,
}

/// What garbage collection did on one target.
#[derive(Debug, Clone, Serialize)]
pub struct TargetPrune {
    pub target: String,
    /// The backups removed from this target.
    pub backups_deleted: Vec<String>,
    /// An `append_only` target: nothing was deleted or collected there.
    pub append_only: bool,
    /// Backups retention would delete that this target keeps: all of them on an
    /// `append_only` target, else those under S3 Object Lock.
    pub backups_kept: Vec<KeptCopy>,
    #[serde(flatten)]
    pub gc: GcReport,
}

/// A copy prune leaves on a target, and why.
#[derive(Debug, Clone, Serialize)]
pub struct KeptCopy {
    pub backup_id: String,
    /// Its Object Lock retention; None on an `append_only` target.
    pub locked: Option<Retention>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub now: DateTime<Utc>,
    /// Every backup, oldest first.
    pub backups: Vec<PruneEntry>,
    /// Damaged manifests are never pruned (their chunks stay until they are repaired or
    /// deleted by hand); their ids.
    pub damaged_kept: Vec<String>,
    /// Per target, when not a dry run.
    pub targets: Vec<TargetPrune>,
}

impl PruneReport {
    pub fn to_delete(&self) -> impl Iterator<Item = &PruneEntry> {
        self.backups.iter().filter(|b| b.decision == "delete")
    }
}

/// Decides and (unless `dry_run`) deletes. `database`: only the backups of this database
/// (its name in PostgreSQL); None: every backup in the repository.
pub async fn prune(
    targets: &[Arc<dyn Target>],
    config: &Config,
    databases: &BTreeMap<String, String>,
    database: Option<&str>,
    dry_run: bool,
    now: DateTime<Utc>,
) -> Result<PruneReport> {
    let repo = Repository::open_for_reading(targets).await?;
    let catalog = repo.catalog().await?;
    let manifests: Vec<&Manifest> = catalog
        .manifests
        .iter()
        .filter(|m| database.is_none_or(|d| m.source.database == d))
        .collect();
    let (groups, governing) = groups(config, databases)?;
    let mut candidates = Vec::new();
    for manifest in &manifests {
        let health = if let Some((run, finding)) = manifest.suspect_findings().next() {
            Health::Suspect(format!(
                "validator '{}' found {}: {}",
                run.name, finding.table, finding.message
            ))
        } else {
            match repo.validation_state(&manifest.id).await {
                ValidationState::Passed => Health::Validated,
                ValidationState::Failed(why) => Health::Suspect(why),
                ValidationState::Unknown => Health::Unvalidated,
            }
        };
        let pin = repo.pin_of(&manifest.id).await?.map(|p| PinState {
            until: p.until,
            reason: p.reason,
        });
        candidates.push(Candidate {
            backup_id: manifest.id.clone(),
            created_at: manifest.created_at,
            chain: manifest.chain.clone(),
            health,
            pin,
            group: governing.of(
                manifest.backup_type,
                manifest.schedule.as_deref(),
                &manifest.source.database,
            ),
        });
    }
    let verdicts = retention::decide(&groups, &candidates, now);
    let backups: Vec<PruneEntry> = manifests
        .iter()
        .zip(verdicts)
        .map(|(m, v)| PruneEntry {
            backup_id: m.id.clone(),
            name: m.name.clone(),
            database: m.source.database.clone(),
            backup_type: m.backup_type,
            created_at: m.created_at,
            decision: if v.keep { "keep" } else { "delete" },
            rule: v.rule,
            detail: v.detail,
            policy: v.policy,
        })
        .collect();
    let mut report = PruneReport {
        dry_run,
        now,
        backups,
        damaged_kept: catalog
            .damaged
            .iter()
            .map(|d| d.backup_id.clone())
            .collect(),
        targets: Vec::new(),
    };
    if dry_run {
        return Ok(report);
    }
    let doomed: Vec<String> = report.to_delete().map(|b| b.backup_id.clone()).collect();
    // What each removal's retirement record says.
    let why: BTreeMap<String, RetiredBy> = report
        .to_delete()
        .map(|b| {
            let policy = b.policy.as_deref().unwrap_or("no policy");
            let detail = format!("{policy}, {}: {}", b.rule.as_str(), b.detail);
            (b.backup_id.clone(), RetiredBy::retention(detail))
        })
        .collect();
    for target in targets {
        let held = backup_ids_on(target).await?;
        let mut here: Vec<String> = doomed
            .iter()
            .filter(|id| held.contains(id))
            .cloned()
            .collect();
        if target.append_only() {
            report.targets.push(TargetPrune {
                target: target.name().to_string(),
                backups_deleted: Vec::new(),
                append_only: true,
                backups_kept: here
                    .into_iter()
                    .map(|backup_id| KeptCopy {
                        backup_id,
                        locked: None,
                    })
                    .collect(),
                gc: GcReport::default(),
            });
            continue;
        }
        let mut backups_kept = Vec::new();
        let store_now = Utc::now();
        let mut unlocked = Vec::new();
        for id in here {
            let key = manifest_key(&id);
            let retention = target.retention(&key).await.map_err(|e| {
                e.at(
                    &key,
                    format!("reading the Object Lock retention of backup {id}"),
                )
            })?;
            match retention.filter(|r| r.holds_at(store_now)) {
                Some(lock) => backups_kept.push(KeptCopy {
                    backup_id: id,
                    locked: Some(lock),
                }),
                None => unlocked.push(id),
            }
        }
        here = unlocked;
        let repo = Repository::open(target.clone()).await?;
        let lock = RepoLock::exclusive(&repo, "backup prune").await?;
        let result = async {
            for id in &here {
                repo.delete_manifest(id, &why[id]).await?;
                // An expired pin goes with its backup.
                repo.remove_pin(id).await?;
            }
            collect_garbage(&repo, &lock).await
        }
        .await;
        let gc = result.map_err(|e| {
            Error::Repository(format!(
                "pruning target '{}' stopped: {e}; the backups deleted so far there are gone, the rest are intact; run `backup-cli backup prune` again",
                target.name()
            ))
        });
        let gc = lock.release_with(gc).await?;
        report.targets.push(TargetPrune {
            target: target.name().to_string(),
            backups_deleted: here,
            append_only: false,
            backups_kept,
            gc,
        });
    }
    Ok(report)
}

/// How long the retention that governs a new backup of `backup_type` for `schedule` (if
/// any) of the database named `database` in PostgreSQL keeps it at least: its policy's
/// `keep_within`, chosen as `backup prune` chooses the policy. None when no policy governs
/// it or the policy keeps by count only (`keep_last`, the buckets, `min_keep`): such a
/// backup's date is not known when it is taken.
pub fn retention_period(
    config: &Config,
    databases: &BTreeMap<String, String>,
    backup_type: BackupType,
    schedule: Option<&str>,
    database: &str,
) -> Result<Option<std::time::Duration>> {
    let (groups, governing) = groups(config, databases)?;
    Ok(governing
        .of(backup_type, schedule, database)
        .and_then(|g| groups[g].policy.keep_within))
}

/// A schedule as the assignment of backups sees it.
struct Entry {
    name: String,
    /// None: a drill schedule, which governs no backup.
    backup_type: Option<BackupType>,
    /// Its database's name in PostgreSQL, when it names one.
    dbname: Option<String>,
    group: Option<usize>,
}

/// The policies (one group per schedule with `retention`, one per `[retention]` type), and
/// which governs a backup: the schedule named in its manifest, else the first schedule of its
/// type and database (`databases`: each `[[databases]]` name with its name in PostgreSQL);
/// when that schedule has no `retention` (or there is none), its type's `[retention]` policy.
/// A backup nothing governs is kept.
fn groups(
    config: &Config,
    databases: &BTreeMap<String, String>,
) -> Result<(Vec<Group>, Governing)> {
    let schedules = &config.schedules;
    let mut groups = Vec::new();
    let mut of_schedule: Vec<Option<usize>> = Vec::new();
    for schedule in schedules {
        match &schedule.retention {
            Some(policy) => {
                of_schedule.push(Some(groups.len()));
                groups.push(Group {
                    label: format!("schedule {}", schedule.name),
                    policy: policy.clone(),
                    time_zone: Timetable::new(schedule)?.zone().clone(),
                });
            }
            None => of_schedule.push(None),
        }
    }
    let entries: Vec<Entry> = schedules
        .iter()
        .zip(of_schedule)
        .map(|(s, group)| Entry {
            name: s.name.clone(),
            backup_type: s.schedule_type.backup_type(),
            dbname: s
                .database
                .as_ref()
                .map(|n| databases.get(n).unwrap_or(n).clone()),
            group,
        })
        .collect();
    let zone = match &config.retention.timezone {
        None => jiff::tz::TimeZone::UTC,
        Some(name) => jiff::tz::TimeZone::get(name).map_err(|e| {
            Error::Config(format!(
                "[retention] timezone '{name}' is not known ({e}); use an IANA name such as America/New_York or UTC"
            ))
        })?,
    };
    let mut of_type = Vec::new();
    for backup_type in [
        BackupType::Full,
        BackupType::SchemaOnly,
        BackupType::Incremental,
    ] {
        if let Some(policy) = config.retention.of(backup_type) {
            of_type.push((backup_type, groups.len()));
            groups.push(Group {
                label: format!("type {backup_type}"),
                policy: policy.clone(),
                time_zone: zone.clone(),
            });
        }
    }
    Ok((groups, Governing { entries, of_type }))
}

/// Which group governs a backup (see [`groups`]).
struct Governing {
    entries: Vec<Entry>,
    of_type: Vec<(BackupType, usize)>,
}

impl Governing {
    /// The group of a backup of `backup_type`, taken for `schedule`, of `database`.
    fn of(&self, backup_type: BackupType, schedule: Option<&str>, database: &str) -> Option<usize> {
        let schedule = match schedule {
            Some(name) => self.entries.iter().find(|e| e.name == name),
            None => self.entries.iter().find(|e| {
                e.backup_type == Some(backup_type)
                    && e.dbname.as_ref().is_none_or(|d| d == database)
            }),
        };
        schedule.and_then(|e| e.group).or_else(|| {
            self.of_type
                .iter()
                .find(|(t, _)| *t == backup_type)
                .map(|(_, g)| *g)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::manifest::sample_manifest;

    #[test]
    fn a_backup_goes_to_its_schedules_policy_else_its_types() {
        let config: Config = toml::from_str(
            "[[schedules]]\nname = \"daily-full\"\ntype = \"full\"\ncron = \"0 2 * * *\"\nretention = \"30d\"\n\
             [[schedules]]\nname = \"four-hourly\"\ntype = \"incremental\"\ncron = \"0 */4 * * *\"\n\
             [retention]\nincremental = \"7d\"\nschema-only = \"90d\"\n",
        )
        .expect("config");
        let databases = BTreeMap::new();
        let (groups, governing) = groups(&config, &databases).expect("groups");
        let database = sample_manifest("20261201-020000-abcd").source.database;
        let label = |backup_type, schedule: Option<&str>| {
            governing
                .of(backup_type, schedule, &database)
                .map(|g| groups[g].label.clone())
        };
        assert_eq!(
            label(BackupType::Full, None).as_deref(),
            Some("schedule daily-full")
        );
        // The incremental schedule has no retention of its own: its type's applies.
        assert_eq!(
            label(BackupType::Incremental, Some("four-hourly")).as_deref(),
            Some("type incremental")
        );
        assert_eq!(
            label(BackupType::SchemaOnly, None).as_deref(),
            Some("type schema-only")
        );
        // Object Lock's date comes from the same policy: its keep_within.
        let period = |backup_type, schedule| {
            retention_period(&config, &databases, backup_type, schedule, &database)
                .expect("period")
                .map(|d| d.as_secs() / 86400)
        };
        assert_eq!(period(BackupType::Full, None), Some(30));
        assert_eq!(
            period(BackupType::Incremental, Some("four-hourly")),
            Some(7)
        );
        assert_eq!(period(BackupType::SchemaOnly, None), Some(90));
        let counted: Config =
            toml::from_str("[retention]\nfull = { keep_last = 3 }\n").expect("config");
        assert_eq!(
            retention_period(&counted, &databases, BackupType::Full, None, &database)
                .expect("period"),
            None,
            "a count keeps no date"
        );
    }
}
