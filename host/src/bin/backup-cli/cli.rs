//! Every command-line flag, with its help text, in one place.

use clap::{Args, Parser, Subcommand};
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

#[derive(Debug, Args)]
pub struct Global {
    /// Configuration file [default: $BACKUP_CLI_CONFIG, ./backup-cli.toml, /etc/backup-cli/config.toml]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Database to back up, e.g. postgres://user@host:5432/db?sslmode=require [default: the libpq PG* variables]
    #[arg(
        long,
        global = true,
        env = "DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// Repository folder [default: the config's repository.path, else ./backups]
    #[arg(long, global = true, env = "BACKUP_CLI_REPO", value_name = "PATH")]
    pub repo: Option<PathBuf>,
    /// Machine-readable JSON on stdout (no progress bars)
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress bars and no informational output
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// More logging (-v info, -vv debug); RUST_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a commented configuration file and initialise the repository
    Init(InitArgs),
    /// Create, list, validate and delete backups
    #[command(subcommand)]
    Backup(BackupCommand),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Overwrite an existing configuration file
    #[arg(long)]
    pub force: bool,
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
    /// zstd level, 1 (fast) to 19 (small) [default: config backup.compression_level, else 3]
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=19))]
    pub compression_level: Option<i32>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Show at most N backups
    #[arg(short = 'l', long = "limit", value_name = "N")]
    pub limit: Option<usize>,
    /// Only backups of this type
    #[arg(long = "type", value_enum)]
    pub backup_type: Option<BackupType>,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Backup id, or `latest`
    pub backup_id: String,
    /// Parallel readers [default: CPU count up to 8]
    #[arg(short, long)]
    pub jobs: Option<usize>,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Backup id, or `latest`
    pub backup_id: String,
    /// Really delete (deletion is permanent)
    #[arg(long)]
    pub force: bool,
}
