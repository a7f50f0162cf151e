//! `backup-cli daemon`: resolves the settings the engine's daemon runs with, at start and
//! again on every SIGHUP (the same flags, environment and configuration file, read anew).

use crate::cli::Global;
use crate::settings::Settings;
use larder::Result;
use larder::engine::daemon::{self, Setup};
use std::future::Future;
use std::pin::Pin;

pub async fn run(global: &Global) -> Result<()> {
    let global = global.clone();
    let load = move || -> Pin<Box<dyn Future<Output = Result<Setup>>>> {
        let global = global.clone();
        Box::pin(async move { setup(&global).await })
    };
    daemon::run(&load).await
}

async fn setup(global: &Global) -> Result<Setup> {
    let settings = Settings::resolve(global)?;
    let targets = settings.targets().await?;
    let backup_targets = targets.select(&settings.expected_targets())?;
    let alert_scope = settings.alert_scope().await?;
    // This database's schedules (a schedule without `database` is the only database's).
    let entry = settings
        .loaded
        .config
        .database_entry(settings.db.as_deref())?
        .map(|e| e.name.clone());
    let schedules = settings
        .loaded
        .config
        .schedules
        .iter()
        .filter(|s| s.database.is_none() || s.database == entry)
        .map(|s| Ok((s.clone(), settings.schedule_targets(&targets, s)?)))
        .collect::<Result<Vec<_>>>()?;
    let config = &settings.loaded.config;
    Ok(Setup {
        objectives: config.objectives_for(settings.db.as_deref())?,
        listen: config.daemon_listen(settings.db.as_deref())?,
        schedules,
        validators: larder::plugin::validator::open_configured(&settings.loaded).await?,
        database_names: settings.database_names()?,
        database: settings.database()?,
        alert_scope,
        monitored: settings.monitored()?,
        jobs: settings.jobs(settings.loaded.config.backup.jobs),
        may_create: !targets.unchosen,
        backup_targets,
        targets,
        loaded: settings.loaded,
    })
}
