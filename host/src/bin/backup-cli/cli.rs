//! Every command-line flag, with its help text, in one place.

use clap::{Args, Parser, Subcommand};
use larder::engine::recovery::chain;
use larder::engine::recovery::plan::{Strategy, Verification};
use larder::repository::manifest::BackupType;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "backup-cli",
    version,
    about = "Larder: PostgreSQL backup and disaster recovery",
    long_about = "Larder: PostgreSQL backup and disaster recovery.\n\n\
        Consistent logical backups into a deduplicating, content-addressed repository,\n\
        validation that re-reads every byte, and safe deletion. See the operator's guide\n\
        (docs/operators-guide.md) for how each runbook step maps to a command."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct Global {
    /// Configuration file [default: $BACKUP_CLI_CONFIG, ./backup-cli.toml, /etc/backup-cli/config.toml]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Database to back up, e.g. postgres://user@host:5432/db?sslmode=require [default:
    /// $DATABASE_URL, else the config's database.url, else the libpq PG* variables]
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,
    /// The `[[databases]]` entry to act on [default: the only one; list, health and schedule
    /// list show them all]
    #[arg(long = "db", global = true, value_name = "NAME")]
    pub db: Option<String>,
    /// Repository folder, replacing the configured targets [default: $BACKUP_CLI_REPO, else
    /// the config's [[targets]] or repository.path, else ./backups]
    #[arg(long, global = true, value_name = "PATH")]
    pub repo: Option<PathBuf>,
    /// Delete on `append_only` targets too (backup delete, prune, garbage collection): for a
    /// maintenance host that holds delete rights there
    #[arg(long, global = true)]
    pub allow_delete: bool,
    /// Machine-readable JSON on stdout (no progress bars)
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress bars and no informational output (summaries, notes)
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Human tables with every column and no wrapping [default: fit 120 columns]
    #[arg(long, global = true)]
    pub wide: bool,
    /// More logging (-v info, -vv debug); RUST_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a commented configuration file and initialise the repository
    Init(InitArgs),
    /// Create, list, validate, export and delete backups
    #[command(subcommand)]
    Backup(BackupCommand),
    /// Plan and execute recoveries from a backup
    #[command(subcommand)]
    Recovery(RecoveryCommand),
    /// Health checks and alerts
    #[command(subcommand)]
    Monitor(MonitorCommand),
    /// Backup timetables
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// WebAssembly plugins: the configured ones, and what a plugin file is
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Alert channels ([[notifiers]] and [monitor] alert_command)
    #[command(subcommand)]
    Notify(NotifyCommand),
    /// The effective configuration
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Repository maintenance: locks left by crashed processes
    #[command(subcommand)]
    Repository(RepositoryCommand),
    /// Key slots of an encrypted repository: passphrases, recipients, writer keys
    #[command(subcommand)]
    Key(KeyCommand),
    /// Run the [[schedules]] until stopped: back up, copy, validate; health checks with alerts
    /// (SIGTERM/SIGINT stop cleanly, SIGHUP reloads the configuration)
    Daemon(DaemonArgs),
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// How log lines look: for people, or one JSON object per line
    #[arg(long, value_enum, default_value = "human")]
    pub log_format: LogFormatArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormatArg {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Every effective setting and where it came from (flag, environment, config file,
    /// default); passwords are never shown
    Show,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// The repository's key slots
    List,
    /// Add a key slot (a new passphrase from $BACKUP_CLI_NEW_PASSPHRASE or a prompt, or a
    /// recipient's public key), or write a writer key for a write-only backup host
    Add(KeyAddArgs),
    /// Remove a key slot (removing the last one is refused)
    Remove(KeyRemoveArgs),
    /// Make an X25519 identity file; its recipient goes to `key add --recipient`
    Identity(KeyIdentityArgs),
    /// Make an Ed25519 signing key file (`[repository] signing_key_file`); its signer goes to
    /// `[repository] trusted_signers`
    Signer(KeyIdentityArgs),
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("slot").required(true).multiple(false)))]
pub struct KeyAddArgs {
    /// A new passphrase slot
    #[arg(long, group = "slot")]
    pub passphrase: bool,
    /// A recipient slot for this public key (`larder-recipient-…`)
    #[arg(long, value_name = "RECIPIENT", group = "slot")]
    pub recipient: Option<String>,
    /// Write the writer key to FILE (mode 0600): a host with only it can back up but not read
    #[arg(long, value_name = "FILE", group = "slot")]
    pub writer: Option<PathBuf>,
    /// What the slot is for (shown by `key list`)
    #[arg(long, default_value = "")]
    pub label: String,
}

