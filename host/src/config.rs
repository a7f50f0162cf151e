//! Configuration: a TOML file found by `--config`, `$BACKUP_CLI_CONFIG`, `./backup-cli.toml`
//! or `/etc/backup-cli/config.toml`, else embedded defaults. The commented template that
//! `backup-cli init` writes is `examples/backup-cli.toml`, so docs and defaults cannot drift.

use crate::error::{Error, Result};
use crate::repository::manifest::BackupType;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The commented configuration `backup-cli init` writes.
pub const TEMPLATE: &str = include_str!("../../examples/backup-cli.toml");

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub database: DatabaseConfig,
    /// Several databases, each with its own connection and objectives (`--db NAME` picks
    /// one); empty: the one `[database]`.
    pub databases: Vec<DatabaseEntry>,
    pub repository: RepositoryConfig,
    pub backup: BackupConfig,
    pub objectives: Objectives,
    pub monitor: MonitorConfig,
    pub schedules: Vec<Schedule>,
    /// Retention per backup type, for backups no schedule with `retention` governs (e.g.
    /// schema-only backups taken by hand before each migration).
    pub retention: TypeRetention,
    /// Where the repository is kept. Empty: one `fs` target named `local` at `[repository] path`.
    pub targets: Vec<TargetConfig>,
    pub plugins: PluginsConfig,
    pub daemon: DaemonConfig,
    /// Validator plugins: rule sets run on every backup's rows (`[[validators]]`).
    pub validators: Vec<ValidatorConfig>,
    /// Notification channels (WebAssembly notifier plugins), referenced by `[alerts] levels`.
    pub notifiers: Vec<NotifierConfig>,
    /// The alert lifecycle: state, reminders, escalation levels, retries.
    pub alerts: AlertsConfig,
    /// Change tracking for incremental backups (a logical replication slot per database).
    pub incremental: IncrementalConfig,
    /// Restore drills (`recovery drill`): where they restore to and the smoke checks they run.
    pub drill: DrillConfig,
}

/// `[incremental]`: with `enabled`, a full backup starts a chain (a logical replication slot
/// created at its snapshot) and `backup create --type incremental` stores the changes since
/// the chain's last backup.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IncrementalConfig {
    pub enabled: bool,
    /// The start of the chains' slot names (each full's slot is this, `_` and its backup
    /// id); default `larder_<database>`.
    pub slot: Option<String>,
    /// The publication pgoutput reads; default the slot's name.
    pub publication: Option<String>,
    /// `monitor health` raises "Replication Slot Lagging" when a slot retains more WAL.
    #[serde(deserialize_with = "bytes_from_text")]
    pub max_retained_wal: u64,
}

impl Default for IncrementalConfig {
    fn default() -> Self {
        IncrementalConfig {
            enabled: false,
            slot: None,
            publication: None,
            max_retained_wal: 10_000_000_000,
        }
    }
}

impl IncrementalConfig {
    /// The start of `database`'s chain slots (`slot::chain_slot`): `slot`, else `larder_` and
    /// the database's name in the letters slot names allow (lower-case, digits, `_`; at most
    /// 63). Also the publication's default name.
    pub fn slot_for(&self, database: &str) -> String {
        match &self.slot {
            Some(slot) => slot.clone(),
            None => {
                let name: String = format!("larder_{database}")
                    .chars()
                    .map(|c| match c.to_ascii_lowercase() {
                        c @ ('a'..='z' | '0'..='9' | '_') => c,
                        _ => '_',
                    })
                    .take(63)
                    .collect();
                name
            }
        }
    }

    pub fn publication_for(&self, database: &str) -> String {
        self.publication
            .clone()
            .unwrap_or_else(|| self.slot_for(database))
    }
}

/// `[drill]`: where `recovery drill` restores to and what it checks in the restored database.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DrillConfig {
    /// A server to restore drills into (a new database on it, dropped afterwards), as a
    /// connection URL to any of its databases; default: a throwaway local PostgreSQL.
    pub target_url: Option<String>,
    /// Smoke checks run in the restored database (`[[drill.checks]]`).
    pub checks: Vec<DrillCheck>,
}

/// One `[[drill.checks]]` entry: a query run in the restored database, and what it must give.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DrillCheck {
    /// How the report names it (default: the query).
    #[serde(default)]
    pub name: Option<String>,
    pub sql: String,
    /// `expect = "42"` (or 42, 1.5, true): the first column of the first row, as PostgreSQL
    /// prints it, equals this text; `expect = { rows = 3 }`: the query returns 3 rows; absent:
    /// the query runs without an error.
    #[serde(default)]
    pub expect: Option<Expect>,
}

/// What a drill check's query must return.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged, try_from = "toml::Value")]
pub enum Expect {
    /// The number of rows.
    Rows {
        rows: u64,
    },
    /// The first column of the first row, compared as text.
    Text(String),
    Integer(i64),
    Float(f64),
    /// As PostgreSQL prints a boolean: `t` or `f`.
    Bool(bool),
}

impl TryFrom<toml::Value> for Expect {
    type Error = String;
    fn try_from(value: toml::Value) -> std::result::Result<Expect, String> {
        let rows = match &value {
            toml::Value::String(text) => return Ok(Expect::Text(text.clone())),
            toml::Value::Integer(n) => return Ok(Expect::Integer(*n)),
            toml::Value::Float(x) => return Ok(Expect::Float(*x)),
            toml::Value::Boolean(b) => return Ok(Expect::Bool(*b)),
            toml::Value::Table(table) if table.len() == 1 => table.get("rows"),
            _ => None,
        };
        match rows.and_then(toml::Value::as_integer).map(u64::try_from) {
            Some(Ok(rows)) => Ok(Expect::Rows { rows }),
            _ => Err(format!(
                "expect = {value} is not an expectation: write a value (\"text\", 42, true), compared as text with the \
                 first column of the first row, or {{ rows = N }}, the number of rows"
            )),
        }
    }
}

/// One `[[validators]]` entry: a WebAssembly validator plugin and what it is granted (nothing
/// beyond its settings unless said here).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidatorConfig {
    pub name: String,
    /// The component file (.wasm); relative paths are relative to the configuration file.
    pub path: PathBuf,
    /// The file's SHA-256 (`backup-cli plugin hash FILE`); loading refuses a mismatch.
    pub sha256: Option<String>,
    /// Settings the plugin reads through `host.config`: strings as they are, anything else
    /// (arrays, tables, numbers) as JSON text, e.g. `rules = [ { table = "public.t", min_rows = 1 } ]`.
    #[serde(default)]
    pub config: BTreeMap<String, toml::Value>,
    /// Secrets the plugin reads through `host.secret`: name = "env:VAR" or "file:/path".
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// Hosts the plugin may send HTTP requests to (none by default).
    #[serde(default)]
    pub allow_hosts: Vec<String>,
    #[serde(default)]
    pub allow_private: bool,
    /// Directories the plugin may see (none by default).
    #[serde(default)]
    pub dirs: Vec<DirConfig>,
    /// Memory cap per instance (default 256MiB).
    pub memory: Option<String>,
    /// Deadline per call (default 30s).
    #[serde(default, with = "optional_duration")]
    pub timeout: Option<Duration>,
    /// Instances kept ready to check tables at once (default 4).
    pub instances: Option<usize>,
}

impl ValidatorConfig {
    /// The `config` values as `host.config` returns them.
    pub fn settings(&self) -> BTreeMap<String, String> {
        self.config
            .iter()
            .map(|(key, value)| (key.clone(), setting_text(value)))
            .collect()
    }
}

/// A plugin setting as `host.config` returns it: a string as it is, anything else (arrays,
/// tables, numbers) as JSON text.
pub fn setting_text(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

/// One notification channel: a WebAssembly plugin of the `notifier` world.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifierConfig {
    /// Referenced by `[alerts] levels`.
    pub name: String,
    /// The component file (.wasm); relative paths are relative to the configuration file.
    pub path: PathBuf,
    /// The file's SHA-256 (`backup-cli plugin hash FILE`); loading refuses a mismatch.
    pub sha256: Option<String>,
    /// Values the plugin reads through `host.config` (e.g. `url`).
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Secrets the plugin reads through `host.secret`: name = "env:VAR" or "file:/path".
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// Hosts the plugin may send HTTP requests to (as for `[[targets]]`).
    #[serde(default)]
    pub allow_hosts: Vec<String>,
    /// `host:port` destinations the plugin may open TCP connections to (an SMTP relay).
    #[serde(default)]
    pub allow_tcp: Vec<String>,
    /// Whether allow-listed names may lead to loopback, link-local or private addresses.
    #[serde(default)]
    pub allow_private: bool,
    /// Memory cap per instance (default 256MiB).
    pub memory: Option<String>,
    /// Deadline per delivery (default 30s).
    #[serde(default, with = "optional_duration")]
    pub timeout: Option<Duration>,
}

/// The name under which `[monitor] alert_command` is one more channel in `[alerts] levels`.
pub const ALERT_COMMAND_CHANNEL: &str = "alert_command";

/// `[alerts]`: how alerts live, repeat, escalate and are retried.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Where alert state is kept (default `$XDG_STATE_HOME/larder/alerts`, else
    /// `~/.local/state/larder/alerts`); one file per repository.
    pub state_dir: Option<PathBuf>,
    /// Re-send an alert that stays active this often ("0s": never; default 4h).
    #[serde(with = "humantime_serde_compat")]
    pub remind_every: Duration,
    /// How long one delivery is retried with backoff before it goes to the dead-letter list.
    #[serde(with = "humantime_serde_compat")]
    pub retry_for: Duration,
    /// Channels per escalation level: the first list is level 1 (database administrator), the
    /// second level 2 (system administrator, development lead), … Names are `[[notifiers]]`
    /// names or "alert_command". Empty: every channel at level 1, no escalation.
    pub levels: Vec<Vec<String>>,
    /// Escalation times per alert name ("Backup Failure" = "15m"), over the runbook's defaults;
    /// `default` applies to alerts the runbook gives no time. Names must be in [`ALERT_NAMES`].
    #[serde(deserialize_with = "duration_map::deserialize")]
    pub escalate_after: BTreeMap<String, Duration>,
}

