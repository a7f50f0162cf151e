//! `backup-cli monitor …`: health checks over the database, the repository and its targets,
//! the alerts they raise (delivered through the alert room) and `monitor alerts [--ack NAME]`.

use crate::cli::MonitorCommand;
use crate::output::{self, Outcome};
use crate::settings::Settings;
use larder::{Result, engine};

pub async fn run(settings: &Settings, command: MonitorCommand) -> Result<Outcome> {
    match command {
        MonitorCommand::Health(args) => {
            let health = health(settings).await?;
            let alerted = if args.alert_on_failure {
                // Every run goes through the alert room, passing ones too: that is how an
                // alert resolves.
                let scope = settings.alert_scope().await?;
                Some(engine::alerts::deliver_health(&health, &settings.loaded, &scope).await)
            } else {
                None
            };
            let outcome = output::report(settings.json, &health, health.failure());
            if let Some(report) = alerted {
                output::alert_report(&report, health.alerts().next().is_some());
            }
            Ok(outcome)
        }
        MonitorCommand::Alerts(args) => {
            let scope = settings.alert_scope().await?;
            if let Some(name) = &args.ack {
                let acked = engine::alerts::ack(&settings.loaded, &scope, name).await?;
                output::note!(
                    "acknowledged {}: no escalation until resolved",
                    acked.join(", ")
                );
            }
            let health = health(settings).await?;
            let overview = engine::alerts::overview(&settings.loaded, &scope, &health).await?;
            Ok(output::report(settings.json, &overview, None))
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
    Ok(engine::monitor::health(&settings.monitored()?, &targets, &settings.loaded.config).await)
}
