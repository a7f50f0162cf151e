//! Prometheus metrics of a repository and its databases: `backup-cli monitor metrics` prints
//! them once (node_exporter's textfile collector), the daemon serves them at `/metrics`, and
//! the status page and `/health` read the same [`Snapshot`].
//!
//! A scrape must stay cheap however many backups there are: it lists `backups/`, `events/`
//! and `drills/` once per target and reads only what it has not seen before. What a manifest
//! (or a drill record) says that metrics need is kept in an [`Index`] (a small JSON file in
//! the local state folder, keyed by backup id and manifest size, and by drill record; both are
//! written once), so a scrape of a repository with hundreds of backups reads no manifest at
//! all.

use crate::config::Loaded;
use crate::engine::alerts::{self, Scope};
use crate::engine::daemon::state::DaemonState;
use crate::engine::monitor::{self, Health, Monitored, Status};
use crate::engine::scheduler::Timetable;
use crate::repository::Repository;
use crate::repository::history::{DrillOutcome, DrillSummary, Event, ValidationState};
use crate::repository::latest::EMERGENCY_PREFIX;
use crate::repository::manifest::{BackupType, Chain, Manifest};
use crate::targets::{ObjectInfo, Target};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a scrape waits for the database before calling it unreachable.
const DATABASE_TIMEOUT: Duration = Duration::from_secs(5);

/// Bumped when [`Summary`] changes meaning: an index of another format is rebuilt.
const INDEX_FORMAT: u32 = 1;

/// What metrics and the status page need of one backup, taken from its manifest once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub id: String,
    pub name: String,
    /// The database's name in PostgreSQL.
    pub database: String,
    #[serde(rename = "type")]
    pub backup_type: BackupType,
    /// When the backup started (its snapshot: the point it restores to).
    pub created_at: DateTime<Utc>,
    pub completed_at: DateTime<Utc>,
    pub tables: usize,
    pub rows: u64,
    /// Bytes of COPY text and DDL.
    pub logical_bytes: u64,
    /// Compressed bytes of every chunk it references (its size on a target of its own).
    pub stored_bytes: u64,
    /// Compressed bytes it added to the repository (chunks not already there).
    pub added_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<Chain>,
    /// A validator found an error in its rows.
    pub suspect: bool,
    /// The manifest's size when it was read: another size means another manifest.
    pub manifest_bytes: u64,
}

impl Summary {
    pub fn of(manifest: &Manifest, manifest_bytes: u64) -> Summary {
        let mut seen = HashSet::new();
        let stored_bytes = manifest
            .chunks()
            .filter(|c| seen.insert(c.id.as_str()))
            .map(|c| c.stored)
            .sum();
        Summary {
            id: manifest.id.clone(),
            name: manifest.name.clone(),
            database: manifest.source.database.clone(),
            backup_type: manifest.backup_type,
            created_at: manifest.created_at,
            completed_at: manifest.completed_at,
            tables: manifest.tables.len(),
            rows: manifest.rows(),
            logical_bytes: manifest.logical_bytes(),
            stored_bytes,
            added_bytes: manifest.new_bytes,
            schedule: manifest.schedule.clone(),
            chain: manifest.chain.clone(),
            suspect: manifest.is_suspect(),
            manifest_bytes,
        }
    }

    /// Seconds the backup took.
    pub fn seconds(&self) -> f64 {
        (self.completed_at - self.created_at)
            .num_milliseconds()
            .max(0) as f64
            / 1000.0
    }

    /// Whether a recovery may start from it: data (not schema only), not an emergency
    /// snapshot of a broken state, not suspect.
    fn restorable(&self) -> bool {
        self.backup_type != BackupType::SchemaOnly
            && !self.name.starts_with(EMERGENCY_PREFIX)
            && !self.suspect
    }
}

/// A failed backup attempt, from `events/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub at: DateTime<Utc>,
    /// None in events recorded before they named their database.
    pub database: Option<String>,
    pub backup_type: Option<BackupType>,
    pub detail: String,
}

/// What a scrape remembers between runs: one [`Summary`] per manifest seen, one
/// [`Failure`] per failure event seen (events that are not failures are kept as `None`), one
/// [`DrillSummary`] per drill record seen (`None`: a record that does not parse).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Index {
    format: u32,
    backups: BTreeMap<String, Summary>,
    events: BTreeMap<String, Option<Failure>>,
    #[serde(default)]
    drills: BTreeMap<String, Option<DrillSummary>>,
}

