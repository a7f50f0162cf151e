//! `backup-cli notify test [--notifier NAME]`: a test event through each alert channel (or the
//! one named), reported per channel; exits 1 when a channel did not take it.

use crate::cli::NotifyCommand;
use crate::output;
use crate::settings::Settings;
use larder::{Error, Result, engine};

pub async fn run(settings: &Settings, command: NotifyCommand) -> Result<()> {
    match command {
        NotifyCommand::Test(args) => {
            let scope = settings.alert_scope().await?;
            let sent =
                engine::alerts::test(&settings.loaded, &scope, args.notifier.as_deref()).await?;
            output::notify_test(&sent, settings.json);
            let failed: Vec<&str> = sent
                .iter()
                .filter(|s| !s.ok)
                .map(|s| s.channel.as_str())
                .collect();
            if failed.is_empty() {
                Ok(())
            } else {
                Err(Error::NotifyFailed(format!(
                    "not delivered through {}",
                    failed.join(", ")
                )))
            }
        }
    }
}
