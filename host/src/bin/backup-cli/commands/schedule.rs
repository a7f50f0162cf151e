//! `backup-cli schedule …`: the configured timetables (backups and restore drills) and how
//! they are being kept: all of them (`list`), or one in full (`status NAME`).

use crate::cli::ScheduleCommand;
use crate::output::{self, Outcome, ScheduleDetail, Schedules};
use crate::settings::Settings;
use larder::engine::daemon::state::DaemonView;
use larder::engine::schedule::ScheduleStatus;
use larder::{Error, Result, engine};
use std::collections::BTreeMap;

pub async fn run(settings: &Settings, command: ScheduleCommand) -> Result<Outcome> {
    match command {
        ScheduleCommand::List => {
            let statuses = statuses(settings).await?;
            Ok(output::report(settings.json, &Schedules(statuses), None))
        }
        ScheduleCommand::Status { name } => {
            settings.loaded.config.schedule(&name)?;
            let status = statuses(settings)
                .await?
                .into_iter()
                .find(|s| s.name == name)
                .ok_or_else(|| Error::Internal(format!("schedule '{name}' has no status")))?;
            Ok(output::report(settings.json, &ScheduleDetail(status), None))
        }
    }
}

/// Every schedule's status, each with its own database's daemon.
async fn statuses(settings: &Settings) -> Result<Vec<ScheduleStatus>> {
    let schedules = &settings.loaded.config.schedules;
    let dbnames = settings.database_names()?;
    let mut daemons = BTreeMap::new();
    let (manifests, drills) = match settings.repository().await {
        Ok(repo) => {
            let databases: Vec<String> = if dbnames.is_empty() {
                vec![settings.database_name()?]
            } else {
                dbnames.values().cloned().collect()
            };
            for db in databases {
                let view = DaemonView::read(&repo, &db).await?;
                daemons.insert(db, view);
            }
            let drills = engine::schedule::drill_history(schedules, Some(repo.target())).await;
            (repo.manifests().await?, drills)
        }
        // No repository yet: nothing ran.
        Err(Error::NoRepository { .. }) => (Vec::new(), Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(
        engine::schedule::status(schedules, &manifests, &drills, &dbnames, chrono::Utc::now())?
            .into_iter()
            .map(|s| {
                let daemon = match &s.database {
                    Some(entry) => dbnames.get(entry).and_then(|db| daemons.get(db)),
                    None => daemons.values().next(),
                };
                s.with_daemon(daemon.and_then(Option::as_ref))
            })
            .collect(),
    )
}