/// The index file for the repository `identity` (its primary location) in `dir`.
pub fn index_path(dir: &std::path::Path, identity: &str) -> PathBuf {
    let digest = crate::repository::sha256_hex(identity.as_bytes());
    dir.join(format!("metrics-index-{}.json", &digest[..16]))
}

impl Index {
    /// The index kept at `path`; a missing, unreadable or older one is an empty index (it is
    /// a cache: rebuilding it costs one read per manifest, once).
    pub fn load(path: &std::path::Path) -> Index {
        std::fs::read(path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Index>(&bytes).ok())
            .filter(|index| index.format == INDEX_FORMAT)
            .unwrap_or_default()
    }

    /// Writes it to `path` (temporary file, then rename); a failure only costs the next
    /// scrape some reads, so it is a warning.
    pub fn save(&self, path: &std::path::Path) {
        let write = || -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let body = serde_json::to_vec(self).map_err(std::io::Error::other)?;
            let temporary = path.with_extension("tmp");
            std::fs::write(&temporary, body)?;
            std::fs::rename(&temporary, path)
        };
        if let Err(e) = write() {
            tracing::warn!(
                "could not keep the metrics index at {}: {e}",
                path.display()
            );
        }
    }

    pub fn backups(&self) -> impl Iterator<Item = &Summary> {
        self.backups.values()
    }
}

/// One storage target as a scrape found it.
#[derive(Debug, Clone, Serialize)]
pub struct TargetState {
    pub name: String,
    pub location: String,
    pub up: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Free bytes where the target reports them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub free_bytes: Option<u64>,
    /// Manifests listed on it.
    pub backups: usize,
}

/// One backup and the targets whose listing holds its manifest.
#[derive(Debug, Clone, Serialize)]
pub struct Held {
    #[serde(flatten)]
    pub summary: Summary,
    pub targets: Vec<String>,
}

/// One database: its objectives, whether it answers, and where it can be recovered to.
#[derive(Debug, Clone, Serialize)]
pub struct DatabaseState {
    /// The database's name in PostgreSQL (the `database` label).
    pub database: String,
    /// Its `[[databases]]` entry, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry: Option<String>,
    /// Objectives (configured databases only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpo_seconds: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rto_seconds: Option<u64>,
    /// Whether it answered this scrape (None: not configured here, not asked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reachable: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The newest backup a recovery may start from (`latest`), and the oldest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub newest_restorable: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub newest_point: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_point: Option<DateTime<Utc>>,
    /// Replication slots of the database and the WAL each retains.
    pub slots: Vec<Slot>,
    /// Its newest restore drill whatever the outcome (not an interrupted one), and its
    /// newest passed one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_drill: Option<DrillSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_passed_drill: Option<DrillSummary>,
}

impl DatabaseState {
    /// Seconds between its newest restorable point and `now`.
    pub fn point_age(&self, now: DateTime<Utc>) -> Option<f64> {
        self.newest_point
            .map(|p| (now - p).num_milliseconds().max(0) as f64 / 1000.0)
    }

    /// Whether the newest restorable point is older than the RPO (or there is none).
    pub fn rpo_breached(&self, now: DateTime<Utc>) -> bool {
        match (self.rpo_seconds, self.point_age(now)) {
            (Some(rpo), Some(age)) => age > rpo as f64,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Slot {
    pub name: String,
    pub retained_bytes: u64,
}

/// The newest backup of one database and type, and whether the last attempt succeeded.
#[derive(Debug, Clone, Serialize)]
pub struct LastBackup {
    pub database: String,
    #[serde(rename = "type")]
    pub backup_type: BackupType,
    pub backups: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success: Option<Summary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
}

impl LastBackup {
    /// The last attempt succeeded (no failure after the newest success).
    pub fn ok(&self) -> bool {
        match (&self.success, &self.failure) {
            (_, None) => true,
            (Some(s), Some(f)) => s.completed_at >= f.at,
            (None, Some(_)) => false,
        }
    }
}

/// An alert the alert room holds active.
#[derive(Debug, Clone, Serialize)]
pub struct ActiveAlert {
    pub alert: String,
    pub check: String,
    pub severity: String,
    pub message: String,
    pub fired_at: DateTime<Utc>,
    pub acknowledged: bool,
}

/// A schedule's next run.
#[derive(Debug, Clone, Serialize)]
pub struct NextRun {
    pub schedule: String,
    #[serde(rename = "type")]
    pub schedule_type: crate::config::ScheduleType,
    pub cron: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<DateTime<Utc>>,
    /// The daemon's last run of it: outcome and when it finished.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_outcome: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_finished: Option<DateTime<Utc>>,
}

/// Everything one scrape found, for the metrics text, the status page and `/health`.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub taken_at: DateTime<Utc>,
    /// What the scrape cost.
    pub scrape_seconds: f64,
    /// Manifests the scrape had to read (0 once the index knows them all).
    pub manifests_read: usize,
    /// Drill records the scrape had to read (0 once the index knows them all).
    pub drills_read: usize,
    /// The primary target's repository could be listed.
    pub up: bool,
    pub targets: Vec<TargetState>,
    /// Every backup, oldest first.
    pub backups: Vec<Held>,
    pub databases: Vec<DatabaseState>,
    pub last_backups: Vec<LastBackup>,
    pub alerts: Vec<ActiveAlert>,
    /// Failed deliveries per alert channel, since the alert state was made.
    pub notification_failures: BTreeMap<String, u64>,
    pub schedules: Vec<NextRun>,
    /// Manifests that could not be read.
    pub damaged: Vec<String>,
}

impl Snapshot {
    /// Whether the scrape read something the index did not know (then it is worth saving).
    pub fn index_grew(&self) -> bool {
        self.manifests_read > 0 || self.drills_read > 0
    }
}

/// What a scrape reads from: the configuration, the targets (the primary first), the
/// databases with their objectives, and whose alerts these are.
pub struct Sources<'a> {
    pub loaded: &'a Loaded,
    pub targets: &'a [Arc<dyn Target>],
    pub monitored: &'a [Monitored],
    pub scope: &'a Scope,
}

impl Sources<'_> {
    /// Where this repository's index is kept: beside its alert state.
    pub fn index_path(&self) -> PathBuf {
        index_path(&self.loaded.alert_state_dir(), &self.scope.repository)
    }
}