/// Every alert Larder raises, by the runbook's names: the keys `[alerts] escalate_after`
/// accepts (besides [`DEFAULT_ESCALATION_KEY`]). A new alert is added here.
pub const ALERT_NAMES: &[&str] = &[
    "Backup Failure",
    "Backup Corruption",
    "Backup Validation Failed",
    "Disk Space Low",
    "Schedule Missed",
    "RPO Breached",
    "Replication Slot Lagging",
    "Drill Failed",
    "Database connection failed",
];

/// The `[alerts] escalate_after` key for alerts the runbook gives no escalation time.
pub const DEFAULT_ESCALATION_KEY: &str = "default";

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            state_dir: None,
            remind_every: Duration::from_secs(4 * 3600),
            retry_for: Duration::from_secs(30),
            levels: Vec::new(),
            escalate_after: BTreeMap::new(),
        }
    }
}

/// One storage target. The first of a backup's targets is its primary: the backup is written
/// there, then copied to the others.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum TargetConfig {
    /// A local or mounted directory (built in).
    Fs(FsTargetConfig),
    /// An S3-compatible object store (built in, through opendal).
    S3(S3TargetConfig),
    /// A WebAssembly storage-target plugin.
    Plugin(PluginTargetConfig),
}

impl TargetConfig {
    pub fn name(&self) -> &str {
        match self {
            TargetConfig::Fs(t) => &t.name,
            TargetConfig::S3(t) => &t.name,
            TargetConfig::Plugin(t) => &t.name,
        }
    }

    /// `append_only = true`: this host never deletes or overwrites backup data there
    /// (`targets::append_only`).
    pub fn append_only(&self) -> bool {
        match self {
            TargetConfig::Fs(t) => t.append_only,
            TargetConfig::S3(t) => t.append_only,
            TargetConfig::Plugin(t) => t.append_only,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FsTargetConfig {
    pub name: String,
    /// Relative paths are relative to the configuration file.
    pub path: PathBuf,
    /// Never delete or overwrite backup data here (prune from a host with `--allow-delete`).
    #[serde(default)]
    pub append_only: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3TargetConfig {
    pub name: String,
    pub bucket: String,
    /// e.g. `https://s3.eu-west-1.amazonaws.com` or `http://127.0.0.1:9000`.
    pub endpoint: Option<String>,
    #[serde(default = "default_region")]
    pub region: String,
    /// Key prefix inside the bucket.
    #[serde(default)]
    pub root: String,
    /// `access_key_id`, `secret_access_key` (and optionally `session_token`) as secret
    /// references (`env:VAR` or `file:/path`). Default: the AWS_* environment variables.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// Never delete or overwrite backup data here (prune from a host with `--allow-delete`).
    #[serde(default)]
    pub append_only: bool,
    /// S3 Object Lock: `{ mode = "governance" | "compliance" }` writes every backup object
    /// locked until the backup's retention ends (its creation plus the `keep_within` of the
    /// policy that governs it), extending the lock of chunks it shares with older backups;
    /// `days = N` is the floor (at least N days from the write) and the fallback for a
    /// backup whose retention keeps by count only. `"bucket-default"` relies on the bucket's
    /// default retention. Either way writes carry Content-MD5 (Object Lock requires it) and
    /// deletions check an object's retention first.
    pub object_lock: Option<ObjectLockConfig>,
}

/// `object_lock` of an S3 target.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(
    untagged,
    expecting = "object_lock is either \"bucket-default\" or { mode = \"governance\" | \"compliance\" } (optionally with days = N, the floor)"
)]
pub enum ObjectLockConfig {
    /// `"bucket-default"`: the bucket's default retention locks each object.
    BucketDefault(BucketDefault),
    /// Each object is locked in `mode` until its backup's retention ends, at least `days`.
    Retain {
        mode: ObjectLockMode,
        #[serde(default)]
        days: Option<u32>,
    },
}

impl std::fmt::Display for ObjectLockConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ObjectLockConfig::BucketDefault(_) => f.write_str("the bucket's default retention"),
            ObjectLockConfig::Retain { mode, days } => {
                write!(
                    f,
                    "{} mode, until each backup's retention ends",
                    mode.header_value().to_ascii_lowercase()
                )?;
                match days {
                    Some(days) => write!(f, " (at least {days} days)"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// The word `bucket-default`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum BucketDefault {
    #[serde(rename = "bucket-default")]
    BucketDefault,
}

/// S3 Object Lock's retention modes: governance can be lifted by a principal with
/// `s3:BypassGovernanceRetention`, compliance by nobody until the date passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectLockMode {
    Governance,
    Compliance,
}

impl ObjectLockMode {
    /// As S3 spells it in `x-amz-object-lock-mode`.
    pub fn header_value(self) -> &'static str {
        match self {
            ObjectLockMode::Governance => "GOVERNANCE",
            ObjectLockMode::Compliance => "COMPLIANCE",
        }
    }
}

fn default_region() -> String {
    "us-east-1".to_string()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginTargetConfig {
    pub name: String,
    /// The component file (.wasm); relative paths are relative to the configuration file.
    pub path: PathBuf,
    /// The file's SHA-256 (`backup-cli plugin hash FILE`); loading refuses a mismatch.
    pub sha256: Option<String>,
    /// Values the plugin reads through `host.config`.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Secrets the plugin reads through `host.secret`: name = "env:VAR" or "file:/path".
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// Hosts the plugin may send HTTP requests to (`host`, `host:port`, `host:*` or `*.domain`;
    /// without a port only the scheme's default port).
    #[serde(default)]
    pub allow_hosts: Vec<String>,
    /// Whether allow-listed names may lead to loopback, link-local or private addresses
    /// (entries naming an address or localhost with a port may always).
    #[serde(default)]
    pub allow_private: bool,
    /// Directories the plugin may see.
    #[serde(default)]
    pub dirs: Vec<DirConfig>,
    /// Memory cap per instance (default 256MiB).
    pub memory: Option<String>,
    /// Deadline per call (default 30s).
    #[serde(default, with = "optional_duration")]
    pub timeout: Option<Duration>,
    /// Instances that may run calls at once (default 4).
    pub instances: Option<usize>,
    /// Keys one listing may return (default 2000000).
    pub max_list_keys: Option<usize>,
    /// Pages one listing may take (default 100000).
    pub max_list_pages: Option<usize>,
    /// Time one listing may take, all pages together (default 10m).
    #[serde(default, with = "optional_duration")]
    pub list_timeout: Option<Duration>,
    /// Largest object `get` may return (default 256MiB).
    pub max_object_size: Option<String>,
    /// Never delete or overwrite backup data here (prune from a host with `--allow-delete`).
    #[serde(default)]
    pub append_only: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirConfig {
    /// The directory on this machine (relative paths: relative to the configuration file).
    pub host: PathBuf,
    /// Where the plugin sees it, e.g. `/offsite`.
    pub guest: String,
    #[serde(default)]
    pub mode: DirMode,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DirMode {
    #[default]
    ReadOnly,
    ReadWrite,
}

/// Plugin-wide settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginsConfig {
    /// Refuse to load any plugin entry without a `sha256` pin (regulated deployments).
    pub require_pinned_plugins: bool,
    /// Compiled plugins are cached here (default: $XDG_CACHE_HOME/larder/plugins).
    pub cache_dir: Option<PathBuf>,
}

/// Resolves a secret reference: `env:VAR` reads an environment variable, `file:/path` a file
/// (trailing newline removed). Secrets are never written in the configuration itself.
pub fn resolve_secret(owner: &str, name: &str, reference: &str) -> Result<String> {
    let fail = |why: String| Error::Config(format!("secret '{name}' of {owner}: {why}"));
    if let Some(var) = reference.strip_prefix("env:") {
        std::env::var(var)
            .map(crate::logging::secret)
            .map_err(|_| fail(format!("environment variable {var} is not set")))
    } else if let Some(path) = reference.strip_prefix("file:") {
        std::fs::read_to_string(path)
            .map(|s| crate::logging::secret(s.trim_end_matches(['\n', '\r']).to_string()))
            .map_err(|e| fail(format!("cannot read {path}: {e}")))
    } else {
        Err(fail(format!(
            "'{reference}' is not a secret reference; use env:VARIABLE or file:/path (secret values never go in the configuration file)"
        )))
    }
}

/// `monitor health` thresholds and the alert channel.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorConfig {
    /// Warn when the repository's disk has less free space than this (runbook: 10 GB).
    #[serde(deserialize_with = "bytes_from_text")]
    pub min_free_space: u64,
    /// Shell command that receives each alert as JSON on stdin (mail, a chat webhook, …).
    pub alert_command: Option<String>,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            min_free_space: 10_000_000_000,
            alert_command: None,
        }
    }
}

/// What a schedule runs: a backup of one type, or a restore drill (`recovery drill`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScheduleType {
    Full,
    SchemaOnly,
    Incremental,
    /// A restore drill of the schedule's database (the runbook's monthly restore test).
    Drill,
}