#[derive(Debug, Args)]
pub struct KeyRemoveArgs {
    /// The slot's id (`key list`)
    pub id: String,
}

#[derive(Debug, Args)]
pub struct KeyIdentityArgs {
    /// Where to write the key (mode 0600; refused if it exists)
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum RepositoryCommand {
    /// Show the repository locks on every target and clear those whose holders are gone
    /// (a process that died on this host, a lock with no heartbeat for 5 minutes)
    Unlock(UnlockArgs),
}

#[derive(Debug, Args)]
pub struct UnlockArgs {
    /// Also clear locks that still look alive (only when you know their process is gone)
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// The configured plugins: world, version, pin status, granted capabilities
    List,
    /// What a plugin file is: world, exports, the imports it asks for, SHA-256
    Inspect(PluginFileArgs),
    /// The SHA-256 of a plugin file, for its `sha256 = "…"` pin
    Hash(PluginFileArgs),
    /// Runs the conformance suite of the plugin's world and prints each check (exit 1 naming
    /// the checks that failed): storage put/get/stat/list/delete and error kinds in a scratch
    /// folder, a notifier's test event to a loopback receiver, a validator's sample table
    Test(PluginTestArgs),
}

#[derive(Debug, Args)]
pub struct PluginTestArgs {
    /// The component file (.wasm)
    pub file: PathBuf,
    /// The plugin's settings (what `host.config` returns, the `config` of its entry): a JSON
    /// object or TOML, e.g. '{"url": "https://hooks.example/x"}' or 'rules = [ { table = "*", min_rows = 1 } ]'
    #[arg(long, value_name = "JSON|TOML")]
    pub plugin_config: Option<String>,
    /// A secret the plugin may read, as in its entry's `secrets` (repeatable)
    #[arg(long = "secret", value_name = "NAME=env:VAR|file:PATH")]
    pub secrets: Vec<String>,
    /// A host the plugin may send HTTP requests to, as in `allow_hosts` (repeatable); with
    /// none and no `url` setting, a notifier talks to a loopback receiver the test starts
    #[arg(long = "allow-host", value_name = "HOST[:PORT]")]
    pub allow_hosts: Vec<String>,
    /// A TCP destination the plugin may connect to, as in `allow_tcp` (repeatable)
    #[arg(long = "allow-tcp", value_name = "HOST:PORT")]
    pub allow_tcp: Vec<String>,
    /// Deadline per call [default: 30s]
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<std::time::Duration>,
}

#[derive(Debug, Args)]
pub struct PluginFileArgs {
    /// The component file (.wasm)
    pub file: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum MonitorCommand {
    /// Check the database, the repository, the newest backup and its validation, free space
    /// and schedules; exits 1 when a check fails
    Health(HealthArgs),
    /// The alerts: each failing check and each alert the alert room tracks, with its level,
    /// age and delivery results, and the dead-letter list
    Alerts(AlertsArgs),
    /// Print the Prometheus metrics once (the daemon serves the same at /metrics), for
    /// node_exporter's textfile collector
    Metrics(MetricsArgs),
}

#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// Write them to this file instead of stdout, atomically (a temporary file beside it,
    /// then renamed), as the textfile collector needs
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// Deliver the alerts through the alert room: new failures fire, active ones remind or
    /// escalate when due, passing checks resolve theirs ([[notifiers]], [monitor] alert_command)
    #[arg(long)]
    pub alert_on_failure: bool,
}

#[derive(Debug, Args)]
pub struct AlertsArgs {
    /// Acknowledge the active alerts of this name (e.g. "Backup Failure", or an event id): no
    /// more escalation until they resolve
    #[arg(long, value_name = "NAME")]
    pub ack: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum NotifyCommand {
    /// Send a test event through each configured channel (or one) and report per channel
    Test(NotifyTestArgs),
}

#[derive(Debug, Args)]
pub struct NotifyTestArgs {
    /// Only this channel (a [[notifiers]] name, or "alert_command")
    #[arg(long, value_name = "NAME")]
    pub notifier: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Configured schedules (backups and restore drills), their last backup or passed drill
    /// and whether a run was missed
    List,
    /// One schedule in full: its timetable, last backup or drill, the daemon's last run (with
    /// its error) and its next start
    Status {
        /// The [[schedules]] entry's name
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum RecoveryCommand {
    /// Show what a recovery would do, without changing anything
    Plan(RecoveryArgs),
    /// Carry out a recovery, then verify row counts, checksums and constraints
    Execute(ExecuteArgs),
    /// Restore drill: restore a backup into a scratch place (a throwaway local PostgreSQL, or a
    /// new database on [drill] target_url), verify it, run the validators and [[drill.checks]],
    /// measure the recovery time against the RTO, record it; removed afterwards unless --keep
    Drill(DrillArgs),
    /// Past restore drills, oldest first: backup, recovery time against the RTO, outcome
    Drills(DrillsArgs),
}

#[derive(Debug, Args)]
pub struct DrillArgs {
    /// Backup id, or `latest` (the newest full backup a recovery may trust) [default: latest]
    #[arg(conflicts_with = "random_within")]
    pub backup_id: Option<String>,
    /// Restore a backup chosen at random among those `latest` could name taken within this
    /// long, e.g. 30d
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub random_within: Option<std::time::Duration>,
    /// Drill as this `type = "drill"` [[schedules]] entry does (its backup or random_within),
    /// e.g. from a CronJob or a systemd timer instead of the daemon
    #[arg(long, value_name = "NAME", conflicts_with_all = ["backup_id", "random_within"])]
    pub schedule: Option<String>,
    /// Leave the scratch database or throwaway PostgreSQL in place (the report says how to
    /// remove it)
    #[arg(long)]
    pub keep: bool,
    /// How to prove the restored tables: checksums = re-read every table and compare its rows'
    /// checksum with the backup's; rows = count each table's rows (faster)
    #[arg(long, value_enum, default_value_t = Verification::Checksums)]
    pub verify: Verification,
    /// Parallel connections [default: CPU count up to 8]
    #[arg(short, long)]
    pub jobs: Option<usize>,
    /// Read the backup from this storage target first (the others remain fallbacks)
    #[arg(long, value_name = "TARGET")]
    pub from: Option<String>,
    #[command(flatten)]
    pub point: PointArgs,
}

#[derive(Debug, Args)]
pub struct DrillsArgs {
    /// Only the newest N drills
    #[arg(short = 'l', long, value_name = "N")]
    pub limit: Option<usize>,
}

#[derive(Debug, Args)]
pub struct RecoveryArgs {
    /// Backup id (an incremental restores its base full and replays its chain up to it);
    /// `latest`: the newest full or incremental backup of the configured database that is not
    /// an emergency backup and has not failed validation; `latest-schema`: the same, schema-only
    pub backup_id: String,
    /// replace: the destination becomes exactly the backup (for the chosen tables);
    /// new-database: restore beside the live database; missing-rows: re-insert deleted rows
    #[arg(short = 's', long, value_enum, default_value_t = Strategy::NewDatabase)]
    pub strategy: Strategy,
    /// Only these tables, comma-separated, e.g. "organizations,users,contacts"
    #[arg(short = 't', long, value_delimiter = ',', value_name = "TABLES")]
    pub tables: Option<Vec<String>>,
    /// Destination: the database to restore into on the configured server [new-database
    /// default: the backup's database if it no longer exists, else <db>_restored_<backup-id>;
    /// others: the configured database]
    // `--target-db`: its name before "target" came to mean storage only; hidden, still taken.
    #[arg(
        long,
        value_name = "NAME",
        alias = "target-db",
        conflicts_with = "dest_url"
    )]
    pub dest_db: Option<String>,
    /// Connection URL of the destination database (on another server)
    #[arg(long, value_name = "URL", alias = "target-url")]
    pub dest_url: Option<String>,
    /// Widen a table subset along foreign keys instead of refusing
    #[arg(long)]
    pub cascade: bool,
    /// Do not restore object ownership (when the destination server lacks the source's roles)
    #[arg(long)]
    pub no_owner: bool,
    /// Confirm replacing a database from a schema-only backup: its tables end up empty
    #[arg(long)]
    pub schema_only: bool,
    /// Confirm replacing a database with a backup of another database
    #[arg(long)]
    pub from_other_database: bool,
    /// Create the roles the backup needs that the destination server lacks, from the backup's
    /// record (attributes, memberships, password hashes when the backup could read them)
    #[arg(long)]
    pub create_roles: bool,
    /// Read the backup from this storage target first (the others remain fallbacks)
    #[arg(long, value_name = "TARGET")]
    pub from: Option<String>,
    /// How to prove the restored tables: rows = count each table's rows; checksums = also
    /// re-read every table and compare its rows' checksum with the backup's (slower)
    #[arg(long, value_enum, default_value_t = Verification::Rows)]
    pub verify: Verification,
    #[command(flatten)]
    pub point: PointArgs,
    /// Use a backup whose manifest is unsigned or signed by a key not in
    /// `[repository] trusted_signers` (a broken signature is refused even so)
    #[arg(long)]
    pub allow_unsigned: bool,
}

/// `--until` / `--until-lsn`: how far an incremental chain is replayed.
#[derive(Debug, Args)]
pub struct PointArgs {
    /// Replay the chain to the last transaction committed at or before this time (RFC 3339,
    /// or `YYYY-MM-DD HH:MM:SS[+TZ]`, UTC without a zone); on a full backup, its incrementals
    #[arg(long, value_name = "TIME", value_parser = chain::parse_time, conflicts_with = "until_lsn")]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// Replay the chain to the last transaction committed at or before this WAL position
    /// (e.g. 0/16B3748)
    #[arg(long, value_name = "LSN")]
    pub until_lsn: Option<chain::Lsn>,
}

impl PointArgs {
    /// The point in time asked for, if any.
    pub fn until(&self) -> Option<chain::Until> {
        chain::Until::from_flags(self.until, self.until_lsn)
    }
}

#[derive(Debug, Args)]
pub struct ExecuteArgs {
    #[command(flatten)]
    pub recovery: RecoveryArgs,
    /// Parallel connections [default: CPU count up to 8]
    #[arg(short, long)]
    pub jobs: Option<usize>,
    /// Verify every object and check the destination, change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation before replacing data
    #[arg(short = 'y', long)]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Overwrite an existing configuration file
    #[arg(long)]
    pub force: bool,
    /// Create an encrypted repository (sets `[repository] encryption = true`); the
    /// passphrase comes from $BACKUP_CLI_PASSPHRASE, passphrase_file or a prompt
    #[arg(long)]
    pub encrypt: bool,
}

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Take a consistent backup of the database
    Create(CreateArgs),
    /// List backups, newest first
    List(ListArgs),
    /// Re-read every object of a backup and check checksums and row counts
    Validate(ValidateArgs),
    /// Delete a backup and reclaim chunks no other backup uses
    Delete(DeleteArgs),
    /// Write a backup as a plain SQL script that psql alone can restore
    Export(ExportArgs),
    /// Copy backups to every target that lacks a complete copy
    Sync(SyncArgs),
    /// Apply the schedules' retention: every backup with keep or delete and the rule that
    /// decided, then delete and garbage-collect on every target
    Prune(PruneArgs),
    /// Keep a backup whatever retention says (until a date, or until unpinned)
    Pin(PinArgs),
    /// Remove a backup's pin
    Unpin(UnpinArgs),
    /// Check every manifest's signature and each database's chain of backups: names any
    /// gap (a backup deleted or hidden) and any backup altered after the next was written
    VerifyHistory,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Only print what would be deleted; change nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct PinArgs {
    /// Backup id, `latest` (the newest full or incremental backup of the configured database) or `latest-schema`
    pub backup_id: String,
    /// Keep it through this date (YYYY-MM-DD, UTC, inclusive) or until this time (RFC 3339)
    /// [default: until `backup unpin`]
    #[arg(long, value_name = "DATE", value_parser = parse_until)]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// Why it is kept (shown by `backup prune`)
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
}

#[derive(Debug, Args)]
pub struct UnpinArgs {
    /// Backup id
    pub backup_id: String,
}

/// `--until`: a date keeps the backup through that whole day (UTC); a full RFC 3339 time
/// until that instant.
fn parse_until(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&chrono::Utc));
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.succ_opt())
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| {
            format!("'{text}' is not a date like 2026-12-31 or a time like 2026-12-31T18:00:00Z")
        })
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Only these targets (repeatable) [default: every configured target]
    #[arg(long = "target", value_name = "NAME")]
    pub targets: Vec<String>,
    /// Parallel copies [default: CPU count up to 8]
    #[arg(short, long)]
    pub jobs: Option<usize>,
    /// Read back and hash every chunk on every target before relying on it, rewriting damaged
    /// ones [default: by listed size; full reads only on targets found wanting]
    #[arg(long)]
    pub verify: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ExportFormat {
    /// pre-data, COPY blocks, sequence values, post-data
    Sql,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Backup id, `latest` (the newest full or incremental backup of the configured database) or `latest-schema`
    pub backup_id: String,
    #[arg(long, value_enum, default_value = "sql")]
    pub format: ExportFormat,
    /// Output file (`-` for stdout); zstd-compressed when it ends in .zst
    #[arg(short, long, default_value = "-")]
    pub output: String,
    /// The database as of a point in time (the chain of a full or an incremental backup)
    #[command(flatten)]
    pub point: PointArgs,
    /// Use a backup whose manifest is unsigned or signed by a key not in
    /// `[repository] trusted_signers` (a broken signature is refused even so)
    #[arg(long)]
    pub allow_unsigned: bool,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// A name to recognise the backup by, e.g. "emergency-20261126-0300"
    #[arg(short, long)]
    pub name: Option<String>,
    /// What to back up
    #[arg(long = "type", value_enum, default_value_t = BackupType::Full)]
    pub backup_type: BackupType,
    /// Parallel COPY connections [default: config backup.jobs, else CPU count up to 8]
    #[arg(short, long)]
    pub jobs: Option<usize>,
    /// zstd level, 1 (fast) to 19 (small) [default: config backup.compression_level, else 2]
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=19))]
    pub compression_level: Option<i32>,
    /// Storage target to keep the backup on (repeatable; the first is written, the others get
    /// copies) [default: config backup.targets, else every configured target]
    #[arg(long = "target", value_name = "NAME")]
    pub targets: Vec<String>,
    /// Take the backup as this [[schedules]] entry would: its type, database and targets, and
    /// its retention policy governs the backup
    #[arg(long, value_name = "NAME", conflicts_with_all = ["backup_type", "targets"])]
    pub schedule: Option<String>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Show at most N backups
    #[arg(short = 'l', long = "limit", value_name = "N")]
    pub limit: Option<usize>,
    /// Only backups of this type
    #[arg(long = "type", value_enum)]
    pub backup_type: Option<BackupType>,
    /// Judge each copy by reading and hashing every chunk [default: every chunk listed with
    /// the size its manifest records]
    #[arg(long)]
    pub verify: bool,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Backup id, `latest` (the newest full or incremental backup of the configured database) or `latest-schema`
    pub backup_id: String,
    /// Parallel readers [default: CPU count up to 8]
    #[arg(short, long)]
    pub jobs: Option<usize>,
    /// Check only the copy on this storage target [default: each copy on every target
    /// backups are kept on, each on its own]
    #[arg(long = "target", value_name = "NAME")]
    pub target: Option<String>,
    /// Succeed when one copy is intact, even if another target's copy is damaged or missing
    #[arg(long)]
    pub any_copy: bool,
    /// Use a backup whose manifest is unsigned or signed by a key not in
    /// `[repository] trusted_signers` (a broken signature is refused even so)
    #[arg(long)]
    pub allow_unsigned: bool,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Backup id, `latest` (the newest full or incremental backup of the configured database) or `latest-schema`
    pub backup_id: String,
    /// Really delete (deletion is permanent)
    #[arg(long)]
    pub force: bool,
    /// Only print what would be removed from where and what garbage collection would
    /// reclaim; change nothing
    #[arg(long, conflicts_with = "force")]
    pub dry_run: bool,
    /// Delete only the copy on this target (repeatable) [default: every copy]
    #[arg(long = "target", value_name = "NAME")]
    pub targets: Vec<String>,
    /// Allow deleting the backup's last copies on every target (needed when more than one
    /// target is configured and no copy would be left)
    #[arg(long)]
    pub all_targets: bool,
}