/// The targets a scrape reads: those every backup goes to (the primary first), then the
/// other configured ones.
pub fn ordered_targets(
    all: &[Arc<dyn Target>],
    expected: &[Arc<dyn Target>],
) -> Vec<Arc<dyn Target>> {
    let mut out = expected.to_vec();
    out.extend(
        all.iter()
            .filter(|t| !expected.iter().any(|e| e.name() == t.name()))
            .cloned(),
    );
    out
}

/// One scrape: lists the targets, brings `index` up to date (reading only manifests and
/// events it has not seen), asks each database whether it answers, and gathers the rest.
pub async fn scrape(sources: &Sources<'_>, index: &mut Index) -> Snapshot {
    let started = Instant::now();
    let now = Utc::now();
    if index.format != INDEX_FORMAT {
        *index = Index {
            format: INDEX_FORMAT,
            ..Index::default()
        };
    }
    let mut targets = Vec::new();
    let mut listed: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut sizes: BTreeMap<String, u64> = BTreeMap::new();
    for target in sources.targets {
        let mut state = TargetState {
            name: target.name().to_string(),
            location: target.location(),
            up: false,
            error: None,
            free_bytes: None,
            backups: 0,
        };
        match target.list("backups/").await {
            Ok(objects) => {
                state.up = true;
                for (id, size) in manifest_ids(&objects) {
                    state.backups += 1;
                    listed
                        .entry(id.clone())
                        .or_default()
                        .push(state.name.clone());
                    sizes.entry(id).or_insert(size);
                }
                state.free_bytes = target.available_space().await.ok().flatten();
            }
            Err(e) => state.error = Some(e.to_string()),
        }
        targets.push(state);
    }
    let readable: Vec<Arc<dyn Target>> = sources
        .targets
        .iter()
        .zip(&targets)
        .filter(|(_, s)| s.up)
        .map(|(t, _)| t.clone())
        .collect();
    // Read from the first target holding a repository, the others as fallbacks.
    let mut repo = None;
    for target in &readable {
        if let Ok(opened) = Repository::open(target.clone()).await {
            repo = Some(opened.with_fallbacks(readable.clone()));
            break;
        }
    }
    let up = match (&repo, sources.targets.first()) {
        (Some(repo), Some(primary)) => repo.target().name() == primary.name(),
        _ => false,
    };

    // Manifests: forget deleted ones, read new (or replaced) ones.
    index
        .backups
        .retain(|id, s| sizes.get(id) == Some(&s.manifest_bytes));
    let mut manifests_read = 0;
    let mut drills_read = 0;
    let mut damaged = Vec::new();
    if let Some(repo) = &repo {
        for (id, size) in &sizes {
            if index.backups.contains_key(id) {
                continue;
            }
            manifests_read += 1;
            match repo.read_manifest(id).await {
                Ok(manifest) => {
                    index
                        .backups
                        .insert(id.clone(), Summary::of(&manifest, *size));
                }
                Err(e) => damaged.push(format!("{id}: {e}")),
            }
        }
        read_events(repo, index).await;
        drills_read = read_drills(repo, index).await;
    }

    let mut backups: Vec<Held> = index
        .backups
        .values()
        .map(|s| Held {
            summary: s.clone(),
            targets: listed.get(&s.id).cloned().unwrap_or_default(),
        })
        .collect();
    backups.sort_by(|a, b| {
        (a.summary.created_at, &a.summary.id).cmp(&(b.summary.created_at, &b.summary.id))
    });

    let mut databases = databases(sources, &backups, repo.as_ref()).await;
    for db in &mut databases {
        let own = || {
            index
                .drills
                .values()
                .flatten()
                .filter(|d| d.database == db.database)
        };
        db.last_drill = own()
            .filter(|d| d.outcome != DrillOutcome::Interrupted)
            .max_by_key(|d| d.started_at)
            .cloned();
        db.last_passed_drill = own()
            .filter(|d| d.outcome == DrillOutcome::Passed)
            .max_by_key(|d| d.started_at)
            .cloned();
    }
    let last_backups = last_backups(&backups, index);
    let (alerts, notification_failures) = alert_room(sources);
    let schedules = schedules(sources.loaded, repo.as_ref(), &databases, now).await;
    Snapshot {
        taken_at: now,
        scrape_seconds: started.elapsed().as_secs_f64(),
        manifests_read,
        drills_read,
        up,
        targets,
        backups,
        databases,
        last_backups,
        alerts,
        notification_failures,
        schedules,
        damaged,
    }
}