impl ScheduleType {
    /// The type of backup it takes (None: a drill takes none).
    pub fn backup_type(self) -> Option<BackupType> {
        match self {
            ScheduleType::Full => Some(BackupType::Full),
            ScheduleType::SchemaOnly => Some(BackupType::SchemaOnly),
            ScheduleType::Incremental => Some(BackupType::Incremental),
            ScheduleType::Drill => None,
        }
    }
}

impl std::fmt::Display for ScheduleType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.backup_type() {
            Some(backup_type) => backup_type.fmt(f),
            None => f.write_str("drill"),
        }
    }
}

/// A backup or a restore drill that should happen on a timetable; `schedule list` and
/// `monitor health` check that it did.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    pub name: String,
    #[serde(rename = "type")]
    pub schedule_type: ScheduleType,
    /// The `[[databases]]` entry it backs up (optional when there is at most one).
    #[serde(default)]
    pub database: Option<String>,
    /// Five-field cron expression, read in `timezone`, e.g. "0 2 * * *".
    pub cron: String,
    /// Which of its backups are kept: `{ keep_within = "30d", min_keep = 3 }` and the other
    /// keys of [`RetentionPolicy`], or `"30d"` (shorthand for `{ keep_within = "30d" }`).
    #[serde(default, deserialize_with = "retention_from")]
    pub retention: Option<RetentionPolicy>,
    /// How late a run may be before it counts as missed.
    #[serde(default = "default_grace", with = "humantime_serde_compat")]
    pub grace: Duration,
    /// The IANA time zone `cron` is read in, e.g. "America/New_York" (default UTC).
    #[serde(default)]
    pub timezone: Option<String>,
    /// What the daemon does about runs it missed while it was down (or later than `grace`).
    #[serde(default)]
    pub missed: Missed,
    /// Each run starts up to this much later than its cron time (spreads load across
    /// machines); less than `grace`.
    #[serde(default, with = "optional_duration")]
    pub jitter: Option<Duration>,
    /// The targets its backups go to (the first is written, the others get copies), as
    /// `backup create --target` takes them [default: `[backup] targets`, else all].
    #[serde(default)]
    pub targets: Vec<String>,
    /// A drill's backup: an id or `latest` (the default), as `recovery drill` takes it.
    #[serde(default)]
    pub backup: Option<String>,
    /// A drill of a backup chosen at random among those taken within this long, as
    /// `recovery drill --random-within` (instead of `backup`).
    #[serde(default, with = "optional_duration")]
    pub random_within: Option<Duration>,
}

impl Schedule {
    /// The type of backup the schedule takes; a drill schedule takes none, which `backup
    /// create --schedule` is told.
    pub fn backup_type(&self) -> Result<BackupType> {
        self.schedule_type.backup_type().ok_or_else(|| {
            Error::Config(format!(
                "--schedule {0}: that schedule is a restore drill, not a backup; run it with `backup-cli recovery drill --schedule {0}`",
                self.name
            ))
        })
    }

    /// What `type` allows: a drill keeps no backups (no `retention`) and writes to no target
    /// (no `targets`); `backup` and `random_within` choose a drill's backup, one or the other.
    fn check(&self) -> std::result::Result<(), String> {
        let name = &self.name;
        if self.schedule_type == ScheduleType::Drill {
            if self.retention.is_some() {
                return Err(format!(
                    "schedule '{name}' is a drill: it takes no backup, so it has no `retention` (put the policy on the schedule of the backups)"
                ));
            }
            if !self.targets.is_empty() {
                return Err(format!(
                    "schedule '{name}' is a drill: it writes no backup, so it has no `targets` (a drill reads the repository, and restores where [drill] target_url says)"
                ));
            }
            if self.backup.is_some() && self.random_within.is_some() {
                return Err(format!(
                    "schedule '{name}': `backup` and `random_within` both choose the drill's backup; keep one"
                ));
            }
        } else if self.backup.is_some() || self.random_within.is_some() {
            return Err(format!(
                "schedule '{name}' takes a {} backup: `backup` and `random_within` are for `type = \"drill\"` schedules",
                self.schedule_type
            ));
        }
        Ok(())
    }
}

/// The daemon's policy for runs missed while it was not running.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Missed {
    /// Report them and wait for the next time (cron's behaviour).
    #[default]
    Skip,
    /// Report them and run once at start, however many were missed.
    RunOnce,
}

/// `backup-cli daemon`: what runs besides the schedules, and how it stops.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// How often the daemon runs the `monitor health` checks and delivers their alerts.
    #[serde(with = "humantime_serde_compat")]
    pub health_every: Duration,
    /// After SIGTERM or SIGINT, how long a running backup may take to finish before it is
    /// stopped (its partial objects are then left to garbage collection, never visible).
    #[serde(with = "humantime_serde_compat")]
    pub stop_grace: Duration,
    /// How each copy of a new backup is validated before retention runs.
    pub validate: ValidateMode,
    /// Where `/metrics`, `/health` and the status page are served: an IP address and port
    /// (default loopback only, `127.0.0.1:9187`), or `"off"`.
    #[serde(deserialize_with = "listen_from")]
    pub listen: Option<std::net::SocketAddr>,
}

/// The listener's default: loopback only; all interfaces only when configured.
pub const DEFAULT_LISTEN: std::net::SocketAddr = std::net::SocketAddr::V4(
    std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 9187),
);

fn listen_from<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<std::net::SocketAddr>, D::Error> {
    let text = String::deserialize(d)?;
    if text == "off" {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|e| {
        serde::de::Error::custom(format!(
            "[daemon] listen = '{text}' is not an IP address and port like 127.0.0.1:9187 (or \"off\"): {e}"
        ))
    })
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            health_every: Duration::from_secs(300),
            stop_grace: Duration::from_secs(60),
            validate: ValidateMode::Full,
            listen: Some(DEFAULT_LISTEN),
        }
    }
}

/// `[daemon] validate`: how deeply the daemon checks each copy of the backup it just took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ValidateMode {
    /// Every chunk on every target read back and checked against its SHA-256 (storage
    /// integrity; rows are not counted and `[[validators]]` do not re-read them).
    Chunks,
    /// What `backup validate` does: every chunk read, every table's rows counted and
    /// checksummed against the manifest, the `[[validators]]` run over the rows again.
    #[default]
    Full,
}

impl ValidateMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ValidateMode::Chunks => "chunks",
            ValidateMode::Full => "full",
        }
    }
}

/// Which backups a schedule (or a backup type) keeps; `backup prune` and the daemon apply it.
/// A backup is kept when any rule keeps it; suspect backups fill no count, pins always keep.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionPolicy {
    /// Keep every backup younger than this, e.g. "30d".
    #[serde(default, with = "optional_duration")]
    pub keep_within: Option<Duration>,
    /// Keep the newest N backups.
    #[serde(default)]
    pub keep_last: Option<u32>,
    /// Keep the newest backup of each of the last N days (in the schedule's time zone).
    #[serde(default)]
    pub keep_daily: Option<u32>,
    /// … of each of the last N ISO weeks.
    #[serde(default)]
    pub keep_weekly: Option<u32>,
    /// … of each of the last N months.
    #[serde(default)]
    pub keep_monthly: Option<u32>,
    /// The floor: the newest N validated backups are kept whatever their age (not yet
    /// validated ones fill in when fewer are validated; suspect ones never). At least 1, so
    /// backups that fail for a month never cost the last good one.
    #[serde(default = "default_min_keep", deserialize_with = "min_keep_from")]
    pub min_keep: u32,
}

impl RetentionPolicy {
    /// `retention = "30d"`: keep what is younger than that (and the floor).
    pub fn within(age: Duration) -> RetentionPolicy {
        RetentionPolicy {
            keep_within: Some(age),
            keep_last: None,
            keep_daily: None,
            keep_weekly: None,
            keep_monthly: None,
            min_keep: default_min_keep(),
        }
    }

    /// The policy in the config's words, e.g. `keep_within 30d, min_keep 1`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(age) = self.keep_within {
            parts.push(format!("keep_within {}", humantime::format_duration(age)));
        }
        for (key, value) in [
            ("keep_last", self.keep_last),
            ("keep_daily", self.keep_daily),
            ("keep_weekly", self.keep_weekly),
            ("keep_monthly", self.keep_monthly),
        ] {
            if let Some(n) = value {
                parts.push(format!("{key} {n}"));
            }
        }
        parts.push(format!("min_keep {}", self.min_keep));
        parts.join(", ")
    }
}

fn default_min_keep() -> u32 {
    1
}

fn min_keep_from<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    match u32::deserialize(d)? {
        0 => Err(serde::de::Error::custom(
            "min_keep = 0 would let retention delete the last good backup; the floor is at least 1 (`backup delete` removes a backup by hand)",
        )),
        n => Ok(n),
    }
}

/// `[retention]`: a policy per backup type (`full`, `schema-only`, `incremental`), each written like a
/// schedule's `retention`; days are counted in `timezone` (default UTC).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
pub struct TypeRetention {
    #[serde(deserialize_with = "retention_from")]
    pub full: Option<RetentionPolicy>,
    #[serde(deserialize_with = "retention_from")]
    pub schema_only: Option<RetentionPolicy>,
    #[serde(deserialize_with = "retention_from")]
    pub incremental: Option<RetentionPolicy>,
    pub timezone: Option<String>,
}

impl TypeRetention {
    pub fn of(&self, backup_type: BackupType) -> Option<&RetentionPolicy> {
        match backup_type {
            BackupType::Full => self.full.as_ref(),
            BackupType::SchemaOnly => self.schema_only.as_ref(),
            BackupType::Incremental => self.incremental.as_ref(),
        }
    }
}

