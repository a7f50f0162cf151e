//! The command line's settings resolved once: flags, then environment, then the config file,
//! then defaults. Every command reads this one value instead of looking at flags, variables
//! or the configuration on its own.

use crate::cli::Global;
use larder::config::{Loaded, Origin};
use larder::engine::{self, Progress};
use larder::pg::ConnectionSettings;
use larder::repository::Repository;
use larder::targets::configured::{self, TargetSet};
use larder::{Error, Result};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;

/// What every command needs, worked out from flags, environment and config before it runs.
pub struct Settings {
    pub loaded: Loaded,
    /// `--repo`, kept to open the targets (it replaces the configured ones).
    pub repo_flag: Option<PathBuf>,
    /// The database URL and where it came from (`--database-url`, `$DATABASE_URL`, the
    /// config); `None`: the libpq variables and defaults apply.
    pub database_url: Option<(String, Origin)>,
    /// Whether `--repo` or `$BACKUP_CLI_REPO` replaces the configured targets.
    pub repo_override: bool,
    /// How each target was chosen, for errors that need to say so.
    pub chosen: BTreeMap<String, String>,
    pub json: bool,
    pub quiet: bool,
    pub progress: Progress,
    /// Parallelism when no `--jobs` is given: the CPU count, at most 8.
    pub default_jobs: usize,
}

impl Settings {
    /// Reads the configuration and resolves the global flags against it.
    pub fn resolve(global: &Global) -> Result<Settings> {
        let loaded = Loaded::discover(global.config.as_deref())?;
        let repo_override = matches!(
            loaded.repository_path(global.repo.as_deref()).1,
            Origin::Flag(_) | Origin::Env(_)
        );
        let interactive = std::io::stderr().is_terminal() && !global.json && !global.quiet;
        Ok(Settings {
            database_url: loaded.database_url(global.database_url.as_deref()),
            chosen: configured::how_chosen(&loaded, global.repo.as_deref()),
            repo_override,
            loaded,
            repo_flag: global.repo.clone(),
            json: global.json,
            quiet: global.quiet,
            progress: Progress::new(interactive),
            default_jobs: engine::default_jobs(),
        })
    }

    /// `--jobs N`, else the default; never less than one.
    pub fn jobs(&self, flag: Option<usize>) -> usize {
        flag.unwrap_or(self.default_jobs).max(1)
    }

    /// The database to back up or restore from.
    pub fn database(&self) -> Result<ConnectionSettings> {
        ConnectionSettings::resolve(
            self.database_url.as_ref().map(|(url, _)| url.as_str()),
            &self.loaded.config.database,
        )
    }

    /// Whose alerts a command raises: this database, this repository's primary target.
    pub async fn alert_scope(&self) -> Result<larder::engine::alerts::Scope> {
        let set = self.targets().await?;
        let repository = set
            .select(&self.expected_targets())?
            .first()
            .map(|t| t.location())
            .unwrap_or_default();
        Ok(larder::engine::alerts::Scope {
            database: self.database()?.describe(),
            repository,
        })
    }

    /// The configured database's name: whose backups `latest` names.
    pub fn database_name(&self) -> Result<String> {
        Ok(self.database()?.dbname)
    }

    /// Every configured storage target (plugins are loaded here).
    pub async fn targets(&self) -> Result<TargetSet> {
        configured::open(&self.loaded, self.repo_flag.as_deref()).await
    }

    /// The targets every backup should be on: `[backup] targets`, else all of them (names;
    /// empty means all).
    pub fn expected_targets(&self) -> Vec<String> {
        if self.repo_override {
            Vec::new()
        } else {
            self.loaded.config.backup.targets.clone()
        }
    }

    /// The repository for reading: `first` (or the first configured target), falling back to
    /// the other targets for objects that are missing or corrupt there.
    pub async fn repository_from(&self, first: Option<&str>) -> Result<Repository> {
        let set = self.targets().await?;
        let mut order = set.targets.clone();
        if let Some(name) = first {
            let chosen = set.get(name)?;
            order.retain(|t| t.name() != chosen.name());
            order.insert(0, chosen);
        }
        Repository::open_for_reading(&order).await
    }

    pub async fn repository(&self) -> Result<Repository> {
        self.repository_from(None).await
    }

    /// Adds to `err` how the targets it names were chosen.
    pub fn explain(&self, err: Error) -> Error {
        configured::explain(&self.chosen, err)
    }
}