/// Backup ids and manifest sizes in a listing of `backups/`.
fn manifest_ids(objects: &[ObjectInfo]) -> Vec<(String, u64)> {
    objects
        .iter()
        .filter_map(|o| {
            let id = o.key.strip_prefix("backups/")?.strip_suffix(".json")?;
            crate::repository::id::is_valid_backup_id(id).then(|| (id.to_string(), o.size))
        })
        .collect()
}

/// Reads the failure events the index has not seen yet.
async fn read_events(repo: &Repository, index: &mut Index) {
    let Ok(objects) = repo.target().list("events/").await else {
        return;
    };
    let keys: BTreeSet<&str> = objects.iter().map(|o| o.key.as_str()).collect();
    index.events.retain(|key, _| keys.contains(key.as_str()));
    for key in keys {
        if index.events.contains_key(key) {
            continue;
        }
        let failure = match repo.target().get(key).await {
            Ok(bytes) => repo
                .open_record::<Event>(key, &bytes)
                .filter(|e| e.kind == "backup-failed")
                .map(|e| Failure {
                    at: e.at,
                    database: e.database,
                    backup_type: e.backup_type,
                    detail: e.detail.lines().next().unwrap_or_default().to_string(),
                }),
            // Unreadable now: try again next time.
            Err(_) => continue,
        };
        index.events.insert(key.to_string(), failure);
    }
}

/// Reads the drill records the index has not seen yet; returns how many it read.
async fn read_drills(repo: &Repository, index: &mut Index) -> usize {
    let Ok(objects) = repo.target().list("drills/").await else {
        return 0;
    };
    let keys: BTreeSet<&str> = objects
        .iter()
        .map(|o| o.key.as_str())
        .filter(|k| k.ends_with(".json"))
        .collect();
    index.drills.retain(|key, _| keys.contains(key.as_str()));
    let mut read = 0;
    for key in keys {
        if index.drills.contains_key(key) {
            continue;
        }
        read += 1;
        match repo.drill_record(key).await {
            Ok(record) => {
                index
                    .drills
                    .insert(key.to_string(), record.as_ref().map(DrillSummary::of));
            }
            // Unreadable now: try again next time.
            Err(_) => continue,
        }
    }
    read
}