/// A retention value as written: `"30d"` (shorthand for `{ keep_within = "30d" }`) or a table.
fn retention_from<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<RetentionPolicy>, D::Error> {
    struct Visitor;
    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = RetentionPolicy;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str(
                "a duration like \"30d\" or a table like { keep_within = \"30d\", min_keep = 3 }",
            )
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<RetentionPolicy, E> {
            humantime::parse_duration(text)
                .map(RetentionPolicy::within)
                .map_err(|e| E::custom(format!("'{text}' is not a duration like 30d or 12h: {e}")))
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            map: A,
        ) -> Result<RetentionPolicy, A::Error> {
            RetentionPolicy::deserialize(serde::de::value::MapAccessDeserializer::new(map))
        }
    }
    d.deserialize_any(Visitor).map(Some)
}

fn default_grace() -> Duration {
    Duration::from_secs(3600)
}

/// Sizes such as "10GB", "500MiB" or a plain number of bytes.
pub fn parse_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some((number * factor) as u64)
}

fn bytes_from_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let text = String::deserialize(d)?;
    parse_bytes(&text).ok_or_else(|| {
        serde::de::Error::custom(format!("'{text}' is not a size like 10GB or 512MiB"))
    })
}

mod optional_duration {
    use serde::Deserializer;
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::humantime_serde_compat::deserialize(d).map(Some)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    pub url: Option<String>,
    pub sslmode: Option<String>,
    pub password_file: Option<PathBuf>,
    pub sslrootcert: Option<PathBuf>,
}

