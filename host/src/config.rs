//! Configuration: a TOML file found by `--config`, `$BACKUP_CLI_CONFIG`, `./backup-cli.toml`
//! or `/etc/backup-cli/config.toml`, else embedded defaults. The commented template that
//! `backup-cli init` writes is `examples/backup-cli.toml`, so docs and defaults cannot drift.

use crate::error::{Error, Result};
use crate::repository::manifest::BackupType;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The commented configuration `backup-cli init` writes.
pub const TEMPLATE: &str = include_str!("../../examples/backup-cli.toml");

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub database: DatabaseConfig,
    pub repository: RepositoryConfig,
    pub backup: BackupConfig,
    pub objectives: Objectives,
    pub monitor: MonitorConfig,
    pub schedules: Vec<Schedule>,
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

/// A backup that should happen on a timetable; `schedule list` and `monitor health` check
/// that it did.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    pub name: String,
    #[serde(rename = "type")]
    pub backup_type: BackupType,
    /// Five-field cron expression in UTC, e.g. "0 7 * * *" (02:00 EST).
    pub cron: String,
    /// How long its backups are kept, e.g. "30d".
    #[serde(default, with = "optional_duration")]
    pub retention: Option<Duration>,
    /// How late a run may be before it counts as missed.
    #[serde(default = "default_grace", with = "humantime_serde_compat")]
    pub grace: Duration,
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

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RepositoryConfig {
    pub path: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupConfig {
    pub jobs: Option<usize>,
    pub compression_level: i32,
    pub pg_dump: Option<PathBuf>,
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig {
            jobs: None,
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
}

impl Default for Objectives {
    fn default() -> Self {
        Objectives {
            class: DataClass::Standard,
            rpo: RpoTable::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
pub struct RpoTable {
    #[serde(with = "humantime_serde_compat")]
    pub critical: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub standard: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub non_critical: Duration,
}

impl Default for RpoTable {
    fn default() -> Self {
        RpoTable {
            critical: Duration::from_secs(3600),
            standard: Duration::from_secs(4 * 3600),
            non_critical: Duration::from_secs(24 * 3600),
        }
    }
}

impl Objectives {
    /// The recovery-point objective that applies to this database.
    pub fn rpo(&self) -> Duration {
        match self.class {
            DataClass::Critical => self.rpo.critical,
            DataClass::Standard => self.rpo.standard,
            DataClass::NonCritical => self.rpo.non_critical,
        }
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

/// A loaded configuration and the file it came from (None: embedded defaults).
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub config: Config,
    pub path: Option<PathBuf>,
}

impl Loaded {
    /// Finds and parses the configuration file.
    pub fn discover(explicit: Option<&Path>) -> Result<Loaded> {
        if let Some(path) = explicit {
            return Loaded::read(path);
        }
        if let Some(path) = std::env::var_os("BACKUP_CLI_CONFIG").filter(|p| !p.is_empty()) {
            return Loaded::read(Path::new(&path));
        }
        for candidate in ["backup-cli.toml", "/etc/backup-cli/config.toml"] {
            if Path::new(candidate).is_file() {
                return Loaded::read(Path::new(candidate));
            }
        }
        Ok(Loaded::default())
    }

    fn read(path: &Path) -> Result<Loaded> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!(
                "cannot read {}: {e} (run `backup-cli init` to write one)",
                path.display()
            ))
        })?;
        let config: Config =
            toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        Ok(Loaded {
            config,
            path: Some(path.to_path_buf()),
        })
    }

    /// The repository folder: `--repo`/`$BACKUP_CLI_REPO`, else the config's (relative to the
    /// config file), else `./backups`.
    pub fn repository_path(&self, flag: Option<&Path>) -> PathBuf {
        if let Some(path) = flag {
            return path.to_path_buf();
        }
        match (&self.config.repository.path, &self.path) {
            (Some(path), Some(file)) if path.is_relative() => {
                file.parent().unwrap_or(Path::new(".")).join(path)
            }
            (Some(path), _) => path.clone(),
            (None, _) => PathBuf::from("backups"),
        }
    }

    /// The database URL: `--database-url`/`$DATABASE_URL`, else the config's.
    pub fn database_url(&self, flag: Option<&str>) -> Option<String> {
        flag.map(str::to_string)
            .or_else(|| self.config.database.url.clone())
    }
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
            Some(Duration::from_secs(30 * 86400))
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(toml::from_str::<Config>("[backup]\njbos = 3\n").is_err());
    }
}
