//! `backup-cli schedule …`: the configured backup timetables and how they are being kept.

use crate::cli::ScheduleCommand;
use crate::output::{self, Outcome, Schedules};
use crate::settings::Settings;
use larder::engine::daemon::state::DaemonView;
use larder::{Error, Result, engine};
use std::collections::BTreeMap;

pub async fn run(settings: &Settings, command: ScheduleCommand) -> Result<Outcome> {
    match command {
        ScheduleCommand::List => {
            // One daemon per database: each schedule shows its own database's daemon.
            let dbnames = settings.database_names()?;
            let mut daemons = BTreeMap::new();
            let manifests = match settings.repository().await {
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
                    repo.manifests().await?
                }
                // No repository yet: nothing ran.
                Err(Error::NoRepository { .. }) => Vec::new(),
                Err(e) => return Err(e),
            };
            let statuses: Vec<_> = engine::schedule::status(
                &settings.loaded.config.schedules,
                &manifests,
                &dbnames,
                chrono::Utc::now(),
            )?
            .into_iter()
            .map(|s| {
                let daemon = match &s.database {
                    Some(entry) => dbnames.get(entry).and_then(|db| daemons.get(db)),
                    None => daemons.values().next(),
                };
                s.with_daemon(daemon.and_then(Option::as_ref))
            })
            .collect();
            Ok(output::report(settings.json, &Schedules(statuses), None))
        }
    }
}