impl Config {
    /// The `[[databases]]` entry a command acts on: `--db NAME`, else the only one; None
    /// when the configuration has no `[[databases]]` (the one `[database]` applies).
    pub fn database_entry(&self, db: Option<&str>) -> Result<Option<&DatabaseEntry>> {
        let names = || {
            self.databases
                .iter()
                .map(|d| d.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match (db, self.databases.as_slice()) {
            (None, []) => Ok(None),
            (Some(name), []) => Err(Error::Config(format!(
                "--db {name}: the configuration has no [[databases]] entries (it names one database, in [database])"
            ))),
            (None, [only]) => Ok(Some(only)),
            (None, _) => Err(Error::Config(format!(
                "several databases are configured ({}); choose one with --db NAME",
                names()
            ))),
            (Some(name), all) => all.iter().find(|d| d.name == name).map(Some).ok_or_else(|| {
                Error::Config(format!(
                    "--db {name}: no [[databases]] entry has that name; the configured ones are: {}",
                    names()
                ))
            }),
        }
    }

    /// `[alerts]` and `[[notifiers]]` agree: channel names are unique, every level names
    /// configured channels, escalation times name alerts Larder raises, TCP grants name a port.
    fn check_alerts(&self) -> std::result::Result<(), String> {
        let mut channels = Vec::new();
        for notifier in &self.notifiers {
            if notifier.name == ALERT_COMMAND_CHANNEL || channels.contains(&notifier.name.as_str())
            {
                return Err(format!(
                    "two alert channels are named '{}' (\"{ALERT_COMMAND_CHANNEL}\" is the alert command's)",
                    notifier.name
                ));
            }
            channels.push(notifier.name.as_str());
            if let Some(bad) = notifier
                .allow_tcp
                .iter()
                .find(|entry| crate::plugin::policy::tcp_destination(entry).is_none())
            {
                return Err(format!(
                    "notifier '{}': allow_tcp entry \"{bad}\" must be host:port with an exact port, e.g. \"relay.internal:25\"",
                    notifier.name
                ));
            }
        }
        if self.monitor.alert_command.is_some() {
            channels.push(ALERT_COMMAND_CHANNEL);
        }
        for (i, level) in self.alerts.levels.iter().enumerate() {
            if level.is_empty() {
                return Err(format!("[alerts] levels: level {} names no channel", i + 1));
            }
            if let Some(name) = level.iter().find(|n| !channels.contains(&n.as_str())) {
                return Err(format!(
                    "[alerts] levels: level {} names the channel '{name}', which is not configured; the channels are: {}",
                    i + 1,
                    if channels.is_empty() {
                        "none (add a [[notifiers]] entry or [monitor] alert_command)".to_string()
                    } else {
                        channels.join(", ")
                    }
                ));
            }
        }
        if let Some(name) = self
            .alerts
            .escalate_after
            .keys()
            .find(|n| *n != DEFAULT_ESCALATION_KEY && !ALERT_NAMES.contains(&n.as_str()))
        {
            return Err(format!(
                "[alerts] escalate_after names \"{name}\", which is no alert Larder raises; the alerts are: {} (and \"{DEFAULT_ESCALATION_KEY}\" for the others)",
                ALERT_NAMES.join(", ")
            ));
        }
        Ok(())
    }

    /// The `[[schedules]]` entry named `name` (`backup create --schedule`).
    pub fn schedule(&self, name: &str) -> Result<&Schedule> {
        self.schedules
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| {
                Error::Config(format!(
                    "--schedule {name}: no [[schedules]] entry has that name; {}",
                    if self.schedules.is_empty() {
                        "the configuration has none".to_string()
                    } else {
                        format!(
                            "the configured ones are: {}",
                            self.schedules
                                .iter()
                                .map(|s| s.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    }
                ))
            })
    }

    /// The recovery-time and recovery-point objectives of the database `db` names (as
    /// [`Config::database_entry`] finds it): its entry's, else `[objectives]` for its class.
    pub fn objectives_for(&self, db: Option<&str>) -> Result<(Duration, Duration)> {
        Ok(match self.database_entry(db)? {
            Some(entry) => (entry.rto(&self.objectives), entry.rpo(&self.objectives)),
            None => (self.objectives.rto(), self.objectives.rpo()),
        })
    }

    /// Where the daemon of the database `db` names (as [`Config::database_entry`] finds it)
    /// listens: its entry's `listen`, else `[daemon] listen`. Two databases with schedules
    /// (each runs a daemon) cannot share an address: the second daemon would find the port
    /// taken, so this refuses to start either, naming both and what to set.
    pub fn daemon_listen(&self, db: Option<&str>) -> Result<Option<std::net::SocketAddr>> {
        let of = |entry: &DatabaseEntry| entry.listen.unwrap_or(self.daemon.listen);
        let Some(entry) = self.database_entry(db)? else {
            return Ok(self.daemon.listen);
        };
        let Some(addr) = of(entry) else {
            return Ok(None);
        };
        let runs_a_daemon = |other: &DatabaseEntry| {
            self.schedules
                .iter()
                .any(|s| s.database.as_deref() == Some(other.name.as_str()))
        };
        let shared: Vec<&str> = self
            .databases
            .iter()
            .filter(|other| other.name != entry.name && runs_a_daemon(other))
            .filter(|other| {
                of(other).is_some_and(|a| {
                    a.port() == addr.port()
                        && (a.ip() == addr.ip()
                            || a.ip().is_unspecified()
                            || addr.ip().is_unspecified())
                })
            })
            .map(|other| other.name.as_str())
            .collect();
        if shared.is_empty() {
            return Ok(Some(addr));
        }
        let from = if entry.listen.is_some() {
            format!("[[databases]] '{}' listen", entry.name)
        } else {
            "[daemon] listen".to_string()
        };
        Err(Error::Config(format!(
            "{from} = \"{addr}\" is also where the daemon of [[databases]] {} would listen: each database's daemon needs its own port. Give each [[databases]] entry its own `listen = \"127.0.0.1:PORT\"` (or `listen = \"off\"`)",
            shared
                .iter()
                .map(|n| format!("'{n}'"))
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }

    /// What the file says that no single key can: names that must match.
    fn check(&self, raw: &toml::Table) -> std::result::Result<(), String> {
        if let Some(slot) = &self.incremental.slot {
            if self.databases.len() > 1 {
                return Err("[incremental] slot names one slot, and several databases are configured (each needs its own); remove it to use the default larder_<database>".into());
            }
            if slot.is_empty()
                || slot.len() > 63
                || !slot
                    .chars()
                    .all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
            {
                return Err(format!(
                    "[incremental] slot '{slot}' is not a replication slot name (lower-case letters, digits and _, at most 63)"
                ));
            }
        }
        if !self.databases.is_empty() && raw.contains_key("database") {
            return Err("both [database] and [[databases]] are set; move [database] into a [[databases]] entry with a name".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for db in &self.databases {
            if !seen.insert(db.name.as_str()) {
                return Err(format!("two [[databases]] entries are named '{}'", db.name));
            }
        }
        self.check_alerts()?;
        let mut names = std::collections::BTreeSet::new();
        for schedule in &self.schedules {
            if !names.insert(schedule.name.as_str()) {
                return Err(format!(
                    "two [[schedules]] entries are named '{}'; each needs its own name (runs, logs and retention are told apart by it)",
                    schedule.name
                ));
            }
            schedule.check()?;
            match &schedule.database {
                Some(name) if !seen.contains(name.as_str()) => {
                    return Err(format!(
                        "schedule '{}' names database '{name}', which no [[databases]] entry is",
                        schedule.name
                    ));
                }
                None if self.databases.len() > 1 => {
                    return Err(format!(
                        "schedule '{}' must name its database (`database = \"…\"`): several are configured",
                        schedule.name
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// One `[[databases]]` entry: a name, a connection (a URL or libpq `key=value` string; the
/// password never in the file) and its class, whose runbook objectives apply unless
/// overridden.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseEntry {
    pub name: String,
    pub url: Option<String>,
    pub sslmode: Option<String>,
    pub password_file: Option<PathBuf>,
    pub sslrootcert: Option<PathBuf>,
    #[serde(default = "default_class")]
    pub class: DataClass,
    /// Overrides the class's recovery-point objective.
    #[serde(default, with = "optional_duration")]
    pub rpo: Option<Duration>,
    /// Overrides the class's recovery-time objective.
    #[serde(default, with = "optional_duration")]
    pub rto: Option<Duration>,
    /// Where this database's daemon serves `/metrics`, `/health` and the status page, instead
    /// of `[daemon] listen` (every database's daemon needs a port of its own), or `"off"`.
    #[serde(default, deserialize_with = "entry_listen_from")]
    pub listen: Option<Option<std::net::SocketAddr>>,
}

fn entry_listen_from<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<std::net::SocketAddr>>, D::Error> {
    listen_from(d).map(Some)
}

fn default_class() -> DataClass {
    DataClass::Standard
}

impl DatabaseEntry {
    /// Its connection keys, as `[database]` holds them for a single database.
    pub fn connection(&self) -> DatabaseConfig {
        DatabaseConfig {
            url: self.url.clone(),
            sslmode: self.sslmode.clone(),
            password_file: self.password_file.clone(),
            sslrootcert: self.sslrootcert.clone(),
        }
    }

    /// Its recovery-point objective: `rpo`, else its class's (`[objectives.rpo]` table).
    pub fn rpo(&self, objectives: &Objectives) -> Duration {
        self.rpo.unwrap_or_else(|| objectives.rpo.of(self.class))
    }

    /// Its recovery-time objective: `rto`, else its class's (`[objectives.rto]` table).
    pub fn rto(&self, objectives: &Objectives) -> Duration {
        self.rto.unwrap_or_else(|| objectives.rto.of(self.class))
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RepositoryConfig {
    pub path: Option<PathBuf>,
    /// Let the owner's group read the repository folders and objects (0750/0640 instead of
    /// 0700/0600), for every `fs` target.
    pub group_access: bool,
    /// New repositories are encrypted, and a repository that is not is refused.
    pub encryption: bool,
    /// A file holding the repository's passphrase (else `$BACKUP_CLI_PASSPHRASE` or a prompt).
    pub passphrase_file: Option<PathBuf>,
    /// An X25519 identity (`backup-cli key identity`) that opens a recipient slot.
    pub identity_file: Option<PathBuf>,
    /// A write-only host's writer key (`backup-cli key add --writer FILE`).
    pub writer_key_file: Option<PathBuf>,
    /// This host's Ed25519 signing key (`backup-cli key signer -o FILE`): it signs every
    /// manifest it writes.
    pub signing_key_file: Option<PathBuf>,
    /// The signers (`larder-signer-…`) whose manifests restores, exports and validation
    /// accept; empty: signatures are checked when present but not required.
    pub trusted_signers: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupConfig {
    pub jobs: Option<usize>,
    /// The targets `backup create` writes to when no `--target` is given (default: all, in
    /// the order of `[[targets]]`); the first is the primary.
    pub targets: Vec<String>,
    pub compression_level: i32,
    pub pg_dump: Option<PathBuf>,
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig {
            jobs: None,
            targets: Vec::new(),
            compression_level: 2,
            pg_dump: None,
        }
    }
}

/// The runbook's data classes, each with its recovery-point objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataClass {
    Critical,
    Standard,
    NonCritical,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Objectives {
    pub class: DataClass,
    pub rpo: RpoTable,
    /// Recovery-time objectives per class (runbook: critical 2 h, standard 4 h, non-critical
    /// 8 h); `recovery drill` measures against them.
    pub rto: RtoTable,
}

impl Default for Objectives {
    fn default() -> Self {
        Objectives {
            class: DataClass::Standard,
            rpo: RpoTable::default(),
            rto: RtoTable::default(),
        }
    }
}

/// One duration per data class (`[objectives.rpo]`, `[objectives.rto]`); a class left out
/// keeps the runbook's value for `K` ([`Rpo`] or [`Rto`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(
    deny_unknown_fields,
    default,
    rename_all = "kebab-case",
    bound = "K: Runbook"
)]
pub struct PerClass<K> {
    #[serde(with = "humantime_serde_compat")]
    pub critical: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub standard: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub non_critical: Duration,
    #[serde(skip)]
    objective: std::marker::PhantomData<K>,
}

/// The objective a [`PerClass`] table holds, with the runbook's value per class.
pub trait Runbook {
    fn runbook(class: DataClass) -> Duration;
}

/// Recovery-point objectives: critical 1 h, standard 4 h, non-critical 24 h.
#[derive(Debug, Clone)]
pub struct Rpo;

/// Recovery-time objectives: critical 2 h, standard 4 h, non-critical 8 h.
#[derive(Debug, Clone)]
pub struct Rto;

impl Runbook for Rpo {
    fn runbook(class: DataClass) -> Duration {
        Duration::from_secs(match class {
            DataClass::Critical => 3600,
            DataClass::Standard => 4 * 3600,
            DataClass::NonCritical => 24 * 3600,
        })
    }
}

impl Runbook for Rto {
    fn runbook(class: DataClass) -> Duration {
        class.rto()
    }
}

pub type RpoTable = PerClass<Rpo>;
pub type RtoTable = PerClass<Rto>;

impl Objectives {
    /// The recovery-point objective that applies to this database.
    pub fn rpo(&self) -> Duration {
        self.rpo.of(self.class)
    }

    /// The recovery-time objective that applies to this database.
    pub fn rto(&self) -> Duration {
        self.rto.of(self.class)
    }
}

impl<K: Runbook> Default for PerClass<K> {
    fn default() -> Self {
        PerClass {
            critical: K::runbook(DataClass::Critical),
            standard: K::runbook(DataClass::Standard),
            non_critical: K::runbook(DataClass::NonCritical),
            objective: std::marker::PhantomData,
        }
    }
}

impl<K> PerClass<K> {
    pub fn of(&self, class: DataClass) -> Duration {
        match class {
            DataClass::Critical => self.critical,
            DataClass::Standard => self.standard,
            DataClass::NonCritical => self.non_critical,
        }
    }
}

impl DataClass {
    /// The runbook's recovery-time objective: critical 2 h, standard 4 h, non-critical 8 h.
    pub fn rto(self) -> Duration {
        Duration::from_secs(match self {
            DataClass::Critical => 2 * 3600,
            DataClass::Standard => 4 * 3600,
            DataClass::NonCritical => 8 * 3600,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DataClass::Critical => "critical",
            DataClass::Standard => "standard",
            DataClass::NonCritical => "non-critical",
        }
    }
}

/// A table of names to durations (`{ "Backup Failure" = "15m" }`).
mod duration_map {
    use serde::{Deserialize, Deserializer};
    use std::collections::BTreeMap;
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, Duration>, D::Error> {
        BTreeMap::<String, String>::deserialize(d)?
            .into_iter()
            .map(|(name, text)| {
                let every = humantime::parse_duration(&text).map_err(|e| {
                    serde::de::Error::custom(format!(
                        "\"{name}\" = '{text}' is not a duration like 15m or 2h: {e}"
                    ))
                })?;
                Ok((name, every))
            })
            .collect()
    }
}

mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "'{text}' is not a duration like 30m, 4h or 7d: {e}"
            ))
        })
    }
}

/// Where an effective setting came from. One precedence everywhere: a flag beats the
/// environment, the environment beats the configuration file, and that beats the defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "name", rename_all = "kebab-case")]
pub enum Origin {
    /// A command-line flag, e.g. `--repo`.
    Flag(String),
    /// An environment variable, e.g. `BACKUP_CLI_REPO`.
    Env(String),
    /// The configuration file at this path.
    ConfigFile(PathBuf),
    /// Built in.
    Default,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Flag(flag) => write!(f, "flag {flag}"),
            Origin::Env(var) => write!(f, "environment variable {var}"),
            Origin::ConfigFile(path) => write!(f, "config file {}", path.display()),
            Origin::Default => f.write_str("default"),
        }
    }
}

/// One effective setting, as `config show` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Setting {
    pub setting: String,
    pub value: String,
    pub origin: Origin,
}

/// Where `discover` looks for a configuration file when neither `--config` nor
/// `$BACKUP_CLI_CONFIG` names one (the first relative to the working directory).
pub const SEARCHED: [&str; 2] = ["backup-cli.toml", "/etc/backup-cli/config.toml"];

/// A loaded configuration and the file it came from (None: embedded defaults).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub path: Option<PathBuf>,
    /// How the file was chosen (`--config`, `$BACKUP_CLI_CONFIG`, or found by searching);
    /// `Default` when none was found and the embedded defaults apply.
    pub origin: Origin,
    /// The file as written, to tell a value set there from a default (`config show`).
    pub raw: toml::Table,
}

impl Default for Loaded {
    fn default() -> Self {
        Loaded {
            config: Config::default(),
            path: None,
            origin: Origin::Default,
            raw: toml::Table::new(),
        }
    }
}

/// An environment variable, ignored when empty (as libpq does).
pub fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Loaded {
    /// Finds and parses the configuration file.
    pub fn discover(explicit: Option<&Path>) -> Result<Loaded> {
        if let Some(path) = explicit {
            return Loaded::read(path, Origin::Flag("--config".into()));
        }
        if let Some(path) = env_var("BACKUP_CLI_CONFIG") {
            return Loaded::read(Path::new(&path), Origin::Env("BACKUP_CLI_CONFIG".into()));
        }
        for candidate in SEARCHED {
            if Path::new(candidate).is_file() {
                let path = std::path::absolute(candidate).unwrap_or_else(|_| candidate.into());
                return Loaded::read(&path, Origin::Default);
            }
        }
        Ok(Loaded::default())
    }

    fn read(path: &Path, origin: Origin) -> Result<Loaded> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!(
                "cannot read {} (named by {origin}): {e} (run `backup-cli init` to write one)",
                path.display()
            ))
        })?;
        let parse_error = |e: toml::de::Error| Error::Config(format!("{}: {e}", path.display()));
        let config: Config = toml::from_str(&text).map_err(parse_error)?;
        let raw: toml::Table = toml::from_str(&text).map_err(parse_error)?;
        config
            .check(&raw)
            .map_err(|why| Error::Config(format!("{}: {why}", path.display())))?;
        Ok(Loaded {
            config,
            path: Some(path.to_path_buf()),
            origin,
            raw,
        })
    }

    /// The one-line note a command prints when no configuration file was found, naming
    /// where it looked; `None` when a file is in use.
    pub fn defaults_note(&self) -> Option<String> {
        if self.path.is_some() {
            return None;
        }
        let cwd = std::env::current_dir()
            .map(|d| d.join(SEARCHED[0]).display().to_string())
            .unwrap_or_else(|_| SEARCHED[0].to_string());
        Some(format!(
            "note: no configuration file found (no --config, no $BACKUP_CLI_CONFIG, no {cwd}, no {}); using the built-in defaults (`backup-cli config show` lists them)",
            SEARCHED[1]
        ))
    }

    /// Where `[section] key` comes from: the file when it sets it, else the default.
    pub fn origin_of(&self, section: &str, key: &str) -> Origin {
        let set = self
            .raw
            .get(section)
            .and_then(|s| s.as_table())
            .is_some_and(|s| s.contains_key(key));
        if set {
            self.file_origin()
        } else {
            Origin::Default
        }
    }

    /// Every effective setting the configuration file governs, with where it came from
    /// (`config show`; the database and the targets are added by the caller, which resolves
    /// them). Nothing secret is in it: secrets are references (`env:`, `file:`).
    pub fn settings(&self) -> Vec<Setting> {
        let c = &self.config;
        let mut out = Vec::new();
        let mut add = |setting: &str, value: String, origin: Origin| {
            out.push(Setting {
                setting: setting.to_string(),
                value,
                origin,
            })
        };
        let or = |value: Option<String>, default: &str| value.unwrap_or_else(|| default.into());
        add(
            "repository.group_access",
            if c.repository.group_access {
                "true: fs folders 0750, objects 0640".into()
            } else {
                "false: fs folders 0700, objects 0600".into()
            },
            self.origin_of("repository", "group_access"),
        );
        add(
            "repository.encryption",
            if c.repository.encryption {
                "true: new repositories encrypted, plain ones refused".into()
            } else {
                "false: an encrypted repository is still opened".into()
            },
            self.origin_of("repository", "encryption"),
        );
        let keys = self.key_source();
        for (name, path) in [
            ("passphrase_file", &keys.passphrase_file),
            ("identity_file", &keys.identity_file),
            ("writer_key_file", &keys.writer_key_file),
            ("signing_key_file", &keys.signing_key_file),
        ] {
            add(
                &format!("repository.{name}"),
                path.as_ref()
                    .map_or_else(|| "none".into(), |p| p.display().to_string()),
                self.origin_of("repository", name),
            );
        }
        add(
            "repository.trusted_signers",
            if keys.trusted_signers.is_empty() {
                "none: signatures checked when present, not required".into()
            } else {
                keys.trusted_signers.join(", ")
            },
            self.origin_of("repository", "trusted_signers"),
        );
        add(
            "backup.jobs",
            or(c.backup.jobs.map(|j| j.to_string()), "CPU count, at most 8"),
            self.origin_of("backup", "jobs"),
        );
        add(
            "backup.targets",
            if c.backup.targets.is_empty() {
                "every target, in order".into()
            } else {
                c.backup.targets.join(", ")
            },
            self.origin_of("backup", "targets"),
        );
        add(
            "backup.compression_level",
            c.backup.compression_level.to_string(),
            self.origin_of("backup", "compression_level"),
        );
        add(
            "backup.pg_dump",
            or(
                c.backup.pg_dump.as_ref().map(|p| p.display().to_string()),
                "the one installed for the server's major version",
            ),
            self.origin_of("backup", "pg_dump"),
        );
        let class = serde_json::to_value(c.objectives.class)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        add(
            "objectives.class",
            class,
            self.origin_of("objectives", "class"),
        );
        add(
            "objectives.rpo (this class)",
            humantime::format_duration(c.objectives.rpo()).to_string(),
            self.origin_of("objectives", "rpo"),
        );
        add(
            "objectives.rto (this class)",
            humantime::format_duration(c.objectives.rto()).to_string(),
            self.origin_of("objectives", "rto"),
        );
        add(
            "drill.target_url",
            or(
                c.drill
                    .target_url
                    .as_deref()
                    .map(crate::logging::redact_for_display),
                "none: a throwaway local PostgreSQL",
            ),
            self.origin_of("drill", "target_url"),
        );
        add(
            "monitor.min_free_space",
            c.monitor.min_free_space.to_string() + " bytes",
            self.origin_of("monitor", "min_free_space"),
        );
        add(
            "monitor.alert_command",
            or(c.monitor.alert_command.clone(), "none"),
            self.origin_of("monitor", "alert_command"),
        );
        add(
            "schedules",
            if c.schedules.is_empty() {
                "none".into()
            } else {
                c.schedules
                    .iter()
                    .map(|s| match &s.database {
                        Some(db) => format!("{} ({}, database {db})", s.name, s.cron),
                        None => format!("{} ({})", s.name, s.cron),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            if self.raw.contains_key("schedules") {
                self.file_origin()
            } else {
                Origin::Default
            },
        );
        add(
            "daemon.listen",
            c.daemon
                .listen
                .map_or_else(|| "off".to_string(), |a| a.to_string()),
            self.origin_of("daemon", "listen"),
        );
        add(
            "plugins.require_pinned_plugins",
            c.plugins.require_pinned_plugins.to_string(),
            self.origin_of("plugins", "require_pinned_plugins"),
        );
        add(
            "plugins.cache_dir",
            self.plugin_cache_dir().display().to_string(),
            self.origin_of("plugins", "cache_dir"),
        );
        out
    }

    /// The origin of a value set in the configuration file.
    fn file_origin(&self) -> Origin {
        self.path
            .clone()
            .map(Origin::ConfigFile)
            .unwrap_or(Origin::Default)
    }

    /// The repository folder and where it was chosen: `--repo`, else `$BACKUP_CLI_REPO`, else
    /// the config's (relative to the config file), else `./backups`.
    pub fn repository_path(&self, flag: Option<&Path>) -> (PathBuf, Origin) {
        if let Some(path) = flag {
            return (path.to_path_buf(), Origin::Flag("--repo".into()));
        }
        if let Some(path) = env_var("BACKUP_CLI_REPO") {
            return (path.into(), Origin::Env("BACKUP_CLI_REPO".into()));
        }
        match &self.config.repository.path {
            Some(path) => (self.config_relative(path), self.file_origin()),
            None => (PathBuf::from("backups"), Origin::Default),
        }
    }

    /// Where this host finds the keys of an encrypted repository (`[repository]`).
    pub fn key_source(&self) -> crate::repository::keys::KeySource {
        let repository = &self.config.repository;
        let path = |p: &Option<PathBuf>| p.as_deref().map(|p| self.config_relative(p));
        crate::repository::keys::KeySource {
            encryption: repository.encryption,
            passphrase_file: path(&repository.passphrase_file),
            identity_file: path(&repository.identity_file),
            writer_key_file: path(&repository.writer_key_file),
            signing_key_file: path(&repository.signing_key_file),
            trusted_signers: repository.trusted_signers.clone(),
        }
    }

    /// Resolves a path from the configuration: relative paths are relative to its file.
    pub fn config_relative(&self, path: &Path) -> PathBuf {
        match &self.path {
            Some(file) if path.is_relative() => file.parent().unwrap_or(Path::new(".")).join(path),
            _ => path.to_path_buf(),
        }
    }

    /// Where alert state is kept: `[alerts] state_dir`, else the user's state folder.
    pub fn alert_state_dir(&self) -> PathBuf {
        self.config
            .alerts
            .state_dir
            .as_deref()
            .map(|d| self.config_relative(d))
            .unwrap_or_else(default_state_dir)
    }

    /// Where compiled plugins are cached: `[plugins] cache_dir`, else the user's cache folder.
    pub fn plugin_cache_dir(&self) -> PathBuf {
        self.config
            .plugins
            .cache_dir
            .as_deref()
            .map(|d| self.config_relative(d))
            .unwrap_or_else(default_cache_dir)
    }

    /// The database URL and where it was chosen: `--database-url`, else `$DATABASE_URL`,
    /// else the config's; `None`: the libpq variables and defaults apply.
    pub fn database_url(&self, flag: Option<&str>) -> Option<(String, Origin)> {
        if let Some(url) = flag {
            return Some((url.to_string(), Origin::Flag("--database-url".into())));
        }
        if let Some(url) = env_var("DATABASE_URL") {
            return Some((url, Origin::Env("DATABASE_URL".into())));
        }
        self.config
            .database
            .url
            .clone()
            .map(|url| (url, self.file_origin()))
    }
}

/// Where alert state is kept unless `[alerts] state_dir` says otherwise.
pub fn default_state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("larder/alerts");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(home).join(".local/state/larder/alerts");
    }
    std::env::temp_dir().join("larder-alerts")
}

/// Where compiled plugins are cached unless `[plugins] cache_dir` says otherwise.
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("larder/plugins");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(home).join(".cache/larder/plugins");
    }
    std::env::temp_dir().join("larder-plugin-cache")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_parses_and_matches_the_defaults() {
        let config: Config = toml::from_str(TEMPLATE).expect("template parses");
        assert_eq!(config.backup.compression_level, 2);
        assert_eq!(config.objectives.rpo(), Duration::from_secs(4 * 3600));
        assert_eq!(config.objectives.rpo.critical, Duration::from_secs(3600));
        assert_eq!(config.objectives.rto(), Duration::from_secs(4 * 3600));
        assert!(config.drill.target_url.is_none() && config.drill.checks.is_empty());
    }

