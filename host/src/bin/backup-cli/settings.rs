//! The command line's settings resolved once: flags, then environment, then the config file,
//! then defaults. Every command reads this one value instead of looking at flags, variables
//! or the configuration on its own.

use crate::cli::Global;
use larder::config::{DatabaseEntry, Loaded, Origin, Schedule};
use larder::engine::alerts::Scope;
use larder::engine::{self, Progress};
use larder::pg::ConnectionSettings;
use larder::repository::Repository;
use larder::targets::Target;
use larder::targets::configured::{self, TargetSet};
use larder::{Error, Result};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

/// What every command needs, worked out from flags, environment and config before it runs.
pub struct Settings {
    pub loaded: Loaded,
    /// `--repo`, kept to open the targets (it replaces the configured ones).
    pub repo_flag: Option<PathBuf>,
    /// The database URL and where it came from (`--database-url`, `$DATABASE_URL`, the
    /// config); `None`: the libpq variables and defaults apply.
    pub database_url: Option<(String, Origin)>,
    /// `--db NAME`: the `[[databases]]` entry to act on.
    pub db: Option<String>,
    /// Whether `--repo` or `$BACKUP_CLI_REPO` replaces the configured targets.
    pub repo_override: bool,
    /// `--allow-delete`: `append_only` targets are opened as ordinary ones.
    pub allow_delete: bool,
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
        larder::repository::keys::configure(loaded.key_source());
        let repo_override = matches!(
            loaded.repository_path(global.repo.as_deref()).1,
            Origin::Flag(_) | Origin::Env(_)
        );
        let interactive = std::io::stderr().is_terminal() && !global.json && !global.quiet;
        Ok(Settings {
            database_url: loaded.database_url(global.database_url.as_deref()),
            chosen: configured::how_chosen(&loaded, global.repo.as_deref()),
            repo_override,
            allow_delete: global.allow_delete,
            db: global.db.clone(),
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

    /// The database to back up or restore from: the `[[databases]]` entry `--db` names (or
    /// the only one), else the one `[database]` with `--database-url`/`$DATABASE_URL`.
    pub fn database(&self) -> Result<ConnectionSettings> {
        self.database_of(self.db.as_deref())
    }

    /// [`Settings::database`] for the `[[databases]]` entry `db` (None: the only one).
    pub fn database_of(&self, db: Option<&str>) -> Result<ConnectionSettings> {
        match self.loaded.config.database_entry(db)? {
            Some(entry) => self.entry_settings(entry),
            None => ConnectionSettings::resolve(
                self.database_url.as_ref().map(|(url, _)| url.as_str()),
                &self.loaded.config.database,
            ),
        }
    }

    /// An entry's own connection; `--database-url` would be ambiguous beside several, and
    /// `$DATABASE_URL` does not apply to entries that name their own.
    fn entry_settings(&self, entry: &DatabaseEntry) -> Result<ConnectionSettings> {
        if let Some((_, Origin::Flag(_))) = &self.database_url {
            return Err(Error::Config(format!(
                "--database-url cannot be combined with [[databases]] (it would replace database '{}'); choose an entry with --db NAME",
                entry.name
            )));
        }
        ConnectionSettings::resolve(entry.url.as_deref(), &entry.connection())
    }

    /// The databases `monitor health` checks: `--db`'s, else every `[[databases]]` entry,
    /// else the one database; each with its recovery-point objective.
    pub fn monitored(&self) -> Result<Vec<engine::monitor::Monitored>> {
        let config = &self.loaded.config;
        if config.databases.is_empty() || self.db.is_some() {
            let entry = config.database_entry(self.db.as_deref())?;
            return Ok(vec![engine::monitor::Monitored {
                name: entry.map(|e| e.name.clone()),
                settings: self.database()?,
                rpo: entry.map_or_else(|| config.objectives.rpo(), |e| e.rpo(&config.objectives)),
            }]);
        }
        config
            .databases
            .iter()
            .map(|entry| {
                Ok(engine::monitor::Monitored {
                    name: Some(entry.name.clone()),
                    settings: self.entry_settings(entry)?,
                    rpo: entry.rpo(&config.objectives),
                })
            })
            .collect()
    }

    /// Each `[[databases]]` name with its database's name in PostgreSQL (whose backups are
    /// that entry's).
    pub fn database_names(&self) -> Result<BTreeMap<String, String>> {
        self.loaded
            .config
            .databases
            .iter()
            .map(|entry| Ok((entry.name.clone(), self.entry_settings(entry)?.dbname)))
            .collect()
    }

    /// Whose alerts a command raises: this database (by its `[[databases]]` name, else its name
    /// in PostgreSQL), this repository's primary target.
    pub async fn alert_scope(&self) -> Result<Scope> {
        self.alert_scope_at(self.primary_location().await?)
    }

    /// Whose alerts a command raises about the repository at `repository` (a location).
    pub fn alert_scope_at(&self, repository: String) -> Result<Scope> {
        let name = self
            .loaded
            .config
            .database_entry(self.db.as_deref())?
            .map(|entry| entry.name.clone());
        Ok(scope_of(name, &self.database()?, repository))
    }

    /// Whose alerts `monitor health` and `monitor alerts` raise and show: one scope per
    /// database they check ([`Settings::monitored`]: `--db`'s, else every `[[databases]]`
    /// entry, else the one database), all on this repository.
    pub async fn alert_scopes(&self) -> Result<Vec<Scope>> {
        let repository = self.primary_location().await?;
        Ok(self
            .monitored()?
            .into_iter()
            .map(|db| scope_of(db.name, &db.settings, repository.clone()))
            .collect())
    }

    /// Where the repository is: the primary target's location.
    async fn primary_location(&self) -> Result<String> {
        let set = self.targets().await?;
        Ok(set
            .select(&self.expected_targets())?
            .first()
            .map(|t| t.location())
            .unwrap_or_default())
    }

    /// The configured database's name: whose backups `latest` names.
    pub fn database_name(&self) -> Result<String> {
        Ok(self.database()?.dbname)
    }

    /// Every configured storage target (plugins are loaded here).
    pub async fn targets(&self) -> Result<TargetSet> {
        configured::open(&self.loaded, self.repo_flag.as_deref(), self.allow_delete).await
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

    /// The targets a schedule's backups go to (the first is written, the others get copies):
    /// its `targets`, else those every backup goes to; `--repo` replaces both.
    pub fn schedule_targets(
        &self,
        set: &TargetSet,
        schedule: &Schedule,
    ) -> Result<Vec<Arc<dyn Target>>> {
        if schedule.targets.is_empty() || self.repo_override {
            return set.select(&self.expected_targets());
        }
        set.select(&schedule.targets)
            .map_err(|e| Error::Config(format!("schedule '{}' targets: {e}", schedule.name)))
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

/// The alert scope of a database named `name` (its `[[databases]]` name; None: the one
/// database, named as in PostgreSQL) at `connection`, on the repository at `repository`.
fn scope_of(name: Option<String>, connection: &ConnectionSettings, repository: String) -> Scope {
    Scope {
        database: name.unwrap_or_else(|| connection.dbname.clone()),
        connection: connection.describe(),
        repository,
    }
}
