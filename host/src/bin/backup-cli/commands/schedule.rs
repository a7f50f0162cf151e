//! `backup-cli schedule …`: the configured backup timetables and how they are being kept.

use crate::cli::ScheduleCommand;
use crate::output;
use crate::settings::Settings;
use larder::engine::daemon::state::DaemonView;
use larder::{Error, Result, engine};

pub async fn run(settings: &Settings, command: ScheduleCommand) -> Result<()> {
    match command {
        ScheduleCommand::List => {
            let (manifests, daemon) = match settings.repository().await {
                Ok(repo) => (
                    repo.manifests().await?,
                    DaemonView::read(&repo, &settings.database_name()?).await?,
                ),
                // No repository yet: nothing ran.
                Err(Error::NoRepository { .. }) => (Vec::new(), None),
                Err(e) => return Err(e),
            };
            let statuses: Vec<_> = engine::schedule::status(
                &settings.loaded.config.schedules,
                &manifests,
                &settings.database_names()?,
                chrono::Utc::now(),
            )?
            .into_iter()
            .map(|s| s.with_daemon(daemon.as_ref()))
            .collect();
            output::schedules(&statuses, settings.json);
            Ok(())
        }
    }
}