    #[test]
    fn a_class_left_out_of_an_objectives_table_keeps_the_runbooks_value_for_that_objective() {
        let config: Config = toml::from_str(
            "[objectives]\nclass = \"critical\"\n[objectives.rto]\ncritical = \"30m\"\n",
        )
        .expect("parses");
        assert_eq!(config.objectives.rto(), Duration::from_secs(30 * 60));
        assert_eq!(
            config.objectives.rto.standard,
            Duration::from_secs(4 * 3600)
        );
        assert_eq!(
            config.objectives.rto.non_critical,
            Duration::from_secs(8 * 3600)
        );
        assert_eq!(
            config.objectives.rpo.non_critical,
            Duration::from_secs(24 * 3600)
        );
        let (rto, rpo) = config.objectives_for(None).expect("objectives");
        assert_eq!(
            (rto, rpo),
            (Duration::from_secs(1800), Duration::from_secs(3600))
        );
    }

    #[test]
    fn drill_checks_expect_a_scalar_as_text_or_a_row_count() {
        let config: Config = toml::from_str(
            "[drill]\ntarget_url = \"postgres://staging/postgres\"\n\
             [[drill.checks]]\nsql = \"SELECT 1\"\nexpect = 1\n\
             [[drill.checks]]\nname = \"n\"\nsql = \"SELECT 'a'\"\nexpect = \"a\"\n\
             [[drill.checks]]\nsql = \"SELECT true\"\nexpect = true\n\
             [[drill.checks]]\nsql = \"SELECT 1\"\nexpect = { rows = 1 }\n\
             [[drill.checks]]\nsql = \"SELECT 1\"\n",
        )
        .expect("parses");
        let expects: Vec<Option<Expect>> = config
            .drill
            .checks
            .iter()
            .map(|c| c.expect.clone())
            .collect();
        assert_eq!(
            expects,
            [
                Some(Expect::Integer(1)),
                Some(Expect::Text("a".into())),
                Some(Expect::Bool(true)),
                Some(Expect::Rows { rows: 1 }),
                None
            ]
        );
        let bad = toml::from_str::<Config>(
            "[[drill.checks]]\nsql = \"SELECT 1\"\nexpect = { count = 1 }\n",
        );
        assert!(bad.is_err(), "an unknown expectation is refused");
    }