/// Every configured database, and every other one that has backups here.
async fn databases(
    sources: &Sources<'_>,
    backups: &[Held],
    repo: Option<&Repository>,
) -> Vec<DatabaseState> {
    let config = &sources.loaded.config;
    let mut out: Vec<DatabaseState> = Vec::new();
    for db in sources.monitored {
        let entry = db
            .name
            .as_ref()
            .and_then(|n| config.databases.iter().find(|e| &e.name == n));
        let (reachable, error, slots) = ask_database(db).await;
        out.push(DatabaseState {
            database: db.settings.dbname.clone(),
            entry: db.name.clone(),
            rpo_seconds: Some(db.rpo.as_secs()),
            rto_seconds: Some(
                entry
                    .map_or_else(|| config.objectives.rto(), |e| e.rto(&config.objectives))
                    .as_secs(),
            ),
            reachable: Some(reachable),
            error,
            newest_restorable: None,
            newest_point: None,
            first_point: None,
            slots,
            last_drill: None,
            last_passed_drill: None,
        });
    }
    for held in backups {
        if !out.iter().any(|d| d.database == held.summary.database) {
            out.push(DatabaseState {
                database: held.summary.database.clone(),
                entry: None,
                rpo_seconds: None,
                rto_seconds: None,
                reachable: None,
                error: None,
                newest_restorable: None,
                newest_point: None,
                first_point: None,
                slots: Vec::new(),
                last_drill: None,
                last_passed_drill: None,
            });
        }
    }
    for db in &mut out {
        let own: Vec<&Summary> = backups
            .iter()
            .map(|h| &h.summary)
            .filter(|s| s.database == db.database && s.restorable())
            .collect();
        // Newest first, passing over backups that failed validation everywhere, as
        // `latest` does; validation records are read only for the backups looked at.
        for s in own.iter().rev() {
            if !failed_validation(repo, &s.id).await {
                db.newest_restorable = Some(s.id.clone());
                db.newest_point = Some(s.created_at);
                break;
            }
        }
        for s in &own {
            if !failed_validation(repo, &s.id).await {
                db.first_point = Some(s.created_at);
                break;
            }
        }
    }
    out
}

async fn failed_validation(repo: Option<&Repository>, id: &str) -> bool {
    match repo {
        Some(repo) => matches!(repo.validation_state(id).await, ValidationState::Failed(_)),
        None => false,
    }
}

/// Whether the database answers, and the WAL its replication slots hold back.
async fn ask_database(db: &Monitored) -> (bool, Option<String>, Vec<Slot>) {
    let asked = tokio::time::timeout(DATABASE_TIMEOUT, async {
        let client = db.settings.connect().await?;
        let rows = client
            .query(
                "SELECT slot_name::text, COALESCE(pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END, restart_lsn), 0)::bigint \
                 FROM pg_replication_slots WHERE database = current_database() ORDER BY 1",
                &[],
            )
            .await
            .map_err(|source| crate::Error::Database {
                context: "reading the replication slots".into(),
                source,
            })?;
        Ok::<_, crate::Error>(
            rows.iter()
                .map(|r| Slot {
                    name: r.get(0),
                    retained_bytes: r.get::<_, i64>(1).max(0) as u64,
                })
                .collect::<Vec<_>>(),
        )
    })
    .await;
    match asked {
        Ok(Ok(slots)) => (true, None, slots),
        Ok(Err(e)) => (false, Some(e.to_string()), Vec::new()),
        Err(_) => (
            false,
            Some(format!(
                "{} did not answer within {}s",
                db.settings.describe(),
                DATABASE_TIMEOUT.as_secs()
            )),
            Vec::new(),
        ),
    }
}

/// The entry of `database` and `backup_type`, made when missing.
fn last_of<'a>(
    out: &'a mut BTreeMap<(String, String), LastBackup>,
    database: &str,
    backup_type: BackupType,
) -> &'a mut LastBackup {
    out.entry((database.to_string(), backup_type.to_string()))
        .or_insert_with(|| LastBackup {
            database: database.to_string(),
            backup_type,
            backups: 0,
            success: None,
            failure: None,
        })
}

/// Per database and type: how many backups, the newest successful one, the newest failure.
fn last_backups(backups: &[Held], index: &Index) -> Vec<LastBackup> {
    let mut out: BTreeMap<(String, String), LastBackup> = BTreeMap::new();
    for held in backups {
        let s = &held.summary;
        let last = last_of(&mut out, &s.database, s.backup_type);
        last.backups += 1;
        if !s.suspect
            && last
                .success
                .as_ref()
                .is_none_or(|l| l.completed_at <= s.completed_at)
        {
            last.success = Some(s.clone());
        }
    }
    for failure in index.events.values().flatten() {
        let (Some(database), Some(backup_type)) = (&failure.database, failure.backup_type) else {
            continue;
        };
        let last = last_of(&mut out, database, backup_type);
        if last.failure.as_ref().is_none_or(|f| f.at <= failure.at) {
            last.failure = Some(failure.clone());
        }
    }
    out.into_values().collect()
}

