//! `backup-cli schedule …`: the configured backup timetables and how they are being kept.

use crate::cli::ScheduleCommand;
use crate::output;
use crate::settings::Settings;
use larder::{Error, Result, engine};

pub async fn run(settings: &Settings, command: ScheduleCommand) -> Result<()> {
    match command {
        ScheduleCommand::List => {
            let manifests = match settings.repository().await {
                Ok(repo) => repo.manifests().await?,
                Err(Error::NoRepository { .. }) => Vec::new(), // no repository yet: nothing ran
                Err(e) => return Err(e),
            };
            let statuses = engine::schedule::status(
                &settings.loaded.config.schedules,
                &manifests,
                chrono::Utc::now(),
            )?;
            output::schedules(&statuses, settings.json);
            Ok(())
        }
    }
}