    #[test]
    fn append_only_and_object_lock_parse_and_a_wrong_lock_is_named() {
        let config: Config = toml::from_str(
            "[[targets]]\nname = \"vault\"\ntype = \"fs\"\npath = \"/vault\"\nappend_only = true\n\
             [[targets]]\nname = \"s3\"\ntype = \"s3\"\nbucket = \"b\"\nobject_lock = { mode = \"compliance\", days = 35 }\n\
             [[targets]]\nname = \"s3b\"\ntype = \"s3\"\nbucket = \"b\"\nobject_lock = \"bucket-default\"\n\
             [[targets]]\nname = \"s3c\"\ntype = \"s3\"\nbucket = \"b\"\nobject_lock = { mode = \"governance\" }\n",
        )
        .expect("parses");
        assert!(config.targets[0].append_only() && !config.targets[1].append_only());
        let lock = |i: usize| match &config.targets[i] {
            TargetConfig::S3(s3) => s3.object_lock.as_ref().map(ToString::to_string),
            _ => None,
        };
        assert_eq!(
            lock(1).as_deref(),
            Some("compliance mode, until each backup's retention ends (at least 35 days)")
        );
        assert_eq!(lock(2).as_deref(), Some("the bucket's default retention"));
        assert_eq!(
            lock(3).as_deref(),
            Some("governance mode, until each backup's retention ends")
        );
        let bad = toml::from_str::<Config>(
            "[[targets]]\nname = \"s3\"\ntype = \"s3\"\nbucket = \"b\"\nobject_lock = { mode = \"forever\", days = 1 }\n",
        )
        .expect_err("an unknown mode is refused");
        assert!(bad.to_string().contains("bucket-default"), "{bad}");
    }

    #[test]
    fn sizes_and_schedules_parse() {
        assert_eq!(parse_bytes("10GB"), Some(10_000_000_000));
        assert_eq!(parse_bytes("512 MiB"), Some(512 * 1024 * 1024));
        assert_eq!(parse_bytes("lots"), None);
        let config: Config = toml::from_str(
            "[[schedules]]\nname = \"daily\"\ntype = \"full\"\ncron = \"0 7 * * *\"\nretention = \"30d\"\n",
        )
        .expect("schedule parses");
        assert_eq!(config.schedules[0].grace, Duration::from_secs(3600));
        assert_eq!(
            config.schedules[0].retention,
            Some(RetentionPolicy::within(Duration::from_secs(30 * 86400)))
        );
    }

    #[test]
    fn daemon_keys_parse_with_their_defaults() {
        let config: Config = toml::from_str(
            "[[schedules]]\nname = \"daily\"\ntype = \"full\"\ncron = \"0 2 * * *\"\ntimezone = \"America/New_York\"\nmissed = \"run-once\"\njitter = \"5m\"\n[daemon]\nhealth_every = \"1m\"\n",
        )
        .expect("schedule parses");
        let s = &config.schedules[0];
        assert_eq!(s.timezone.as_deref(), Some("America/New_York"));
        assert_eq!(s.missed, Missed::RunOnce);
        assert_eq!(s.jitter, Some(Duration::from_secs(300)));
        assert_eq!(config.daemon.health_every, Duration::from_secs(60));
        assert_eq!(config.daemon.stop_grace, Duration::from_secs(60));
        let plain: Config =
            toml::from_str("[[schedules]]\nname = \"d\"\ntype = \"full\"\ncron = \"0 2 * * *\"\n")
                .expect("parses");
        assert_eq!(plain.schedules[0].missed, Missed::Skip);
        assert!(plain.schedules[0].targets.is_empty());
        assert_eq!(plain.daemon.validate, ValidateMode::Full, "full by default");
        assert!(toml::from_str::<Config>("[[schedules]]\nname = \"d\"\ntype = \"full\"\ncron = \"0 2 * * *\"\nmissed = \"twice\"\n").is_err());
        let chunks: Config = toml::from_str(
            "[daemon]\nvalidate = \"chunks\"\n[[schedules]]\nname = \"d\"\ntype = \"full\"\ncron = \"0 2 * * *\"\ntargets = [\"primary\", \"s3\"]\n",
        )
        .expect("parses");
        assert_eq!(chunks.daemon.validate, ValidateMode::Chunks);
        assert_eq!(chunks.schedules[0].targets, ["primary", "s3"]);
        let bad = toml::from_str::<Config>("[daemon]\nvalidate = \"rows\"\n")
            .expect_err("unknown mode")
            .to_string();
        assert!(bad.contains("chunks") && bad.contains("full"), "{bad}");
    }

    #[test]
    fn the_listener_is_loopback_unless_configured() {
        let listen = |text: &str| toml::from_str::<Config>(text).map(|c| c.daemon.listen);
        assert_eq!(listen("").expect("default"), Some(DEFAULT_LISTEN));
        assert_eq!(DEFAULT_LISTEN.to_string(), "127.0.0.1:9187");
        assert_eq!(listen("[daemon]\nlisten = \"off\"\n").expect("off"), None);
        assert_eq!(
            listen("[daemon]\nlisten = \"0.0.0.0:9100\"\n")
                .expect("all interfaces")
                .map(|a| a.to_string()),
            Some("0.0.0.0:9100".into())
        );
        let bad = listen("[daemon]\nlisten = \"localhost\"\n").expect_err("no port");
        assert!(
            bad.to_string().contains("not an IP address and port"),
            "{bad}"
        );
    }

    #[test]
    fn retention_takes_the_shorthand_or_a_table_with_a_floor() {
        let parse = |text: &str| {
            toml::from_str::<Config>(&format!(
                "[[schedules]]\nname = \"daily\"\ntype = \"full\"\ncron = \"0 2 * * *\"\nretention = {text}\n"
            ))
        };
        let table =
            parse("{ keep_within = \"30d\", keep_daily = 7, min_keep = 3 }").expect("table parses");
        let policy = table.schedules[0].retention.clone().expect("policy");
        assert_eq!(policy.keep_within, Some(Duration::from_secs(30 * 86400)));
        assert_eq!((policy.keep_daily, policy.min_keep), (Some(7), 3));
        assert_eq!(
            policy.describe(),
            "keep_within 30days, keep_daily 7, min_keep 3"
        );
        let default_floor = parse("{ keep_last = 2 }").expect("parses");
        assert_eq!(
            default_floor.schedules[0]
                .retention
                .as_ref()
                .map(|p| p.min_keep),
            Some(1)
        );
        let zero = parse("{ keep_last = 2, min_keep = 0 }").expect_err("min_keep 0 refused");
        assert!(zero.to_string().contains("last good backup"), "{zero}");
        let typo = parse("{ keep_lats = 2 }").expect_err("unknown key refused");
        assert!(typo.to_string().contains("keep_lats"), "{typo}");
        let bad = parse("\"30 parsecs\"").expect_err("bad duration refused");
        assert!(bad.to_string().contains("30 parsecs"), "{bad}");
    }