/// The alert room's active alerts and failed deliveries, read without taking its lock (a
/// scrape must not wait for a delivering run).
fn alert_room(sources: &Sources<'_>) -> (Vec<ActiveAlert>, BTreeMap<String, u64>) {
    let state = alerts::store::peek(&sources.loaded.alert_state_dir(), &sources.scope.repository);
    let active = state
        .active
        .values()
        .map(|a| ActiveAlert {
            alert: a.alert.clone(),
            check: a.check.clone(),
            severity: serde_json::to_value(a.severity)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            message: a.message.clone(),
            fired_at: a.fired_at,
            acknowledged: a.acked_at.is_some(),
        })
        .collect();
    (active, state.failures)
}

/// Each schedule's next due time, and the daemon's last run of it where a daemon records one.
async fn schedules(
    loaded: &Loaded,
    repo: Option<&Repository>,
    databases: &[DatabaseState],
    now: DateTime<Utc>,
) -> Vec<NextRun> {
    let mut daemon_states = Vec::new();
    if let Some(repo) = repo {
        for db in databases.iter().filter(|d| d.reachable.is_some()) {
            if let Ok(Some(state)) = DaemonState::read(repo, &db.database).await {
                daemon_states.push(state);
            }
        }
    }
    loaded
        .config
        .schedules
        .iter()
        .map(|s| {
            let last = daemon_states
                .iter()
                .filter_map(|d| d.schedule(&s.name)?.last_run.as_ref())
                .max_by_key(|r| r.finished_at);
            NextRun {
                schedule: s.name.clone(),
                schedule_type: s.schedule_type,
                cron: s.cron.clone(),
                next: Timetable::new(s).ok().and_then(|t| t.next_after(now)),
                last_outcome: last.map(|r| {
                    serde_json::to_value(r.outcome)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default()
                }),
                last_finished: last.map(|r| r.finished_at),
            }
        })
        .collect()
}

/// `/health`: the database answers, the repository can be read, and each database's newest
/// restorable point is within its RPO. Cheap (it reads the same snapshot as a scrape); the
/// daemon's full `monitor health` runs on its own timer and raises the alerts.
pub async fn health(snapshot: &Snapshot, monitored: &[Monitored]) -> Health {
    let mut checks = Vec::new();
    for db in monitored {
        checks.push(monitor::database_check(db).await);
    }
    let primary = snapshot.targets.first();
    checks.push(match primary {
        Some(t) if snapshot.up => monitor::check(
            &format!("repository {}", t.name),
            Status::Ok,
            format!("{} backup(s) at {}", t.backups, t.location),
        ),
        Some(t) => monitor::alert(
            &format!("repository {}", t.name),
            format!(
                "no repository can be read at {}: {}",
                t.location,
                t.error
                    .as_deref()
                    .unwrap_or("it holds none (`backup-cli init` creates one)")
            ),
            "Backup file not found",
            "Check backup location and permissions",
        ),
        None => monitor::alert(
            "repository",
            "no storage target is configured",
            "Backup file not found",
            "Configure [[targets]] or [repository] path",
        ),
    });
    for db in snapshot
        .databases
        .iter()
        .filter(|d| d.rpo_seconds.is_some())
    {
        let name = format!(
            "recovery point {}",
            db.entry.as_deref().unwrap_or(&db.database)
        );
        let rpo = Duration::from_secs(db.rpo_seconds.unwrap_or_default());
        let rpo_text = humantime::format_duration(rpo);
        checks.push(match (&db.newest_restorable, db.point_age(snapshot.taken_at)) {
            (Some(id), Some(age)) if db.rpo_breached(snapshot.taken_at) => monitor::alert(
                &name,
                format!(
                    "the newest restorable backup {id} is {} old, older than the RPO of {rpo_text}",
                    humantime::format_duration(Duration::from_secs(age as u64))
                ),
                "Backup Failure",
                "Run `backup-cli backup create` now (escalate within 15 minutes)",
            ),
            (Some(id), Some(age)) => monitor::check(
                &name,
                Status::Ok,
                format!(
                    "{id} is {} old; RPO {rpo_text}",
                    humantime::format_duration(Duration::from_secs(age as u64))
                ),
            ),
            _ => monitor::alert(
                &name,
                format!("no restorable backup of database {}", db.database),
                "Backup Failure",
                "Run `backup-cli backup create` now (escalate within 15 minutes)",
            ),
        });
    }
    monitor::finish(snapshot.taken_at, checks)
}

/// One metric family being written: its HELP and TYPE once, then samples.
struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{key}=\"{}\"", escape_label(val));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", format_value(value));
        self
    }
}

fn family<'a>(out: &'a mut String, name: &str, kind: &str, help: &str) -> Family<'a> {
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(out, "# TYPE {name} {kind}");
    Family { out }
}

/// A label value in the text format: backslash, double quote and line feed escaped.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// HELP text: backslash and line feed escaped.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

