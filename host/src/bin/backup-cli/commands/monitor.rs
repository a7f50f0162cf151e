//! `backup-cli monitor …`: health checks over the database, the repository and its targets,
//! and the alerts they raise.

use crate::cli::MonitorCommand;
use crate::output;
use crate::settings::Settings;
use larder::{Error, Result, engine};

pub async fn run(settings: &Settings, command: MonitorCommand) -> Result<()> {
    match command {
        MonitorCommand::Health(args) => {
            let health = health(settings).await?;
            output::health(&health, settings.json);
            if args.alert_on_failure && health.alerts().next().is_some() {
                match &settings.loaded.config.monitor.alert_command {
                    Some(command) => {
                        let sent = engine::monitor::deliver(&health, command).await?;
                        output::note!("{sent} alert(s) sent through `{command}`");
                    }
                    None => output::note!(
                        "warning: no alert channel is configured ([monitor] alert_command in the config); \
                         the failing checks are only reported here and in the exit code"
                    ),
                }
            }
            match health.status {
                engine::monitor::Status::Fail => Err(Error::HealthFailed(
                    health
                        .alerts()
                        .map(|c| c.name.clone())
                        .collect::<Vec<_>>()
                        .join(", "),
                )),
                _ => Ok(()),
            }
        }
        MonitorCommand::Alerts => {
            let health = health(settings).await?;
            output::alerts(&health, settings.json);
            Ok(())
        }
    }
}

/// `monitor health` over every configured target.
async fn health(settings: &Settings) -> Result<engine::monitor::Health> {
    let set = settings.targets().await?;
    let expected = set
        .select(&settings.expected_targets())?
        .iter()
        .map(|t| t.name().to_string())
        .collect();
    let targets = engine::monitor::Targets {
        targets: &set.targets,
        expected,
        chosen: &set.chosen,
    };
    Ok(engine::monitor::health(&settings.database()?, &targets, &settings.loaded.config).await)
}
