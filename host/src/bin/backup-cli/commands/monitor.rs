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
                // alert resolves. Each database's alerts are its own.
                let mut report = engine::alerts::Report::default();
                for scope in settings.alert_scopes().await? {
                    report.absorb(
                        engine::alerts::deliver_health(&health, &settings.loaded, &scope).await,
                    );
                }
                Some(report)
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
            let scopes = settings.alert_scopes().await?;
            if let Some(name) = &args.ack {
                let acked = engine::alerts::ack(&settings.loaded, &scopes, name).await?;
                output::note!(
                    "acknowledged {}: no escalation until resolved",
                    acked.join(", ")
                );
            }
            let health = health(settings).await?;
            let overview = engine::alerts::overview(&settings.loaded, &scopes, &health).await?;
            Ok(output::report(settings.json, &overview, None))
        }
        MonitorCommand::Metrics(args) => {
            let snapshot = metrics(settings).await?;
            let text = engine::metrics::render(&snapshot);
            if let Some(path) = &args.output {
                write_atomically(path, &text)?;
            }
            let printed = output::Metrics {
                snapshot,
                text: args.output.is_none().then_some(text),
            };
            Ok(output::report(settings.json, &printed, None))
        }
    }
}

/// One scrape of the configured targets and databases, through the metrics index kept in
/// the local state folder.
async fn metrics(settings: &Settings) -> Result<engine::metrics::Snapshot> {
    let set = settings.targets().await?;
    let expected = set.select(&settings.expected_targets())?;
    let targets = engine::metrics::ordered_targets(&set.targets, &expected);
    let monitored = settings.monitored()?;
    // The scrape reads the repository's alert state, which every database's scope names.
    let scope = settings
        .alert_scopes()
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| larder::Error::Config("no database is configured".into()))?;
    let sources = engine::metrics::Sources {
        loaded: &settings.loaded,
        targets: &targets,
        monitored: &monitored,
        scope: &scope,
    };
    let path = sources.index_path();
    let mut index = engine::metrics::Index::load(&path);
    let snapshot = engine::metrics::scrape(&sources, &mut index).await;
    if snapshot.index_grew() {
        index.save(&path);
    }
    Ok(snapshot)
}

/// Writes `text` to `path` through a temporary file in the same folder and a rename, so a
/// reader (node_exporter) never sees half a file.
fn write_atomically(path: &std::path::Path, text: &str) -> Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => std::path::Path::new("."),
    };
    let context = || format!("writing the metrics to {}", path.display());
    let mut temp = tempfile::NamedTempFile::new_in(dir).map_err(larder::Error::io(context()))?;
    std::io::Write::write_all(&mut temp, text.as_bytes()).map_err(larder::Error::io(context()))?;
    // Readable by the collector, which runs as another user (a temporary file is 0600).
    use std::os::unix::fs::PermissionsExt;
    temp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(larder::Error::io(context()))?;
    temp.persist(path)
        .map_err(|e| larder::Error::io(context())(e.error))?;
    Ok(())
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