fn format_value(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

fn seconds_of(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

/// A metric of each database and type's newest successful backup.
type BackupMetric = (&'static str, &'static str, fn(&Summary) -> f64);

const BACKUP_METRICS: [BackupMetric; 5] = [
    (
        "larder_backup_last_success_timestamp_seconds",
        "When the newest successful backup of the database and type completed (Unix time).",
        |s| seconds_of(s.completed_at),
    ),
    (
        "larder_backup_duration_seconds",
        "How long the newest successful backup of the database and type took.",
        Summary::seconds,
    ),
    (
        "larder_backup_stored_bytes",
        "Compressed bytes of every chunk the newest successful backup references.",
        |s| s.stored_bytes as f64,
    ),
    (
        "larder_backup_logical_bytes",
        "Logical bytes (COPY text and DDL) of the newest successful backup.",
        |s| s.logical_bytes as f64,
    ),
    (
        "larder_backup_added_bytes",
        "Compressed bytes the newest successful backup added to the repository (chunks not already stored).",
        |s| s.added_bytes as f64,
    ),
];

/// A metric of each database, where it has a value.
type DatabaseMetric = (
    &'static str,
    &'static str,
    fn(&DatabaseState, DateTime<Utc>) -> Option<f64>,
);

const DATABASE_METRICS: [DatabaseMetric; 5] = [
    (
        "larder_database_up",
        "1 when the database answered this scrape, else 0.",
        |d, _| d.reachable.map(|up| if up { 1.0 } else { 0.0 }),
    ),
    (
        "larder_recovery_point_age_seconds",
        "Age of the newest point the database can be recovered to (the snapshot of its newest restorable backup).",
        |d, now| d.point_age(now),
    ),
    (
        "larder_rpo_objective_seconds",
        "The database's recovery-point objective.",
        |d, _| d.rpo_seconds.map(|s| s as f64),
    ),
    (
        "larder_rto_objective_seconds",
        "The database's recovery-time objective.",
        |d, _| d.rto_seconds.map(|s| s as f64),
    ),
    (
        "larder_first_recoverable_timestamp_seconds",
        "The oldest point the database can be recovered to (Unix time).",
        |d, _| d.first_point.map(seconds_of),
    ),
];

/// A metric of each database's restore drills, where it has been drilled.
type DrillMetric = (
    &'static str,
    &'static str,
    fn(&DatabaseState) -> Option<f64>,
);

const DRILL_METRICS: [DrillMetric; 3] = [
    (
        "larder_drill_last_rto_seconds",
        "Measured recovery time of the database's last restore drill, passed or failed (compare with larder_rto_objective_seconds).",
        |d| d.last_drill.as_ref().map(|l| l.recovery_seconds),
    ),
    (
        "larder_drill_last_success_timestamp_seconds",
        "When the database's last passed restore drill finished (Unix time).",
        |d| {
            d.last_passed_drill
                .as_ref()
                .map(|l| seconds_of(l.finished_at))
        },
    ),
    (
        "larder_drill_last_status",
        "1 when the database's last restore drill passed (restored, verified, checks and RTO met), 0 when it failed.",
        |d| {
            d.last_drill
                .as_ref()
                .map(|l| flag(l.outcome == DrillOutcome::Passed))
        },
    ),
];

fn flag(on: bool) -> f64 {
    if on { 1.0 } else { 0.0 }
}

/// The Prometheus text exposition (format 0.0.4) of a snapshot.
pub fn render(snapshot: &Snapshot) -> String {
    let mut out = String::new();
    let now = snapshot.taken_at;
    family(
        &mut out,
        "larder_up",
        "gauge",
        "1 when the primary target holds a repository this scrape could read, else 0.",
    )
    .sample("larder_up", &[], flag(snapshot.up));
    let mut f = family(
        &mut out,
        "larder_target_up",
        "gauge",
        "1 when the storage target could be listed, else 0.",
    );
    for t in &snapshot.targets {
        f.sample("larder_target_up", &[("target", &t.name)], flag(t.up));
    }
    let mut f = family(
        &mut out,
        "larder_target_free_bytes",
        "gauge",
        "Free space on the storage target, where it reports it.",
    );
    for t in &snapshot.targets {
        if let Some(free) = t.free_bytes {
            f.sample(
                "larder_target_free_bytes",
                &[("target", &t.name)],
                free as f64,
            );
        }
    }

    let typed: Vec<(&LastBackup, String)> = snapshot
        .last_backups
        .iter()
        .map(|l| (l, l.backup_type.to_string()))
        .collect();
    let mut f = family(
        &mut out,
        "larder_backups",
        "gauge",
        "Backups in the repository, per database and type.",
    );
    for (l, ty) in &typed {
        f.sample(
            "larder_backups",
            &[("database", &l.database), ("type", ty)],
            l.backups as f64,
        );
    }
    let mut f = family(
        &mut out,
        "larder_backup_last_status",
        "gauge",
        "1 when the last backup attempt of the database and type succeeded, 0 when it failed.",
    );
    for (l, ty) in &typed {
        f.sample(
            "larder_backup_last_status",
            &[("database", &l.database), ("type", ty)],
            flag(l.ok()),
        );
    }
    for (name, help, value) in BACKUP_METRICS {
        let mut f = family(&mut out, name, "gauge", help);
        for (l, ty) in &typed {
            if let Some(s) = &l.success {
                f.sample(name, &[("database", &l.database), ("type", ty)], value(s));
            }
        }
    }
    for (name, help, value) in DATABASE_METRICS {
        let mut f = family(&mut out, name, "gauge", help);
        for d in &snapshot.databases {
            if let Some(v) = value(d, now) {
                f.sample(name, &[("database", &d.database)], v);
            }
        }
    }
    // From the drill records (through the index); a database never drilled has no sample
    // (absent, never a made-up value).
    for (name, help, value) in DRILL_METRICS {
        let mut f = family(&mut out, name, "gauge", help);
        for d in &snapshot.databases {
            if let Some(v) = value(d) {
                f.sample(name, &[("database", &d.database)], v);
            }
        }
    }

    let mut f = family(
        &mut out,
        "larder_replication_slot_retained_bytes",
        "gauge",
        "WAL bytes a replication slot of the database holds back.",
    );
    for d in &snapshot.databases {
        for s in &d.slots {
            f.sample(
                "larder_replication_slot_retained_bytes",
                &[("database", &d.database), ("slot", &s.name)],
                s.retained_bytes as f64,
            );
        }
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for a in &snapshot.alerts {
        *counts.entry(a.alert.as_str()).or_default() += 1;
    }
    let mut f = family(
        &mut out,
        "larder_alerts_active",
        "gauge",
        "Active alerts in the alert room, per runbook alert name.",
    );
    for (alert, count) in &counts {
        f.sample("larder_alerts_active", &[("alert", alert)], *count as f64);
    }
    let mut f = family(
        &mut out,
        "larder_notification_failures_total",
        "counter",
        "Alert deliveries that failed, per alert channel.",
    );
    for (channel, count) in &snapshot.notification_failures {
        f.sample(
            "larder_notification_failures_total",
            &[("notifier", channel)],
            *count as f64,
        );
    }
    let mut f = family(
        &mut out,
        "larder_plugin_calls_total",
        "counter",
        "Calls into WebAssembly plugins made by this process, per plugin, call and result.",
    );
    for ((plugin, call, result), count) in crate::plugin::calls::counts() {
        f.sample(
            "larder_plugin_calls_total",
            &[("plugin", &plugin), ("call", &call), ("result", result)],
            count as f64,
        );
    }
    let mut f = family(
        &mut out,
        "larder_schedule_next_run_timestamp_seconds",
        "gauge",
        "When the schedule is next due (Unix time).",
    );
    for s in &snapshot.schedules {
        if let Some(next) = s.next {
            f.sample(
                "larder_schedule_next_run_timestamp_seconds",
                &[("schedule", &s.schedule)],
                seconds_of(next),
            );
        }
    }
    family(
        &mut out,
        "larder_manifests_damaged",
        "gauge",
        "Manifests listed that could not be read.",
    )
    .sample(
        "larder_manifests_damaged",
        &[],
        snapshot.damaged.len() as f64,
    );
    family(
        &mut out,
        "larder_scrape_duration_seconds",
        "gauge",
        "What gathering these metrics took.",
    )
    .sample(
        "larder_scrape_duration_seconds",
        &[],
        snapshot.scrape_seconds,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let mut out = String::new();
        family(&mut out, "x_total", "counter", "line one\nline \\ two").sample(
            "x_total",
            &[("plugin", "<script>\"")],
            3.0,
        );
        assert_eq!(
            out,
            "# HELP x_total line one\\nline \\\\ two\n# TYPE x_total counter\nx_total{plugin=\"<script>\\\"\"} 3\n"
        );
    }

    #[test]
    fn values_print_as_prometheus_reads_them() {
        assert_eq!(format_value(3.0), "3");
        assert_eq!(format_value(1.5), "1.5");
        assert_eq!(format_value(1_700_000_000.25), "1700000000.25");
    }
}