    #[test]
    fn the_runbook_strategy_example_parses_with_its_objectives() {
        let text = include_str!("../../examples/runbook-strategy.toml");
        let config: Config = toml::from_str(text).expect("example parses");
        let raw: toml::Table = toml::from_str(text).expect("example parses");
        config.check(&raw).expect("names match");
        let db = config.database_entry(None).expect("one").expect("entry");
        assert_eq!(db.rpo(&config.objectives), Duration::from_secs(3600));
        assert_eq!(db.rto(&config.objectives), Duration::from_secs(2 * 3600));
        let daily = &config.schedules[0];
        assert_eq!(daily.retention.as_ref().map(|r| r.min_keep), Some(3));
        assert_eq!(
            config
                .retention
                .of(BackupType::SchemaOnly)
                .and_then(|r| r.keep_within),
            Some(Duration::from_secs(90 * 86400))
        );
    }

    #[test]
    fn several_databases_need_named_schedules_and_a_choice() {
        let two = "[[databases]]\nname = \"a\"\nclass = \"critical\"\n[[databases]]\nname = \"b\"\nrpo = \"2h\"\n";
        let parse = |extra: &str| {
            let text = format!("{two}{extra}");
            let config: Config = toml::from_str(&text).expect("parses");
            let raw: toml::Table = toml::from_str(&text).expect("parses");
            config.check(&raw).map(|()| config)
        };
        let config = parse("").expect("valid");
        let err = config
            .database_entry(None)
            .expect_err("ambiguous")
            .to_string();
        assert!(
            err.contains("several databases are configured (a, b); choose one with --db NAME"),
            "{err}"
        );
        let b = config.database_entry(Some("b")).expect("b").expect("entry");
        assert_eq!(
            b.rpo(&config.objectives),
            Duration::from_secs(7200),
            "overridden"
        );
        assert_eq!(
            b.rto(&config.objectives),
            Duration::from_secs(4 * 3600),
            "standard class"
        );
        assert!(config.database_entry(Some("c")).is_err());
        let unnamed = "[[schedules]]\nname = \"s\"\ntype = \"full\"\ncron = \"0 2 * * *\"\n";
        assert!(
            parse(unnamed)
                .expect_err("must name")
                .contains("must name its database")
        );
        let wrong = "[[schedules]]\nname = \"s\"\ndatabase = \"z\"\ntype = \"full\"\ncron = \"0 2 * * *\"\n";
        assert!(
            parse(wrong)
                .expect_err("unknown")
                .contains("names database 'z'")
        );
        assert!(
            parse("[database]\nurl = \"postgres://x\"\n")
                .expect_err("both")
                .contains("both [database]")
        );
        let twice = "[[schedules]]\nname = \"s\"\ndatabase = \"a\"\ntype = \"full\"\ncron = \"0 2 * * *\"\n";
        assert!(
            parse(&format!("{twice}{twice}"))
                .expect_err("same name twice")
                .contains("two [[schedules]] entries are named 's'")
        );
    }

    #[test]
    fn alert_routes_and_escalation_times_are_checked_when_the_configuration_loads() {
        let parse = |text: &str| -> std::result::Result<Config, String> {
            let config: Config = toml::from_str(text).map_err(|e| e.to_string())?;
            let raw: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
            config.check(&raw).map(|()| config)
        };
        let dba = "[[notifiers]]\nname = \"dba\"\npath = \"w.wasm\"\n";
        let good = parse(&format!(
            "{dba}[monitor]\nalert_command = \"true\"\n[alerts]\nlevels = [[\"dba\"], [\"alert_command\"]]\nescalate_after = {{ \"Backup Failure\" = \"5m\", default = \"1h\" }}\n"
        ))
        .expect("valid");
        assert_eq!(
            good.alerts.escalate_after.get("Backup Failure"),
            Some(&Duration::from_secs(300))
        );
        let bad_time = parse("[alerts]\nescalate_after = { \"Backup Failure\" = \"soon\" }\n")
            .expect_err("not a duration");
        assert!(
            bad_time.contains("\"Backup Failure\" = 'soon' is not a duration"),
            "{bad_time}"
        );
        let typo = parse("[alerts]\nescalate_after = { \"Backup failure\" = \"5m\" }\n")
            .expect_err("unknown alert");
        assert!(
            typo.contains("names \"Backup failure\", which is no alert Larder raises"),
            "{typo}"
        );
        let route = parse(&format!(
            "{dba}[alerts]\nlevels = [[\"dba\"], [\"pager\"]]\n"
        ))
        .expect_err("unknown channel");
        assert!(
            route.contains(
                "level 2 names the channel 'pager', which is not configured; the channels are: dba"
            ),
            "{route}"
        );
        let twice = parse(&format!("{dba}{dba}")).expect_err("two named dba");
        assert!(
            twice.contains("two alert channels are named 'dba'"),
            "{twice}"
        );
        let port = parse(&format!("{dba}allow_tcp = [\"relay.internal\"]\n")).expect_err("no port");
        assert!(
            port.contains("allow_tcp entry \"relay.internal\" must be host:port"),
            "{port}"
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(toml::from_str::<Config>("[backup]\njbos = 3\n").is_err());
    }

    fn checked(text: &str) -> std::result::Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        let raw: toml::Table = toml::from_str(text).expect("parses");
        config.check(&raw).map(|()| config)
    }

    #[test]
    fn a_drill_schedule_chooses_its_backup_and_keeps_none() {
        let drill = "[[schedules]]\nname = \"monthly\"\ntype = \"drill\"\ncron = \"0 5 1 * *\"\n";
        let config = checked(&format!("{drill}random_within = \"30d\"\n")).expect("valid");
        let s = &config.schedules[0];
        assert_eq!(s.schedule_type, ScheduleType::Drill);
        assert_eq!(s.schedule_type.to_string(), "drill");
        assert_eq!(s.random_within, Some(Duration::from_secs(30 * 86400)));
        assert!(
            s.backup_type()
                .expect_err("no backup")
                .to_string()
                .contains("run it with `backup-cli recovery drill --schedule monthly`")
        );
        for (extra, expected) in [
            (
                "retention = \"30d\"\n",
                "it takes no backup, so it has no `retention`",
            ),
            ("targets = [\"local\"]\n", "so it has no `targets`"),
            (
                "backup = \"latest\"\nrandom_within = \"30d\"\n",
                "`backup` and `random_within` both choose the drill's backup",
            ),
        ] {
            let err = checked(&format!("{drill}{extra}")).expect_err(extra);
            assert!(
                err.contains("schedule 'monthly'") && err.contains(expected),
                "{err}"
            );
        }
        let full = "[[schedules]]\nname = \"daily\"\ntype = \"full\"\ncron = \"0 2 * * *\"\nrandom_within = \"30d\"\n";
        let err = checked(full).expect_err("a backup's random_within");
        assert!(
            err.contains("schedule 'daily' takes a full backup: `backup` and `random_within` are for `type = \"drill\"` schedules"),
            "{err}"
        );
        assert_eq!(
            checked("[[schedules]]\nname = \"d\"\ntype = \"full\"\ncron = \"0 2 * * *\"\n")
                .expect("valid")
                .schedules[0]
                .backup_type()
                .expect("a backup schedule"),
            BackupType::Full
        );
    }

    #[test]
    fn two_databases_with_schedules_need_a_listen_port_each() {
        let two = |a: &str, b: &str| {
            format!(
                "[[databases]]\nname = \"a\"\n{a}[[databases]]\nname = \"b\"\n{b}\
                 [[schedules]]\nname = \"sa\"\ndatabase = \"a\"\ntype = \"full\"\ncron = \"0 2 * * *\"\n\
                 [[schedules]]\nname = \"sb\"\ndatabase = \"b\"\ntype = \"full\"\ncron = \"0 3 * * *\"\n"
            )
        };
        let shared = checked(&two("", "")).expect("valid");
        let err = shared
            .daemon_listen(Some("a"))
            .expect_err("clash")
            .to_string();
        assert!(
            err.contains("[daemon] listen = \"127.0.0.1:9187\" is also where the daemon of [[databases]] 'b' would listen")
                && err.contains("its own `listen = \"127.0.0.1:PORT\"`"),
            "{err}"
        );
        let own = checked(&two("listen = \"127.0.0.1:9188\"\n", "")).expect("valid");
        assert_eq!(
            own.daemon_listen(Some("a")).expect("own port"),
            Some("127.0.0.1:9188".parse().expect("address"))
        );
        assert_eq!(
            own.daemon_listen(Some("b")).expect("the default"),
            Some(DEFAULT_LISTEN)
        );
        // All interfaces clash with loopback on the same port; "off" clashes with nothing.
        let wide = checked(&two("listen = \"0.0.0.0:9187\"\n", "")).expect("valid");
        let err = wide
            .daemon_listen(Some("b"))
            .expect_err("clash")
            .to_string();
        assert!(err.contains("'a'"), "{err}");
        let off = checked(&two("listen = \"off\"\n", "")).expect("valid");
        assert_eq!(off.daemon_listen(Some("a")).expect("off"), None);
        assert_eq!(
            off.daemon_listen(Some("b")).expect("alone"),
            Some(DEFAULT_LISTEN)
        );
        // A database without schedules runs no daemon, so it holds no port.
        let one = checked(
            "[[databases]]\nname = \"a\"\n[[databases]]\nname = \"b\"\n\
             [[schedules]]\nname = \"sa\"\ndatabase = \"a\"\ntype = \"full\"\ncron = \"0 2 * * *\"\n",
        )
        .expect("valid");
        assert_eq!(
            one.daemon_listen(Some("a")).expect("alone"),
            Some(DEFAULT_LISTEN)
        );
    }
}
